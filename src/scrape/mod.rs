//! Per-core scrape loops: fetch, parse, attach target labels, and commit the scrape to the
//! core's remote-write shards, plus the report series (`up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`).
//!
//! **Invariant:** a scrape is committed whole or not at all (a parse error mid-body rolls
//! back everything but the report series, as in Prometheus).

mod status;
mod target;

pub use status::{TargetStatus, TargetsView, targets_json};
pub use target::{
    Derived, Discovered, DroppedTarget, Labels, Target, TargetError, derive, targets_for,
};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime};

use crate::entry::{
    KIND_EXEMPLAR, KIND_HISTOGRAM, KIND_SAMPLE, LabelScratch, encode_exemplar_series, encode_series,
};
use crate::exposition::{
    self, LabelRef, Parser, format_go_float, normalize_float_label, unescape_label_value,
};
use crate::http::Conn;
use crate::log::Level;
use crate::log::unix_millis as unix_ms;
use crate::percore::CoreControl;

pub use self::target::derive as derive_targets;
use crate::runtime::{Instant, timeout};
use crate::selfmetrics::CoreStats;

/// Per-core scratch for building a scrape's samples: reused across every scrape on the core,
/// so steady state does not allocate.
#[derive(Default)]
pub struct Appender {
    /// Encoded `WriteRequest.timeseries` entries of the scrape in progress.
    entries: Vec<u8>,
    /// End offset of each entry in `entries`.
    ends: Vec<u32>,
    labels: LabelScratch,
    parse_scratch: Vec<LabelRef>,
    /// Each entry's kind (`encode::KIND_*`): endpoints may not take histograms or exemplars.
    kinds: Vec<u8>,
    histogram_scratch: crate::entry::HistogramScratch,
    exemplar_labels: LabelScratch,
    /// Whether exemplars become entries: some endpoint has `send_exemplars`.
    pub exemplars: bool,
    family_meta: Vec<exposition::FamilyMeta>,
    /// The scrape's metric family metadata, as WAL metadata items (see `wal::record`).
    metadata: Vec<u8>,
    help: Vec<u8>,
    relabel: crate::relabel::Scratch,
    /// Entries (by index) that carried their own timestamp: no staleness markers for them
    /// unless the job tracks it.
    timestamped: Vec<u32>,
    stale: StaleScratch,
    /// Created timestamps the scrape carried (protobuf `created_timestamp`), by the key
    /// `remote::metadata::created_key` gives their series: (key, milliseconds).
    created: Vec<(u64, i64)>,
}

/// What one scrape appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Samples exposed (`scrape_samples_scraped`).
    pub scraped: usize,
    /// Samples left after metric relabeling (`scrape_samples_post_metric_relabeling`).
    pub kept: usize,
}

/// A scrape that failed after its body was read: the counts so far, for the report series.
#[derive(Debug)]
pub struct AppendError {
    pub message: String,
    pub counts: Appended,
}

impl Appender {
    /// An appender that makes exemplars into entries when `exemplars`.
    pub fn with_exemplars(exemplars: bool) -> Appender {
        Appender {
            exemplars,
            ..Default::default()
        }
    }

