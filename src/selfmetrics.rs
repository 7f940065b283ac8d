//! The agent's own metrics. Each core writes only its own counters (relaxed atomics, no
//! contention); the web thread sums them when `/metrics` is scraped. Names follow Prometheus
//! wherever an equivalent exists, so existing dashboards and alerts keep working.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Service discovery counters, with Prometheus' names.
#[derive(Default)]
pub struct SdStats {
    pub http_failures: AtomicU64,
    pub file_read_errors: AtomicU64,
    pub dns_lookups: AtomicU64,
    pub dns_lookup_failures: AtomicU64,
    /// Targets discovered per job (before relabeling), in configuration order.
    pub discovered: Mutex<Vec<(String, usize)>>,
}

/// Counters owned by one data-plane core.
#[derive(Default)]
pub struct CoreStats {
    pub targets: AtomicU64,
    pub scrapes: AtomicU64,
    pub scrape_failures: AtomicU64,
    pub samples_scraped: AtomicU64,
    /// Samples (scraped and report series) handed to the remote-write queues.
    pub samples_appended: AtomicU64,
    /// The newest scrape timestamp committed, in milliseconds.
    pub highest_ts_ms: AtomicU64,
    /// 0 = not started, 1 = io_uring, 2 = epoll.
    pub driver: AtomicU64,
    pub wal: Arc<crate::wal::WalStats>,
}

/// Counters of one remote-write shard (one endpoint on one core).
#[derive(Default)]
pub struct ShardStats {
    pub samples_sent: AtomicU64,
    pub samples_failed: AtomicU64,
    pub samples_retried: AtomicU64,
    pub samples_dropped_queue_full: AtomicU64,
    pub samples_pending: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub requests_failed: AtomicU64,
    pub highest_sent_ts_ms: AtomicU64,
    /// Samples older than `sample_age_limit` when sent or retried.
    pub samples_dropped_too_old: AtomicU64,
    /// Samples of series `write_relabel_configs` dropped.
    pub samples_dropped_relabel: AtomicU64,
    /// Unsent samples a WAL retention bound (size or age) deleted.
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
    /// `sent_batch_duration_seconds`: counts per bucket of [`BATCH_BUCKETS`] (not cumulative),
    /// the +Inf bucket last, and the sum in microseconds.
    pub batch_duration_buckets: [AtomicU64; BATCH_BUCKETS.len() + 1],
    pub batch_duration_sum_us: AtomicU64,
}

/// Prometheus' buckets for `prometheus_remote_storage_sent_batch_duration_seconds`: the client
/// library's defaults and 25, 60, 120, 300 s.
pub const BATCH_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0,
];

impl ShardStats {
    /// Records one request's duration (each attempt, as Prometheus observes it).
    pub fn observe_batch_duration(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = BATCH_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BATCH_BUCKETS.len());
        self.batch_duration_buckets[i].fetch_add(1, Relaxed);
        self.batch_duration_sum_us
            .fetch_add(d.as_micros() as u64, Relaxed);
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
    /// Every target, active and dropped, for `/api/v1/targets`.
    pub targets: Mutex<crate::scrape::TargetsView>,
    pub sd: Arc<SdStats>,
    /// The running configuration for `/api/v1/status/config`, secrets redacted.
    pub config_yaml: Mutex<String>,
    /// `prometheus_config_last_reload_successful`.
    pub reload_successful: std::sync::atomic::AtomicBool,
    /// `prometheus_config_last_reload_success_timestamp_seconds`, as f64 bits.
    pub reload_success_time: AtomicU64,
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
            targets: Mutex::new(Default::default()),
            sd: Default::default(),
            config_yaml: Mutex::new(String::new()),
            reload_successful: std::sync::atomic::AtomicBool::new(true),
            reload_success_time: AtomicU64::new(start.as_secs_f64().to_bits()),
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

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let sum = |f: fn(&CoreStats) -> &AtomicU64| {
            self.cores.iter().map(|c| f(c).load(Relaxed)).sum::<u64>()
        };

