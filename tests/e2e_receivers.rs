//! End to end with real servers from Debian's packages: spate scrapes node_exporter and forwards
//! to Prometheus (remote-write receiver) and to VictoriaMetrics; the series are queried back.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    NodeExporter, Proc, Spate, TempDir, free_port, http_get, require_program, start_node_exporter,
    urlencode, wait_for,
};
use serde_json::Value;

/// The value node_exporter itself serves for `node_exporter_build_info`, with its labels.
fn served_build_info(addr: &str) -> (String, f64) {
    let (_, body) = http_get(addr, "/metrics").expect("node_exporter /metrics");
    let line = body
        .lines()
        .find(|l| l.starts_with("node_exporter_build_info{"))
        .expect("build info line");
    let (series, value) = line.rsplit_once(' ').unwrap();
    (series.to_string(), value.parse().unwrap())
}

fn spate_config(node: &str, receiver_url: &str) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["{node}"]
remote_write:
  - url: {receiver_url}
    queue_config:
      batch_send_deadline: 500ms
"#
    )
}

/// Prometheus (Debian's `prometheus`) as a remote-write receiver on a free port, ready; with
/// `extra` flags. Returns the process and its address.
fn start_prometheus_receiver(
    dir: &TempDir,
    bin: &std::path::Path,
    extra: &[&str],
) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let proc = Proc::spawn(
        "prometheus",
        Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .args(extra),
        dir.path(),
    );
    wait_for(Duration::from_secs(60), "Prometheus to be ready", || {
        http_get(&addr, "/-/ready").filter(|(c, _)| *c == 200)
    });
    (proc, addr)
}

