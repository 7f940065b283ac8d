//! `http_sd_configs`: target groups fetched with GET every `refresh_interval`, as Prometheus
//! does: status 200 and a JSON content type required; on error the last list stays.

use std::io::{Read, Write};
use std::net::TcpStream;
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

/// One GET: the body of a 200 response with a JSON content type.
fn fetch(cfg: &HttpSdConfig) -> Result<String, String> {
    let u = &cfg.url;
    let timeout = cfg.refresh_interval.max(Duration::from_secs(1));
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&(u.host.as_str(), u.port))
        .map_err(|e| format!("resolve {}: {e}", u.host))?
        .next()
        .ok_or_else(|| format!("resolve {}: no address", u.host))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    if u.tls {
        let t = cfg.http.tls_target(&u.host)?;
        let conn = rustls::ClientConnection::new(t.config, t.server_name)
            .map_err(|e| format!("tls: {e}"))?;
        exchange(cfg, &mut rustls::StreamOwned::new(conn, tcp))
    } else {
        let mut tcp = tcp;
        exchange(cfg, &mut tcp)
    }
}

/// Sends the GET on `s` and reads the response.
fn exchange(cfg: &HttpSdConfig, s: &mut (impl Read + Write)) -> Result<String, String> {
    let u = &cfg.url;
    let host = if u.host.contains(':') {
        format!("[{}]:{}", u.host, u.port)
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let mut auth = String::new();
    cfg.http.header_lines(&mut auth)?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: spate/{}\r\nAccept: application/json\r\nX-Prometheus-Refresh-Interval-Seconds: {}\r\n{auth}Connection: close\r\n\r\n",
        u.path_and_query,
        env!("CARGO_PKG_VERSION"),
        cfg.refresh_interval.as_secs()
    )
    .map_err(|e| e.to_string())?;
    // Read until the response is complete by its framing (the server may keep the
    // connection open whatever we asked).
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head = loop {
        if let Some(head) = crate::http::parse_head(&raw, false)? {
            let body = raw.len() - head.head_len;
            let complete = match head.framing {
                crate::http::Framing::Length(n) => body >= n,
                crate::http::Framing::Chunked => raw.ends_with(b"0\r\n\r\n"),
                crate::http::Framing::Close => false,
            };
            if complete {
                break head;
            }
        }
        if raw.len() > 64 << 20 {
            return Err("response larger than 64 MiB".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => match crate::http::parse_head(&raw, false)? {
                Some(head) => break head,
                None => return Err("connection closed before a complete response".into()),
            },
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    };
    if head.status != 200 {
        return Err(format!("server returned HTTP status {}", head.status));
    }
    let ct = head
        .content_type
        .map(|(a, b)| String::from_utf8_lossy(&raw[a..b]).to_ascii_lowercase())
        .unwrap_or_default();
    let media = ct.split(';').next().unwrap_or("").trim();
    if media != "application/json" {
        return Err(format!("unsupported content type {ct:?}"));
    }
    let mut body = raw[head.head_len..].to_vec();
    match head.framing {
        crate::http::Framing::Chunked => {
            let n = crate::http::dechunk_in_place(&mut body)
                .map_err(|e| format!("invalid chunked body: {e}"))?;
            body.truncate(n);
        }
        crate::http::Framing::Length(n) => body.truncate(n),
        crate::http::Framing::Close => {}
    }
    String::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())
}