    /// Parses a scrape body and encodes each sample, with the target's and the external labels
    /// attached, as a remote-write entry. Returns the number of samples; on error the caller
    /// rolls back.
    pub fn append_body(
        &mut self,
        t: &Target,
        external_labels: &[(String, String)],
        body: &[u8],
        format: exposition::Format,
        scrape_ts: i64,
        memo: &mut crate::relabel::Memo,
    ) -> Result<Appended, AppendError> {
        let mut counts = Appended::default();
        let fail = |message: String, counts: Appended| AppendError { message, counts };
        let limits = t.limits;
        let mut limit_error: Option<String> = None;
        let mut parser = Parser::with_histograms(
            body,
            format,
            &mut self.parse_scratch,
            t.native_histograms,
            t.classic_histograms,
        )
        .with_metadata(&mut self.family_meta);
        while let Some(sample) = parser.next() {
            let s = sample.map_err(|e| fail(e.to_string(), counts))?;
            counts.scraped += 1;
            let labels = &mut self.labels;
            labels.clear();
            if s.name_escaped {
                labels.push_with(b"__name__", |out| unescape_label_value(s.name, out));
            } else if s.name_suffix.is_empty() {
                labels.push(b"__name__", s.name);
            } else {
                labels.push_with(b"__name__", |out| {
                    out.extend_from_slice(s.name);
                    out.extend_from_slice(s.name_suffix);
                });
            }
            if let Some((name, v)) = s.extra_label {
                labels.push_with(name, |out| format_go_float(v, out));
            }
            for l in s.labels {
                if l.name_escaped {
                    labels.push_parts(
                        |out| unescape_label_value(l.name(body), out),
                        |out| unescape_label_value(l.value(body), out),
                    );
                } else if l.escaped {
                    labels.push_with(l.name(body), |out| unescape_label_value(l.value(body), out));
                } else if l.float_value {
                    labels.push_with(l.name(body), |out| {
                        normalize_float_label(l.value(body), out)
                    });
                } else {
                    labels.push(l.name(body), l.value(body));
                }
            }
            if t.metric_relabel.is_empty() {
                merge_target_labels(labels, t);
            } else {
                let key = labels.fingerprint();
                let kept = memo.process(
                    &t.metric_relabel,
                    counts.scraped - 1,
                    key,
                    labels,
                    |l| merge_target_labels(l, t),
                    &mut self.relabel,
                );
                if !kept {
                    continue;
                }
                if labels.get(b"__name__").is_none() {
                    return Err(fail("missing metric name (__name__ label)".into(), counts));
                }
            }
            if let Some(e) = check_label_limits(labels, &limits) {
                return Err(fail(e, counts));
            }
            if limit_error.is_some() {
                // Past the sample limit: only counted, as Prometheus does, so the report
                // shows the real numbers.
                counts.kept += 1;
                continue;
            }
            for (k, v) in external_labels {
                if labels.get(k.as_bytes()).is_none() {
                    labels.push(k.as_bytes(), v.as_bytes());
                }
            }
            if let Err(dup) = labels.sort() {
                return Err(fail(
                    format!(
                        "label name {:?} is not unique in a sample",
                        String::from_utf8_lossy(&dup)
                    ),
                    counts,
                ));
            }
            counts.kept += 1;
            if limits.sample_limit > 0 && counts.kept as u64 > limits.sample_limit {
                limit_error = Some("sample limit exceeded".into());
                continue;
            }
            let ts = match s.timestamp_ms {
                Some(ts) if t.honor_timestamps => {
                    if !t.track_timestamps_staleness {
                        self.timestamped.push(self.ends.len() as u32);
                    }
                    ts
                }
                _ => scrape_ts,
            };
            match &s.native {
                Some((range, gauge)) => {
                    let hint = if *gauge {
                        crate::entry::RESET_HINT_GAUGE
                    } else {
                        0
                    };
                    crate::entry::encode_histogram_series(
                        &mut self.entries,
                        &self.labels,
                        &body[range.clone()],
                        ts,
                        hint,
                        &mut self.histogram_scratch,
                    )
                    .map_err(|e| fail(format!("invalid native histogram: {}", e.0), counts))?;
                    self.kinds.push(KIND_HISTOGRAM);
                }
                None => {
                    encode_series(&mut self.entries, &self.labels, s.value, ts);
                    self.kinds.push(KIND_SAMPLE);
                    if let Some(ms) = s.created_ms {
                        note_created(&self.labels, ms, &mut self.created);
                    }
                }
            }
            self.ends.push(self.entries.len() as u32);
            if self.exemplars
                && let Some(ex) = &s.exemplar
            {
                // As Prometheus appends it: an exemplar without a timestamp takes its sample's.
                let el = &mut self.exemplar_labels;
                el.clear();
                for l in ex.labels {
                    if l.escaped || l.name_escaped {
                        el.push_parts(
                            |out| unescape_label_value(l.name(body), out),
                            |out| unescape_label_value(l.value(body), out),
                        );
                    } else {
                        el.push(l.name(body), l.value(body));
                    }
                }
                if let Err(dup) = el.sort() {
                    return Err(fail(
                        format!(
                            "label name {:?} is not unique in an exemplar",
                            String::from_utf8_lossy(&dup)
                        ),
                        counts,
                    ));
                }
                encode_exemplar_series(
                    &mut self.entries,
                    &self.labels,
                    el,
                    ex.value,
                    ex.timestamp_ms.unwrap_or(ts),
                );
                self.kinds.push(KIND_EXEMPLAR);
                self.ends.push(self.entries.len() as u32);
            }
        }
        self.metadata.clear();
        for m in &self.family_meta {
            self.help.clear();
            if let Some(h) = m.help.clone() {
                exposition::unescape_help(&body[h], format, &mut self.help);
            }
            crate::wal::record::put_metadata(
                &mut self.metadata,
                m.mtype.unwrap_or(exposition::MetricType::Unknown),
                &body[m.name.clone()],
                m.unit.clone().map_or(&[][..], |u| &body[u]),
                &self.help,
            );
        }
        memo.trim(counts.scraped);
        match limit_error {
            Some(e) => Err(fail(e, counts)),
            None => Ok(counts),
        }
    }

    /// The scrape's family metadata, encoded for the WAL.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The encoded entries of the scrape in progress: a valid `WriteRequest` body.
    pub fn entries(&self) -> &[u8] {
        &self.entries
    }

    /// Where each entry of [`Self::entries`] ends.
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// Each entry's kind (`encode::KIND_*`).
    pub fn kinds(&self) -> &[u8] {
        &self.kinds
    }

    pub fn rollback(&mut self) {
        self.created.clear();
        self.metadata.clear();
        self.entries.clear();
        self.ends.clear();
        self.kinds.clear();
        self.timestamped.clear();
    }

    fn push(&mut self, value: f64, ts: i64) {
        encode_series(&mut self.entries, &self.labels, value, ts);
        self.ends.push(self.entries.len() as u32);
        self.kinds.push(KIND_SAMPLE);
    }
}

/// What a core shares with its scrape loops.
pub struct CoreScrape {
    /// Mixed into every target's phase, as Prometheus' offset seed (host name and external
    /// labels): two agents scraping the same targets do not scrape them at the same moment.
    pub offset_seed: u64,
    pub ctl: Rc<CoreControl>,
    /// The core's shard of each endpoint: every committed scrape is offered to each.
    pub shards: Vec<Rc<crate::remote::Shard>>,
    /// What the core's scrapes reported, for the endpoints that send it.
    pub reported: Rc<crate::remote::metadata::Reported>,
    pub stats: Arc<CoreStats>,
    pub external_labels: Vec<(String, String)>,
    pub appender: RefCell<Appender>,
    pub buffers: BufferPool,
}