/// Runs an instant query; returns the result vector once it is non-empty.
fn query(addr: &str, q: &str) -> Option<Vec<Value>> {
    let (code, body) = http_get(addr, &format!("/api/v1/query?query={}", urlencode(q)))?;
    if code != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let result = v["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

fn sample_value(v: &Value) -> f64 {
    v["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Checks what a receiver holds against what node_exporter serves.
fn check_receiver(receiver: &str, node: &NodeExporter) {
    let instance = &node.addr;
    let up = wait_for(
        Duration::from_secs(90),
        "up{job=\"node\"} at the receiver",
        || {
            query(
                receiver,
                &format!("up{{job=\"node\",instance=\"{instance}\"}}"),
            )
        },
    );
    assert_eq!(sample_value(&up[0]), 1.0, "up must be 1: {up:?}");

    let build = wait_for(
        Duration::from_secs(60),
        "node_exporter_build_info at the receiver",
        || {
            query(
                receiver,
                &format!("node_exporter_build_info{{job=\"node\",instance=\"{instance}\"}}"),
            )
        },
    );
    let (served_series, served_value) = served_build_info(&node.addr);
    assert_eq!(sample_value(&build[0]), served_value);
    // Every label node_exporter serves arrives unchanged, next to job and instance.
    let metric = build[0]["metric"].as_object().unwrap();
    for pair in served_series
        .trim_start_matches("node_exporter_build_info{")
        .trim_end_matches('}')
        .split("\",")
    {
        let (k, v) = pair.split_once("=\"").unwrap();
        assert_eq!(
            metric.get(k).and_then(Value::as_str),
            Some(v.trim_end_matches('"')),
            "label {k}"
        );
    }
    assert_eq!(metric.get("job").and_then(Value::as_str), Some("node"));

    // node_exporter's series arrive in bulk, not just a few.
    let count = wait_for(Duration::from_secs(60), "node series count", || {
        query(
            receiver,
            &format!("count({{job=\"node\",instance=\"{instance}\"}})"),
        )
        .filter(|r| sample_value(&r[0]) > 200.0)
    });
    assert!(sample_value(&count[0]) > 200.0);
    for name in ["scrape_duration_seconds", "scrape_samples_scraped"] {
        wait_for(Duration::from_secs(30), name, || {
            query(receiver, &format!("{name}{{job=\"node\"}}"))
        });
    }
}

/// Runs spate from node_exporter to the receiver at `addr`, checks what arrived, stops spate.
fn forward_and_check(addr: &str, node: &NodeExporter) {
    let mut spate = Spate::start(
        &spate_config(&node.addr, &format!("http://{addr}/api/v1/write")),
        &[],
    );
    check_receiver(addr, node);
    assert_eq!(
        spate.metric("prometheus_remote_storage_samples_failed_total"),
        0.0,
        "{}",
        spate.proc.log_text()
    );
    assert!(spate.proc.terminate(Duration::from_secs(90)).success());
}

#[test]
fn node_exporter_to_prometheus() {
    let dir = TempDir::new("e2e-prom");
    let Some(node) = start_node_exporter(&dir) else {
        return;
    };
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let (_prom, prom_addr) = start_prometheus_receiver(&dir, &prom_bin, &[]);

    forward_and_check(&prom_addr, &node);
}

#[test]
fn node_exporter_to_victoriametrics() {
    let dir = TempDir::new("e2e-vm");
    let Some(node) = start_node_exporter(&dir) else {
        return;
    };
    let Some((_vm, vm_addr)) = common::start_victoriametrics(&dir, &[]) else {
        return;
    };
    forward_and_check(&vm_addr, &node);
}

#[test]
fn exemplars_reach_prometheus_with_send_exemplars() {
    let dir = TempDir::new("e2e-exemplars");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    // An OpenMetrics target whose counter carries an exemplar stamped now.
    let target = common::TestServer::start(|_, _| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let body = format!(
            "# TYPE req counter\nreq_total{{path=\"/a\"}} 5 # {{trace_id=\"abc123\"}} 1.5 {}.{:03}\n# EOF\n",
            now / 1000,
            now % 1000
        );
        (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body.into_bytes(),
        )
    });
    let (_prom, prom_addr) =
        start_prometheus_receiver(&dir, &prom_bin, &["--enable-feature=exemplar-storage"]);
    let (mut spate, series) =
        exemplar_at_prometheus(&target.addr.to_string(), &prom_addr, "req_total", "abc123");
    assert_eq!(series["seriesLabels"]["path"], "/a", "{series}");
    assert_eq!(series["seriesLabels"]["job"], "app", "{series}");
    let e = &series["exemplars"][0];
    assert_eq!(e["labels"]["trace_id"], "abc123", "{series}");
    assert_eq!(e["value"], "1.5", "{series}");
    // Exemplars are counted apart from samples, as Prometheus counts them.
    wait_for(Duration::from_secs(30), "exemplars counted as sent", || {
        (spate.metric("prometheus_remote_storage_exemplars_total") > 0.0
            && spate.metric("prometheus_remote_storage_exemplars_in_total") > 0.0)
            .then_some(())
    });
    assert!(
        spate.metric("prometheus_remote_storage_samples_total")
            > spate.metric("prometheus_remote_storage_exemplars_total"),
        "samples (req_total and the report series) are counted as samples"
    );
    assert_eq!(
        spate.metric("prometheus_remote_storage_histograms_total"),
        0.0
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// Runs spate from `target` to the Prometheus at `prom_addr` with `send_exemplars`, until
/// `/api/v1/query_exemplars` for `query` shows `needle`; returns spate and the first series.
fn exemplar_at_prometheus(
    target: &str,
    prom_addr: &str,
    query: &str,
    needle: &str,
) -> (Spate, Value) {
    let cfg = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: http://{prom_addr}/api/v1/write
    send_exemplars: true
    queue_config:
      batch_send_deadline: 500ms
"#
    );
    let spate = Spate::start(&cfg, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        urlencode(query),
        now - 600,
        now + 600
    );
    let body = wait_for(
        Duration::from_secs(60),
        "the exemplar in Prometheus",
        || {
            http_get(prom_addr, &path)
                .filter(|(c, b)| *c == 200 && b.contains(needle))
                .map(|(_, b)| b)
        },
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    (spate, v["data"][0].clone())
}

/// A `prometheus_client` (Python) application serving OpenMetrics with exemplars.
const PYTHON_APP: &str = r#"
import sys, time
from prometheus_client import Counter, Histogram, start_http_server
requests = Counter("app_requests", "Requests handled.", ["path"])
latency = Histogram("app_latency_seconds", "Latency.", buckets=[0.1, 1.0])
start_http_server(int(sys.argv[1]), addr="127.0.0.1")
i = 0
while True:
    i += 1
    requests.labels(path="/a").inc(1, exemplar={"trace_id": "py%d" % i})
    latency.observe(0.5, exemplar={"trace_id": "lat%d" % i})
    time.sleep(0.2)
"#;

#[test]
fn exemplars_from_python_prometheus_client_reach_prometheus_intact() {
    let dir = TempDir::new("e2e-python");
    let Some(python) =
        common::require_python_module("prometheus_client", "python3-prometheus-client")
    else {
        return;
    };
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let app_addr = format!("127.0.0.1:{}", free_port());
    let port = app_addr.rsplit(':').next().unwrap().to_string();
    let _app = Proc::spawn(
        "python-app",
        Command::new(python).args(["-c", PYTHON_APP, &port]),
        dir.path(),
    );
    wait_for(Duration::from_secs(30), "the Python app to serve", || {
        http_get(&app_addr, "/metrics").filter(|(c, _)| *c == 200)
    });
    let (_prom, prom_addr) =
        start_prometheus_receiver(&dir, &prom_bin, &["--enable-feature=exemplar-storage"]);
    let (mut spate, series) =
        exemplar_at_prometheus(&app_addr, &prom_addr, "app_requests_total", "\"py");
    assert_eq!(series["seriesLabels"]["path"], "/a", "{series}");
    let e = &series["exemplars"][0];
    assert!(
        e["labels"]["trace_id"]
            .as_str()
            .is_some_and(|t| t.starts_with("py")),
        "{series}"
    );
    assert_eq!(e["value"], "1", "{series}");
    // The histogram bucket's exemplar too, on the bucket it was observed in.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!(
        "/api/v1/query_exemplars?query={}&start={}&end={}",
        urlencode("app_latency_seconds_bucket"),
        now - 600,
        now + 600
    );
    let body = wait_for(Duration::from_secs(60), "the bucket exemplar", || {
        http_get(&prom_addr, &path)
            .filter(|(c, b)| *c == 200 && b.contains("lat"))
            .map(|(_, b)| b)
    });
    let v: Value = serde_json::from_str(&body).unwrap();
    let bucket = &v["data"][0];
    assert_eq!(bucket["seriesLabels"]["le"], "1.0", "{body}");
    assert_eq!(bucket["exemplars"][0]["value"], "0.5", "{body}");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// spate configured for Remote Write 2.0 against receivers that know only 1.0: it falls back
/// and the data arrives.
fn v2_config(node: &str, url: &str) -> String {
    spate_config(node, url).replace(
        "    queue_config:",
        "    protobuf_message: io.prometheus.write.v2.Request\n    queue_config:",
    )
}

#[test]
fn remote_write_2_falls_back_to_1_with_prometheus_and_victoriametrics() {
    let dir = TempDir::new("e2e-v2-fallback");
    let Some(node) = start_node_exporter(&dir) else {
        return;
    };
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let (_prom, prom_addr) = start_prometheus_receiver(&dir, &prom_bin, &[]);
    let Some((_vm, vm_addr)) = common::start_victoriametrics(&dir, &[]) else {
        return;
    };
    let cfg = v2_config(&node.addr, &format!("http://{prom_addr}/api/v1/write"))
        + &format!(
            "  - url: http://{vm_addr}/api/v1/write\n    protobuf_message: io.prometheus.write.v2.Request\n"
        );
    let mut spate = Spate::start(&cfg, &[]);
    check_receiver(&prom_addr, &node);
    check_receiver(&vm_addr, &node);
    let log = spate.proc.log_text();
    assert_eq!(
        log.matches("does not take Remote Write 2.0").count(),
        2,
        "each endpoint falls back once:\n{log}"
    );
    assert_eq!(
        spate.metric("prometheus_remote_storage_samples_failed_total"),
        0.0,
        "the first batch is sent again as 1.0, not dropped:\n{log}"
    );
    assert!(spate.proc.terminate(Duration::from_secs(90)).success());
}
