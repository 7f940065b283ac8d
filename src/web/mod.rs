//! The control plane's HTTP server: the web UI, the Prometheus-compatible API, `/metrics` and
//! the lifecycle endpoints.
//!
//! It runs hyper (HTTP/1.1, keep-alive) on a current-thread tokio runtime of its own thread,
//! never on a data-plane core, with rustls for TLS. It reads only what the cores and the
//! discovery manager publish (counters, the targets view, the loaded configuration); it never
//! walks a core's structures.
//!
//! Limits, so that a slow or hostile client cannot take the server: `--web.max-connections`
//! open connections (more wait in the kernel's backlog), `--web.read-timeout` to send a request's
//! head (and between requests on a kept-alive connection), 64 KiB of head, 1 MiB of body.

mod api;
mod auth;
mod selector;
mod ui;
pub mod webconfig;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::log::Level;
use crate::scrape::TargetsView;
use crate::selfmetrics::Registry;
use webconfig::WebConfigFile;

/// Largest request head and body the server reads.
const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 1 << 20;

/// How the server is set up (from the `--web.*` flags).
#[derive(Clone, Debug)]
pub struct Options {
    pub listen_address: String,
    pub config_file: Option<PathBuf>,
    /// The URL users reach spate at (`--web.external-url`, or one made of the host name).
    pub external_url: String,
    /// The path every route is served under: `""` for the root, else `/prefix`.
    pub route_prefix: String,
    pub max_connections: usize,
    pub read_timeout: Duration,
    /// `--web.cors.origin`, anchored.
    pub cors_origin: regex::Regex,
    pub page_title: String,
    /// `--web.enable-target-scrape-proxy`.
    pub target_scrape_proxy: bool,
}

/// What the server shows, published by the rest of the agent.
pub struct Sources {
    pub registry: Arc<Registry>,
    pub targets: Arc<Mutex<TargetsView>>,
    pub reload: Option<crate::discovery::ReloadHandle>,
    /// Every flag with its value as given or defaulted, for `/api/v1/status/flags`.
    pub flags: Vec<(String, String)>,
    /// The runtime facts `/api/v1/status/runtimeinfo` adds (storage, retention).
    pub storage: Storage,
}

/// The WAL's place and bounds, as configured.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    pub path: PathBuf,
    pub max_size: u64,
    pub max_time: Duration,
}

/// Everything a request handler reads.
struct State {
    opts: Options,
    src: Sources,
    web_config: WebConfigFile,
    auth: auth::Auth,
    /// The external URL's path, without its trailing `/`: what links in pages start with.
    link_prefix: String,
}

/// Checks the web configuration, binds the listener (so a bad address or file stops the start)
/// and serves it on a new thread.
pub fn start(opts: Options, src: Sources) -> Result<SocketAddr, String> {
    let web_config = WebConfigFile::open(opts.config_file.as_deref())?;
    let listener = std::net::TcpListener::bind(&opts.listen_address).map_err(|e| {
        format!(
            "cannot listen on --web.listen-address {}: {e}",
            opts.listen_address
        )
    })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot set up the web listener: {e}"))?;
    let link_prefix = url_path(&opts.external_url);
    let state = Arc::new(State {
        opts,
        src,
        web_config,
        auth: auth::Auth::default(),
        link_prefix,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(2)
        .thread_name("spate-web-blocking")
        .build()
        .map_err(|e| format!("cannot start the web server's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("spate-web".into())
        .spawn(move || runtime.block_on(serve(listener, state)))
        .map_err(|e| format!("cannot start the web thread: {e}"))?;
    Ok(local)
}

/// This machine's host name (for the default external URL and runtime info).
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// The path of an external URL, without a trailing `/` (`""` for the root).
pub fn url_path(external_url: &str) -> String {
    let rest = external_url
        .split_once("://")
        .map_or(external_url, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.trim_end_matches('/').to_string()
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::log!(
                Level::Error,
                "web",
                "cannot serve the web listener",
                err = e
            );
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(
        state.opts.max_connections.max(1),
    ));
    loop {
        // A connection slot first: past the limit, connections wait in the kernel's backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a moment rather than spin.
                crate::log!(Level::Warn, "web", "accept failed", err = e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            connection(stream, state).await;
            drop(slot);
        });
    }
}

/// One connection: TLS if the web configuration asks for it (read again for this handshake),
/// then HTTP/1.1 until the client or a timeout ends it.
async fn connection(stream: tokio::net::TcpStream, state: Arc<State>) {
    let config = match state.web_config.current() {
        Ok(c) => c,
        Err(_) => return,
    };
    let timeout = state.opts.read_timeout;
    match config.tls.clone() {
        None => http(TokioIo::new(stream), state).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => http(TokioIo::new(s), state).await,
                Ok(Err(e)) => {
                    state.src.registry.web.tls_failures.fetch_add(1, Relaxed);
                    crate::log!(Level::Debug, "web", "TLS handshake failed", err = e);
                }
                Err(_) => {}
            }
        }
    }
}

async fn http<I>(io: I, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let timeout = state.opts.read_timeout;
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, &state).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .serve_connection(io, service);
    let _ = conn.await;
}

