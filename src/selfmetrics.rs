//! The agent's own metrics. Each core writes only its own counters (relaxed atomics, no
//! contention); the web thread sums them when `/metrics` is scraped. Names follow Prometheus
//! wherever an equivalent exists, so existing dashboards and alerts keep working.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::entry::Tally;

/// Declares a stats struct and, for the test that each is exported, the list of its plain
/// counters by field name.
macro_rules! stats {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$m])*
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        #[cfg(test)]
        impl $name {
            /// Each field that is a plain counter, by name.
            fn counters(&self) -> Vec<(&'static str, &AtomicU64)> {
                let mut out = Vec::new();
                $(if let Some(c) = tests::AsCounter::counter(&self.$field) {
                    out.push((stringify!($field), c));
                })*
                out
            }
        }
    };
}

stats! {
/// Service discovery counters, with Prometheus' names.
#[derive(Default)]
pub struct SdStats {
    pub http_failures: AtomicU64,
    pub file_read_errors: AtomicU64,
    pub dns_lookups: AtomicU64,
    pub dns_lookup_failures: AtomicU64,
    /// Kubernetes objects added, updated and deleted, by kind (in `Kind::ALL`'s order).
    pub k8s_events: [[AtomicU64; 3]; 7],
    /// Failed Kubernetes list and watch requests.
    pub k8s_failures: AtomicU64,
    /// Failed Consul queries.
    pub consul_failures: AtomicU64,
    /// Failed Docker refreshes.
    pub docker_failures: AtomicU64,
    /// Failed EC2 refreshes.
    pub ec2_failures: AtomicU64,
    /// Targets discovered per job (before relabeling), in configuration order.
    pub discovered: Mutex<Vec<(String, usize)>>,
    /// Active targets per job (after relabeling), in configuration order.
    pub active: Mutex<Vec<(String, usize)>>,
    /// Member lists the cluster's membership source reported that differed from the last.
    pub membership_changes: AtomicU64,
    /// Targets this member stopped because another member owns them now.
    pub handovers: AtomicU64,
}
}

/// This member's view of its cluster, for `/metrics` and the cluster API.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub membership: Arc<crate::cluster::Membership>,
    /// Targets each member owns, as this member computes it from what it discovers.
    pub shares: std::collections::BTreeMap<String, usize>,
    /// Targets discovered in shared jobs (each counted once).
    pub shared_targets: usize,
}

stats! {
/// The web server's counters.
#[derive(Default)]
pub struct WebStats {
    pub requests: AtomicU64,
    /// Requests refused for missing or wrong basic-auth credentials.
    pub auth_failures: AtomicU64,
    pub tls_failures: AtomicU64,
}
}

stats! {
/// The WAL's counters `/metrics` shows, per core.
#[derive(Default)]
pub struct WalStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub segments_created: AtomicU64,
    pub segments_deleted: AtomicU64,
    pub write_failures: AtomicU64,
    /// Samples whose commit could not be written (disk full, I/O error).
    pub samples_not_durable: AtomicU64,
    pub fsyncs: AtomicU64,
    pub size_bytes: AtomicU64,
    /// `fdatasync` calls that failed: what was written since the last good one may not be
    /// on disk.
    pub fsync_failures: AtomicU64,
    /// Time spent writing WAL blocks and in `fdatasync`.
    pub write_duration: Histogram<WAL_BUCKETS_N>,
    pub fsync_duration: Histogram<WAL_BUCKETS_N>,
    /// Bytes readers skipped because they did not frame valid records (each reader counts).
    pub read_damaged_bytes: AtomicU64,
    /// Samples readers could not rebuild: their series' declaration or the value they were
    /// stored as a change from was in damaged data.
    pub samples_lost_to_damage: AtomicU64,
}
}

stats! {
/// Counters owned by one data-plane core.
#[derive(Default)]
pub struct CoreStats {
    pub targets: AtomicU64,
    /// Series in the last successful scrape of each running target (report series aside).
    pub active_series: AtomicU64,
    pub scrapes: AtomicU64,
    pub scrape_failures: AtomicU64,
    pub samples_scraped: AtomicU64,
    /// Scrapes that failed by going past `sample_limit`, and past
    /// `native_histogram_bucket_limit` (a scrape may count in both).
    pub scrapes_exceeded_sample_limit: AtomicU64,
    pub scrapes_exceeded_bucket_limit: AtomicU64,
    /// Entries (scraped and report series) handed to the remote-write queues, by kind.
    pub samples_appended: AtomicU64,
    pub histograms_appended: AtomicU64,
    pub exemplars_appended: AtomicU64,
    /// The newest scrape timestamp committed, in milliseconds.
    pub highest_ts_ms: AtomicU64,
    /// 0 = not started, 1 = io_uring, 2 = epoll.
    pub driver: AtomicU64,
    /// The core thread's id (0 until it starts): its CPU time is the core's busy time.
    pub tid: std::sync::atomic::AtomicI32,
    pub wal: Arc<WalStats>,
}
}