/// Receive buffers shared by a core's targets. Scrapes are spread over the interval, so only
/// a few are in flight at once: a pool holds a handful of body-sized buffers instead of one per
/// target.
#[derive(Default)]
pub struct BufferPool {
    free: RefCell<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl BufferPool {
    /// Most buffer pairs kept; more are freed when returned.
    const KEEP: usize = 16;

    fn take(&self) -> (Vec<u8>, Vec<u8>) {
        self.free.borrow_mut().pop().unwrap_or_default()
    }

    fn put(&self, bufs: (Vec<u8>, Vec<u8>)) {
        let mut free = self.free.borrow_mut();
        if free.len() < Self::KEEP {
            free.push(bufs);
        }
    }
}

/// Prometheus' stale marker: a NaN with its own bits, kept exact end to end.
pub const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// What a target keeps between scrapes.
#[derive(Default)]
struct TargetState {
    /// Series refs of the scraped samples.
    series: crate::wal::SeriesCache,
    /// Series refs of the report series.
    reports: crate::wal::SeriesCache,
    /// The entries of the last successful scrape that get staleness markers when they vanish,
    /// snappy-compressed; refreshed only when the series change.
    last: Option<Vec<u8>>,
    /// What `metric_relabel_configs` did to each series.
    relabel: crate::relabel::Memo,
    /// The OAuth 2.0 token, when the job has `oauth2`.
    oauth: crate::http::oauth2::TokenSource,
    /// Series first seen in failed scrapes since the last good one (Prometheus counts a
    /// rolled-back scrape's series as added, once).
    failed_seen: std::collections::HashSet<[u64; 2]>,
}

/// Per-core scratch for staleness: reused across targets.
#[derive(Default)]
struct StaleScratch {
    raw: Vec<u8>,
    compressed: Vec<u8>,
    keys: std::collections::HashSet<[u64; 2]>,
    eligible: Vec<u8>,
    refs: crate::wal::SeriesCache,
}

/// What the control plane tells a core about its targets.
pub enum CoreMsg {
    /// Start scraping a target (a target with the same hash is stopped first, silently: a
    /// changed configuration, not a vanished target).
    Start(Box<Target>, Arc<TargetStatus>),
    /// Stop the target with this hash; with `stale`, its series get staleness markers at its
    /// next tick, as Prometheus marks targets that service discovery or a reload removed.
    Stop { hash: u64, stale: bool },
}

/// How a running target loop is told to stop.
#[derive(Default)]
pub struct TargetHandle {
    /// Set once: whether the series go stale.
    stop: std::cell::Cell<Option<bool>>,
    notify: crate::runtime::LocalNotify,
}

impl TargetHandle {
    fn stop(&self, stale: bool) {
        if self.stop.get().is_none() {
            self.stop.set(Some(stale));
            self.notify.notify();
        }
    }
}

/// The core's target manager: starts and stops target loops as the control plane says,
/// until shutdown (which stops every loop without staleness markers).
pub async fn manage_targets(inbox: Arc<crate::runtime::Mailbox<CoreMsg>>, core: Rc<CoreScrape>) {
    let mut running: std::collections::HashMap<u64, Rc<TargetHandle>> =
        std::collections::HashMap::new();
    let shutdown = core.ctl.shutdown.clone();
    loop {
        let msgs = match crate::runtime::race(inbox.recv(), shutdown.wait()).await {
            crate::runtime::Either::Left(m) => m,
            crate::runtime::Either::Right(()) => return,
        };
        for msg in msgs {
            match msg {
                CoreMsg::Start(t, status) => {
                    if let Some(old) = running.remove(&t.hash) {
                        old.stop(false);
                    }
                    let handle = Rc::new(TargetHandle::default());
                    running.insert(t.hash, handle.clone());
                    crate::runtime::spawn(run_target(Rc::new(*t), status, core.clone(), handle));
                }
                CoreMsg::Stop { hash, stale } => {
                    if let Some(old) = running.remove(&hash) {
                        old.stop(stale);
                    }
                }
            }
        }
        core.stats.targets.store(running.len() as u64, Relaxed);
    }
}

/// Sleeps until `d` passes, shutdown, or the target is stopped: true unless `d` passed.
async fn sleep_or_stop(
    d: Duration,
    shutdown: &crate::runtime::Event,
    handle: &TargetHandle,
) -> bool {
    if handle.stop.get().is_some() {
        return true;
    }
    !matches!(
        crate::runtime::race(
            crate::runtime::sleep(d),
            crate::runtime::race(shutdown.wait(), handle.notify.notified()),
        )
        .await,
        crate::runtime::Either::Left(())
    )
}

/// Runs one target's scrape loop until shutdown or until it is stopped.
pub async fn run_target(
    target: Rc<Target>,
    status: Arc<TargetStatus>,
    core: Rc<CoreScrape>,
    handle: Rc<TargetHandle>,
) {
    core.ctl.loop_started();
    // An https target whose TLS settings cannot be used fails every scrape with the reason.
    let mut setup_error = None;
    let mut conn = target
        .http
        .connection(&target.address, target.scheme == "https")
        .unwrap_or_else(|e| {
            setup_error = Some(e);
            Conn::new(target.address.clone())
        });
    if target.limits.body_size_limit > 0 {
        // Prometheus fails a body of `limit` bytes or more.
        conn.set_max_body(target.limits.body_size_limit.saturating_sub(1) as usize);
    }
    // Without secrets in files, the request is the same every time: build it once.
    let fixed_request = if target.http.reads_files() {
        None
    } else {
        build_request(&target, &target.path_and_query, None).ok()
    };
    let interval = target.interval;

    // A stable phase within the interval, from the target's hash (and the agent's seed, as
    // Prometheus spreads HA pairs): a fleet's scrapes spread evenly and a target keeps its
    // phase across restarts and reloads.
    let now_ms = unix_ms();
    let interval_ms = interval.as_millis().max(1) as u64;
    let offset = (target.hash ^ core.offset_seed) % interval_ms;
    let base = interval_ms - (now_ms as u64 % interval_ms);
    let mut first_wait = base + offset;
    if first_wait > interval_ms {
        first_wait -= interval_ms;
    }
    // The wall-clock time of the first tick: later ticks are whole intervals after it.
    let first_tick_ms = now_ms + first_wait as i64;
    // Prometheus' timestamp alignment: within 2 ms (at most 1% of the interval) of its tick,
    // a scrape is stamped with the tick's exact time, which compresses better downstream.
    let tolerance_ms = (interval_ms / 100).min(2) as i64;
    let shutdown = core.ctl.shutdown.clone();
    let mut state = TargetState::default();
    let mut next = Instant::now() + Duration::from_millis(first_wait);
    let mut tick: i64 = 0;
    if !sleep_or_stop(Duration::from_millis(first_wait), &shutdown, &handle).await {
        loop {
            let now = unix_ms();
            let ideal = first_tick_ms + tick * interval_ms as i64;
            let ts = if (now - ideal).abs() <= tolerance_ms {
                ideal
            } else {
                now
            };
            let request = match (&setup_error, &fixed_request) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(r)) => Ok(std::borrow::Cow::Borrowed(r.as_slice())),
                (None, None) => {
                    let token = match &target.http.oauth2 {
                        None => Ok(None),
                        Some(o) => match timeout(target.timeout, state.oauth.token(o)).await {
                            Ok(r) => r.map(Some),
                            Err(_) => Err("oauth2: token request timed out".to_string()),
                        },
                    };
                    token
                        .map_err(|e| format!("Get \"{}\": {e}", target.url()))
                        .and_then(|t| build_request(&target, &target.path_and_query, t.as_deref()))
                        .map(std::borrow::Cow::Owned)
                }
            };
            scrape_once(&target, &status, &core, &mut conn, request, &mut state, ts).await;
            next += interval;
            tick += 1;
            let now = Instant::now();
            if next < now {
                // Fell behind (a slow scrape or a stalled core): skip the missed ticks.
                let behind = now - next;
                let skip = behind.as_nanos() / interval.as_nanos().max(1) + 1;
                next += interval * skip as u32;
                tick += skip as i64;
            }
            if sleep_or_stop(next - now, &shutdown, &handle).await {
                break;
            }
        }
    }
    if handle.stop.get() == Some(true) && !shutdown.is_set() {
        // Removed by discovery or a reload: at what would have been its next tick, its series
        // and report series go stale (nothing is written if the agent shuts down first).
        let wait = next.saturating_duration_since(Instant::now());
        if !crate::runtime::sleep_or(wait, &shutdown).await {
            let ts = first_tick_ms + tick * interval_ms as i64;
            stale_on_removal(&target, &core, &mut state, ts);
        }
    }
    core.ctl.loop_ended();
}

