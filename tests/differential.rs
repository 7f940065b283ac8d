//! Differential test against Prometheus itself: Prometheus agent and spate scrape the same
//! corpus payloads with the same configuration, each forwards to its own recording receiver,
//! and the series and values they forward must be identical. A difference is a bug in spate
//! unless docs/compatibility.md documents it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Receiver, Spate, TempDir, TestServer, free_port, require_program, wait_for};

/// Report series differ by design (spate sends fewer, durations differ); everything else must
/// match, `up` included: a payload one agent rejects, the other must reject too.
const REPORT_SERIES: &[&str] = &[
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

fn corpus() -> Vec<(String, &'static str, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/exposition");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("prom") => "text/plain; version=0.0.4; charset=utf-8",
            Some("om") => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Some("pb") => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
            }
            _ => continue,
        };
        let stem = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        out.push((stem, content_type, std::fs::read(&path).unwrap()));
    }
    out.sort();
    out
}

/// Where the oracle (Debian's Prometheus 2.42) and Prometheus 3, which spate follows, differ:
/// these jobs are checked against Prometheus 3's behaviour instead.
const PROMETHEUS_3_DIFFERENCES: &[(&str, &str)] = &[
    (
        "edge_ws_leading_prom",
        "Prometheus 3 skips blanks at the start of a line; 2.42 rejects the scrape",
    ),
    (
        "edge_om_exemplar_gauge_om",
        "Prometheus >= 2.43 accepts exemplars on any series; 2.42 only on _total and _bucket",
    ),
    (
        "native_histograms_pb",
        "without native ingestion Prometheus 3 keeps a native histogram's classic series; 2.42 drops the histogram",
    ),
];

/// Where spate differs from Prometheus agent on purpose (docs/compatibility.md): these jobs
/// are checked for spate's behaviour instead.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[(
    "edge_ts_prom",
    "Prometheus agent's remote write skips samples timestamped before the agent started; spate forwards them",
)];

/// Histogram and summary families declared by `# TYPE` lines, per payload.
fn declared_types(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .filter(|(_, t)| t == "histogram" || t == "summary")
        .collect()
}

/// Prometheus 3 stores `le` (histograms) and `quantile` (summaries) in canonical float form
/// (`le="1"` becomes `le="1.0"`); 2.42 keeps them as written. Applied to the oracle's output.
fn as_prometheus_3(labels: &mut [(String, String)], types: &[(String, String)]) {
    let name = labels
        .iter()
        .find(|(n, _)| n == "__name__")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let histogram = types
        .iter()
        .any(|(f, t)| t == "histogram" && name == format!("{f}_bucket"));
    let summary = types.iter().any(|(f, t)| t == "summary" && name == *f);
    for (n, v) in labels.iter_mut() {
        if (n == "le" && histogram) || (n == "quantile" && summary) {
            let mut out = Vec::new();
            spate::exposition::normalize_float_label(v.as_bytes(), &mut out);
            *v = String::from_utf8(out).unwrap();
        }
    }
}

/// Series (labels without `instance`) → the newest value forwarded, per job.
type Forwarded = BTreeMap<String, BTreeMap<Vec<(String, String)>, String>>;

fn forwarded(
    r: &Receiver,
    oracle_types: Option<&BTreeMap<String, Vec<(String, String)>>>,
) -> Forwarded {
    let mut newest: BTreeMap<Vec<(String, String)>, (i64, f64)> = BTreeMap::new();
    for s in r.samples() {
        let name = s.label("__name__").unwrap_or_default();
        if REPORT_SERIES.contains(&name) {
            continue;
        }
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "instance")
            .cloned()
            .collect();
        if let Some(types) = oracle_types {
            let job = labels
                .iter()
                .find(|(n, _)| n == "job")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            if let Some(t) = types.get(job) {
                as_prometheus_3(&mut labels, t);
            }
        }
        let e = newest.entry(labels).or_insert((i64::MIN, 0.0));
        if s.ts > e.0 {
            *e = (s.ts, s.value);
        }
    }
    let mut out = Forwarded::new();
    for (labels, (_, v)) in newest {
        let job = labels
            .iter()
            .find(|(n, _)| n == "job")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        // Compare bit patterns via their text, so NaN equals NaN.
        let value = if v.is_nan() {
            format!("NaN({:#x})", v.to_bits())
        } else {
            format!("{v:?}")
        };
        out.entry(job).or_default().insert(labels, value);
    }
    out
}

