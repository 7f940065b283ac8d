//! `--web.config.file`: the web configuration Prometheus and its exporters share (TLS, basic
//! authentication, security headers), with the same semantics.
//!
//! - Parsing is strict: an unknown field is an error, and so is a field spate does not support,
//!   named with its line (`cipher_suites`, `curve_preferences`, `client_allowed_sans`,
//!   `rate_limit`, TLS 1.0 and 1.1).
//! - Paths are relative to the file's directory.
//! - The file is read again for every request and every TLS handshake, so certificates and users
//!   change without a restart; it is parsed again only when its bytes changed. A file that
//!   stopped being valid fails the requests (500) and handshakes until it is mended, as in
//!   Prometheus, and is logged once per change.
//! - With no `tls_server_config` certificate, spate serves plain HTTP, users or not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use crate::log::Level;

/// The headers `http_server_config.headers` may set, and the values each allows (`None`: any).
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// A valid web configuration.
pub struct WebConfig {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// User name → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(String, String)>,
}

impl WebConfig {
    /// No file: plain HTTP, no users, no headers.
    pub fn none() -> WebConfig {
        WebConfig {
            tls: None,
            users: BTreeMap::new(),
            headers: Vec::new(),
        }
    }
}

/// What a version of the file gave.
type Loaded = Result<Arc<WebConfig>, String>;

/// The file, read again on each use (see the module doc).
pub struct WebConfigFile {
    path: Option<PathBuf>,
    /// The last bytes read and what they gave.
    last: Mutex<(Vec<u8>, Loaded)>,
}

impl WebConfigFile {
    /// Reads and validates the file (`None`: no file). An invalid file stops the start.
    pub fn open(path: Option<&Path>) -> Result<WebConfigFile, String> {
        let Some(path) = path else {
            return Ok(WebConfigFile {
                path: None,
                last: Mutex::new((Vec::new(), Ok(Arc::new(WebConfig::none())))),
            });
        };
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read --web.config.file {}: {e}", path.display()))?;
        let parsed = load(&bytes, path)?;
        Ok(WebConfigFile {
            path: Some(path.to_path_buf()),
            last: Mutex::new((bytes, Ok(Arc::new(parsed)))),
        })
    }

    /// The configuration as the file says now.
    pub fn current(&self) -> Result<Arc<WebConfig>, String> {
        let Some(path) = &self.path else {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            return last.1.clone();
        };
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read --web.config.file {}: {e}", path.display()));
        let bytes = bytes?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if bytes != last.0 {
            let parsed = load(&bytes, path).map(Arc::new);
            if let Err(e) = &parsed {
                crate::log!(
                    Level::Error,
                    "web",
                    "the web configuration file is invalid; requests fail until it is mended",
                    err = e
                );
            }
            *last = (bytes, parsed);
        }
        last.1.clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<Spanned<BTreeMap<String, String>>>,
    rate_limit: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    client_auth_type: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
    min_version: Option<Spanned<String>>,
    max_version: Option<Spanned<String>>,
    /// Accepted, without effect (rustls picks the suite by the server's order).
    #[allow(dead_code)]
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Spanned<IgnoredAny>>,
    cipher_suites: Option<Spanned<IgnoredAny>>,
    curve_preferences: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted, without effect: spate serves HTTP/1.1.
    #[allow(dead_code)]
    http2: Option<bool>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
}

/// `FILE:LINE: FIELD: REASON`.
fn problem(file: &Path, line: usize, field: &str, reason: impl std::fmt::Display) -> String {
    if line > 0 {
        format!("{}:{line}: {field}: {reason}", file.display())
    } else {
        format!("{}: {field}: {reason}", file.display())
    }
}

fn unsupported(file: &Path, field: &str, at: &Option<Spanned<IgnoredAny>>) -> Result<(), String> {
    match at {
        Some(s) => Err(problem(
            file,
            s.referenced.line() as usize,
            field,
            "not supported by spate; remove it (see docs/web.md)",
        )),
        None => Ok(()),
    }
}

/// Parses and checks a web configuration; `file` resolves relative paths and names errors.
pub fn load(bytes: &[u8], file: &Path) -> Result<WebConfig, String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("{}: the file is not UTF-8", file.display()))?;
    let options = serde_saphyr::options! { with_snippet: false };
    let raw: Option<Raw> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
        let mut reason = e.to_string();
        if let Some(i) = reason.find(" at line ") {
            reason.truncate(i);
        }
        if line > 0 {
            format!("{}:{line}: {reason}", file.display())
        } else {
            format!("{}: {reason}", file.display())
        }
    })?;
    let Some(raw) = raw else {
        return Ok(WebConfig::none());
    };
    unsupported(file, "rate_limit", &raw.rate_limit)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let tls = match &raw.tls_server_config {
        Some(t) => tls(t, dir, file)?,
        None => None,
    };
    let mut headers = Vec::new();
    if let Some(h) = raw
        .http_server_config
        .as_ref()
        .and_then(|h| h.headers.as_ref())
    {
        let line = h.referenced.line() as usize;
        for (name, value) in &h.value {
            let Some((canonical, allowed)) =
                HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
            else {
                return Err(problem(
                    file,
                    line,
                    "http_server_config.headers",
                    format!("HTTP header {name:?} can not be configured"),
                ));
            };
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a.eq_ignore_ascii_case(value))
            {
                return Err(problem(
                    file,
                    line,
                    "http_server_config.headers",
                    format!(
                        "invalid value for {canonical}: expected one of {allowed:?}, got {value:?}"
                    ),
                ));
            }
            headers.push((canonical.to_string(), value.clone()));
        }
    }
    let mut users = BTreeMap::new();
    if let Some(u) = &raw.basic_auth_users {
        for (user, hash) in &u.value {
            if !is_bcrypt_hash(hash) {
                return Err(problem(
                    file,
                    u.referenced.line() as usize,
                    "basic_auth_users",
                    format!(
                        "the hash of user {user:?} is not a bcrypt hash ($2a$, $2b$ or $2y$; make one with htpasswd -nBC 10)"
                    ),
                ));
            }
            users.insert(user.clone(), hash.clone());
        }
    }
    Ok(WebConfig {
        tls,
        users,
        headers,
    })
}