impl CoreStats {
    /// The I/O driver the core runs on, once it started.
    pub fn driver_name(&self) -> Option<&'static str> {
        match self.driver.load(Relaxed) {
            1 => Some("io_uring"),
            2 => Some("epoll"),
            _ => None,
        }
    }
}

stats! {
/// Counters of one remote-write shard (one endpoint on one core).
#[derive(Default)]
pub struct ShardStats {
    /// Each count is kept per kind of entry, as Prometheus keeps them: samples, histograms,
    /// exemplars (see [`ShardStats::add`]).
    pub samples_sent: AtomicU64,
    pub histograms_sent: AtomicU64,
    pub exemplars_sent: AtomicU64,
    pub samples_failed: AtomicU64,
    pub histograms_failed: AtomicU64,
    pub exemplars_failed: AtomicU64,
    pub samples_retried: AtomicU64,
    pub histograms_retried: AtomicU64,
    pub exemplars_retried: AtomicU64,
    pub samples_dropped_queue_full: AtomicU64,
    pub histograms_dropped_queue_full: AtomicU64,
    pub exemplars_dropped_queue_full: AtomicU64,
    pub samples_pending: AtomicU64,
    pub histograms_pending: AtomicU64,
    pub exemplars_pending: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub requests_failed: AtomicU64,
    pub highest_sent_ts_ms: AtomicU64,
    /// Entries older than `sample_age_limit` when sent or retried.
    pub samples_dropped_too_old: AtomicU64,
    pub histograms_dropped_too_old: AtomicU64,
    pub exemplars_dropped_too_old: AtomicU64,
    /// Entries of series `write_relabel_configs` dropped.
    pub samples_dropped_relabel: AtomicU64,
    pub histograms_dropped_relabel: AtomicU64,
    pub exemplars_dropped_relabel: AtomicU64,
    /// Native histograms with custom buckets an endpoint sending Remote Write 1.0 dropped.
    pub histograms_dropped_nhcb_v1: AtomicU64,
    /// Unsent entries (of any kind) a WAL retention bound (size or age) deleted.
    pub samples_dropped_wal_size: Arc<AtomicU64>,
    /// Samples this endpoint still has to read back from the WAL (its backlog), in bytes.
    pub wal_backlog_bytes: AtomicU64,
    /// Families sent, dropped, retried in metadata requests, and their compressed bytes.
    pub metadata_sent: AtomicU64,
    pub metadata_failed: AtomicU64,
    pub metadata_retried: AtomicU64,
    pub metadata_bytes: AtomicU64,
    /// `max_samples_per_send` and `capacity`, as configured.
    pub max_samples_per_send: AtomicU64,
    pub capacity: AtomicU64,
    /// Lanes (concurrent senders) running, wanted, and the bounds.
    pub shards: AtomicU64,
    pub shards_desired: AtomicU64,
    pub shards_min: AtomicU64,
    pub shards_max: AtomicU64,
    /// `sent_batch_duration_seconds`, over [`BATCH_BUCKETS`].
    pub batch_duration: Histogram<BATCH_BUCKETS_N>,
}
}

/// Which count of a shard's, kept per kind of entry.
#[derive(Clone, Copy)]
pub enum Count {
    Sent,
    Failed,
    Retried,
    DroppedQueueFull,
    DroppedTooOld,
    DroppedRelabel,
}

impl ShardStats {
    /// The samples, histograms and exemplars counters of `count`.
    fn by_kind(&self, count: Count) -> [&AtomicU64; 3] {
        match count {
            Count::Sent => [
                &self.samples_sent,
                &self.histograms_sent,
                &self.exemplars_sent,
            ],
            Count::Failed => [
                &self.samples_failed,
                &self.histograms_failed,
                &self.exemplars_failed,
            ],
            Count::Retried => [
                &self.samples_retried,
                &self.histograms_retried,
                &self.exemplars_retried,
            ],
            Count::DroppedQueueFull => [
                &self.samples_dropped_queue_full,
                &self.histograms_dropped_queue_full,
                &self.exemplars_dropped_queue_full,
            ],
            Count::DroppedTooOld => [
                &self.samples_dropped_too_old,
                &self.histograms_dropped_too_old,
                &self.exemplars_dropped_too_old,
            ],
            Count::DroppedRelabel => [
                &self.samples_dropped_relabel,
                &self.histograms_dropped_relabel,
                &self.exemplars_dropped_relabel,
            ],
        }
    }

    /// Adds `t`, kind by kind, to `count`.
    pub fn add(&self, count: Count, t: Tally) {
        let [s, h, e] = self.by_kind(count);
        for (c, n) in [(s, t.samples), (h, t.histograms), (e, t.exemplars)] {
            if n > 0 {
                c.fetch_add(n, Relaxed);
            }
        }
    }

    /// Sets the pending gauges to `t`.
    pub fn set_pending(&self, t: Tally) {
        self.samples_pending.store(t.samples, Relaxed);
        self.histograms_pending.store(t.histograms, Relaxed);
        self.exemplars_pending.store(t.exemplars, Relaxed);
    }

