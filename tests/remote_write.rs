//! Remote-write delivery against in-process receivers that fail on purpose.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{CounterTarget, Receiver, Spate, wait_for};

fn config(target: &str, receiver: &str) -> String {
    format!(
        r#"
global:
  scrape_interval: 1s
  external_labels: {{replica: r1}}
scrape_configs:
  - job_name: counter
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: {receiver}
    name: test
    queue_config:
      batch_send_deadline: 500ms
      min_backoff: 50ms
      max_backoff: 400ms
"#
    )
}

/// A configuration scraping `target` as job `counter` every `interval`, with `remote_write`
/// (the list's items) after it.
fn counter_config(target: &dyn std::fmt::Display, interval: &str, remote_write: &str) -> String {
    format!(
        "global:\n  scrape_interval: {interval}\nscrape_configs:\n  - job_name: counter\n    static_configs:\n      - targets: [\"{target}\"]\nremote_write:\n{}",
        remote_write.trim_start_matches('\n')
    )
}

/// The `test_counter` samples (timestamp, value) in a Remote Write 1.0 request body.
fn counter_in(body: &[u8]) -> Vec<(i64, f64)> {
    let req = spate::entry::proto::decode_write_request(body).unwrap();
    req.timeseries
        .iter()
        .filter(|t| t.labels.iter().any(|l| l.value == "test_counter"))
        .flat_map(|t| t.samples.iter().map(|s| (s.timestamp, s.value)))
        .collect()
}

/// The values of `test_counter` as received, in arrival order, with their timestamps.
fn counter_samples(r: &Receiver) -> Vec<(i64, f64)> {
    r.samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("test_counter"))
        .map(|s| (s.ts, s.value))
        .collect()
}

#[test]
fn every_sample_arrives_once_in_order_after_500s() {
    let target = CounterTarget::start();
    let started = Instant::now();
    let outage = Duration::from_secs(4);
    let receiver = Receiver::start(move |_| if started.elapsed() < outage { 500 } else { 200 });
    let mut spate = Spate::start(&config(&target.addr.to_string(), &receiver.url()), &[]);

    // Scrape through the outage and well past it.
    wait_for(Duration::from_secs(60), "samples after the outage", || {
        (started.elapsed() > outage && counter_samples(&receiver).len() >= 6).then_some(())
    });
    let rejected = receiver
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == 500)
        .count();
    assert!(
        rejected > 0,
        "the receiver must have refused requests during the outage"
    );
    assert!(spate.metric("prometheus_remote_storage_samples_retried_total") > 0.0);

    let status = spate.proc.terminate(Duration::from_secs(90));
    assert!(
        status.success(),
        "spate must exit 0 on SIGTERM: {status:?}\n{}",
        spate.proc.log_text()
    );
    let served = target.served.load(Ordering::SeqCst) as f64;

    let got = counter_samples(&receiver);
    let all = receiver.samples();
    // A scrape that failed (e.g. timed out on a loaded machine after the target counted it) is
    // reported as up = 0; only those may leave a gap.
    let failed_scrapes = all
        .iter()
        .filter(|s| s.label("__name__") == Some("up") && s.value == 0.0)
        .count();
    let values: Vec<f64> = got.iter().map(|(_, v)| *v).collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "no duplicate or reordering: {values:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "timestamps must rise: {got:?}"
    );
    let last = values.last().copied().unwrap_or(0.0);
    let gaps = last as usize - values.len();
    assert!(
        gaps <= failed_scrapes,
        "{gaps} scrapes missing but only {failed_scrapes} reported failed: {values:?}"
    );
    // At most the scrape in flight at SIGTERM may be missing at the end.
    assert!(
        last >= served - 1.0,
        "last received {last}, target served {served}"
    );

    // Labels: target labels, external labels, escapes resolved; report series present.
    let c = all
        .iter()
        .find(|s| s.label("__name__") == Some("test_counter"))
        .unwrap();
    assert_eq!(c.label("job"), Some("counter"));
    assert_eq!(c.label("instance"), Some(target.addr.to_string().as_str()));
    assert_eq!(c.label("replica"), Some("r1"));
    let names: Vec<&str> = c.labels.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "labels must be sorted");
    let g = all
        .iter()
        .find(|s| s.label("__name__") == Some("test_gauge"))
        .unwrap();
    assert_eq!(g.label("kind"), Some("a\"quoted\""));
    assert!(
        all.iter()
            .any(|s| s.label("__name__") == Some("up") && s.value == 1.0)
    );
    assert!(
        all.iter()
            .any(|s| s.label("__name__") == Some("scrape_samples_scraped") && s.value == 2.0)
    );
    assert!(
        all.iter()
            .any(|s| s.label("__name__") == Some("scrape_duration_seconds"))
    );

    // Request headers as the spec requires.
    let headers = receiver.headers_seen.lock().unwrap();
    let h = &headers[0];
    assert_eq!(
        h.get("content-encoding").map(String::as_str),
        Some("snappy")
    );
    assert_eq!(
        h.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    assert_eq!(
        h.get("x-prometheus-remote-write-version")
            .map(String::as_str),
        Some("0.1.0")
    );
    assert!(h.get("user-agent").is_some_and(|u| u.starts_with("spate/")));
    assert!(
        headers.iter().any(|h| h.contains_key("retry-attempt")),
        "retries carry Retry-Attempt"
    );
}

#[test]
fn batches_refused_with_400_are_sent_once_and_counted() {
    let target = CounterTarget::start();
    let receiver = Receiver::start(|_| 400);
    let mut spate = Spate::start(&config(&target.addr.to_string(), &receiver.url()), &[]);

    wait_for(Duration::from_secs(60), "several refused requests", || {
        (receiver.requests.lock().unwrap().len() >= 4).then_some(())
    });
    wait_for(
        Duration::from_secs(30),
        "failed samples to be counted",
        || (spate.metric("prometheus_remote_storage_samples_failed_total") > 0.0).then_some(()),
    );
    assert_eq!(
        spate.metric("prometheus_remote_storage_samples_retried_total"),
        0.0,
        "4xx is never retried"
    );
    let status = spate.proc.terminate(Duration::from_secs(90));
    assert!(status.success());

    // No sample was offered twice: each batch went exactly once.
    let requests = receiver.requests.lock().unwrap();
    let mut seen = HashSet::new();
    for (_, samples) in requests.iter() {
        for s in samples {
            let key = (format!("{:?}", s.labels), s.ts);
            assert!(seen.insert(key), "sample sent twice: {s:?}");
        }
    }
    assert!(
        spate.proc.log_text().contains("non-recoverable error"),
        "each drop is logged"
    );
    assert!(
        receiver
            .headers_seen
            .lock()
            .unwrap()
            .iter()
            .all(|h| !h.contains_key("retry-attempt"))
    );
}

