//! Basic authentication against `basic_auth_users`, as exporter-toolkit does it: every path is
//! checked; a user the file does not name is checked against a fixed hash so that the answer
//! takes as long as for a known one; bcrypt runs on the control plane's blocking pool, one at a
//! time; and outcomes are cached so that a browser's many requests cost one bcrypt each.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A well-formed bcrypt hash (cost 10) that no password is expected to match.
const DUMMY_HASH: &str = "$2y$10$QnqqKHzrXCq8HKaPO3M0euO1.vlnHeKGZ7qTL6D69/uktOs6WIbzy";

/// Cached outcomes at most; the cache is cleared when it is full.
const CACHE_ENTRIES: usize = 100;

#[derive(Default)]
pub struct Auth {
    /// Keyed by a hash of (user, stored hash, password): never the password itself.
    cache: Mutex<HashMap<u64, bool>>,
    /// Serialises bcrypt: a flood of bad passwords costs one core of the blocking pool at most.
    bcrypt: Arc<Mutex<()>>,
}

/// The user and password of a `Basic` Authorization header.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = crate::http::base64_decode(rest.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

impl Auth {
    /// Whether `user:pass` matches `users` (user → bcrypt hash).
    pub async fn check(
        &self,
        users: &std::collections::BTreeMap<String, String>,
        user: &str,
        pass: &str,
    ) -> bool {
        let known = users.get(user);
        let hash = known.map_or(DUMMY_HASH, String::as_str).to_string();
        let key = {
            let mut bytes = Vec::with_capacity(user.len() + hash.len() + pass.len() + 2);
            bytes.extend_from_slice(user.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(hash.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(pass.as_bytes());
            xxhash_rust::xxh3::xxh3_128(&bytes) as u64
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .copied();
        let ok = match cached {
            Some(ok) => ok,
            None => {
                let (pass, lock) = (pass.to_string(), self.bcrypt.clone());
                let verified = tokio::task::spawn_blocking(move || {
                    let _one = lock.lock().unwrap_or_else(|e| e.into_inner());
                    bcrypt::verify(pass, &hash).unwrap_or(false)
                })
                .await
                .unwrap_or(false);
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key, verified);
                verified
            }
        };
        ok && known.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_parse() {
        let mut enc = String::new();
        crate::http::base64(b"alice:s3:cret", &mut enc);
        assert_eq!(
            basic_credentials(&format!("Basic {enc}")),
            Some(("alice".into(), "s3:cret".into()))
        );
        assert_eq!(basic_credentials(&format!("Bearer {enc}")), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }

    #[test]
    fn the_dummy_hash_is_well_formed() {
        assert_eq!(DUMMY_HASH.len(), 60);
        assert_eq!(bcrypt::verify("anything", DUMMY_HASH).ok(), Some(false));
    }

    #[test]
    fn known_users_pass_and_unknown_users_fail_even_with_the_dummy_password() {
        let hash = bcrypt::hash_with_salt("right", 4, [7u8; 16])
            .map(|h| h.format_for_version(bcrypt::Version::TwoY))
            .unwrap();
        let users = [("alice".to_string(), hash)].into_iter().collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let auth = Auth::default();
        rt.block_on(async {
            assert!(auth.check(&users, "alice", "right").await);
            assert!(auth.check(&users, "alice", "right").await, "cached");
            assert!(!auth.check(&users, "alice", "wrong").await);
            assert!(!auth.check(&users, "bob", "right").await);
        });
    }
}
