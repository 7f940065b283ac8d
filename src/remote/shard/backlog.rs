//! Reading an endpoint's backlog back from the WAL into its lanes: after a restart behind the
//! cursor, and whenever the lanes fall more than `capacity × max_shards` samples behind. What
//! the lanes already hold is still sent and nothing is read twice: the reader starts at the
//! end of the last commit the lanes hold, and hands the lanes back to live scrapes once it
//! reaches the head.

use std::sync::atomic::Ordering::Relaxed;

use super::Shard;
use crate::log::Level;
use crate::selfmetrics::Count;
use crate::wal::WalReader;
use crate::wal::segment::Pos;

/// A WAL reader feeding the lanes, and its reused buffers.
pub(super) struct Replay {
    reader: WalReader,
    staged: Vec<u8>,
    ends: Vec<u32>,
    kinds: Vec<u8>,
    /// Damage the reader had met when last reported: (bytes skipped, samples lost).
    reported: (u64, u64),
}

impl Replay {
    pub fn new(dir: &std::path::Path, from: Pos) -> Replay {
        Replay {
            reader: WalReader::new(dir, from),
            staged: Vec::new(),
            ends: Vec::new(),
            kinds: Vec::new(),
            reported: (0, 0),
        }
    }
}

impl Shard {
    /// From here on the lanes are fed from the WAL, after what they already hold.
    pub(super) fn start_replay(&self) {
        let from = self.lanes.borrow().queued_to();
        let mut wal = self.ctl.wal.borrow_mut();
        wal.reading_back(self.slot, from);
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

    /// Without a WAL to fall back on (its write failed), drops the oldest sealed batches until
    /// the queues fit their bound.
    pub(super) fn drop_oldest(&self) {
        let dropped = self.lanes.borrow_mut().drop_oldest(self.limit);
        if dropped.total() == 0 {
            return;
        }
        self.stats.add(Count::DroppedQueueFull, dropped);
        let dropped = dropped.total();
        if self.ep.should_log_drop() {
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

    /// Reads WAL records into the lanes until they hold enough to keep every lane busy, or
    /// the reader reaches the head (then scrapes feed the lanes again).
    pub(super) fn feed(&self) {
        let mut guard = self.replay.borrow_mut();
        let Some(rp) = guard.as_mut() else { return };
        let want = self.lanes.borrow().len() * self.ep.cfg.queue.max_samples_per_send * 2;
        if self.lanes.borrow().queued() >= want {
            return;
        }
        let mut wal = self.ctl.wal.borrow_mut();
        // A retention bound deleted data under the reader: continue after it.
        if let Some(acked) = wal.take_moved(self.slot)
            && acked > rp.reader.position
        {
            *rp = Replay::new(wal.dir(), acked);
        }
        // Everything committed must be in the file before reading up to the head.
        wal.flush();
        let (head, first) = (wal.head(), wal.first_segment());
        let accept = self.ep.accept();
        let mut caught_up = false;
        while self.lanes.borrow().queued() < want {
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
                    let (entries, ends, kinds) =
                        self.rewrite(&mut rw, &rp.staged, &rp.ends, &rp.kinds);
                    self.distribute(entries, ends, kinds, newest, Some(end));
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
            let at = rp.reader.position.max(self.lanes.borrow().queued_to());
            wal.caught_up(self.slot);
            drop(wal);
            *guard = None;
            self.lanes.borrow_mut().mark_through(at);
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
}