#[test]
fn dead_receiver_is_reported_once_and_shutdown_respects_the_flush_deadline() {
    let target = CounterTarget::start();
    let dead = format!("http://127.0.0.1:{}/api/v1/write", common::free_port());
    let mut spate = Spate::start(
        &config(&target.addr.to_string(), &dead),
        &["--storage.remote.flush-deadline=2s"],
    );
    wait_for(
        Duration::from_secs(30),
        "retries against the dead receiver",
        || (spate.metric("spate_remote_write_requests_failed_total") >= 5.0).then_some(()),
    );
    let started = Instant::now();
    let status = spate.proc.terminate(Duration::from_secs(60));
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "shutdown must not wait past the flush deadline by much"
    );
    let log = spate.proc.log_text();
    assert_eq!(
        log.matches("not accepting samples").count(),
        1,
        "said once, not per retry:\n{log}"
    );
    assert!(log.contains("they stay in the WAL and are sent after the restart"));
}

/// With the receiver dead, a stop does not wait out the flush deadline (60 s by default,
/// longer than Kubernetes' 30 s grace period): once the requests in flight have failed and
/// no request has succeeded since the stop began, spate exits; the WAL keeps what is unsent,
/// and a restart delivers it.
#[test]
fn a_stop_with_a_dead_receiver_ends_without_waiting_for_the_deadline() {
    let target = CounterTarget::start();
    let port = common::free_port();
    let dead = format!("http://127.0.0.1:{port}/api/v1/write");
    let data = common::TempDir::new("dead-stop");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &dead);
    let mut spate = Spate::start(&cfg, &["--cores=1", &storage]);
    wait_for(Duration::from_secs(30), "failed requests", || {
        (spate.metric("spate_remote_write_requests_failed_total") >= 2.0).then_some(())
    });
    let served = target.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    assert!(spate.proc.terminate(Duration::from_secs(90)).success());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    // Nothing was lost: the restart sends it all.
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut spate = Spate::start(&cfg, &["--cores=1", &storage]);
    wait_for(Duration::from_secs(60), "the backlog", || {
        let values: std::collections::BTreeSet<u64> = receiver
            .samples()
            .iter()
            .filter(|s| s.label("__name__") == Some("test_counter"))
            .map(|s| s.value as u64)
            .collect();
        (1..=served).all(|v| values.contains(&v)).then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// A target serving `series` gauges whose value is the scrape count, and the count served.
fn wide_target(series: usize) -> (common::TestServer, std::sync::Arc<AtomicU64>) {
    let served = std::sync::Arc::new(AtomicU64::new(0));
    let srv = served.clone();
    let target = common::TestServer::start(move |_, _| {
        let n = srv.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = String::with_capacity(series * 24);
        for i in 0..series {
            body.push_str(&format!("wide{{i=\"{i}\"}} {n}\n"));
        }
        (200, "text/plain; version=0.0.4", body.into_bytes())
    });
    (target, served)
}

#[test]
fn lanes_grow_to_drain_a_backlog_and_per_series_order_holds() {
    // 500 series every 100 ms: 5,000 samples/s. Each request takes 40 ms at the receiver, so
    // one request in flight at a time (200 samples) sends at most 5,000 samples/s and never
    // catches up with the backlog of a 3 s outage; more lanes do.
    let (target, served) = wide_target(500);
    let started = Instant::now();
    let outage = Duration::from_secs(3);
    let receiver = Receiver::start(move |_| {
        if started.elapsed() < outage {
            500
        } else {
            std::thread::sleep(Duration::from_millis(40));
            200
        }
    });
    let cfg = format!(
        r#"
global:
  scrape_interval: 100ms
scrape_configs:
  - job_name: wide
    static_configs:
      - targets: ["{}"]
remote_write:
  - url: {}
    name: lanes
    queue_config:
      capacity: 1000
      max_shards: 8
      max_samples_per_send: 200
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_backoff: 200ms
"#,
        target.addr,
        receiver.url()
    );
    let mut spate = Spate::start(&cfg, &["--cores=1"]);
    let mut most_lanes = 0.0f64;
    let wide = |r: &Receiver| {
        r.samples()
            .iter()
            .filter(|s| s.label("__name__") == Some("wide"))
            .count()
    };
    wait_for(
        Duration::from_secs(120),
        "the backlog to drain with more lanes",
        || {
            most_lanes = most_lanes.max(spate.metric("prometheus_remote_storage_shards{"));
            let due = served.load(Ordering::SeqCst).saturating_sub(10) as usize * 500;
            (started.elapsed() > outage + Duration::from_secs(5)
                && most_lanes > 1.0
                && wide(&receiver) >= due)
                .then_some(())
        },
    );
    eprintln!(
        "drained {:.1} s after the outage ended, with up to {most_lanes} lanes",
        (started.elapsed() - outage).as_secs_f64()
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let samples = receiver.samples();
    // Every sample once, and each series' samples in timestamp order.
    let mut newest: std::collections::HashMap<String, i64> = Default::default();
    let mut seen = HashSet::new();
    for s in &samples {
        let key = format!("{:?}", s.labels);
        assert!(seen.insert((key.clone(), s.ts)), "sent twice: {s:?}");
        let last = newest.entry(key.clone()).or_insert(i64::MIN);
        assert!(s.ts > *last, "{key}: {} arrived after {}", s.ts, *last);
        *last = s.ts;
    }
    // No scrape is missing for any series: each got every value from 1 to its newest.
    let mut values: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for s in samples
        .iter()
        .filter(|s| s.label("__name__") == Some("wide"))
    {
        values
            .entry(format!("{:?}", s.labels))
            .or_default()
            .push(s.value);
    }
    assert_eq!(values.len(), 500);
    for (k, v) in values {
        let top = v.iter().cloned().fold(0.0, f64::max) as usize;
        assert_eq!(v.len(), top, "{k}: a scrape is missing");
    }
}

#[test]
fn endpoint_settings_tls_auth_redirects_and_write_relabeling() {
    let Some(pki) = common::TestPki::make() else {
        return;
    };
    let target = CounterTarget::start();
    // Endpoint 1: https (private CA) with a bearer token from a file.
    let secure = Receiver::start(|_| 200);
    let front = common::TlsFront::start(&pki, secure.addr);
    let dir = common::TempDir::new("rw-settings");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    // Endpoint 2: a 307 redirect to the receiver, basic auth, and write relabeling that drops
    // one series and adds a label to the rest.
    let relabeled = Receiver::start(|_| 200);
    let to = relabeled.url();
    let redirector = common::TestServer::start(move |_, _| {
        let location: &'static str = Box::leak(to.clone().into_boxed_str());
        (307, location, Vec::new())
    });
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: https://localhost:{tls_port}/api/v1/write
    name: secure
    tls_config: {{ca_file: '{ca}'}}
    authorization: {{credentials_file: '{token}'}}
    queue_config: {{batch_send_deadline: 100ms}}
  - url: http://{redirector}/write
    name: relabeled
    basic_auth: {{username: agent, password: pa55}}
    queue_config: {{batch_send_deadline: 100ms}}
    write_relabel_configs:
      - source_labels: [__name__]
        regex: test_gauge
        action: drop
      - target_label: via
        replacement: spate
"#,
            tls_port = front.addr.port(),
            ca = pki.path("ca.crt"),
            token = token_file.display(),
            redirector = redirector.addr
        ),
    );
    let mut spate = Spate::start(&cfg, &[]);
    let names = |r: &Receiver| -> HashSet<String> {
        r.samples()
            .iter()
            .filter_map(|s| s.label("__name__").map(str::to_string))
            .collect()
    };
    wait_for(Duration::from_secs(60), "samples at both endpoints", || {
        (names(&secure).contains("test_counter") && names(&relabeled).contains("test_counter"))
            .then_some(())
    });
    let dropped = "prometheus_remote_storage_samples_dropped_total{reason=\"dropped_series\",remote_name=\"relabeled\"";
    wait_for(Duration::from_secs(30), "dropped series counted", || {
        (spate.metric(dropped) > 0.0).then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    // Over TLS, with the token read from its file.
    assert!(names(&secure).contains("test_gauge"));
    let secure_headers = secure.headers_seen.lock().unwrap().clone();
    assert!(
        secure_headers
            .iter()
            .all(|h| h.get("authorization").map(String::as_str) == Some("Bearer s3cr3t-token")),
        "{secure_headers:?}"
    );
    // Redirected, with basic auth on every hop (as Prometheus' auth round-tripper adds it),
    // and relabeled.
    let relabeled_samples = relabeled.samples();
    assert!(
        !names(&relabeled).contains("test_gauge"),
        "dropped by write_relabel_configs"
    );
    assert!(
        relabeled_samples
            .iter()
            .all(|s| s.label("via") == Some("spate")),
        "every series carries the added label"
    );
    let sorted = relabeled_samples
        .iter()
        .all(|s| s.labels.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(sorted, "labels stay sorted after relabeling");
    let basic = relabeled.headers_seen.lock().unwrap().clone();
    assert!(
        basic
            .iter()
            .all(|h| h.get("authorization").map(String::as_str) == Some("Basic YWdlbnQ6cGE1NQ==")),
        "{basic:?}"
    );
}

/// A listener that accepts connections and reads requests but never answers.
fn hanging_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stp = stop.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stp.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((sock, _)) => held.push(sock),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, stop)
}

#[test]
fn dead_and_hanging_endpoints_delay_neither_scrapes_nor_a_healthy_endpoint() {
    let target = CounterTarget::start();
    let healthy = Receiver::start(|_| 200);
    let dead = common::free_port();
    let (hang, stop_hang) = hanging_receiver();
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: http://127.0.0.1:{dead}/write
    name: dead
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}
  - url: http://{hang}/write
    name: hang
    remote_timeout: 1s
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}
  - url: {}
    name: healthy
    queue_config: {{batch_send_deadline: 100ms}}
"#,
            healthy.url()
        ),
    );
    let started = Instant::now();
    let mut spate = Spate::start(&cfg, &["--cores=1", "--storage.remote.flush-deadline=2s"]);
    let retried = |name: &str| {
        spate.metric(&format!(
            "prometheus_remote_storage_samples_retried_total{{remote_name=\"{name}\""
        ))
    };
    wait_for(
        Duration::from_secs(90),
        "20 scrapes at the healthy endpoint while the others fail",
        || {
            (counter_samples(&healthy).len() >= 20
                && retried("dead") > 0.0
                && retried("hang") > 0.0)
                .then_some(())
        },
    );
    let elapsed = started.elapsed();
    let served = target.served.load(Ordering::SeqCst);
    // The healthy endpoint is current: it has every scrape but the last few.
    let got = counter_samples(&healthy);
    let newest = got.iter().map(|(_, v)| *v).fold(0.0, f64::max) as u64;
    assert!(
        newest + 5 >= served,
        "healthy endpoint has {newest} of {served} scrapes"
    );
    // Scrapes kept their pace: at 200 ms, at least half the ticks ran.
    let ticks = elapsed.as_millis() as u64 / 200;
    assert!(served * 2 >= ticks, "{served} scrapes in {elapsed:?}");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    stop_hang.store(true, Ordering::Relaxed);
    let log = spate.proc.log_text();
    assert!(log.contains("request timed out after 1s"), "{log}");
    let values: Vec<f64> = counter_samples(&healthy).iter().map(|(_, v)| *v).collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]), "in order, once");
}

