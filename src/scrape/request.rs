//! One scrape request: the request head (auth, headers, `Accept`), the round trip with its
//! redirects, and what can go wrong.

use super::*;

/// The scrape request for `path`, with the job's auth and headers (files read now) and an
/// OAuth 2.0 bearer token.
pub(super) fn build_request(
    t: &Target,
    path: &str,
    bearer: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: spate/{}\r\nAccept: {}\r\nAccept-Encoding: {}\r\nX-Prometheus-Scrape-Timeout-Seconds: {}\r\n",
        t.address,
        env!("CARGO_PKG_VERSION"),
        t.accept,
        if t.enable_compression {
            "gzip"
        } else {
            "identity"
        },
        t.timeout.as_secs_f64(),
    );
    t.http.header_lines(&mut head)?;
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    Ok(head.into_bytes())
}

pub(super) enum FetchError {
    Http(crate::http::Error),
    TooLarge,
    Redirect(String),
}

/// Go's client follows at most this many redirects.
pub(super) const MAX_REDIRECTS: usize = 10;

/// Sends the scrape request, following redirects as Prometheus' client does (with
/// `follow_redirects`, the default): up to ten, to any host; credentials are not sent to
/// another host. The final response is left in `conn`.
pub(super) async fn fetch(t: &Target, conn: &mut Conn, request: &[u8]) -> Result<(), FetchError> {
    conn.request_mut().extend_from_slice(request);
    // A connection to another host, once a redirect led there.
    let mut elsewhere: Option<Conn> = None;
    let mut here = (t.scheme == "https", t.address.clone());
    for _ in 0..=MAX_REDIRECTS {
        let c = match elsewhere.as_mut() {
            Some(c) => c,
            None => &mut *conn,
        };
        match c.send(false).await {
            Ok(()) => {}
            Err(crate::http::Error::BodyTooLarge(_)) => return Err(FetchError::TooLarge),
            Err(e) => return Err(FetchError::Http(e)),
        }
        let (status, location) = match c.response() {
            Some(r) => (r.status, r.location.map(str::to_string)),
            None => (0, None),
        };
        let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
        let location = location.filter(|_| redirect && t.http.follow_redirects);
        let Some(location) = location else {
            if let Some(other) = elsewhere.take() {
                conn.adopt_response(other);
            }
            return Ok(());
        };
        let Some((tls, authority, path)) = crate::http::redirect_target(&here, &location) else {
            return Err(FetchError::Redirect(format!(
                "Get \"{}\": redirect to {location:?}: not an http or https URL",
                t.url()
            )));
        };
        // The same request (headers, credentials) for the new path; to another host, with its
        // Host and without credentials.
        let line_end = memchr::memchr(b'\n', request).map_or(request.len(), |i| i + 1);
        let mut req = format!("GET {path} HTTP/1.1\r\n").into_bytes();
        if (tls, authority.as_str()) == (here.0, here.1.as_str()) {
            req.extend_from_slice(&request[line_end..]);
            c.request_mut().extend_from_slice(&req);
            continue;
        }
        for line in request[line_end..].split_inclusive(|b| *b == b'\n') {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"host:") {
                req.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
            } else if !lower.starts_with(b"authorization:") {
                req.extend_from_slice(line);
            }
        }
        let mut next = t
            .http
            .connection(&authority, tls)
            .map_err(FetchError::Redirect)?;
        if t.limits.body_size_limit > 0 {
            next.set_max_body(t.limits.body_size_limit.saturating_sub(1) as usize);
        }
        // The receive buffers move along with the request.
        let (buf, decoded) = match elsewhere.as_mut() {
            Some(c) => c.take_buffers(),
            None => conn.take_buffers(),
        };
        next.set_buffers(buf, decoded);
        next.request_mut().extend_from_slice(&req);
        elsewhere = Some(next);
        here = (tls, authority);
    }
    if let Some(other) = elsewhere.take() {
        conn.adopt_response(other);
    }
    Err(FetchError::Redirect(format!(
        "Get \"{}\": stopped after {MAX_REDIRECTS} redirects",
        t.url()
    )))
}
