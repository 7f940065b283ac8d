//! A shard's lanes and their queues: which lane an entry goes to, how batches are cut, the
//! generations a change of the lane count starts, and the endpoint's cursor (the lowest WAL
//! position any lane has not sent). No I/O and no clock but a batch's age: the tests below
//! drive it directly.
//!
//! The ordering protocol, step by step:
//! 1. An entry goes to lane `series_key % n` of the current generation, so one series' entries
//!    queue in one lane, in commit order.
//! 2. A lane has at most one batch in flight and retries it until it is delivered or dropped
//!    for good; later batches of that lane wait behind it.
//! 3. A new lane count starts a generation: the old lanes are retired (they take nothing new,
//!    seal what they hold and end once it is sent), and the new lanes send nothing until every
//!    retired lane has ended. A series changes lanes only after its older entries were sent.
//! 4. Each batch remembers `low`, the end of the commit before its first entry. The cursor is
//!    the lowest `low` of any lane's in-flight or queued batch, or, with every lane empty, the
//!    end of the last commit they took: everything before it was delivered.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use crate::entry::Tally;
use crate::runtime::{Instant, LocalNotify};
use crate::wal::segment::Pos;

/// A sealed batch: encoded entries, ready to be sent.
pub(super) struct Batch {
    pub body: Vec<u8>,
    /// Entries of every kind (what `max_samples_per_send` bounds).
    pub samples: usize,
    /// The entries by kind.
    pub tally: Tally,
    pub newest_ts: i64,
    /// The end of the commit before this batch's first entry: once every lane's lowest
    /// unsent batch is past a position, everything before it has been delivered.
    pub low: Pos,
}

