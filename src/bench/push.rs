//! `spate bench push`: synthetic Remote Write load against a receiver, to size it. M series get
//! samples at R samples/s in total for D seconds over C keep-alive connections; the report gives
//! accepted samples/s, request latency percentiles and errors by status.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use super::{Flags, Tool, flag};
use crate::entry::{LabelScratch, encode_series};
use crate::http::{Conn, Url};
use crate::runtime::{self, Instant, LocalNotify, sleep, timeout};

struct Job {
    /// First sample index (sample k goes to series k % M, round k / M).
    first: u64,
    count: usize,
}

#[derive(Default)]
struct Results {
    accepted: Cell<u64>,
    rejected: Cell<u64>,
    latencies_us: RefCell<Vec<u64>>,
    errors: RefCell<BTreeMap<String, u64>>,
    bytes: Cell<u64>,
}

struct Plan {
    url: Url,
    series: u64,
    rate: f64,
    duration: Duration,
    batch: usize,
    /// Milliseconds between two samples of one series.
    step_ms: f64,
    start_ms: i64,
}

/// `spate bench push`.
pub(crate) const TOOL: Tool = Tool {
    name: "push",
    help: "Send synthetic Remote Write load to a receiver.",
    flags: &[
        flag("url", "=URL", None, "receiver URL (required)"),
        flag("series", "=M", Some("10000"), "distinct series"),
        flag("rate", "=R", Some("100000"), "samples per second"),
        flag("duration", "=D", Some("30s"), "how long to send"),
        flag("connections", "=C", Some("4"), "concurrent connections"),
        flag("batch", "=N", Some("2000"), "samples per request"),
    ],
};

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, TOOL.flags)?;
    let url = Url::parse(&f.opt("url").ok_or("flag '--url' is required")?)?;
    if url.tls {
        return Err("https receivers are not supported yet".into());
    }
    let series: u64 = f.num("series")?;
    let rate: f64 = f.num("rate")?;
    let duration = f.duration("duration")?;
    let connections: usize = f.num("connections")?;
    let batch: usize = f.num("batch")?;
    if series == 0 || rate <= 0.0 || connections == 0 || batch == 0 {
        return Err("--series, --rate, --connections and --batch must be positive".into());
    }
    let plan = Plan {
        step_ms: 1000.0 * series as f64 / rate,
        start_ms: (super::unix_now() * 1000.0) as i64,
        url,
        series,
        rate,
        duration,
        batch,
    };
    eprintln!(
        "pushing {} series at {} samples/s for {:?} over {connections} connections to {}",
        plan.series, plan.rate, plan.duration, plan.url
    );
    let done = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let done2 = done.clone();
    let handle = runtime::start_core(
        0,
        None,
        |_| {},
        move || async move {
            let report = run(Rc::new(plan), connections).await;
            *done2.lock().unwrap_or_else(|e| e.into_inner()) = report;
        },
    )
    .map_err(|e| format!("cannot start a thread: {e}"))?;
    handle
        .join()
        .map_err(|_| "the load generator failed".to_string())?;
    println!("{}", done.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(())
}