/// Prometheus' offset seed: a hash of the host name and the external labels, so that HA
/// replicas (which differ in one of them) scrape a target at different moments.
pub fn offset_seed(external_labels: &[(String, String)]) -> u64 {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer it is given.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let mut input = host;
    for (k, v) in external_labels {
        input.push_str(k);
        input.push('=');
        input.push_str(v);
        input.push(',');
    }
    crate::hash::fnv1a64(input.as_bytes())
}

/// The scrape request for `path`, with the job's auth and headers (files read now) and an
/// OAuth 2.0 bearer token.
fn build_request(t: &Target, path: &str, bearer: Option<&str>) -> Result<Vec<u8>, String> {
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

enum FetchError {
    Http(crate::http::Error),
    TooLarge,
    Redirect(String),
}

/// Go's client follows at most this many redirects.
const MAX_REDIRECTS: usize = 10;

/// Sends the scrape request, following redirects as Prometheus' client does (with
/// `follow_redirects`, the default): up to ten, to any host; credentials are not sent to
/// another host. The final response is left in `conn`.
async fn fetch(t: &Target, conn: &mut Conn, request: &[u8]) -> Result<(), FetchError> {
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

/// Why a scrape failed, and what the report series say about it.
struct Failure {
    message: String,
    counts: Appended,
    /// `scrape_body_size_bytes`: -1 when the body was over the limit, else 0.
    body_size: f64,
}

#[allow(clippy::too_many_arguments)]
async fn scrape_once(
    t: &Target,
    status: &TargetStatus,
    core: &CoreScrape,
    conn: &mut Conn,
    request: Result<std::borrow::Cow<'_, [u8]>, String>,
    state: &mut TargetState,
    ts: i64,
) {
    let wall = SystemTime::now();
    let started = Instant::now();
    core.stats.scrapes.fetch_add(1, Relaxed);
    let mut body_size = 0usize;
    let forced = match (&t.forced_error, &request) {
        (Some(e), _) => Some(e.clone()),
        (None, Err(e)) => Some(e.clone()),
        _ => None,
    };
    let result: Result<Appended, Failure> = if let Some(message) = forced {
        Err(Failure {
            message,
            counts: Appended::default(),
            body_size: 0.0,
        })
    } else {
        let request = request.unwrap_or_default();
        let (buf, decoded) = core.buffers.take();
        conn.set_buffers(buf, decoded);
        let failed = |message: String| Failure {
            message,
            counts: Appended::default(),
            body_size: 0.0,
        };
        let r = match timeout(t.timeout, fetch(t, conn, &request)).await {
            Err(_) => {
                conn.reset();
                Err(failed(format!(
                    "Get \"{}\": context deadline exceeded",
                    t.url()
                )))
            }
            Ok(Err(FetchError::Redirect(e))) => Err(failed(e)),
            Ok(Err(FetchError::Http(e))) => Err(failed(format!("Get \"{}\": {e}", t.url()))),
            Ok(Err(FetchError::TooLarge)) => Err(Failure {
                message: "body size limit exceeded".into(),
                counts: Appended::default(),
                body_size: -1.0,
            }),
            Ok(Ok(())) => match conn.response() {
                None => Err(failed(format!("Get \"{}\": no response", t.url()))),
                Some(resp) if resp.status != 200 => Err(failed(format!(
                    "server returned HTTP status {}",
                    if resp.status_text.is_empty() {
                        resp.status.to_string()
                    } else {
                        resp.status_text.to_string()
                    }
                ))),
                Some(resp) => {
                    body_size = resp.body.len();
                    match exposition::format_for_content_type(resp.content_type, t.fallback) {
                        Err(e) => Err(failed(e)),
                        // Parse and encode synchronously: no await while the appender is
                        // borrowed.
                        Ok(format) => core
                            .appender
                            .borrow_mut()
                            .append_body(
                                t,
                                &core.external_labels,
                                resp.body,
                                format,
                                ts,
                                &mut state.relabel,
                            )
                            .map_err(|e| Failure {
                                message: e.message,
                                counts: e.counts,
                                body_size: 0.0,
                            }),
                    }
                }
            },
        };
        core.buffers.put(conn.take_buffers());
        r
    };
    let mut app = core.appender.borrow_mut();
    let app = &mut *app;
    let mut failed_added = 0;
    let counts = match &result {
        Ok(c) => {
            state.failed_seen.clear();
            *c
        }
        Err(f) => {
            failed_added = app.count_new_series(state);
            app.rollback();
            core.stats.scrape_failures.fetch_add(1, Relaxed);
            crate::log!(
                Level::Debug,
                "scrape",
                "scrape failed",
                job = t.job,
                target = t.url(),
                err = f.message
            );
            f.counts
        }
    };
    core.stats
        .samples_scraped
        .fetch_add(counts.scraped as u64, Relaxed);

    // One WAL commit for the whole scrape: its samples, the staleness markers of series that
    // vanished, and the report series, each with its own series cache.
    let mut wal = core.ctl.wal.borrow_mut();
    wal.begin(app.entries.len(), app.ends.len() + 16);
    let scraped_entries = app.ends.len();
    let mut series_added = failed_added;
    if result.is_ok() {
        let added = wal.add(
            &app.entries,
            &app.ends,
            0..scraped_entries,
            &mut state.series,
        );
        series_added = added.new_series;
        if added.layout_changed || state.last.is_none() {
            app.stale_vanished(state, ts);
        }
    } else if let Some(last) = state.last.take() {
        // A failed scrape is an empty one: every series of the last good one goes stale.
        app.stale_all(&last, ts);
    }
    let markers = scraped_entries..app.ends.len();
    app.add_stale(&mut wal, markers);
    let report_start = app.ends.len();
    let duration = started.elapsed().as_secs_f64();
    let error = result.as_ref().err().map(|f| f.message.as_str());
    status.record(wall, duration, error);
    let up = if result.is_ok() { 1.0 } else { 0.0 };
    let body = match &result {
        Ok(_) => body_size as f64,
        Err(f) => f.body_size,
    };
    // In `report_names` order; the last three only with `extra_scrape_metrics`.
    let values = [
        up,
        duration,
        counts.scraped as f64,
        counts.kept as f64,
        series_added as f64,
        t.timeout.as_secs_f64(),
        t.limits.sample_limit as f64,
        body,
    ];
    for (name, value) in report_names(t).zip(values) {
        report_labels(&mut app.labels, name, t, &core.external_labels);
        app.push(value, ts);
    }
    wal.add(
        &app.entries,
        &app.ends,
        report_start..app.ends.len(),
        &mut state.reports,
    );
    let committed = wal.finish(&app.entries, &app.metadata, &mut state.series);
    drop(wal);
    deliver(core, app, committed.ok(), ts);
}

/// Keeps the created timestamp of the series `labels` (sorted, final) for Remote Write 2.0.
fn note_created(labels: &LabelScratch, ms: i64, created: &mut Vec<(u64, i64)>) {
    use crate::remote::metadata::{created_family, created_fold, created_key};
    let (mut folded, mut name, mut quantile) = (0u64, &b""[..], false);
    for i in 0..labels.len() {
        let (n, v) = (labels.name(i), labels.value(i));
        if n == b"__name__" {
            name = v;
        }
        quantile |= n == b"quantile";
        folded = created_fold(folded, n, v);
    }
    if let Some(family) = created_family(name, quantile) {
        created.push((created_key(family, folded), ms));
    }
}

/// Offers a committed scrape's entries to every shard (with where the commit ended in the
/// WAL, when it was written), counts them, and clears the appender.
fn deliver(core: &CoreScrape, app: &mut Appender, committed: Option<u64>, ts: i64) {
    core.reported
        .note(&app.metadata, &app.entries, &app.created);
    for shard in &core.shards {
        shard.append(&app.entries, &app.ends, &app.kinds, ts, committed);
    }
    core.stats
        .samples_appended
        .fetch_add(app.ends.len() as u64, Relaxed);
    core.stats
        .highest_ts_ms
        .fetch_max(ts.max(0) as u64, Relaxed);
    app.rollback();
}

/// The report series a target gets, in Prometheus' order: five, and three more with
/// `extra_scrape_metrics`.
fn report_names(t: &Target) -> impl Iterator<Item = &'static str> {
    const NAMES: [&str; 8] = [
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "scrape_timeout_seconds",
        "scrape_sample_limit",
        "scrape_body_size_bytes",
    ];
    NAMES.into_iter().take(if t.extra_metrics { 8 } else { 5 })
}

/// Staleness markers for every series of a removed target, its report series included.
fn stale_on_removal(t: &Target, core: &CoreScrape, state: &mut TargetState, ts: i64) {
    let mut app = core.appender.borrow_mut();
    let app = &mut *app;
    app.rollback();
    if let Some(last) = state.last.take() {
        app.stale_all(&last, ts);
    }
    let scraped = app.ends.len();
    for name in report_names(t) {
        report_labels(&mut app.labels, name, t, &core.external_labels);
        app.push(f64::from_bits(STALE_NAN), ts);
    }
    let mut wal = core.ctl.wal.borrow_mut();
    wal.begin(app.entries.len(), app.ends.len());
    app.add_stale(&mut wal, 0..scraped);
    wal.add(
        &app.entries,
        &app.ends,
        scraped..app.ends.len(),
        &mut state.reports,
    );
    let committed = wal.finish(&app.entries, &[], &mut state.series);
    drop(wal);
    deliver(core, app, committed.ok(), ts);
}

impl Appender {
    /// Adds the staleness markers among the entries (`range`) to the commit. They take refs
    /// of their own: the markers are not part of any scrape's layout.
    fn add_stale(&mut self, wal: &mut crate::wal::Wal, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let refs = &mut self.stale.refs;
        *refs = crate::wal::SeriesCache::default();
        wal.add(&self.entries, &self.ends, range, refs);
    }

    /// Of the entries a failed scrape had appended before it failed, the series the target
    /// has not had before: Prometheus reports them as added although the scrape is dropped.
    fn count_new_series(&self, state: &mut TargetState) -> usize {
        if self.ends.is_empty() {
            return 0;
        }
        let known: std::collections::HashSet<[u64; 2]> = state.series.keys().collect();
        let mut n = 0;
        let mut start = 0usize;
        for (end, kind) in self.ends.iter().zip(&self.kinds) {
            let entry = &self.entries[start..*end as usize];
            start = *end as usize;
            if *kind == KIND_EXEMPLAR {
                continue;
            }
            if let Ok((labels, _)) = crate::entry::split_entry(entry) {
                let key = entry_key(labels);
                if !known.contains(&key) && state.failed_seen.insert(key) {
                    n += 1;
                }
            }
        }
        n
    }

    /// After a successful scrape whose series changed (and after the WAL add that keyed them
    /// into `state.series`): staleness markers for the series of the last scrape that are
    /// gone, then this scrape's entries become the ones to compare
    /// with next time.
    fn stale_vanished(&mut self, state: &mut TargetState, ts: i64) {
        let sc = &mut self.stale;
        let scraped = self.ends.len();
        // This scrape's series, as the WAL's add just keyed them into the target's cache.
        sc.keys.clear();
        sc.keys.extend(state.series.keys());
        if let Some(last) = state.last.take() {
            self.push_stale(&last, ts, true);
        }
        let sc = &mut self.stale;
        // The entries that can go stale: samples and histograms without their own timestamp.
        sc.eligible.clear();
        let mut start = 0usize;
        let mut skip = self.timestamped.iter().peekable();
        for (i, end) in self.ends[..scraped].iter().enumerate() {
            let entry = &self.entries[start..*end as usize];
            start = *end as usize;
            if skip.peek().is_some_and(|s| **s as usize == i) {
                skip.next();
                continue;
            }
            if self.kinds[i] != KIND_EXEMPLAR {
                sc.eligible.extend_from_slice(entry);
            }
        }
        // Compressed into the core's scratch, then copied at its exact size: the target keeps
        // only what the compressed copy needs (snappy's own output keeps its worst-case size).
        let out = &mut sc.compressed;
        out.resize(snap::raw::max_compress_len(sc.eligible.len()), 0);
        let n = snap::raw::Encoder::new()
            .compress(&sc.eligible, out)
            .unwrap_or(0);
        state.last = Some(out[..n].to_vec());
    }

    /// Staleness markers for every entry of `last` (a failed scrape).
    fn stale_all(&mut self, last: &[u8], ts: i64) {
        self.push_stale(last, ts, false);
    }

    /// Appends a staleness marker for each series of `last` (compressed entries); with
    /// `vanished_only`, for those not among this scrape's keys (`stale.keys`).
    fn push_stale(&mut self, last: &[u8], ts: i64, vanished_only: bool) {
        let sc = &mut self.stale;
        if !decompress_into(last, &mut sc.raw) {
            return;
        }
        let mut rest = &sc.raw[..];
        while let Some((entry, after)) = next_entry(rest) {
            rest = after;
            if let Ok((labels, _)) = crate::entry::split_entry(entry)
                && !(vanished_only && sc.keys.contains(&entry_key(labels)))
            {
                crate::entry::encode_series_raw(
                    &mut self.entries,
                    labels,
                    f64::from_bits(STALE_NAN),
                    ts,
                );
                self.ends.push(self.entries.len() as u32);
                self.kinds.push(KIND_SAMPLE);
            }
        }
    }
}

fn entry_key(labels: &[u8]) -> [u64; 2] {
    let h = xxhash_rust::xxh3::xxh3_128(labels);
    [h as u64, (h >> 64) as u64]
}

fn decompress_into(compressed: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = snap::raw::decompress_len(compressed) else {
        return false;
    };
    out.clear();
    out.resize(len, 0);
    snap::raw::Decoder::new()
        .decompress(compressed, out)
        .is_ok()
}

/// The first `WriteRequest.timeseries` entry of `buf` (tag, length, body) and the rest.
fn next_entry(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    if buf.first() != Some(&0x0a) {
        return None;
    }
    let mut pos = 1;
    let len = crate::protowire::varint(buf, &mut pos).ok()?;
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    (end <= buf.len()).then(|| (&buf[..end], &buf[end..]))
}

/// Prometheus' label limits, on a sample's labels after relabeling (before external labels).
fn check_label_limits(
    labels: &LabelScratch,
    limits: &crate::config::ScrapeLimits,
) -> Option<String> {
    if limits.label_limit == 0
        && limits.label_name_length_limit == 0
        && limits.label_value_length_limit == 0
    {
        return None;
    }
    // Go's `%.50s`: at most 50 characters. Only formatted for an error.
    let short = |b: &[u8]| -> String { String::from_utf8_lossy(b).chars().take(50).collect() };
    let metric = || short(labels.get(b"__name__").unwrap_or_default());
    if limits.label_limit > 0 && labels.len() as u64 > limits.label_limit {
        return Some(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            metric(),
            labels.len(),
            limits.label_limit
        ));
    }
    // Lengths in bytes, as Go's `len` counts them.
    for i in 0..labels.len() {
        let (name, value) = (labels.name(i), labels.value(i));
        let name_len = name.len() as u64;
        if limits.label_name_length_limit > 0 && name_len > limits.label_name_length_limit {
            return Some(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {name_len}, limit: {})",
                metric(),
                short(name),
                limits.label_name_length_limit
            ));
        }
        let value_len = value.len() as u64;
        if limits.label_value_length_limit > 0 && value_len > limits.label_value_length_limit {
            return Some(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {value_len}, limit: {})",
                metric(),
                short(name),
                short(value),
                limits.label_value_length_limit
            ));
        }
    }
    None
}

