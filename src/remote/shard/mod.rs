//! One endpoint on one core: lanes fed from committed scrapes while they keep up, or from the
//! WAL while the endpoint is behind, and the lane count adapted to how the endpoint answers.
//!
//! Each file owns one role:
//! - `endpoint`: what every core's shard of an endpoint shares (configuration, request heads,
//!   2.0 or 1.0, log throttles, old backlogs that must go first);
//! - `lane`: lanes, their queues and batches, generations, and the cursor — the ordering
//!   protocol, narrated there;
//! - `adapt`: the lane-count policy, a pure function;
//! - `backlog`: reading the WAL back into the lanes;
//! - `rewrite`: the entries an endpoint takes (kinds, `write_relabel_configs`,
//!   `sample_age_limit`);
//! - `send`: a lane's task (batches, 2.0 conversion, compression, retries and backoff);
//! - `request`: one request (credentials, SigV4, redirects);
//! - `outcome`: what a response means for its batch;
//! - `metadata`: Remote Write 1.0's metadata sender.
//!
//! This file holds the shard itself: taking committed scrapes, the shard's task (feeding,
//! adapting, ending) and moving the endpoint's cursor.

mod adapt;
mod backlog;
mod endpoint;
mod lane;
mod metadata;
mod outcome;
mod request;
mod rewrite;
mod send;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

pub use endpoint::Endpoint;

use self::adapt::{ADAPT_EVERY, History, Observed, Window};
use self::backlog::Replay;
use self::lane::{Lane, Lanes};
use self::rewrite::Rewrite;
use crate::entry::Tally;
use crate::log::Level;
use crate::percore::CoreControl;
use crate::remote::metadata::Reported;
use crate::runtime::{Instant, LocalNotify, race, sleep};
use crate::selfmetrics::ShardStats;
use crate::wal::segment::Pos;

/// One endpoint on one core.
pub struct Shard {
    ep: Arc<Endpoint>,
    stats: Arc<ShardStats>,
    ctl: Rc<CoreControl>,
    /// What the core's scrapes reported (metadata, created timestamps).
    reported: Rc<Reported>,
    /// Wakes the shard's own task (feeding, lane count, the end).
    notify: Rc<LocalNotify>,
    /// Most samples queued in memory before the shard reads its backlog back from the WAL.
    limit: usize,
    /// Samples of in-flight batches abandoned at the flush deadline.
    abandoned: Cell<usize>,
    /// This endpoint's cursor slot in the core's WAL.
    slot: usize,
    /// Set while this shard sends its own backlog from before a change of the core count
    /// (counted by `Endpoint::hold_for_backlog`).
    initial_hold: Cell<bool>,
    lanes: RefCell<Lanes>,
    /// Lane tasks running.
    running: Cell<usize>,
    /// Set while the endpoint reads its backlog back from the WAL instead of taking scrapes.
    replay: RefCell<Option<Replay>>,
    window: RefCell<Window>,
    history: Cell<History>,
    rewrite: RefCell<Rewrite>,
    /// Set by [`Shard::retire`]: the shard takes nothing new and ends once its lanes have
    /// sent what they hold (retried until the flush deadline).
    retired: Cell<bool>,
    /// When the lanes of a retired shard stop retrying (and leave the rest to the shard that
    /// follows, from the endpoint's cursor).
    retired_until: Cell<Option<Instant>>,
    /// Notified when the shard's task has ended.
    ended: crate::runtime::Event,
}

