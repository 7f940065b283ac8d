//! Scrape fidelity with real processes: staleness markers, report series, metric relabeling,
//! scrape limits and target relabeling, as a Prometheus agent user sees them at the receiver
//! and in `/api/v1/targets`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Received, Receiver, Spate, TestServer, http_get, wait_for};
use serde_json::Value;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn is_stale(s: &Received) -> bool {
    s.value.to_bits() == STALE_NAN
}

fn named<'a>(samples: &'a [Received], name: &str) -> Vec<&'a Received> {
    samples
        .iter()
        .filter(|s| s.label("__name__") == Some(name))
        .collect()
}

fn config(jobs: &str, receiver: &Receiver) -> String {
    format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}remote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: 200ms\n",
        receiver.url()
    )
}

/// A target whose exposition moves through phases: the current phase is set by the test.
struct PhasedTarget {
    server: TestServer,
    phase: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
}

impl PhasedTarget {
    fn start(phases: Vec<(u16, &'static str)>) -> PhasedTarget {
        let phase = Arc::new(AtomicU64::new(0));
        let served = Arc::new(AtomicU64::new(0));
        let (p, s) = (phase.clone(), served.clone());
        let server = TestServer::start(move |_, _| {
            s.fetch_add(1, Ordering::SeqCst);
            let (status, body) = phases[p.load(Ordering::SeqCst) as usize];
            (
                status,
                "text/plain; version=0.0.4",
                body.as_bytes().to_vec(),
            )
        });
        PhasedTarget {
            server,
            phase,
            served,
        }
    }

    /// Moves to `phase` and waits until the target served it at least twice.
    fn advance(&self, phase: u64) {
        self.phase.store(phase, Ordering::SeqCst);
        let start = self.served.load(Ordering::SeqCst);
        wait_for(
            Duration::from_secs(60),
            "two scrapes of the new phase",
            || (self.served.load(Ordering::SeqCst) >= start + 2).then_some(()),
        );
    }
}

#[test]
fn vanished_series_and_failed_scrapes_get_staleness_markers_and_shutdown_gets_none() {
    let target = PhasedTarget::start(vec![
        (200, "a 1\nb 2\nwith_ts 3 1700000000000\n"),
        (200, "a 1\n"),
        (500, "broken"),
        (200, "a 1\nb 2\n"),
    ]);
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: phased\n    static_configs: [{{targets: ['{}']}}]\n",
        target.server.addr
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    let received = |name: &str, pred: &dyn Fn(&Received) -> bool| {
        named(&receiver.samples(), name).into_iter().any(pred)
    };
    wait_for(Duration::from_secs(60), "the first phase", || {
        received("b", &|s| s.value == 2.0).then_some(())
    });
    target.advance(1);
    target.advance(2);
    target.advance(3);
    wait_for(
        Duration::from_secs(60),
        "b to come back after the failure",
        || {
            let samples = receiver.samples();
            let failed_at = named(&samples, "a").into_iter().find(|s| is_stale(s))?.ts;
            named(&samples, "b")
                .into_iter()
                .any(|s| s.ts > failed_at && s.value == 2.0)
                .then_some(())
        },
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let samples = receiver.samples();
    let up = named(&samples, "up");
    let stale_at = |name: &str| -> Vec<i64> {
        named(&samples, name)
            .into_iter()
            .filter(|s| is_stale(s))
            .map(|s| s.ts)
            .collect()
    };
    // b gets one marker when it vanishes, and none at the failure: it was gone already.
    let b_stale = stale_at("b");
    assert_eq!(
        b_stale.len(),
        1,
        "b: one marker when it vanished: {b_stale:?}"
    );
    // Every marker is stamped with a scrape's timestamp (the one that noticed).
    assert!(up.iter().any(|u| u.ts == b_stale[0] && u.value == 1.0));
    // The failed scrape: a goes stale with up=0 at the same timestamp.
    let a_stale = stale_at("a");
    assert_eq!(
        a_stale.len(),
        1,
        "a: one marker, at the failure: {a_stale:?}"
    );
    assert!(
        up.iter().any(|u| u.ts == a_stale[0] && u.value == 0.0),
        "the failed scrape's up=0 shares the marker's timestamp"
    );
    // A series exposed with its own timestamp gets no marker (track_timestamps_staleness off).
    assert!(stale_at("with_ts").is_empty());
    // Report series never go stale while the target exists, and shutdown writes no marker.
    assert!(stale_at("up").is_empty());
    let newest_a = named(&samples, "a")
        .into_iter()
        .max_by_key(|s| s.ts)
        .unwrap();
    assert_eq!(
        newest_a.value, 1.0,
        "nothing stale after a graceful shutdown"
    );
}

#[test]
fn metric_relabeling_shapes_samples_and_report_series_count_them() {
    let target = TestServer::start(|_, _| {
        (
            200,
            "text/plain; version=0.0.4",
            b"keep_me{id=\"x\",path=\"/a\"} 1\ndrop_me 2\nrename_total{code=\"200\"} 3\n".to_vec(),
        )
    });
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: relabeled
    static_configs: [{{targets: ['{}'], labels: {{env: prod}}}}]
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'drop_.*', action: drop}}
      - {{regex: id, action: labeldrop}}
      - {{source_labels: [instance], regex: '([^:]+):.*', target_label: host}}
      - {{source_labels: [__name__], regex: '(.+)_total', target_label: __name__, replacement: '${{1}}_count'}}
      - {{source_labels: [env, code], separator: '-', target_label: env_code}}
",
        target.addr
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    wait_for(Duration::from_secs(60), "three scrapes", || {
        (named(&receiver.samples(), "up").len() >= 3).then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let samples = receiver.samples();
    assert!(named(&samples, "drop_me").is_empty(), "dropped by name");
    let keep = named(&samples, "keep_me");
    assert!(!keep.is_empty());
    for s in &keep {
        assert_eq!(s.label("id"), None, "labeldrop");
        assert_eq!(s.label("host"), Some("127.0.0.1"));
        assert_eq!(s.label("env"), Some("prod"));
        assert_eq!(
            s.label("env_code"),
            Some("prod-"),
            "missing source is empty"
        );
    }
    let renamed = named(&samples, "rename_count");
    assert!(!renamed.is_empty(), "__name__ rewritten");
    assert_eq!(renamed[0].label("env_code"), Some("prod-200"));
    assert!(named(&samples, "rename_total").is_empty());
    // Report series: exposed, kept after relabeling, new to the target.
    let value_at = |name: &str, ts: i64| {
        named(&samples, name)
            .into_iter()
            .find(|s| s.ts == ts)
            .map(|s| s.value)
    };
    let mut ups: Vec<i64> = named(&samples, "up").iter().map(|s| s.ts).collect();
    ups.sort();
    let first = ups[0];
    assert_eq!(value_at("scrape_samples_scraped", first), Some(3.0));
    assert_eq!(
        value_at("scrape_samples_post_metric_relabeling", first),
        Some(2.0)
    );
    assert_eq!(value_at("scrape_series_added", first), Some(2.0));
    assert_eq!(
        value_at("scrape_series_added", ups[2]),
        Some(0.0),
        "known series are not added again"
    );
    // Report series carry the target labels but are not relabeled.
    let up = named(&samples, "up")[0];
    assert_eq!(up.label("host"), None);
    assert_eq!(up.label("env"), Some("prod"));
}

fn target_state(spate: &Spate, job: &str) -> Option<Value> {
    let (_, body) = http_get(&spate.web, "/api/v1/targets")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["activeTargets"]
        .as_array()?
        .iter()
        .find(|t| t["scrapePool"] == job && t["health"] != "unknown")
        .cloned()
}

#[test]
fn limits_fail_the_scrape_with_prometheus_reasons() {
    let three = || {
        TestServer::start(|_, _| {
            (
                200,
                "text/plain; version=0.0.4",
                b"m1{a=\"1\",b=\"2\",c=\"3\"} 1\nm2 2\nm3{long_value=\"0123456789abcdef\"} 3\n"
                    .to_vec(),
            )
        })
    };
    let (t1, t2, t3, t4, t5, t6) = (three(), three(), three(), three(), three(), three());
    let receiver = Receiver::start(|_| 200);
    let job = |name: &str, extra: &str, targets: &str| {
        format!("  - job_name: {name}\n    static_configs: [{{targets: [{targets}]}}]\n{extra}")
    };
    let q = |t: &TestServer| format!("'{}'", t.addr);
    let jobs = [
        job("samples", "    sample_limit: 2\n", &q(&t1)),
        job(
            "body",
            "    body_size_limit: 20B\n    extra_scrape_metrics: true\n",
            &q(&t2),
        ),
        job("labels", "    label_limit: 3\n", &q(&t3)),
        // 15 characters: `instance` (127.0.0.1:PORT) fits, the long value does not.
        job("values", "    label_value_length_limit: 15\n", &q(&t4)),
        job(
            "targets",
            "    target_limit: 1\n",
            &format!("{}, {}", q(&t5), q(&t6)),
        ),
        job(
            "within",
            "    sample_limit: 3\n    label_limit: 6\n    extra_scrape_metrics: true\n",
            &q(&t6),
        ),
    ]
    .concat();
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    let state = |job: &str| {
        wait_for(Duration::from_secs(60), "the job scraped", || {
            target_state(&spate, job)
        })
    };
    let expect_error = |job: &str, want: &str| {
        let t = state(job);
        assert_eq!(t["health"], "down", "{job}: {t}");
        assert_eq!(t["lastError"], want, "{job}");
    };
    expect_error("samples", "sample limit exceeded");
    expect_error("body", "body size limit exceeded");
    expect_error(
        "labels",
        "label_limit exceeded (metric: m1, number of labels: 6, limit: 3)",
    );
    expect_error(
        "values",
        "label_value_length_limit exceeded (metric: m3, label name: long_value, value: \"0123456789abcdef\", length: 16, limit: 15)",
    );
    expect_error(
        "targets",
        "target_limit exceeded (number of targets: 2, limit: 1)",
    );
    assert_eq!(state("within")["health"], "up");
    wait_for(
        Duration::from_secs(60),
        "report series of every job",
        || {
            let s = receiver.samples();
            ["samples", "body", "within"]
                .iter()
                .all(|j| {
                    s.iter().any(|x| {
                        x.label("job") == Some(j)
                            && x.label("__name__") == Some("scrape_samples_post_metric_relabeling")
                    })
                })
                .then_some(())
        },
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let samples = receiver.samples();
    let report = |job: &str, name: &str| {
        samples
            .iter()
            .filter(|s| s.label("job") == Some(job) && s.label("__name__") == Some(name))
            .map(|s| s.value)
            .next_back()
    };
    // The breached scrape forwards nothing but its report, which still counts every sample.
    assert!(samples.iter().all(
        |s| s.label("job") != Some("samples") || !s.label("__name__").unwrap().starts_with('m')
    ));
    assert_eq!(report("samples", "up"), Some(0.0));
    assert_eq!(report("samples", "scrape_samples_scraped"), Some(3.0));
    assert_eq!(
        report("samples", "scrape_samples_post_metric_relabeling"),
        Some(3.0)
    );
    assert_eq!(report("body", "scrape_body_size_bytes"), Some(-1.0));
    assert_eq!(report("within", "up"), Some(1.0));
    assert_eq!(report("within", "scrape_sample_limit"), Some(3.0));
    assert_eq!(report("within", "scrape_timeout_seconds"), Some(1.0));
    let body_len =
        "m1{a=\"1\",b=\"2\",c=\"3\"} 1\nm2 2\nm3{long_value=\"0123456789abcdef\"} 3\n".len();
    assert_eq!(
        report("within", "scrape_body_size_bytes"),
        Some(body_len as f64)
    );
}

#[test]
fn relabel_configs_pick_targets_and_the_api_lists_the_dropped() {
    let ok = || TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"x 1\n".to_vec()));
    let (a, b, c) = (ok(), ok(), ok());
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: picked
    keep_dropped_targets: 1
    static_configs:
      - targets: ['{a}', '{b}']
        labels: {{__tmp_role: web, team: a}}
      - targets: ['{c}']
        labels: {{__tmp_role: db}}
    relabel_configs:
      - {{source_labels: [__tmp_role], regex: web, action: keep}}
      - {{source_labels: [__address__], regex: '{b_addr}', action: drop}}
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{target_label: __metrics_path__, replacement: /probe}}
      - {{source_labels: [__address__], modulus: 8, target_label: shard, action: hashmod}}
      - {{source_labels: [team], target_label: team, action: uppercase}}
",
        a = a.addr,
        b = b.addr,
        c = c.addr,
        b_addr = regex_escape(&b.addr.to_string()),
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    let v = wait_for(Duration::from_secs(60), "the target scraped", || {
        let (_, body) = http_get(&spate.web, "/api/v1/targets")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let active = v["data"]["activeTargets"].as_array()?;
        (active.len() == 1 && active[0]["health"] != "unknown").then(|| v.clone())
    });
    let t = &v["data"]["activeTargets"][0];
    assert_eq!(t["labels"]["instance"], a.addr.to_string());
    assert_eq!(t["labels"]["team"], "A");
    let shard = t["labels"]["shard"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(shard < 8);
    assert_eq!(
        t["scrapeUrl"],
        format!(
            "http://{}/probe?target={}",
            a.addr,
            common::urlencode(&a.addr.to_string())
        )
    );
    assert_eq!(t["discoveredLabels"]["__tmp_role"], "web");
    assert!(t["labels"].get("__tmp_role").is_none());
    // Two were dropped; one is kept for the API (keep_dropped_targets: 1), both are counted.
    let dropped = v["data"]["droppedTargets"].as_array().unwrap();
    assert_eq!(dropped.len(), 1);
    assert!(dropped[0]["discoveredLabels"]["__address__"].is_string());
    assert_eq!(v["data"]["droppedTargetCounts"]["picked"], 2);
    let (_, only_dropped) = http_get(&spate.web, "/api/v1/targets?state=dropped").unwrap();
    let only: Value = serde_json::from_str(&only_dropped).unwrap();
    assert!(only["data"]["activeTargets"].as_array().unwrap().is_empty());
    assert_eq!(only["data"]["droppedTargets"].as_array().unwrap().len(), 1);
    wait_for(
        Duration::from_secs(60),
        "samples from the kept target",
        || {
            named(&receiver.samples(), "x")
                .first()
                .map(|s| s.label("shard").map(str::to_string))
        },
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

#[test]
fn targets_get_auth_headers_and_redirects_and_secrets_stay_hidden() {
    let dir = common::TempDir::new("auth");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-1\n").unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    // Another host a redirect leads to: it must not get the credentials.
    let other_log = seen.clone();
    let other = TestServer::start(move |headers, _| {
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        other_log.lock().unwrap().push(("other".into(), auth));
        (200, "text/plain; version=0.0.4", b"x 1\n".to_vec())
    });
    let away: &'static str = Box::leak(format!("http://{}/elsewhere", other.addr).into_boxed_str());
    let log = seen.clone();
    let server = TestServer::start(move |headers, _| {
        let path = headers.get(":path").cloned().unwrap_or_default();
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        log.lock().unwrap().push((path.clone(), auth));
        match path.as_str() {
            // A redirect on the same host, as a trailing-slash redirect does.
            "/old" => (302, "/new", Vec::new()),
            "/away" => (301, away, Vec::new()),
            _ => (200, "text/plain; version=0.0.4", b"x 1\n".to_vec()),
        }
    });
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: basic
    basic_auth: {{username: alice, password: hunter2}}
    http_headers:
      X-Tenant: {{values: [t1], secrets: [very-secret-header]}}
    static_configs: [{{targets: ['{a}']}}]
  - job_name: bearer
    metrics_path: /bearer
    authorization: {{credentials_file: '{file}'}}
    static_configs: [{{targets: ['{a}']}}]
  - job_name: moved
    metrics_path: /old
    static_configs: [{{targets: ['{a}']}}]
  - job_name: away
    metrics_path: /away
    authorization: {{credentials: not-for-other-hosts}}
    static_configs: [{{targets: ['{a}']}}]
  - job_name: legacy
    metrics_path: /legacy
    bearer_token: legacy-secret
    static_configs: [{{targets: ['{a}']}}]
  - job_name: legacy_file
    metrics_path: /legacy-file
    bearer_token_file: '{file}'
    static_configs: [{{targets: ['{a}']}}]
",
        a = server.addr,
        file = token_file.display()
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    let seen_auth = |path: &str, want: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, a)| p == path && a == want)
    };
    wait_for(Duration::from_secs(60), "basic and bearer auth", || {
        (seen_auth("/metrics", "Basic YWxpY2U6aHVudGVyMg==")
            && seen_auth("/bearer", "Bearer tok-1")
            // The deprecated fields Prometheus still reads: an authorization of type Bearer.
            && seen_auth("/legacy", "Bearer legacy-secret")
            && seen_auth("/legacy-file", "Bearer tok-1"))
        .then_some(())
    });
    // The credentials file is read at each scrape: a rotated token is used without a reload.
    std::fs::write(&token_file, "tok-2").unwrap();
    wait_for(Duration::from_secs(60), "the rotated token", || {
        seen_auth("/bearer", "Bearer tok-2").then_some(())
    });
    // A redirect on the same host is followed, as Prometheus' client does by default.
    let state = wait_for(Duration::from_secs(60), "the moved job scraped", || {
        target_state(&spate, "moved")
    });
    assert_eq!(state["health"], "up", "{state}");
    assert!(seen.lock().unwrap().iter().any(|(p, _)| p == "/new"));
    // One to another host is followed too, without the credentials.
    let state = wait_for(Duration::from_secs(60), "the away job scraped", || {
        target_state(&spate, "away")
    });
    assert_eq!(state["health"], "up", "{state}");
    assert!(seen_auth("/away", "Bearer not-for-other-hosts"));
    assert!(
        seen_auth("other", ""),
        "the other host got no Authorization"
    );
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|(p, a)| p == "other" && !a.is_empty())
    );
    // Secrets appear neither in the configuration the API shows nor in the log.
    let (_, cfg) = http_get(&spate.web, "/api/v1/status/config").unwrap();
    let v: Value = serde_json::from_str(&cfg).unwrap();
    let yaml = v["data"]["yaml"].as_str().unwrap();
    assert!(
        yaml.contains("<secret>") && yaml.contains("alice"),
        "{yaml}"
    );
    for secret in [
        "hunter2",
        "very-secret-header",
        "tok-1",
        "tok-2",
        "legacy-secret",
    ] {
        assert!(!yaml.contains(secret), "{secret} in {yaml}");
        assert!(
            !spate.proc.log_text().contains(secret),
            "{secret} in the log"
        );
    }
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// An HTTPS target serving `x 1`, recording whether each connection showed a client
/// certificate. Stops when dropped.
struct TlsTarget {
    addr: std::net::SocketAddr,
    client_certs: Arc<std::sync::Mutex<Vec<bool>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl TlsTarget {
    fn start(pki: &common::TestPki) -> TlsTarget {
        Self::serving(pki, "text/plain; version=0.0.4", b"x 1\n".to_vec())
    }

    fn serving(pki: &common::TestPki, content_type: &'static str, body: Vec<u8>) -> TlsTarget {
        let body = Arc::new(body);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(pki.chain("ca.crt"));
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let (chain, key) = (pki.chain("server.crt"), pki.key("server.key"));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let client_certs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (certs, stp) = (client_certs.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                let Ok((sock, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (config, certs, body) = (config.clone(), certs.clone(), body.clone());
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let _ = sock.set_nonblocking(false);
                    let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, sock);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let n = match tls.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            certs
                                .lock()
                                .unwrap()
                                .push(tls.conn.peer_certificates().is_some());
                            let head = format!(
                                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                                body.len()
                            );
                            if tls
                                .write_all(head.as_bytes())
                                .and_then(|_| tls.write_all(&body))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                });
            }
        });
        TlsTarget {
            addr,
            client_certs,
            stop,
        }
    }
}

