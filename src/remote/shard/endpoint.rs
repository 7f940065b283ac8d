//! An endpoint as every core's shard shares it: its configuration, the request heads of
//! Remote Write 1.0 and 2.0, what the endpoint has shown it speaks, log throttles, and the
//! count of old backlogs that must reach it before anything newer.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::config::RemoteWriteConfig;

/// One `remote_write` entry, shared by the cores' shards.
pub struct Endpoint {
    pub cfg: RemoteWriteConfig,
    pub url: String,
    /// The request's header lines after `Host` (content type, version, `headers`, and the
    /// credentials when they never change), for Remote Write 1.0 and 2.0.
    head: String,
    head_v2: String,
    /// Sending Remote Write 2.0: configured, and the receiver has not refused it.
    v2: AtomicBool,
    /// A 2.0 request was acknowledged with written counts: the receiver speaks 2.0.
    v2_confirmed: AtomicBool,
    /// Credentials are read at each request (from files, or an OAuth 2.0 token).
    pub(super) dynamic_auth: bool,
    /// Set while the endpoint keeps failing, so "unreachable" is logged once, not per retry.
    failing: AtomicBool,
    /// A request succeeded after shutdown began: the endpoint is making progress, so its
    /// lanes keep retrying until the flush deadline; without one, a failure after shutdown
    /// ends the flush at once (what is unsent stays in the WAL).
    progress_in_shutdown: AtomicBool,
    last_drop_log_secs: AtomicU64,
    /// Backlogs from before a change of the core count still being sent to this endpoint: the
    /// WALs of removed cores, and each core's own backlog from the last run. Their samples are
    /// older than anything scraped now, and a series may now be scraped on another core than
    /// the one holding its backlog, so no shard sends newer data until this is zero: per-series
    /// order holds at the receiver, which would refuse the older samples. Every
    /// [`Endpoint::hold_for_backlog`] is matched by one [`Endpoint::backlog_sent`].
    drains_pending: AtomicUsize,
    /// The fewest and most lanes each core's shard runs: `min_shards` and `max_shards`
    /// spread over the cores (rounded up; at least one).
    pub lanes: (usize, usize),
}

impl Endpoint {
    pub fn new(cfg: RemoteWriteConfig, cores: usize) -> Endpoint {
        let mut common = String::new();
        for (k, v) in &cfg.headers {
            common.push_str(k);
            common.push_str(": ");
            common.push_str(v);
            common.push_str("\r\n");
        }
        let mut dynamic_auth = cfg.http.reads_files();
        if !dynamic_auth {
            let mut auth = String::new();
            match cfg.http.header_lines(&mut auth) {
                Ok(()) => common.push_str(&auth),
                // Reported at every attempt.
                Err(_) => dynamic_auth = true,
            }
        }
        let head = format!(
            "User-Agent: spate/{}\r\nContent-Type: {CONTENT_TYPE_V1}\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: {VERSION_V1}\r\n{common}",
            env!("CARGO_PKG_VERSION"),
        );
        let head_v2 = format!(
            "User-Agent: spate/{}\r\nContent-Type: {CONTENT_TYPE_V2}\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: {VERSION_V2}\r\n{common}",
            env!("CARGO_PKG_VERSION"),
        );
        let cores = cores.max(1);
        let min = cfg.queue.min_shards.div_ceil(cores).max(1);
        let max = cfg.queue.max_shards.div_ceil(cores).max(min);
        Endpoint {
            lanes: (min, max),
            url: cfg.url.to_string(),
            v2: AtomicBool::new(cfg.v2),
            v2_confirmed: AtomicBool::new(false),
            cfg,
            head,
            head_v2,
            dynamic_auth,
            failing: AtomicBool::new(false),
            progress_in_shutdown: AtomicBool::new(false),
            last_drop_log_secs: AtomicU64::new(0),
            drains_pending: AtomicUsize::new(0),
        }
    }

    /// The entries beyond samples this endpoint takes.
    pub fn accept(&self) -> crate::wal::Accept {
        crate::wal::Accept {
            histograms: self.cfg.send_native_histograms,
            exemplars: self.cfg.send_exemplars,
        }
    }

    /// One more old backlog must reach this endpoint before anything newer.
    pub fn hold_for_backlog(&self) {
        self.drains_pending.fetch_add(1, Relaxed);
    }

    /// An old backlog counted by [`Self::hold_for_backlog`] was sent (or shutdown came).
    pub fn backlog_sent(&self) {
        self.drains_pending.fetch_sub(1, Relaxed);
    }

    /// Old backlogs still on their way: newer data waits.
    pub fn backlogs_pending(&self) -> bool {
        self.drains_pending.load(Relaxed) > 0
    }

    /// The header lines after `Host` for a 1.0 or a 2.0 request.
    pub(super) fn head(&self, v2: bool) -> &str {
        if v2 { &self.head_v2 } else { &self.head }
    }

    /// Whether batches go out as Remote Write 2.0 now.
    pub(super) fn sends_v2(&self) -> bool {
        self.v2.load(Relaxed)
    }

    /// The receiver refused 2.0: send 1.0 from now on. True for the call that switched.
    pub(super) fn downgrade(&self) -> bool {
        self.v2.swap(false, Relaxed)
    }

    /// The receiver acknowledged a 2.0 request with written counts.
    pub(super) fn confirm_v2(&self) {
        self.v2_confirmed.store(true, Relaxed);
    }

    pub(super) fn v2_confirmed(&self) -> bool {
        self.v2_confirmed.load(Relaxed)
    }

    /// Records a failure; true for the first of a run (logged at warn, later ones at debug).
    pub(super) fn start_failing(&self) -> bool {
        !self.failing.swap(true, Relaxed)
    }

    /// Records that a request succeeded during shutdown.
    pub(super) fn progressed_in_shutdown(&self) {
        self.progress_in_shutdown.store(true, Relaxed);
    }

    /// Whether a request succeeded since shutdown began.
    pub(super) fn progressing_in_shutdown(&self) -> bool {
        self.progress_in_shutdown.load(Relaxed)
    }

    /// Records a success; true when it ends a run of failures (logged as a recovery).
    pub(super) fn recovered(&self) -> bool {
        self.failing.swap(false, Relaxed)
    }

    /// Whether a dropped-samples warning may be logged now: at most one every 10 s over
    /// every core's shard.
    pub(super) fn should_log_drop(&self) -> bool {
        let now = crate::log::unix_millis().max(0) as u64 / 1000;
        let last = self.last_drop_log_secs.load(Relaxed);
        now >= last + 10
            && self
                .last_drop_log_secs
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

pub(super) const CONTENT_TYPE_V1: &str = "application/x-protobuf";
pub(super) const CONTENT_TYPE_V2: &str =
    "application/x-protobuf;proto=io.prometheus.write.v2.Request";
pub(super) const VERSION_V1: &str = "0.1.0";
pub(super) const VERSION_V2: &str = "2.0.0";