#[test]
fn retry_after_is_honoured_with_retry_on_http_429_and_429_is_dropped_without() {
    type Log = std::sync::Arc<std::sync::Mutex<Vec<(Instant, u16, Vec<(i64, f64)>)>>>;
    // Answers the first request with 429 and `Retry-After: 2`, then 200; records each request.
    let throttling = |log: Log| {
        common::TestServer::start(move |_, body| {
            let samples = counter_in(body);
            let mut log = log.lock().unwrap();
            let status = if log.is_empty() { 429 } else { 200 };
            log.push((Instant::now(), status, samples));
            (status, "retry-after:2", Vec::new())
        })
    };
    let (retry_log, drop_log): (Log, Log) = Default::default();
    let retrying = throttling(retry_log.clone());
    let dropping = throttling(drop_log.clone());
    let target = CounterTarget::start();
    let cfg = counter_config(
        &target.addr,
        "1s",
        &format!(
            r#"
  - url: http://{}/write
    name: retrying
    queue_config: {{retry_on_http_429: true, batch_send_deadline: 100ms, min_backoff: 50ms}}
  - url: http://{}/write
    name: dropping
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms}}
"#,
            retrying.addr, dropping.addr
        ),
    );
    let mut spate = Spate::start(&cfg, &["--cores=1"]);
    wait_for(Duration::from_secs(60), "requests after the 429", || {
        (retry_log.lock().unwrap().len() >= 3 && drop_log.lock().unwrap().len() >= 3).then_some(())
    });
    let failed =
        spate.metric("prometheus_remote_storage_samples_failed_total{remote_name=\"dropping\"");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let retry = retry_log.lock().unwrap();
    let (first_at, _, first) = &retry[0];
    let (again_at, _, again) = &retry[1];
    assert!(
        again_at.duration_since(*first_at) >= Duration::from_millis(1900),
        "the retry waited for Retry-After: {:?}",
        again_at.duration_since(*first_at)
    );
    assert_eq!(
        again[..first.len()],
        first[..],
        "the same batch again, first"
    );
    let drop = drop_log.lock().unwrap();
    let (_, _, refused) = &drop[0];
    assert!(
        drop[1..]
            .iter()
            .all(|(_, _, s)| s.iter().all(|x| !refused.contains(x))),
        "without retry_on_http_429 the refused batch is not sent again"
    );
    assert!(failed > 0.0, "the dropped batch is counted as failed");
}