impl Drop for TlsTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn https_targets_with_ca_client_certificates_server_name_and_skip_verify() {
    let Some(pki) = common::TestPki::make() else {
        return;
    };
    let target = TlsTarget::start(&pki);
    let port = target.addr.port();
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: ca
    scheme: https
    tls_config: {{ca_file: '{ca}'}}
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
  - job_name: mtls
    scheme: https
    tls_config: {{ca_file: '{ca}', cert_file: '{cert}', key_file: '{key}'}}
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
  - job_name: named
    scheme: https
    tls_config: {{ca_file: '{ca}', server_name: localhost, min_version: TLS13}}
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
  - job_name: untrusted
    scheme: https
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
  - job_name: skip
    scheme: https
    tls_config: {{insecure_skip_verify: true}}
    static_configs: [{{targets: ['127.0.0.1:{port}']}}]
",
        ca = pki.path("ca.crt"),
        cert = pki.path("client.crt"),
        key = pki.path("client.key"),
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    for job in ["ca", "mtls", "named", "skip"] {
        let t = wait_for(Duration::from_secs(60), "the https target scraped", || {
            target_state(&spate, job)
        });
        assert_eq!(t["health"], "up", "{job}: {t}");
        assert!(t["scrapeUrl"].as_str().unwrap().starts_with("https://"));
    }
    let t = wait_for(Duration::from_secs(60), "the untrusted target", || {
        target_state(&spate, "untrusted")
    });
    assert_eq!(t["health"], "down");
    let err = t["lastError"].as_str().unwrap();
    assert!(err.contains("tls") && err.contains("certificate"), "{err}");
    let certs = target.client_certs.lock().unwrap().clone();
    assert!(certs.contains(&true), "the mtls job showed its certificate");
    assert!(certs.contains(&false), "the others did not");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn oauth2_client_credentials_tokens_are_fetched_renewed_and_sent() {
    let dir = common::TempDir::new("oauth2");
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, "s3cr3t+/\n").unwrap();
    let issued = Arc::new(AtomicU64::new(0));
    let forms = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (n, f) = (issued.clone(), forms.clone());
    let token_server = TestServer::start(move |headers, body| {
        f.lock()
            .unwrap()
            .push(String::from_utf8_lossy(body).into_owned());
        // "cid:s3cr3t+/" with both parts form-encoded, then base64.
        if headers.get("authorization").map(String::as_str)
            != Some("Basic Y2lkOnMzY3IzdCUyQiUyRg==")
        {
            return (
                401,
                "application/json",
                b"{\"error\":\"invalid_client\"}".to_vec(),
            );
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        // Valid for 12 s: renewed 10 s before that, so every couple of seconds.
        let body = format!(
            r#"{{"access_token":"tok-{i}","token_type":"bearer","expires_in":12,"scope":"x"}}"#
        );
        (200, "application/json", body.into_bytes())
    });
    let tokens_seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = tokens_seen.clone();
    let target = TestServer::start(move |headers, _| {
        let auth = headers.get("authorization").cloned().unwrap_or_default();
        seen.lock().unwrap().push(auth.clone());
        if auth.starts_with("Bearer tok-") {
            (200, "text/plain; version=0.0.4", b"x 1\n".to_vec())
        } else {
            (401, "text/plain", b"no".to_vec())
        }
    });
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: oauth
    oauth2:
      client_id: cid
      client_secret_file: '{file}'
      token_url: http://{token}/oauth/token
      scopes: [read, metrics]
      endpoint_params: {{audience: spate}}
    static_configs: [{{targets: ['{target}']}}]
",
        file = secret_file.display(),
        token = token_server.addr,
        target = target.addr,
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    wait_for(Duration::from_secs(60), "a renewed token in use", || {
        let seen = tokens_seen.lock().unwrap();
        let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
        (distinct.len() >= 2 && seen.len() >= 4).then_some(())
    });
    let t = target_state(&spate, "oauth").unwrap();
    assert_eq!(t["health"], "up", "{t}");
    // Tokens are reused until they near expiry: fewer fetches than scrapes.
    let scrapes = tokens_seen.lock().unwrap().len() as u64;
    assert!(
        issued.load(Ordering::SeqCst) < scrapes,
        "a token per scrape"
    );
    let form = forms.lock().unwrap()[0].clone();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("scope=read+metrics"), "{form}");
    assert!(form.contains("audience=spate"), "{form}");
    let (_, cfg) = http_get(&spate.web, "/api/v1/status/config").unwrap();
    assert!(!cfg.contains("s3cr3t"));
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// A forward HTTP proxy for the test: absolute-form requests and `CONNECT` tunnels, every
/// host mapped to 127.0.0.1 (so targets can have names that only the proxy resolves). Records
/// each request line and the CONNECT requests' headers.
struct TestProxy {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestProxy {
    fn start() -> TestProxy {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let done = line == "\r\n";
                        head.push(line);
                        if done {
                            break;
                        }
                    }
                    log.lock().unwrap().push(head.concat());
                    let mut parts = head[0].split_whitespace();
                    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let hostport = if method == "CONNECT" {
                        target.to_string()
                    } else {
                        target
                            .trim_start_matches("http://")
                            .split('/')
                            .next()
                            .unwrap_or("")
                            .to_string()
                    };
                    let port = hostport.rsplit(':').next().unwrap_or("80");
                    let Ok(mut upstream) =
                        std::net::TcpStream::connect(format!("127.0.0.1:{port}"))
                    else {
                        return;
                    };
                    let mut client_w = client.try_clone().unwrap();
                    if method == "CONNECT" {
                        client_w
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .unwrap();
                    } else {
                        // Origin form for the target; later requests on the connection are
                        // relayed as they come.
                        let path = target
                            .trim_start_matches("http://")
                            .split_once('/')
                            .map_or("", |(_, p)| p);
                        let mut rewritten = format!("{method} /{path} HTTP/1.1\r\n");
                        rewritten.push_str(&head[1..].concat());
                        upstream.write_all(rewritten.as_bytes()).unwrap();
                    }
                    let mut up_r = upstream.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut up_r, &mut client_w);
                    });
                    let buffered = reader.buffer().to_vec();
                    let _ = upstream.write_all(&buffered);
                    let mut rest = reader.into_inner();
                    let _ = std::io::copy(&mut rest, &mut upstream);
                });
            }
        });
        TestProxy { addr, seen }
    }

    fn saw(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|r| r.contains(needle))
    }
}

