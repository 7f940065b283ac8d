//! One endpoint's sending shard on one core: a queue of encoded batches and the task that sends
//! them, in order, with Prometheus' batching, retry and shutdown-flush semantics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RemoteWriteConfig;
use crate::http::Conn;
use crate::log::Level;
use crate::runtime::{Event, Instant, LocalNotify, race, sleep, timeout};
use crate::selfmetrics::ShardStats;

/// An endpoint as all cores share it: its config, the request head, and log throttles.
pub struct Endpoint {
    pub cfg: RemoteWriteConfig,
    pub url: String,
    head: String,
    /// Set while the endpoint keeps failing, so "unreachable" is logged once, not per retry.
    failing: AtomicBool,
    last_drop_log_secs: AtomicU64,
}

impl Endpoint {
    pub fn new(cfg: RemoteWriteConfig) -> Endpoint {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: spate/{}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n",
            cfg.url.path_and_query,
            cfg.url.authority(),
            env!("CARGO_PKG_VERSION"),
        );
        for (k, v) in &cfg.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        Endpoint {
            url: cfg.url.to_string(),
            cfg,
            head,
            failing: AtomicBool::new(false),
            last_drop_log_secs: AtomicU64::new(0),
        }
    }
}

/// What a core's shards need to know about the core: shutdown, the flush deadline, and
/// whether scrape loops may still append.
pub struct CoreControl {
    pub shutdown: Event,
    pub flush_deadline: Duration,
    deadline: Cell<Option<Instant>>,
    active_loops: Cell<usize>,
    active_senders: Cell<usize>,
    pub senders_done: LocalNotify,
    shards: RefCell<Vec<Rc<Shard>>>,
}

impl CoreControl {
    pub fn new(shutdown: Event, flush_deadline: Duration) -> Rc<CoreControl> {
        Rc::new(CoreControl {
            shutdown,
            flush_deadline,
            deadline: Cell::new(None),
            active_loops: Cell::new(0),
            active_senders: Cell::new(0),
            senders_done: LocalNotify::default(),
            shards: RefCell::new(Vec::new()),
        })
    }

    pub fn add_shard(&self, s: Rc<Shard>) {
        self.active_senders.set(self.active_senders.get() + 1);
        self.shards.borrow_mut().push(s);
    }

    pub fn shards(&self) -> std::cell::Ref<'_, Vec<Rc<Shard>>> {
        self.shards.borrow()
    }

    pub fn loop_started(&self) {
        self.active_loops.set(self.active_loops.get() + 1);
    }

    /// A scrape loop ended; shards may now finish flushing once the last one is gone.
    pub fn loop_ended(&self) {
        self.active_loops.set(self.active_loops.get() - 1);
        for s in self.shards.borrow().iter() {
            s.notify.notify();
        }
    }

    pub fn senders_active(&self) -> usize {
        self.active_senders.get()
    }

    /// The moment queued data stops being retried, fixed when the core first sees shutdown.
    fn flush_deadline_at(&self) -> Option<Instant> {
        if !self.shutdown.is_set() {
            return None;
        }
        if self.deadline.get().is_none() {
            self.deadline
                .set(Some(Instant::now() + self.flush_deadline));
        }
        self.deadline.get()
    }
}

struct Batch {
    body: Vec<u8>,
    samples: usize,
    newest_ts: i64,
}

#[derive(Default)]
struct Queue {
    current: Vec<u8>,
    current_samples: usize,
    current_newest: i64,
    current_since: Option<Instant>,
    sealed: VecDeque<Batch>,
    /// Samples in `current` and `sealed`.
    queued: usize,
}

impl Queue {
    fn seal(&mut self) {
        if self.current_samples == 0 {
            return;
        }
        let body = std::mem::take(&mut self.current);
        self.sealed.push_back(Batch {
            body,
            samples: self.current_samples,
            newest_ts: self.current_newest,
        });
        self.current_samples = 0;
        self.current_newest = i64::MIN;
        self.current_since = None;
    }
}

