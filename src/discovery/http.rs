//! `http_sd_configs`: target groups fetched with GET every `refresh_interval`, as Prometheus
//! does: status 200 and a JSON content type required; on error the last list stays.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::{Command, parse_groups};
use crate::config::HttpSdConfig;

/// Fetches until `stop`; each successful fetch that changed the list is sent.
pub fn run(
    cfg: &HttpSdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &crate::selfmetrics::SdStats,
) {
    let url = cfg.url_text.clone();
    let poll = super::Poll {
        job,
        provider,
        tx,
        stop,
        interval: cfg.refresh_interval,
        failures: &stats.http_failures,
        what: &format!("http {url}"),
    };
    poll.run(|| {
        let extra = vec![("__meta_url".to_string(), url.clone())];
        fetch(cfg).and_then(|body| parse_groups(&body, &url, &extra))
    });
}

/// One GET: the body of a 200 response with a JSON content type. It runs on this provider's
/// thread with the data plane's HTTP client (TLS, framing, redirects as `follow_redirects`
/// says), on an executor of its own.
fn fetch(cfg: &HttpSdConfig) -> Result<String, String> {
    crate::runtime::block_on(fetch_on_executor(cfg))
        .map_err(|e| format!("cannot start an executor for the request: {e}"))?
}

async fn fetch_on_executor(cfg: &HttpSdConfig) -> Result<String, String> {
    let headers = format!(
        "Accept: application/json\r\nX-Prometheus-Refresh-Interval-Seconds: {}\r\n",
        cfg.refresh_interval.as_secs()
    );
    let limit = cfg.refresh_interval.max(Duration::from_secs(1));
    let resp = get(
        &cfg.http,
        &cfg.url,
        &cfg.url.path_and_query,
        &headers,
        limit,
        MAX_BODY,
    )
    .await?;
    if resp.status != 200 {
        return Err(format!("server returned HTTP status {}", resp.status));
    }
    let ct = resp.content_type.to_ascii_lowercase();
    let media = ct.split(';').next().unwrap_or("").trim();
    if media != "application/json" {
        return Err(format!("unsupported content type {ct:?}"));
    }
    String::from_utf8(resp.body).map_err(|_| "the body is not UTF-8".to_string())
}

/// A response a discovery request got.
pub(crate) struct Fetched {
    pub status: u16,
    pub content_type: String,
    /// Consul's `X-Consul-Index`.
    pub index: Option<u64>,
    pub body: Vec<u8>,
}

/// One GET of `target` (a path and query) on the server of `url`, with the client settings
/// `http` (TLS, proxy, auth headers, redirects as `follow_redirects` says) and `extra` header
/// lines, within `limit`: the data plane's HTTP client, on the calling provider's executor.
pub(crate) async fn get(
    http: &crate::config::client::HttpClientConfig,
    url: &crate::http::Url,
    target: &str,
    extra: &str,
    limit: Duration,
    max_body: usize,
) -> Result<Fetched, String> {
    request(
        http,
        url,
        ("GET", target, &[]),
        &|_, _| Ok(extra.to_string()),
        limit,
        max_body,
    )
    .await
}

/// [`get`] for any method, with a body, and with `extra(host, path)` giving each hop's own
/// header lines (a signature over them).
pub(crate) async fn request(
    http: &crate::config::client::HttpClientConfig,
    url: &crate::http::Url,
    (method, target, body): (&str, &str, &[u8]),
    extra: &dyn Fn(&str, &str) -> Result<String, String>,
    limit: Duration,
    max_body: usize,
) -> Result<Fetched, String> {
    use crate::http::{BODY_REDIRECTS, GET_REDIRECTS, Redirects, Request};
    let authority = url.authority();
    let mut conn = http.connection(&authority, url.tls)?;
    conn.set_max_body(max_body);
    let mut headers = format!("User-Agent: spate/{}\r\n", env!("CARGO_PKG_VERSION"));
    http.header_lines(&mut headers)?;
    let req = Request {
        method,
        origin: (url.tls, &authority),
        host: &authority,
        path: target,
        headers: &headers,
        body,
    };
    let policy = Redirects {
        follow: http.follow_redirects,
        statuses: if method == "GET" {
            GET_REDIRECTS
        } else {
            BODY_REDIRECTS
        },
        credentials_elsewhere: false,
    };
    let connect = |authority: &str, tls: bool| {
        let mut c = http.connection(authority, tls)?;
        c.set_max_body(max_body);
        Ok(c)
    };
    let mut hop = |host: &str, path: &str| extra(host, path);
    let sent = crate::http::send(&mut conn, &req, policy, &mut hop, &connect);
    match crate::runtime::timeout(limit, sent).await {
        Err(_) => return Err(format!("request timed out after {limit:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(())) => {}
    }
    let resp = conn
        .response()
        .ok_or("connection closed before a complete response")?;
    Ok(Fetched {
        status: resp.status,
        content_type: resp.content_type.to_string(),
        index: resp.consul_index,
        body: resp.body.to_vec(),
    })
}

/// The largest target list taken.
const MAX_BODY: usize = 64 << 20;