impl Shard {
    /// A shard of `ep` on the core of `ctl`, resuming from the endpoint's saved cursor. The
    /// core counts it as a sender until its task ([`Shard::run`]) ends.
    pub fn new(
        ep: Arc<Endpoint>,
        stats: Arc<ShardStats>,
        ctl: &Rc<CoreControl>,
        reported: Rc<Reported>,
    ) -> Rc<Shard> {
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
        let replay = cursor.replaying().then(|| {
            crate::log!(
                Level::Info,
                "remote",
                "resuming remote write from the WAL where the endpoint's last acknowledged batch ended",
                remote_name = ep.cfg.name,
                url = ep.url,
                backlog_bytes = wal.bytes_after(cursor.acked())
            );
            Replay::new(wal.dir(), cursor.acked())
        });
        let acked = cursor.acked();
        drop(wal);
        let initial_hold = ctl.cores_changed() && !ctl.draining() && replay.is_some();
        if initial_hold {
            ep.hold_for_backlog();
        }
        stats
            .max_samples_per_send
            .store(ep.cfg.queue.max_samples_per_send as u64, Relaxed);
        stats.capacity.store(ep.cfg.queue.capacity as u64, Relaxed);
        stats.shards_min.store(ep.lanes.0 as u64, Relaxed);
        stats.shards_max.store(ep.lanes.1 as u64, Relaxed);
        stats.shards.store(ep.lanes.0 as u64, Relaxed);
        stats.shards_desired.store(ep.lanes.0 as u64, Relaxed);
        let notify = Rc::new(LocalNotify::default());
        ctl.watch_loops(notify.clone());
        ctl.sender_started();
        Rc::new(Shard {
            lanes: RefCell::new(Lanes::new(ep.lanes.0, acked)),
            ep,
            stats,
            ctl: ctl.clone(),
            reported,
            notify,
            limit,
            abandoned: Cell::new(0),
            slot,
            initial_hold: Cell::new(initial_hold),
            running: Cell::new(0),
            replay: RefCell::new(replay),
            window: RefCell::new(Window::new()),
            history: Cell::new(History::default()),
            rewrite: RefCell::new(Rewrite::default()),
            retired: Cell::new(false),
            retired_until: Cell::new(None),
            ended: crate::runtime::Event::new(),
        })
    }

