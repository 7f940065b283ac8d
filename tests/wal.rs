//! The WAL end to end, with real processes: a graceful stop with a backlog, `kill -9` at
//! random moments, and the size bound, each checked by what a receiver finally gets.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{CounterTarget, Receiver, Spate, TempDir, free_port, wait_for};

fn config(target: &str, receiver: &str, interval: &str) -> String {
    format!(
        r#"
global:
  scrape_interval: {interval}
scrape_configs:
  - job_name: counter
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: {receiver}
    name: primary
    queue_config:
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_backoff: 300ms
"#
    )
}

/// The distinct values of `test_counter` the receiver accepted.
fn counter_values(r: &Receiver) -> BTreeSet<u64> {
    r.samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("test_counter"))
        .map(|s| s.value as u64)
        .collect()
}

/// Per series, every sample seen for the first time is newer than all seen before it: order
/// holds, and anything older is a re-sent duplicate (at-least-once after a crash).
fn assert_per_series_order(r: &Receiver) {
    let mut seen: std::collections::HashMap<String, (i64, BTreeSet<i64>)> = Default::default();
    for s in r.samples() {
        let key = format!("{:?}", s.labels);
        let (newest, all) = seen
            .entry(key.clone())
            .or_insert((i64::MIN, BTreeSet::new()));
        if all.insert(s.ts) {
            assert!(
                s.ts > *newest,
                "{key}: new sample {} arrived after {newest}",
                s.ts
            );
            *newest = s.ts;
        }
    }
}

fn missing(values: &BTreeSet<u64>, upto: u64) -> Vec<u64> {
    (1..=upto).filter(|v| !values.contains(v)).collect()
}

#[test]
fn backlog_from_before_a_graceful_restart_is_delivered() {
    let target = CounterTarget::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let data = TempDir::new("wal-restart");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &url, "500ms");

    // First run: the receiver is down for its whole life.
    let mut first = Spate::start(&cfg, &[&storage, "--storage.remote.flush-deadline=1s"]);
    wait_for(Duration::from_secs(60), "a backlog of scrapes", || {
        (target.served.load(Ordering::SeqCst) >= 8).then_some(())
    });
    assert!(first.proc.terminate(Duration::from_secs(60)).success());
    let served_first = target.served.load(Ordering::SeqCst);
    assert!(
        first.proc.log_text().contains("stay in the WAL"),
        "{}",
        first.proc.log_text()
    );

    // Second run: the receiver is up. Everything from the first run arrives.
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut second = Spate::start(&cfg, &[&storage]);
    wait_for(Duration::from_secs(90), "the first run's backlog", || {
        missing(&counter_values(&receiver), served_first)
            .is_empty()
            .then_some(())
    });
    assert!(
        second
            .proc
            .log_text()
            .contains("resuming remote write from the WAL")
    );
    assert!(second.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn nothing_committed_is_lost_to_kill_9() {
    let target = CounterTarget::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let data = TempDir::new("wal-crash");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &url, "300ms");
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut committed = 0;
    for round in 0..5 {
        let spate = Spate::start(&cfg, &[&storage]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run = Duration::from_millis(700 + seed % 2500);
        std::thread::sleep(run);
        // Scrapes served up to here are committed well before the kill (a commit takes
        // microseconds; the next scrape is 300 ms away at most, and we give it 150 ms).
        committed = target.served.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        // SAFETY: SIGKILL to the child we started.
        unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGKILL) };
        drop(spate);
        eprintln!("round {round}: killed after {run:?}, {committed} scrapes served");
    }
    assert!(committed >= 5, "the target was scraped");

    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut last = Spate::start(&cfg, &[&storage]);
    let started = Instant::now();
    wait_for(Duration::from_secs(120), "every committed scrape", || {
        let m = missing(&counter_values(&receiver), committed);
        if !m.is_empty() && started.elapsed() > Duration::from_secs(100) {
            eprintln!("still missing: {m:?}");
        }
        m.is_empty().then_some(())
    });
    assert!(last.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn receiver_up_throughout_kills_leave_no_gap_but_the_downtime() {
    let target = CounterTarget::start();
    let receiver = Receiver::start(|_| 200);
    let data = TempDir::new("wal-crash-up");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &receiver.url(), "300ms");
    for _ in 0..3 {
        let spate = Spate::start(&cfg, &[&storage]);
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: SIGKILL to the child we started.
        unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGKILL) };
        drop(spate);
    }
    // Every value the target served was scraped by a live spate; the last round's scrapes
    // were committed before its kill, so all of them arrive after one more start.
    let served = target.served.load(Ordering::SeqCst);
    let mut last = Spate::start(&cfg, &[&storage]);
    wait_for(Duration::from_secs(60), "every scrape served", || {
        missing(&counter_values(&receiver), served)
            .is_empty()
            .then_some(())
    });
    assert!(last.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}