#[test]
fn forwards_the_same_series_and_values_as_prometheus_agent() {
    let dir = TempDir::new("diff");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let payloads = Arc::new(corpus());
    let served = payloads.clone();
    let server = TestServer::start(move |headers, _| {
        let path = headers.get(":path").cloned().unwrap_or_default();
        match served
            .iter()
            .find(|(stem, _, _)| path == format!("/{stem}"))
        {
            Some((_, ct, body)) => (200, *ct, body.clone()),
            None => (404, "text/plain", b"not found".to_vec()),
        }
    });
    let jobs: String = payloads
        .iter()
        .map(|(stem, _, _)| {
            format!("  - job_name: {stem}\n    metrics_path: /{stem}\n    static_configs:\n      - targets: ['{}']\n", server.addr)
        })
        .collect();
    let config = |url: &str| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}remote_write:\n  - url: {url}\n    queue_config:\n      batch_send_deadline: 500ms\n"
        )
    };

    let prom_rx = Receiver::start(|_| 200);
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config(&prom_rx.url())).unwrap();
    let _prom =
        common::prometheus_agent(&prom_bin, &dir, &cfg, &format!("127.0.0.1:{}", free_port()));
    let spate_rx = Receiver::start(|_| 200);
    let mut spate = Spate::start(&config(&spate_rx.url()), &[]);

    // Wait until both forwarded every job, twice over, then compare.
    let ready = |r: &Receiver| {
        let f = forwarded(r, None);
        payloads
            .iter()
            .all(|(stem, _, _)| f.get(stem).is_some_and(|s| !s.is_empty()))
    };
    wait_for(
        Duration::from_secs(120),
        "both agents to forward every payload",
        || (ready(&prom_rx) && ready(&spate_rx)).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    let types: BTreeMap<String, Vec<(String, String)>> = payloads
        .iter()
        .map(|(stem, _, body)| (stem.clone(), declared_types(body)))
        .collect();
    let (prom, ours) = (
        forwarded(&prom_rx, Some(&types)),
        forwarded(&spate_rx, None),
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let mut report = String::new();
    for (stem, _, _) in payloads.iter() {
        let (p, s) = (&prom[stem], &ours[stem]);
        if PROMETHEUS_3_DIFFERENCES.iter().any(|(job, _)| job == stem) {
            // Prometheus 3 accepts these payloads: spate must scrape them successfully.
            let up = s
                .iter()
                .find(|(k, _)| k.iter().any(|(n, v)| n == "__name__" && v == "up"))
                .map(|(_, v)| v.clone());
            assert_eq!(
                up.as_deref(),
                Some("1.0"),
                "{stem}: spate must accept it as Prometheus 3 does"
            );
            continue;
        }
        if DELIBERATE_DIFFERENCES.iter().any(|(job, _)| job == stem) {
            let sample = s
                .iter()
                .find(|(k, _)| k.iter().any(|(n, v)| n == "__name__" && v == "edge_ts"));
            assert_eq!(
                sample.map(|(_, v)| v.as_str()),
                Some("1.0"),
                "{stem}: spate forwards the timestamped sample"
            );
            continue;
        }
        let (pk, sk): (BTreeSet<_>, BTreeSet<_>) = (p.keys().collect(), s.keys().collect());
        for missing in pk.difference(&sk) {
            report.push_str(&format!("{stem}: spate lacks {missing:?}\n"));
        }
        for extra in sk.difference(&pk) {
            report.push_str(&format!("{stem}: spate adds {extra:?}\n"));
        }
        for k in pk.intersection(&sk) {
            if p[*k] != s[*k] {
                report.push_str(&format!(
                    "{stem}: {k:?}: prometheus {} spate {}\n",
                    p[*k], s[*k]
                ));
            }
        }
    }
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}
