//! Remote-write delivery against in-process receivers that fail on purpose.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
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
