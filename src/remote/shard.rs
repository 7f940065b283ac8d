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
use crate::remote::encode::{KIND_EXEMPLAR, KIND_HISTOGRAM};
use crate::runtime::{Event, Instant, LocalNotify, race, sleep, timeout};
use crate::selfmetrics::ShardStats;
use crate::wal::segment::Pos;
use crate::wal::{Wal, WalReader};

/// An endpoint as all cores share it: its config, the request head, and log throttles.
pub struct Endpoint {
    pub cfg: RemoteWriteConfig,
    pub url: String,
    /// The request's header lines after `Host` (content type, version, `headers`, and the
    /// credentials when they never change), for Remote Write 1.0 and 2.0.
    head: String,
    head_v2: String,
    /// Sending Remote Write 2.0: configured, and the receiver has not refused it.
    v2: AtomicBool,
    /// A 2.0 request was acknowledged with written counts: the receiver speaks 2.0.
    v2_confirmed: AtomicBool,
    /// Credentials are read at each request (from files, or an OAuth 2.0 token).
    dynamic_auth: bool,
    /// Set while the endpoint keeps failing, so "unreachable" is logged once, not per retry.
    failing: AtomicBool,
    last_drop_log_secs: AtomicU64,
    /// Backlogs from before a change of the core count still being sent to this endpoint: the
    /// WALs of removed cores, and each core's own backlog from the last run. Their samples are
    /// older than anything scraped now, and a series may now be scraped on another core than
    /// the one holding its backlog, so no shard sends newer data until this is zero: per-series
    /// order holds at the receiver, which would refuse the older samples.
    pub drains_pending: AtomicUsize,
    /// The fewest and most lanes each core's shard runs: `min_shards` and `max_shards`
    /// spread over the cores (rounded up; at least one).
    pub lanes: (usize, usize),
}

impl Endpoint {
    /// The entries beyond samples this endpoint takes.
    pub fn accept(&self) -> crate::wal::Accept {
        crate::wal::Accept {
            histograms: self.cfg.send_native_histograms,
            exemplars: self.cfg.send_exemplars,
        }
    }

    pub fn new(cfg: RemoteWriteConfig, cores: usize) -> Endpoint {
        let mut common = String::new();
        for (k, v) in &cfg.headers {
            common.push_str(k);
            common.push_str(": ");
            common.push_str(v);
            common.push_str("\r\n");
        }
        let mut dynamic_auth = cfg.http.reads_files();
        if !dynamic_auth {
            let mut auth = String::new();
            match cfg.http.header_lines(&mut auth) {
                Ok(()) => common.push_str(&auth),
                // Reported at every attempt.
                Err(_) => dynamic_auth = true,
            }
        }
        let head = format!(
            "User-Agent: spate/{}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\n{common}",
            env!("CARGO_PKG_VERSION"),
        );
        let head_v2 = format!(
            "User-Agent: spate/{}\r\nContent-Type: application/x-protobuf;proto=io.prometheus.write.v2.Request\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 2.0.0\r\n{common}",
            env!("CARGO_PKG_VERSION"),
        );
        let cores = cores.max(1);
        let min = cfg.queue.min_shards.div_ceil(cores).max(1);
        let max = cfg.queue.max_shards.div_ceil(cores).max(min);
        Endpoint {
            lanes: (min, max),
            url: cfg.url.to_string(),
            v2: AtomicBool::new(cfg.v2),
            v2_confirmed: AtomicBool::new(false),
            cfg,
            head,
            head_v2,
            dynamic_auth,
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
    /// The families this core's scrapes reported lately, kept while an endpoint sends
    /// metadata (`track_metadata`).
    pub families: RefCell<crate::remote::metadata::Families>,
    pub track_metadata: Cell<bool>,
    /// Created timestamps from `_created` samples, kept while a Remote Write 2.0 endpoint
    /// sends them (`track_created`).
    pub created: RefCell<crate::remote::metadata::Created>,
    pub track_created: Cell<bool>,
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
            families: RefCell::new(Default::default()),
            track_metadata: Cell::new(false),
            created: RefCell::new(Default::default()),
            track_created: Cell::new(false),
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
    /// The end of the commit before this batch's first entry: once every lane's lowest
    /// unsent batch is past a position, everything before it has been delivered.
    low: Pos,
}

/// One lane's queue: the batch being filled and the sealed ones waiting to be sent.
#[derive(Default)]
struct Queue {
    current: Vec<u8>,
    current_samples: usize,
    current_newest: i64,
    current_since: Option<Instant>,
    current_low: Pos,
    sealed: VecDeque<Batch>,
    /// Samples in `current` and `sealed`.
    queued: usize,
    /// The end of the last commit offered to this lane: with nothing pending here, every
    /// entry of this lane before it was sent.
    through: Pos,
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
            low: self.current_low,
        });
        self.current_samples = 0;
        self.current_newest = i64::MIN;
        self.current_since = None;
    }

    /// Appends `count` entries (`bytes`), sealing at `max` samples.
    fn push(&mut self, bytes: &[u8], count: usize, newest: i64, max: usize) {
        if self.current_samples == 0 {
            self.current_since = Some(Instant::now());
            self.current_low = self.through;
        }
        self.current.extend_from_slice(bytes);
        self.current_samples += count;
        self.current_newest = self.current_newest.max(newest);
        self.queued += count;
        if self.current_samples >= max {
            self.seal();
        }
    }

    /// Where this lane's unsent entries begin (see [`Batch::low`]).
    fn low(&self) -> Pos {
        match self.sealed.front() {
            Some(b) => b.low,
            None if self.current_samples > 0 => self.current_low,
            None => self.through,
        }
    }
}