#[test]
fn a_receiver_that_closes_mid_response_gets_the_batch_again() {
    use std::io::{BufRead, BufReader, Read, Write};
    let target = CounterTarget::start();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let got: std::sync::Arc<std::sync::Mutex<Vec<(i64, f64)>>> = Default::default();
    let (sink, requests) = (got.clone(), std::sync::Arc::new(AtomicU64::new(0)));
    let count = requests.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let (sink, count) = (sink.clone(), count.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut writer = sock;
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    // The first three requests get half a response and a closed connection.
                    if count.fetch_add(1, Ordering::SeqCst) < 3 {
                        let _ =
                            writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\npart");
                        return;
                    }
                    sink.lock().unwrap().extend(counter_in(&body));
                    let _ = writer.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                }
            });
        }
    });
    let cfg = counter_config(
        &target.addr,
        "300ms",
        &format!(
            r#"
  - url: http://{addr}/write
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 50ms, max_backoff: 200ms}}
"#
        ),
    );
    let mut spate = Spate::start(&cfg, &["--cores=1"]);
    wait_for(
        Duration::from_secs(60),
        "samples after the broken responses",
        || (got.lock().unwrap().len() >= 8).then_some(()),
    );
    let retried = spate.metric("prometheus_remote_storage_samples_retried_total");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert!(retried > 0.0);
    let values: Vec<f64> = got.lock().unwrap().iter().map(|(_, v)| *v).collect();
    // Nothing lost, nothing reordered: every scrape from the first, in order.
    assert_eq!(
        values[0], 1.0,
        "the batch cut off mid-response arrived: {values:?}"
    );
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1.0), "{values:?}");
}

#[test]
fn sample_age_limit_drops_old_samples_when_sent_and_when_retried() {
    // `stamped` carries a timestamp an hour old; `fresh` none.
    let target = common::TestServer::start(|_, _| {
        let hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            - 3_600_000;
        let body = format!("stamped 1 {hour_ago}\nfresh 1\n");
        (200, "text/plain; version=0.0.4", body.into_bytes())
    });
    let started = Instant::now();
    let outage = Duration::from_secs(3);
    // Refuses everything for 3 s: what waits longer than the 1 s limit is dropped on retry.
    let flaky = Receiver::start(move |_| if started.elapsed() < outage { 503 } else { 200 });
    let steady = Receiver::start(|_| 200);
    let cfg = format!(
        r#"
global:
  scrape_interval: 200ms
scrape_configs:
  - job_name: aged
    static_configs:
      - targets: ["{}"]
remote_write:
  - url: {}
    name: steady
    queue_config: {{sample_age_limit: 30m, batch_send_deadline: 100ms}}
  - url: {}
    name: flaky
    queue_config: {{sample_age_limit: 1s, batch_send_deadline: 100ms, min_backoff: 100ms, max_backoff: 200ms}}
"#,
        target.addr,
        steady.url(),
        flaky.url()
    );
    let mut spate = Spate::start(&cfg, &["--cores=1"]);
    let named = |r: &Receiver, name: &str| {
        r.samples()
            .into_iter()
            .filter(|s| s.label("__name__") == Some(name))
            .collect::<Vec<_>>()
    };
    wait_for(
        Duration::from_secs(60),
        "fresh samples after the outage",
        || {
            (started.elapsed() > outage + Duration::from_secs(1)
                && named(&flaky, "fresh").len() >= 5
                && named(&steady, "fresh").len() >= 5)
                .then_some(())
        },
    );
    let too_old = |name: &str| {
        spate.metric(&format!(
            "prometheus_remote_storage_samples_dropped_total{{reason=\"too_old\",remote_name=\"{name}\""
        ))
    };
    let (steady_old, flaky_old) = (too_old("steady"), too_old("flaky"));
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert!(
        named(&steady, "stamped").is_empty(),
        "older than the limit when sent"
    );
    assert!(steady_old > 0.0);
    // The flaky endpoint's first accepted samples were scraped at most ~1 s before it
    // recovered; those from the start of the outage were dropped while retrying.
    let first_fresh = named(&flaky, "fresh").iter().map(|s| s.ts).min().unwrap();
    let outage_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - (started.elapsed().as_millis() as i64 - outage.as_millis() as i64);
    assert!(
        first_fresh > outage_end - 2_500,
        "first sample after the outage is {} ms older than its end",
        outage_end - first_fresh
    );
    assert!(flaky_old > named(&flaky, "stamped").len() as f64);
}

