//! `spate bench targets` and `spate bench sink` with a real Prometheus agent in between: the
//! sink's counts must equal what the agent says it sent.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proc, TempDir, free_port, free_port_range, http_get, require_program, wait_for};
use serde_json::Value;

fn bench(dir: &TempDir, name: &str, args: &[String]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spate"));
    cmd.arg("bench").args(args);
    Proc::spawn(name, &mut cmd, dir.path())
}

fn json(addr: &str, path: &str) -> Option<Value> {
    let (code, body) = http_get(addr, path)?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// `name` summed over all series in a Prometheus /metrics page.
fn prom_metric(addr: &str, name: &str) -> Option<f64> {
    let (_, body) = http_get(addr, "/metrics")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

#[test]
fn sink_counts_equal_prometheus_agents_sent_samples() {
    let dir = TempDir::new("bench");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let base = free_port_range(3);
    let fsd = dir.path().join("fleet.json");
    let _targets = bench(
        &dir,
        "targets",
        &[
            "targets".into(),
            "--targets=3".into(),
            "--series=300".into(),
            format!("--listen=127.0.0.1:{base}"),
            format!("--file-sd={}", fsd.display()),
        ],
    );
    let sink_addr = format!("127.0.0.1:{}", free_port());
    let report = dir.path().join("sink.json");
    let mut sink = bench(
        &dir,
        "sink",
        &[
            "sink".into(),
            format!("--listen={sink_addr}"),
            format!("--report={}", report.display()),
            "--interval=1s".into(),
        ],
    );
    wait_for(Duration::from_secs(30), "the fleet and the sink", || {
        (json(&format!("127.0.0.1:{base}"), "/stats").is_some()
            && json(&sink_addr, "/stats").is_some())
        .then_some(())
    });
    // The fleet's file_sd list names every target.
    let listed: Value = serde_json::from_str(&std::fs::read_to_string(&fsd).unwrap()).unwrap();
    assert_eq!(listed[0]["targets"].as_array().unwrap().len(), 3);

    let prom_addr = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("agent.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: ['127.0.0.1:{base}', '127.0.0.1:{}', '127.0.0.1:{}']\nremote_write:\n  - url: http://{sink_addr}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n",
            base + 1,
            base + 2
        ),
    )
    .unwrap();
    let _prom = common::prometheus_agent(&prom_bin, &dir, &cfg, &prom_addr);

    // Prometheus counts a batch when it sends it; read it on both sides of the sink's count
    // until no request is in flight, and require several scrapes' worth.
    let sent = wait_for(
        Duration::from_secs(120),
        "the sink's count to equal the agent's",
        || {
            let before = prom_metric(&prom_addr, "prometheus_remote_storage_samples_total")?;
            let sink = json(&sink_addr, "/stats")?["samples"].as_f64()?;
            let after = prom_metric(&prom_addr, "prometheus_remote_storage_samples_total")?;
            (before == after && after == sink && sink >= 5.0 * 900.0).then_some(sink)
        },
    );
    let status = sink.terminate(Duration::from_secs(30));
    assert!(status.success(), "sink exits 0 on SIGTERM");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for key in [
        "requests",
        "series",
        "samples",
        "out_of_order",
        "duplicates",
        "bytes",
    ] {
        assert!(r[key].is_u64(), "report has {key}: {r}");
    }
    assert!(r["samples"].as_f64().unwrap() >= sent);
    assert_eq!(r["out_of_order"], 0);
    assert_eq!(r["duplicates"], 0);
    // 900 fleet series plus Prometheus' report series for 3 targets.
    assert!(r["series"].as_u64().unwrap() >= 900, "{r}");
}

#[test]
fn remote_write_2_reaches_the_bench_sink_in_order_with_written_counts() {
    let dir = TempDir::new("bench-v2");
    let base = free_port_range(2);
    let fsd = dir.path().join("fleet.json");
    let _targets = bench(
        &dir,
        "targets",
        &[
            "targets".into(),
            "--targets=2".into(),
            "--series=200".into(),
            format!("--listen=127.0.0.1:{base}"),
            format!("--file-sd={}", fsd.display()),
        ],
    );
    let sink_addr = format!("127.0.0.1:{}", free_port());
    let _sink = bench(
        &dir,
        "sink",
        &[
            "sink".into(),
            format!("--listen={sink_addr}"),
            "--interval=1s".into(),
        ],
    );
    wait_for(Duration::from_secs(30), "the fleet and the sink", || {
        (json(&format!("127.0.0.1:{base}"), "/stats").is_some()
            && json(&sink_addr, "/stats").is_some())
        .then_some(())
    });
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bench\n    file_sd_configs:\n      - files: ['{}']\nremote_write:\n  - url: http://{sink_addr}/api/v1/write\n    protobuf_message: io.prometheus.write.v2.Request\n    queue_config:\n      batch_send_deadline: 500ms\n",
        fsd.display()
    );
    let mut spate = common::Spate::start(&cfg, &[]);
    let stats = wait_for(
        Duration::from_secs(120),
        "several scrapes at the sink",
        || {
            json(&sink_addr, "/stats")
                .filter(|s| s["samples"].as_f64().unwrap_or(0.0) >= 5.0 * 410.0)
        },
    );
    let sent = spate.metric("prometheus_remote_storage_samples_total");
    // Every 2.0 request was answered with written counts equal to what it held.
    let partial = spate.metric("prometheus_remote_storage_samples_failed_total");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let log = spate.proc.log_text();
    assert!(!log.contains("does not take Remote Write 2.0"), "{log}");
    assert_eq!(partial, 0.0);
    for key in [
        "decode_errors",
        "errors",
        "out_of_order",
        "duplicates",
        "gaps",
    ] {
        assert_eq!(stats[key].as_f64(), Some(0.0), "{key}: {stats}");
    }
    assert!(sent > 0.0);
}

