//! One endpoint's sending shard on one core: a queue of encoded batches and the task that sends
//! them, in order, with Prometheus' batching, retry and shutdown-flush semantics.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RemoteWriteConfig;
use crate::http::Conn;
use crate::log::Level;
use crate::remote::encode::{KIND_EXEMPLAR, KIND_HISTOGRAM, KIND_SAMPLE};
use crate::runtime::{Event, Instant, LocalNotify, race, sleep, timeout};
use crate::selfmetrics::ShardStats;
use crate::wal::segment::Pos;
use crate::wal::{Wal, WalReader};

/// An endpoint as all cores share it: its config, the request head, and log throttles.
pub struct Endpoint {
    pub cfg: RemoteWriteConfig,
    pub url: String,
    head: String,
    /// Set while the endpoint keeps failing, so "unreachable" is logged once, not per retry.
    failing: AtomicBool,
    last_drop_log_secs: AtomicU64,
    /// Backlogs from before a change of the core count still being sent to this endpoint: the
    /// WALs of removed cores, and each core's own backlog from the last run. Their samples are
    /// older than anything scraped now, and a series may now be scraped on another core than
    /// the one holding its backlog, so no shard sends newer data until this is zero: per-series
    /// order holds at the receiver, which would refuse the older samples.
    pub drains_pending: AtomicUsize,
}

impl Endpoint {
    /// The entries beyond samples this endpoint takes.
    pub fn accept(&self) -> crate::wal::Accept {
        crate::wal::Accept {
            histograms: self.cfg.send_native_histograms,
            exemplars: self.cfg.send_exemplars,
        }
    }

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
            drains_pending: AtomicUsize::new(0),
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
    /// The core's WAL: scrape loops commit to it, shards read their backlog from it.
    pub wal: Rc<RefCell<Wal>>,
    /// A WAL left by a core that no longer exists: nothing appends to it, and its shards end
    /// once they have sent its backlog.
    pub draining: bool,
    /// The core count differs from the last run's: targets moved between cores, so a series'
    /// backlog may sit in another core's WAL than its new scrapes (see `Endpoint::drains_pending`).
    pub cores_changed: Cell<bool>,
}

impl CoreControl {
    pub fn new(shutdown: Event, flush_deadline: Duration, wal: Wal) -> Rc<CoreControl> {
        Rc::new(CoreControl {
            shutdown,
            flush_deadline,
            deadline: Cell::new(None),
            active_loops: Cell::new(0),
            active_senders: Cell::new(0),
            senders_done: LocalNotify::default(),
            shards: RefCell::new(Vec::new()),
            wal: Rc::new(RefCell::new(wal)),
            draining: false,
            cores_changed: Cell::new(false),
        })
    }