async fn run(plan: Rc<Plan>, connections: usize) -> String {
    let queue: Rc<RefCell<VecDeque<Job>>> = Rc::default();
    let notify = Rc::new(LocalNotify::default());
    let results = Rc::new(Results::default());
    let finished = Rc::new(Cell::new(false));
    let active = Rc::new(Cell::new(connections));
    let all_done = Rc::new(LocalNotify::default());
    for _ in 0..connections {
        let (plan, queue, notify, results, finished, active, all_done) = (
            plan.clone(),
            queue.clone(),
            notify.clone(),
            results.clone(),
            finished.clone(),
            active.clone(),
            all_done.clone(),
        );
        runtime::spawn(async move {
            sender(&plan, &queue, &notify, &results, &finished).await;
            active.set(active.get() - 1);
            all_done.notify();
        });
    }
    let started = Instant::now();
    let mut produced: u64 = 0;
    let mut last_progress = Instant::now();
    let mut behind = false;
    while started.elapsed() < plan.duration {
        let due = (started.elapsed().as_secs_f64() * plan.rate) as u64;
        // Keep a bounded backlog: if the receiver cannot keep up, the achieved rate says so.
        while produced < due && queue.borrow().len() < connections * 4 {
            let count = (due - produced).min(plan.batch as u64) as usize;
            queue.borrow_mut().push_back(Job {
                first: produced,
                count,
            });
            produced += count as u64;
            notify.notify();
        }
        behind |= produced < due;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "t={secs:.0}s accepted={} ({:.0}/s) rejected={} in-flight-queue={}{}",
                results.accepted.get(),
                results.accepted.get() as f64 / secs,
                results.rejected.get(),
                queue.borrow().len(),
                if produced < due {
                    " (receiver is behind the target rate)"
                } else {
                    ""
                }
            );
        }
        sleep(Duration::from_millis(10)).await;
    }
    finished.set(true);
    for _ in 0..connections {
        notify.notify();
    }
    while active.get() > 0 {
        runtime::race(all_done.notified(), sleep(Duration::from_millis(50))).await;
        notify.notify();
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = results.latencies_us.borrow_mut();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    };
    let errors: Vec<String> = results
        .errors
        .borrow()
        .iter()
        .map(|(k, v)| format!("\"{k}\": {v}"))
        .collect();
    format!(
        "{{\"accepted_samples\": {}, \"rejected_samples\": {}, \"accepted_per_second\": {:.1}, \"target_rate\": {}, \"requests\": {}, \"latency_ms\": {{\"p50\": {:.2}, \"p90\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}, \"errors\": {{{}}}, \"bytes\": {}, \"bytes_per_sample\": {:.2}, \"fell_behind\": {behind}}}",
        results.accepted.get(),
        results.rejected.get(),
        results.accepted.get() as f64 / secs,
        plan.rate,
        lat.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        errors.join(", "),
        results.bytes.get(),
        results.bytes.get() as f64 / results.accepted.get().max(1) as f64,
    )
}

async fn sender(
    plan: &Plan,
    queue: &RefCell<VecDeque<Job>>,
    notify: &LocalNotify,
    results: &Results,
    finished: &Cell<bool>,
) {
    let mut conn = Conn::new(plan.url.authority());
    let mut labels = LabelScratch::default();
    let mut body = Vec::new();
    let mut compressed = Vec::new();
    let mut encoder = snap::raw::Encoder::new();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: spate-bench/{}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n",
        plan.url.path_and_query,
        plan.url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    loop {
        let job = queue.borrow_mut().pop_front();
        let Some(job) = job else {
            if finished.get() {
                return;
            }
            // The notify holds one waker and several senders share it: also wake on a timer.
            runtime::race(notify.notified(), sleep(Duration::from_millis(5))).await;
            continue;
        };
        body.clear();
        for k in job.first..job.first + job.count as u64 {
            let (series, round) = (k % plan.series, k / plan.series);
            labels.clear();
            labels.push(
                b"__name__",
                format!("bench_push_metric_{}", series % 100).as_bytes(),
            );
            labels.push(b"instance", b"spate-bench-push");
            labels.push(b"job", b"push");
            labels.push(b"series", itoa(series).as_bytes());
            let _ = labels.sort();
            let ts = plan.start_ms + (round as f64 * plan.step_ms) as i64;
            encode_series(&mut body, &labels, (round % 1000) as f64, ts);
        }
        let need = snap::raw::max_compress_len(body.len());
        if compressed.len() < need {
            compressed.resize(need, 0);
        }
        let n = encoder.compress(&body, &mut compressed).unwrap_or(0);
        let req = conn.request_mut();
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
        req.extend_from_slice(&compressed[..n]);
        let started = Instant::now();
        let outcome = match timeout(Duration::from_secs(30), conn.round_trip(false)).await {
            Err(_) => {
                conn.reset();
                Err("timeout".to_string())
            }
            Ok(Err(e)) => Err(format!("{e}").chars().take(60).collect()),
            Ok(Ok(r)) if (200..300).contains(&r.status) => Ok(()),
            Ok(Ok(r)) => Err(format!("http_{}", r.status)),
        };
        results
            .latencies_us
            .borrow_mut()
            .push(started.elapsed().as_micros() as u64);
        match outcome {
            Ok(()) => {
                results
                    .accepted
                    .set(results.accepted.get() + job.count as u64);
                results.bytes.set(results.bytes.get() + n as u64);
            }
            Err(e) => {
                results
                    .rejected
                    .set(results.rejected.get() + job.count as u64);
                *results
                    .errors
                    .borrow_mut()
                    .entry(e.replace('"', "'"))
                    .or_default() += 1;
            }
        }
    }
}

fn itoa(v: u64) -> String {
    v.to_string()
}