pub struct Shard {
    ep: Arc<Endpoint>,
    stats: Arc<ShardStats>,
    queue: RefCell<Queue>,
    notify: LocalNotify,
    /// Most samples held in memory before the oldest batches are dropped.
    limit: usize,
    /// Samples of an in-flight batch abandoned at the flush deadline.
    abandoned: Cell<usize>,
}

enum Outcome {
    Sent,
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Drop {
        reason: String,
    },
}

impl Shard {
    pub fn new(ep: Arc<Endpoint>, stats: Arc<ShardStats>) -> Rc<Shard> {
        let limit = ep
            .cfg
            .queue
            .capacity
            .saturating_mul(ep.cfg.queue.max_shards)
            .max(ep.cfg.queue.max_samples_per_send);
        Rc::new(Shard {
            ep,
            stats,
            queue: RefCell::new(Queue::default()),
            notify: LocalNotify::default(),
            limit,
            abandoned: Cell::new(0),
        })
    }

    /// Queues a committed scrape: `entries` holds encoded timeseries entries, `ends[i]` is where
    /// entry `i` ends. Batches are cut at `max_samples_per_send`.
    pub fn append(&self, entries: &[u8], ends: &[u32], histograms: &[bool], newest_ts: i64) {
        if ends.is_empty() {
            return;
        }
        // Native histograms go only where `send_native_histograms` is on; re-slice without them.
        if !self.ep.cfg.send_native_histograms && histograms.contains(&true) {
            let (mut kept, mut kept_ends, mut start) =
                (Vec::with_capacity(entries.len()), Vec::new(), 0usize);
            for (end, hist) in ends.iter().zip(histograms) {
                if !hist {
                    kept.extend_from_slice(&entries[start..*end as usize]);
                    kept_ends.push(kept.len() as u32);
                }
                start = *end as usize;
            }
            let flags = vec![false; kept_ends.len()];
            return self.append(&kept, &kept_ends, &flags, newest_ts);
        }
        let max = self.ep.cfg.queue.max_samples_per_send;
        let mut q = self.queue.borrow_mut();
        let mut start = 0usize;
        let mut i = 0;
        while i < ends.len() {
            // Take as many entries as fit in the current batch in one copy.
            let room = max - q.current_samples;
            let take = room.min(ends.len() - i);
            let end = ends[i + take - 1] as usize;
            if q.current_samples == 0 {
                q.current_since = Some(Instant::now());
            }
            q.current.extend_from_slice(&entries[start..end]);
            q.current_samples += take;
            q.current_newest = q.current_newest.max(newest_ts);
            q.queued += take;
            start = end;
            i += take;
            if q.current_samples >= max {
                q.seal();
            }
        }
        let mut dropped = 0;
        while q.queued > self.limit {
            let Some(b) = q.sealed.pop_front() else { break };
            q.queued -= b.samples;
            dropped += b.samples;
        }
        self.stats.samples_pending.store(q.queued as u64, Relaxed);
        drop(q);
        if dropped > 0 {
            self.stats
                .samples_dropped_queue_full
                .fetch_add(dropped as u64, Relaxed);
            if self.should_log_drop() {
                crate::log!(
                    Level::Warn,
                    "remote",
                    "remote write queue is full; dropped the oldest samples",
                    remote_name = self.ep.cfg.name,
                    url = self.ep.url,
                    dropped = dropped,
                    limit = self.limit
                );
            }
        }
        self.notify.notify();
    }

    fn should_log_drop(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let last = self.ep.last_drop_log_secs.load(Relaxed);
        now >= last + 10
            && self
                .ep
                .last_drop_log_secs
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }

