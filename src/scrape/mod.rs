//! Per-core scrape loops: fetch, parse, attach target labels, and commit the scrape to the
//! core's remote-write shards, plus the report series (`up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`).
//!
//! **Invariant:** a scrape is committed whole or not at all (a parse error mid-body rolls
//! back everything but the report series, as in Prometheus).

mod append;
mod failure_log;
mod nhcb;
mod request;
mod stale;
mod status;
mod target;

use append::report_labels;
pub use append::{AppendError, Appended, Appender};
pub use failure_log::FailureLogs;
use request::{FetchError, fetch, request_headers};
pub use request::{Served, fetch_once};
use stale::{StaleScratch, stale_on_removal};
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

/// What a core shares with its scrape loops.
pub struct CoreScrape {
    /// Mixed into every target's phase, as Prometheus' offset seed (host name and external
    /// labels): two agents scraping the same targets do not scrape them at the same moment.
    pub offset_seed: u64,
    /// Every scrape is stamped with its tick's exact time (in a cluster, so members that
    /// scrape a target, or take it over, write identical timestamps).
    pub aligned_timestamps: bool,
    /// `--scrape.timestamp-tolerance` (`None`: `--no-scrape.adjust-timestamps`).
    pub timestamp_tolerance: Option<Duration>,
    /// A failed scrape marks the last good scrape's series stale, as Prometheus does. Not
    /// where each target has replicas whose receiver deduplicates: a marker could win over
    /// the other replica's sample at the same timestamp and leave a gap.
    pub stale_on_failure: bool,
    pub ctl: Rc<CoreControl>,
    /// The core's shard of each endpoint: every committed scrape is offered to each.
    pub senders: Rc<crate::remote::Senders>,
    /// What the core's scrapes reported, for the endpoints that send it.
    pub reported: Rc<crate::remote::metadata::Reported>,
    pub stats: Arc<CoreStats>,
    /// `external_labels`, replaced by reloads: scrapes after a reload carry the new ones.
    pub external_labels: RefCell<Vec<(String, String)>>,
    pub appender: RefCell<Appender>,
    pub buffers: BufferPool,
    /// `scrape_failure_log_file`s, shared with the control plane that reopens them.
    pub failure_logs: Arc<failure_log::FailureLogs>,
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
    /// Series in the last successful scrape, as counted in the core's active series.
    active: u64,
    /// The OAuth 2.0 token, when the job has `oauth2`.
    oauth: crate::http::oauth2::TokenSource,
    /// Series first seen in failed scrapes since the last good one (Prometheus counts a
    /// rolled-back scrape's series as added, once).
    failed_seen: std::collections::HashSet<[u64; 2]>,
}