/// UTF-8 metric and label names end to end: `spate bench targets --utf8-names` serves them as a
/// Prometheus 3 client library does, quoted when the scrape negotiates `escaping=allow-utf-8`
/// and escaped with the scheme it asks for otherwise. Each job's
/// `metric_name_validation_scheme` and `metric_name_escaping_scheme` decide what reaches the
/// receiver; a target that ignores the negotiation fails a legacy job's scrape, as in
/// Prometheus.
#[test]
fn utf8_names_are_negotiated_per_job_and_reach_the_receiver() {
    let dir = TempDir::new("utf8-names");
    let port = free_port();
    let _targets = bench(
        &dir,
        "targets",
        &[
            "targets".into(),
            "--targets=1".into(),
            "--series=20".into(),
            "--utf8-names=3".into(),
            format!("--listen=127.0.0.1:{port}"),
        ],
    );
    // A target that serves UTF-8 names whatever it is asked for.
    let stubborn = common::TestServer::start(|_, _| {
        (
            200,
            "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
            b"{\"k8s.pod.ready\",\"k8s.pod\"=\"p\"} 1\n".to_vec(),
        )
    });
    let receiver = common::Receiver::start(|_| 200);
    let job = |name: &str, extra: &str| {
        format!(
            "  - job_name: {name}\n{extra}    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}{}{}  - job_name: stubborn\n    metric_name_validation_scheme: legacy\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        job("utf8", ""),
        job("legacy", "    metric_name_validation_scheme: legacy\n"),
        job("values", "    metric_name_escaping_scheme: values\n"),
        job("dots", "    metric_name_escaping_scheme: dots\n"),
        job(
            "relabeled",
            "    metric_relabel_configs: [{source_labels: ['service.name'], target_label: 'svc.copy'}]\n"
        ),
        stubborn.addr,
        receiver.url()
    );
    let mut spate = common::Spate::start(&config, &[]);
    let names = |job: &str| -> std::collections::BTreeSet<Vec<(String, String)>> {
        receiver
            .samples()
            .into_iter()
            .filter(|s| {
                s.label("job") == Some(job)
                    && s.label("__name__").is_some_and(|n| n.contains("utf8"))
            })
            .map(|s| {
                s.labels
                    .into_iter()
                    .filter(|(k, _)| k != "instance" && k != "job")
                    .collect()
            })
            .collect()
    };
    wait_for(Duration::from_secs(60), "every job's UTF-8 series", || {
        ["utf8", "legacy", "values", "dots", "relabeled"]
            .iter()
            .all(|j| names(j).len() == 3)
            .then_some(())
    });
    let up = |job: &str| {
        receiver
            .samples()
            .into_iter()
            .filter(|s| s.label("job") == Some(job) && s.label("__name__") == Some("up"))
            .map(|s| s.value)
            .collect::<Vec<f64>>()
    };
    wait_for(
        Duration::from_secs(30),
        "the stubborn target's scrapes",
        || (!up("stubborn").is_empty()).then_some(()),
    );
    let (_, targets) = common::http_get(&spate.web, "/api/v1/targets").unwrap();
    assert!(spate.proc.terminate(Duration::from_secs(30)).success());

    let series = |name: &str, label: &str| -> std::collections::BTreeSet<Vec<(String, String)>> {
        (0..3)
            .map(|i| {
                let mut l = vec![
                    ("__name__".to_string(), name.to_string()),
                    (label.to_string(), format!("svc-{i}")),
                    ("host".to_string(), "h".to_string()),
                ];
                l.sort();
                l
            })
            .collect()
    };
    // Prometheus 3's default: the names arrive as the target has them.
    assert_eq!(
        names("utf8"),
        series("bench.utf8.temperature", "service.name")
    );
    // Legacy validation asks for underscores.
    assert_eq!(
        names("legacy"),
        series("bench_utf8_temperature", "service_name")
    );
    // Other escaping schemes, asked for by name.
    assert_eq!(
        names("values"),
        series("U__bench_2e_utf8_2e_temperature", "U__service_2e_name")
    );
    assert_eq!(
        names("dots"),
        series("bench_dot_utf8_dot_temperature", "service_dot_name")
    );
    // Relabeling reads and writes UTF-8 label names.
    assert!(
        names("relabeled").iter().all(|l| l
            .iter()
            .any(|(k, v)| k == "svc.copy" && v.starts_with("svc-"))),
        "{:?}",
        names("relabeled")
    );
    // A legacy job refuses UTF-8 names the target sends anyway.
    assert!(up("stubborn").iter().all(|v| *v == 0.0));
    assert!(
        targets.contains("invalid metric name or label names"),
        "{targets}"
    );
}