        header(
            &mut out,
            "spate_build_info",
            "gauge",
            "A metric with a constant '1' value labeled by the version of spate.",
        );
        let _ = writeln!(
            out,
            "spate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        let count = |v: &AtomicU64| v.load(Relaxed) as f64;
        for (name, kind, help, value) in [
            (
                "prometheus_sd_http_failures_total",
                "counter",
                "Number of HTTP service discovery refresh failures.",
                count(&self.sd.http_failures),
            ),
            (
                "prometheus_sd_file_read_errors_total",
                "counter",
                "The number of File-SD read errors.",
                count(&self.sd.file_read_errors),
            ),
            (
                "prometheus_sd_dns_lookups_total",
                "counter",
                "The number of DNS-SD lookups.",
                count(&self.sd.dns_lookups),
            ),
            (
                "prometheus_sd_dns_lookup_failures_total",
                "counter",
                "The number of DNS-SD lookup failures.",
                count(&self.sd.dns_lookup_failures),
            ),
            (
                "prometheus_config_last_reload_successful",
                "gauge",
                "Whether the last configuration reload attempt was successful.",
                f64::from(u8::from(self.reload_successful.load(Relaxed))),
            ),
            (
                "prometheus_config_last_reload_success_timestamp_seconds",
                "gauge",
                "Timestamp of the last successful configuration reload.",
                f64::from_bits(self.reload_success_time.load(Relaxed)),
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "prometheus_sd_discovered_targets",
            "gauge",
            "Current number of discovered targets.",
        );
        for (job, n) in self
            .sd
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let mut label = String::new();
            crate::log::quoted(&mut label, job);
            let _ = writeln!(
                out,
                "prometheus_sd_discovered_targets{{config={label},name=\"scrape\"}} {n}"
            );
        }

        header(
            &mut out,
            "spate_core_driver",
            "gauge",
            "The I/O driver each data-plane core runs on (1 for the driver in use).",
        );
        for (i, c) in self.cores.iter().enumerate() {
            let d = match c.driver.load(Relaxed) {
                1 => "io_uring",
                2 => "epoll",
                _ => continue,
            };
            let _ = writeln!(out, "spate_core_driver{{core=\"{i}\",driver=\"{d}\"}} 1");
        }
        per_core(
            &mut out,
            self,
            "spate_core_targets",
            "gauge",
            "Active scrape targets per data-plane core.",
            |c| &c.targets,
        );
        per_core(
            &mut out,
            self,
            "spate_scrapes_total",
            "counter",
            "Scrapes attempted per core.",
            |c| &c.scrapes,
        );
        for (name, kind, help, f) in [
            (
                "spate_wal_records_total",
                "counter",
                "WAL records written per core.",
                (|c: &CoreStats| &c.wal.records) as fn(&CoreStats) -> &AtomicU64,
            ),
            (
                "spate_wal_written_bytes_total",
                "counter",
                "WAL bytes written per core (framing included, before block padding).",
                |c| &c.wal.bytes,
            ),
            (
                "spate_wal_size_bytes",
                "gauge",
                "Bytes of WAL segments on disk per core.",
                |c| &c.wal.size_bytes,
            ),
            (
                "spate_wal_segments_created_total",
                "counter",
                "WAL segments created per core.",
                |c| &c.wal.segments_created,
            ),
            (
                "spate_wal_segments_deleted_total",
                "counter",
                "WAL segments deleted per core.",
                |c| &c.wal.segments_deleted,
            ),
            (
                "spate_wal_fsyncs_total",
                "counter",
                "WAL fdatasync calls per core.",
                |c| &c.wal.fsyncs,
            ),
            (
                "spate_wal_write_failures_total",
                "counter",
                "Failed WAL writes (disk full, I/O errors) per core.",
                |c| &c.wal.write_failures,
            ),
            (
                "spate_wal_samples_not_durable_total",
                "counter",
                "Samples whose WAL write failed; they were still forwarded live.",
                |c| &c.wal.samples_not_durable,
            ),
            (
                "spate_wal_read_damaged_bytes_total",
                "counter",
                "WAL bytes skipped by readers as damaged (each endpoint's reader counts).",
                |c| &c.wal.read_damaged_bytes,
            ),
            (
                "spate_wal_samples_lost_to_damage_total",
                "counter",
                "Samples readers could not rebuild from damaged WAL data.",
                |c| &c.wal.samples_lost_to_damage,
            ),
        ] {
            per_core(&mut out, self, name, kind, help, f);
        }
        per_core(
            &mut out,
            self,
            "spate_scrape_failures_total",
            "counter",
            "Scrapes that failed (up = 0) per core.",
            |c| &c.scrape_failures,
        );
        per_core(
            &mut out,
            self,
            "spate_samples_scraped_total",
            "counter",
            "Samples parsed from scrape responses per core.",
            |c| &c.samples_scraped,
        );

        header(
            &mut out,
            "prometheus_remote_storage_samples_in_total",
            "counter",
            "Samples appended for remote write (scraped and report series).",
        );
        let _ = writeln!(
            out,
            "prometheus_remote_storage_samples_in_total {}",
            sum(|c| &c.samples_appended)
        );

        header(
            &mut out,
            "prometheus_remote_storage_highest_timestamp_in_seconds",
            "gauge",
            "Newest timestamp committed for remote write (of a scrape), in seconds.",
        );
        let highest = self
            .cores
            .iter()
            .map(|c| c.highest_ts_ms.load(Relaxed))
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "prometheus_remote_storage_highest_timestamp_in_seconds {}",
            highest as f64 / 1000.0
        );

