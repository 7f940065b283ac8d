//! Native histograms end to end: scraped in the protobuf format with
//! `scrape_native_histograms`, forwarded field for field to endpoints with
//! `send_native_histograms`, withheld from the others; classic series kept only with
//! `always_scrape_classic_histograms`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Receiver, Spate, TestServer, wait_for};
use spate::exposition::client_model::{
    Bucket, BucketSpan, Histogram, LabelPair, Metric, MetricFamily, Value, encode_delimited,
    metric_type,
};

fn payload() -> Vec<u8> {
    let bucket = |count, upper| Bucket {
        cumulative_count: Some(count),
        upper_bound: Some(upper),
        cumulative_count_float: None,
        exemplar: None,
    };
    let hist = Histogram {
        sample_count: Some(10),
        sample_sum: Some(5.5),
        bucket: vec![bucket(4, 0.5), bucket(9, 1.0)],
        schema: Some(1),
        zero_threshold: Some(0.001),
        zero_count: Some(1),
        negative_span: vec![BucketSpan {
            offset: 0,
            length: 1,
        }],
        negative_delta: vec![2],
        positive_span: vec![
            BucketSpan {
                offset: -1,
                length: 2,
            },
            BucketSpan {
                offset: 2,
                length: 1,
            },
        ],
        positive_delta: vec![3, -1, 0],
        ..Default::default()
    };
    encode_delimited(&[
        MetricFamily {
            name: "req_seconds".into(),
            r#type: metric_type::HISTOGRAM,
            metric: vec![Metric {
                label: vec![LabelPair {
                    name: "handler".into(),
                    value: "/".into(),
                }],
                histogram: Some(hist),
                ..Default::default()
            }],
            ..Default::default()
        },
        MetricFamily {
            name: "plain_total".into(),
            r#type: metric_type::COUNTER,
            metric: vec![Metric {
                counter: Some(Value {
                    value: 3.0,
                    exemplar: None,
                    created_timestamp: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
    ])
}

#[test]
fn native_histograms_are_scraped_and_forwarded() {
    let body = payload();
    let accepts = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = accepts.clone();
    let target = TestServer::start(move |headers, _| {
        seen.lock()
            .unwrap()
            .push(headers.get("accept").cloned().unwrap_or_default());
        (
            200,
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            body.clone(),
        )
    });
    let (native_rx, plain_rx) = (Receiver::start(|_| 200), Receiver::start(|_| 200));
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: native
    scrape_native_histograms: true
    static_configs: [{{targets: ["{t}"]}}]
  - job_name: both
    scrape_native_histograms: true
    always_scrape_classic_histograms: true
    metrics_path: /both
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: {n}
    send_native_histograms: true
    queue_config: {{batch_send_deadline: 500ms}}
  - url: {p}
    queue_config: {{batch_send_deadline: 500ms}}
"#,
        t = target.addr,
        n = native_rx.url(),
        p = plain_rx.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let find = |rx: &Receiver, job: &str, name: &str| {
        rx.samples()
            .into_iter()
            .find(|s| s.label("job") == Some(job) && s.label("__name__") == Some(name))
    };
    wait_for(
        Duration::from_secs(60),
        "histograms and counters at both receivers",
        || {
            (find(&native_rx, "native", "req_seconds").is_some()
                && find(&native_rx, "both", "req_seconds").is_some()
                && find(&plain_rx, "native", "plain_total").is_some())
            .then_some(())
        },
    );
    // Prometheus' counters keep kinds apart: what each endpoint reports as sent matches
    // what its receiver got, samples and histograms each (read at a quiet moment between
    // sends, when both agree).
    for (rx, wants_histograms) in [(&native_rx, true), (&plain_rx, false)] {
        let counted = |name: &str| -> u64 {
            let (_, body) = common::http_get(&spate.web, "/metrics").unwrap();
            let url = format!("url=\"{}\"", rx.url());
            body.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&url))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let received = |rx: &Receiver| {
            let all = rx.samples();
            let h = all.iter().filter(|s| s.histogram.is_some()).count() as u64;
            (all.len() as u64 - h, h)
        };
        let (samples, histograms) = wait_for(
            Duration::from_secs(60),
            "the sent counters to match the receiver",
            || {
                let before = (
                    counted("prometheus_remote_storage_samples_total"),
                    counted("prometheus_remote_storage_histograms_total"),
                );
                let got = received(rx);
                let after = (
                    counted("prometheus_remote_storage_samples_total"),
                    counted("prometheus_remote_storage_histograms_total"),
                );
                (before == got && got == after).then_some(got)
            },
        );
        assert!(samples > 0);
        assert_eq!(histograms > 0, wants_histograms, "{samples} {histograms}");
        assert_eq!(
            counted("prometheus_remote_storage_histograms_failed_total"),
            0
        );
    }
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let got = find(&native_rx, "native", "req_seconds").unwrap();
    assert_eq!(got.label("handler"), Some("/"));
    let h = got.histogram.expect("a native histogram");
    assert_eq!(h.count_int, Some(10));
    assert_eq!(h.sum, 5.5);
    assert_eq!(h.schema, 1);
    assert_eq!(h.zero_threshold, 0.001);
    assert_eq!(h.zero_count_int, Some(1));
    assert_eq!(
        h.negative_spans,
        vec![spate::entry::proto::BucketSpan {
            offset: 0,
            length: 1
        }]
    );
    assert_eq!(h.negative_deltas, vec![2]);
    assert_eq!(
        h.positive_spans,
        vec![
            spate::entry::proto::BucketSpan {
                offset: -1,
                length: 2
            },
            spate::entry::proto::BucketSpan {
                offset: 2,
                length: 1
            }
        ]
    );
    assert_eq!(h.positive_deltas, vec![3, -1, 0]);
    assert_eq!(h.timestamp, got.ts);
    assert!(h.timestamp > 0);

    // Classic series only where asked for.
    assert!(find(&native_rx, "native", "req_seconds_bucket").is_none());
    let bucket = native_rx.samples().into_iter().find(|s| {
        s.label("job") == Some("both")
            && s.label("__name__") == Some("req_seconds_bucket")
            && s.label("le") == Some("0.5")
    });
    assert_eq!(bucket.map(|b| b.value), Some(4.0));
    // The endpoint without send_native_histograms gets everything else, and no histogram.
    assert!(plain_rx.samples().iter().all(|s| s.histogram.is_none()));
    assert!(find(&plain_rx, "both", "req_seconds_count").is_some());
    // Protobuf is asked for first.
    let accepts = accepts.lock().unwrap();
    assert!(
        accepts
            .iter()
            .all(|a| a.starts_with("application/vnd.google.protobuf;")),
        "{accepts:?}"
    );
}

#[test]
fn forwards_the_same_histogram_as_prometheus() {
    let dir = common::TempDir::new("nh-diff");
    let Some(prom_bin) = common::require_program("prometheus", "prometheus") else {
        return;
    };
    let body = payload();
    let target = TestServer::start(move |_, _| {
        (
            200,
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            body.clone(),
        )
    });
    let (prom_rx, spate_rx) = (Receiver::start(|_| 200), Receiver::start(|_| 200));
    // Prometheus 2.42 enables native histograms with a feature flag, not a config field.
    let config = |url: &str, field: &str| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nh\n{field}    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {url}\n    send_native_histograms: true\n    queue_config: {{batch_send_deadline: 500ms}}\n",
            target.addr
        )
    };
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config(&prom_rx.url(), "")).unwrap();
    let web = format!("127.0.0.1:{}", common::free_port());
    let _prom = common::Proc::spawn(
        "prometheus-agent",
        std::process::Command::new(prom_bin)
            .arg("--enable-feature=agent,native-histograms")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.agent.path={}",
                dir.path().join("agent").display()
            ))
            .arg(format!("--web.listen-address={web}")),
        dir.path(),
    );
    let mut spate = Spate::start(
        &config(&spate_rx.url(), "    scrape_native_histograms: true\n"),
        &[],
    );
    let histogram = |rx: &Receiver| {
        rx.samples()
            .into_iter()
            .find(|s| s.label("__name__") == Some("req_seconds"))
            .and_then(|s| s.histogram)
    };
    let (mut p, mut s) = wait_for(
        Duration::from_secs(90),
        "a native histogram from both agents",
        || Some((histogram(&prom_rx)?, histogram(&spate_rx)?)),
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    // Scrape times differ; everything else must not.
    p.timestamp = 0;
    s.timestamp = 0;
    assert_eq!(s, p, "spate's histogram differs from Prometheus'");
}

/// The corpus file `tests/data/exposition/native_histograms.pb` is this test's payload (used by
/// the allocation and differential tests). `SPATE_WRITE_CORPUS=1` rewrites it.
#[test]
fn corpus_payload_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/exposition/native_histograms.pb");
    if std::env::var("SPATE_WRITE_CORPUS").as_deref() == Ok("1") {
        std::fs::write(&path, payload()).unwrap();
    }
    assert_eq!(
        std::fs::read(&path).expect("corpus file"),
        payload(),
        "regenerate with SPATE_WRITE_CORPUS=1"
    );
}
