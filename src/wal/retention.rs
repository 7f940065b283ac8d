//! Truncation and retention: segments every endpoint has passed are deleted, and the size and
//! age bounds delete the oldest even when unsent (counted per endpoint as lost).

use std::sync::atomic::Ordering::Relaxed;

use std::io;

use super::segment::{self, pos, pos_offset, pos_segment};
use super::{Wal, count_samples, on_disk};
use crate::log::Level;

impl Wal {
    /// Deletes segments every endpoint has passed (the open one stays). With no endpoint,
    /// nothing holds the closed segments.
    pub fn truncate(&mut self) {
        let min = self
            .cursors
            .iter()
            .filter(|c| !c.removed)
            .map(|c| c.acked)
            .min()
            .unwrap_or_else(|| self.head());
        let keep_from = pos_segment(min);
        while let Some(&(idx, _, _)) = self.closed.first() {
            if idx >= keep_from {
                break;
            }
            self.delete_oldest();
        }
        self.enforce_age();
        self.update_size();
    }

    pub(super) fn delete_oldest(&mut self) {
        if self.closed.is_empty() {
            return;
        }
        let (idx, _, _) = self.closed.remove(0);
        let path = segment::segment_path(&self.dir, idx);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.stats.segments_deleted.fetch_add(1, Relaxed);
            }
            // Already gone (removed by hand): nothing is left to delete or to count.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => crate::log!(
                Level::Warn,
                "wal",
                "cannot delete a WAL segment no endpoint needs; it stays on disk (remove it by hand once the cause is fixed)",
                path = path.display(),
                err = e
            ),
        }
    }

    /// Applies `max_size`: deletes the oldest closed segments until the total fits.
    pub(super) fn enforce_size(&mut self) {
        let open = self.writer.as_ref().map_or(0, |w| on_disk(w.offset()));
        let mut total: u64 = self.closed.iter().map(|c| c.1).sum::<u64>() + open;
        while total > self.opts.max_size && !self.closed.is_empty() {
            total -= self.closed[0].1;
            self.force_out_oldest("size bound (--storage.agent.retention.max-size)");
        }
    }

    /// Applies `max_age`: deletes closed segments last written longer ago than that.
    pub(super) fn enforce_age(&mut self) {
        let Some(max_age) = self.opts.max_age else {
            return;
        };
        let now = std::time::SystemTime::now();
        while let Some(&(_, _, written)) = self.closed.first() {
            if now.duration_since(written).unwrap_or_default() <= max_age {
                break;
            }
            self.force_out_oldest("age bound (--storage.agent.retention.max-time)");
        }
    }

    /// Deletes the oldest closed segment although endpoints may not have sent it. What an
    /// endpoint reading back from the WAL had not been handed yet is counted and logged.
    pub(super) fn force_out_oldest(&mut self, bound: &str) {
        let Some(&(idx, _, _)) = self.closed.first() else {
            return;
        };
        let next = pos(idx + 1, 0);
        for c in &mut self.cursors {
            if c.removed || c.acked >= next {
                continue;
            }
            // Unsent: after the acknowledged position and after what was already handed to
            // the sender when the read-back started.
            let unsent = c.acked.max(c.replay_from);
            let lost = if !(c.replaying || c.moved) || pos_segment(unsent) > idx {
                0
            } else {
                let from = if pos_segment(unsent) == idx {
                    pos_offset(unsent)
                } else {
                    0
                };
                count_samples(&self.dir, idx, from).unwrap_or(0)
            };
            c.acked = next;
            c.moved = true;
            if lost > 0 {
                c.lost.fetch_add(lost, Relaxed);
                crate::log!(
                    Level::Warn,
                    "wal",
                    "the WAL retention bound deleted samples not yet sent",
                    endpoint = c.id,
                    samples = lost,
                    segment = idx,
                    bound = bound
                );
            }
            self.cursors_dirty = true;
        }
        self.delete_oldest();
    }
}
