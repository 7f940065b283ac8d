//! The one request path of every HTTP client in spate (scrapes, remote write, OAuth 2.0 token
//! fetches, `http_sd`): a [`Request`], the one place a request head is written
//! ([`write_request`]), and the one redirect loop ([`send`]) with its [`Redirects`] policy.
//!
//! Redirects follow Go's client, which Prometheus uses: at most [`MAX_REDIRECTS`] hops, to any
//! host; a hop to another host gets its own `Host` and loses the sensitive headers
//! (`Authorization`, `WWW-Authenticate`, `Cookie`, `Cookie2`) unless the policy keeps
//! credentials on every hop, as Prometheus' remote-write client does (it adds them to each
//! request it sends).

use std::borrow::Cow;

use super::{Conn, Error, redirect_target};

/// Go's client follows at most this many redirects.
pub const MAX_REDIRECTS: usize = 10;

/// Redirect statuses a GET follows.
pub const GET_REDIRECTS: &[u16] = &[301, 302, 303, 307, 308];
/// Redirect statuses a request with a body follows: they keep the method and the body.
pub const BODY_REDIRECTS: &[u16] = &[307, 308];

/// One request, as its first hop sends it.
pub struct Request<'a> {
    pub method: &'a str,
    /// Where the request goes first: (TLS, `host:port`).
    pub origin: (bool, &'a str),
    /// The `Host` header of the first hop.
    pub host: &'a str,
    pub path: &'a str,
    /// Header lines after `Host`, each ending in `\r\n`, credentials included.
    pub headers: &'a str,
    pub body: &'a [u8],
}

/// Which redirects a client follows, and what goes with them.
#[derive(Clone, Copy)]
pub struct Redirects {
    /// `follow_redirects`: with `false`, a redirect is the response.
    pub follow: bool,
    /// The statuses followed ([`GET_REDIRECTS`] or [`BODY_REDIRECTS`]).
    pub statuses: &'static [u16],
    /// Credentials go to another host too.
    pub credentials_elsewhere: bool,
}

/// Why [`send`] gave up.
#[derive(Debug)]
pub enum SendError {
    /// The exchange itself failed (connect, I/O, protocol, a body over the limit).
    Http(Error),
    /// A redirect's `Location` is not an http or https URL.
    NotFollowable(String),
    /// More than [`MAX_REDIRECTS`] redirects.
    TooManyRedirects,
    /// No connection could be set up to where a redirect leads.
    Connect(String),
    /// The caller's per-hop lines could not be made (credentials, a signature).
    Hop(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Http(e) => write!(f, "{e}"),
            SendError::NotFollowable(location) => {
                write!(f, "redirect to {location:?}: not an http or https URL")
            }
            SendError::TooManyRedirects => write!(f, "stopped after {MAX_REDIRECTS} redirects"),
            SendError::Connect(e) | SendError::Hop(e) => f.write_str(e),
        }
    }
}

/// A request head as one hop sends it.
pub struct Head<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// Header lines, each ending in `\r\n`.
    pub headers: &'a str,
    /// Whether the sensitive headers among `headers` go too.
    pub credentials: bool,
    /// More header lines, sent as they are (a signature, `Retry-Attempt`).
    pub extra: &'a str,
}