    /// The control of a WAL to drain (see [`Self::draining`]).
    pub fn new_draining(shutdown: Event, flush_deadline: Duration, wal: Wal) -> Rc<CoreControl> {
        let mut ctl = Rc::into_inner(Self::new(shutdown, flush_deadline, wal))
            .unwrap_or_else(|| unreachable!("just made"));
        ctl.draining = true;
        Rc::new(ctl)
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
    /// The WAL position this batch completes: once it is acknowledged, every record before
    /// it has been delivered.
    cursor: Pos,
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
    /// The WAL position of the last scrape wholly in the queue.
    current_cursor: Pos,
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
            cursor: self.current_cursor,
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
    /// This endpoint's cursor slot in the core's WAL.
    slot: usize,
    /// Set while the endpoint reads its backlog back from the WAL instead of the queue.
    replay: RefCell<Option<Replay>>,
    /// The cursor of the last batch handed to the sender: where a read-back starts.
    handed: Cell<Pos>,
    wal: Rc<RefCell<Wal>>,
    /// Set while this shard sends its own backlog from before a change of the core count
    /// (counted in `Endpoint::drains_pending`).
    initial_hold: Cell<bool>,
}

/// Reading an endpoint's backlog back from the WAL: the reader and the record being cut into
/// batches.
struct Replay {
    reader: WalReader,
    staged: Vec<u8>,
    ends: Vec<u32>,
    kinds: Vec<u8>,
    taken: usize,
    /// End of the staged record, and of the one before it.
    record_end: Pos,
    before_record: Pos,
    newest: i64,
    /// Damage the reader had met when last reported: (bytes skipped, samples lost).
    reported: (u64, u64),
}

impl Replay {
    fn new(dir: &std::path::Path, from: Pos) -> Replay {
        Replay {
            reader: WalReader::new(dir, from),
            staged: Vec::new(),
            ends: Vec::new(),
            kinds: Vec::new(),
            taken: 0,
            record_end: from,
            before_record: from,
            newest: i64::MIN,
            reported: (0, 0),
        }
    }
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
    pub fn new(ep: Arc<Endpoint>, stats: Arc<ShardStats>, ctl: &CoreControl) -> Rc<Shard> {
        let limit = ep
            .cfg
            .queue
            .capacity
            .saturating_mul(ep.cfg.queue.max_shards)
            .max(ep.cfg.queue.max_samples_per_send);
        let mut wal = ctl.wal.borrow_mut();
        let saved = crate::wal::load_cursors(wal.dir());
        let slot = wal.add_endpoint(&ep.cfg.name, &saved, stats.samples_dropped_wal_size.clone());
        let cursor = wal.cursor(slot);
        let replay = cursor.replaying.then(|| {
            crate::log!(
                Level::Info,
                "remote",
                "resuming remote write from the WAL where the endpoint's last acknowledged batch ended",
                remote_name = ep.cfg.name,
                url = ep.url,
                backlog_bytes = wal.bytes_after(cursor.acked)
            );
            Replay::new(wal.dir(), cursor.acked)
        });
        let queue = Queue {
            current_cursor: cursor.acked,
            ..Queue::default()
        };
        let handed = Cell::new(cursor.acked);
        drop(wal);
        let initial_hold = ctl.cores_changed.get() && !ctl.draining && replay.is_some();
        if initial_hold {
            ep.drains_pending.fetch_add(1, Relaxed);
        }
        Rc::new(Shard {
            ep,
            stats,
            queue: RefCell::new(queue),
            notify: LocalNotify::default(),
            limit,
            abandoned: Cell::new(0),
            slot,
            replay: RefCell::new(replay),
            handed,
            wal: ctl.wal.clone(),
            initial_hold: Cell::new(initial_hold),
        })
    }

    /// This shard's backlog from before a change of the core count is sent (or shutdown came).
    fn end_initial_hold(&self) {
        if self.initial_hold.replace(false) {
            self.ep.drains_pending.fetch_sub(1, Relaxed);
        }
    }

