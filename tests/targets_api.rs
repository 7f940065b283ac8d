//! `/api/v1/targets`: Prometheus' JSON shape, each target's health, and the reason a scrape
//! failed (a parse error shows its line, column and cause, as in Prometheus).

mod common;

use std::time::Duration;

use common::{Spate, TestServer, http_get, wait_for};
use serde_json::Value;

#[test]
fn failed_scrapes_show_their_error() {
    let good =
        TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"ok_metric 1\n".to_vec()));
    let bad = TestServer::start(|_, _| {
        (
            200,
            "text/plain; version=0.0.4",
            b"ok_metric 1\nbroken{a=\"b\" 2\n".to_vec(),
        )
    });
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: good\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: bad\n    static_configs: [{{targets: ['{}']}}]\n",
        good.addr, bad.addr
    );
    let mut spate = Spate::start(&config, &[]);
    let targets = wait_for(Duration::from_secs(60), "both targets scraped", || {
        let (code, body) = http_get(&spate.web, "/api/v1/targets")?;
        assert_eq!(code, 200);
        let v: Value = serde_json::from_str(&body).expect("valid JSON");
        let active = v["data"]["activeTargets"].as_array()?.clone();
        active
            .iter()
            .all(|t| t["health"] != "unknown")
            .then_some((v, active))
    });
    let (v, active) = targets;
    assert_eq!(v["status"], "success");
    assert_eq!(active.len(), 2);
    for t in &active {
        for key in [
            "discoveredLabels",
            "labels",
            "scrapePool",
            "scrapeUrl",
            "globalUrl",
            "lastError",
            "lastScrape",
            "lastScrapeDuration",
            "health",
            "scrapeInterval",
            "scrapeTimeout",
        ] {
            assert!(t.get(key).is_some(), "target lacks {key}: {t}");
        }
    }
    let by_job = |job: &str| {
        active
            .iter()
            .find(|t| t["scrapePool"] == job)
            .unwrap()
            .clone()
    };
    let (g, b) = (by_job("good"), by_job("bad"));
    assert_eq!(g["health"], "up");
    assert_eq!(g["lastError"], "");
    assert_eq!(g["labels"]["instance"], good.addr.to_string());
    assert_eq!(g["discoveredLabels"]["__metrics_path__"], "/metrics");
    assert!(
        g["discoveredLabels"].get("instance").is_none(),
        "instance is set after discovery"
    );
    assert_eq!(g["scrapeUrl"], format!("http://{}/metrics", good.addr));
    assert_eq!(g["scrapeInterval"], "1s");
    assert_eq!(b["health"], "down");
    let err = b["lastError"].as_str().unwrap();
    assert!(
        err.contains("line 2") && err.contains("column"),
        "the error says where: {err}"
    );
    assert_eq!(v["data"]["droppedTargets"], Value::Array(vec![]));
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}