#[test]
fn family_metadata_is_sent_on_its_interval_where_enabled() {
    let target = CounterTarget::start();
    let sending = Receiver::start(|_| 200);
    let silent = Receiver::start(|_| 200);
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: {}
    name: sending
    metadata_config: {{send_interval: 1s, max_samples_per_send: 1}}
    queue_config: {{batch_send_deadline: 100ms}}
  - url: {}
    name: silent
    metadata_config: {{send: false}}
"#,
            sending.url(),
            silent.url()
        ),
    );
    let mut spate = Spate::start(&cfg, &[]);
    wait_for(Duration::from_secs(60), "two rounds of metadata", || {
        let m = sending.metadata.lock().unwrap();
        (m.iter()
            .filter(|m| m.metric_family_name == "test_counter")
            .count()
            >= 2)
            .then_some(())
    });
    let sent = spate.metric("prometheus_remote_storage_metadata_total{remote_name=\"sending\"");
    // Prometheus' remote-storage metric names, labelled by remote_name and url, so existing
    // dashboards and alerts work.
    let (_, page) = common::http_get(&spate.web, "/metrics").unwrap();
    let labels = format!("{{remote_name=\"sending\",url=\"{}\"}}", sending.url());
    for name in [
        "prometheus_remote_storage_samples_total",
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_retried_total",
        "prometheus_remote_storage_samples_pending",
        "prometheus_remote_storage_bytes_total",
        "prometheus_remote_storage_shards",
        "prometheus_remote_storage_shards_desired",
        "prometheus_remote_storage_shards_min",
        "prometheus_remote_storage_shards_max",
        "prometheus_remote_storage_max_samples_per_send",
        "prometheus_remote_storage_shard_capacity",
        "prometheus_remote_storage_queue_highest_sent_timestamp_seconds",
        "prometheus_remote_storage_metadata_total",
        "prometheus_remote_storage_sent_batch_duration_seconds_count",
    ] {
        assert!(
            page.contains(&format!("{name}{labels} ")),
            "{name}{labels} in\n{page}"
        );
    }
    assert!(page.contains(&format!(
        "prometheus_remote_storage_samples_dropped_total{{reason=\"too_old\",remote_name=\"sending\",url=\"{}\"}} 0",
        sending.url()
    )));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let highest = spate.metric("prometheus_remote_storage_highest_timestamp_in_seconds ");
    let sent_ts = spate.metric(&format!(
        "prometheus_remote_storage_queue_highest_sent_timestamp_seconds{labels}"
    ));
    assert!(
        (now - highest).abs() < 60.0,
        "highest timestamp {highest} near now {now}"
    );
    assert!(
        sent_ts > 0.0 && sent_ts <= highest + 0.001,
        "sent {sent_ts} <= appended {highest}\n{page}"
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let m = sending.metadata.lock().unwrap();
    let counter = m
        .iter()
        .find(|m| m.metric_family_name == "test_counter")
        .unwrap();
    assert_eq!(
        (counter.r#type, counter.help.as_str()),
        (1, "Scrapes served.")
    );
    // Families without TYPE, HELP or UNIT lines have no metadata, as in Prometheus.
    assert!(m.iter().all(|m| m.metric_family_name != "test_gauge"));
    assert!(sent >= 2.0);
    assert!(
        silent.metadata.lock().unwrap().is_empty(),
        "send: false sends none"
    );
}

#[test]
fn remote_write_2_falls_back_to_1_on_415_and_resends_the_refused_batch() {
    let target = CounterTarget::start();
    let got: std::sync::Arc<std::sync::Mutex<Vec<f64>>> = Default::default();
    let refused = std::sync::Arc::new(AtomicU64::new(0));
    let (sink, count) = (got.clone(), refused.clone());
    let receiver = common::TestServer::start(move |headers, body| {
        let ct = headers.get("content-type").cloned().unwrap_or_default();
        if ct.contains("io.prometheus.write.v2.Request") {
            count.fetch_add(1, Ordering::SeqCst);
            return (415, "text/plain", b"unsupported".to_vec());
        }
        sink.lock()
            .unwrap()
            .extend(counter_in(body).into_iter().map(|(_, v)| v));
        (204, "text/plain", Vec::new())
    });
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: http://{}/write
    protobuf_message: io.prometheus.write.v2.Request
    queue_config: {{batch_send_deadline: 100ms}}
"#,
            receiver.addr
        ),
    );
    let mut spate = Spate::start(&cfg, &[]);
    wait_for(Duration::from_secs(60), "samples as 1.0", || {
        (got.lock().unwrap().len() >= 5).then_some(())
    });
    let failed = spate.metric("prometheus_remote_storage_samples_failed_total");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_eq!(refused.load(Ordering::SeqCst), 1, "2.0 is tried once");
    assert_eq!(failed, 0.0);
    let values = got.lock().unwrap().clone();
    assert_eq!(
        values[0], 1.0,
        "the refused batch was sent again: {values:?}"
    );
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1.0), "{values:?}");
}

#[test]
fn sigv4_signs_each_request_over_what_goes_on_the_wire() {
    type Seen =
        std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, Vec<u8>)>>>;
    let seen: Seen = Default::default();
    let log = seen.clone();
    let receiver = common::TestServer::start(move |headers, body| {
        log.lock().unwrap().push((headers.clone(), body.to_vec()));
        (204, "text/plain", Vec::new())
    });
    let target = CounterTarget::start();
    let dir = common::TempDir::new("sigv4");
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n[amp]\naws_access_key_id = AKIDFILE\naws_secret_access_key = file-secret\naws_session_token = file-token\n",
    )
    .unwrap();
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: http://{addr}/workspaces/ws-1/api/v1/remote_write
    name: keys
    sigv4: {{region: eu-west-1, access_key: AKIDCONFIG, secret_key: config-secret}}
    queue_config: {{batch_send_deadline: 100ms}}
  - url: http://{addr}/workspaces/ws-2/api/v1/remote_write
    name: profile
    sigv4: {{region: us-east-2, profile: amp}}
    queue_config: {{batch_send_deadline: 100ms}}
"#,
            addr = receiver.addr
        ),
    );
    let path = creds.display().to_string();
    let mut spate = Spate::start_with(&cfg, &[], |cmd| {
        cmd.env("AWS_SHARED_CREDENTIALS_FILE", &path);
    });
    wait_for(
        Duration::from_secs(60),
        "signed requests to both workspaces",
        || {
            let s = seen.lock().unwrap();
            let has = |ws: &str| s.iter().any(|(h, _)| h[":path"].contains(ws));
            (has("ws-1") && has("ws-2")).then_some(())
        },
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    for (headers, body) in seen.lock().unwrap().iter() {
        let profile = headers[":path"].contains("ws-2");
        let creds = spate::http::sigv4::Credentials {
            access_key: if profile { "AKIDFILE" } else { "AKIDCONFIG" }.into(),
            secret_key: if profile {
                "file-secret"
            } else {
                "config-secret"
            }
            .into(),
            session_token: profile.then(|| "file-token".to_string()),
        };
        let h = |k: &str| headers.get(k).map(String::as_str).unwrap_or("");
        let want = spate::http::sigv4::sign(
            &spate::http::sigv4::Request {
                method: "POST",
                host: h("host"),
                path_and_query: h(":path"),
                headers: &[
                    ("Content-Encoding", h("content-encoding")),
                    ("Content-Type", h("content-type")),
                    (
                        "X-Prometheus-Remote-Write-Version",
                        h("x-prometheus-remote-write-version"),
                    ),
                ],
                body,
            },
            &creds,
            if profile { "us-east-2" } else { "eu-west-1" },
            "aps",
            amz_time(h("x-amz-date")),
        );
        let auth = want
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: "))
            .unwrap()
            .trim_end();
        assert_eq!(h("authorization"), auth, "{headers:?}");
        assert!(auth.contains(if profile {
            "/us-east-2/aps/aws4_request"
        } else {
            "/eu-west-1/aps/aws4_request"
        }));
        assert_eq!(
            h("x-amz-security-token"),
            if profile { "file-token" } else { "" }
        );
    }
}

/// What a Remote Write 2.0 receiver got, per series: labels, metadata type, help, unit,
/// `created_timestamp`, and the first sample's `start_timestamp`.
type V2Series = Vec<(Vec<(String, String)>, i32, String, String, i64, i64)>;

/// Job `counter` on `target`, sending Remote Write 2.0 to `receiver`.
fn v2_config(target: &dyn std::fmt::Display, receiver: &dyn std::fmt::Display) -> String {
    counter_config(
        target,
        "200ms",
        &format!(
            "  - url: http://{receiver}/write\n    protobuf_message: io.prometheus.write.v2.Request\n    queue_config: {{batch_send_deadline: 100ms}}\n"
        ),
    )
}

