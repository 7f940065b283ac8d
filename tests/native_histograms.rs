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

/// A target serving `body` as the protobuf exposition.
fn serve(body: Vec<u8>) -> TestServer {
    TestServer::start(move |_, _| (200, common::PROTOBUF, body.clone()))
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
        (200, common::PROTOBUF, body.clone())
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
    let target = serve(payload());
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

/// `native_histogram_bucket_limit` and `native_histogram_min_bucket_factor` reduce the
/// histogram's resolution on its way to the receiver, as Prometheus' scrape appenders do (the
/// cases are Prometheus' own in `src/entry/histogram.rs`; Debian's Prometheus 2.42 predates
/// the min factor, so this checks the arithmetic by hand): schema 1 with buckets -1, 0 and 3
/// (3, 2 and 2 observations) and one negative bucket becomes schema 0 with buckets 0 and 2
/// (5 and 2). A limit it cannot meet even at schema -4 fails the scrape.
#[test]
fn native_histogram_resolution_is_reduced_to_the_jobs_limits() {
    let target = serve(payload());
    let rx = Receiver::start(|_| 200);
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: limit
    scrape_native_histograms: true
    native_histogram_bucket_limit: 3
    static_configs: [{{targets: ["{t}"]}}]
  - job_name: factor
    scrape_native_histograms: true
    native_histogram_min_bucket_factor: 2
    metrics_path: /factor
    static_configs: [{{targets: ["{t}"]}}]
  - job_name: too_many
    scrape_native_histograms: true
    native_histogram_bucket_limit: 1
    metrics_path: /too_many
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: {r}
    send_native_histograms: true
    queue_config: {{batch_send_deadline: 500ms}}
"#,
        t = target.addr,
        r = rx.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let find = |job: &str, name: &str| {
        rx.samples()
            .into_iter()
            .find(|s| s.label("job") == Some(job) && s.label("__name__") == Some(name))
    };
    let up = |job: &str| {
        rx.samples()
            .into_iter()
            .filter(|s| s.label("job") == Some(job) && s.label("__name__") == Some("up"))
            .map(|s| s.value)
            .collect::<Vec<_>>()
    };
    wait_for(
        Duration::from_secs(60),
        "both reduced histograms and two reports of the failing job",
        || {
            (find("limit", "req_seconds").is_some()
                && find("factor", "req_seconds").is_some()
                && up("too_many").len() >= 2)
                .then_some(())
        },
    );
    let span = |offset, length| spate::entry::proto::BucketSpan { offset, length };
    for job in ["limit", "factor"] {
        let h = find(job, "req_seconds").unwrap().histogram.unwrap();
        assert_eq!(h.schema, 0, "{job}");
        assert_eq!(h.positive_spans, vec![span(0, 1), span(1, 1)], "{job}");
        assert_eq!(h.positive_deltas, vec![5, -3], "{job}");
        assert_eq!(h.negative_spans, vec![span(0, 1)], "{job}");
        assert_eq!(h.negative_deltas, vec![2], "{job}");
        // The rest is untouched.
        assert_eq!(
            (h.count_int, h.sum, h.zero_count_int, h.zero_threshold),
            (Some(10), 5.5, Some(1), 0.001),
            "{job}"
        );
        assert_eq!(up(job).first(), Some(&1.0));
    }
    // The job whose histogram cannot fit fails whole: up 0, nothing of it but its report.
    assert!(
        up("too_many").iter().all(|v| *v == 0.0),
        "{:?}",
        up("too_many")
    );
    assert!(find("too_many", "plain_total").is_none());
    let (_, targets) = common::http_get(&spate.web, "/api/v1/targets").unwrap();
    assert!(
        targets.contains("histogram bucket limit exceeded"),
        "{targets}"
    );
    assert!(
        spate.metric("prometheus_target_scrapes_exceeded_native_histogram_bucket_limit_total")
            >= 2.0
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
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

/// What a Remote Write 2.0 receiver got: each series' labels and histograms.
type V2Histograms = Arc<Mutex<Vec<(Vec<(String, String)>, Vec<spate::entry::proto::Histogram>)>>>;

/// `convert_classic_histograms_to_nhcb`: a text exposition's classic histograms arrive as
/// native histograms with custom buckets over Remote Write 2.0 (as Prometheus 3 converts
/// them: per-bucket counts, bounds as custom values, empty edge buckets compacted away), their
/// classic series only with `always_scrape_classic_histograms`; an endpoint speaking 1.0
/// drops them and counts them, as Prometheus does.
#[test]
fn classic_histograms_become_native_histograms_with_custom_buckets() {
    let body = "# TYPE req_seconds histogram\nreq_seconds_bucket{path=\"/a\",le=\"0.1\"} 1\nreq_seconds_bucket{path=\"/a\",le=\"0.5\"} 3\nreq_seconds_bucket{path=\"/a\",le=\"+Inf\"} 4\nreq_seconds_sum{path=\"/a\"} 1.25\nreq_seconds_count{path=\"/a\"} 4\nreq_seconds_bucket{path=\"/b\",le=\"0.1\"} 0\nreq_seconds_bucket{path=\"/b\",le=\"0.5\"} 2\nreq_seconds_bucket{path=\"/b\",le=\"+Inf\"} 2\nreq_seconds_sum{path=\"/b\"} 0.5\nreq_seconds_count{path=\"/b\"} 2\n# TYPE plain_total counter\nplain_total 5\n";
    let target =
        TestServer::start(move |_, _| (200, "text/plain; version=0.0.4", body.as_bytes().to_vec()));
    let got: V2Histograms = Default::default();
    let sink = got.clone();
    let v2 = TestServer::start(move |_, body| {
        let req = spate::entry::proto::v2::decode_request(body).unwrap();
        let sym = |r: u32| req.symbols[r as usize].clone();
        let mut g = sink.lock().unwrap();
        let mut written = 0;
        for t in &req.timeseries {
            let labels = t
                .labels_refs
                .chunks(2)
                .map(|p| (sym(p[0]), sym(p[1])))
                .collect();
            written += t.histograms.len();
            g.push((labels, t.histograms.clone()));
        }
        let header = format!("header:X-Prometheus-Remote-Write-Histograms-Written: {written}");
        (200, &*Box::leak(header.into_boxed_str()), Vec::new())
    });
    let v1 = Receiver::start(|_| 200);
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: nhcb
    convert_classic_histograms_to_nhcb: true
    static_configs: [{{targets: ["{t}"]}}]
  - job_name: both
    convert_classic_histograms_to_nhcb: true
    always_scrape_classic_histograms: true
    metrics_path: /both
    static_configs: [{{targets: ["{t}"]}}]
remote_write:
  - url: http://{v2}/write
    protobuf_message: io.prometheus.write.v2.Request
    send_native_histograms: true
    queue_config: {{batch_send_deadline: 200ms}}
  - url: {v1}
    send_native_histograms: true
    queue_config: {{batch_send_deadline: 200ms}}
"#,
        t = target.addr,
        v2 = v2.addr,
        v1 = v1.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let histogram = |job: &str, path: &str| {
        got.lock()
            .unwrap()
            .iter()
            .find(|(l, h)| {
                !h.is_empty()
                    && l.iter().any(|(k, v)| k == "job" && v == job)
                    && l.iter().any(|(k, v)| k == "path" && v == path)
            })
            .cloned()
    };
    wait_for(Duration::from_secs(60), "converted histograms", || {
        (histogram("nhcb", "/a").is_some()
            && histogram("nhcb", "/b").is_some()
            && histogram("both", "/a").is_some()
            && !v1.samples().is_empty())
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let dropped = spate.metric(
        "prometheus_remote_storage_histograms_dropped_total{reason=\"nhcb_in_rw1_not_supported\"",
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let (labels, h) = histogram("nhcb", "/a").unwrap();
    let name = labels.iter().find(|(k, _)| k == "__name__").unwrap();
    assert_eq!(name.1, "req_seconds", "the base name, no suffix");
    assert!(labels.iter().all(|(k, _)| k != "le"));
    let h = &h[0];
    assert_eq!((h.schema, h.count_int, h.sum), (-53, Some(4), 1.25));
    assert_eq!(h.custom_values, [0.1, 0.5]);
    assert_eq!(
        h.positive_spans,
        [spate::entry::proto::BucketSpan {
            offset: 0,
            length: 3
        }]
    );
    assert_eq!(h.positive_deltas, [1, 1, -1]);
    // An empty first bucket is compacted away.
    let (_, h) = histogram("nhcb", "/b").unwrap();
    assert_eq!(
        h[0].positive_spans,
        [spate::entry::proto::BucketSpan {
            offset: 1,
            length: 1
        }]
    );
    assert_eq!(h[0].positive_deltas, [2]);
    // Classic series only where kept; the counter as it is.
    let names = |job: &str| -> std::collections::BTreeSet<String> {
        got.lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.iter().any(|(k, v)| k == "job" && v == job))
            .filter_map(|(l, _)| {
                l.iter()
                    .find(|(k, _)| k == "__name__")
                    .map(|(_, v)| v.clone())
            })
            .collect()
    };
    assert!(!names("nhcb").contains("req_seconds_bucket"));
    assert!(names("nhcb").contains("plain_total"));
    assert!(names("both").contains("req_seconds_bucket"));
    // Remote Write 1.0 gets no native histogram with custom buckets, and counts them.
    assert!(v1.samples().iter().all(|s| s.histogram.is_none()));
    assert!(dropped > 0.0, "dropped {dropped}");
    // A converted histogram counts as one scraped sample, as in Prometheus.
    let scraped: Vec<f64> = v1
        .samples()
        .iter()
        .filter(|s| {
            s.label("job") == Some("nhcb") && s.label("__name__") == Some("scrape_samples_scraped")
        })
        .map(|s| s.value)
        .collect();
    assert!(
        !scraped.is_empty() && scraped.iter().all(|v| *v == 3.0),
        "{scraped:?}"
    );
}
