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

/// `GET /api/v1/targets/scrape` (`--web.enable-target-scrape-proxy`): an active target is
/// fetched once with its job's client settings (here basic auth) and its body shown as plain
/// text; anything else is refused; without the flag the route does not exist.
#[test]
fn the_scrape_proxy_fetches_an_active_target_with_its_client_settings() {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    let target = TestServer::start(move |headers, _| {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // "Basic dTpw" is u:p.
        if headers.get("authorization").map(String::as_str) != Some("Basic dTpw") {
            return (401, "text/plain", b"who are you".to_vec());
        }
        (
            200,
            "text/plain; version=0.0.4",
            b"# HELP proxied_metric A metric.\n<b>proxied_metric</b> 1\n".to_vec(),
        )
    });
    let big = TestServer::start(|_, _| (200, "text/plain", vec![b'#'; 8192]));
    let config = format!(
        "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: auth\n    basic_auth: {{username: u, password: p}}\n    static_configs: [{{targets: ['{}']}}]\n  - job_name: big\n    body_size_limit: 4KB\n    static_configs: [{{targets: ['{}']}}]\n",
        target.addr, big.addr
    );
    let url = format!("http://{}/metrics", target.addr);
    let path = |pool: &str, url: &str| {
        format!(
            "/api/v1/targets/scrape?scrapePool={pool}&scrapeUrl={}",
            common::urlencode(url)
        )
    };
    let off = Spate::start(&config, &[]);
    assert_eq!(
        http_get(&off.web, &path("auth", &url)).map(|r| r.0),
        Some(404)
    );
    drop(off);

    let spate = Spate::start(&config, &["--web.enable-target-scrape-proxy"]);
    // Scrapes are an hour apart (at a phase within the hour): the count below is the proxy's.
    let before = served.load(std::sync::atomic::Ordering::SeqCst);
    let (status, body) = http_get(&spate.web, &path("auth", &url)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "# HELP proxied_metric A metric.\n<b>proxied_metric</b> 1\n"
    );
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        before + 1,
        "one request to the target"
    );
    // Only active targets of the named pool.
    let (status, body) = http_get(&spate.web, &path("big", &url)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not an active target"), "{body}");
    let (status, _) = http_get(&spate.web, &path("auth", "http://169.254.169.254/")).unwrap();
    assert_eq!(status, 400);
    // The job's body size limit holds.
    let big_url = format!("http://{}/metrics", big.addr);
    let (status, body) = http_get(&spate.web, &path("big", &big_url)).unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("larger than"), "{body}");
}
