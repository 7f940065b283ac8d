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

/// What a target served to [`fetch_once`].
pub struct Served {
    pub status: u16,
    pub content_type: String,
    /// The body, decompressed.
    pub body: Vec<u8>,
}

/// One request to a target outside its loop, for the web's response viewer: the head, client
/// settings (TLS, auth, OAuth 2.0, proxy, compression) and redirects of its scrapes, on an
/// executor of its own on the calling thread. At most `max_body` bytes (and the job's
/// `body_size_limit`), within `limit`.
pub fn fetch_once(t: &Target, max_body: usize, limit: Duration) -> Result<Served, String> {
    crate::runtime::block_on(async {
        let token = match &t.http.oauth2 {
            None => None,
            Some(o) => {
                let mut source = crate::http::oauth2::TokenSource::default();
                match timeout(limit, source.token(o)).await {
                    Err(_) => return Err("oauth2: token request timed out".to_string()),
                    Ok(r) => Some(r?),
                }
            }
        };
        let headers = request_headers(t, token.as_deref())?;
        let mut conn = t.http.connection(&t.address, t.scheme == "https")?;
        let cap = match t.limits.body_size_limit {
            0 => max_body,
            l => max_body.min(l.saturating_sub(1) as usize),
        };
        conn.set_max_body(cap);
        match timeout(limit, fetch(t, &mut conn, &headers)).await {
            Err(_) => return Err(format!("Get \"{}\": timed out after {limit:?}", t.url())),
            Ok(Err(FetchError::TooLarge)) => {
                return Err(format!("the response is larger than {cap} bytes"));
            }
            Ok(Err(FetchError::Redirect(e))) => return Err(e),
            Ok(Err(FetchError::Http(e))) => return Err(format!("Get \"{}\": {e}", t.url())),
            Ok(Ok(())) => {}
        }
        let resp = conn
            .response()
            .ok_or("connection closed before a complete response")?;
        Ok(Served {
            status: resp.status,
            content_type: resp.content_type.to_string(),
            body: resp.body.to_vec(),
        })
    })
    .map_err(|e| format!("cannot start an executor for the request: {e}"))?
}
