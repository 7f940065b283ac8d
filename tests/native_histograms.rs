//! Native histograms end to end: scraped in the protobuf format with
//! `scrape_native_histograms`, forwarded field for field to endpoints with
//! `send_native_histograms`, withheld from the others; classic series kept only with
//! `always_scrape_classic_histograms`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Receiver, Spate, TestServer, wait_for};
use prost::Message;
use spate::remote::proto::BucketSpan;

#[derive(Clone, PartialEq, prost::Message)]
struct MetricFamily {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, tag = "3")]
    r#type: i32,
    #[prost(message, repeated, tag = "4")]
    metric: Vec<Metric>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Metric {
    #[prost(message, repeated, tag = "1")]
    label: Vec<LabelPair>,
    #[prost(message, optional, tag = "3")]
    counter: Option<Value>,
    #[prost(message, optional, tag = "7")]
    histogram: Option<Histogram>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Value {
    #[prost(double, tag = "1")]
    value: f64,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Histogram {
    #[prost(uint64, optional, tag = "1")]
    sample_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    sample_sum: Option<f64>,
    #[prost(message, repeated, tag = "3")]
    bucket: Vec<Bucket>,
    #[prost(sint32, optional, tag = "5")]
    schema: Option<i32>,
    #[prost(double, optional, tag = "6")]
    zero_threshold: Option<f64>,
    #[prost(uint64, optional, tag = "7")]
    zero_count: Option<u64>,
    #[prost(message, repeated, tag = "9")]
    negative_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "10")]
    negative_delta: Vec<i64>,
    #[prost(message, repeated, tag = "12")]
    positive_span: Vec<BucketSpan>,
    #[prost(sint64, repeated, packed = "false", tag = "13")]
    positive_delta: Vec<i64>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Bucket {
    #[prost(uint64, optional, tag = "1")]
    cumulative_count: Option<u64>,
    #[prost(double, optional, tag = "2")]
    upper_bound: Option<f64>,
}

fn payload() -> Vec<u8> {
    let hist = Histogram {
        sample_count: Some(10),
        sample_sum: Some(5.5),
        bucket: vec![
            Bucket {
                cumulative_count: Some(4),
                upper_bound: Some(0.5),
            },
            Bucket {
                cumulative_count: Some(9),
                upper_bound: Some(1.0),
            },
        ],
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
    };
    let families = [
        MetricFamily {
            name: "req_seconds".into(),
            r#type: 4,
            metric: vec![Metric {
                label: vec![LabelPair {
                    name: "handler".into(),
                    value: "/".into(),
                }],
                histogram: Some(hist),
                ..Default::default()
            }],
        },
        MetricFamily {
            name: "plain_total".into(),
            r#type: 0,
            metric: vec![Metric {
                counter: Some(Value { value: 3.0 }),
                ..Default::default()
            }],
        },
    ];
    let mut body = Vec::new();
    for f in families {
        f.encode_length_delimited(&mut body).unwrap();
    }
    body
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
        vec![BucketSpan {
            offset: 0,
            length: 1
        }]
    );
    assert_eq!(h.negative_deltas, vec![2]);
    assert_eq!(
        h.positive_spans,
        vec![
            BucketSpan {
                offset: -1,
                length: 2
            },
            BucketSpan {
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