#[test]
fn proxy_url_carries_plain_and_tls_scrapes_and_loopback_bypasses_it() {
    let Some(pki) = common::TestPki::make() else {
        return;
    };
    let proxy = TestProxy::start();
    let plain = TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"x 1\n".to_vec()));
    let tls = TlsTarget::start(&pki);
    let receiver = Receiver::start(|_| 200);
    let (pp, tp) = (plain.addr.port(), tls.addr.port());
    let jobs = format!(
        "  - job_name: plain
    proxy_url: http://{proxy}
    static_configs: [{{targets: ['only-the-proxy-knows.test:{pp}']}}]
  - job_name: tunnel
    scheme: https
    proxy_url: http://{proxy}
    proxy_connect_header: {{X-Proxy-Token: [abc]}}
    tls_config: {{ca_file: '{ca}', server_name: localhost}}
    static_configs: [{{targets: ['only-the-proxy-knows.test:{tp}']}}]
  - job_name: direct
    metrics_path: /direct
    proxy_url: http://{proxy}
    static_configs: [{{targets: ['127.0.0.1:{pp}']}}]
",
        proxy = proxy.addr,
        ca = pki.path("ca.crt"),
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    for job in ["plain", "tunnel", "direct"] {
        let t = wait_for(Duration::from_secs(60), "the job scraped", || {
            target_state(&spate, job)
        });
        assert_eq!(t["health"], "up", "{job}: {t}");
    }
    assert!(proxy.saw(&format!(
        "GET http://only-the-proxy-knows.test:{pp}/metrics HTTP/1.1"
    )));
    assert!(proxy.saw(&format!("CONNECT only-the-proxy-knows.test:{tp} HTTP/1.1")));
    assert!(proxy.saw("X-Proxy-Token: abc"));
    assert!(
        !proxy.saw("/direct"),
        "loopback targets do not use the proxy, as in Go"
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn http_sd_over_https_with_a_private_ca() {
    let Some(pki) = common::TestPki::make() else {
        return;
    };
    let target = TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"x 1\n".to_vec()));
    let list = format!(
        r#"[{{"targets": ["{}"], "labels": {{"via": "https"}}}}]"#,
        target.addr
    );
    let sd = TlsTarget::serving(&pki, "application/json", list.into_bytes());
    let receiver = Receiver::start(|_| 200);
    let jobs = format!(
        "  - job_name: discovered
    http_sd_configs:
      - url: https://localhost:{}/sd
        refresh_interval: 1s
        tls_config: {{ca_file: '{}'}}
",
        sd.addr.port(),
        pki.path("ca.crt")
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    let t = wait_for(
        Duration::from_secs(60),
        "the target from https discovery",
        || target_state(&spate, "discovered"),
    );
    assert_eq!(t["labels"]["via"], "https");
    assert_eq!(t["health"], "up");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// The JSON lines of a scrape failure log file (none when it does not exist yet).
fn failure_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect()
}

/// `scrape_failure_log_file`, global and per job: each failed request is one JSON line with
/// Prometheus' keys, in the job's file or else the global one; scrapes that fail after the
/// response (a limit) are not logged, as in Prometheus. A reload reopens the files (a rotated
/// file is let go), and one that cannot be opened fails the reload, naming it.
#[test]
fn failed_scrapes_are_logged_to_the_failure_log_files() {
    let receiver = Receiver::start(|_| 200);
    let down = TestServer::start(|_, _| (500, "text/plain", b"down".to_vec()));
    let fine = TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"a 1\nb 2\n".to_vec()));
    let refused = format!("127.0.0.1:{}", common::free_port());
    let dir = common::TempDir::new("failure-log");
    let global_log = dir.path().join("failures.log");
    let own_log = dir.path().join("own.log");
    let jobs = format!(
        "  - job_name: down
    static_configs: [{{targets: ['{down}']}}]
  - job_name: refused
    static_configs: [{{targets: ['{refused}']}}]
  - job_name: own
    scrape_failure_log_file: {own}
    static_configs: [{{targets: ['{down}']}}]
  - job_name: fine
    static_configs: [{{targets: ['{fine}']}}]
  - job_name: limited
    sample_limit: 1
    static_configs: [{{targets: ['{fine}']}}]
",
        down = down.addr,
        fine = fine.addr,
        own = own_log.display(),
    );
    let with_global = |path: &std::path::Path| {
        config(&jobs, &receiver).replacen(
            "global:\n",
            &format!("global:\n  scrape_failure_log_file: {}\n", path.display()),
            1,
        )
    };
    let mut spate = Spate::start(&with_global(&global_log), &["--web.enable-lifecycle"]);
    let targets = |lines: &[Value]| -> std::collections::BTreeSet<String> {
        lines
            .iter()
            .map(|l| l["target"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (down_url, refused_url) = (
        format!("http://{}/metrics", down.addr),
        format!("http://{refused}/metrics"),
    );
    wait_for(
        Duration::from_secs(60),
        "failures of down and refused logged",
        || {
            (targets(&failure_lines(&global_log)).len() == 2 && !failure_lines(&own_log).is_empty())
                .then_some(())
        },
    );
    let lines = failure_lines(&global_log);
    assert_eq!(
        targets(&lines),
        [down_url.clone(), refused_url.clone()]
            .into_iter()
            .collect(),
        "only the failed requests of jobs without a file of their own"
    );
    for l in &lines {
        assert_eq!(l["level"], "ERROR", "{l}");
        assert!(l["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{l}");
        let msg = l["msg"].as_str().unwrap_or_default();
        if l["target"] == down_url.as_str() {
            assert!(msg.starts_with("server returned HTTP status 500"), "{l}");
        } else {
            assert!(
                msg.starts_with(&format!("Get \"{refused_url}\": ")) && msg.contains("refused"),
                "{l}"
            );
        }
    }
    assert_eq!(
        targets(&failure_lines(&own_log)),
        [down_url.clone()].into_iter().collect()
    );

    // Rotation: the file moves away; a reload opens a new one at the path.
    let rotated = dir.path().join("failures.log.1");
    std::fs::rename(&global_log, &rotated).unwrap();
    let (code, body) = common::http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    wait_for(
        Duration::from_secs(60),
        "lines in the reopened file",
        || (failure_lines(&global_log).len() >= 2).then_some(()),
    );
    let kept = std::fs::metadata(&rotated).unwrap().len();
    let before = failure_lines(&global_log).len();
    wait_for(
        Duration::from_secs(60),
        "more lines in the new file",
        || (failure_lines(&global_log).len() >= before + 2).then_some(()),
    );
    assert_eq!(
        std::fs::metadata(&rotated).unwrap().len(),
        kept,
        "the rotated file is let go"
    );

    // A file that cannot be opened fails the reload and names it; scraping goes on.
    let missing = dir.path().join("no-such-dir").join("failures.log");
    std::fs::write(spate.dir.path().join("spate.yml"), with_global(&missing)).unwrap();
    let (code, body) = common::http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 500, "{body}");
    assert!(body.contains(&missing.display().to_string()), "{body}");
    assert_eq!(
        spate.metric("prometheus_config_last_reload_successful"),
        0.0
    );
    let before = failure_lines(&own_log).len();
    wait_for(
        Duration::from_secs(60),
        "the job's own file still written",
        || (failure_lines(&own_log).len() > before).then_some(()),
    );
    assert!(spate.proc.terminate(Duration::from_secs(30)).success());
}

/// `scrape_series_added` across a scrape that fails on its sample limit and the one that
/// succeeds after: the series the failed scrape appended are counted once, there, and not
/// again when the scrape succeeds (Prometheus' scrape cache keeps them).
#[test]
fn series_a_failed_scrape_met_are_not_added_again() {
    let receiver = Receiver::start(|_| 200);
    let t = PhasedTarget::start(vec![(200, "a 1\nb 2\nc 3\n"), (200, "a 1\nb 2\n")]);
    let jobs = format!(
        "  - job_name: limited\n    sample_limit: 2\n    static_configs: [{{targets: ['{}']}}]\n",
        t.server.addr
    );
    let mut spate = Spate::start(&config(&jobs, &receiver), &[]);
    t.advance(0);
    t.advance(1);
    let added = || -> Vec<f64> {
        let mut v: Vec<(i64, f64)> = named(&receiver.samples(), "scrape_series_added")
            .iter()
            .map(|s| (s.ts, s.value))
            .collect();
        v.sort_by_key(|(ts, _)| *ts);
        v.into_iter().map(|(_, v)| v).collect()
    };
    let ups = || -> Vec<f64> {
        let mut v: Vec<(i64, f64)> = named(&receiver.samples(), "up")
            .iter()
            .map(|s| (s.ts, s.value))
            .collect();
        v.sort_by_key(|(ts, _)| *ts);
        v.into_iter().map(|(_, v)| v).collect()
    };
    wait_for(Duration::from_secs(30), "successful scrapes", || {
        (ups().iter().filter(|u| **u == 1.0).count() >= 2).then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(30)).success());
    let (up, added) = (ups(), added());
    assert_eq!(up.len(), added.len());
    let first_ok = up.iter().position(|u| *u == 1.0).unwrap();
    assert!(first_ok > 0, "the limit failed the first scrapes: {up:?}");
    assert_eq!(
        added[0], 2.0,
        "the first failed scrape met a and b: {added:?}"
    );
    assert!(
        added[1..].iter().all(|a| *a == 0.0),
        "a and b are not added again, failing or not: {added:?}"
    );
}
