//! The control plane's HTTP surface: `/metrics`, `/-/healthy`, `/-/ready`, `/-/reload`.
//!
//! It runs on its own thread with blocking std sockets, off the data-plane cores: it serves a
//! handful of requests a minute and must never take time from scraping.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::scrape::TargetsView;
use crate::selfmetrics::Registry;

/// Binds the listener now (so a bad address fails start-up) and serves it on a new thread.
pub fn start(
    address: &str,
    registry: Arc<Registry>,
    targets: Arc<Mutex<TargetsView>>,
    reload: Option<crate::discovery::ReloadHandle>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(address)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("spate-web".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (registry, targets) = (registry.clone(), targets.clone());
                let reload = reload.clone();
                // One short-lived thread per connection: a slow client cannot block the others.
                let _ = std::thread::Builder::new()
                    .name("spate-web-conn".into())
                    .spawn(move || serve(conn, &registry, &targets, reload.as_ref()));
            }
        })?;
    Ok(local)
}

fn serve(
    mut conn: TcpStream,
    registry: &Registry,
    targets: &Mutex<TargetsView>,
    reload: Option<&crate::discovery::ReloadHandle>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    let (method, path) = loop {
        if len == buf.len() {
            return respond(
                &mut conn,
                431,
                "text/plain",
                &[],
                b"request header too large\n",
                false,
            );
        }
        match conn.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("/").to_string(),
                );
            }
            Ok(httparse::Status::Partial) => continue,
            Err(_) => return respond(&mut conn, 400, "text/plain", &[], b"bad request\n", false),
        }
    };
    let head = method == "HEAD";
    let (path, query) = path.split_once('?').unwrap_or((path.as_str(), ""));
    let get = method == "GET" || head;
    match path {
        "/metrics" if get => {
            let body = registry.render();
            respond(&mut conn, 200, "text/plain; version=0.0.4; charset=utf-8", &[], body.as_bytes(), head)
        }
        "/api/v1/targets" if get => {
            let view = targets.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut state = "any".to_string();
            let mut pool = None;
            for (k, v) in crate::http::query_pairs(query) {
                match k.as_str() {
                    "state" => state = v.to_ascii_lowercase(),
                    "scrapePool" => pool = Some(v),
                    _ => {}
                }
            }
            let body = crate::scrape::targets_json(&view, &state, pool.as_deref());
            respond(&mut conn, 200, "application/json", &[], body.as_bytes(), head)
        }
        "/api/v1/status/config" if get => {
            let yaml = registry.config_yaml.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut body = String::from(r#"{"status":"success","data":{"yaml":"#);
            crate::log::quoted(&mut body, &yaml);
            body.push_str("}}");
            respond(&mut conn, 200, "application/json", &[], body.as_bytes(), head)
        }
        "/-/healthy" if get => respond(&mut conn, 200, "text/plain; charset=utf-8", &[], b"Spate is Healthy.\n", head),
        "/-/ready" if get => {
            let stopping = registry.stopping.load(Relaxed);
            if registry.ready.load(Relaxed) && !stopping {
                respond(&mut conn, 200, "text/plain; charset=utf-8", &[], b"Spate is Ready.\n", head)
            } else {
                let flag = if stopping { "true" } else { "false" };
                respond(&mut conn, 503, "text/plain; charset=utf-8", &[("X-Prometheus-Stopping", flag)], b"Service Unavailable\n", head)
            }
        }
        "/-/reload" if (method == "POST" || method == "PUT") && reload.is_some() => {
            match reload.map(|r| r.reload()) {
                Some(Ok(())) => respond(&mut conn, 200, "text/plain; charset=utf-8", &[], b"", false),
                Some(Err(e)) => {
                    let body = format!("failed to reload config: {e}\n");
                    respond(&mut conn, 500, "text/plain; charset=utf-8", &[], body.as_bytes(), false)
                }
                None => respond(&mut conn, 403, "text/plain; charset=utf-8", &[], b"Lifecycle API is not enabled.\n", false),
            }
        }
        "/-/reload" | "/-/quit" if method == "POST" || method == "PUT" => {
            respond(&mut conn, 403, "text/plain; charset=utf-8", &[], b"Lifecycle API is not enabled.\n", false)
        }
        "/-/reload" | "/-/quit" => {
            respond(&mut conn, 405, "text/plain; charset=utf-8", &[], b"Only POST or PUT requests allowed\n", head)
        }
        "/" if get => respond(
            &mut conn,
            200,
            "text/plain; charset=utf-8",
            &[],
            b"spate: a Prometheus-compatible metrics agent.\nEndpoints: /metrics /api/v1/targets /-/healthy /-/ready\n",
            head,
        ),
        "/metrics" | "/-/healthy" | "/-/ready" | "/" => {
            respond(&mut conn, 405, "text/plain; charset=utf-8", &[], b"Method Not Allowed\n", false)
        }
        _ => respond(&mut conn, 404, "text/plain; charset=utf-8", &[], b"404 page not found\n", head),
    }
}

fn respond(
    conn: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    head: bool,
) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(body);
    }
    let _ = conn.write_all(&bytes);
}