    /// Every entry counted by `count`, whatever its kind.
    pub fn total(&self, count: Count) -> u64 {
        self.by_kind(count).iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Prometheus' buckets for `prometheus_remote_storage_sent_batch_duration_seconds`: the client
/// library's defaults and 25, 60, 120, 300 s.
pub const BATCH_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
];

const BATCH_BUCKETS_N: usize = BATCH_BUCKETS.len() + 1;

/// Buckets for the WAL's write and `fdatasync` durations: 100 µs to 10 s, so that a healthy
/// disk's writes and a stalling one's both fall inside.
pub const WAL_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0,
];

const WAL_BUCKETS_N: usize = WAL_BUCKETS.len() + 1;

/// A duration histogram written by one core: counts per bucket (not cumulative, `+Inf` last)
/// and the sum in microseconds. `N` is the number of bounds plus one.
pub struct Histogram<const N: usize> {
    counts: [AtomicU64; N],
    sum_us: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    /// Records `d` against `bounds` (`N - 1` of them).
    pub fn observe(&self, bounds: &[f64], d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = bounds.iter().position(|b| secs <= *b).unwrap_or(N - 1);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Adds this histogram's counts and sum to `(counts, sum_us)`.
    fn add_to(&self, counts: &mut [u64; N], sum_us: &mut u64) {
        for (c, a) in counts.iter_mut().zip(&self.counts) {
            *c += a.load(Relaxed);
        }
        *sum_us += self.sum_us.load(Relaxed);
    }
}

impl ShardStats {
    /// Records one request's duration (each attempt, as Prometheus observes it).
    pub fn observe_batch_duration(&self, d: std::time::Duration) {
        self.batch_duration.observe(&BATCH_BUCKETS, d);
    }
}

struct EndpointEntry {
    remote_name: String,
    url: String,
    shards: Vec<Arc<ShardStats>>,
}

/// Everything `/metrics` shows.
pub struct Registry {
    pub cores: Vec<Arc<CoreStats>>,
    endpoints: Mutex<Vec<EndpointEntry>>,
    pub start_time_secs: f64,
    pub ready: std::sync::atomic::AtomicBool,
    pub stopping: std::sync::atomic::AtomicBool,
    pub sd: Arc<SdStats>,
    pub web: WebStats,
    /// The running configuration for `/api/v1/status/config`, secrets redacted.
    pub config_yaml: Mutex<String>,
    /// `prometheus_config_last_reload_successful`.
    pub reload_successful: std::sync::atomic::AtomicBool,
    /// `prometheus_config_last_reload_success_timestamp_seconds`, as f64 bits.
    pub reload_success_time: AtomicU64,
    /// The cluster this member is part of, if any.
    pub cluster: Mutex<Option<ClusterView>>,
}

impl Registry {
    pub fn new(cores: usize) -> Registry {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Registry {
            cores: (0..cores).map(|_| Arc::new(CoreStats::default())).collect(),
            endpoints: Mutex::new(Vec::new()),
            start_time_secs: start.as_secs_f64(),
            ready: Default::default(),
            stopping: Default::default(),
            sd: Default::default(),
            web: Default::default(),
            config_yaml: Mutex::new(String::new()),
            reload_successful: std::sync::atomic::AtomicBool::new(true),
            reload_success_time: AtomicU64::new(start.as_secs_f64().to_bits()),
            cluster: Mutex::new(None),
        }
    }

    /// Registers one shard of an endpoint and returns its counters.
    pub fn shard(&self, remote_name: &str, url: &str) -> Arc<ShardStats> {
        let stats = Arc::new(ShardStats::default());
        let mut eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        match eps
            .iter_mut()
            .find(|e| e.remote_name == remote_name && e.url == url)
        {
            Some(e) => e.shards.push(stats.clone()),
            None => eps.push(EndpointEntry {
                remote_name: remote_name.to_string(),
                url: url.to_string(),
                shards: vec![stats.clone()],
            }),
        }
        stats
    }

    /// Drops a shard's counters (its endpoint left the configuration, or its URL changed);
    /// an endpoint with no shard left leaves `/metrics`.
    pub fn forget_shard(&self, remote_name: &str, url: &str, stats: &Arc<ShardStats>) {
        let mut eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        for e in eps.iter_mut() {
            if e.remote_name == remote_name && e.url == url {
                e.shards.retain(|s| !Arc::ptr_eq(s, stats));
            }
        }
        eps.retain(|e| !e.shards.is_empty());
    }

    /// Each endpoint's `remote_name`, URL and shard counters (one shard per core), for the
    /// web's remote-write status.
    pub fn endpoints(&self) -> Vec<(String, String, Vec<Arc<ShardStats>>)> {
        let eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        eps.iter()
            .map(|e| (e.remote_name.clone(), e.url.clone(), e.shards.clone()))
            .collect()
    }