/// One of a shard's concurrent senders: a queue, and a task with its own connection that has
/// at most one request in flight. A series always goes to the same lane of a generation, and a
/// new generation sends nothing until the last one has finished: per-series order holds.
struct Lane {
    queue: RefCell<Queue>,
    notify: LocalNotify,
    /// The `low` of the batch in flight.
    in_flight: Cell<Option<Pos>>,
    /// Of an older generation: takes nothing new, and ends once its queue is sent.
    retired: Cell<bool>,
}

impl Lane {
    fn new(through: Pos) -> Rc<Lane> {
        Rc::new(Lane {
            queue: RefCell::new(Queue {
                through,
                current_low: through,
                current_newest: i64::MIN,
                ..Queue::default()
            }),
            notify: LocalNotify::default(),
            in_flight: Cell::new(None),
            retired: Cell::new(false),
        })
    }

    fn low(&self) -> Pos {
        self.in_flight
            .get()
            .unwrap_or_else(|| self.queue.borrow().low())
    }

    fn idle(&self) -> bool {
        let q = self.queue.borrow();
        self.in_flight.get().is_none() && q.sealed.is_empty() && q.current_samples == 0
    }
}

/// Reused buffers for the entries an endpoint gets when they differ from what was committed
/// (see [`Shard::rewrite`]).
#[derive(Default)]
struct Rewrite {
    entries: Vec<u8>,
    ends: Vec<u32>,
    labels: crate::remote::encode::LabelScratch,
    scratch: crate::relabel::Scratch,
}

/// A lane's connection, its OAuth 2.0 token, and its compression buffers.
struct LaneConn {
    /// The endpoint's connection, or why it cannot be made (reported at each attempt).
    conn: Result<Conn, String>,
    tokens: crate::http::oauth2::TokenSource,
    encoder: snap::raw::Encoder,
    compressed: Vec<u8>,
    /// Remote Write 2.0: the converter and the request it made.
    v2: crate::remote::v2::Converter,
    v2_body: Vec<u8>,
}

impl LaneConn {
    fn new(ep: &Endpoint) -> LaneConn {
        let url = &ep.cfg.url;
        LaneConn {
            conn: ep.cfg.http.connection(&url.authority(), url.tls),
            tokens: Default::default(),
            encoder: snap::raw::Encoder::new(),
            compressed: Vec::new(),
            v2: Default::default(),
            v2_body: Vec::new(),
        }
    }
}

/// Go's client follows at most this many redirects.
const MAX_REDIRECTS: usize = 10;

/// How often the lane count is reconsidered.
const ADAPT_EVERY: Duration = Duration::from_secs(2);

/// What the lanes saw since the shard last reconsidered its lane count.
struct Window {
    started: Instant,
    /// Requests that succeeded, their samples and their summed latency.
    sent: u32,
    samples: u64,
    latency: Duration,
    /// Attempts that failed with a retryable error.
    failed: u32,
    /// Time lanes spent with a request in flight.
    busy: Duration,
    /// Seen behind: reading back from the WAL, or more queued than the lanes send at once.
    behind: bool,
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            sent: 0,
            samples: 0,
            latency: Duration::ZERO,
            failed: 0,
            busy: Duration::ZERO,
            behind: false,
        }
    }
}

/// Reading an endpoint's backlog back from the WAL into the lanes.
struct Replay {
    reader: WalReader,
    staged: Vec<u8>,
    ends: Vec<u32>,
    kinds: Vec<u8>,
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
    /// The receiver does not take Remote Write 2.0: send 1.0 from now on, this batch first.
    Downgrade {
        reason: String,
    },
}