/// Writes a whole request into `out`: the request line, `Host`, the headers (without the
/// sensitive ones unless `credentials`), the extra lines, `Content-Length` when there is a
/// body or the method carries one, the blank line and the body.
pub fn write_request(out: &mut Vec<u8>, head: &Head, body: &[u8]) {
    let Head {
        method,
        host,
        path,
        headers,
        credentials,
        extra,
    } = *head;
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    if credentials {
        out.extend_from_slice(headers.as_bytes());
    } else {
        for line in headers.split_inclusive('\n') {
            if !is_sensitive(line) {
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.extend_from_slice(extra.as_bytes());
    if !body.is_empty() || method == "POST" || method == "PUT" {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Headers Go's client does not copy to a redirect to another host.
fn is_sensitive(line: &str) -> bool {
    let name = line.split(':').next().unwrap_or("").trim();
    ["authorization", "www-authenticate", "cookie", "cookie2"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
}

/// The `Host` header for an authority reached by a redirect: without the scheme's default
/// port, as Go writes it.
pub fn host_header(tls: bool, authority: &str) -> &str {
    authority
        .strip_suffix(if tls { ":443" } else { ":80" })
        .unwrap_or(authority)
}

/// Sends `req` on `conn`, following redirects by `policy`, and leaves the final response in
/// `conn` ([`Conn::response`]). `hop(host, path)` gives extra header lines for each hop (a
/// signature over the host and path); `connect(authority, tls)` opens a connection to another
/// host with the caller's settings (TLS, proxy, body limit). The receive buffers move along
/// with the request.
pub async fn send(
    conn: &mut Conn,
    req: &Request<'_>,
    policy: Redirects,
    hop: &mut dyn FnMut(&str, &str) -> Result<String, String>,
    connect: &dyn Fn(&str, bool) -> Result<Conn, String>,
) -> Result<(), SendError> {
    // A connection to another host, once a redirect led there.
    let mut elsewhere: Option<Conn> = None;
    let result = hops(conn, &mut elsewhere, req, policy, hop, connect).await;
    if let Some(other) = elsewhere.take() {
        conn.adopt_response(other);
    }
    result
}

/// [`send`]'s loop: one request per hop, on `conn` or, after a redirect to another host, on
/// `elsewhere`.
async fn hops(
    conn: &mut Conn,
    elsewhere: &mut Option<Conn>,
    req: &Request<'_>,
    policy: Redirects,
    hop: &mut dyn FnMut(&str, &str) -> Result<String, String>,
    connect: &dyn Fn(&str, bool) -> Result<Conn, String>,
) -> Result<(), SendError> {
    // Borrowed from the request until a redirect leads elsewhere.
    let mut here = (req.origin.0, Cow::Borrowed(req.origin.1));
    let mut host = Cow::Borrowed(req.host);
    let mut path = Cow::Borrowed(req.path);
    let mut credentials = true;
    for _ in 0..=MAX_REDIRECTS {
        let extra = hop(&host, &path).map_err(SendError::Hop)?;
        let c = match elsewhere.as_mut() {
            Some(c) => c,
            None => &mut *conn,
        };
        let out = c.request_mut();
        let head = Head {
            method: req.method,
            host: &host,
            path: &path,
            headers: req.headers,
            credentials,
            extra: &extra,
        };
        write_request(out, &head, req.body);
        c.send(req.method == "HEAD")
            .await
            .map_err(SendError::Http)?;
        let (status, location) = match c.response() {
            Some(r) => (r.status, r.location.map(str::to_string)),
            None => (0, None),
        };
        let location = location.filter(|_| policy.follow && policy.statuses.contains(&status));
        let Some(location) = location else {
            return Ok(());
        };
        let Some((tls, authority, to)) = redirect_target((here.0, &here.1), &location) else {
            return Err(SendError::NotFollowable(location));
        };
        if (tls, authority.as_str()) != (here.0, &*here.1) {
            let mut next = connect(&authority, tls).map_err(SendError::Connect)?;
            let (buf, decoded) = c.take_buffers();
            next.set_buffers(buf, decoded);
            *elsewhere = Some(next);
            credentials = credentials && policy.credentials_elsewhere;
            host = Cow::Owned(host_header(tls, &authority).to_string());
        }
        here = (tls, Cow::Owned(authority));
        path = Cow::Owned(to);
    }
    Err(SendError::TooManyRedirects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(headers: &str, credentials: bool, body: &[u8], method: &str) -> String {
        let mut out = Vec::new();
        let head = Head {
            method,
            host: "h:1",
            path: "/p?q=1",
            headers,
            credentials,
            extra: "X-Extra: 1\r\n",
        };
        write_request(&mut out, &head, body);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_head_is_written_once_in_one_shape() {
        let headers =
            "User-Agent: spate\r\nAuthorization: Bearer t\r\nCookie: c=1\r\nX-Tenant: a\r\n";
        assert_eq!(
            written(headers, true, b"", "GET"),
            "GET /p?q=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: spate\r\nAuthorization: Bearer t\r\nCookie: c=1\r\nX-Tenant: a\r\nX-Extra: 1\r\n\r\n"
        );
        assert_eq!(
            written(headers, false, b"abc", "POST"),
            "POST /p?q=1 HTTP/1.1\r\nHost: h:1\r\nUser-Agent: spate\r\nX-Tenant: a\r\nX-Extra: 1\r\nContent-Length: 3\r\n\r\nabc"
        );
        assert!(written("", true, b"", "POST").contains("Content-Length: 0\r\n"));
    }

    #[test]
    fn a_hop_elsewhere_has_go_s_host_header() {
        assert_eq!(host_header(false, "a:80"), "a");
        assert_eq!(host_header(true, "a:443"), "a");
        assert_eq!(host_header(true, "a:80"), "a:80");
        assert_eq!(host_header(false, "[::1]:8080"), "[::1]:8080");
    }
}
