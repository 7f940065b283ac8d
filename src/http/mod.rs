//! A minimal HTTP/1.1 client for the data plane: one keep-alive connection per scrape target or
//! remote-write shard, a reused receive buffer, httparse for the head, in-place de-chunking,
//! and gzip.
//!
//! **Invariant:** a connection has at most one request in flight; a request that fails or
//! times out drops the connection, so no response is ever read by the wrong request.

mod conn;
mod framing;
pub mod oauth2;
mod request;
mod secret;
pub mod sigv4;
pub mod tls;
pub mod xml;

pub use conn::{Conn, Error, Response, TlsTarget};
pub use framing::{Framing, HeadInfo, dechunk_in_place, parse_head};
pub use request::{
    BODY_REDIRECTS, GET_REDIRECTS, Head, MAX_REDIRECTS, Redirects, Request, SendError, host_header,
    send, write_request,
};
pub use secret::{Secret, base64, base64_decode};

use std::fmt;

/// A parsed `http://` or `https://` URL: enough to open a connection and write a request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    /// Host as written (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!(
                "{s:?} is not a valid URL: it must start with http:// or https://"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{s:?}: credentials in the URL are not supported; use headers"
            ));
        }
        let (host, port) = split_host_port(authority, if tls { 443 } else { 80 })
            .map_err(|e| format!("{s:?} is not a valid URL: {e}"))?;
        Ok(Url {
            tls,
            host,
            port,
            path_and_query: path,
        })
    }

    /// `host:port` as a socket address string (IPv6 in brackets).
    pub fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.path_and_query)
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host (with `default_port`).
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Err("empty host".into());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("missing ']' in IPv6 address")?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("invalid port {p:?}"))?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected {after:?} after IPv6 address")),
        };
        return Ok((host.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            if host.is_empty() {
                return Err("empty host".into());
            }
            let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
            Ok((host.to_string(), port))
        }
        Some(_) => Err("IPv6 addresses must be in brackets".into()),
        None => Ok((s.to_string(), default_port)),
    }
}

pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Appends `s` percent-encoded as a URL query component (Go's `url.QueryEscape`).
/// Splits a URL query into decoded (name, value) pairs (`+` is a space, `%XX` a byte).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub fn query_escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}

/// Where a `Location` leads from `(tls, authority)`: scheme, authority and path.
pub fn redirect_target(here: (bool, &str), location: &str) -> Option<(bool, String, String)> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Some((here.0, here.1.to_string(), location.to_string()));
    }
    let (tls, rest) = if let Some(r) = location.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = location.strip_prefix("https://") {
        (true, r)
    } else {
        return None;
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok() && !p.is_empty());
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Some((tls, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://localhost:9090/api/v1/write").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path_and_query.as_str()),
            (false, "localhost", 9090, "/api/v1/write")
        );
        let u = Url::parse("https://example.com").unwrap();
        assert_eq!((u.tls, u.port, u.path_and_query.as_str()), (true, 443, "/"));
        let u = Url::parse("http://[::1]:8428/api/v1/write?extra_label=a").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 8428, "/api/v1/write?extra_label=a")
        );
        assert_eq!(
            u.to_string(),
            "http://[::1]:8428/api/v1/write?extra_label=a"
        );
        let u = Url::parse("http://h:1?x=1").unwrap();
        assert_eq!(u.path_and_query, "/?x=1");
        for bad in [
            "localhost:9090",
            "ftp://x",
            "http://",
            "http://h:port/",
            "http://u:p@h/",
            "http://::1/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn escapes_query_components() {
        let mut s = String::new();
        query_escape(&mut s, "a b&c=d/é");
        assert_eq!(s, "a+b%26c%3Dd%2F%C3%A9");
    }
}