/// What the control plane tells a core about its targets.
pub enum CoreMsg {
    /// Start scraping the target of this status (a target with the same hash is stopped
    /// first, silently: a changed configuration, not a vanished target). The core reads the
    /// target from the status it shares with the control plane: one copy of its labels.
    Start(Arc<TargetStatus>),
    /// Stop the target with this hash; with `stale`, its series get staleness markers at its
    /// next tick, as Prometheus marks targets that service discovery or a reload removed.
    Stop { hash: u64, stale: bool },
    /// A reload's remote-write endpoints (an unchanged one is the same `Arc`) and external
    /// labels.
    Remote {
        endpoints: Vec<Arc<crate::remote::Endpoint>>,
        external_labels: Vec<(String, String)>,
    },
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
                CoreMsg::Start(status) => {
                    let hash = status.target.hash;
                    if let Some(old) = running.remove(&hash) {
                        old.stop(false);
                    }
                    let handle = Rc::new(TargetHandle::default());
                    running.insert(hash, handle.clone());
                    crate::runtime::spawn(run_target(status, core.clone(), handle));
                }
                CoreMsg::Stop { hash, stale } => {
                    if let Some(old) = running.remove(&hash) {
                        old.stop(stale);
                    }
                }
                CoreMsg::Remote {
                    endpoints,
                    external_labels,
                } => {
                    // Between commits: a scrape being committed keeps the labels it began
                    // with.
                    let _commit = core.ctl.commit_lock().await;
                    *core.external_labels.borrow_mut() = external_labels;
                    core.senders.apply(&endpoints);
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
pub async fn run_target(status: Arc<TargetStatus>, core: Rc<CoreScrape>, handle: Rc<TargetHandle>) {
    let target = &status.target;
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
        request_headers(target, None).ok()
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
    // Prometheus' timestamp alignment: within the tolerance (2 ms by default; at most 1% of
    // the interval) of its tick,
    // a scrape is stamped with the tick's exact time, which compresses better downstream.
    let tolerance_ms = match core.timestamp_tolerance {
        Some(t) => (interval_ms / 100).min(t.as_millis() as u64) as i64,
        None => -1,
    };
    let shutdown = core.ctl.shutdown.clone();
    let mut state = TargetState::default();
    let mut next = Instant::now() + Duration::from_millis(first_wait);
    let mut tick: i64 = 0;
    if !sleep_or_stop(Duration::from_millis(first_wait), &shutdown, &handle).await {
        loop {
            let now = unix_ms();
            let ideal = first_tick_ms + tick * interval_ms as i64;
            let ts = if core.aligned_timestamps || (now - ideal).abs() <= tolerance_ms {
                ideal
            } else {
                now
            };
            let request = match (&setup_error, &fixed_request) {
                (Some(e), _) => Err(e.clone()),
                (None, Some(r)) => Ok(std::borrow::Cow::Borrowed(r.as_str())),
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
                        .and_then(|t| request_headers(target, t.as_deref()))
                        .map(std::borrow::Cow::Owned)
                }
            };
            scrape_once(target, &status, &core, &mut conn, request, &mut state, ts).await;
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
            stale_on_removal(target, &core, &mut state, ts).await;
        }
    }
    core.stats.active_series.fetch_sub(state.active, Relaxed);
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
    request: Result<std::borrow::Cow<'_, str>, String>,
    state: &mut TargetState,
    ts: i64,
) {
    let wall = SystemTime::now();
    let started = Instant::now();
    core.stats.scrapes.fetch_add(1, Relaxed);
    let forced = match (&t.forced_error, &request) {
        (Some(e), _) => Some(e.clone()),
        (None, Err(e)) => Some(e.clone()),
        _ => None,
    };
    let fetched = match forced {
        Some(message) => Err(Failure {
            message,
            counts: Appended::default(),
            body_size: 0.0,
        }),
        None => {
            let fetched = fetch_target(t, core, conn, &request.unwrap_or_default()).await;
            if let Err(f) = &fetched {
                log_failure(t, core, &f.message);
            }
            fetched
        }
    };
    // From here to the end of the commit the core's appender and the WAL's head are this
    // scrape's (other tasks wait for the lock): the commit's writes run on the ring while
    // other tasks go on.
    let _commit = core.ctl.commit_lock().await;
    let finishing = {
        let mut app = core.appender.borrow_mut();
        let app = &mut *app;
        let (result, body_size) = match fetched {
            Err(f) => (Err(f), 0),
            Ok(()) => {
                let appended = append_response(t, core, conn, app, state, ts);
                core.buffers.put(conn.take_buffers());
                appended
            }
        };
        let mut failed_added = 0;
        let counts = match &result {
            Ok(c) => *c,
            Err(f) => {
                failed_added = app.count_new_series(state);
                // Prometheus' forced flush: series met only in failed scrapes are forgotten
                // once they outnumber twice the last good scrape's, plus 1,000.
                if state.failed_seen.len() > state.active as usize * 2 + 1000 {
                    state.failed_seen.clear();
                }
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
        {
            let mut wal = core.ctl.wal.borrow_mut();
            wal.begin(app.entries.len(), app.ends.len() + 16);
            let scraped_entries = app.ends.len();
            let mut series_added = failed_added;
            let active = match &result {
                Ok(_) => scraped_entries as u64,
                Err(_) if core.stale_on_failure => 0,
                Err(_) => state.active,
            };
            core.stats.active_series.fetch_add(active, Relaxed);
            core.stats
                .active_series
                .fetch_sub(std::mem::replace(&mut state.active, active), Relaxed);
            if result.is_ok() && body_size == 0 {
                // An empty body (a target answering nothing): every series goes stale, but
                // the series cache is kept, as Prometheus keeps its scrape cache, so series
                // that come back are not new.
                if let Some(last) = state.last.take() {
                    app.stale_all(&last, ts);
                }
            } else if result.is_ok() {
                let added = wal.add(
                    &app.entries,
                    &app.ends,
                    0..scraped_entries,
                    &mut state.series,
                );
                series_added = added.new_series;
                if !state.failed_seen.is_empty() {
                    // Series a failed scrape met were counted then: Prometheus' scrape cache
                    // still holds them, so they are not added again.
                    let counted = state
                        .series
                        .keys()
                        .filter(|k| state.failed_seen.contains(k))
                        .count();
                    series_added = series_added.saturating_sub(counted);
                    state.failed_seen.clear();
                }
                if added.layout_changed || state.last.is_none() {
                    app.stale_vanished(state, ts);
                }
            } else if core.stale_on_failure
                && let Some(last) = state.last.take()
            {
                // A failed scrape is an empty one: every series of the last good one goes stale.
                app.stale_all(&last, ts);
            }
            let markers = scraped_entries..app.ends.len();
            app.add_stale(&mut wal, markers);
            let report_start = app.ends.len();
            let duration = started.elapsed().as_secs_f64();
            let error = result.as_ref().err().map(|f| f.message.as_str());
            status.record(wall, duration, error);
            if result.is_ok() {
                status.note_metadata(&app.metadata);
            }
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
                report_labels(&mut app.labels, name, t, &core.external_labels.borrow());
                app.push(value, ts);
            }
            wal.add(
                &app.entries,
                &app.ends,
                report_start..app.ends.len(),
                &mut state.reports,
            );
            wal.finish_start(&app.entries, &app.metadata, &mut state.series)
        }
    };
    // Neither the appender nor the WAL is borrowed while the writes run; the commit lock keeps
    // other tasks from both.
    let committed = commit(core, finishing, &mut state.series).await;
    deliver(core, &mut core.appender.borrow_mut(), committed.ok(), ts);
}

/// Runs a commit's writes through the core's ring (the WAL is not borrowed meanwhile; the
/// caller holds the commit lock) and finishes it.
async fn commit(
    core: &CoreScrape,
    finishing: crate::wal::Finishing,
    series: &mut crate::wal::SeriesCache,
) -> std::io::Result<u64> {
    match finishing {
        crate::wal::Finishing::Done(r) => r,
        crate::wal::Finishing::Writing(job, pending) => {
            let progress = job.run().await;
            core.ctl
                .wal
                .borrow_mut()
                .finish_end(pending, progress, series)
        }
    }
}

/// Fetches the target; the response is left in `conn`, in receive buffers lent by the core's
/// pool (given back here on failure, by the caller once the response is used).
async fn fetch_target(
    t: &Target,
    core: &CoreScrape,
    conn: &mut Conn,
    request: &str,
) -> Result<(), Failure> {
    let (buf, decoded) = core.buffers.take();
    conn.set_buffers(buf, decoded);
    let failed = |message: String| Failure {
        message,
        counts: Appended::default(),
        body_size: 0.0,
    };
    let r = match timeout(t.timeout, fetch(t, conn, request)).await {
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
        Ok(Ok(())) => Ok(()),
    };
    if r.is_err() {
        core.buffers.put(conn.take_buffers());
    }
    r
}

/// Appends the response `conn` holds: the appended counts (or why the scrape failed) and the
/// body's size.
fn append_response(
    t: &Target,
    core: &CoreScrape,
    conn: &Conn,
    app: &mut Appender,
    state: &mut TargetState,
    ts: i64,
) -> (Result<Appended, Failure>, usize) {
    let failed = |message: String| Failure {
        message,
        counts: Appended::default(),
        body_size: 0.0,
    };
    let resp = match conn.response() {
        None => return (Err(failed(format!("Get \"{}\": no response", t.url()))), 0),
        Some(resp) => resp,
    };
    if resp.status != 200 {
        let status = if resp.status_text.is_empty() {
            resp.status.to_string()
        } else {
            resp.status_text.to_string()
        };
        let message = format!("server returned HTTP status {status}");
        log_failure(t, core, &message);
        return (Err(failed(message)), 0);
    }
    let body_size = resp.body.len();
    if body_size == 0 {
        // An empty body is an empty scrape whatever its type, as in Prometheus.
        return (Ok(Appended::default()), 0);
    }
    let r = match exposition::format_for_content_type(resp.content_type, t.fallback) {
        Err(e) => Err(failed(e)),
        Ok(format) => app
            .append_body(
                t,
                &core.external_labels.borrow(),
                resp.body,
                format,
                ts,
                &mut state.relabel,
            )
            .map_err(|e| {
                let stats = &core.stats;
                for (hit, counter) in [
                    (
                        e.exceeded.sample_limit,
                        &stats.scrapes_exceeded_sample_limit,
                    ),
                    (
                        e.exceeded.bucket_limit,
                        &stats.scrapes_exceeded_bucket_limit,
                    ),
                ] {
                    if hit {
                        counter.fetch_add(1, Relaxed);
                    }
                }
                Failure {
                    message: e.message,
                    counts: e.counts,
                    body_size: 0.0,
                }
            }),
    };
    (r, body_size)
}

/// Writes a failed request to the target's `scrape_failure_log_file`: Prometheus logs the
/// failures of the request and response (not of parsing or limits, nor a forced error).
fn log_failure(t: &Target, core: &CoreScrape, message: &str) {
    if let Some(path) = &t.failure_log {
        core.failure_logs.write(path, &t.url(), message);
    }
}

/// Offers a committed scrape's entries to every shard (with where the commit ended in the
/// WAL, when it was written), counts them, and clears the appender.
fn deliver(core: &CoreScrape, app: &mut Appender, committed: Option<u64>, ts: i64) {
    core.reported
        .note(&app.metadata, &app.entries, &app.created);
    for shard in core.senders.shards().iter() {
        shard.append(&app.entries, &app.ends, &app.kinds, ts, committed);
    }
    let appended = crate::entry::Tally::of(&app.kinds);
    core.stats
        .samples_appended
        .fetch_add(appended.samples, Relaxed);
    for (c, n) in [
        (&core.stats.histograms_appended, appended.histograms),
        (&core.stats.exemplars_appended, appended.exemplars),
    ] {
        if n > 0 {
            c.fetch_add(n, Relaxed);
        }
    }
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
