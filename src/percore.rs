//! What one core's tasks share about the core itself: its WAL, shutdown and the flush deadline,
//! and how many scrape loops and senders still run. Scrape loops, shards and the agent's
//! start-up read it; nothing else does.
//!
//! **Invariant:** the counts of running loops and senders change only through
//! [`CoreControl::loop_started`]/[`CoreControl::loop_ended`] and
//! [`CoreControl::sender_started`]/[`CoreControl::sender_ended`], so a waiter woken by
//! `loop_ended` or `senders_done` always sees the count that woke it. It knows no endpoint,
//! target or sample.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::runtime::{Event, Instant, LocalGuard, LocalLock, LocalNotify};
use crate::wal::Wal;

/// A core's context (one per core, plus one per WAL being drained from a removed core).
pub struct CoreControl {
    /// Set once, at shutdown, for every core.
    pub shutdown: Event,
    flush_deadline: Duration,
    /// The moment queued data stops being retried: fixed when the core first sees shutdown.
    deadline: Cell<Option<Instant>>,
    active_loops: Cell<usize>,
    active_senders: Cell<usize>,
    senders_done: LocalNotify,
    /// Woken when a scrape loop ends (the shards' tasks: a flush may be able to end).
    loop_watchers: RefCell<Vec<Rc<LocalNotify>>>,
    /// The core's WAL: scrape loops commit to it, shards read their backlog from it.
    pub wal: Rc<RefCell<Wal>>,
    /// Held from a commit's layout until its writes are done (they run on the ring while other
    /// tasks go on), and by whatever writes or reads the WAL's head meanwhile: shards reading
    /// their backlog, shutdown's close. The core's appender is used only under it.
    commit: LocalLock,
    /// A WAL left by a core that no longer exists: nothing appends to it, and its shards end
    /// once they have sent its backlog.
    draining: bool,
    /// The core count differs from the last run's: targets moved between cores, so a series'
    /// backlog may sit in another core's WAL than its new scrapes (see
    /// `remote::Endpoint::drains_pending`).
    cores_changed: bool,
}

impl CoreControl {
    pub fn new(
        shutdown: Event,
        flush_deadline: Duration,
        wal: Wal,
        cores_changed: bool,
    ) -> Rc<CoreControl> {
        Rc::new(CoreControl {
            shutdown,
            flush_deadline,
            deadline: Cell::new(None),
            active_loops: Cell::new(0),
            active_senders: Cell::new(0),
            senders_done: LocalNotify::default(),
            loop_watchers: RefCell::new(Vec::new()),
            wal: Rc::new(RefCell::new(wal)),
            commit: LocalLock::default(),
            draining: false,
            cores_changed,
        })
    }

    /// The control of a WAL to drain (see [`Self::draining`]).
    pub fn new_draining(shutdown: Event, flush_deadline: Duration, wal: Wal) -> Rc<CoreControl> {
        let mut ctl = Rc::into_inner(Self::new(shutdown, flush_deadline, wal, false))
            .unwrap_or_else(|| unreachable!("just made"));
        ctl.draining = true;
        Rc::new(ctl)
    }

    /// Waits for the core's commit lock (see [`Self::commit`]).
    pub async fn commit_lock(&self) -> LocalGuard<'_> {
        self.commit.lock().await
    }

    /// A WAL left by a removed core, sent and then deleted.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The core count changed since the last run.
    pub fn cores_changed(&self) -> bool {
        self.cores_changed
    }

    pub fn loop_started(&self) {
        self.active_loops.set(self.active_loops.get() + 1);
    }

    /// A scrape loop ended; shards may now finish flushing once the last one is gone.
    pub fn loop_ended(&self) {
        self.active_loops.set(self.active_loops.get() - 1);
        for w in self.loop_watchers.borrow().iter() {
            w.notify();
        }
    }

    /// Scrape loops still running.
    pub fn loops_active(&self) -> usize {
        self.active_loops.get()
    }

    /// `notify` is woken each time a scrape loop ends.
    pub fn watch_loops(&self, notify: Rc<LocalNotify>) {
        self.loop_watchers.borrow_mut().push(notify);
    }

    /// A sender (a shard's task) started; the core ends only once it has ended.
    pub fn sender_started(&self) {
        self.active_senders.set(self.active_senders.get() + 1);
    }

    pub fn sender_ended(&self) {
        self.active_senders.set(self.active_senders.get() - 1);
        self.senders_done.notify();
    }

    /// Completes once no sender runs.
    pub async fn senders_finished(&self) {
        while self.active_senders.get() > 0 {
            self.senders_done.notified().await;
        }
    }

    /// The moment queued data stops being retried, fixed when the core first sees shutdown;
    /// `None` before shutdown.
    pub fn flush_deadline_at(&self) -> Option<Instant> {
        if !self.shutdown.is_set() {
            return None;
        }
        if self.deadline.get().is_none() {
            self.deadline
                .set(Some(Instant::now() + self.flush_deadline));
        }
        self.deadline.get()
    }

    /// How long queued data is retried once it is being let go (shutdown, or a reload
    /// that changed its endpoint): `--storage.remote.flush-deadline`.
    pub fn flush_deadline(&self) -> Duration {
        self.flush_deadline
    }

    /// Shutdown came and its flush deadline passed.
    pub fn flush_expired(&self) -> bool {
        self.flush_deadline_at()
            .is_some_and(|d| Instant::now() >= d)
    }
}