/// A Remote Write 2.0 receiver answering with written counts; what it got.
fn v2_receiver() -> (
    common::TestServer,
    std::sync::Arc<std::sync::Mutex<V2Series>>,
) {
    let got: std::sync::Arc<std::sync::Mutex<V2Series>> = Default::default();
    let sink = got.clone();
    let receiver = common::TestServer::start(move |headers, body| {
        assert!(headers["content-type"].contains("io.prometheus.write.v2.Request"));
        let req = spate::entry::proto::v2::decode_request(body).unwrap();
        let sym = |r: u32| req.symbols[r as usize].clone();
        let mut s = sink.lock().unwrap();
        for t in &req.timeseries {
            let labels = t
                .labels_refs
                .chunks(2)
                .map(|p| (sym(p[0]), sym(p[1])))
                .collect();
            let m = t.metadata.clone().unwrap_or_default();
            let start = t.samples.first().map_or(0, |x| x.start_timestamp);
            s.push((
                labels,
                m.r#type,
                sym(m.help_ref),
                sym(m.unit_ref),
                t.created_timestamp,
                start,
            ));
        }
        let n = req
            .timeseries
            .iter()
            .map(|t| t.samples.len())
            .sum::<usize>();
        let written = format!("header:X-Prometheus-Remote-Write-Samples-Written: {n}");
        (200, &*Box::leak(written.into_boxed_str()), Vec::new())
    });
    (receiver, got)
}

#[test]
fn remote_write_2_carries_metadata_and_created_timestamps_inline() {
    // An OpenMetrics target: a counter and a histogram with `_created`, a gauge.
    let target = common::TestServer::start(|_, _| {
        let body = "# TYPE req counter\n# HELP req Requests.\nreq_total{path=\"/a\"} 7\nreq_created{path=\"/a\"} 1700000000.5\n# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\nlat_seconds_bucket{le=\"1.0\"} 2\nlat_seconds_bucket{le=\"+Inf\"} 3\nlat_seconds_count 3\nlat_seconds_sum 1.5\nlat_seconds_created 1600000000\n# TYPE temp gauge\ntemp 21.5\n# EOF\n";
        (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    });
    let (receiver, got) = v2_receiver();
    let cfg = v2_config(&target.addr, &receiver.addr);
    let mut spate = Spate::start(&cfg, &[]);
    let find = |name: &str| {
        got.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s.0.iter().any(|(n, v)| n == "__name__" && v == name))
            .cloned()
    };
    // The first scrape's requests may go out before its metadata and created timestamps are
    // known to the core; later ones carry them.
    let counter = wait_for(Duration::from_secs(60), "a counter with metadata", || {
        find("req_total").filter(|s| s.1 != 0 && s.4 != 0)
    });
    let log = spate.proc.log_text();
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_eq!(
        (counter.1, counter.2.as_str()),
        (1, "Requests."),
        "counter, HELP"
    );
    assert_eq!(
        (counter.4, counter.5),
        (1_700_000_000_500, 1_700_000_000_500),
        "created"
    );
    let bucket = find("lat_seconds_bucket").unwrap();
    assert_eq!(
        (bucket.1, bucket.3.as_str()),
        (3, "seconds"),
        "histogram, UNIT"
    );
    assert_eq!(bucket.4, 1_600_000_000_000);
    let count = find("lat_seconds_count").unwrap();
    assert_eq!(count.5, 1_600_000_000_000);
    let gauge = find("temp").unwrap();
    assert_eq!((gauge.1, gauge.4), (2, 0), "gauge, no created timestamp");
    assert!(!log.contains("does not take Remote Write 2.0"), "{log}");
}