fn is_bcrypt_hash(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && (h.starts_with("$2a$")
            || h.starts_with("$2b$")
            || h.starts_with("$2y$")
            || h.starts_with("$2x$"))
        && b[6] == b'$'
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
}

/// A path from the file, relative to its directory.
fn resolve(dir: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

/// `tls_server_config`: `None` when it names no certificate (plain HTTP).
fn tls(t: &RawTls, dir: &Path, file: &Path) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    unsupported(
        file,
        "tls_server_config.client_allowed_sans",
        &t.client_allowed_sans,
    )?;
    unsupported(file, "tls_server_config.cipher_suites", &t.cipher_suites)?;
    unsupported(
        file,
        "tls_server_config.curve_preferences",
        &t.curve_preferences,
    )?;
    let err = |s: &Option<Spanned<String>>, field: &str, reason: String| {
        problem(
            file,
            s.as_ref().map_or(0, |s| s.referenced.line() as usize),
            field,
            reason,
        )
    };
    let read = |path: &Option<Spanned<String>>,
                inline: &Option<Spanned<String>>,
                field: &str|
     -> Result<Option<Vec<u8>>, String> {
        match (path, inline) {
            (Some(p), None) if !p.value.is_empty() => {
                let full = resolve(dir, &p.value);
                std::fs::read(&full)
                    .map(Some)
                    .map_err(|e| err(path, field, format!("cannot read {}: {e}", full.display())))
            }
            (None, Some(v)) if !v.value.is_empty() => Ok(Some(v.value.clone().into_bytes())),
            (Some(_), Some(_)) => Err(err(
                path,
                field,
                "set either the file or the inline value, not both".into(),
            )),
            _ => Ok(None),
        }
    };
    let cert = read(&t.cert_file, &t.cert, "tls_server_config.cert_file")?;
    let key = read(&t.key_file, &t.key, "tls_server_config.key_file")?;
    let ca = read(
        &t.client_ca_file,
        &t.client_ca,
        "tls_server_config.client_ca_file",
    )?;
    let auth = t.client_auth_type.as_ref().map_or("", |s| s.value.as_str());
    if cert.is_none() && key.is_none() && ca.is_none() && auth.is_empty() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        let field = if t.cert_file.is_none() && t.cert.is_none() {
            "cert_file"
        } else {
            "key_file"
        };
        return Err(problem(
            file,
            0,
            "tls_server_config",
            format!("missing {field}"),
        ));
    };
    let version = |s: &Option<Spanned<String>>, field: &str, default: u8| -> Result<u8, String> {
        match s.as_ref().map(|s| s.value.as_str()) {
            None | Some("") => Ok(default),
            Some("TLS12") => Ok(12),
            Some("TLS13") => Ok(13),
            Some(v @ ("TLS10" | "TLS11")) => Err(err(
                s,
                field,
                format!("{v} is not supported by spate (its TLS library offers TLS12 and TLS13)"),
            )),
            Some(v) => Err(err(
                s,
                field,
                format!("unknown TLS version {v:?} (TLS12 or TLS13)"),
            )),
        }
    };
    let min = version(&t.min_version, "tls_server_config.min_version", 12)?;
    let max = version(&t.max_version, "tls_server_config.max_version", 13)?;
    if min > max {
        return Err(err(
            &t.min_version,
            "tls_server_config.min_version",
            "is above max_version".into(),
        ));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, p)| p)
            .collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| problem(file, 0, "tls_server_config", e))?;
    let roots = || -> Result<Arc<rustls::RootCertStore>, String> {
        let Some(ca) = &ca else {
            return Err(err(
                &t.client_auth_type,
                "tls_server_config.client_auth_type",
                format!("{auth} needs client_ca_file"),
            ));
        };
        let mut store = rustls::RootCertStore::empty();
        let list = crate::http::tls::certs(ca, "client_ca_file")
            .map_err(|e| err(&t.client_ca_file, "tls_server_config.client_ca_file", e))?;
        store.add_parsable_certificates(list);
        Ok(Arc::new(store))
    };
    let verifier =
        |optional: bool| -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
            let b = WebPkiClientVerifier::builder_with_provider(roots()?, provider.clone());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| {
                err(
                    &t.client_ca_file,
                    "tls_server_config.client_ca_file",
                    e.to_string(),
                )
            })
        };
    let builder = match auth {
        "" | "NoClientCert" => {
            if ca.is_some() {
                return Err(err(&t.client_ca_file, "tls_server_config.client_ca_file", "client CAs are configured without a client_auth_type; set one (e.g. RequireAndVerifyClientCert)".into()));
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" => builder.with_client_cert_verifier(verifier(false)?),
        "VerifyClientCertIfGiven" => builder.with_client_cert_verifier(verifier(true)?),
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(err(
                &t.client_auth_type,
                "tls_server_config.client_auth_type",
                format!(
                    "{auth} (a client certificate that is not verified) is not supported by spate; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
                ),
            ));
        }
        other => {
            return Err(err(
                &t.client_auth_type,
                "tls_server_config.client_auth_type",
                format!("unknown client_auth_type {other:?}"),
            ));
        }
    };
    let chain = crate::http::tls::certs(&cert, "cert_file")
        .map_err(|e| problem(file, 0, "tls_server_config.cert_file", e))?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        problem(
            file,
            0,
            "tls_server_config.key_file",
            format!("invalid PEM private key: {e:?}"),
        )
    })?;
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        problem(
            file,
            0,
            "tls_server_config",
            format!("certificate and key do not match: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match load(text.as_bytes(), Path::new("/etc/web.yml")) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_and_userless_files_serve_plain_http() {
        let c = load(b"", Path::new("web.yml")).unwrap();
        assert!(c.tls.is_none() && c.users.is_empty());
        let c = load(b"tls_server_config: {}\n", Path::new("web.yml")).unwrap();
        assert!(c.tls.is_none());
    }

    #[test]
    fn users_and_headers_are_checked() {
        let hash = "$2y$10$QnqqKHzrXCq8HKaPO3M0euO1.vlnHeKGZ7qTL6D69/uktOs6WIbzy";
        let c = load(
            format!("basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    x-frame-options: deny\n").as_bytes(),
            Path::new("web.yml"),
        )
        .unwrap();
        assert_eq!(c.users.get("alice").map(String::as_str), Some(hash));
        assert_eq!(
            c.headers,
            vec![("X-Frame-Options".to_string(), "deny".to_string())]
        );
        let e = err("basic_auth_users:\n  alice: plain\n");
        assert!(
            e.starts_with("/etc/web.yml:2: basic_auth_users:") && e.contains("alice"),
            "{e}"
        );
        let e = err("http_server_config:\n  headers:\n    Server: spate\n");
        assert!(
            e.contains("/etc/web.yml:3") && e.contains("\"Server\" can not be configured"),
            "{e}"
        );
        let e = err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(e.contains("invalid value for X-Frame-Options"), "{e}");
    }

    #[test]
    fn unknown_and_unsupported_fields_are_named_with_their_line() {
        let e = err(
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        );
        assert!(
            e.starts_with("/etc/web.yml:4: tls_server_config.cipher_suites: not supported"),
            "{e}"
        );
        let e = err("rate_limit:\n  interval: 1s\n");
        assert!(
            e.starts_with("/etc/web.yml:2: rate_limit:")
                || e.starts_with("/etc/web.yml:1: rate_limit:"),
            "{e}"
        );
        let e = err("basic_auth:\n  x: y\n");
        assert!(
            e.contains("/etc/web.yml:1") && e.contains("basic_auth"),
            "{e}"
        );
        let e = err("tls_server_config:\n  cert_file: /nonexistent/cert.pem\n  key_file: k\n");
        assert!(
            e.contains(
                "/etc/web.yml:2: tls_server_config.cert_file: cannot read /nonexistent/cert.pem"
            ),
            "{e}"
        );
        let e = err("tls_server_config:\n  key_file: /dev/null\n");
        assert!(e.contains("missing cert_file"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let e = err("tls_server_config:\n  cert_file: tls/cert.pem\n  key_file: tls/key.pem\n");
        assert!(e.contains("cannot read /etc/tls/cert.pem"), "{e}");
    }
}
