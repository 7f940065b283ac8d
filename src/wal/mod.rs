//! The per-core write-ahead log: every committed scrape is appended here before any endpoint
//! sees it, and each remote-write endpoint's acknowledged position (its cursor) is kept beside
//! it, so that unsent samples survive dead receivers, crashes and restarts.
//!
//! Layout: `<storage.agent.path>/wal/<core>/` holds numbered segments (see [`segment`]) and a
//! `cursors` file. Each start opens a fresh segment. Segments are self-contained: a series is
//! declared (series record) in each segment before its first sample there, so any segment can
//! be read, or deleted, without the others, and no checkpoint is needed.
//!
//! **Durability rule:** before a commit returns, its complete 4 KiB blocks are written to the
//! segment (`O_DIRECT` where possible) and its partial last block to the tail file through the
//! page cache (see [`segment`]), so a crash of the process loses nothing committed.
//! `fdatasync` of the segment and the tail file runs at most every `fsync_interval` (from the
//! core's timer) and when a segment is closed, which bounds what a power loss can take.

mod cache;
pub mod crc;
mod cursors;
pub mod inspect;
mod reader;
pub mod record;
mod retention;
pub mod segment;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub use cache::SeriesCache;
use cache::{CacheSlot, EPOCH_BYTES, EPOCH_LIMIT};
pub use cursors::{Cursor, load_cursors};
pub use reader::{Accept, WalReader};
use record::{EXEMPLARS, HISTOGRAMS, METADATA, SAMPLES, SERIES, ValueState};
pub use segment::Compression;
use segment::{Pos, SegmentReader, SegmentWriter, list_segments, pos, pos_offset, pos_segment};
pub use segment::{Progress, WriteJob};
pub use sync::{SyncDone, SyncJob};

use crate::entry::{EntryPayload, split_entry};
use crate::log::Level;

#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Segment size; a commit never spans segments, so one may exceed it by a commit.
    pub segment_size: u64,
    pub compression: Compression,
    /// Try `O_DIRECT` writes.
    pub direct: bool,
    pub fsync_interval: Duration,
    /// Most bytes all of this core's segments may take; the oldest go first.
    pub max_size: u64,
    /// Oldest a closed segment may be (by its last write) before it is deleted, sent or not.
    pub max_age: Option<Duration>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 128 << 20,
            compression: Compression::Snappy,
            direct: true,
            fsync_interval: Duration::from_secs(1),
            max_size: u64::MAX,
            max_age: None,
        }
    }
}

use crate::selfmetrics::WAL_BUCKETS;
pub use crate::selfmetrics::WalStats;

pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    writer: Option<SegmentWriter>,
    next_ref: u32,
    /// Closed segments and their sizes, oldest first (the writer's is not among them).
    /// (index, bytes on disk, last written).
    closed: Vec<(u32, u64, std::time::SystemTime)>,
    pub stats: Arc<WalStats>,
    last_sync: Instant,
    unsynced: bool,
    /// Closed segments whose `fdatasync` is due with the next sync job.
    pending_syncs: Vec<(u32, std::fs::File)>,
    cursors: Vec<Cursor>,
    cursors_dirty: bool,
    cursors_saved: Instant,
    /// Saved positions of endpoints not registered (yet): kept in the `cursors` file until
    /// every endpoint of this run has registered, so registering one does not lose another's.
    unclaimed: std::collections::BTreeMap<String, Pos>,
    /// When segments behind every cursor were last deleted.
    truncated: Instant,
    // Reused per commit.
    rec_series: Vec<u8>,
    rec_samples: Vec<u8>,
    rec_hist: Vec<u8>,
    rec_exemplars: Vec<u8>,
    rec_meta: Vec<u8>,
    /// The series record's items, written before their count is known.
    series_body: Vec<u8>,
    samples: Vec<(u32, i64)>,
    /// The samples record's value column.
    values: Vec<u8>,
    /// The current value epoch, and the segment and offset where it began.
    epoch: u32,
    epoch_at: Pos,
    /// The first epoch of the open segment, and that segment: series written since are
    /// declared in it.
    segment_epoch: u32,
    epoch_segment: u32,
    hists: Vec<(u32, std::ops::Range<usize>)>,
    exemplars: Vec<(u32, std::ops::Range<usize>)>,
    /// Series items in `series_body` for the commit being assembled.
    n_series: usize,
    /// The first error of the commit being assembled.
    staged_err: Option<io::Error>,
    /// The previous layout of a target whose series moved, by key, and whether this scrape
    /// has taken the slot yet.
    relayout: HashMap<[u64; 2], (CacheSlot, bool)>,
    /// Bumped when refs start over, invalidating every `SeriesCache`.
    generation: u32,
    ends: Vec<Pos>,
    direct_logged: bool,
    /// Set while commits fail, so the failure is logged once.
    failing: bool,
}