/// One lane's queue: the batch being filled and the sealed ones waiting to be sent.
#[derive(Default)]
struct Queue {
    current: Vec<u8>,
    current_samples: usize,
    current_tally: Tally,
    current_newest: i64,
    current_since: Option<Instant>,
    current_low: Pos,
    sealed: VecDeque<Batch>,
    /// Entries in `current` and `sealed`.
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
            tally: std::mem::take(&mut self.current_tally),
            newest_ts: self.current_newest,
            low: self.current_low,
        });
        self.current_samples = 0;
        self.current_newest = i64::MIN;
        self.current_since = None;
    }

    /// Appends entries (`bytes`, counted by `tally`), sealing at `max` entries.
    fn push(&mut self, bytes: &[u8], tally: Tally, newest: i64, max: usize) {
        let count = tally.total();
        if self.current_samples == 0 {
            self.current_since = Some(Instant::now());
            self.current_low = self.through;
        }
        self.current.extend_from_slice(bytes);
        self.current_samples += count;
        self.current_tally += tally;
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

/// What a lane has to send next.
pub(super) enum Next {
    Batch(Batch),
    /// The batch being filled is due in this long (`batch_send_deadline`).
    DueIn(Duration),
    Empty,
}

/// One of a shard's concurrent senders: a queue, and a task with its own connection that has
/// at most one request in flight.
pub(super) struct Lane {
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

    pub fn retired(&self) -> bool {
        self.retired.get()
    }

    pub fn wake(&self) {
        self.notify.notify();
    }

    pub async fn woken(&self) {
        self.notify.notified().await
    }

    /// The next batch to send: the oldest sealed one, or the batch being filled once it is
    /// due or `finishing` (nothing more will come). It leaves the queue; the caller marks it
    /// in flight.
    pub fn next(&self, deadline: Duration, finishing: bool) -> Next {
        let mut q = self.queue.borrow_mut();
        if q.sealed.is_empty() && q.current_samples > 0 {
            let age = q.current_since.map_or(Duration::ZERO, |t| t.elapsed());
            if age < deadline && !finishing {
                return Next::DueIn(deadline - age);
            }
            q.seal();
        }
        match q.sealed.pop_front() {
            Some(b) => {
                q.queued -= b.samples;
                Next::Batch(b)
            }
            None => Next::Empty,
        }
    }

    /// The batch starting at `low` is being sent (`Some`), or was delivered (`None`).
    pub fn set_in_flight(&self, low: Option<Pos>) {
        self.in_flight.set(low);
    }

    /// Drops everything queued (the lane ends at the flush deadline); returns its entries.
    pub fn discard(&self) -> Tally {
        let mut q = self.queue.borrow_mut();
        q.seal();
        let mut n = Tally::default();
        for b in q.sealed.drain(..) {
            n += b.tally;
        }
        q.queued = 0;
        n
    }
}

/// A shard's lanes: the generation taking new entries and the retired one still sending.
pub(super) struct Lanes {
    current: Vec<Rc<Lane>>,
    retiring: Vec<Rc<Lane>>,
    /// The end of the last commit (or WAL record) wholly in the lanes.
    queued_to: Pos,
    /// Entries in the lanes' queues (not in flight), by kind.
    queued: Tally,
    /// The lowest `low` of a batch a lane gave up on (at the flush deadline, or retired after
    /// a failure): the cursor never passes it.
    abandoned_at: Option<Pos>,
}

impl Lanes {
    /// `n` lanes, everything before `through` delivered.
    pub fn new(n: usize, through: Pos) -> Lanes {
        Lanes {
            current: (0..n).map(|_| Lane::new(through)).collect(),
            retiring: Vec::new(),
            queued_to: through,
            queued: Tally::default(),
            abandoned_at: None,
        }
    }

    /// The current generation.
    pub fn current(&self) -> &[Rc<Lane>] {
        &self.current
    }

    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Entries queued, not yet in flight.
    pub fn queued(&self) -> usize {
        self.queued.total()
    }

    /// Entries queued, not yet in flight, by kind.
    pub fn pending(&self) -> Tally {
        self.queued
    }

    /// The end of the last commit wholly in the lanes.
    pub fn queued_to(&self) -> Pos {
        self.queued_to
    }

    /// Hands entries (of `kinds`) to the current lanes, each to the lane its series hashes
    /// to, cutting batches at `max` entries. `wal`: where the commit ends in the WAL (`None`:
    /// it is not in the WAL).
    pub fn distribute(
        &mut self,
        entries: &[u8],
        ends: &[u32],
        kinds: &[u8],
        newest: i64,
        wal: Option<Pos>,
        max: usize,
    ) {
        if self.current.is_empty() {
            return;
        }
        if let [lane] = self.current.as_slice() {
            let mut q = lane.queue.borrow_mut();
            let (mut start, mut i) = (0usize, 0usize);
            while i < ends.len() {
                // As many entries as fit in the current batch, in one copy.
                let take = (max - q.current_samples).min(ends.len() - i);
                let end = ends[i + take - 1] as usize;
                q.push(
                    &entries[start..end],
                    Tally::of(&kinds[i..i + take]),
                    newest,
                    max,
                );
                start = end;
                i += take;
            }
        } else {
            let n = self.current.len() as u64;
            let mut start = 0usize;
            for (end, kind) in ends.iter().zip(kinds) {
                let e = &entries[start..*end as usize];
                let lane = &self.current[(crate::entry::series_key(e) % n) as usize];
                lane.queue
                    .borrow_mut()
                    .push(e, Tally::one(*kind), newest, max);
                start = *end as usize;
            }
        }
        if let Some(p) = wal {
            self.mark_through(p);
        }
        self.queued += Tally::of(kinds);
        for lane in &self.current {
            lane.wake();
        }
    }

    /// Everything of the current lanes before `at` is in them (the WAL reader caught up).
    pub fn mark_through(&mut self, at: Pos) {
        for lane in &self.current {
            lane.queue.borrow_mut().through = at;
        }
        self.queued_to = at;
    }

    /// Entries left the queues (in flight, or discarded).
    pub fn taken(&mut self, entries: Tally) {
        self.queued -= entries;
    }

    /// Forgets every queued entry (the shard ends).
    pub fn clear_count(&mut self) -> Tally {
        std::mem::take(&mut self.queued)
    }

    /// Drops the oldest sealed batches until at most `limit` entries are queued; returns the
    /// entries dropped.
    pub fn drop_oldest(&mut self, limit: usize) -> Tally {
        let mut dropped = Tally::default();
        for lane in &self.current {
            let mut q = lane.queue.borrow_mut();
            while self.queued.total() - dropped.total() > limit {
                let Some(b) = q.sealed.pop_front() else { break };
                q.queued -= b.samples;
                dropped += b.tally;
            }
        }
        self.queued -= dropped;
        dropped
    }

    /// The endpoint's cursor: where the lowest unsent entry of any lane begins.
    pub fn cursor(&self) -> Pos {
        let low = self
            .current
            .iter()
            .chain(&self.retiring)
            .map(|l| l.low())
            .min()
            .unwrap_or(self.queued_to);
        self.abandoned_at.map_or(low, |a| a.min(low))
    }

    /// A lane gave up on the batch starting at `low`: it stays unsent.
    pub fn abandoned(&mut self, low: Pos) {
        self.abandoned_at = Some(self.abandoned_at.map_or(low, |a| a.min(low)));
    }

    /// Retires every lane (the shard stops): each sends what it holds and ends; nothing new
    /// is taken.
    pub fn retire_all(&mut self) {
        let old = std::mem::take(&mut self.current);
        for lane in &old {
            lane.retired.set(true);
            lane.queue.borrow_mut().seal();
            lane.wake();
        }
        self.retiring.extend(old);
    }

    pub fn all_idle(&self) -> bool {
        self.current.iter().chain(&self.retiring).all(|l| l.idle())
    }

    /// A retired generation is still sending.
    pub fn retiring(&self) -> bool {
        !self.retiring.is_empty()
    }

    /// Whether `lane` must wait: it is of a new generation and the old one is still sending.
    pub fn waits_for_older(&self, lane: &Lane) -> bool {
        !lane.retired() && !self.retiring.is_empty()
    }

    /// Retires the current lanes and starts `n` new ones; returns the new lanes (to be given
    /// tasks).
    pub fn start_generation(&mut self, n: usize) -> Vec<Rc<Lane>> {
        let through = self.queued_to;
        let old = std::mem::replace(
            &mut self.current,
            (0..n).map(|_| Lane::new(through)).collect(),
        );
        for lane in &old {
            lane.retired.set(true);
            lane.queue.borrow_mut().seal();
            lane.wake();
        }
        self.retiring.extend(old);
        self.current.clone()
    }

    /// `lane`'s task ended; a retired lane leaves, and the new generation may start once the
    /// last one has.
    pub fn lane_ended(&mut self, lane: &Rc<Lane>) {
        if lane.retired() {
            self.retiring.retain(|l| !Rc::ptr_eq(l, lane));
            for l in &self.current {
                l.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{LabelScratch, encode_series, series_key};

    /// Entries of series `s0..s{n}` (one sample each, value `v`), and their ends.
    fn commit(series: &[usize], v: f64) -> (Vec<u8>, Vec<u32>) {
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        for s in series {
            let mut l = LabelScratch::default();
            l.push(b"__name__", format!("s{s}").as_bytes());
            encode_series(&mut out, &l, v, 1000);
            ends.push(out.len() as u32);
        }
        (out, ends)
    }

    /// Sends (takes and delivers) everything `lane` has, returning the batches' samples.
    fn drain(lane: &Lane) -> Vec<usize> {
        let mut sent = Vec::new();
        while let Next::Batch(b) = lane.next(Duration::ZERO, true) {
            sent.push(b.samples);
        }
        sent
    }

    fn lane_of(lanes: &Lanes, series: usize) -> usize {
        let (e, _) = commit(&[series], 0.0);
        (series_key(&e) % lanes.len() as u64) as usize
    }

    #[test]
    fn a_series_stays_in_one_lane_in_commit_order() {
        let mut lanes = Lanes::new(4, 0);
        for (i, v) in [1.0, 2.0, 3.0].into_iter().enumerate() {
            let (e, ends) = commit(&[0, 1, 2, 3, 4, 5, 6, 7], v);
            lanes.distribute(
                &e,
                &ends,
                &vec![0; ends.len()],
                1000,
                Some(100 * (i as u64 + 1)),
                1000,
            );
        }
        assert_eq!(lanes.queued(), 24);
        let target = lane_of(&lanes, 3);
        let lane = &lanes.current()[target];
        let Next::Batch(b) = lane.next(Duration::ZERO, true) else {
            panic!("lane {target} holds series 3")
        };
        let values: Vec<f64> = crate::entry::entries(&b.body)
            .filter(|e| series_key(e) == series_key(&commit(&[3], 0.0).0))
            .map(|e| match crate::entry::split_entry(e) {
                Ok((_, crate::entry::EntryPayload::Sample { value, .. })) => value,
                _ => panic!("a sample entry"),
            })
            .collect();
        assert_eq!(values, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn batches_are_cut_at_max_samples() {
        let mut lanes = Lanes::new(1, 0);
        let (e, ends) = commit(&(0..25).collect::<Vec<_>>(), 1.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(10), 10);
        assert_eq!(drain(&lanes.current()[0]), [10, 10, 5]);
    }

    #[test]
    fn a_young_batch_waits_for_its_deadline_unless_finishing() {
        let mut lanes = Lanes::new(1, 0);
        let (e, ends) = commit(&[0, 1], 1.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(10), 100);
        let lane = &lanes.current()[0];
        assert!(
            matches!(lane.next(Duration::from_secs(3600), false), Next::DueIn(d) if d > Duration::from_secs(3500))
        );
        assert!(
            matches!(lane.next(Duration::from_secs(3600), true), Next::Batch(b) if b.samples == 2)
        );
        assert!(matches!(lane.next(Duration::ZERO, true), Next::Empty));
    }

    #[test]
    fn the_cursor_is_the_lowest_unsent_position() {
        let mut lanes = Lanes::new(2, 50);
        assert_eq!(lanes.cursor(), 50, "nothing queued: where the lanes start");
        // Two commits, each with a series in each lane.
        let (a, b) = (0..64)
            .flat_map(|x| (0..64).map(move |y| (x, y)))
            .find(|&(x, y)| lane_of(&lanes, x) == 0 && lane_of(&lanes, y) == 1)
            .unwrap();
        let (e, ends) = commit(&[a, b], 1.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(100), 1);
        let (e, ends) = commit(&[a, b], 2.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(200), 1);
        assert_eq!(lanes.cursor(), 50);
        let (l0, l1) = (lanes.current()[0].clone(), lanes.current()[1].clone());
        // Lane 1's first batch is in flight (a retry keeps it there); lane 0 sends everything.
        let Next::Batch(first) = l1.next(Duration::ZERO, true) else {
            panic!()
        };
        l1.set_in_flight(Some(first.low));
        assert_eq!(drain(&l0), [1, 1]);
        assert_eq!(
            lanes.cursor(),
            50,
            "lane 1 has not delivered the first commit"
        );
        l1.set_in_flight(None);
        assert_eq!(
            lanes.cursor(),
            100,
            "lane 1's second batch starts after commit 1"
        );
        assert_eq!(drain(&l1), [1]);
        assert_eq!(lanes.cursor(), 200, "everything delivered");
    }

    #[test]
    fn a_new_generation_waits_until_the_old_one_has_sent_everything() {
        let mut lanes = Lanes::new(1, 0);
        let (e, ends) = commit(&[0, 1, 2, 3], 1.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(100), 1000);
        let old = lanes.current()[0].clone();
        let fresh = lanes.start_generation(3);
        assert_eq!(fresh.len(), 3);
        assert!(old.retired() && lanes.retiring());
        for l in &fresh {
            assert!(lanes.waits_for_older(l), "a new lane sends nothing yet");
        }
        assert!(!lanes.waits_for_older(&old), "the retired lane sends");
        // New entries go to the new generation only; the old one sealed what it held.
        let (e, ends) = commit(&[0, 1, 2, 3], 2.0);
        lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, Some(200), 1000);
        assert_eq!(lanes.cursor(), 0, "the old generation's entries are unsent");
        assert_eq!(drain(&old), [4]);
        lanes.lane_ended(&old);
        assert!(!lanes.retiring());
        for l in &fresh {
            assert!(!lanes.waits_for_older(l));
        }
        assert_eq!(
            lanes.cursor(),
            100,
            "the new lanes start after the first commit"
        );
        let sent: usize = fresh.iter().map(|l| drain(l).iter().sum::<usize>()).sum();
        assert_eq!(sent, 4);
        assert_eq!(lanes.cursor(), 200);
        assert!(lanes.all_idle());
    }

    #[test]
    fn dropping_the_oldest_keeps_the_newest_within_the_limit() {
        let mut lanes = Lanes::new(1, 0);
        for i in 0..5 {
            let (e, ends) = commit(&(0..10).collect::<Vec<_>>(), i as f64);
            lanes.distribute(&e, &ends, &vec![0; ends.len()], 1000, None, 10);
        }
        assert_eq!(lanes.drop_oldest(25).total(), 30);
        assert_eq!(lanes.queued(), 20);
        assert_eq!(drain(&lanes.current()[0]), [10, 10]);
    }
}
