//! A lane's task: takes its batches in order, converts them to Remote Write 2.0 where the
//! endpoint speaks it, compresses, sends, and retries with backoff until each is delivered,
//! dropped for good, or shutdown's flush deadline passes. Each outcome feeds the shard's
//! window (see `adapt`) and its counters.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Shard;
use super::lane::{Batch, Lane, Next};
use super::outcome::{Outcome, jitter};
use super::request::LaneConn;
use crate::log::Level;
use crate::remote::v2::Counts;
use crate::runtime::{Instant, race, sleep};
use crate::selfmetrics::Count;

impl Shard {
    /// One lane's task: sends its batches in order until the lane is retired and empty, or
    /// shutdown's flush ends.
    pub(super) async fn run_lane(self: Rc<Self>, lane: Rc<Lane>) {
        let mut lc = LaneConn::new(&self.ep);
        while let Some(batch) = self.next_batch(&lane).await {
            lane.set_in_flight(Some(batch.low));
            self.lanes.borrow_mut().taken(batch.tally);
            self.publish_pending();
            if self.replay.borrow().is_some() {
                self.notify.notify();
            }
            if self.send(&mut lc, &batch).await {
                lane.set_in_flight(None);
                self.ack_progress();
            } else {
                // Abandoned (the flush deadline, or a retired shard's failure): the cursor
                // stays before it.
                self.abandoned.set(self.abandoned.get() + batch.samples);
                self.lanes.borrow_mut().abandoned(batch.low);
                break;
            }
            self.notify.notify();
        }
        let left = lane.discard();
        if left.total() > 0 {
            self.abandoned.set(self.abandoned.get() + left.total());
            self.lanes.borrow_mut().taken(left);
        }
        self.lanes.borrow_mut().lane_ended(&lane);
        self.running.set(self.running.get() - 1);
        self.notify.notify();
    }

    /// The lane's next batch, once it may be sent; `None` when the lane is done.
    async fn next_batch(&self, lane: &Lane) -> Option<Batch> {
        let ctl = &self.ctl;
        let deadline = self.ep.cfg.queue.batch_send_deadline;
        loop {
            let flushing = ctl.shutdown.is_set();
            // Old backlogs first (see `Endpoint::backlogs_pending`): what scrapes commit
            // meanwhile waits in the queue, then the WAL.
            if !flushing
                && !ctl.draining()
                && !self.initial_hold.get()
                && self.ep.backlogs_pending()
            {
                race(sleep(Duration::from_millis(100)), ctl.shutdown.wait()).await;
                continue;
            }
            // A new generation starts once the last one has sent everything it held.
            if self.lanes.borrow().waits_for_older(lane) {
                if flushing && ctl.flush_expired() {
                    return None;
                }
                race(lane.woken(), sleep(Duration::from_millis(100))).await;
                continue;
            }
            let replaying = self.replay.borrow().is_some();
            // Nothing more will come: a retired lane, a drained WAL read to its head, or
            // shutdown (the backlog in the WAL is sent after the restart).
            let finishing = lane.retired() || (ctl.draining() && !replaying) || flushing;
            let due = match lane.next(deadline, finishing) {
                Next::Batch(b) => return Some(b),
                Next::DueIn(d) => Some(d),
                Next::Empty => None,
            };
            if lane.retired() || (ctl.draining() && !replaying && !flushing) {
                return None;
            }
            if flushing && (replaying || ctl.loops_active() == 0 || ctl.flush_expired()) {
                return None;
            }
            let wait = match due {
                Some(d) => d,
                None if flushing => Duration::from_millis(100),
                None => Duration::from_secs(3600),
            };
            if flushing {
                race(lane.woken(), sleep(wait)).await;
            } else {
                race(lane.woken(), race(sleep(wait), ctl.shutdown.wait())).await;
            }
        }
    }

