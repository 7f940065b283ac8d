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

/// Samples per scrape of `padded_target`: 51 scraped, five report series.
const SAMPLES_PER_SCRAPE: u64 = 56;

/// A target with a scrape counter and 50 more series: 56 samples per scrape with the five report
/// series. Returns the server and the count of scrapes served.
fn padded_target() -> (
    common::TestServer,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let srv = served.clone();
    let target = common::TestServer::start(move |_, _| {
        let n = srv.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = format!("test_counter {n}\n");
        for i in 0..50 {
            // Values that do not compress, so the WAL grows by a few hundred bytes a scrape.
            let v = (n * 50 + i).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 24;
            body.push_str(&format!("pad{{i=\"{i}\"}} {v}\n"));
        }
        (200, "text/plain; version=0.0.4", body.into_bytes())
    });
    (target, served)
}

/// A padded target, and a receiver port with nothing listening yet and its URL.
fn padded_target_down() -> (
    common::TestServer,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    u16,
    String,
) {
    let (target, served) = padded_target();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    (target, served, port, url)
}

/// A counter target, a receiver port with nothing listening yet, a data directory, and the
/// config that joins them.
struct Setup {
    target: CounterTarget,
    port: u16,
    data: TempDir,
    storage: String,
    cfg: String,
}

fn setup(tag: &str, interval: &str) -> Setup {
    let target = CounterTarget::start();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let data = TempDir::new(tag);
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &url, interval);
    Setup {
        target,
        port,
        data,
        storage,
        cfg,
    }
}

