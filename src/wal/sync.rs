//! Durability: `fdatasync` of the segments and the tail file, and the cursors file's save.
//! Commits never wait for a sync (unless `fsync_interval` is zero): each core's sync timer
//! takes a [`SyncJob`] from the WAL and runs it through the core's io_uring without holding
//! the WAL. A failed sync is counted and logged, never retried: on Linux a second `fdatasync`
//! can succeed after the kernel dropped the pages the first could not write.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::Wal;
use super::cursors::CursorsFile;
use crate::log::Level;
use crate::selfmetrics::WAL_BUCKETS;

impl Wal {
    /// Syncs here and now when `fsync_interval` has passed since the last sync (closed
    /// segments waiting for theirs included). The core's timer uses [`Self::sync_job`]
    /// instead, so that the sync does not hold the core.
    pub fn tick(&mut self) {
        if let Some(job) = self.sync_job() {
            let done = job.run_blocking();
            self.sync_done(done);
        }
    }

    /// Syncs, here and now, the closed segments still waiting for the timer (at shutdown).
    pub(super) fn sync_pending(&mut self) {
        let files = std::mem::take(&mut self.pending_syncs);
        let done = SyncJob {
            files,
            cursors: None,
        }
        .run_blocking();
        self.sync_done(done);
    }

    /// The `fdatasync` calls due now, to run away from the WAL's borrow (see
    /// [`SyncJob::run`]): closed segments not synced yet, and the open segment and tail file
    /// when something was written and `fsync_interval` has passed. What it hands out counts
    /// as synced from here on: a failure is counted when [`Self::sync_done`] learns it, and
    /// never retried (see [`Self::sync`]).
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        let mut files = std::mem::take(&mut self.pending_syncs);
        if self.unsynced
            && self.last_sync.elapsed() >= self.opts.fsync_interval
            && let Some(w) = &self.writer
        {
            let index = w.index();
            match w.sync_handles() {
                Ok(handles) => files.extend(handles.into_iter().map(|f| (index, f))),
                Err(e) => self.synced(index, Err(e), Instant::now()),
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        let cursors = self
            .cursors_due()
            .map(|text| CursorsFile::new(&self.dir, text));
        (!files.is_empty() || cursors.is_some()).then_some(SyncJob { files, cursors })
    }

    /// Accounts for what a [`SyncJob`] did.
    pub fn sync_done(&mut self, done: SyncDone) {
        for (index, result, started) in done.files {
            self.synced(index, result, started);
        }
        if let Some(result) = done.cursors {
            self.cursors_written(result);
        }
    }

    /// `fdatasync` of the open segment, if anything was written since the last one.
    pub fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Some(w) = &self.writer {
            let index = w.index();
            let started = Instant::now();
            let synced = w.sync();
            self.synced(index, synced, started);
        }
        // Not retried after a failure either: on Linux a second fdatasync can succeed after
        // the kernel dropped the pages the first one failed to write, so a retry would report
        // durability that is not there. The next write starts a new unsynced span.
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    /// Accounts for an `fdatasync` of segment `index` that started at `started`: its time,
    /// and a failure (counted and logged: what was written since the last good sync may be
    /// lost on a power failure or crash of the host).
    pub(super) fn synced(&self, index: u32, result: io::Result<()>, started: Instant) {
        self.stats
            .fsync_duration
            .observe(&WAL_BUCKETS, started.elapsed());
        match result {
            Ok(()) => {
                self.stats.fsyncs.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.stats.fsync_failures.fetch_add(1, Relaxed);
                crate::log!(
                    Level::Error,
                    "wal",
                    "fdatasync of the WAL failed; what was written since the last successful sync may not be durable (it is still sent from memory and the page cache); check the disk",
                    dir = self.dir.display(),
                    segment = index,
                    err = e
                );
            }
        }
    }
}

/// What [`Wal::sync_job`] hands out: `fdatasync` calls as (segment, file) pairs, and the
/// `cursors` file to save (its text, the temporary path, the path).
pub struct SyncJob {
    files: Vec<(u32, std::fs::File)>,
    cursors: Option<CursorsFile>,
}

/// What a [`SyncJob`] did, for [`Wal::sync_done`].
pub struct SyncDone {
    files: Vec<(u32, io::Result<()>, Instant)>,
    cursors: Option<io::Result<()>>,
}

impl SyncJob {
    /// Runs the job on the core's driver: each `fdatasync` in turn, then the cursors file
    /// (written to a temporary file, synced, renamed over the old one). On io_uring the
    /// syncs are ring operations and the core goes on meanwhile; the small write and the
    /// rename are system calls. Nothing here borrows the WAL.
    pub async fn run(self) -> SyncDone {
        let mut files = Vec::with_capacity(self.files.len());
        for (index, file) in self.files {
            let started = Instant::now();
            let result = crate::runtime::sync_data(file).await;
            files.push((index, result, started));
        }
        let cursors = match self.cursors {
            None => None,
            Some(c) => Some(c.save_on_ring().await),
        };
        SyncDone { files, cursors }
    }

    /// [`Self::run`] with plain system calls, where no core waits (shutdown, tests).
    pub fn run_blocking(self) -> SyncDone {
        let files = self
            .files
            .into_iter()
            .map(|(index, file)| {
                let started = Instant::now();
                (index, file.sync_data(), started)
            })
            .collect();
        SyncDone {
            files,
            cursors: self.cursors.map(CursorsFile::save),
        }
    }
}