/// A response before the common headers are added.
pub(crate) struct Reply {
    status: StatusCode,
    content_type: &'static str,
    headers: Vec<(header::HeaderName, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    fn text(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }
    fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, "application/json", body)
    }
    fn redirect(location: String) -> Reply {
        let mut r = Reply::text(302, "");
        r.headers.push((header::LOCATION, location));
        r
    }
    fn with(mut self, name: header::HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// A request as the routes see it.
pub(crate) struct Req {
    method: Method,
    /// The path below the route prefix.
    path: String,
    query: String,
    body: Vec<u8>,
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    state.src.registry.web.requests.fetch_add(1, Relaxed);
    let config = match state.web_config.current() {
        Ok(c) => c,
        Err(_) => {
            return finish(
                Reply::text(500, "Internal Server Error\n"),
                &[],
                false,
                None,
            );
        }
    };
    let gzip = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !config.users.is_empty() {
        let creds = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(auth::basic_credentials);
        let ok = match &creds {
            Some((user, pass)) => state.auth.check(&config.users, user, pass).await,
            None => false,
        };
        if !ok {
            state.src.registry.web.auth_failures.fetch_add(1, Relaxed);
            let r = Reply::text(401, "Unauthorized\n").with(header::WWW_AUTHENTICATE, "Basic");
            return finish(r, &config.headers, false, None);
        }
    }
    let method = req.method().clone();
    let uri = req.uri().clone();
    let full_path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let prefix = state.opts.route_prefix.as_str();
    let Some(path) = below_prefix(&full_path, prefix) else {
        let r = if full_path == "/" {
            Reply::redirect(format!("{prefix}/"))
        } else {
            Reply::text(404, "404 page not found\n")
        };
        return finish(r, &config.headers, false, None);
    };
    let body = if method == Method::POST || method == Method::PUT {
        let limited = Limited::new(req.into_body(), MAX_BODY);
        match tokio::time::timeout(state.opts.read_timeout, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes().to_vec(),
            Ok(Err(_)) => {
                let r = Reply::text(413, "request body too large or broken\n");
                return finish(r, &config.headers, false, None);
            }
            Err(_) => {
                return finish(
                    Reply::text(408, "request timeout\n"),
                    &config.headers,
                    false,
                    None,
                );
            }
        }
    } else {
        Vec::new()
    };
    let is_api = path.starts_with("/api/");
    let r = if path == "/api/v1/targets/scrape" && state.opts.target_scrape_proxy {
        api::target_scrape(&query, state).await
    } else {
        route(
            Req {
                method,
                path: path.to_string(),
                query,
                body,
            },
            state,
        )
    };
    // CORS for the API, as Prometheus: the origin is echoed when it matches --web.cors.origin.
    let cors = origin.filter(|o| is_api && state.opts.cors_origin.is_match(o));
    // hyper leaves the body out of a HEAD response itself, keeping its Content-Length.
    finish(r, &config.headers, gzip, cors)
}

/// The path below the route prefix (`None` when the path is outside it).
fn below_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_empty() {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    match rest {
        "" => Some("/"),
        r if r.starts_with('/') => Some(r),
        _ => None,
    }
}

fn route(req: Req, state: &State) -> Reply {
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let post = req.method == Method::POST || req.method == Method::PUT;
    let reg = &state.src.registry;
    match req.path.as_str() {
        "/metrics" if get => Reply::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            reg.render(),
        ),
        "/-/healthy" if get => Reply::text(200, "Spate is Healthy.\n"),
        "/-/ready" if get => {
            let stopping = reg.stopping.load(Relaxed);
            if reg.ready.load(Relaxed) && !stopping {
                Reply::text(200, "Spate is Ready.\n")
            } else {
                let flag = if stopping { "true" } else { "false" };
                Reply::text(503, "Service Unavailable\n").with(
                    header::HeaderName::from_static("x-prometheus-stopping"),
                    flag,
                )
            }
        }
        "/-/reload" if post => match &state.src.reload {
            Some(r) => match r.reload() {
                Ok(()) => Reply::text(200, ""),
                Err(e) => Reply::text(500, format!("failed to reload config: {e}\n")),
            },
            None => Reply::text(403, "Lifecycle API is not enabled.\n"),
        },
        "/-/quit" if post => Reply::text(403, "Lifecycle API is not enabled.\n"),
        "/-/reload" | "/-/quit" => Reply::text(405, "Only POST or PUT requests allowed\n"),
        "/metrics" | "/-/healthy" | "/-/ready" => Reply::text(405, "Method Not Allowed\n"),
        "/" if get => Reply::redirect(format!("{}/agent", state.link_prefix)),
        p if p.starts_with("/api/v1/") => api::handle(&req, state),
        p if get => ui::handle(p, state),
        _ => Reply::text(405, "Method Not Allowed\n"),
    }
}

/// Adds the common headers, compresses when the client takes gzip, and builds the response.
fn finish(
    r: Reply,
    extra: &[(String, String)],
    gzip: bool,
    cors: Option<String>,
) -> Response<Full<Bytes>> {
    let compressible = r.body.len() > 1024
        && (r.content_type.starts_with("text/")
            || r.content_type.starts_with("application/json")
            || r.content_type.starts_with("application/javascript"));
    let (body, gzipped) = if gzip && compressible {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        match std::io::Write::write_all(&mut enc, &r.body).and_then(|()| enc.finish()) {
            Ok(z) => (z, true),
            Err(_) => (r.body, false),
        }
    } else {
        (r.body, false)
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = r.status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(r.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if gzipped {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    if compressible {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    for (name, value) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    for (name, value) in extra {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    if let Some(origin) = cors.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Date"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(url_path("http://h:9095/"), "");
        assert_eq!(url_path("http://h:9095"), "");
        assert_eq!(url_path("https://h/spate/"), "/spate");
        assert_eq!(below_prefix("/spate/targets", "/spate"), Some("/targets"));
        assert_eq!(below_prefix("/spate", "/spate"), Some("/"));
        assert_eq!(below_prefix("/spatex", "/spate"), None);
        assert_eq!(below_prefix("/targets", ""), Some("/targets"));
    }
}
