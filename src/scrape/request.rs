//! One scrape request: the request head (auth, headers, `Accept`), the round trip with its
//! redirects, and what can go wrong.

use super::*;

/// The scrape request's header lines after `Host`: the job's auth and headers (files read
/// now) and an OAuth 2.0 bearer token.
pub(super) fn request_headers(t: &Target, bearer: Option<&str>) -> Result<String, String> {
    let mut head = format!(
        "User-Agent: spate/{}\r\nAccept: {}\r\nAccept-Encoding: {}\r\nX-Prometheus-Scrape-Timeout-Seconds: {}\r\n",
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
    Ok(head)
}

pub(super) enum FetchError {
    Http(crate::http::Error),
    TooLarge,
    Redirect(String),
}

/// Sends the scrape request, following redirects as Prometheus' client does (with
/// `follow_redirects`, the default): up to ten, to any host; credentials are not sent to
/// another host. The final response is left in `conn`.
pub(super) async fn fetch(t: &Target, conn: &mut Conn, headers: &str) -> Result<(), FetchError> {
    use crate::http::{Error, GET_REDIRECTS, Redirects, Request, SendError};
    let req = Request {
        method: "GET",
        origin: (t.scheme == "https", &t.address),
        host: &t.address,
        path: &t.path_and_query,
        headers,
        body: &[],
    };
    let policy = Redirects {
        follow: t.http.follow_redirects,
        statuses: GET_REDIRECTS,
        credentials_elsewhere: false,
    };
    let connect = |authority: &str, tls: bool| {
        let mut next = t.http.connection(authority, tls)?;
        if t.limits.body_size_limit > 0 {
            next.set_max_body(t.limits.body_size_limit.saturating_sub(1) as usize);
        }
        Ok(next)
    };
    match crate::http::send(conn, &req, policy, &mut |_, _| Ok(String::new()), &connect).await {
        Ok(()) => Ok(()),
        Err(SendError::Http(Error::BodyTooLarge(_))) => Err(FetchError::TooLarge),
        Err(SendError::Http(e)) => Err(FetchError::Http(e)),
        Err(e) => Err(FetchError::Redirect(format!("Get \"{}\": {e}", t.url()))),
    }
}