    /// The endpoint this shard sends to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.ep
    }

    /// This shard's counters.
    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// Its slot in the core's WAL.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Stops the shard for a reload that changed or removed its endpoint: it takes no more
    /// scrapes and reads no more of the WAL; its lanes send what they hold, retried until the
    /// flush deadline (as Prometheus flushes a queue it stops), and the endpoint's cursor is
    /// left at the first entry not delivered, for the shard that follows (or for nothing,
    /// when the endpoint is gone).
    pub fn retire(&self) {
        if self.retired.replace(true) {
            return;
        }
        self.retired_until
            .set(Some(Instant::now() + self.ctl.flush_deadline()));
        self.replay.borrow_mut().take();
        self.lanes.borrow_mut().retire_all();
        self.notify.notify();
    }

    /// Waits until the shard's task has ended (its cursor final).
    pub async fn ended(&self) {
        self.ended.wait().await;
    }

    /// This shard's backlog from before a change of the core count is sent (or shutdown came).
    fn end_initial_hold(&self) {
        if self.initial_hold.replace(false) {
            self.ep.backlog_sent();
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
        if self.retired.get() {
            // The WAL holds it for the shard that follows.
            return;
        }
        if self.replay.borrow().is_some() {
            if wal.is_none() {
                // Neither in the WAL nor queued: this endpoint will not get it.
                self.stats.add(
                    crate::selfmetrics::Count::DroppedQueueFull,
                    Tally::of(kinds),
                );
            }
            return;
        }
        let mut rw = self.rewrite.borrow_mut();
        let (entries, ends, kinds) = self.rewrite(&mut rw, entries, ends, kinds);
        self.distribute(entries, ends, kinds, newest_ts, wal);
        drop(rw);
        if self.lanes.borrow().queued() > self.limit {
            match wal {
                // Fallen behind: the WAL holds everything after what the lanes hold, so read
                // it back from there instead of holding more in memory.
                Some(_) => self.start_replay(),
                None => self.drop_oldest(),
            }
        }
    }

    /// Hands entries to the lanes (see [`Lanes::distribute`]).
    fn distribute(
        &self,
        entries: &[u8],
        ends: &[u32],
        kinds: &[u8],
        newest: i64,
        wal: Option<Pos>,
    ) {
        let max = self.ep.cfg.queue.max_samples_per_send;
        self.lanes
            .borrow_mut()
            .distribute(entries, ends, kinds, newest, wal, max);
        self.publish_pending();
    }

    fn publish_pending(&self) {
        self.stats.set_pending(self.lanes.borrow().pending());
    }

    /// Moves the endpoint's cursor to where the lowest unsent entry of any lane begins.
    fn ack_progress(&self) {
        let low = self.lanes.borrow().cursor();
        let mut wal = self.ctl.wal.borrow_mut();
        if low > wal.cursor(self.slot).acked() {
            wal.ack(self.slot, low);
        }
    }

    /// The shard's task: starts the lanes, feeds them from the WAL while the endpoint is
    /// behind, adapts the lane count, and ends once every lane has ended (after shutdown, or
    /// when a drained WAL is sent).
    pub async fn run(self: Rc<Self>) {
        let lanes: Vec<Rc<Lane>> = self.lanes.borrow().current().to_vec();
        for lane in lanes {
            self.spawn_lane(lane);
        }
        if self.ep.cfg.v2 {
            self.reported.track_created();
            self.reported.track_metadata();
        }
        if self.ep.cfg.metadata.send && !self.ctl.draining() {
            self.reported.track_metadata();
            crate::runtime::spawn(self.clone().run_metadata());
        }
        let ctl = self.ctl.clone();
        while self.running.get() > 0 {
            if !ctl.shutdown.is_set() && !self.retired.get() && self.replay.borrow().is_some() {
                // Reading up to the head: no commit may be half written meanwhile.
                let _commit = ctl.commit_lock().await;
                self.feed();
            }
            if self.initial_hold.get()
                && self.replay.borrow().is_none()
                && self.lanes.borrow().all_idle()
            {
                self.end_initial_hold();
            }
            let elapsed = self.window.borrow().started.elapsed();
            if elapsed >= ADAPT_EVERY {
                if !ctl.shutdown.is_set() && !self.retired.get() {
                    self.adapt();
                }
                *self.window.borrow_mut() = Window::new();
            }
            let wait = ADAPT_EVERY.saturating_sub(self.window.borrow().started.elapsed());
            race(self.notify.notified(), sleep(wait)).await;
        }
        self.end_initial_hold();
        if self.retired.get() {
            // The cursor stops before the first entry not delivered: the next shard of the
            // endpoint reads on from there.
            self.ack_progress();
            self.lanes.borrow_mut().clear_count();
            self.abandoned.take();
            self.stats.set_pending(Tally::default());
            self.stats.shards.store(0, Relaxed);
            self.stats.shards_desired.store(0, Relaxed);
            ctl.sender_ended();
            self.ended.set();
            return;
        }
        // Whatever is left (the flush deadline passed) stays in the WAL past this endpoint's
        // cursor and is sent after the restart.
        let left = self.lanes.borrow_mut().clear_count().total() + self.abandoned.take();
        self.stats.set_pending(Tally::default());
        let wal = ctl.wal.borrow();
        let backlog = wal.bytes_after(wal.cursor(self.slot).acked());
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
        if ctl.draining() {
            self.ep.backlog_sent();
        }
        ctl.sender_ended();
        self.ended.set();
    }

    fn spawn_lane(self: &Rc<Self>, lane: Rc<Lane>) {
        self.running.set(self.running.get() + 1);
        crate::runtime::spawn(self.clone().run_lane(lane));
    }

    /// Reconsiders the lane count from the last window (see [`adapt::decide`]) and starts a
    /// new generation when it changes.
    fn adapt(self: &Rc<Self>) {
        let w = std::mem::replace(&mut *self.window.borrow_mut(), Window::new());
        let (n, queued, retiring) = {
            let l = self.lanes.borrow();
            (l.len(), l.queued(), l.retiring())
        };
        let per_send = self.ep.cfg.queue.max_samples_per_send;
        let observed = Observed {
            window: Window {
                behind: w.behind || self.replay.borrow().is_some() || queued > n * per_send * 2,
                ..w
            },
            lanes: n,
            bounds: self.ep.lanes,
            span: w.started.elapsed(),
        };
        let mut history = self.history.get();
        let desired = adapt::decide(&observed, &mut history, Instant::now());
        self.history.set(history);
        self.stats.shards_desired.store(desired as u64, Relaxed);
        if desired == n || retiring {
            return;
        }
        crate::log!(
            Level::Debug,
            "remote",
            "changing the number of lanes",
            remote_name = self.ep.cfg.name,
            from = n,
            to = desired,
            behind = observed.window.behind,
            failed = w.failed,
            samples_per_second = (w.samples as f64 / observed.span.as_secs_f64().max(0.001)) as u64
        );
        let fresh = self.lanes.borrow_mut().start_generation(desired);
        for lane in fresh {
            self.spawn_lane(lane);
        }
        self.stats.shards.store(desired as u64, Relaxed);
    }
}