        let eps = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        for (name, help, get) in [
            (
                "prometheus_remote_storage_max_samples_per_send",
                "The most samples in one request (queue_config.max_samples_per_send).",
                (|s: &ShardStats| s.max_samples_per_send.load(Relaxed)) as fn(&ShardStats) -> u64,
            ),
            (
                "prometheus_remote_storage_shard_capacity",
                "Samples a lane queues before it is behind (queue_config.capacity).",
                |s: &ShardStats| s.capacity.load(Relaxed),
            ),
        ] {
            header(&mut out, name, "gauge", help);
            for e in eps.iter() {
                let v = e.shards.iter().map(|s| get(s)).max().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "{name}{{remote_name=\"{}\",url=\"{}\"}} {v}",
                    escape(&e.remote_name),
                    escape(&e.url)
                );
            }
        }
        type Get = fn(&ShardStats) -> u64;
        let series: [(&str, &str, &str, Get); 14] = [
            (
                "prometheus_remote_storage_metadata_total",
                "counter",
                "Family metadata successfully sent to remote storage.",
                |s| s.metadata_sent.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_metadata_failed_total",
                "counter",
                "Family metadata that failed to send and was dropped.",
                |s| s.metadata_failed.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_metadata_retried_total",
                "counter",
                "Family metadata whose send failed with a recoverable error and was retried.",
                |s| s.metadata_retried.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_metadata_bytes_total",
                "counter",
                "Compressed metadata request bytes sent to remote storage.",
                |s| s.metadata_bytes.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_samples_total",
                "counter",
                "Samples successfully sent to remote storage.",
                |s| s.samples_sent.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_samples_failed_total",
                "counter",
                "Samples that failed to send and were dropped (non-recoverable errors).",
                |s| s.samples_failed.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_samples_retried_total",
                "counter",
                "Samples whose send failed with a recoverable error and were retried.",
                |s| s.samples_retried.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_samples_pending",
                "gauge",
                "Samples queued and not yet sent.",
                |s| s.samples_pending.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_bytes_total",
                "counter",
                "Compressed request bytes sent to remote storage.",
                |s| s.bytes_sent.load(Relaxed),
            ),
            (
                "spate_remote_write_requests_failed_total",
                "counter",
                "Remote-write requests that did not succeed (each attempt).",
                |s| s.requests_failed.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_shards",
                "gauge",
                "Concurrent senders (lanes) running, over all cores.",
                |s| s.shards.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_shards_desired",
                "gauge",
                "Lanes the adaptive concurrency wants, over all cores.",
                |s| s.shards_desired.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_shards_min",
                "gauge",
                "Fewest lanes, over all cores (min_shards, rounded up per core).",
                |s| s.shards_min.load(Relaxed),
            ),
            (
                "prometheus_remote_storage_shards_max",
                "gauge",
                "Most lanes, over all cores (max_shards, rounded up per core).",
                |s| s.shards_max.load(Relaxed),
            ),
        ];
        for (name, kind, help, get) in series {
            header(&mut out, name, kind, help);
            for e in eps.iter() {
                let v: u64 = e.shards.iter().map(|s| get(s)).sum();
                let _ = writeln!(
                    out,
                    "{name}{{remote_name=\"{}\",url=\"{}\"}} {v}",
                    escape(&e.remote_name),
                    escape(&e.url)
                );
            }
        }
        header(
            &mut out,
            "prometheus_remote_storage_samples_dropped_total",
            "counter",
            "Samples dropped before sending, by reason.",
        );
        for e in eps.iter() {
            for (reason, f) in [
                (
                    "queue_full",
                    (|s: &ShardStats| s.samples_dropped_queue_full.load(Relaxed))
                        as fn(&ShardStats) -> u64,
                ),
                ("wal_retention", |s: &ShardStats| {
                    s.samples_dropped_wal_size.load(Relaxed)
                }),
                ("dropped_series", |s: &ShardStats| {
                    s.samples_dropped_relabel.load(Relaxed)
                }),
                ("too_old", |s: &ShardStats| {
                    s.samples_dropped_too_old.load(Relaxed)
                }),
            ] {
                let v: u64 = e.shards.iter().map(|s| f(s)).sum();
                let _ = writeln!(
                    out,
                    "prometheus_remote_storage_samples_dropped_total{{reason=\"{reason}\",remote_name=\"{}\",url=\"{}\"}} {v}",
                    escape(&e.remote_name),
                    escape(&e.url)
                );
            }
        }
        header(
            &mut out,
            "spate_remote_storage_wal_backlog_bytes",
            "gauge",
            "WAL bytes an endpoint has yet to read back and send.",
        );
        for e in eps.iter() {
            let v: u64 = e
                .shards
                .iter()
                .map(|s| s.wal_backlog_bytes.load(Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "spate_remote_storage_wal_backlog_bytes{{remote_name=\"{}\",url=\"{}\"}} {v}",
                escape(&e.remote_name),
                escape(&e.url)
            );
        }
        header(
            &mut out,
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
            "gauge",
            "Newest sample timestamp successfully sent, per endpoint.",
        );
        for e in eps.iter() {
            let v = e
                .shards
                .iter()
                .map(|s| s.highest_sent_ts_ms.load(Relaxed))
                .max()
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "prometheus_remote_storage_queue_highest_sent_timestamp_seconds{{remote_name=\"{}\",url=\"{}\"}} {}",
                escape(&e.remote_name),
                escape(&e.url),
                v as f64 / 1000.0
            );
        }
        header(
            &mut out,
            "prometheus_remote_storage_sent_batch_duration_seconds",
            "histogram",
            "Duration of each send attempt to remote storage.",
        );
        for e in eps.iter() {
            let labels = format!(
                "remote_name=\"{}\",url=\"{}\"",
                escape(&e.remote_name),
                escape(&e.url)
            );
            let mut cumulative = 0u64;
            for (i, le) in BATCH_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(std::iter::once("+Inf".to_string()))
                .enumerate()
            {
                cumulative += e
                    .shards
                    .iter()
                    .map(|s| s.batch_duration_buckets[i].load(Relaxed))
                    .sum::<u64>();
                let _ = writeln!(
                    out,
                    "prometheus_remote_storage_sent_batch_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let sum_us: u64 = e
                .shards
                .iter()
                .map(|s| s.batch_duration_sum_us.load(Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "prometheus_remote_storage_sent_batch_duration_seconds_sum{{{labels}}} {}\nprometheus_remote_storage_sent_batch_duration_seconds_count{{{labels}}} {cumulative}",
                sum_us as f64 / 1e6
            );
        }
        drop(eps);
        process_metrics(&mut out, self.start_time_secs);
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn per_core(
    out: &mut String,
    r: &Registry,
    name: &str,
    kind: &str,
    help: &str,
    f: fn(&CoreStats) -> &AtomicU64,
) {
    header(out, name, kind, help);
    for (i, c) in r.cores.iter().enumerate() {
        let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", f(c).load(Relaxed));
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The standard `process_*` metrics, read from /proc.
fn process_metrics(out: &mut String, start_time: f64) {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
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