    /// The sending task: runs until shutdown has been seen, every scrape loop of the core has
    /// ended and the queue is empty (or the flush deadline passed).
    pub async fn run(self: Rc<Self>, ctl: Rc<CoreControl>) {
        let mut conn = Conn::new(self.ep.cfg.url.authority());
        let mut encoder = snap::raw::Encoder::new();
        let mut compressed = Vec::new();
        while let Some(batch) = self.next_batch(&ctl).await {
            let n = batch.samples;
            self.send(&mut conn, &mut encoder, &mut compressed, batch, &ctl)
                .await;
            let q = self.queue.borrow();
            self.stats.samples_pending.store(q.queued as u64, Relaxed);
            drop(q);
            let _ = n;
        }
        // Whatever is left (the flush deadline passed) is lost: say so.
        let mut q = self.queue.borrow_mut();
        q.seal();
        let left: usize =
            q.sealed.drain(..).map(|b| b.samples).sum::<usize>() + self.abandoned.take();
        q.queued = 0;
        drop(q);
        self.stats.samples_pending.store(0, Relaxed);
        if left > 0 {
            self.stats.samples_failed.fetch_add(left as u64, Relaxed);
            crate::log!(
                Level::Error,
                "remote",
                "failed to flush all samples on shutdown",
                remote_name = self.ep.cfg.name,
                url = self.ep.url,
                samples = left
            );
        }
        ctl.active_senders.set(ctl.active_senders.get() - 1);
        ctl.senders_done.notify();
    }

    async fn next_batch(&self, ctl: &CoreControl) -> Option<Batch> {
        let deadline = self.ep.cfg.queue.batch_send_deadline;
        loop {
            let flushing = ctl.shutdown.is_set();
            let wait = {
                let mut q = self.queue.borrow_mut();
                if let Some(b) = q.sealed.pop_front() {
                    q.queued -= b.samples;
                    return Some(b);
                }
                if q.current_samples > 0 {
                    let due = q.current_since.is_some_and(|t| t.elapsed() >= deadline);
                    if due || flushing {
                        q.seal();
                        continue;
                    }
                }
                if flushing
                    && (ctl.active_loops.get() == 0
                        || ctl.flush_deadline_at().is_some_and(|d| Instant::now() >= d))
                {
                    return None;
                }
                match q.current_since {
                    Some(t) => deadline.saturating_sub(t.elapsed()),
                    None if flushing => Duration::from_millis(100),
                    None => Duration::from_secs(3600),
                }
            };
            if flushing {
                race(self.notify.notified(), sleep(wait)).await;
            } else {
                race(
                    self.notify.notified(),
                    race(sleep(wait), ctl.shutdown.wait()),
                )
                .await;
            }
        }
    }