/// What [`Wal::add`] found about a target's series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Added {
    /// Series the cache did not hold (Prometheus' `scrape_series_added`).
    pub new_series: usize,
    /// Whether the series or their order differ from the last add with this cache.
    pub layout_changed: bool,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub segments: usize,
    pub torn_bytes_cut: u64,
    /// Bytes of records the tail file gave back to the last segment.
    pub tail_bytes_restored: u64,
}

impl Wal {
    /// Opens the WAL in `dir` (creating it): repairs a torn tail of the newest segment, loads
    /// the cursors, and starts a new segment.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        stats: Arc<WalStats>,
    ) -> io::Result<(Wal, OpenReport)> {
        std::fs::create_dir_all(dir)?;
        let existing = list_segments(dir)?;
        let mut report = OpenReport {
            segments: existing.len(),
            ..Default::default()
        };
        if let Some(last) = existing.last() {
            let repair = segment::repair_tail(dir, *last)?;
            report.tail_bytes_restored = repair.restored;
            report.torn_bytes_cut = repair.cut;
            if report.tail_bytes_restored > 0 {
                crate::log!(
                    Level::Info,
                    "wal",
                    "restored the last partial block of the WAL from the tail file",
                    segment = segment::segment_path(dir, *last).display(),
                    bytes = report.tail_bytes_restored
                );
            }
            if report.torn_bytes_cut > 0 {
                crate::log!(
                    Level::Warn,
                    "wal",
                    "cut a torn record off the end of the last segment",
                    segment = segment::segment_path(dir, *last).display(),
                    bytes = report.torn_bytes_cut
                );
            }
        }
        let mut closed = Vec::new();
        for i in &existing {
            let meta = std::fs::metadata(segment::segment_path(dir, *i))?;
            closed.push((
                *i,
                meta.len(),
                meta.modified()
                    .unwrap_or_else(|_| std::time::SystemTime::now()),
            ));
        }
        let next = existing.last().map_or(0, |i| i + 1);
        let writer = SegmentWriter::create(dir, next, opts.direct, None)?;
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            writer: Some(writer),
            next_ref: 0,
            closed,
            stats,
            last_sync: Instant::now(),
            unsynced: false,
            pending_syncs: Vec::new(),
            cursors: Vec::new(),
            cursors_dirty: false,
            cursors_saved: Instant::now(),
            unclaimed: Default::default(),
            truncated: Instant::now(),
            rec_series: Vec::new(),
            rec_samples: Vec::new(),
            rec_hist: Vec::new(),
            rec_exemplars: Vec::new(),
            rec_meta: Vec::new(),
            series_body: Vec::new(),
            samples: Vec::new(),
            values: Vec::new(),
            epoch: 0,
            epoch_at: u64::MAX,
            segment_epoch: 0,
            epoch_segment: u32::MAX,
            hists: Vec::new(),
            exemplars: Vec::new(),
            n_series: 0,
            staged_err: None,
            relayout: HashMap::new(),
            generation: next_generation(),
            ends: Vec::new(),
            direct_logged: false,
            failing: false,
            opts,
        };
        wal.stats.segments_created.fetch_add(1, Relaxed);
        wal.log_direct();
        wal.update_size();
        Ok((wal, report))
    }

    fn log_direct(&mut self) {
        if let Some(w) = &self.writer
            && !w.direct()
            && self.opts.direct
            && !self.direct_logged
        {
            self.direct_logged = true;
            crate::log!(
                Level::Info,
                "wal",
                "the filesystem refuses O_DIRECT; writing the WAL through the page cache with fdatasync",
                dir = self.dir.display()
            );
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record goes: everything before it is in the WAL.
    pub fn head(&self) -> Pos {
        match &self.writer {
            Some(w) => pos(w.index(), w.offset()),
            None => pos(self.closed.last().map_or(0, |c| c.0 + 1), 0),
        }
    }

    /// WAL bytes from `p` to the head (what an endpoint at `p` has yet to read).
    pub fn bytes_after(&self, p: Pos) -> u64 {
        let head = self.head();
        if p >= head {
            return 0;
        }
        let (seg, off) = (pos_segment(p), pos_offset(p));
        let mut total = 0;
        for (i, size, _) in &self.closed {
            if *i > seg {
                total += size;
            } else if *i == seg {
                total += size.saturating_sub(off);
            }
        }
        total
            + if pos_segment(head) == seg {
                pos_offset(head) - off
            } else {
                pos_offset(head)
            }
    }

    /// The oldest segment still on disk.
    pub fn first_segment(&self) -> u32 {
        self.closed
            .first()
            .map(|c| c.0)
            .unwrap_or_else(|| pos_segment(self.head()))
    }

    /// Appends a committed scrape: `entries` as the appender encoded them, `ends[i]` where
    /// entry `i` ends. Returns the position after its records, or the error (counted).
    pub fn commit(
        &mut self,
        entries: &[u8],
        ends: &[u32],
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
        self.commit_with_metadata(entries, ends, &[], cache)
    }

    /// [`Self::commit`], with the scrape's family metadata (items of a metadata record): a
    /// family's is written when the segment does not have it yet or it changed.
    pub fn commit_with_metadata(
        &mut self,
        entries: &[u8],
        ends: &[u32],
        metadata: &[u8],
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
        if ends.is_empty() {
            return Ok(self.head());
        }
        self.begin(entries.len(), ends.len());
        self.add(entries, ends, 0..ends.len(), cache);
        self.finish(entries, metadata, cache)
    }

    /// Starts a commit assembled from several [`Self::add`] calls (a scrape's samples, its
    /// staleness markers and its report series each keep their own `SeriesCache`), written
    /// by [`Self::finish`]. `bytes` and `count` bound what will be added.
    pub fn begin(&mut self, bytes: usize, count: usize) {
        self.staged_err = None;
        self.values.clear();
        self.samples.clear();
        self.hists.clear();
        self.exemplars.clear();
        self.series_body.clear();
        self.n_series = 0;
        // A commit never spans segments: cut over first when this one would overflow it.
        let estimate = bytes as u64 / 2;
        let needs_rotation = match &self.writer {
            None => true,
            Some(w) => w.offset() > 0 && w.offset() + estimate > self.opts.segment_size,
        };
        if (needs_rotation || self.next_ref > u32::MAX - (count as u32).saturating_add(4096))
            && let Err(e) = self.rotate()
        {
            self.staged_err = Some(e);
            return;
        }
        let Some(w) = &self.writer else {
            self.staged_err = Some(io::Error::other("no open segment"));
            return;
        };
        let segment = w.index();
        let here = pos(segment, w.offset());
        if pos_segment(self.epoch_at) != segment || here >= self.epoch_at + EPOCH_BYTES {
            if self.epoch + 1 >= EPOCH_LIMIT {
                // Slots keep 28 bits of epoch: start over, with every cache.
                self.epoch = 0;
                self.generation = next_generation();
                self.epoch_segment = u32::MAX;
            }
            self.epoch += 1;
            self.epoch_at = here;
        }
        if self.epoch_segment != segment {
            self.epoch_segment = segment;
            self.segment_epoch = self.epoch;
        }
    }

    /// Adds entries `ends[range]` of `entries` (entry `i` starts where `i - 1` ends) to the
    /// commit begun by [`Self::begin`], with `cache` holding their series' refs.
    pub fn add(
        &mut self,
        entries: &[u8],
        ends: &[u32],
        range: std::ops::Range<usize>,
        cache: &mut SeriesCache,
    ) -> Added {
        let mut added = Added::default();
        if self.staged_err.is_some() {
            return added;
        }
        let epoch = self.epoch;
        let old_len = cache.slots.len();
        let mut indexed = false;
        let mut series_body = std::mem::take(&mut self.series_body);
        // The previous entry's series: an exemplar entry follows its series' sample.
        let mut last: Option<([u64; 2], u32)> = None;
        let mut start = if range.start == 0 {
            0
        } else {
            ends[range.start - 1] as usize
        };
        // Slots used by this add, in order.
        let mut i = 0usize;
        for end in &ends[range] {
            let entry = &entries[start..*end as usize];
            let entry_start = start;
            start = *end as usize;
            let (labels, payload) = match split_entry(entry) {
                Ok(x) => x,
                Err(e) => {
                    self.staged_err = Some(io::Error::new(io::ErrorKind::InvalidData, e.0));
                    break;
                }
            };
            let h = xxhash_rust::xxh3::xxh3_128(labels);
            let key = [h as u64, (h >> 64) as u64];
            if let EntryPayload::Exemplar(ex) = payload {
                // Exemplars take no cache slot: they share their series' ref.
                let r = match last {
                    Some((k, r)) if k == key => r,
                    _ => {
                        let r = self.next_ref;
                        self.next_ref += 1;
                        record::put_ref_bytes(&mut series_body, r, labels);
                        self.n_series += 1;
                        r
                    }
                };
                let off = ex.as_ptr() as usize - entries.as_ptr() as usize;
                self.exemplars.push((r, off..off + ex.len()));
                continue;
            }
            if cache.generation != self.generation {
                cache.slots.clear();
                cache.generation = self.generation;
            }
            let mut hit = cache.slots.get(i).is_some_and(|s| s.key == key);
            if hit
                && indexed
                && let Some((s, taken)) = self.relayout.get_mut(&key)
                && s.r == cache.slots[i].r
            {
                // A ref lives in one slot only, or two slots would keep diverging value
                // states for it: if an earlier position took this one, it is a new series.
                hit = !*taken;
                *taken = true;
            }
            if !hit {
                // The layout changed (or the series is new): index the previous layout once
                // for this scrape, then look the series up there.
                if !indexed {
                    indexed = true;
                    self.relayout.clear();
                    for s in &cache.slots[i.min(cache.slots.len())..] {
                        self.relayout.entry(s.key).or_insert((*s, false));
                    }
                }
                // Each previous slot is taken once: a series listed twice gets a second ref.
                let slot = match self.relayout.get_mut(&key) {
                    Some((found, taken)) if !*taken => {
                        *taken = true;
                        *found
                    }
                    _ => {
                        let r = self.next_ref;
                        self.next_ref += 1;
                        added.new_series += 1;
                        CacheSlot::new(key, r)
                    }
                };
                if i < cache.slots.len() {
                    cache.slots[i] = slot;
                } else {
                    cache.slots.push(slot);
                }
            }
            let slot = &mut cache.slots[i];
            i += 1;
            if slot.epoch() < self.segment_epoch || slot.epoch() == 0 {
                record::put_ref_bytes(&mut series_body, slot.r, labels);
                self.n_series += 1;
            }
            let r = slot.r;
            last = Some((key, r));
            match payload {
                EntryPayload::Sample {
                    value,
                    timestamp_ms,
                } => {
                    let mut st = slot.state();
                    record::put_value(&mut self.values, value, &mut st, epoch);
                    slot.set_state(st);
                    self.samples.push((r, timestamp_ms));
                }
                EntryPayload::Histogram(h) => {
                    slot.set_state(ValueState {
                        m: 0,
                        k: record::RAW,
                        epoch,
                    });
                    let off = h.as_ptr() as usize - entries.as_ptr() as usize;
                    debug_assert!(off >= entry_start);
                    self.hists.push((r, off..off + h.len()));
                }
                EntryPayload::Exemplar(_) => unreachable!("handled above"),
            }
        }
        // Series gone from this scrape leave the cache, so its memory follows the target.
        cache.slots.truncate(i);
        added.layout_changed = indexed || old_len != i;
        if self.relayout.capacity() > 1 << 16 {
            self.relayout = HashMap::new();
        }
        self.series_body = series_body;
        added
    }

    /// Writes the commit assembled since [`Self::begin`]: its records, in one segment, with
    /// `metadata`'s families (kept in `cache`) where the segment lacks them or they changed.
    /// Returns the position after the records, or the error (counted).
    pub fn finish(
        &mut self,
        entries: &[u8],
        metadata: &[u8],
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
        match self.finish_start(entries, metadata, cache) {
            Finishing::Done(r) => r,
            Finishing::Writing(job, commit) => {
                let progress = job.run_blocking();
                self.finish_end(commit, progress, cache)
            }
        }
    }

    /// [`Self::finish`] in two steps, for a caller that runs the writes away from the WAL (the
    /// core's ring): lays the commit's records out and returns the writes that make them
    /// durable; [`Self::finish_end`] takes what they did. Between the two, nothing else may
    /// commit to, flush or read up to the head of this WAL (the core's commit lock).
    pub fn finish_start(
        &mut self,
        entries: &[u8],
        metadata: &[u8],
        cache: &mut SeriesCache,
    ) -> Finishing {
        let count = self.samples.len() + self.hists.len() + self.exemplars.len();
        let staged = match self.staged_err.take() {
            Some(e) => Err(e),
            None if count == 0 => return Finishing::Done(Ok(self.head())),
            None => self.write_staged(entries, metadata, cache),
        };
        match staged {
            Ok((job, commit)) => Finishing::Writing(job, commit),
            Err(e) => Finishing::Done(self.finished(Err(e), count, cache)),
        }
    }

    /// The second step of [`Self::finish`]: where the commit ends, or why it is not in the
    /// WAL (its layout undone).
    pub fn finish_end(
        &mut self,
        commit: Commit,
        progress: Progress,
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
        self.stats
            .write_duration
            .observe(&WAL_BUCKETS, commit.started.elapsed());
        let Some(w) = &mut self.writer else {
            return self.finished(
                Err(io::Error::other("no open segment")),
                commit.count,
                cache,
            );
        };
        let r = w
            .write_done(commit.laid, &mut self.ends, progress)
            .map(|()| {
                self.stats.records.fetch_add(commit.records as u64, Relaxed);
                self.stats
                    .bytes
                    .fetch_add(w.offset() - commit.before, Relaxed);
            });
        let r = r.map(|()| {
            self.unsynced = true;
            if self.opts.fsync_interval.is_zero() {
                // Asked for: every commit is synced before it returns.
                self.sync();
            }
            self.update_size();
            self.head()
        });
        self.finished(r, commit.count, cache)
    }

    /// Accounts for a commit's outcome: a failure is counted, logged once per run of them,
    /// and makes the next commit start a new epoch; the first success after failures is
    /// logged.
    fn finished(
        &mut self,
        r: io::Result<Pos>,
        count: usize,
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
        match &r {
            Err(e) => {
                // What the cache says was written may not have been.
                cache.families.clear();
                // The caches' value states and declarations may be ahead of what was written:
                // the next commit starts a new epoch, storing every value whole and declaring
                // every series again.
                self.epoch_at = u64::MAX;
                self.epoch_segment = u32::MAX;
                self.stats
                    .samples_not_durable
                    .fetch_add(count as u64, Relaxed);
                self.write_failed(e);
            }
            Ok(_) if self.failing => {
                self.failing = false;
                crate::log!(
                    Level::Info,
                    "wal",
                    "WAL writes succeed again",
                    dir = self.dir.display(),
                    samples_not_durable = self.stats.samples_not_durable.load(Relaxed)
                );
            }
            Ok(_) => {}
        }
        r
    }

    /// Builds the commit's records and lays them out in the segment writer.
    fn write_staged(
        &mut self,
        entries: &[u8],
        metadata: &[u8],
        cache: &mut SeriesCache,
    ) -> io::Result<(WriteJob, Commit)> {
        let epoch = self.epoch;
        self.rec_series.clear();
        self.rec_series.push(SERIES);
        if self.n_series > 0 {
            record::put_count(&mut self.rec_series, self.n_series);
            self.rec_series.extend_from_slice(&self.series_body);
        }
        self.rec_samples.clear();
        if !self.samples.is_empty() {
            self.rec_samples.push(SAMPLES);
            record::put_samples(&mut self.rec_samples, epoch, &self.samples, &self.values);
        }
        for (rec, kind, items) in [
            (&mut self.rec_hist, HISTOGRAMS, &self.hists),
            (&mut self.rec_exemplars, EXEMPLARS, &self.exemplars),
        ] {
            rec.clear();
            if !items.is_empty() {
                rec.push(kind);
                record::put_count(rec, items.len());
                for (r, range) in items {
                    record::put_ref_bytes(rec, *r, &entries[range.clone()]);
                }
            }
        }
        self.rec_meta.clear();
        if !metadata.is_empty() {
            let items = record::metadata_items(metadata)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
            let mut body = Vec::new();
            let mut n = 0;
            let segment = self.epoch_segment;
            for (item, name) in &items {
                let key = xxhash_rust::xxh3::xxh3_64(name);
                let now = (xxhash_rust::xxh3::xxh3_64(item), segment);
                if cache.families.insert(key, now) != Some(now) {
                    body.extend_from_slice(item);
                    n += 1;
                }
            }
            if cache.families.len() > 2 * items.len() + 64 {
                // Families the target no longer has leave the map.
                let keep: std::collections::HashSet<u64> = items
                    .iter()
                    .map(|(_, name)| xxhash_rust::xxh3::xxh3_64(name))
                    .collect();
                cache.families.retain(|k, _| keep.contains(k));
            }
            if n > 0 {
                self.rec_meta.push(METADATA);
                record::put_count(&mut self.rec_meta, n);
                self.rec_meta.extend_from_slice(&body);
            }
        }
        let mut records: [&[u8]; 5] = [&[]; 5];
        let mut n = 0;
        for rec in [
            &self.rec_meta,
            &self.rec_series,
            &self.rec_samples,
            &self.rec_hist,
            &self.rec_exemplars,
        ] {
            if rec.len() > 1 {
                records[n] = rec;
                n += 1;
            }
        }
        self.ends.clear();
        let count = self.samples.len() + self.hists.len() + self.exemplars.len();
        let Some(w) = &mut self.writer else {
            return Err(io::Error::other("no open segment"));
        };
        let before = w.offset();
        let started = Instant::now();
        let laid = w.lay_out(&records[..n], self.opts.compression, &mut self.ends);
        let job = w.write_job();
        Ok((
            job,
            Commit {
                laid,
                count,
                records: n,
                before,
                started,
            },
        ))
    }

    /// Writes the partial last block to the segment (readers call this before they read up
    /// to the head).
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            let started = Instant::now();
            let flushed = w.flush_tail();
            self.stats
                .write_duration
                .observe(&WAL_BUCKETS, started.elapsed());
            if let Err(e) = flushed {
                self.write_failed(&e);
            }
        }
    }

    /// Counts a failed write and logs the first of a run of them.
    fn write_failed(&mut self, e: &io::Error) {
        self.stats.write_failures.fetch_add(1, Relaxed);
        if !self.failing {
            self.failing = true;
            crate::log!(
                Level::Error,
                "wal",
                "cannot write to the WAL; scrapes are still forwarded live but are not durable until writes succeed again (logged once until then)",
                dir = self.dir.display(),
                err = e
            );
        }
    }

    /// Closes the open segment and starts the next; forgets series not used in the last two
    /// segments; applies the size bound.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.writer {
            w.flush_tail()?;
        }
        let mut tail = None;
        let next = match self.writer.take() {
            Some(mut w) => {
                tail = w.take_tail();
                if self.opts.fsync_interval.is_zero() {
                    let started = Instant::now();
                    let synced = w.sync();
                    self.synced(w.index(), synced, started);
                } else {
                    // The closed segment is synced by the next sync job, off this commit.
                    match w.sync_handles() {
                        Ok(handles) => self
                            .pending_syncs
                            .extend(handles.into_iter().map(|f| (w.index(), f))),
                        Err(e) => self.synced(w.index(), Err(e), Instant::now()),
                    }
                }
                self.closed
                    .push((w.index(), on_disk(w.offset()), std::time::SystemTime::now()));
                w.index() + 1
            }
            None => self.closed.last().map_or(0, |c| c.0 + 1),
        };
        self.unsynced = false;
        if self.next_ref > u32::MAX / 2 {
            // Refs need only be unique within a segment: start over rather than wrap. Every
            // cache's refs become invalid, and their series are declared anew.
            self.next_ref = 0;
            self.generation = next_generation();
        }
        self.enforce_size();
        let w = SegmentWriter::create(&self.dir, next, self.opts.direct, tail)?;
        self.writer = Some(w);
        self.truncate();
        self.stats.segments_created.fetch_add(1, Relaxed);
        self.log_direct();
        self.update_size();
        Ok(())
    }

    fn update_size(&self) {
        let total: u64 = self.closed.iter().map(|c| c.1).sum::<u64>()
            + self.writer.as_ref().map_or(0, |w| on_disk(w.offset()));
        self.stats.size_bytes.store(total, Relaxed);
    }

    /// Closes the WAL at shutdown: syncs and saves the cursors.
    pub fn close(&mut self) {
        self.flush();
        self.sync_pending();
        self.sync();
        self.save_cursors();
    }
}

