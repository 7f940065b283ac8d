//! `http_sd_configs`: target groups fetched with GET every `refresh_interval`, as Prometheus
//! does: status 200 and a JSON content type required; on error the last list stays.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::{Command, Outbox, parse_groups, sleep_unless};
use crate::config::HttpSdConfig;
use crate::log::Level;

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
    let mut out = Outbox::new(job, provider, tx);
    loop {
        match fetch(cfg).and_then(|body| {
            let extra = vec![("__meta_url".to_string(), url.clone())];
            parse_groups(&body, &url, &extra)
        }) {
            Ok(groups) => {
                if !out.offer(groups) {
                    return;
                }
            }
            Err(e) => {
                stats
                    .http_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::log!(
                    Level::Error,
                    "discovery",
                    "HTTP service discovery failed; its last targets stay",
                    job = job,
                    url = url,
                    err = e
                )
            }
        }
        if sleep_unless(cfg.refresh_interval, stop) {
            return;
        }
    }
}

/// One GET: the body of a 200 response with a JSON content type. It runs on this provider's
/// thread with the data plane's HTTP client (TLS, framing, redirects as `follow_redirects`
/// says), on an executor of its own.
fn fetch(cfg: &HttpSdConfig) -> Result<String, String> {
    crate::runtime::block_on(fetch_on_executor(cfg))
        .map_err(|e| format!("cannot start an executor for the request: {e}"))?
}

async fn fetch_on_executor(cfg: &HttpSdConfig) -> Result<String, String> {
    use crate::http::{GET_REDIRECTS, Redirects, Request};
    let u = &cfg.url;
    let authority = u.authority();
    let limit = cfg.refresh_interval.max(Duration::from_secs(1));
    let mut conn = cfg.http.connection(&authority, u.tls)?;
    conn.set_max_body(MAX_BODY);
    let mut headers = format!(
        "User-Agent: spate/{}\r\nAccept: application/json\r\nX-Prometheus-Refresh-Interval-Seconds: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        cfg.refresh_interval.as_secs()
    );
    cfg.http.header_lines(&mut headers)?;
    let req = Request {
        method: "GET",
        origin: (u.tls, &authority),
        host: &authority,
        path: &u.path_and_query,
        headers: &headers,
        body: &[],
    };
    let policy = Redirects {
        follow: cfg.http.follow_redirects,
        statuses: GET_REDIRECTS,
        credentials_elsewhere: false,
    };
    let connect = |authority: &str, tls: bool| {
        let mut c = cfg.http.connection(authority, tls)?;
        c.set_max_body(MAX_BODY);
        Ok(c)
    };
    let mut no_extra = |_: &str, _: &str| Ok(String::new());
    let sent = crate::http::send(&mut conn, &req, policy, &mut no_extra, &connect);
    match crate::runtime::timeout(limit, sent).await {
        Err(_) => return Err(format!("request timed out after {limit:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(())) => {}
    }
    let resp = conn
        .response()
        .ok_or("connection closed before a complete response")?;
    if resp.status != 200 {
        return Err(format!("server returned HTTP status {}", resp.status));
    }
    let ct = resp.content_type.to_ascii_lowercase();
    let media = ct.split(';').next().unwrap_or("").trim();
    if media != "application/json" {
        return Err(format!("unsupported content type {ct:?}"));
    }
    String::from_utf8(resp.body.to_vec()).map_err(|_| "the body is not UTF-8".to_string())
}

/// The largest target list taken.
const MAX_BODY: usize = 64 << 20;
