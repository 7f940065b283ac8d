//! Shared fixtures for integration tests: temporary directories, real processes that are
//! always stopped, free loopback ports, condition waits, and in-process test servers (a
//! recording remote-write receiver and a counting scrape target).
#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod kube;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "spate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A base port with `n` free ports after it (checked by binding each), from a region of its
/// own (26000..32000) so that single ports scattered by [`free_port`] never leave it without
/// room; never handed out again.
pub fn free_port_range(n: u16) -> u16 {
    const FROM: u16 = 26000;
    const TO: u16 = 32000;
    assert!(n < TO - FROM, "a range of {n} ports");
    let span = TO - FROM - n;
    let mut base = FROM + (seed() % u64::from(span)) as u16;
    for _ in 0..10_000 {
        let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
        let clear = !(0..n).any(|i| handed.contains(&(base + i)));
        if clear && (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            // The whole range is this caller's: no later `free_port` hands out a port in it.
            handed.extend((0..n).map(|i| base + i));
            return base;
        }
        drop(handed);
        base = FROM + (base - FROM + 97) % span;
    }
    panic!("no {n} free consecutive ports in {FROM}..{TO}");
}

/// Ports handed out by this test process.
static HANDED: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A seed for picking ports: different per call, per process and over time.
fn seed() -> u64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    SEED.fetch_add(1, Ordering::Relaxed)
        ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
        | 1
}

/// A free loopback port (bound, then released for the process under test).
///
/// Ports come from 20000..26000, below Linux's ephemeral range, so the source port of some
/// outgoing connection cannot take a port between the moment it is chosen and the moment a
/// server binds it; and no port is handed out twice in one test process, so two servers of one
/// test (or of tests running side by side) never share one.
pub fn free_port() -> u16 {
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    let mut x = seed();
    loop {
        // xorshift: enough to spread concurrent test processes over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20000 + (x % 6000) as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
}

/// Waits until `f` returns `Some`, polling; panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Finds a program that a Debian package provides. Outside CI a missing program skips the test
/// with a message; under `CI=true` it fails the test naming the package to install.
pub fn require_program(program: &str, package: &str) -> Option<PathBuf> {
    // Daemons live in sbin, which a non-root PATH may lack.
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(&format!("{program} not found"), package);
    }
    found
}

/// Reports a missing Debian package: a failure under `CI=true`, else a skip message.
fn missing(what: &str, package: &str) {
    let msg =
        format!("{what}: install the Debian package `{package}` (apt-get install -y {package})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
}

/// A Python 3 that can import `module` (from the Debian package `package`); like
/// [`require_program`], a skip outside CI and a failure naming the package under `CI=true`.
pub fn require_python_module(module: &str, package: &str) -> Option<PathBuf> {
    // Debian's interpreter first: the package installs the module for it.
    let candidates = [
        Some(PathBuf::from("/usr/bin/python3")),
        require_program("python3", "python3"),
    ];
    let imports = |python: &PathBuf| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let python = candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file() && imports(p));
    if python.is_none() {
        missing(&format!("python3 cannot import {module}"), package);
    }
    python
}

/// Prometheus (Debian's `prometheus`) in agent mode on `config`, listening on `web`; its WAL
/// lives in `dir`. Killed when dropped.
pub fn prometheus_agent(prometheus: &Path, dir: &TempDir, config: &Path, web: &str) -> Proc {
    Proc::spawn(
        "prometheus-agent",
        Command::new(prometheus)
            .arg("--enable-feature=agent")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.agent.path={}",
                dir.path().join("agent").display()
            ))
            .arg(format!("--web.listen-address={web}")),
        dir.path(),
    )
}

/// Debian's node_exporter on a free loopback port.
pub struct NodeExporter {
    _proc: Proc,
    pub addr: String,
}

