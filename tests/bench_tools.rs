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
