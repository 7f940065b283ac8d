//! AWS Signature Version 4 for Remote Write to Amazon Managed Service for Prometheus
//! (`sigv4`), as Prometheus signs its requests: service `aps`, the body's SHA-256, and the
//! request's content, version, host and date headers signed. Credentials come from the
//! configuration, else the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else the shared credentials file's profile; they are read at each
//! request, so rotated keys are picked up.

use std::fmt::Write as _;
use std::time::SystemTime;

use ring::{digest, hmac};

use super::Secret;

/// `sigv4` as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigV4 {
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// The shared credentials file's profile (`AWS_PROFILE`, else `default`, when empty).
    pub profile: Option<String>,
}

/// Keys to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl SigV4 {
    /// The credentials for this request: configured keys, the environment's, or the shared
    /// credentials file's profile.
    pub fn credentials(&self) -> Result<Credentials, String> {
        if let (Some(a), Some(s)) = (&self.access_key, &self.secret_key) {
            return Ok(Credentials {
                access_key: a.clone(),
                secret_key: s.read()?,
                session_token: None,
            });
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.profile.is_none()
            && let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials {
                access_key: a,
                secret_key: s,
                session_token: env("AWS_SESSION_TOKEN"),
            });
        }
        let profile = self
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")))
            .ok_or("sigv4: no credentials: set access_key and secret_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials file")?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "sigv4: no credentials in the configuration or the environment, and {path}: {e}"
            )
        })?;
        profile_credentials(&text, &profile)
            .ok_or_else(|| format!("sigv4: profile {profile:?} in {path} has no aws_access_key_id and aws_secret_access_key"))
    }
}

/// A profile's keys from a shared credentials file (INI).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut a, mut s, mut t) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => a = v,
                "aws_secret_access_key" => s = v,
                "aws_session_token" => t = v,
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key: a?,
        secret_key: s?,
        session_token: t,
    })
}

/// What to sign: the request line's parts, its headers (name, value) without the date and
/// the token, and its body.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The header lines that sign `req` for `service` in `region` at `now`: `X-Amz-Date`, the
/// session token when there is one, and `Authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> String {
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let (path, query) = req
        .path_and_query
        .split_once('?')
        .unwrap_or((req.path_and_query, ""));
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        req.method,
        uri_path(path),
        canonical_query(query)
    );
    for (n, v) in &headers {
        let _ = writeln!(canonical, "{n}:{v}");
    }
    let _ = write!(
        canonical,
        "\n{signed}\n{}",
        hex(digest::digest(&digest::SHA256, req.body).as_ref())
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{}", creds.secret_key).into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let signature =
        hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()).as_ref());
    let mut out = format!("X-Amz-Date: {amz_date}\r\n");
    if let Some(t) = &creds.session_token {
        let _ = write!(out, "X-Amz-Security-Token: {t}\r\n");
    }
    let _ = write!(
        out,
        "Authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}\r\n",
        creds.access_key
    );
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// RFC 3986 encoding of everything but unreserved characters (and `/` in paths).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn uri_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    // The path as sent may hold escapes already; sign it as AWS normalises it.
    encode(&percent_decode(path), true)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                encode(&percent_decode(&k.replace('+', " ")), false),
                encode(&percent_decode(&v.replace('+', " ")), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (y, m, d) = crate::log::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn example() -> (Credentials, SystemTime) {
        (
            Credentials {
                access_key: "AKIDEXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            // 2015-08-30T12:36:00Z, the AWS Signature Version 4 test suite's date.
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        )
    }

    #[test]
    fn matches_the_aws_signature_v4_test_suite() {
        let (creds, now) = example();
        assert_eq!(amz_date(now), "20150830T123600Z");
        for (method, want) in [
            (
                "GET",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let req = Request {
                method,
                host: "example.amazonaws.com",
                path_and_query: "/",
                headers: &[],
                body: b"",
            };
            let lines = sign(&req, &creds, "us-east-1", "service", now);
            assert!(
                lines.starts_with("X-Amz-Date: 20150830T123600Z\r\n"),
                "{lines}"
            );
            assert!(
                lines.contains(&format!(
                    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={want}\r\n"
                )),
                "{method}: {lines}"
            );
        }
    }

    #[test]
    fn query_and_headers_are_canonical_and_the_token_is_signed() {
        let (mut creds, now) = example();
        assert_eq!(canonical_query("b=2&a=1&c=x y"), "a=1&b=2&c=x%20y");
        assert_eq!(uri_path("/api/v1/write"), "/api/v1/write");
        creds.session_token = Some("tok".into());
        let req = Request {
            method: "POST",
            host: "aps-workspaces.us-east-1.amazonaws.com",
            path_and_query: "/workspaces/ws-1/api/v1/remote_write",
            headers: &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
            ],
            body: b"x",
        };
        let lines = sign(&req, &creds, "us-east-1", "aps", now);
        assert!(lines.contains("X-Amz-Security-Token: tok\r\n"));
        assert!(lines.contains(
            "SignedHeaders=content-encoding;content-type;host;x-amz-date;x-amz-security-token,"
        ));
    }

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n[other]\naws_access_key_id=B\naws_secret_access_key=T\naws_session_token=U\n";
        assert_eq!(
            profile_credentials(text, "default").unwrap().access_key,
            "A"
        );
        let other = profile_credentials(text, "other").unwrap();
        assert_eq!(
            (other.secret_key.as_str(), other.session_token.as_deref()),
            ("T", Some("U"))
        );
        assert!(profile_credentials(text, "missing").is_none());
    }
}