/// Starts node_exporter and waits until it serves `/metrics`.
pub fn start_node_exporter(dir: &TempDir) -> Option<NodeExporter> {
    let bin = require_program("prometheus-node-exporter", "prometheus-node-exporter")?;
    let addr = format!("127.0.0.1:{}", free_port());
    let proc = Proc::spawn(
        "node_exporter",
        Command::new(bin).arg(format!("--web.listen-address={addr}")),
        dir.path(),
    );
    wait_for(Duration::from_secs(30), "node_exporter to serve", || {
        http_get(&addr, "/metrics").filter(|(c, _)| *c == 200)
    });
    Some(NodeExporter { _proc: proc, addr })
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to `limit`) for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("process already stopped");
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {limit:?} of SIGTERM; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`; returns status and body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path)
}

/// A bodiless HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http_request(addr: &str, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(70))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a PromQL query for a URL.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// VictoriaMetrics (Debian's `victoria-metrics`) on a free port with `extra` flags, healthy;
/// the process and its address.
pub fn start_victoriametrics(dir: &TempDir, extra: &[&str]) -> Option<(Proc, String)> {
    let vm_bin = require_program("victoria-metrics", "victoria-metrics")?;
    let vm_addr = format!("127.0.0.1:{}", free_port());
    let vm = Proc::spawn(
        "victoria-metrics",
        Command::new(vm_bin)
            .arg(format!("-httpListenAddr={vm_addr}"))
            .arg(format!(
                "-storageDataPath={}",
                dir.path().join("vm").display()
            ))
            .arg("-search.latencyOffset=1s")
            .arg("-search.disableCache")
            .args(extra),
        dir.path(),
    );
    wait_for(
        Duration::from_secs(60),
        "VictoriaMetrics to be healthy",
        || http_get(&vm_addr, "/health").filter(|(c, _)| *c == 200),
    );
    Some((vm, vm_addr))
}

/// dnsmasq (Debian's `dnsmasq-base`) on a free loopback port answering from `records`
/// (its flags), and a resolv.conf naming it for spate's `SPATE_RESOLV_CONF`; `None` (a failure
/// under `CI=true`) without dnsmasq.
pub fn start_dnsmasq(dir: &TempDir, records: &[String]) -> Option<(Proc, PathBuf)> {
    let dnsmasq = require_program("dnsmasq", "dnsmasq-base")?;
    let port = free_port();
    let proc = Proc::spawn(
        "dnsmasq",
        Command::new(dnsmasq)
            .args([
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                "--log-facility=-",
                "--local-ttl=0",
            ])
            .arg(format!("--port={port}"))
            .args(records),
        dir.path(),
    );
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver 127.0.0.1:{port}\noptions timeout:1\n"),
    )
    .expect("write resolv.conf");
    Some((proc, resolv))
}

/// The members that own the target of `job` scraped at `url`, as a cluster member's
/// `/api/v1/status/cluster` says.
pub fn cluster_owners(web: &str, job: &str, url: &str) -> Vec<String> {
    let (_, body) = http_get(
        web,
        &format!("/api/v1/status/cluster?job={job}&url={}", urlencode(url)),
    )
    .expect("the cluster status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["data"]["target"]["owners"]
        .as_array()
        .expect("owners")
        .iter()
        .map(|o| o.as_str().unwrap_or("").to_string())
        .collect()
}

/// The spate binary under test, with a config file and its own ports and storage.
pub struct Spate {
    pub proc: Proc,
    pub web: String,
    pub dir: TempDir,
}

impl Spate {
    pub fn start(config: &str, extra_args: &[&str]) -> Spate {
        Self::start_with(config, extra_args, |_| {})
    }

    pub fn start_with(
        config: &str,
        extra_args: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Spate {
        let s = Self::launch(config, extra_args, customize);
        wait_for(Duration::from_secs(30), "spate to be ready", || {
            http_get(&s.web, "/-/ready").filter(|(code, _)| *code == 200)
        });
        s
    }

    /// Starts spate without waiting for it (its web server may speak TLS, or need credentials).
    pub fn launch(
        config: &str,
        extra_args: &[&str],
        customize: impl FnOnce(&mut Command),
    ) -> Spate {
        let dir = TempDir::new("spate");
        let cfg = dir.path().join("spate.yml");
        std::fs::write(&cfg, config).expect("write config");
        let port = free_port();
        let web = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_spate"));
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.agent.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .args(extra_args);
        customize(&mut cmd);
        let proc = Proc::spawn("spate", &mut cmd, dir.path());
        Spate { proc, web, dir }
    }

    /// The value of a self-metric series (summed over matching lines).
    pub fn metric(&self, prefix: &str) -> f64 {
        let (_, body) = http_get(&self.web, "/metrics").expect("spate /metrics");
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The content type of the protobuf exposition, as a target serving it answers.
pub const PROTOBUF: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// A keep-alive HTTP/1.1 server on a free loopback port: one thread per connection, stopped
/// when dropped. `handle(headers, body)` returns (status, content type, body) — for a 3xx status,
/// the second item is the `Location`, `retry-after:V` sends `Retry-After: V` and
/// `header:NAME: VALUE` that header; header names are lower-cased, and the request line is
/// given as `:method` and `:path`.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

type HandleFn =
    dyn Fn(&HashMap<String, String>, &[u8]) -> (u16, &'static str, Vec<u8>) + Send + Sync;

impl TestServer {
    pub fn start(
        handle: impl Fn(&HashMap<String, String>, &[u8]) -> (u16, &'static str, Vec<u8>)
        + Send
        + Sync
        + 'static,
    ) -> TestServer {
        Self::start_at("127.0.0.1:0", handle)
    }

    /// Like `start`, on a given address (a port chosen earlier with `free_port`).
    pub fn start_at(
        bind: &str,
        handle: impl Fn(&HashMap<String, String>, &[u8]) -> (u16, &'static str, Vec<u8>)
        + Send
        + Sync
        + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind(bind).expect("bind test server");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let handle: Arc<HandleFn> = Arc::new(handle);
        let stp = stop.clone();
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (handle, stp) = (handle.clone(), stp.clone());
                        std::thread::spawn(move || serve_connection(conn, &*handle, &stp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        TestServer { addr, stop }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_connection(conn: TcpStream, handle: &HandleFn, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut writer = conn;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) if !stop.load(Ordering::Relaxed) => continue,
            Err(_) => return,
        }
        // The request line is passed on as `:method` and `:path` pseudo-headers.
        let mut headers = HashMap::new();
        let mut parts = line.split_whitespace();
        headers.insert(
            ":method".to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        headers.insert(
            ":path".to_string(),
            parts.next().unwrap_or_default().to_string(),
        );
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, content_type, reply) = handle(&headers, &body);
        // For a redirect, the "content type" is the Location; `retry-after:N` sends that
        // header instead.
        let head = if (300..400).contains(&status) {
            format!(
                "HTTP/1.1 {status} Found\r\nLocation: {content_type}\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            )
        } else if let Some(line) = content_type.strip_prefix("header:") {
            format!(
                "HTTP/1.1 {status} X\r\n{line}\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            )
        } else if let Some(after) = content_type.strip_prefix("retry-after:") {
            format!(
                "HTTP/1.1 {status} X\r\nRetry-After: {after}\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            )
        } else {
            format!(
                "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                reply.len()
            )
        };
        if writer
            .write_all(head.as_bytes())
            .and_then(|_| writer.write_all(&reply))
            .is_err()
        {
            return;
        }
    }
}

/// One sample as the receiver decoded it.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub ts: i64,
    /// Set for a native histogram (then `value` is NaN).
    pub histogram: Option<spate::entry::proto::Histogram>,
}

impl Received {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every request a receiver decoded: the status it answered, and the samples.
pub type RequestLog = Arc<Mutex<Vec<(u16, Vec<Received>)>>>;

/// A remote-write receiver on a free loopback port. Every request is decoded; `policy` picks
/// the status to answer (given the request number); samples are recorded only on a 2xx.
pub struct Receiver {
    pub addr: SocketAddr,
    pub accepted: Arc<Mutex<Vec<Received>>>,
    /// Every request body decoded, whatever the answer: (status answered, samples).
    pub requests: RequestLog,
    pub headers_seen: Arc<Mutex<Vec<HashMap<String, String>>>>,
    /// Family metadata of accepted requests.
    pub metadata: Arc<Mutex<Vec<spate::entry::proto::MetricMetadata>>>,
    _server: TestServer,
}

impl Receiver {
    pub fn start(policy: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        Self::start_at("127.0.0.1:0", policy)
    }

    /// A receiver on a given address: one that "comes back" where spate was sending.
    pub fn start_at(bind: &str, policy: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Receiver {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let requests: RequestLog = Arc::new(Mutex::new(Vec::new()));
        let headers_seen = Arc::new(Mutex::new(Vec::new()));
        let counter = AtomicU64::new(0);
        let metadata = Arc::new(Mutex::new(Vec::new()));
        let (acc, reqs, hdrs) = (accepted.clone(), requests.clone(), headers_seen.clone());
        let meta = metadata.clone();
        let server = TestServer::start_at(bind, move |headers, body| {
            let n = counter.fetch_add(1, Ordering::SeqCst) as usize;
            let status = policy(n);
            let req = spate::entry::proto::decode_write_request(body)
                .unwrap_or_else(|e| panic!("receiver could not decode a request: {e}"));
            if (200..300).contains(&status) {
                meta.lock().unwrap().extend(req.metadata.iter().cloned());
            }
            let samples: Vec<Received> = req
                .timeseries
                .into_iter()
                .flat_map(|ts| {
                    let labels: Vec<(String, String)> =
                        ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
                    let hl = labels.clone();
                    ts.samples
                        .into_iter()
                        .map(move |s| Received {
                            labels: labels.clone(),
                            value: s.value,
                            ts: s.timestamp,
                            histogram: None,
                        })
                        .chain(ts.histograms.into_iter().map(move |h| Received {
                            labels: hl.clone(),
                            value: f64::NAN,
                            ts: h.timestamp,
                            histogram: Some(h),
                        }))
                })
                .collect();
            hdrs.lock().unwrap().push(headers.clone());
            if (200..300).contains(&status) {
                acc.lock().unwrap().extend(samples.iter().cloned());
            }
            reqs.lock().unwrap().push((status, samples));
            (status, "text/plain", Vec::new())
        });
        Receiver {
            addr: server.addr,
            accepted,
            requests,
            headers_seen,
            metadata,
            _server: server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    pub fn samples(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }
}

/// A scrape target serving `test_counter N`, where N counts the scrapes served (1, 2, …).
pub struct CounterTarget {
    pub addr: SocketAddr,
    pub served: Arc<AtomicU64>,
    _server: TestServer,
}

impl CounterTarget {
    pub fn start() -> CounterTarget {
        let served = Arc::new(AtomicU64::new(0));
        let srv = served.clone();
        let server = TestServer::start(move |_, _| {
            let n = srv.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!(
                "# HELP test_counter Scrapes served.\n# TYPE test_counter counter\ntest_counter {n}\ntest_gauge{{kind=\"a\\\"quoted\\\"\"}} 0.5\n"
            );
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                body.into_bytes(),
            )
        });
        CounterTarget {
            addr: server.addr,
            served,
            _server: server,
        }
    }
}

/// Certificates made for the test by the `openssl` command: a CA, a server certificate for
/// localhost and 127.0.0.1, and a client certificate.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    pub fn make() -> Option<TestPki> {
        let openssl = require_program("openssl", "openssl")?;
        let dir = TempDir::new("pki");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=spate-test-ca",
            ],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for who in ["server", "client"] {
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.crt"),
                "-days",
                "2",
                "-extfile",
                &format!("{who}.ext"),
            ]);
        }
        Some(TestPki { dir })
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl TestPki {
    /// The certificates of a PEM file made by [`TestPki::make`] (`ca.crt`, `server.crt`, …).
    pub fn chain(&self, name: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_file_iter(self.path(name))
            .unwrap()
            .map(|c| c.unwrap())
            .collect()
    }

    /// The private key of a PEM file made by [`TestPki::make`] (`server.key`, `client.key`).
    pub fn key(&self, name: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_file(self.path(name)).unwrap()
    }

    /// A TLS server config with the server certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (chain, key) = (self.chain("server.crt"), self.key("server.key"));
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }
}

/// Terminates TLS on a free loopback port and relays the plain bytes to `backend`, both ways:
/// an https front for a plain test server. Stops accepting when dropped.
pub struct TlsFront {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TlsFront {
    pub fn start(pki: &TestPki, backend: SocketAddr) -> TlsFront {
        let config = pki.server_config();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tls front");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stp = stop.clone();
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                let Ok((sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let config = config.clone();
                std::thread::spawn(move || relay_tls(sock, config, backend));
            }
        });
        TlsFront { addr, stop }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One TLS connection relayed to `backend` until either side closes.
fn relay_tls(sock: TcpStream, config: Arc<rustls::ServerConfig>, backend: SocketAddr) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(20)));
    let Ok(mut plain) = TcpStream::connect(backend) else {
        return;
    };
    let _ = plain.set_read_timeout(Some(Duration::from_millis(20)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut buf = [0u8; 16384];
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(30) {
        let up = pump(&mut tls, &mut plain, &mut buf);
        let down = pump(&mut plain, &mut tls, &mut buf);
        match (up, down) {
            (None, _) | (_, None) => return,
            (Some(a), Some(b)) if a || b => last = Instant::now(),
            _ => {}
        }
    }
}

/// Moves what `from` has (within its read timeout) to `to`: `Some(moved)`, or `None` once
/// either side is closed or failed.
fn pump(from: &mut impl Read, to: &mut impl Write, buf: &mut [u8]) -> Option<bool> {
    match from.read(buf) {
        Ok(0) => None,
        Ok(n) => to
            .write_all(&buf[..n])
            .and_then(|_| to.flush())
            .ok()
            .map(|_| true),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Some(false)
        }
        Err(_) => None,
    }
}

/// Every `.rs` file under `dir`, recursively, in path order.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}
