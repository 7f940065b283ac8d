//! The self-metrics table against the stats structs: every counter exported, each metric
//! with one HELP and TYPE.

use super::*;

/// A field as a counter the test can set: plain counters are, the rest are not.
pub(super) trait AsCounter {
    fn counter(&self) -> Option<&AtomicU64> {
        None
    }
}
impl AsCounter for AtomicU64 {
    fn counter(&self) -> Option<&AtomicU64> {
        Some(self)
    }
}
impl AsCounter for Arc<AtomicU64> {
    fn counter(&self) -> Option<&AtomicU64> {
        Some(self)
    }
}
impl AsCounter for Arc<WalStats> {}
impl AsCounter for std::sync::atomic::AtomicI32 {}
impl<const N: usize> AsCounter for Histogram<N> {}
impl AsCounter for Mutex<Vec<(String, usize)>> {}
impl AsCounter for [[AtomicU64; 3]; 7] {}

/// `/metrics` without the process' own metrics, which change between two renders.
fn rendered(r: &Registry) -> String {
    r.render()
        .lines()
        .filter(|l| !l.contains("process_"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_counter_of_the_stats_structs_is_exported() {
    let r = Registry::new(1);
    let shard = r.shard("ep", "http://127.0.0.1:1/write");
    let core = r.cores[0].clone();
    let mut counters: Vec<(String, &AtomicU64)> = Vec::new();
    fn named<'a>(
        prefix: &str,
        list: Vec<(&'static str, &'a AtomicU64)>,
    ) -> Vec<(String, &'a AtomicU64)> {
        list.into_iter()
            .map(|(n, c)| (format!("{prefix}.{n}"), c))
            .collect()
    }
    counters.extend(named("SdStats", r.sd.counters()));
    counters.extend(named("WebStats", r.web.counters()));
    counters.extend(named("CoreStats", core.counters()));
    counters.extend(named("WalStats", core.wal.counters()));
    counters.extend(named("ShardStats", shard.counters()));
    assert!(counters.len() > 40, "found {} counters", counters.len());
    let base = rendered(&r);
    for (name, c) in counters {
        c.store(1, Relaxed);
        assert_ne!(rendered(&r), base, "{name} is not exported by /metrics");
        c.store(0, Relaxed);
    }
}

#[test]
fn each_metric_has_help_and_type_once() {
    let r = Registry::new(2);
    r.shard("ep", "http://127.0.0.1:1/write");
    let out = r.render();
    for m in METRICS {
        assert_eq!(
            out.matches(&format!("# TYPE {} ", m.name)).count(),
            1,
            "{}",
            m.name
        );
        assert!(out.contains(&format!("# HELP {} {}", m.name, m.help)));
    }
    assert!(out.contains("spate_wal_fsyncs_total{core=\"1\"} 0"));
    assert!(out.contains(
        "prometheus_remote_storage_samples_dropped_total{reason=\"too_old\",remote_name=\"ep\",url=\"http://127.0.0.1:1/write\"} 0"
    ));
}