/// Attaches the target's labels to a scraped sample as Prometheus does: with `honor_labels`
/// the exposed value wins; otherwise the target's does, and a conflicting exposed label is
/// kept as `exported_<name>` (prefix repeated until free; shortest names first).
fn merge_target_labels(labels: &mut LabelScratch, t: &Target) {
    if t.honor_labels {
        for (k, v) in &t.labels {
            if labels.get(k.as_bytes()).is_none() {
                labels.push(k.as_bytes(), v.as_bytes());
            }
        }
        return;
    }
    // Conflicts are rare; only then allocate.
    let mut conflicts: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, _) in &t.labels {
        if let Some(v) = labels.get(k.as_bytes()) {
            conflicts.push((k.clone(), v.to_vec()));
            labels.remove(k.as_bytes());
        }
    }
    for (k, v) in &t.labels {
        labels.push(k.as_bytes(), v.as_bytes());
    }
    conflicts.sort_by_key(|(k, _)| k.len());
    for (name, value) in conflicts {
        let mut new_name = name;
        loop {
            new_name.insert_str(0, "exported_");
            if labels.get(new_name.as_bytes()).is_none() {
                labels.push(new_name.as_bytes(), &value);
                break;
            }
        }
    }
}

fn report_labels(labels: &mut LabelScratch, name: &str, t: &Target, external: &[(String, String)]) {
    labels.clear();
    labels.push(b"__name__", name.as_bytes());
    for (k, v) in &t.labels {
        labels.push(k.as_bytes(), v.as_bytes());
    }
    for (k, v) in external {
        if labels.get(k.as_bytes()).is_none() {
            labels.push(k.as_bytes(), v.as_bytes());
        }
    }
    // Target labels are unique by construction and never `__name__`.
    let _ = labels.sort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(honor: bool, labels: &[(&str, &str)]) -> Target {
        Target {
            job: "j".into(),
            all_labels: vec![],
            discovered: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            address: "a:1".into(),
            scheme: "http".into(),
            path_and_query: "/metrics".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            honor_labels: honor,
            honor_timestamps: true,
            enable_compression: true,
            accept: exposition::DEFAULT_ACCEPT.into(),
            fallback: None,
            native_histograms: false,
            classic_histograms: false,
            hash: 0,
            metric_relabel: Default::default(),
            limits: Default::default(),
            extra_metrics: false,
            track_timestamps_staleness: false,
            forced_error: None,
            http: Default::default(),
        }
    }

    fn merged(honor: bool, exposed: &[(&str, &str)], tl: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut s = LabelScratch::default();
        for (k, v) in exposed {
            s.push(k.as_bytes(), v.as_bytes());
        }
        merge_target_labels(&mut s, &target(honor, tl));
        s.sort().unwrap();
        (0..s.len())
            .map(|i| {
                (
                    String::from_utf8(s.name(i).to_vec()).unwrap(),
                    String::from_utf8(s.value(i).to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_labels_win_and_exposed_become_exported() {
        let got = merged(
            false,
            &[
                ("__name__", "m"),
                ("job", "exposed"),
                ("exported_job", "taken"),
                ("instance", "i"),
            ],
            &[("instance", "a:1"), ("job", "j")],
        );
        assert_eq!(
            got,
            owned(&[
                ("__name__", "m"),
                ("exported_exported_job", "exposed"),
                ("exported_instance", "i"),
                ("exported_job", "taken"),
                ("instance", "a:1"),
                ("job", "j"),
            ])
        );
    }

    #[test]
    fn honor_labels_keeps_exposed_values() {
        let got = merged(
            true,
            &[("__name__", "m"), ("job", "exposed")],
            &[("instance", "a:1"), ("job", "j")],
        );
        assert_eq!(
            got,
            owned(&[("__name__", "m"), ("instance", "a:1"), ("job", "exposed")])
        );
    }

    #[test]
    fn exemplars_become_entries_of_their_own_when_an_endpoint_sends_them() {
        use crate::entry::proto;
        use prost::Message;
        let body = b"# TYPE req counter\nreq_total{path=\"/a\"} 5 # {trace_id=\"abc\",span_id=\"1\"} 1.5 1700000000.25\nreq_total{path=\"/b\"} 7 # {trace_id=\"d\\\"e\"} 2\n# EOF\n";
        let t = target(false, &[("job", "j"), ("instance", "a:1")]);
        let mut off = Appender::default();
        off.append_body(
            &t,
            &[],
            body,
            exposition::Format::OpenMetrics,
            1_000,
            &mut Default::default(),
        )
        .unwrap();
        assert_eq!(off.kinds(), [KIND_SAMPLE, KIND_SAMPLE]);

        let mut on = Appender::with_exemplars(true);
        let n = on
            .append_body(
                &t,
                &[],
                body,
                exposition::Format::OpenMetrics,
                1_000,
                &mut Default::default(),
            )
            .unwrap();
        assert_eq!(n.scraped, 2, "exemplars are not samples");
        assert_eq!(
            on.kinds(),
            [KIND_SAMPLE, KIND_EXEMPLAR, KIND_SAMPLE, KIND_EXEMPLAR]
        );
        let req = proto::WriteRequest::decode(on.entries()).unwrap();
        let ex = &req.timeseries[1];
        assert_eq!(ex.labels, req.timeseries[0].labels);
        assert!(ex.samples.is_empty());
        assert_eq!(ex.exemplars.len(), 1);
        let e = &ex.exemplars[0];
        let labels: Vec<(&str, &str)> = e
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("span_id", "1"), ("trace_id", "abc")]);
        assert_eq!((e.value, e.timestamp), (1.5, 1_700_000_000_250));
        // No timestamp: the sample's; escapes undone.
        let e = &req.timeseries[3].exemplars[0];
        assert_eq!((e.value, e.timestamp), (2.0, 1_000));
        assert_eq!(e.labels[0].value, "d\"e");
    }

    fn metadata_of(body: &[u8], format: exposition::Format) -> Vec<(u8, String, String, String)> {
        let mut app = Appender::default();
        let t = target(false, &[("job", "j"), ("instance", "a:1")]);
        app.append_body(&t, &[], body, format, 1_000, &mut Default::default())
            .unwrap();
        let meta = app.metadata().to_vec();
        let mut rec = Vec::new();
        let items = crate::wal::record::metadata_items(&meta).unwrap();
        crate::wal::record::put_count(&mut rec, items.len());
        rec.extend_from_slice(&meta);
        let mut got = Vec::new();
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        crate::wal::record::decode(
            crate::wal::record::METADATA,
            &rec,
            &mut Default::default(),
            |it| {
                if let crate::wal::record::Item::Metadata {
                    mtype,
                    name,
                    unit,
                    help,
                } = it
                {
                    got.push((mtype, s(name), s(unit), s(help)));
                }
            },
        )
        .unwrap();
        got
    }

    #[test]
    fn family_metadata_from_every_format() {
        let text = b"# HELP a_total Requests \\ with \\n and \\\" kept.\n# TYPE a_total counter\na_total 1\n# TYPE g gauge\ng 2\n# HELP lonely Only help.\n";
        assert_eq!(
            metadata_of(text, exposition::Format::PromText),
            [
                (
                    1,
                    "a_total".into(),
                    "".into(),
                    "Requests \\ with \n and \\\" kept.".into()
                ),
                (2, "g".into(), "".into(), "".into()),
                (0, "lonely".into(), "".into(), "Only help.".into()),
            ]
        );
        let om = b"# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\n# HELP lat_seconds A \\\"quoted\\\" help.\nlat_seconds_bucket{le=\"+Inf\"} 1\nlat_seconds_count 1\nlat_seconds_sum 2\n# EOF\n";
        assert_eq!(
            metadata_of(om, exposition::Format::OpenMetrics),
            [(
                3,
                "lat_seconds".into(),
                "seconds".into(),
                "A \"quoted\" help.".into()
            )]
        );
        let pb = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/exposition/node_exporter.pb"
        ))
        .unwrap();
        let got = metadata_of(&pb, exposition::Format::Protobuf);
        assert!(got.len() > 20, "{} families", got.len());
        assert!(
            got.iter()
                .any(|m| m.1 == "go_gc_duration_seconds" && m.0 == 5 && !m.3.is_empty()),
            "{got:?}"
        );
    }
}