    /// Queues a committed scrape: `entries` holds encoded timeseries entries, `ends[i]` is where
    /// entry `i` ends, `wal` where its records end in the WAL (`None`: the WAL write failed).
    /// Batches are cut at `max_samples_per_send`. While the endpoint reads back from the WAL,
    /// the WAL already holds the scrape and nothing is queued.
    pub fn append(
        &self,
        entries: &[u8],
        ends: &[u32],
        kinds: &[u8],
        newest_ts: i64,
        wal: Option<Pos>,
    ) {
        if ends.is_empty() {
            return;
        }
        if self.replay.borrow().is_some() {
            if wal.is_none() {
                // Neither in the WAL nor queued: this endpoint will not get it.
                self.stats
                    .samples_dropped_queue_full
                    .fetch_add(ends.len() as u64, Relaxed);
            }
            return;
        }
        // Native histograms and exemplars go only where the endpoint takes them; re-slice
        // without the others.
        let accept = self.ep.accept();
        let taken = |k: &u8| match *k {
            KIND_HISTOGRAM => accept.histograms,
            KIND_EXEMPLAR => accept.exemplars,
            _ => true,
        };
        if !kinds.iter().all(taken) {
            let (mut kept, mut kept_ends, mut start) =
                (Vec::with_capacity(entries.len()), Vec::new(), 0usize);
            for (end, kind) in ends.iter().zip(kinds) {
                if taken(kind) {
                    kept.extend_from_slice(&entries[start..*end as usize]);
                    kept_ends.push(kept.len() as u32);
                }
                start = *end as usize;
            }
            let samples = vec![KIND_SAMPLE; kept_ends.len()];
            return self.append(&kept, &kept_ends, &samples, newest_ts, wal);
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
        if let Some(p) = wal {
            q.current_cursor = p;
        }
        if q.queued > self.limit && wal.is_some() {
            // Fallen behind: the WAL holds everything after the last batch handed out, so
            // read it back from there instead of holding or dropping it in memory.
            q.sealed.clear();
            q.current.clear();
            q.current_samples = 0;
            q.current_since = None;
            q.queued = 0;
            drop(q);
            self.start_replay();
            self.notify.notify();
            return;
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

    fn start_replay(&self) {
        let from = self.handed.get();
        let mut wal = self.wal.borrow_mut();
        let c = wal.cursor_mut(self.slot);
        c.replaying = true;
        c.replay_from = from;
        crate::log!(
            Level::Warn,
            "remote",
            "remote write fell behind; sending its backlog from the WAL",
            remote_name = self.ep.cfg.name,
            url = self.ep.url,
            backlog_bytes = wal.bytes_after(from)
        );
        *self.replay.borrow_mut() = Some(Replay::new(wal.dir(), from));
    }

    /// The next batch read back from the WAL; `None` once the reader reached the head.
    fn replay_batch(&self) -> Option<Batch> {
        let mut guard = self.replay.borrow_mut();
        let rp = guard.as_mut()?;
        let mut wal = self.wal.borrow_mut();
        if wal.cursor(self.slot).moved {
            // A retention bound deleted data under the reader: continue after it.
            let c = wal.cursor_mut(self.slot);
            c.moved = false;
            let from = c.acked;
            *rp = Replay::new(wal.dir(), from);
        }
        // Everything committed must be in the file before reading up to the head.
        wal.flush();
        let (head, first) = (wal.head(), wal.first_segment());
        let max = self.ep.cfg.queue.max_samples_per_send;
        let accept = self.ep.accept();
        let mut body = Vec::new();
        let (mut samples, mut newest) = (0usize, i64::MIN);
        let mut cursor;
        loop {
            if rp.taken == rp.ends.len() {
                rp.staged.clear();
                rp.ends.clear();
                rp.kinds.clear();
                rp.taken = 0;
                rp.before_record = rp.record_end;
                cursor = rp.record_end;
                if samples >= max {
                    break;
                }
                match rp.reader.next_record(
                    head,
                    first,
                    accept,
                    &mut rp.staged,
                    &mut rp.ends,
                    &mut rp.kinds,
                ) {
                    Ok(Some((end, n))) => {
                        rp.record_end = end;
                        rp.newest = n;
                        continue;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        crate::log!(
                            Level::Error,
                            "remote",
                            "cannot read the WAL back; skipping to its head",
                            remote_name = self.ep.cfg.name,
                            err = e
                        );
                        rp.reader = WalReader::new(wal.dir(), head);
                        rp.record_end = head;
                        rp.before_record = head;
                        cursor = head;
                        break;
                    }
                }
            }
            let start = if rp.taken == 0 {
                0
            } else {
                rp.ends[rp.taken - 1] as usize
            };
            let take = (max - samples).min(rp.ends.len() - rp.taken);
            let end = rp.ends[rp.taken + take - 1] as usize;
            body.extend_from_slice(&rp.staged[start..end]);
            samples += take;
            rp.taken += take;
            newest = newest.max(rp.newest);
            cursor = if rp.taken == rp.ends.len() {
                rp.record_end
            } else {
                rp.before_record
            };
            if samples >= max {
                break;
            }
        }
        let r = &rp.reader;
        let damage = (r.damaged_bytes, r.lost_values + r.missing_series);
        if damage != rp.reported {
            let (bytes, lost) = (damage.0 - rp.reported.0, damage.1 - rp.reported.1);
            rp.reported = damage;
            wal.stats.read_damaged_bytes.fetch_add(bytes, Relaxed);
            wal.stats.samples_lost_to_damage.fetch_add(lost, Relaxed);
            crate::log!(
                Level::Warn,
                "wal",
                "skipped damaged WAL data while reading it back; the rest is sent",
                remote_name = self.ep.cfg.name,
                dir = wal.dir().display(),
                damaged_bytes = bytes,
                samples_lost = lost
            );
        }
        self.stats
            .wal_backlog_bytes
            .store(wal.bytes_after(rp.reader.position), Relaxed);
        if samples == 0 {
            self.end_initial_hold();
            // Caught up with the head: from here on the queue takes new scrapes.
            wal.cursor_mut(self.slot).replaying = false;
            if cursor > wal.cursor(self.slot).acked {
                wal.ack(self.slot, cursor);
            }
            drop(wal);
            *guard = None;
            self.stats.wal_backlog_bytes.store(0, Relaxed);
            self.queue.borrow_mut().current_cursor = cursor;
            crate::log!(
                Level::Info,
                "remote",
                "remote write caught up with the WAL; sending live",
                remote_name = self.ep.cfg.name,
                url = self.ep.url
            );
            return None;
        }
        Some(Batch {
            body,
            samples,
            newest_ts: newest,
            cursor,
        })
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
        self.end_initial_hold();
        // Whatever is left (the flush deadline passed) stays in the WAL past this endpoint's
        // cursor and is sent after the restart.
        let mut q = self.queue.borrow_mut();
        q.seal();
        let left: usize =
            q.sealed.drain(..).map(|b| b.samples).sum::<usize>() + self.abandoned.take();
        q.queued = 0;
        drop(q);
        self.stats.samples_pending.store(0, Relaxed);
        let wal = self.wal.borrow();
        let backlog = wal.bytes_after(wal.cursor(self.slot).acked);
        drop(wal);
        if left > 0 || backlog > 0 {
            crate::log!(
                Level::Warn,
                "remote",
                "stopping with unsent samples; they stay in the WAL and are sent after the restart",
                remote_name = self.ep.cfg.name,
                url = self.ep.url,
                queued_samples = left,
                wal_backlog_bytes = backlog
            );
        }
        if ctl.draining {
            self.ep.drains_pending.fetch_sub(1, Relaxed);
        }
        ctl.active_senders.set(ctl.active_senders.get() - 1);
        ctl.senders_done.notify();
    }

    async fn next_batch(&self, ctl: &CoreControl) -> Option<Batch> {
        let deadline = self.ep.cfg.queue.batch_send_deadline;
        loop {
            let flushing = ctl.shutdown.is_set();
            // Old backlogs first (see `Endpoint::drains_pending`): what scrapes commit
            // meanwhile waits in the queue, then the WAL.
            if !flushing
                && !ctl.draining
                && !self.initial_hold.get()
                && self.ep.drains_pending.load(Relaxed) > 0
            {
                race(sleep(Duration::from_millis(100)), ctl.shutdown.wait()).await;
                continue;
            }
            if self.replay.borrow().is_some() {
                if flushing {
                    // The backlog is in the WAL; it is sent after the restart.
                    return None;
                }
                if let Some(b) = self.replay_batch() {
                    self.handed.set(b.cursor);
                    return Some(b);
                }
                continue;
            }
            let wait = {
                let mut q = self.queue.borrow_mut();
                if ctl.draining && q.sealed.is_empty() && q.current_samples == 0 {
                    // Caught up with a WAL nothing appends to: done.
                    return None;
                }
                if let Some(b) = q.sealed.pop_front() {
                    q.queued -= b.samples;
                    self.handed.set(b.cursor);
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
                    self.wal.borrow_mut().ack(self.slot, batch.cursor);
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
                    // Dropped for good, as Prometheus drops it: the cursor moves past it.
                    self.wal.borrow_mut().ack(self.slot, batch.cursor);
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