/// The sum, over the lines of `text` that `pick` selects, of the number right after `marker`.
fn sum_after(text: &str, pick: impl Fn(&str) -> bool, marker: &str) -> u64 {
    text.lines()
        .filter(|l| pick(l))
        .filter_map(|l| {
            l.split(marker)
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Counter values up to `upto` that did not arrive and are not explained: neither served in a
/// window just before a kill (scraped but not yet committed), nor matched by a failed scrape (a scrape
/// the target answered but spate abandoned, e.g. on timeout under load, reports `up` = 0).
fn unexplained_gaps(
    r: &Receiver,
    upto: u64,
    windows: &[std::ops::RangeInclusive<u64>],
) -> Vec<u64> {
    let failed: BTreeSet<i64> = r
        .samples()
        .iter()
        .filter(|s| s.label("__name__") == Some("up") && s.value == 0.0)
        .map(|s| s.ts)
        .collect();
    let gaps: Vec<u64> = missing(&counter_values(r), upto)
        .into_iter()
        .filter(|v| !windows.iter().any(|w| w.contains(v)))
        .collect();
    if gaps.len() <= failed.len() {
        Vec::new()
    } else {
        gaps
    }
}

fn missing(values: &BTreeSet<u64>, upto: u64) -> Vec<u64> {
    (1..=upto).filter(|v| !values.contains(v)).collect()
}

#[test]
fn backlog_from_before_a_graceful_restart_is_delivered() {
    let Setup {
        target,
        port,
        data,
        storage,
        cfg,
    } = setup("wal-restart", "500ms");

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
    // What an operator sees: the endpoint's cursor and a backlog of every scrape.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["wal", "inspect"])
        .arg(data.path())
        .output()
        .expect("spate wal inspect");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    let backlog = sum_after(
        &report,
        |l| l.trim_start().starts_with("primary:"),
        " bytes, ",
    );
    // Seven samples per scrape (two scraped, five report series).
    assert_eq!(backlog, 7 * served_first, "{report}");
    // test_counter's HELP and TYPE, once in the segment.
    assert!(report.contains(" 1 family metadata"), "{report}");

    // Second run: the receiver is up. Everything from the first run arrives.
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut second = Spate::start(&cfg, &[&storage]);
    wait_for(Duration::from_secs(90), "the first run's backlog", || {
        unexplained_gaps(&receiver, served_first, &[])
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
    let Setup {
        target,
        port,
        data: _data,
        storage,
        cfg,
    } = setup("wal-crash", "300ms");
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ u64::from(std::process::id());
    let mut committed = 0;
    // Scrapes served within the last moments before a kill may not be committed yet (in flight).
    let mut windows = Vec::new();
    for round in 0..5 {
        let spate = Spate::start(&cfg, &[&storage]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let run = Duration::from_millis(700 + seed % 2500);
        std::thread::sleep(run);
        // Scrapes served up to here are committed well before the kill (a commit takes
        // microseconds; we give it 400 ms, plenty even on a loaded machine).
        committed = target.served.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: SIGKILL to the child we started.
        unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGKILL) };
        windows.push(committed + 1..=target.served.load(Ordering::SeqCst));
        drop(spate);
        eprintln!("round {round}: killed after {run:?}, {committed} scrapes served");
    }
    assert!(committed >= 5, "the target was scraped");

    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut last = Spate::start(&cfg, &[&storage]);
    let started = Instant::now();
    wait_for(Duration::from_secs(120), "every committed scrape", || {
        let m = unexplained_gaps(&receiver, committed, &windows);
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
    let mut windows = Vec::new();
    for _ in 0..3 {
        let spate = Spate::start(&cfg, &[&storage]);
        std::thread::sleep(Duration::from_millis(1100));
        let committed = target.served.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: SIGKILL to the child we started.
        unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGKILL) };
        windows.push(committed + 1..=target.served.load(Ordering::SeqCst));
        drop(spate);
    }
    // Every value the target served was scraped by a live spate; all but those of the last
    // moments before each kill were in the WAL, so they arrive after one more start.
    let served = target.served.load(Ordering::SeqCst);
    let mut last = Spate::start(&cfg, &[&storage]);
    wait_for(Duration::from_secs(60), "every scrape served", || {
        unexplained_gaps(&receiver, served, &windows)
            .is_empty()
            .then_some(())
    });
    assert!(last.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn size_bound_holds_and_counts_exactly_what_the_receiver_misses() {
    let (target, _served, port, url) = padded_target_down();
    let data = TempDir::new("wal-bound");
    let cfg = format!(
        r#"
global:
  scrape_interval: 200ms
scrape_configs:
  - job_name: bound
    static_configs:
      - targets: ["{}"]
remote_write:
  - url: {url}
    name: bounded
    queue_config:
      capacity: 100
      max_shards: 1
      max_samples_per_send: 100
      batch_send_deadline: 100ms
      min_backoff: 50ms
      max_backoff: 200ms
"#,
        target.addr
    );
    let max = 16 * 1024u64;
    let segment = 4 * 1024u64;
    let mut spate = Spate::start(
        &cfg,
        &[
            &format!("--storage.agent.path={}", data.path().display()),
            "--cores=1",
            "--storage.agent.wal-segment-size=4KB",
            "--storage.agent.retention.max-size=16KB",
        ],
    );
    let wal_dir = data.path().join("wal").join("0");
    let disk = || -> u64 {
        std::fs::read_dir(&wal_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.len() == 8))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let lost_metric = "prometheus_remote_storage_samples_dropped_total{reason=\"wal_retention\"";
    wait_for(
        Duration::from_secs(120),
        "the size bound to delete unsent data",
        || {
            let d = disk();
            // A commit is never split, so a segment may pass its size by one commit (< 4 KB here).
            assert!(d <= max + 2 * segment, "WAL uses {d} bytes, bound {max}");
            (spate.metric(lost_metric) >= SAMPLES_PER_SCRAPE as f64 * 10.0).then_some(())
        },
    );

    // The receiver comes up; once the backlog is sent, what it misses is what was counted.
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    wait_for(Duration::from_secs(120), "the backlog to drain", || {
        (spate.metric("spate_remote_storage_wal_backlog_bytes") == 0.0
            && !counter_values(&receiver).is_empty())
        .then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    let values = counter_values(&receiver);
    let newest = *values.iter().max().expect("samples arrived");
    let gaps = missing(&values, newest);
    // The bound deletes the oldest whole segments: the gaps are one run of consecutive
    // scrapes from near the start. What was queued in memory when the endpoint fell behind
    // (the batch in flight, up to `capacity` samples and the scrape that passed it: about
    // five scrapes of 56 samples here) is still delivered.
    assert!(!gaps.is_empty());
    let first = gaps[0];
    assert!(first <= 8, "oldest go first: {gaps:?}");
    assert_eq!(
        gaps,
        (first..first + gaps.len() as u64).collect::<Vec<_>>(),
        "one run"
    );
    let log = spate.proc.log_text();
    let lost = sum_after(
        &log,
        |l| l.contains("retention bound deleted samples"),
        "samples=",
    );
    assert_eq!(
        lost,
        SAMPLES_PER_SCRAPE * gaps.len() as u64,
        "counted loss equals what is missing\n{log}"
    );
    assert_per_series_order(&receiver);
}

#[test]
fn a_full_disk_costs_durability_not_delivery_and_the_wal_recovers() {
    use std::os::unix::process::CommandExt;
    let (target, served) = padded_target();
    let receiver = Receiver::start(|_| 200);
    let cfg = config(&target.addr.to_string(), &receiver.url(), "200ms");
    // The child may not grow any file past 16 KiB (writes fail with EFBIG, as they would with
    // ENOSPC on a full disk) until the test lifts the limit.
    let mut spate = Spate::start_with(
        &cfg,
        &["--cores=1", "--storage.agent.wal-segment-size=1MB"],
        |cmd| {
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: 16 * 1024,
                        rlim_max: libc::RLIM_INFINITY,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    wait_for(Duration::from_secs(120), "WAL writes to fail", || {
        (spate.metric("spate_wal_samples_not_durable_total") >= 5.0 * SAMPLES_PER_SCRAPE as f64)
            .then_some(())
    });
    // Scraping and live forwarding went on.
    let during = served.load(Ordering::SeqCst);
    wait_for(
        Duration::from_secs(60),
        "live delivery while the WAL fails",
        || {
            missing(&counter_values(&receiver), during)
                .is_empty()
                .then_some(())
        },
    );
    assert!(spate.metric("spate_wal_write_failures_total") >= 5.0);

    // Space returns: commits succeed again by themselves.
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit on our child's pid with a valid rlimit.
    let rc = unsafe {
        libc::prlimit(
            spate.proc.pid() as i32,
            libc::RLIMIT_FSIZE,
            &unlimited,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let failures = spate.metric("spate_wal_write_failures_total");
    let size = spate.metric("spate_wal_size_bytes");
    wait_for(Duration::from_secs(60), "the WAL to grow again", || {
        (spate.metric("spate_wal_size_bytes") > size + 8192.0).then_some(())
    });
    let after = spate.metric("spate_wal_write_failures_total");
    assert!(
        after <= failures + 1.0,
        "failures stopped: {failures} then {after}"
    );
    assert!(spate.proc.log_text().contains("WAL writes succeed again"));
    let served_now = served.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(60), "every scrape delivered", || {
        missing(&counter_values(&receiver), served_now)
            .is_empty()
            .then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn the_wal_of_a_core_that_no_longer_exists_is_sent_then_deleted() {
    let Setup {
        target,
        port,
        data,
        storage,
        cfg,
    } = setup("wal-cores", "300ms");
    // A run with the receiver down leaves a backlog.
    let mut first = Spate::start(
        &cfg,
        &[&storage, "--cores=1", "--storage.remote.flush-deadline=1s"],
    );
    wait_for(Duration::from_secs(60), "a backlog of scrapes", || {
        (target.served.load(Ordering::SeqCst) >= 6).then_some(())
    });
    assert!(first.proc.terminate(Duration::from_secs(60)).success());
    let served_first = target.served.load(Ordering::SeqCst);
    // As if that run had had two cores and the backlog were core 1's: this run has one.
    let wal = data.path().join("wal");
    std::fs::rename(wal.join("0"), wal.join("1")).expect("rename wal/0");

    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut second = Spate::start(&cfg, &[&storage, "--cores=1"]);
    wait_for(
        Duration::from_secs(90),
        "the removed core's backlog",
        || {
            unexplained_gaps(&receiver, served_first, &[])
                .is_empty()
                .then_some(())
        },
    );
    wait_for(Duration::from_secs(30), "its WAL to be deleted", || {
        (!wal.join("1").exists()).then_some(())
    });
    // Scrapes of this run follow it, in order.
    let now = target.served.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(60), "this run's scrapes", || {
        unexplained_gaps(&receiver, now, &[])
            .is_empty()
            .then_some(())
    });
    let log = second.proc.log_text();
    assert!(
        log.contains("sent the backlog of a removed core's WAL"),
        "{log}"
    );
    assert!(second.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn damaged_segments_are_reported_and_the_rest_is_delivered() {
    let (target, served, port, url) = padded_target_down();
    let data = TempDir::new("wal-damage");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = config(&target.addr.to_string(), &url, "100ms");
    let args = [
        storage.as_str(),
        "--cores=1",
        "--storage.agent.wal-segment-size=8KB",
        "--storage.remote.flush-deadline=1s",
    ];
    // The receiver is down: every scrape stays in the WAL, over several segments.
    let mut first = Spate::start(&cfg, &args);
    let wal = data.path().join("wal").join("0");
    wait_for(Duration::from_secs(120), "four WAL segments", || {
        // Segments, the cursors file and the tail file.
        (std::fs::read_dir(&wal).ok()?.count() >= 6).then_some(())
    });
    assert!(first.proc.terminate(Duration::from_secs(60)).success());
    let served_first = served.load(Ordering::SeqCst);

    // A flipped bit in the middle of segment 1's records, and segment 2 cut in the middle of
    // its records.
    let seg = |i: u32| wal.join(format!("{i:08}"));
    let mut bytes = std::fs::read(seg(1)).expect("segment 1");
    // The middle of its records, not of the file: the file ends in block padding.
    let data_end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .expect("segment 1 holds records");
    bytes[data_end / 2] ^= 0x10;
    std::fs::write(seg(1), &bytes).expect("write segment 1");
    let records_end = std::fs::read(seg(2))
        .expect("segment 2")
        .iter()
        .rposition(|b| *b != 0)
        .expect("segment 2 holds records");
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg(2))
        .and_then(|f| f.set_len(records_end as u64 / 2))
        .expect("truncate segment 2");

    // What an operator sees.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["wal", "inspect"])
        .arg(&wal)
        .output()
        .expect("spate wal inspect");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("bytes skipped"), "{report}");

    // spate starts and delivers everything the damage did not take, in order.
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), |_| 200);
    let mut second = Spate::start(&cfg, &args);
    wait_for(
        Duration::from_secs(90),
        "the backlog after the damage",
        || {
            let v = counter_values(&receiver);
            (v.contains(&1) && v.contains(&served_first)).then_some(())
        },
    );
    let log = second.proc.log_text();
    assert!(log.contains("skipped damaged WAL data"), "{log}");
    assert!(second.metric("spate_wal_read_damaged_bytes_total") > 0.0);
    let lost = missing(&counter_values(&receiver), served_first);
    assert!(!lost.is_empty(), "the damage took something");
    assert!(
        lost.len() < served_first as usize / 2,
        "only the damaged parts are lost: {} of {served_first}",
        lost.len()
    );
    assert!(second.proc.terminate(Duration::from_secs(60)).success());
    assert_per_series_order(&receiver);
}

#[test]
fn after_a_core_count_change_the_backlog_goes_before_newer_samples() {
    // Four targets: with two cores, some are scraped on the other core than their backlog's.
    let targets: Vec<CounterTarget> = (0..4).map(|_| CounterTarget::start()).collect();
    let port = free_port();
    let data = TempDir::new("wal-more-cores");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let addrs: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
    // `config` quotes one target: join them with the quotes between.
    let url = format!("http://127.0.0.1:{port}/api/v1/write");
    let cfg = config(&addrs.join("\", \""), &url, "200ms");
    let mut first = Spate::start(
        &cfg,
        &[&storage, "--cores=1", "--storage.remote.flush-deadline=1s"],
    );
    wait_for(Duration::from_secs(60), "a backlog of scrapes", || {
        targets
            .iter()
            .all(|t| t.served.load(Ordering::SeqCst) >= 10)
            .then_some(())
    });
    assert!(first.proc.terminate(Duration::from_secs(60)).success());

    // Two cores now. The receiver refuses everything for its first two seconds, so backlog
    // and new scrapes are both waiting when it starts to accept.
    let opened = Instant::now();
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), move |_| {
        if opened.elapsed() < Duration::from_secs(2) {
            503
        } else {
            200
        }
    });
    let mut second = Spate::start(&cfg, &[&storage, "--cores=2"]);
    let served: Vec<u64> = targets
        .iter()
        .map(|t| t.served.load(Ordering::SeqCst) + 10)
        .collect();
    wait_for(Duration::from_secs(90), "every target's scrapes", || {
        let samples = receiver.samples();
        targets
            .iter()
            .zip(&served)
            .all(|(t, upto)| {
                let instance = t.addr.to_string();
                let got: BTreeSet<u64> = samples
                    .iter()
                    .filter(|s| {
                        s.label("__name__") == Some("test_counter")
                            && s.label("instance") == Some(instance.as_str())
                    })
                    .map(|s| s.value as u64)
                    .collect();
                missing(&got, *upto).is_empty()
            })
            .then_some(())
    });
    let log = second.proc.log_text();
    assert!(log.contains("the core count changed"), "{log}");
    assert!(second.proc.terminate(Duration::from_secs(60)).success());
    // Every sample arrived newer than all before it, per series: none would be refused.
    assert_per_series_order(&receiver);
}

/// A disk whose `fsync`/`fdatasync` take 800 ms (a FUSE passthrough filesystem,
/// `tests/data/slowfs.py`) holds the WAL: the core's syncs go through its io_uring, so scraping
/// on that core keeps its pace, while the syncs still happen and are timed.
#[test]
fn a_slow_disk_does_not_stall_scraping_on_its_core() {
    if common::require_program("fusermount3", "fuse3").is_none() {
        return;
    }
    let Some(python) = common::require_python_module("fusepy", "python3-fusepy") else {
        return;
    };
    let dir = TempDir::new("slowdisk");
    let (backing, mount) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mount).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/slowfs.py");
    let mut fs = std::process::Command::new(python)
        .arg(&script)
        .arg(&backing)
        .arg(&mount)
        .arg("0.8")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the slow filesystem");
    struct Unmount(std::path::PathBuf, std::process::Child);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&self.0)
                .status();
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }
    wait_for(Duration::from_secs(20), "the slow filesystem", || {
        std::fs::read_to_string("/proc/self/mounts")
            .ok()
            .filter(|m| m.contains(mount.to_str().unwrap_or("-")))
            .map(|_| ())
            .or_else(|| match fs.try_wait() {
                Ok(Some(status)) => {
                    panic!("the FUSE filesystem exited: {status} (is /dev/fuse there?)")
                }
                _ => None,
            })
    });
    let _unmount = Unmount(mount.clone(), fs);
    let target = CounterTarget::start();
    let receiver = Receiver::start(|_| 200);
    let config = config(&target.addr.to_string(), &receiver.url(), "250ms");
    let storage = format!("--storage.agent.path={}", mount.join("data").display());
    let mut spate = Spate::start(
        &config,
        &[
            "--cores=1",
            "--storage.agent.wal-fsync-interval=100ms",
            &storage,
        ],
    );
    let metrics = common::http_get(&spate.web, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    if metrics.contains("driver=\"epoll\"") {
        // On the epoll driver a sync is the system call itself, on the core (documented).
        eprintln!("io_uring is refused here; the core syncs with the system call: not measured");
        assert!(spate.proc.terminate(Duration::from_secs(60)).success());
        return;
    }
    // Warm up, then count the scrapes of a 4 s window: 16 at 250 ms. A core that waited
    // 800 ms for each sync (every 100 ms) would manage about 5.
    wait_for(Duration::from_secs(30), "the first scrapes", || {
        (target.served.load(Ordering::SeqCst) >= 3).then_some(())
    });
    let before = target.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(4));
    let scraped = target.served.load(Ordering::SeqCst) - before;
    assert!(scraped >= 11, "only {scraped} scrapes in 4 s at 250 ms");
    // The syncs happened meanwhile, at the slow disk's pace.
    let slow = spate.metric("spate_wal_fsync_duration_seconds_bucket{core=\"0\",le=\"+Inf\"}")
        - spate.metric("spate_wal_fsync_duration_seconds_bucket{core=\"0\",le=\"0.25\"}");
    assert!(slow >= 2.0, "syncs took the slow disk's time: {slow}");
    assert_eq!(spate.metric("spate_wal_fsync_failures_total"), 0.0);
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// Two endpoints, one refusing everything when the process is killed: after the restart each
/// resumes from its own saved position (registering one must not forget the other's), so the
/// refusing one gets every sample it missed.
#[test]
fn every_endpoint_resumes_from_its_own_position_after_a_kill() {
    let target = CounterTarget::start();
    let ok = Receiver::start(|_| 200);
    let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = refusing.clone();
    let other = Receiver::start(move |_| {
        if flag.load(Ordering::SeqCst) {
            503
        } else {
            200
        }
    });
    let data = TempDir::new("wal-two-endpoints");
    let storage = format!("--storage.agent.path={}", data.path().display());
    let cfg = format!(
        "global: {{scrape_interval: 300ms}}\nscrape_configs:\n  - job_name: t\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n  - url: {}\n    queue_config: {{batch_send_deadline: 100ms}}\n",
        target.addr,
        ok.url(),
        other.url()
    );
    let spate = Spate::start(&cfg, &["--cores=1", &storage]);
    wait_for(
        Duration::from_secs(30),
        "scrapes at the first endpoint",
        || (ok.samples().len() > 30).then_some(()),
    );
    // Committed well before the kill (see above).
    let committed = target.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: SIGKILL to the child we started.
    unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGKILL) };
    drop(spate);
    assert!(other.samples().is_empty());
    refusing.store(false, Ordering::SeqCst);
    let mut spate = Spate::start(&cfg, &["--cores=1", &storage]);
    wait_for(Duration::from_secs(60), "the refused samples", || {
        let values: BTreeSet<u64> = other
            .samples()
            .iter()
            .filter(|s| s.label("__name__") == Some("test_counter"))
            .map(|s| s.value as u64)
            .collect();
        (1..=committed).all(|v| values.contains(&v)).then_some(())
    });
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}