    /// Sends one batch until it is delivered or dropped (true), or the flush deadline passes
    /// (false).
    async fn send(&self, lc: &mut LaneConn, batch: &Batch) -> bool {
        let mut out = std::mem::take(&mut lc.compressed);
        let sent = self.send_body(lc, &mut out, batch).await;
        lc.compressed = out;
        sent
    }

    async fn send_body(&self, lc: &mut LaneConn, out: &mut Vec<u8>, batch: &Batch) -> bool {
        let q = &self.ep.cfg.queue;
        let ctl = &self.ctl;
        let mut body = Cow::Borrowed(&batch.body[..]);
        let mut tally = batch.tally;
        let mut v2 = self.ep.sends_v2();
        let Some((mut len, mut counts)) = self.wire(lc, &body, out, batch, v2) else {
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
                tally = n;
                if n.total() == 0 {
                    return true;
                }
                body = Cow::Owned(kept);
                match self.wire(lc, &body, out, batch, v2) {
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
                    if self.ep.downgrade() {
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
                    match self.wire(lc, &body, out, batch, v2) {
                        Some(w) => (len, counts) = w,
                        None => return true,
                    }
                }
                Outcome::Sent => {
                    {
                        let mut w = self.window.borrow_mut();
                        w.sent += 1;
                        w.samples += tally.total() as u64;
                        w.latency += took;
                    }
                    self.stats.add(Count::Sent, tally);
                    self.stats.bytes_sent.fetch_add(len as u64, Relaxed);
                    if ctl.shutdown.is_set() {
                        self.ep.progressed_in_shutdown();
                    }
                    self.stats
                        .highest_sent_ts_ms
                        .fetch_max(batch.newest_ts.max(0) as u64, Relaxed);
                    if self.ep.recovered() {
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
                Outcome::Retry { cause, after } => {
                    self.window.borrow_mut().failed += 1;
                    self.stats.add(Count::Retried, tally);
                    self.stats.requests_failed.fetch_add(1, Relaxed);
                    if self.ep.start_failing() {
                        crate::log!(
                            Level::Warn,
                            "remote",
                            "remote write endpoint is not accepting samples; retrying with backoff (logged once until it recovers)",
                            remote_name = self.ep.cfg.name,
                            url = self.ep.url,
                            err = cause,
                            hint = cause.hint()
                        );
                    } else {
                        crate::log!(
                            Level::Debug,
                            "remote",
                            "retrying remote write",
                            url = self.ep.url,
                            attempt = attempt,
                            err = cause
                        );
                    }
                    let mut pause = after.unwrap_or_else(|| jitter(backoff));
                    if let Some(until) = self.retired_until.get() {
                        // A retired shard hands the rest to the shard that follows once its
                        // flush deadline passes.
                        let now = Instant::now();
                        if now >= until {
                            return false;
                        }
                        pause = pause.min(until - now);
                    }
                    backoff = (backoff * 2).min(q.max_backoff);
                    if let Some(d) = ctl.flush_deadline_at() {
                        let now = Instant::now();
                        // A receiver that took nothing since shutdown began is not waited
                        // for: what is unsent stays in the WAL for the next start.
                        if now >= d || !self.ep.progressing_in_shutdown() {
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
        v2: bool,
    ) -> Option<(usize, Option<Counts>)> {
        let compress = |lc: &mut LaneConn, body: &[u8], out: &mut Vec<u8>| {
            lc.compress_into(body, out)
                .map_err(|e| self.drop_batch(batch, &format!("snappy: {e}")))
                .ok()
        };
        if !v2 {
            return compress(lc, body, out).map(|n| (n, None));
        }
        let mut converted = std::mem::take(&mut lc.v2_body);
        let counts = lc.v2.convert(
            body,
            Some(&self.reported.families()),
            Some(&self.reported.created()),
            &mut converted,
        );
        let result = match counts {
            Ok(c) => compress(lc, &converted, out).map(|n| (n, Some(c))),
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

    fn drop_batch(&self, batch: &Batch, reason: &str) {
        self.stats.add(Count::Failed, batch.tally);
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
}