/// One endpoint on one core: lanes fed from committed scrapes while they keep up, or from the
/// WAL while the endpoint is behind, and the lane count adapted to how the endpoint answers.
pub struct Shard {
    ep: Arc<Endpoint>,
    stats: Arc<ShardStats>,
    /// Wakes the shard's own task (feeding, lane count, the end).
    notify: LocalNotify,
    /// Most samples queued in memory before the shard reads its backlog back from the WAL.
    limit: usize,
    /// Samples of in-flight batches abandoned at the flush deadline.
    abandoned: Cell<usize>,
    /// This endpoint's cursor slot in the core's WAL.
    slot: usize,
    wal: Rc<RefCell<Wal>>,
    /// Set while this shard sends its own backlog from before a change of the core count
    /// (counted in `Endpoint::drains_pending`).
    initial_hold: Cell<bool>,
    /// The generation taking new entries.
    lanes: RefCell<Vec<Rc<Lane>>>,
    /// The previous generation, still sending what it holds.
    retiring: RefCell<Vec<Rc<Lane>>>,
    /// Lane tasks running.
    running: Cell<usize>,
    /// Set while the endpoint reads its backlog back from the WAL instead of taking scrapes.
    replay: RefCell<Option<Replay>>,
    /// The end of the last commit (or WAL record) wholly in the lanes.
    queued_to: Cell<Pos>,
    /// Samples in the lanes' queues.
    queued: Cell<usize>,
    window: RefCell<Window>,
    rewrite: RefCell<Rewrite>,
    /// The lowest latency per sample seen lately (seconds): the endpoint's when not loaded.
    latency_floor: Cell<Option<f64>>,
    /// The lane count and send rate (samples/s) of the last window spent behind.
    last_behind: Cell<Option<(usize, f64)>>,
    /// A lane count that did not send faster than one fewer, and until when it is the most
    /// lanes tried.
    ceiling: Cell<Option<(usize, Instant)>>,
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
        let acked = cursor.acked;
        drop(wal);
        let initial_hold = ctl.cores_changed.get() && !ctl.draining && replay.is_some();
        if initial_hold {
            ep.drains_pending.fetch_add(1, Relaxed);
        }
        let lanes = (0..ep.lanes.0).map(|_| Lane::new(acked)).collect();
        stats
            .max_samples_per_send
            .store(ep.cfg.queue.max_samples_per_send as u64, Relaxed);
        stats.capacity.store(ep.cfg.queue.capacity as u64, Relaxed);
        stats.shards_min.store(ep.lanes.0 as u64, Relaxed);
        stats.shards_max.store(ep.lanes.1 as u64, Relaxed);
        stats.shards.store(ep.lanes.0 as u64, Relaxed);
        stats.shards_desired.store(ep.lanes.0 as u64, Relaxed);
        Rc::new(Shard {
            ep,
            stats,
            notify: LocalNotify::default(),
            limit,
            abandoned: Cell::new(0),
            slot,
            wal: ctl.wal.clone(),
            initial_hold: Cell::new(initial_hold),
            lanes: RefCell::new(lanes),
            retiring: RefCell::new(Vec::new()),
            running: Cell::new(0),
            replay: RefCell::new(replay),
            queued_to: Cell::new(acked),
            queued: Cell::new(0),
            window: RefCell::new(Window::new()),
            rewrite: RefCell::new(Rewrite::default()),
            latency_floor: Cell::new(None),
            last_behind: Cell::new(None),
            ceiling: Cell::new(None),
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
    /// While the endpoint reads back from the WAL, the WAL already holds the scrape and
    /// nothing is queued.
    pub fn append(
        &self,
        entries: &[u8],
        ends: &[u32],
        kinds: &[u8],
        newest_ts: i64,
        wal: Option<Pos>,
    ) {
        if self.replay.borrow().is_some() {
            if wal.is_none() {
                // Neither in the WAL nor queued: this endpoint will not get it.
                self.stats
                    .samples_dropped_queue_full
                    .fetch_add(ends.len() as u64, Relaxed);
            }
            return;
        }
        let mut rw = self.rewrite.borrow_mut();
        let (entries, ends) = self.rewrite(&mut rw, entries, ends, kinds);
        self.distribute(entries, ends, newest_ts, wal);
        drop(rw);
        if self.queued.get() > self.limit {
            match wal {
                // Fallen behind: the WAL holds everything after what the lanes hold, so read
                // it back from there instead of holding more in memory.
                Some(_) => self.start_replay(),
                None => self.drop_oldest(),
            }
        }
    }

    /// The entries this endpoint gets: only the kinds it takes (native histograms and
    /// exemplars only where enabled), relabeled by its `write_relabel_configs`. Without either
    /// to do, the entries as given.
    fn rewrite<'a>(
        &self,
        rw: &'a mut Rewrite,
        entries: &'a [u8],
        ends: &'a [u32],
        kinds: &[u8],
    ) -> (&'a [u8], &'a [u32]) {
        let accept = self.ep.accept();
        let taken = |k: &u8| match *k {
            KIND_HISTOGRAM => accept.histograms,
            KIND_EXEMPLAR => accept.exemplars,
            _ => true,
        };
        let rules = &*self.ep.cfg.write_relabel_configs;
        let age_limit = self.ep.cfg.queue.sample_age_limit;
        if rules.is_empty() && age_limit.is_zero() && kinds.iter().all(taken) {
            return (entries, ends);
        }
        let cutoff = (!age_limit.is_zero())
            .then(|| crate::log::unix_millis() - age_limit.as_millis() as i64);
        rw.entries.clear();
        rw.ends.clear();
        let (mut start, mut dropped, mut old) = (0usize, 0u64, 0u64);
        for (end, kind) in ends.iter().zip(kinds) {
            let entry = &entries[start..*end as usize];
            start = *end as usize;
            if !taken(kind) {
                continue;
            }
            if let Some(c) = cutoff
                && crate::remote::encode::entry_timestamp(entry).is_some_and(|t| t < c)
            {
                old += 1;
                continue;
            }
            if rules.is_empty() {
                rw.entries.extend_from_slice(entry);
            } else if !crate::remote::encode::relabel_entry(
                entry,
                rules,
                &mut rw.labels,
                &mut rw.scratch,
                &mut rw.entries,
            ) {
                dropped += 1;
                continue;
            }
            rw.ends.push(rw.entries.len() as u32);
        }
        if dropped > 0 {
            self.stats
                .samples_dropped_relabel
                .fetch_add(dropped, Relaxed);
        }
        if old > 0 {
            self.stats.samples_dropped_too_old.fetch_add(old, Relaxed);
        }
        (&rw.entries, &rw.ends)
    }

    /// Hands entries to the lanes: each to the lane its series hashes to.
    fn distribute(&self, entries: &[u8], ends: &[u32], newest: i64, wal: Option<Pos>) {
        let max = self.ep.cfg.queue.max_samples_per_send;
        let lanes = self.lanes.borrow();
        if let [lane] = lanes.as_slice() {
            let mut q = lane.queue.borrow_mut();
            let (mut start, mut i) = (0usize, 0usize);
            while i < ends.len() {
                // As many entries as fit in the current batch, in one copy.
                let take = (max - q.current_samples).min(ends.len() - i);
                let end = ends[i + take - 1] as usize;
                q.push(&entries[start..end], take, newest, max);
                start = end;
                i += take;
            }
        } else {
            let n = lanes.len() as u64;
            let mut start = 0usize;
            for end in ends {
                let e = &entries[start..*end as usize];
                let lane = &lanes[(crate::remote::encode::series_key(e) % n) as usize];
                lane.queue.borrow_mut().push(e, 1, newest, max);
                start = *end as usize;
            }
        }
        if let Some(p) = wal {
            for lane in lanes.iter() {
                lane.queue.borrow_mut().through = p;
            }
            self.queued_to.set(p);
        }
        self.queued.set(self.queued.get() + ends.len());
        self.stats
            .samples_pending
            .store(self.queued.get() as u64, Relaxed);
        for lane in lanes.iter() {
            lane.notify.notify();
        }
    }

    /// Without a WAL to fall back on (its write failed), drops the oldest sealed batches until
    /// the queues fit their bound.
    fn drop_oldest(&self) {
        let mut dropped = 0;
        for lane in self.lanes.borrow().iter() {
            let mut q = lane.queue.borrow_mut();
            while self.queued.get() - dropped > self.limit {
                let Some(b) = q.sealed.pop_front() else { break };
                q.queued -= b.samples;
                dropped += b.samples;
            }
        }
        if dropped == 0 {
            return;
        }
        self.queued.set(self.queued.get() - dropped);
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

    /// From here on the lanes are fed from the WAL, after what they already hold.
    fn start_replay(&self) {
        let from = self.queued_to.get();
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
        drop(wal);
        self.window.borrow_mut().behind = true;
        self.notify.notify();
    }

    /// Reads WAL records into the lanes until they hold enough to keep every lane busy, or
    /// the reader reaches the head (then scrapes feed the lanes again).
    fn feed(&self) {
        let mut guard = self.replay.borrow_mut();
        let Some(rp) = guard.as_mut() else { return };
        let want = self.lanes.borrow().len() * self.ep.cfg.queue.max_samples_per_send * 2;
        if self.queued.get() >= want {
            return;
        }
        let mut wal = self.wal.borrow_mut();
        if wal.cursor(self.slot).moved {
            // A retention bound deleted data under the reader: continue after it.
            let c = wal.cursor_mut(self.slot);
            c.moved = false;
            if c.acked > rp.reader.position {
                let from = c.acked;
                *rp = Replay::new(wal.dir(), from);
            }
        }
        // Everything committed must be in the file before reading up to the head.
        wal.flush();
        let (head, first) = (wal.head(), wal.first_segment());
        let accept = self.ep.accept();
        let mut caught_up = false;
        while self.queued.get() < want {
            rp.staged.clear();
            rp.ends.clear();
            rp.kinds.clear();
            match rp.reader.next_record(
                head,
                first,
                accept,
                &mut rp.staged,
                &mut rp.ends,
                &mut rp.kinds,
            ) {
                Ok(Some((end, newest))) => {
                    let mut rw = self.rewrite.borrow_mut();
                    let (entries, ends) = self.rewrite(&mut rw, &rp.staged, &rp.ends, &rp.kinds);
                    self.distribute(entries, ends, newest, Some(end));
                }
                Ok(None) => {
                    caught_up = true;
                    break;
                }
                Err(e) => {
                    crate::log!(
                        Level::Error,
                        "remote",
                        "cannot read the WAL back; skipping to its head",
                        remote_name = self.ep.cfg.name,
                        err = e
                    );
                    rp.reader = WalReader::new(wal.dir(), head);
                }
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
        if caught_up {
            // From here on scrapes feed the lanes; everything before the reader's position is
            // in them already.
            let at = rp.reader.position.max(self.queued_to.get());
            wal.cursor_mut(self.slot).replaying = false;
            drop(wal);
            *guard = None;
            for lane in self.lanes.borrow().iter() {
                lane.queue.borrow_mut().through = at;
            }
            self.queued_to.set(at);
            self.stats.wal_backlog_bytes.store(0, Relaxed);
            self.ack_progress();
            crate::log!(
                Level::Info,
                "remote",
                "remote write caught up with the WAL; sending live",
                remote_name = self.ep.cfg.name,
                url = self.ep.url
            );
        }
    }

    /// Moves the endpoint's cursor to where the lowest unsent entry of any lane begins.
    fn ack_progress(&self) {
        let low = self
            .lanes
            .borrow()
            .iter()
            .chain(self.retiring.borrow().iter())
            .map(|l| l.low())
            .min()
            .unwrap_or(self.queued_to.get());
        let mut wal = self.wal.borrow_mut();
        if low > wal.cursor(self.slot).acked {
            wal.ack(self.slot, low);
        }
    }

    fn all_idle(&self) -> bool {
        self.lanes.borrow().iter().all(|l| l.idle())
            && self.retiring.borrow().iter().all(|l| l.idle())
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

    /// The shard's task: starts the lanes, feeds them from the WAL while the endpoint is
    /// behind, adapts the lane count, and ends once every lane has ended (after shutdown, or
    /// when a drained WAL is sent).
    pub async fn run(self: Rc<Self>, ctl: Rc<CoreControl>) {
        for lane in self.lanes.borrow().iter() {
            self.spawn_lane(lane.clone(), &ctl);
        }
        if self.ep.cfg.v2 {
            ctl.track_created.set(true);
            ctl.track_metadata.set(true);
        }
        if self.ep.cfg.metadata.send && !ctl.draining {
            ctl.track_metadata.set(true);
            crate::runtime::spawn(self.clone().run_metadata(ctl.clone()));
        }
        while self.running.get() > 0 {
            if !ctl.shutdown.is_set() {
                self.feed();
            }
            if self.initial_hold.get() && self.replay.borrow().is_none() && self.all_idle() {
                self.end_initial_hold();
            }
            let elapsed = self.window.borrow().started.elapsed();
            if elapsed >= ADAPT_EVERY {
                if !ctl.shutdown.is_set() {
                    self.adapt(&ctl);
                }
                *self.window.borrow_mut() = Window::new();
            }
            let wait = ADAPT_EVERY.saturating_sub(self.window.borrow().started.elapsed());
            race(self.notify.notified(), sleep(wait)).await;
        }
        self.end_initial_hold();
        // Whatever is left (the flush deadline passed) stays in the WAL past this endpoint's
        // cursor and is sent after the restart.
        let left = self.queued.replace(0) + self.abandoned.take();
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

    /// Sends the core's family metadata every `send_interval`, in requests of its own of at
    /// most `metadata_config.max_samples_per_send` families, as Prometheus does for Remote
    /// Write 1.0. A request that keeps failing is given up at the next interval.
    async fn run_metadata(self: Rc<Self>, ctl: Rc<CoreControl>) {
        let cfg = &self.ep.cfg.metadata;
        let mut lc = LaneConn::new(&self.ep);
        let mut body = Vec::new();
        while !crate::runtime::sleep_or(cfg.send_interval, &ctl.shutdown).await {
            let items = ctl.families.borrow_mut().active(cfg.send_interval * 2);
            let deadline = Instant::now() + cfg.send_interval;
            for chunk in items.chunks(cfg.max_samples_per_send) {
                body.clear();
                crate::remote::metadata::encode_metadata(chunk, &mut body);
                let need = snap::raw::max_compress_len(body.len());
                if lc.compressed.len() < need {
                    lc.compressed.resize(need, 0);
                }
                let Ok(len) = lc.encoder.compress(&body, &mut lc.compressed) else {
                    continue;
                };
                let compressed = std::mem::take(&mut lc.compressed);
                let mut backoff = self.ep.cfg.queue.min_backoff;
                let mut attempt = 0;
                loop {
                    match self
                        .attempt(&mut lc, &compressed[..len], attempt, None)
                        .await
                    {
                        Outcome::Sent => {
                            self.stats
                                .metadata_sent
                                .fetch_add(chunk.len() as u64, Relaxed);
                            self.stats.metadata_bytes.fetch_add(len as u64, Relaxed);
                            break;
                        }
                        Outcome::Drop { reason } | Outcome::Downgrade { reason } => {
                            self.stats
                                .metadata_failed
                                .fetch_add(chunk.len() as u64, Relaxed);
                            crate::log!(
                                Level::Error,
                                "remote",
                                "non-recoverable error sending metadata; dropped",
                                remote_name = self.ep.cfg.name,
                                url = self.ep.url,
                                err = reason
                            );
                            break;
                        }
                        Outcome::Retry { after, .. } => {
                            self.stats
                                .metadata_retried
                                .fetch_add(chunk.len() as u64, Relaxed);
                            let pause = after.unwrap_or_else(|| jitter(backoff));
                            backoff = (backoff * 2).min(self.ep.cfg.queue.max_backoff);
                            if Instant::now() + pause >= deadline
                                || crate::runtime::sleep_or(pause, &ctl.shutdown).await
                            {
                                self.stats
                                    .metadata_failed
                                    .fetch_add(chunk.len() as u64, Relaxed);
                                break;
                            }
                            attempt += 1;
                        }
                    }
                }
                lc.compressed = compressed;
                if ctl.shutdown.is_set() {
                    return;
                }
            }
        }
    }

    fn spawn_lane(self: &Rc<Self>, lane: Rc<Lane>, ctl: &Rc<CoreControl>) {
        self.running.set(self.running.get() + 1);
        crate::runtime::spawn(self.clone().run_lane(lane, ctl.clone()));
    }

    /// Reconsiders the lane count from the last window (see docs/ARCHITECTURE.md, "Lanes").
    fn adapt(self: &Rc<Self>, ctl: &Rc<CoreControl>) {
        let (min, max) = self.ep.lanes;
        let n = self.lanes.borrow().len();
        let per_send = self.ep.cfg.queue.max_samples_per_send;
        let w = std::mem::replace(&mut *self.window.borrow_mut(), Window::new());
        let span = w
            .started
            .elapsed()
            .max(Duration::from_millis(1))
            .as_secs_f64();
        let behind =
            w.behind || self.replay.borrow().is_some() || self.queued.get() > n * per_send * 2;
        // Latency per sample, so that full batches (behind) and small ones (live) compare.
        let latency = (w.samples > 0).then(|| w.latency.as_secs_f64() / w.samples as f64);
        if let Some(l) = latency {
            // The floor forgets slowly (5% a window), so a lasting change is learnt.
            let floor = self.latency_floor.get().map_or(l, |f| l.min(f * 1.05));
            self.latency_floor.set(Some(floor));
        }
        let floor = self.latency_floor.get().unwrap_or(0.0);
        let rate = w.samples as f64 / span;
        let utilization = w.busy.as_secs_f64() / (span * n as f64);
        if self
            .ceiling
            .get()
            .is_some_and(|(_, until)| Instant::now() >= until)
        {
            self.ceiling.set(None);
        }
        let ceiling = self.ceiling.get().map_or(max, |(c, _)| c.min(max));
        let desired = if w.failed > 0 && w.sent == 0 {
            // Nothing gets through: more or fewer lanes cannot help, and a new generation
            // could not start before the old one is sent.
            n
        } else if w.failed > 0 {
            // Errors or throttling under load: halve.
            (n / 2).max(min)
        } else if behind && w.sent == 0 {
            // Behind, but no request finished (held behind an older backlog, or one slow
            // request): nothing learnt.
            n
        } else if behind {
            let last = self.last_behind.replace(Some((n, rate)));
            match last {
                // More lanes did not send 10% faster: go back, and stay at most there for a
                // while.
                Some((m, r)) if m < n && rate < r * 1.1 => {
                    self.ceiling
                        .set(Some((m, Instant::now() + Duration::from_secs(60))));
                    m.max(min)
                }
                // Latency climbs under load: the receiver is saturated.
                _ if latency.is_some_and(|l| l > floor * 2.0) => (n - 1).max(min),
                _ => (n * 2).min(ceiling).max(min),
            }
        } else {
            self.last_behind.set(None);
            if utilization < 0.3 {
                (n - 1).max(min)
            } else {
                n
            }
        };
        self.stats.shards_desired.store(desired as u64, Relaxed);
        if desired == n || !self.retiring.borrow().is_empty() {
            return;
        }
        crate::log!(
            Level::Debug,
            "remote",
            "changing the number of lanes",
            remote_name = self.ep.cfg.name,
            from = n,
            to = desired,
            behind = behind,
            failed = w.failed,
            samples_per_second = rate as u64
        );
        // The old generation takes nothing more and sends what it holds; the new one waits
        // for it (each series changes lanes at most once, after its older entries were sent).
        let through = self.queued_to.get();
        let old = std::mem::replace(
            &mut *self.lanes.borrow_mut(),
            (0..desired).map(|_| Lane::new(through)).collect(),
        );
        for lane in &old {
            lane.retired.set(true);
            lane.queue.borrow_mut().seal();
            lane.notify.notify();
        }
        self.retiring.borrow_mut().extend(old);
        let fresh: Vec<_> = self.lanes.borrow().clone();
        for lane in fresh {
            self.spawn_lane(lane, ctl);
        }
        self.stats.shards.store(desired as u64, Relaxed);
    }

    /// One lane's task: sends its batches in order until the lane is retired and empty, or
    /// shutdown's flush ends.
    async fn run_lane(self: Rc<Self>, lane: Rc<Lane>, ctl: Rc<CoreControl>) {
        let mut lc = LaneConn::new(&self.ep);
        while let Some(batch) = self.next_batch(&lane, &ctl).await {
            lane.in_flight.set(Some(batch.low));
            self.queued.set(self.queued.get() - batch.samples);
            self.stats
                .samples_pending
                .store(self.queued.get() as u64, Relaxed);
            if self.replay.borrow().is_some() {
                self.notify.notify();
            }
            let sent = self.send(&mut lc, &batch, &ctl).await;
            if sent {
                lane.in_flight.set(None);
                self.ack_progress();
            } else {
                // Abandoned at the flush deadline: the cursor stays before it.
                self.abandoned.set(self.abandoned.get() + batch.samples);
                break;
            }
            self.notify.notify();
        }
        let left = {
            let mut q = lane.queue.borrow_mut();
            q.seal();
            let n: usize = q.sealed.drain(..).map(|b| b.samples).sum();
            q.queued = 0;
            n
        };
        if left > 0 {
            self.abandoned.set(self.abandoned.get() + left);
            self.queued.set(self.queued.get().saturating_sub(left));
        }
        if lane.retired.get() {
            self.retiring.borrow_mut().retain(|l| !Rc::ptr_eq(l, &lane));
            for l in self.lanes.borrow().iter() {
                l.notify.notify();
            }
        }
        self.running.set(self.running.get() - 1);
        self.notify.notify();
    }

    async fn next_batch(&self, lane: &Lane, ctl: &CoreControl) -> Option<Batch> {
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
            // A new generation starts once the last one has sent everything it held.
            if !lane.retired.get() && !self.retiring.borrow().is_empty() {
                if flushing && ctl.flush_deadline_at().is_some_and(|d| Instant::now() >= d) {
                    return None;
                }
                race(lane.notify.notified(), sleep(Duration::from_millis(100))).await;
                continue;
            }
            let replaying = self.replay.borrow().is_some();
            // Nothing more will come: a retired lane, a drained WAL read to its head, or
            // shutdown (the backlog in the WAL is sent after the restart).
            let finishing = lane.retired.get() || (ctl.draining && !replaying) || flushing;
            let wait = {
                let mut q = lane.queue.borrow_mut();
                if let Some(b) = q.sealed.pop_front() {
                    q.queued -= b.samples;
                    return Some(b);
                }
                if q.current_samples > 0 {
                    let due = q.current_since.is_some_and(|t| t.elapsed() >= deadline);
                    if due || finishing {
                        q.seal();
                        continue;
                    }
                }
                if lane.retired.get() || (ctl.draining && !replaying && !flushing) {
                    return None;
                }
                if flushing
                    && (replaying
                        || ctl.active_loops.get() == 0
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
                race(lane.notify.notified(), sleep(wait)).await;
            } else {
                race(
                    lane.notify.notified(),
                    race(sleep(wait), ctl.shutdown.wait()),
                )
                .await;
            }
        }
    }

    /// Sends one batch until it is delivered or dropped (true), or the flush deadline passes
    /// (false).
    async fn send(&self, lc: &mut LaneConn, batch: &Batch, ctl: &CoreControl) -> bool {
        let q = &self.ep.cfg.queue;
        let mut out = std::mem::take(&mut lc.compressed);
        let sent = self.send_body(lc, &mut out, batch, ctl, q).await;
        lc.compressed = out;
        sent
    }

    async fn send_body(
        &self,
        lc: &mut LaneConn,
        out: &mut Vec<u8>,
        batch: &Batch,
        ctl: &CoreControl,
        q: &crate::config::QueueConfig,
    ) -> bool {
        let mut body = std::borrow::Cow::Borrowed(&batch.body[..]);
        let mut samples = batch.samples;
        let mut v2 = self.ep.v2.load(Relaxed);
        let Some((mut len, mut counts)) = self.wire(lc, &body, out, batch, ctl, v2) else {
            return true;
        };
        let mut backoff = q.min_backoff;
        let mut attempt = 0u32;
        loop {
            // What grew older than `sample_age_limit` while queued or retried is dropped
            // (Prometheus filters a retried request the same way).
            if !q.sample_age_limit.is_zero()
                && let Some((kept, n)) = self.drop_too_old(&body)
            {
                samples = n;
                if n == 0 {
                    return true;
                }
                body = std::borrow::Cow::Owned(kept);
                match self.wire(lc, &body, out, batch, ctl, v2) {
                    Some(w) => (len, counts) = w,
                    None => return true,
                }
            }
            let started = Instant::now();
            let outcome = self.attempt(lc, &out[..len], attempt, counts).await;
            let took = started.elapsed();
            self.window.borrow_mut().busy += took;
            self.stats.observe_batch_duration(took);
            match outcome {
                Outcome::Downgrade { reason } => {
                    if self.ep.v2.swap(false, Relaxed) {
                        crate::log!(
                            Level::Warn,
                            "remote",
                            "the receiver does not take Remote Write 2.0; sending 1.0 from now on",
                            remote_name = self.ep.cfg.name,
                            url = self.ep.url,
                            err = reason
                        );
                    }
                    v2 = false;
                    match self.wire(lc, &body, out, batch, ctl, v2) {
                        Some(w) => (len, counts) = w,
                        None => return true,
                    }
                }
                Outcome::Sent => {
                    {
                        let mut w = self.window.borrow_mut();
                        w.sent += 1;
                        w.samples += samples as u64;
                        w.latency += took;
                    }
                    self.stats.samples_sent.fetch_add(samples as u64, Relaxed);
                    self.stats.bytes_sent.fetch_add(len as u64, Relaxed);
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
                    return true;
                }
                Outcome::Drop { reason } => {
                    // Dropped for good, as Prometheus drops it: the cursor moves past it.
                    self.drop_batch(batch, &reason);
                    return true;
                }
                Outcome::Retry { reason, after } => {
                    self.window.borrow_mut().failed += 1;
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
                    let mut pause = after.unwrap_or_else(|| jitter(backoff));
                    backoff = (backoff * 2).min(q.max_backoff);
                    if let Some(d) = ctl.flush_deadline_at() {
                        let now = Instant::now();
                        if now >= d {
                            return false;
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

    /// The request body for `body` (1.0 entries): as it is, or converted to Remote Write 2.0,
    /// snappy-compressed into `out`. Returns its length, and what a 2.0 request holds; `None`
    /// when the batch cannot be sent (dropped and counted).
    fn wire(
        &self,
        lc: &mut LaneConn,
        body: &[u8],
        out: &mut Vec<u8>,
        batch: &Batch,
        ctl: &CoreControl,
        v2: bool,
    ) -> Option<(usize, Option<crate::remote::v2::Counts>)> {
        if !v2 {
            return self.compress(lc, body, out, batch).map(|n| (n, None));
        }
        let mut converted = std::mem::take(&mut lc.v2_body);
        let counts = lc.v2.convert(
            body,
            Some(&ctl.families.borrow()),
            Some(&ctl.created.borrow()),
            &mut converted,
        );
        let result = match counts {
            Ok(c) => self
                .compress(lc, &converted, out, batch)
                .map(|n| (n, Some(c))),
            Err(e) => {
                self.drop_batch(
                    batch,
                    &format!("cannot convert to Remote Write 2.0: {}", e.0),
                );
                None
            }
        };
        lc.v2_body = converted;
        result
    }

    /// Snappy-compresses `body` into `out`; `None` (the batch dropped) when it cannot.
    fn compress(
        &self,
        lc: &mut LaneConn,
        body: &[u8],
        out: &mut Vec<u8>,
        batch: &Batch,
    ) -> Option<usize> {
        // Grow only: resizing down and up again would zero the buffer on every send.
        let need = snap::raw::max_compress_len(body.len());
        if out.len() < need {
            out.resize(need, 0);
        }
        match lc.encoder.compress(body, out) {
            Ok(n) => Some(n),
            Err(e) => {
                // Only possible for inputs over 4 GiB, which batches never are.
                self.drop_batch(batch, &format!("snappy: {e}"));
                None
            }
        }
    }

    /// The entries of `body` no older than `sample_age_limit` and their count, the others
    /// counted as dropped; `None` (nothing copied) when no entry is older.
    fn drop_too_old(&self, body: &[u8]) -> Option<(Vec<u8>, usize)> {
        use crate::remote::encode::{entries, entry_timestamp};
        let limit = self.ep.cfg.queue.sample_age_limit;
        let cutoff = crate::log::unix_millis() - limit.as_millis() as i64;
        let too_old = |e: &[u8]| entry_timestamp(e).is_some_and(|t| t < cutoff);
        if !entries(body).any(too_old) {
            return None;
        }
        let mut kept = Vec::with_capacity(body.len());
        let (mut n, mut old) = (0usize, 0u64);
        for entry in entries(body) {
            if too_old(entry) {
                old += 1;
                continue;
            }
            kept.extend_from_slice(entry);
            n += 1;
        }
        self.stats.samples_dropped_too_old.fetch_add(old, Relaxed);
        Some((kept, n))
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

    /// The credentials' header lines when they are read per request.
    async fn auth_lines(
        &self,
        tokens: &mut crate::http::oauth2::TokenSource,
    ) -> Result<String, String> {
        let mut lines = String::new();
        if !self.ep.dynamic_auth {
            return Ok(lines);
        }
        self.ep.cfg.http.header_lines(&mut lines)?;
        if let Some(o) = &self.ep.cfg.http.oauth2 {
            let token = match timeout(self.ep.cfg.remote_timeout, tokens.token(o)).await {
                Ok(t) => t?,
                Err(_) => return Err("oauth2: token request timed out".into()),
            };
            lines.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        Ok(lines)
    }

    /// One request; `v2` holds what a Remote Write 2.0 body carries (`None`: a 1.0 body).
    async fn attempt(
        &self,
        lc: &mut LaneConn,
        body: &[u8],
        attempt: u32,
        v2: Option<crate::remote::v2::Counts>,
    ) -> Outcome {
        let retry = |reason: String| Outcome::Retry {
            reason,
            after: None,
        };
        let auth = match self.auth_lines(&mut lc.tokens).await {
            Ok(a) => a,
            Err(e) => return retry(e),
        };
        let conn = match &mut lc.conn {
            Ok(c) => c,
            Err(e) => return retry(e.clone()),
        };
        let url = &self.ep.cfg.url;
        let mut here = (url.tls, url.authority());
        let mut path = url.path_and_query.clone();
        // A connection to another host, once a redirect led there.
        let mut elsewhere: Option<Conn> = None;
        let remote_timeout = self.ep.cfg.remote_timeout;
        for _ in 0..=MAX_REDIRECTS {
            // The Host header without a default port, as Go writes it (and as signed).
            let host = here
                .1
                .strip_suffix(if here.0 { ":443" } else { ":80" })
                .unwrap_or(&here.1)
                .to_string();
            let signature = match &self.ep.cfg.sigv4 {
                None => String::new(),
                Some(sig) => match sig.credentials() {
                    Ok(creds) => {
                        let (content_type, version) = match v2 {
                            Some(_) => (
                                "application/x-protobuf;proto=io.prometheus.write.v2.Request",
                                "2.0.0",
                            ),
                            None => ("application/x-protobuf", "0.1.0"),
                        };
                        crate::http::sigv4::sign(
                            &crate::http::sigv4::Request {
                                method: "POST",
                                host: &host,
                                path_and_query: &path,
                                headers: &[
                                    ("Content-Encoding", "snappy"),
                                    ("Content-Type", content_type),
                                    ("X-Prometheus-Remote-Write-Version", version),
                                ],
                                body,
                            },
                            &creds,
                            &sig.region,
                            "aps",
                            SystemTime::now(),
                        )
                    }
                    Err(e) => return retry(e),
                },
            };
            let c = elsewhere.as_mut().unwrap_or(&mut *conn);
            let req = c.request_mut();
            req.extend_from_slice(format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
            req.extend_from_slice(match v2 {
                Some(_) => self.ep.head_v2.as_bytes(),
                None => self.ep.head.as_bytes(),
            });
            // Credentials go with every hop, as Prometheus' authenticating round-tripper adds
            // them to each request.
            req.extend_from_slice(auth.as_bytes());
            req.extend_from_slice(signature.as_bytes());
            if attempt > 0 {
                req.extend_from_slice(format!("Retry-Attempt: {attempt}\r\n").as_bytes());
            }
            req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            req.extend_from_slice(body);
            let resp = match timeout(remote_timeout, c.round_trip(false)).await {
                Err(_) => {
                    c.reset();
                    return retry(format!("request timed out after {remote_timeout:?}"));
                }
                Ok(Err(e)) => return retry(e.to_string()),
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status;
            // 307 and 308 keep the method and body; Go's client follows them.
            if matches!(status, 307 | 308)
                && self.ep.cfg.http.follow_redirects
                && let Some(location) = resp.location
            {
                let Some((tls, authority, to)) = crate::http::redirect_target(&here, location)
                else {
                    return Outcome::Drop {
                        reason: format!("redirect to {location:?}: not an http or https URL"),
                    };
                };
                if (tls, authority.as_str()) != (here.0, here.1.as_str()) {
                    elsewhere = match self.ep.cfg.http.connection(&authority, tls) {
                        Ok(c) => Some(c),
                        Err(e) => return retry(e),
                    };
                }
                here = (tls, authority);
                path = to;
                continue;
            }
            return self.classify(status, resp.body, resp.retry_after, v2, resp.written);
        }
        retry(format!("stopped after {MAX_REDIRECTS} redirects"))
    }

    /// What a response's status means for its batch, as Prometheus decides.
    fn classify(
        &self,
        status: u16,
        body: &[u8],
        retry_after: Option<&str>,
        v2: Option<crate::remote::v2::Counts>,
        written: [Option<u64>; 3],
    ) -> Outcome {
        if let Some(sent) = v2 {
            let confirmed = self.ep.v2_confirmed.load(Relaxed);
            if (200..300).contains(&status) {
                if written.iter().all(Option::is_none) {
                    if sent == Default::default() {
                        return Outcome::Sent;
                    }
                    // A 1.0 receiver that ignored the content type (the spec: treat as 415).
                    return Outcome::Downgrade {
                        reason: format!(
                            "HTTP status {status} without X-Prometheus-Remote-Write-*-Written headers"
                        ),
                    };
                }
                self.ep.v2_confirmed.store(true, Relaxed);
                let [s, h, e] = written.map(|w| w.unwrap_or(0));
                let unwritten = sent.samples.saturating_sub(s)
                    + sent.histograms.saturating_sub(h)
                    + sent.exemplars.saturating_sub(e);
                if unwritten > 0 {
                    // Accepted in part: what the receiver did not write is not retried.
                    self.stats.samples_failed.fetch_add(unwritten, Relaxed);
                }
                return Outcome::Sent;
            }
            // 415 is the spec's refusal; a receiver from before 2.0 answers 400 (it cannot
            // decode the body) until a 2.0 request has once been accepted.
            if status == 415 || (status == 400 && !confirmed) {
                let excerpt = String::from_utf8_lossy(&body[..body.len().min(256)])
                    .trim()
                    .to_string();
                return Outcome::Downgrade {
                    reason: format!("server returned HTTP status {status}: {excerpt}"),
                };
            }
        }
        if (200..300).contains(&status) {
            return Outcome::Sent;
        }
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(1024)])
            .trim()
            .to_string();
        let reason = format!("server returned HTTP status {status}: {excerpt}");
        if status >= 500 || (status == 429 && self.ep.cfg.queue.retry_on_http_429) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let after = retry_after.and_then(|v| super::parse_retry_after(v, now));
            Outcome::Retry { reason, after }
        } else {
            Outcome::Drop { reason }
        }
    }
}

/// A backoff with jitter, as Prometheus spreads retries: uniformly within ±25% of `d`.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A random seed per call from the standard library's hasher keys; no RNG crate needed.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let r = (h.finish() % 1_000) as f64 / 1_000.0; // [0, 1)
    d.mul_f64(0.75 + 0.5 * r)
}