    /// Renders the Prometheus text format: every row of [`METRICS`], then the process'.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        for m in METRICS {
            header(&mut out, m.name, m.kind, m.help);
            let name = m.name;
            match m.read {
                Read::Fixed(f) => {
                    let _ = writeln!(out, "{name} {}", f(self));
                }
                Read::Lines(f) => f(self, &mut out),
                Read::PerCore(f) => {
                    for (i, c) in self.cores.iter().enumerate() {
                        let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", f(c).load(Relaxed));
                    }
                }
                Read::SumCores(f) => {
                    let v: u64 = self.cores.iter().map(|c| f(c).load(Relaxed)).sum();
                    let _ = writeln!(out, "{name} {v}");
                }
                Read::MaxCoresMillis(f) => {
                    let v = self.cores.iter().map(|c| f(c).load(Relaxed)).max();
                    let _ = writeln!(out, "{name} {}", v.unwrap_or(0) as f64 / 1000.0);
                }
                Read::Endpoints(agg, f) => {
                    for e in eps.iter() {
                        let each = e.shards.iter().map(|s| f(s).load(Relaxed));
                        let v = match agg {
                            Agg::Sum => each.sum::<u64>() as f64,
                            Agg::Max => each.max().unwrap_or(0) as f64,
                            Agg::MaxMillis => each.max().unwrap_or(0) as f64 / 1000.0,
                        };
                        let _ = writeln!(out, "{name}{{{}}} {v}", e.labels());
                    }
                }
                Read::Dropped(kind) => {
                    for e in eps.iter() {
                        for (reason, by_kind) in DROP_REASONS {
                            let v: u64 = match by_kind[kind] {
                                Some(f) => e.shards.iter().map(|s| f(s).load(Relaxed)).sum(),
                                None => 0,
                            };
                            let _ =
                                writeln!(out, "{name}{{reason=\"{reason}\",{}}} {v}", e.labels());
                        }
                    }
                }
                Read::BatchDurations => {
                    for e in eps.iter() {
                        let (mut counts, mut sum) = ([0; BATCH_BUCKETS_N], 0);
                        for s in &e.shards {
                            s.batch_duration.add_to(&mut counts, &mut sum);
                        }
                        histogram(&mut out, name, &e.labels(), &BATCH_BUCKETS, &counts, sum);
                    }
                }
                Read::WalHistogram(f) => {
                    for (i, c) in self.cores.iter().enumerate() {
                        let (mut counts, mut sum) = ([0; WAL_BUCKETS_N], 0);
                        f(&c.wal).add_to(&mut counts, &mut sum);
                        let labels = format!("core=\"{i}\"");
                        histogram(&mut out, name, &labels, &WAL_BUCKETS, &counts, sum);
                    }
                }
            }
        }
        drop(eps);
        process_metrics(&mut out, self.start_time_secs);
        out
    }
}

impl EndpointEntry {
    /// `remote_name="…",url="…"`.
    fn labels(&self) -> String {
        format!(
            "remote_name=\"{}\",url=\"{}\"",
            escape(&self.remote_name),
            escape(&self.url)
        )
    }
}

/// How a row of [`METRICS`] is read.
#[derive(Clone, Copy)]
enum Read {
    /// One value of the registry.
    Fixed(fn(&Registry) -> f64),
    /// Lines written by the function (labels of its own).
    Lines(fn(&Registry, &mut String)),
    /// One series per core, labelled `core`.
    PerCore(fn(&CoreStats) -> &AtomicU64),
    /// The sum over cores.
    SumCores(fn(&CoreStats) -> &AtomicU64),
    /// The highest over cores, milliseconds shown as seconds.
    MaxCoresMillis(fn(&CoreStats) -> &AtomicU64),
    /// One series per endpoint (`remote_name`, `url`) over its shards.
    Endpoints(Agg, ShardCounter),
    /// `…_dropped_total` per endpoint and reason ([`DROP_REASONS`]), of one kind (0: samples,
    /// 1: histograms, 2: exemplars).
    Dropped(usize),
    /// The sent-batch duration histogram per endpoint.
    BatchDurations,
    /// A WAL duration histogram per core.
    WalHistogram(fn(&WalStats) -> &Histogram<WAL_BUCKETS_N>),
}

/// How an endpoint's shards add up.
#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Max,
    /// The highest, milliseconds shown as seconds.
    MaxMillis,
}

/// One metric `/metrics` shows.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    read: Read,
}

const fn m(name: &'static str, kind: &'static str, help: &'static str, read: Read) -> Metric {
    Metric {
        name,
        kind,
        help,
        read,
    }
}

const C: &str = "counter";
const G: &str = "gauge";

/// Reads one counter of a shard.
type ShardCounter = fn(&ShardStats) -> &AtomicU64;