    async fn send(
        &self,
        conn: &mut Conn,
        enc: &mut snap::raw::Encoder,
        out: &mut Vec<u8>,
        batch: Batch,
        ctl: &CoreControl,
    ) {
        let q = &self.ep.cfg.queue;
        // Grow only: resizing down and up again would zero the buffer on every send.
        let need = snap::raw::max_compress_len(batch.body.len());
        if out.len() < need {
            out.resize(need, 0);
        }
        let len = match enc.compress(&batch.body, out) {
            Ok(n) => n,
            Err(e) => {
                // Only possible for inputs over 4 GiB, which batches never are.
                self.drop_batch(&batch, &format!("snappy: {e}"));
                return;
            }
        };
        let out = &out[..len];
        let mut backoff = q.min_backoff;
        let mut attempt = 0u32;
        loop {
            let outcome = self.attempt(conn, out, attempt).await;
            match outcome {
                Outcome::Sent => {
                    self.stats
                        .samples_sent
                        .fetch_add(batch.samples as u64, Relaxed);
                    self.stats.bytes_sent.fetch_add(out.len() as u64, Relaxed);
                    self.stats
                        .highest_sent_ts_ms
                        .fetch_max(batch.newest_ts.max(0) as u64, Relaxed);
                    if self.ep.failing.swap(false, Relaxed) {
                        crate::log!(
                            Level::Info,
                            "remote",
                            "remote write endpoint recovered",
                            remote_name = self.ep.cfg.name,
                            url = self.ep.url
                        );
                    }
                    return;
                }
                Outcome::Drop { reason } => {
                    self.drop_batch(&batch, &reason);
                    return;
                }
                Outcome::Retry { reason, after } => {
                    self.stats
                        .samples_retried
                        .fetch_add(batch.samples as u64, Relaxed);
                    self.stats.requests_failed.fetch_add(1, Relaxed);
                    if !self.ep.failing.swap(true, Relaxed) {
                        let hint = if reason.starts_with("connect:") {
                            "is a receiver listening there? Prometheus accepts remote write only with --web.enable-remote-write-receiver"
                        } else {
                            "samples stay queued and are sent when the endpoint answers"
                        };
                        crate::log!(
                            Level::Warn,
                            "remote",
                            "remote write endpoint is not accepting samples; retrying with backoff (logged once until it recovers)",
                            remote_name = self.ep.cfg.name,
                            url = self.ep.url,
                            err = reason,
                            hint = hint
                        );
                    } else {
                        crate::log!(
                            Level::Debug,
                            "remote",
                            "retrying remote write",
                            url = self.ep.url,
                            attempt = attempt,
                            err = reason
                        );
                    }
                    let mut pause = after.unwrap_or(backoff);
                    backoff = (backoff * 2).min(q.max_backoff);
                    if let Some(d) = ctl.flush_deadline_at() {
                        let now = Instant::now();
                        if now >= d {
                            self.abandoned.set(self.abandoned.get() + batch.samples);
                            return;
                        }
                        pause = pause.min(d - now);
                        sleep(pause).await;
                    } else {
                        // Shutdown during the pause starts the flush clock; keep retrying.
                        race(sleep(pause), ctl.shutdown.wait()).await;
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn drop_batch(&self, batch: &Batch, reason: &str) {
        self.stats
            .samples_failed
            .fetch_add(batch.samples as u64, Relaxed);
        self.stats.requests_failed.fetch_add(1, Relaxed);
        crate::log!(
            Level::Error,
            "remote",
            "non-recoverable error sending samples; the batch is dropped",
            remote_name = self.ep.cfg.name,
            url = self.ep.url,
            samples = batch.samples,
            err = reason
        );
    }

    async fn attempt(&self, conn: &mut Conn, body: &[u8], attempt: u32) -> Outcome {
        let req = conn.request_mut();
        req.extend_from_slice(self.ep.head.as_bytes());
        if attempt > 0 {
            req.extend_from_slice(format!("Retry-Attempt: {attempt}\r\n").as_bytes());
        }
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
        let retry_429 = self.ep.cfg.queue.retry_on_http_429;
        match timeout(self.ep.cfg.remote_timeout, conn.round_trip(false)).await {
            Err(_) => {
                conn.reset();
                Outcome::Retry {
                    reason: format!("request timed out after {:?}", self.ep.cfg.remote_timeout),
                    after: None,
                }
            }
            Ok(Err(e)) => Outcome::Retry {
                reason: e.to_string(),
                after: None,
            },
            Ok(Ok(resp)) => {
                let status = resp.status;
                if (200..300).contains(&status) {
                    return Outcome::Sent;
                }
                let excerpt = String::from_utf8_lossy(&resp.body[..resp.body.len().min(1024)])
                    .trim()
                    .to_string();
                let reason = format!("server returned HTTP status {status}: {excerpt}");
                if status >= 500 || (status == 429 && retry_429) {
                    let now = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    let after = resp
                        .retry_after
                        .and_then(|v| super::parse_retry_after(v, now));
                    Outcome::Retry { reason, after }
                } else {
                    Outcome::Drop { reason }
                }
            }
        }
    }
}