#[test]
fn remote_write_2_carries_created_timestamps_of_protobuf_targets() {
    use prost::Message;
    use spate::exposition::client_model::{Metric, MetricFamily, Timestamp, Value};
    // A protobuf target: one counter with a created timestamp.
    let family = MetricFamily {
        name: "jobs_total".into(),
        help: "Jobs.".into(),
        r#type: 0,
        metric: vec![Metric {
            counter: Some(Value {
                value: 4.0,
                exemplar: None,
                created_timestamp: Some(Timestamp {
                    seconds: 1_650_000_000,
                    nanos: 500_000_000,
                }),
            }),
            ..Default::default()
        }],
    };
    let body = family.encode_length_delimited_to_vec();
    let target = common::TestServer::start(move |_, _| (200, common::PROTOBUF, body.clone()));
    let (receiver, got) = v2_receiver();
    let cfg = v2_config(&target.addr, &receiver.addr).replace(
        "  - job_name: counter\n",
        "  - job_name: counter\n    scrape_protocols: [PrometheusProto]\n",
    );
    let mut spate = Spate::start(&cfg, &[]);
    let series = wait_for(
        Duration::from_secs(60),
        "the counter with its created timestamp",
        || {
            got.lock()
                .unwrap()
                .iter()
                .find(|s| {
                    s.0.iter()
                        .any(|(n, v)| n == "__name__" && v == "jobs_total")
                        && s.4 != 0
                })
                .cloned()
        },
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_eq!((series.4, series.5), (1_650_000_000_500, 1_650_000_000_500));
    assert_eq!(
        (series.1, series.2.as_str()),
        (1, "Jobs."),
        "counter metadata too"
    );
}

/// The time an `X-Amz-Date` (`20150830T123600Z`) names.
fn amz_time(d: &str) -> std::time::SystemTime {
    let n = |r: std::ops::Range<usize>| d[r].parse::<i64>().unwrap();
    let (y, m, day) = (n(0..4), n(4..6), n(6..8));
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15);
    std::time::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// The SigV4 `Authorization` header `sign` gives for a request seen by a test server.
fn expected_signature(
    headers: &std::collections::HashMap<String, String>,
    body: &[u8],
    signed: &[&str],
    creds: &spate::http::sigv4::Credentials,
    region: &str,
    service: &str,
) -> String {
    let h = |k: &str| headers.get(k).map(String::as_str).unwrap_or("");
    let at = amz_time(h("x-amz-date"));
    let named: Vec<(&str, &str)> = signed
        .iter()
        .map(|k| (*k, h(&k.to_ascii_lowercase())))
        .collect();
    let lines = spate::http::sigv4::sign(
        &spate::http::sigv4::Request {
            method: "POST",
            host: h("host"),
            path_and_query: h(":path"),
            headers: &named,
            body,
        },
        creds,
        region,
        service,
        at,
    );
    lines
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: "))
        .unwrap()
        .trim_end()
        .to_string()
}

/// `sigv4.role_arn`: requests are signed with the role's temporary credentials, which a fake
/// AWS STS gives (its real AssumeRole answer documents) for the base keys; the STS request
/// carries the role, the external id, the session name and tags, signed for `sts`. Failed
/// AssumeRole calls hold samples back without losing them; credentials are kept (not one STS
/// call per request) and renewed a minute before they expire.
#[test]
fn sigv4_role_arn_signs_with_credentials_assumed_through_sts() {
    type Seen =
        std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, Vec<u8>)>>>;
    let sts_seen: Seen = Default::default();
    let log = sts_seen.clone();
    let sts = common::TestServer::start(move |headers, body| {
        let mut calls = log.lock().unwrap();
        calls.push((headers.clone(), body.to_vec()));
        let n = calls.len();
        if n == 1 {
            // The first call is refused, as STS refuses: nothing may be lost meanwhile.
            return (
                403,
                "text/xml",
                b"<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not yet</Message></Error><RequestId>r1</RequestId></ErrorResponse>".to_vec(),
            );
        }
        // Credentials that expire in 63 s: renewed about 3 s later.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let doc = format!(
            r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/writer/spate-test</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:spate-test</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIATEMP{n}</AccessKeyId>
      <SecretAccessKey>temp-secret-{n}</SecretAccessKey>
      <SessionToken>token-{n}</SessionToken>
      <Expiration>{}</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#,
            spate::log::rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_secs(now + 63))
        );
        (200, "text/xml", doc.into_bytes())
    });
    let seen: Seen = Default::default();
    let got: std::sync::Arc<std::sync::Mutex<Vec<f64>>> = Default::default();
    let (log, sink) = (seen.clone(), got.clone());
    let receiver = common::TestServer::start(move |headers, body| {
        log.lock().unwrap().push((headers.clone(), body.to_vec()));
        sink.lock()
            .unwrap()
            .extend(counter_in(body).into_iter().map(|(_, v)| v));
        (204, "text/plain", Vec::new())
    });
    let target = CounterTarget::start();
    let cfg = counter_config(
        &target.addr,
        "200ms",
        &format!(
            r#"
  - url: http://{}/workspaces/ws-1/api/v1/remote_write
    sigv4:
      region: eu-west-1
      access_key: AKIDBASE
      secret_key: base-secret
      role_arn: arn:aws:iam::123456789012:role/writer
      external_id: ext-42
      session_name: spate-test
      tags: {{team: metrics}}
    queue_config: {{batch_send_deadline: 100ms, min_backoff: 100ms, max_backoff: 500ms}}
"#,
            receiver.addr
        ),
    );
    let sts_url = format!("http://{}/", sts.addr);
    let mut spate = Spate::start_with(&cfg, &[], |cmd| {
        cmd.env("AWS_ENDPOINT_URL_STS", &sts_url)
            .env_remove("AWS_ENDPOINT_URL");
    });
    let token_seen = |token: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(h, _)| h.get("x-amz-security-token").map(String::as_str) == Some(token))
    };
    wait_for(
        Duration::from_secs(60),
        "requests signed with renewed credentials",
        || token_seen("token-3").then_some(()),
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    // The STS calls: AssumeRole for the role, signed with the base keys for `sts`.
    let calls = sts_seen.lock().unwrap().clone();
    let requests = seen.lock().unwrap().clone();
    assert!(
        calls.len() >= 3 && calls.len() * 4 < requests.len(),
        "{} AssumeRole calls for {} requests: credentials are kept",
        calls.len(),
        requests.len()
    );
    let base = spate::http::sigv4::Credentials {
        access_key: "AKIDBASE".into(),
        secret_key: "base-secret".into(),
        session_token: None,
    };
    for (headers, body) in &calls {
        let form: std::collections::BTreeMap<String, String> =
            spate::http::query_pairs(&String::from_utf8_lossy(body))
                .into_iter()
                .collect();
        assert_eq!(form["Action"], "AssumeRole");
        assert_eq!(form["Version"], "2011-06-15");
        assert_eq!(form["RoleArn"], "arn:aws:iam::123456789012:role/writer");
        assert_eq!(form["ExternalId"], "ext-42");
        assert_eq!(form["RoleSessionName"], "spate-test");
        assert_eq!(form["DurationSeconds"], "900");
        assert_eq!(
            (
                form["Tags.member.1.Key"].as_str(),
                form["Tags.member.1.Value"].as_str()
            ),
            ("team", "metrics")
        );
        assert_eq!(headers[":method"], "POST");
        let auth = &headers["authorization"];
        assert!(
            auth.contains("Credential=AKIDBASE/") && auth.contains("/eu-west-1/sts/aws4_request"),
            "{auth}"
        );
        assert_eq!(
            auth,
            &expected_signature(headers, body, &["Content-Type"], &base, "eu-west-1", "sts")
        );
    }
    // Every remote-write request: signed with one set of temporary credentials, whole.
    for (headers, body) in &requests {
        let token = headers
            .get("x-amz-security-token")
            .expect("a session token");
        let n = token.strip_prefix("token-").unwrap();
        let creds = spate::http::sigv4::Credentials {
            access_key: format!("ASIATEMP{n}"),
            secret_key: format!("temp-secret-{n}"),
            session_token: Some(token.clone()),
        };
        assert_eq!(
            headers["authorization"],
            expected_signature(
                headers,
                body,
                &[
                    "Content-Encoding",
                    "Content-Type",
                    "X-Prometheus-Remote-Write-Version"
                ],
                &creds,
                "eu-west-1",
                "aps"
            )
        );
    }
    // Nothing was lost while AssumeRole failed: the counter arrives from its first value.
    let values = got.lock().unwrap().clone();
    assert_eq!(values.first(), Some(&1.0), "{values:?}");
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1.0), "{values:?}");
}

/// The `test_counter` samples a receiver got (staleness markers aside), in arrival order.
fn counter_received(r: &Receiver) -> Vec<common::Received> {
    r.samples()
        .into_iter()
        .filter(|s| s.label("__name__") == Some("test_counter") && !s.value.is_nan())
        .collect()
}

/// Every value of the counter once, each one more than the last (no sample lost or sent
/// twice), and each series' samples in timestamp order as they arrived.
fn assert_whole(name: &str, got: &[common::Received]) {
    let mut by_series: std::collections::BTreeMap<Vec<(String, String)>, i64> = Default::default();
    for s in got {
        let last = by_series.entry(s.labels.clone()).or_insert(i64::MIN);
        assert!(s.ts > *last, "{name}: {:?} arrived out of order", s.labels);
        *last = s.ts;
    }
    let mut values: Vec<f64> = got.iter().map(|s| s.value).collect();
    values.sort_by(f64::total_cmp);
    assert!(
        values.windows(2).all(|w| w[1] == w[0] + 1.0),
        "{name}: values not consecutive (lost or duplicated): {values:?}"
    );
}