/// The reasons of `prometheus_remote_storage_{samples,histograms,exemplars}_dropped_total`,
/// each with its counter for each kind (`[samples, histograms, exemplars]`). WAL retention
/// counts every kind of entry it deleted as samples.
const DROP_REASONS: [(&str, [Option<ShardCounter>; 3]); 5] = [
    (
        "queue_full",
        [
            Some(|s| &s.samples_dropped_queue_full),
            Some(|s| &s.histograms_dropped_queue_full),
            Some(|s| &s.exemplars_dropped_queue_full),
        ],
    ),
    (
        "wal_retention",
        [Some(|s| &s.samples_dropped_wal_size), None, None],
    ),
    (
        "dropped_series",
        [
            Some(|s| &s.samples_dropped_relabel),
            Some(|s| &s.histograms_dropped_relabel),
            Some(|s| &s.exemplars_dropped_relabel),
        ],
    ),
    (
        "too_old",
        [
            Some(|s| &s.samples_dropped_too_old),
            Some(|s| &s.histograms_dropped_too_old),
            Some(|s| &s.exemplars_dropped_too_old),
        ],
    ),
    (
        "nhcb_in_rw1_not_supported",
        [None, Some(|s| &s.histograms_dropped_nhcb_v1), None],
    ),
];

/// Every metric `/metrics` shows, in order (the `process_*` ones follow).
const METRICS: &[Metric] = &[
    m(
        "spate_build_info",
        G,
        "A metric with a constant '1' value labeled by the version of spate.",
        Read::Lines(|_, out| {
            let _ = writeln!(
                out,
                "spate_build_info{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            );
        }),
    ),
    m(
        "spate_core_cpu_seconds_total",
        C,
        "CPU time of each core's thread: its rate is the core's busy fraction (the load signal to scale a cluster on).",
        Read::Lines(|r, out| {
            for (i, c) in r.cores.iter().enumerate() {
                if let Some(secs) = thread_cpu_seconds(c.tid.load(Relaxed)) {
                    let _ = writeln!(out, "spate_core_cpu_seconds_total{{core=\"{i}\"}} {secs}");
                }
            }
        }),
    ),
    m(
        "prometheus_agent_active_series",
        G,
        "Number of active series being tracked by the WAL storage (the series of each running target's last successful scrape).",
        Read::SumCores(|c| &c.active_series),
    ),
    m(
        "spate_cluster_members",
        G,
        "Members in this member's view of the cluster (absent outside a cluster).",
        Read::Lines(|r, out| {
            if let Some(v) = &*r.cluster.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = writeln!(out, "spate_cluster_members {}", v.membership.members.len());
            }
        }),
    ),
    m(
        "spate_cluster_member_info",
        G,
        "This member: its name, the cluster's name, its HA group, and whether it is in its own member list (value 1 if listed, else 0).",
        Read::Lines(|r, out| {
            if let Some(v) = &*r.cluster.lock().unwrap_or_else(|e| e.into_inner()) {
                let m = &v.membership;
                let group = m.group().map(|g| g.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "spate_cluster_member_info{{cluster=\"{}\",group=\"{}\",member=\"{}\"}} {}",
                    escape(&m.name),
                    group,
                    escape(&m.me),
                    u8::from(m.listed())
                );
            }
        }),
    ),
    m(
        "spate_cluster_targets_owned",
        G,
        "Targets of shared jobs each member owns, as this member computes it from the same discovery.",
        Read::Lines(|r, out| {
            if let Some(v) = &*r.cluster.lock().unwrap_or_else(|e| e.into_inner()) {
                for (member, n) in &v.shares {
                    let _ = writeln!(
                        out,
                        "spate_cluster_targets_owned{{member=\"{}\"}} {n}",
                        escape(member)
                    );
                }
            }
        }),
    ),
    m(
        "spate_cluster_membership_changes_total",
        C,
        "Changes of the cluster's member list this member applied.",
        Read::Fixed(|r| r.sd.membership_changes.load(Relaxed) as f64),
    ),
    m(
        "spate_cluster_targets_handed_over_total",
        C,
        "Targets this member stopped, without staleness markers, because another member owns them now.",
        Read::Fixed(|r| r.sd.handovers.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_http_failures_total",
        C,
        "Number of HTTP service discovery refresh failures.",
        Read::Fixed(|r| r.sd.http_failures.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_file_read_errors_total",
        C,
        "The number of File-SD read errors.",
        Read::Fixed(|r| r.sd.file_read_errors.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_dns_lookups_total",
        C,
        "The number of DNS-SD lookups.",
        Read::Fixed(|r| r.sd.dns_lookups.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_dns_lookup_failures_total",
        C,
        "The number of DNS-SD lookup failures.",
        Read::Fixed(|r| r.sd.dns_lookup_failures.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_kubernetes_events_total",
        C,
        "The number of Kubernetes events handled.",
        Read::Lines(|r, out| {
            const KINDS: [&str; 7] = [
                "pod",
                "service",
                "endpoints",
                "endpointslice",
                "node",
                "ingress",
                "namespace",
            ];
            for (kind, counts) in KINDS.iter().zip(&r.sd.k8s_events) {
                for (event, c) in ["add", "update", "delete"].iter().zip(counts) {
                    let _ = writeln!(
                        out,
                        "prometheus_sd_kubernetes_events_total{{event=\"{event}\",role=\"{kind}\"}} {}",
                        c.load(Relaxed)
                    );
                }
            }
        }),
    ),
    m(
        "prometheus_sd_kubernetes_failures_total",
        C,
        "The number of failed WATCH/LIST requests.",
        Read::Fixed(|r| r.sd.k8s_failures.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_consul_rpc_failures_total",
        C,
        "The number of Consul RPC call failures.",
        Read::Fixed(|r| r.sd.consul_failures.load(Relaxed) as f64),
    ),
    m(
        "prometheus_sd_refresh_failures_total",
        C,
        "Number of refresh failures for the given SD config.",
        Read::Lines(|r, out| {
            for (mechanism, c) in [
                ("docker", &r.sd.docker_failures),
                ("ec2", &r.sd.ec2_failures),
            ] {
                let _ = writeln!(
                    out,
                    "prometheus_sd_refresh_failures_total{{mechanism=\"{mechanism}\"}} {}",
                    c.load(Relaxed)
                );
            }
        }),
    ),
    m(
        "prometheus_config_last_reload_successful",
        G,
        "Whether the last configuration reload attempt was successful.",
        Read::Fixed(|r| f64::from(u8::from(r.reload_successful.load(Relaxed)))),
    ),
    m(
        "prometheus_config_last_reload_success_timestamp_seconds",
        G,
        "Timestamp of the last successful configuration reload.",
        Read::Fixed(|r| f64::from_bits(r.reload_success_time.load(Relaxed))),
    ),
    m(
        "prometheus_sd_discovered_targets",
        G,
        "Current number of discovered targets.",
        Read::Lines(|r, out| {
            let discovered = r.sd.discovered.lock().unwrap_or_else(|e| e.into_inner());
            for (job, n) in discovered.iter() {
                let mut label = String::new();
                crate::log::quoted(&mut label, job);
                let _ = writeln!(
                    out,
                    "prometheus_sd_discovered_targets{{config={label},name=\"scrape\"}} {n}"
                );
            }
        }),
    ),
    m(
        "prometheus_target_scrape_pool_targets",
        G,
        "Current number of targets in this scrape pool.",
        Read::Lines(|r, out| {
            let active = r.sd.active.lock().unwrap_or_else(|e| e.into_inner());
            for (job, n) in active.iter() {
                let mut label = String::new();
                crate::log::quoted(&mut label, job);
                let _ = writeln!(
                    out,
                    "prometheus_target_scrape_pool_targets{{scrape_job={label}}} {n}"
                );
            }
        }),
    ),
    m(
        "spate_web_requests_total",
        C,
        "HTTP requests the web server received.",
        Read::Fixed(|r| r.web.requests.load(Relaxed) as f64),
    ),
    m(
        "spate_web_auth_failures_total",
        C,
        "HTTP requests refused for missing or wrong basic-auth credentials (--web.config.file).",
        Read::Fixed(|r| r.web.auth_failures.load(Relaxed) as f64),
    ),
    m(
        "spate_web_tls_handshake_failures_total",
        C,
        "TLS handshakes the web server failed (--web.config.file).",
        Read::Fixed(|r| r.web.tls_failures.load(Relaxed) as f64),
    ),
    m(
        "spate_core_driver",
        G,
        "The I/O driver each data-plane core runs on (1 for the driver in use).",
        Read::Lines(|r, out| {
            for (i, c) in r.cores.iter().enumerate() {
                let Some(d) = c.driver_name() else { continue };
                let _ = writeln!(out, "spate_core_driver{{core=\"{i}\",driver=\"{d}\"}} 1");
            }
        }),
    ),
    m(
        "spate_core_targets",
        G,
        "Active scrape targets per data-plane core.",
        Read::PerCore(|c| &c.targets),
    ),
    m(
        "spate_scrapes_total",
        C,
        "Scrapes attempted per core.",
        Read::PerCore(|c| &c.scrapes),
    ),
    m(
        "spate_wal_records_total",
        C,
        "WAL records written per core.",
        Read::PerCore(|c| &c.wal.records),
    ),
    m(
        "spate_wal_written_bytes_total",
        C,
        "WAL bytes written per core (framing included, before block padding).",
        Read::PerCore(|c| &c.wal.bytes),
    ),
    m(
        "spate_wal_size_bytes",
        G,
        "Bytes of WAL segments on disk per core.",
        Read::PerCore(|c| &c.wal.size_bytes),
    ),
    m(
        "spate_wal_segments_created_total",
        C,
        "WAL segments created per core.",
        Read::PerCore(|c| &c.wal.segments_created),
    ),
    m(
        "spate_wal_segments_deleted_total",
        C,
        "WAL segments deleted per core.",
        Read::PerCore(|c| &c.wal.segments_deleted),
    ),
    m(
        "spate_wal_fsyncs_total",
        C,
        "WAL fdatasync calls per core.",
        Read::PerCore(|c| &c.wal.fsyncs),
    ),
    m(
        "spate_wal_write_failures_total",
        C,
        "Failed WAL writes (disk full, I/O errors) per core.",
        Read::PerCore(|c| &c.wal.write_failures),
    ),
    m(
        "spate_wal_samples_not_durable_total",
        C,
        "Samples whose WAL write failed; they were still forwarded live.",
        Read::PerCore(|c| &c.wal.samples_not_durable),
    ),
    m(
        "spate_wal_fsync_failures_total",
        C,
        "WAL fdatasync calls that failed per core; data written since the last good one may not be durable.",
        Read::PerCore(|c| &c.wal.fsync_failures),
    ),
    m(
        "spate_wal_write_duration_seconds",
        "histogram",
        "Time spent writing WAL blocks (segment and tail file) per core.",
        Read::WalHistogram(|w| &w.write_duration),
    ),
    m(
        "spate_wal_fsync_duration_seconds",
        "histogram",
        "Time spent in WAL fdatasync calls per core.",
        Read::WalHistogram(|w| &w.fsync_duration),
    ),
    m(
        "spate_wal_read_damaged_bytes_total",
        C,
        "WAL bytes skipped by readers as damaged (each endpoint's reader counts).",
        Read::PerCore(|c| &c.wal.read_damaged_bytes),
    ),
    m(
        "spate_wal_samples_lost_to_damage_total",
        C,
        "Samples readers could not rebuild from damaged WAL data.",
        Read::PerCore(|c| &c.wal.samples_lost_to_damage),
    ),
    m(
        "spate_scrape_failures_total",
        C,
        "Scrapes that failed (up = 0) per core.",
        Read::PerCore(|c| &c.scrape_failures),
    ),
    m(
        "prometheus_target_scrapes_exceeded_sample_limit_total",
        C,
        "Scrapes that hit the sample limit and were rejected.",
        Read::SumCores(|c| &c.scrapes_exceeded_sample_limit),
    ),
    m(
        "prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total",
        C,
        "Scrapes that hit the native histogram bucket limit and were rejected.",
        Read::SumCores(|c| &c.scrapes_exceeded_bucket_limit),
    ),
    m(
        "spate_samples_scraped_total",
        C,
        "Samples parsed from scrape responses per core.",
        Read::PerCore(|c| &c.samples_scraped),
    ),
    m(
        "prometheus_remote_storage_samples_in_total",
        C,
        "Samples appended for remote write (scraped and report series).",
        Read::SumCores(|c| &c.samples_appended),
    ),
    m(
        "prometheus_remote_storage_histograms_in_total",
        C,
        "Native histograms appended for remote write.",
        Read::SumCores(|c| &c.histograms_appended),
    ),
    m(
        "prometheus_remote_storage_exemplars_in_total",
        C,
        "Exemplars appended for remote write.",
        Read::SumCores(|c| &c.exemplars_appended),
    ),
    m(
        "prometheus_remote_storage_highest_timestamp_in_seconds",
        G,
        "Newest timestamp committed for remote write (of a scrape), in seconds.",
        Read::MaxCoresMillis(|c| &c.highest_ts_ms),
    ),
    m(
        "prometheus_remote_storage_max_samples_per_send",
        G,
        "The most samples in one request (queue_config.max_samples_per_send).",
        Read::Endpoints(Agg::Max, |s| &s.max_samples_per_send),
    ),
    m(
        "prometheus_remote_storage_shard_capacity",
        G,
        "Samples a lane queues before it is behind (queue_config.capacity).",
        Read::Endpoints(Agg::Max, |s| &s.capacity),
    ),
    m(
        "prometheus_remote_storage_metadata_total",
        C,
        "Family metadata successfully sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.metadata_sent),
    ),
    m(
        "prometheus_remote_storage_metadata_failed_total",
        C,
        "Family metadata that failed to send and was dropped.",
        Read::Endpoints(Agg::Sum, |s| &s.metadata_failed),
    ),
    m(
        "prometheus_remote_storage_metadata_retried_total",
        C,
        "Family metadata whose send failed with a recoverable error and was retried.",
        Read::Endpoints(Agg::Sum, |s| &s.metadata_retried),
    ),
    m(
        "prometheus_remote_storage_metadata_bytes_total",
        C,
        "Compressed metadata request bytes sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.metadata_bytes),
    ),
    m(
        "prometheus_remote_storage_samples_total",
        C,
        "Samples successfully sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.samples_sent),
    ),
    m(
        "prometheus_remote_storage_samples_failed_total",
        C,
        "Samples that failed to send and were dropped (non-recoverable errors).",
        Read::Endpoints(Agg::Sum, |s| &s.samples_failed),
    ),
    m(
        "prometheus_remote_storage_samples_retried_total",
        C,
        "Samples whose send failed with a recoverable error and were retried.",
        Read::Endpoints(Agg::Sum, |s| &s.samples_retried),
    ),
    m(
        "prometheus_remote_storage_samples_pending",
        G,
        "Samples queued and not yet sent.",
        Read::Endpoints(Agg::Sum, |s| &s.samples_pending),
    ),
    m(
        "prometheus_remote_storage_histograms_total",
        C,
        "Native histograms successfully sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.histograms_sent),
    ),
    m(
        "prometheus_remote_storage_histograms_failed_total",
        C,
        "Native histograms that failed to send and were dropped (non-recoverable errors).",
        Read::Endpoints(Agg::Sum, |s| &s.histograms_failed),
    ),
    m(
        "prometheus_remote_storage_histograms_retried_total",
        C,
        "Native histograms whose send failed with a recoverable error and were retried.",
        Read::Endpoints(Agg::Sum, |s| &s.histograms_retried),
    ),
    m(
        "prometheus_remote_storage_histograms_pending",
        G,
        "Native histograms queued and not yet sent.",
        Read::Endpoints(Agg::Sum, |s| &s.histograms_pending),
    ),
    m(
        "prometheus_remote_storage_exemplars_total",
        C,
        "Exemplars successfully sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.exemplars_sent),
    ),
    m(
        "prometheus_remote_storage_exemplars_failed_total",
        C,
        "Exemplars that failed to send and were dropped (non-recoverable errors).",
        Read::Endpoints(Agg::Sum, |s| &s.exemplars_failed),
    ),
    m(
        "prometheus_remote_storage_exemplars_retried_total",
        C,
        "Exemplars whose send failed with a recoverable error and were retried.",
        Read::Endpoints(Agg::Sum, |s| &s.exemplars_retried),
    ),
    m(
        "prometheus_remote_storage_exemplars_pending",
        G,
        "Exemplars queued and not yet sent.",
        Read::Endpoints(Agg::Sum, |s| &s.exemplars_pending),
    ),
    m(
        "prometheus_remote_storage_bytes_total",
        C,
        "Compressed request bytes sent to remote storage.",
        Read::Endpoints(Agg::Sum, |s| &s.bytes_sent),
    ),
    m(
        "spate_remote_write_requests_failed_total",
        C,
        "Remote-write requests that did not succeed (each attempt).",
        Read::Endpoints(Agg::Sum, |s| &s.requests_failed),
    ),
    m(
        "prometheus_remote_storage_shards",
        G,
        "Concurrent senders (lanes) running, over all cores.",
        Read::Endpoints(Agg::Sum, |s| &s.shards),
    ),
    m(
        "prometheus_remote_storage_shards_desired",
        G,
        "Lanes the adaptive concurrency wants, over all cores.",
        Read::Endpoints(Agg::Sum, |s| &s.shards_desired),
    ),
    m(
        "prometheus_remote_storage_shards_min",
        G,
        "Fewest lanes, over all cores (min_shards, rounded up per core).",
        Read::Endpoints(Agg::Sum, |s| &s.shards_min),
    ),
    m(
        "prometheus_remote_storage_shards_max",
        G,
        "Most lanes, over all cores (max_shards, rounded up per core).",
        Read::Endpoints(Agg::Sum, |s| &s.shards_max),
    ),
    m(
        "prometheus_remote_storage_samples_dropped_total",
        C,
        "Samples dropped before sending, by reason.",
        Read::Dropped(0),
    ),
    m(
        "prometheus_remote_storage_histograms_dropped_total",
        C,
        "Histograms dropped before sending, by reason.",
        Read::Dropped(1),
    ),
    m(
        "prometheus_remote_storage_exemplars_dropped_total",
        C,
        "Exemplars dropped before sending, by reason.",
        Read::Dropped(2),
    ),
    m(
        "spate_remote_storage_wal_backlog_bytes",
        G,
        "WAL bytes an endpoint has yet to read back and send.",
        Read::Endpoints(Agg::Sum, |s| &s.wal_backlog_bytes),
    ),
    m(
        "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
        G,
        "Newest sample timestamp successfully sent, per endpoint.",
        Read::Endpoints(Agg::MaxMillis, |s| &s.highest_sent_ts_ms),
    ),
    m(
        "prometheus_remote_storage_sent_batch_duration_seconds",
        "histogram",
        "Duration of each send attempt to remote storage.",
        Read::BatchDurations,
    ),
];

/// A histogram's series: cumulative buckets over `bounds`, `+Inf`, the sum and the count.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    counts: &[u64],
    sum_us: u64,
) {
    let mut cumulative = 0u64;
    for (i, c) in counts.iter().enumerate() {
        cumulative += c;
        match bounds.get(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}\n{name}_count{{{labels}}} {cumulative}",
        sum_us as f64 / 1e6
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The CPU time (user and system) of thread `tid` of this process.
fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    if tid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let used = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(used / ticks)
}

/// The standard `process_*` metrics, read from /proc.
fn process_metrics(out: &mut String, start_time: f64) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are 14th and 15th.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 22 {
                let cpu = (f[11].parse::<f64>().unwrap_or(0.0)
                    + f[12].parse::<f64>().unwrap_or(0.0))
                    / ticks;
                let rss = f[21].parse::<f64>().unwrap_or(0.0) * page;
                header(
                    out,
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                );
                let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
                header(
                    out,
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident memory size in bytes.",
                );
                let _ = writeln!(out, "process_resident_memory_bytes {rss}");
            }
        }
    }
    header(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(out, "process_start_time_seconds {start_time}");
}

#[cfg(test)]
mod tests;