/// What [`Wal::finish_start`] did.
pub enum Finishing {
    /// Nothing to write (an empty commit), or the commit failed before any write.
    Done(io::Result<Pos>),
    /// The writes to run, and the commit to finish with what they did.
    Writing(WriteJob, Commit),
}

/// A commit laid out and not yet durable (see [`Wal::finish_start`]).
pub struct Commit {
    laid: segment::Laid,
    /// Samples, histograms and exemplars in it.
    count: usize,
    records: usize,
    /// The segment's length before it.
    before: u64,
    started: Instant,
}

/// The bytes a segment of `len` takes on disk: writes are whole 4 KiB blocks.
fn on_disk(len: u64) -> u64 {
    len.div_ceil(4096) * 4096
}

/// The core numbers of the WAL directories under `root` (`<storage.agent.path>/wal`).
pub fn core_ids(root: &Path) -> Vec<usize> {
    let mut ids: Vec<usize> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// A generation no other map of this process had: caches from another `Wal`, or from before
/// refs started over, never match.
fn next_generation() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// Samples and histograms in segment `index` after byte `from`.
pub fn count_samples(dir: &Path, index: u32, from: u64) -> io::Result<u64> {
    let mut r = SegmentReader::open(dir, index, from, None)?;
    let mut n = 0u64;
    while let Some((_, rec)) = r.next()? {
        if let Some((&kind, body)) = rec.split_first()
            && (kind == SAMPLES || kind == HISTOGRAMS)
        {
            n += record::count(body).unwrap_or(0) as u64;
        }
    }
    Ok(n)
}