/// A reload applies `remote_write` and `external_labels` while data flows: the unchanged
/// endpoint goes on untouched, the changed one continues from its cursor with its new
/// settings (write relabeling here), the removed one stops and its WAL position is deleted,
/// the added one starts at the WAL's head; no sample is lost or sent twice at any endpoint
/// that stays, and samples scraped after the reload carry the new external labels.
#[test]
fn a_reload_adds_changes_and_removes_endpoints_while_data_flows() {
    let target = CounterTarget::start();
    let (a, b, c, d) = (
        Receiver::start(|_| 200),
        Receiver::start(|_| 200),
        Receiver::start(|_| 200),
        Receiver::start(|_| 200),
    );
    // `e` changes while its receiver refuses: the old shard gives up on what it holds, and
    // the new one sends it from the endpoint's cursor once the receiver is back.
    let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = refusing.clone();
    let e = Receiver::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            503
        } else {
            200
        }
    });
    let endpoint = |name: &str, r: &Receiver, extra: &str| {
        format!(
            "  - url: {}\n    name: {name}\n    queue_config: {{batch_send_deadline: 100ms, max_samples_per_send: 5}}\n{extra}",
            r.url()
        )
    };
    let before = counter_config(
        &target.addr,
        "100ms",
        &format!(
            "{}{}{}{}",
            endpoint("a", &a, ""),
            endpoint("b", &b, ""),
            endpoint("c", &c, ""),
            endpoint("e", &e, "    headers: {X-Stage: one}\n")
        ),
    )
    .replacen("global:\n", "global:\n  external_labels: {phase: one}\n", 1);
    let after = counter_config(
        &target.addr,
        "100ms",
        &format!(
            "{}{}{}{}",
            endpoint("a", &a, ""),
            endpoint(
                "b",
                &b,
                "    write_relabel_configs: [{target_label: stage, replacement: two}]\n"
            ),
            endpoint("d", &d, ""),
            endpoint(
                "e",
                &e,
                "    headers: {X-Stage: two}\n    write_relabel_configs: [{target_label: stage, replacement: two}]\n"
            )
        ),
    )
    .replacen("global:\n", "global:\n  external_labels: {phase: two}\n", 1);
    let mut spate = Spate::start(&before, &["--web.enable-lifecycle"]);
    wait_for(Duration::from_secs(60), "samples at a, b, c and e", || {
        [&a, &b, &c, &e]
            .iter()
            .all(|r| counter_received(r).len() >= 10)
            .then_some(())
    });
    refusing.store(true, Ordering::SeqCst);
    let refused_before = e.requests.lock().unwrap().len();
    wait_for(Duration::from_secs(30), "e refusing", || {
        (e.requests.lock().unwrap().len() >= refused_before + 2).then_some(())
    });
    std::fs::write(spate.dir.path().join("spate.yml"), &after).unwrap();
    let reloaded_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (code, body) = common::http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    let recovered_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    refusing.store(false, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(60),
        "samples of the new configuration",
        || {
            let e_two = counter_received(&e)
                .iter()
                .filter(|s| s.label("stage") == Some("two"))
                .count();
            if e_two < 10 {
                return None;
            }
            let a_two = counter_received(&a)
                .iter()
                .filter(|s| s.label("phase") == Some("two"))
                .count();
            let b_two = counter_received(&b)
                .iter()
                .filter(|s| s.label("stage") == Some("two"))
                .count();
            (a_two >= 10 && b_two >= 10 && counter_received(&d).len() >= 10).then_some(())
        },
    );
    let metrics = common::http_get(&spate.web, "/metrics").unwrap().1;
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let (ga, gb, gc, gd) = (
        counter_received(&a),
        counter_received(&b),
        counter_received(&c),
        counter_received(&d),
    );
    // Each endpoint that stays got every value once, in order, across the reload.
    let ge = counter_received(&e);
    for (name, got) in [("a", &ga), ("b", &gb), ("d", &gd), ("e", &ge)] {
        assert_whole(name, got);
    }
    // e's old shard delivered what it held once the receiver was back (within the flush
    // deadline); what was scraped meanwhile waited in the WAL for the new one.
    assert!(
        ge.iter()
            .any(|s| s.label("stage") == Some("two") && s.ts < recovered_at),
        "the new shard read its backlog from the endpoint's cursor"
    );
    assert!(
        ge.iter()
            .all(|s| s.label("stage").is_some() || s.label("phase") == Some("one"))
    );
    // External labels change once, at a scrape after the reload.
    let phases: Vec<&str> = ga.iter().map(|s| s.label("phase").unwrap_or("")).collect();
    let switch = phases.iter().position(|p| *p == "two").unwrap();
    assert!(phases[..switch].iter().all(|p| *p == "one"), "{phases:?}");
    assert!(phases[switch..].iter().all(|p| *p == "two"), "{phases:?}");
    assert!(ga[switch].ts >= reloaded_at - 1000);
    // The changed endpoint: its new write relabeling from some sample on.
    let stages: Vec<bool> = gb.iter().map(|s| s.label("stage") == Some("two")).collect();
    let first = stages.iter().position(|s| *s).unwrap();
    assert!(
        stages[first..].iter().all(|s| *s),
        "b's change applies once: {stages:?}"
    );
    // The removed endpoint gets nothing scraped after the reload; the added one nothing
    // scraped before it (it starts at the head).
    assert!(
        gc.iter().all(|s| s.ts < reloaded_at + 2000),
        "c got samples after its removal"
    );
    assert!(
        gd.iter().all(|s| s.ts >= reloaded_at - 2000),
        "d got old samples"
    );
    // Only b was restarted; c's position left the cursors files, d's is there.
    let log = spate.proc.log_text();
    let lines = |needle: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains(needle))
            .map(String::from)
            .collect()
    };
    let changed = lines("remote write endpoint changed by a reload");
    assert!(
        changed.len() >= 2
            && changed
                .iter()
                .all(|l| l.contains("remote_name=b") || l.contains("remote_name=e")),
        "{changed:?}"
    );
    let removed = lines("remote write endpoint removed by a reload");
    assert!(
        !removed.is_empty() && removed.iter().all(|l| l.contains("remote_name=c")),
        "{removed:?}"
    );
    let added = lines("remote write endpoint added by a reload");
    assert!(
        !added.is_empty() && added.iter().all(|l| l.contains("remote_name=d")),
        "{added:?}"
    );
    let mut cursors = String::new();
    for entry in walk(&spate.dir.path().join("data")) {
        if entry.file_name().is_some_and(|n| n == "cursors") {
            cursors.push_str(&std::fs::read_to_string(&entry).unwrap());
        }
    }
    let names: HashSet<&str> = cursors
        .lines()
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(
        names,
        ["a", "b", "d", "e"].into_iter().collect(),
        "{cursors}"
    );
    assert!(
        !metrics.contains("remote_name=\"c\""),
        "c's series left /metrics"
    );
    assert!(metrics.contains("prometheus_remote_storage_samples_total{remote_name=\"d\""));
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
