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

pub mod crc;
pub mod inspect;
pub mod record;
pub mod segment;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use record::{EXEMPLARS, HISTOGRAMS, METADATA, SAMPLES, SERIES, ValueState};
pub use segment::Compression;
use segment::{Pos, SegmentReader, SegmentWriter, list_segments, pos, pos_offset, pos_segment};

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

/// A target's series refs, in the order of its last scrape. A series is known by a 128-bit
/// xxh3 of its encoded labels (wide enough to be its identity), and a target's next scrape
/// nearly always lists the same series in the same order, so each sample finds its ref by
/// comparing one key at its position in a sequential array: no core-wide map, no cache miss
/// per sample, 32 bytes per series. When the layout changes, an index of the previous
/// layout is built for that scrape only. Like Prometheus' scrape cache, one per target.
#[derive(Default)]
pub struct SeriesCache {
    slots: Vec<CacheSlot>,
    /// The target's metric families: name hash → (metadata hash, segment written in).
    families: HashMap<u64, (u64, u32)>,
    /// The `Wal` generation the refs belong to (refs restart when they run out).
    generation: u32,
}

#[derive(Clone, Copy)]
struct CacheSlot {
    key: [u64; 2],
    r: u32,
    /// The value epoch of the series' last write in the high 28 bits (0: none), and its
    /// value's scale in the low 4 (15: raw). A series written in an epoch of the open segment
    /// is declared in it.
    tag: u32,
    /// The series' last value's `m` (see `record::put_value`).
    m: i64,
}

const _: () = assert!(std::mem::size_of::<CacheSlot>() == 32);

impl SeriesCache {
    /// Whether the last add with this cache had a series with this key (xxh3-128 of its
    /// encoded labels, as two words).
    pub fn keys(&self) -> impl Iterator<Item = [u64; 2]> + '_ {
        self.slots.iter().map(|s| s.key)
    }
}

/// Epochs stay below this, to fit a slot's tag; reaching it starts a new generation.
const EPOCH_LIMIT: u32 = 1 << 28;

impl CacheSlot {
    fn new(key: [u64; 2], r: u32) -> CacheSlot {
        CacheSlot {
            key,
            r,
            tag: 0,
            m: 0,
        }
    }

    fn epoch(&self) -> u32 {
        self.tag >> 4
    }

    fn state(&self) -> ValueState {
        match (self.epoch(), self.tag & 15) {
            (0, _) => ValueState::default(),
            (epoch, 15) => ValueState {
                m: self.m,
                k: record::RAW,
                epoch,
            },
            (epoch, k) => ValueState {
                m: self.m,
                k: k as u8,
                epoch,
            },
        }
    }

    fn set_state(&mut self, st: ValueState) {
        self.m = st.m;
        self.tag = (st.epoch << 4) | u32::from(st.k.min(15));
    }
}

/// A new value epoch starts after this many bytes of a segment (and with every segment):
/// what a damaged page can cost in values stored as changes is bounded by it, and so is the
/// price of storing each series' value whole once per epoch.
const EPOCH_BYTES: u64 = 8 << 20;

/// One endpoint's acknowledged position and what retention took from it.
pub struct Cursor {
    pub id: String,
    pub acked: Pos,
    /// Set when a retention bound deleted data past `acked`; the reader restarts from `acked`.
    pub moved: bool,
    pub lost: Arc<AtomicU64>,
    /// Whether this endpoint's unsent data is only in the WAL (it is reading back from it).
    pub replaying: bool,
    /// Where its read-back started: data before it was handed out already (in flight).
    pub replay_from: Pos,
}

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
    cursors: Vec<Cursor>,
    cursors_dirty: bool,
    cursors_saved: Instant,
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
            cursors: Vec::new(),
            cursors_dirty: false,
            cursors_saved: Instant::now(),
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
        let count = self.samples.len() + self.hists.len() + self.exemplars.len();
        let r = match self.staged_err.take() {
            Some(e) => Err(e),
            None if count == 0 => return Ok(self.head()),
            None => self.write_staged(entries, metadata, cache),
        };
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

    fn write_staged(
        &mut self,
        entries: &[u8],
        metadata: &[u8],
        cache: &mut SeriesCache,
    ) -> io::Result<Pos> {
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
        let Some(w) = &mut self.writer else {
            return Err(io::Error::other("no open segment"));
        };
        let before = w.offset();
        let started = Instant::now();
        let written = w.append(&records[..n], self.opts.compression, &mut self.ends);
        self.stats
            .write_duration
            .observe(&WAL_BUCKETS, started.elapsed());
        written?;
        self.stats.records.fetch_add(n as u64, Relaxed);
        self.stats.bytes.fetch_add(w.offset() - before, Relaxed);
        self.unsynced = true;
        if self.last_sync.elapsed() >= self.opts.fsync_interval {
            self.sync();
        }
        self.update_size();
        Ok(self.head())
    }

    /// Writes the partial last block to the segment (readers call this before they read up
    /// to the head), and syncs when the interval has passed.
    pub fn flush(&mut self) {
        if let Some(w) = &mut self.writer {
            let started = Instant::now();
            let flushed = w.flush_tail();
            self.stats
                .write_duration
                .observe(&WAL_BUCKETS, started.elapsed());
            if let Err(e) = flushed {
                self.write_failed(&e);
                return;
            }
        }
        self.tick();
    }

    /// Syncs when `fsync_interval` has passed since the last sync (the core's timer).
    pub fn tick(&mut self) {
        if self.last_sync.elapsed() >= self.opts.fsync_interval {
            self.sync();
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
    fn synced(&self, index: u32, result: io::Result<()>, started: Instant) {
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
                let started = Instant::now();
                let synced = w.sync();
                self.synced(w.index(), synced, started);
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

    // ---- cursors ----

    /// Registers an endpoint; returns its slot. Its position comes from the `cursors` file
    /// when it was there (clamped to what is still on disk), else the head: a new endpoint
    /// starts at the tail.
    pub fn add_endpoint(
        &mut self,
        id: &str,
        saved: &HashMap<String, Pos>,
        lost: Arc<AtomicU64>,
    ) -> usize {
        let head = self.head();
        let first = pos(self.first_segment(), 0);
        let acked = match saved.get(id) {
            Some(p) => (*p).clamp(first, head),
            None => head,
        };
        self.cursors.push(Cursor {
            id: id.to_string(),
            acked,
            moved: false,
            lost,
            replaying: acked < head,
            replay_from: acked,
        });
        self.cursors_dirty = true;
        // Saved at once: after a crash, this endpoint resumes here rather than counting as
        // new (and starting at the tail).
        self.save_cursors();
        self.cursors.len() - 1
    }

    pub fn cursor(&self, slot: usize) -> &Cursor {
        &self.cursors[slot]
    }

    pub fn cursor_mut(&mut self, slot: usize) -> &mut Cursor {
        &mut self.cursors[slot]
    }

    /// Records that an endpoint's receiver acknowledged everything up to `p`.
    pub fn ack(&mut self, slot: usize, p: Pos) {
        let c = &mut self.cursors[slot];
        if p > c.acked {
            c.acked = p;
            self.cursors_dirty = true;
        }
        if self.cursors_saved.elapsed() >= Duration::from_secs(1) {
            self.save_cursors();
            self.truncate();
        }
    }

    /// Writes the `cursors` file (atomically: a temporary file renamed over it).
    pub fn save_cursors(&mut self) {
        self.cursors_saved = Instant::now();
        if !self.cursors_dirty {
            return;
        }
        let mut text = String::new();
        for c in &self.cursors {
            text.push_str(&format!("{} {}\n", c.id, c.acked));
        }
        let tmp = self.dir.join("cursors.tmp");
        let result = std::fs::write(&tmp, text)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("cursors")));
        match result {
            Ok(()) => self.cursors_dirty = false,
            Err(e) => crate::log!(
                Level::Warn,
                "wal",
                "could not save remote-write cursors; retrying",
                dir = self.dir.display(),
                err = e
            ),
        }
    }

    /// Deletes segments every endpoint has passed (the open one stays). With no endpoint,
    /// nothing holds the closed segments.
    pub fn truncate(&mut self) {
        let min = self
            .cursors
            .iter()
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

    fn delete_oldest(&mut self) {
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
    fn enforce_size(&mut self) {
        let open = self.writer.as_ref().map_or(0, |w| on_disk(w.offset()));
        let mut total: u64 = self.closed.iter().map(|c| c.1).sum::<u64>() + open;
        while total > self.opts.max_size && !self.closed.is_empty() {
            total -= self.closed[0].1;
            self.force_out_oldest("size bound (--storage.agent.retention.max-size)");
        }
    }

    /// Applies `max_age`: deletes closed segments last written longer ago than that.
    fn enforce_age(&mut self) {
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
    fn force_out_oldest(&mut self, bound: &str) {
        let Some(&(idx, _, _)) = self.closed.first() else {
            return;
        };
        let next = pos(idx + 1, 0);
        for c in &mut self.cursors {
            if c.acked >= next {
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

    /// Closes the WAL at shutdown: syncs and saves the cursors.
    pub fn close(&mut self) {
        self.flush();
        self.sync();
        self.save_cursors();
    }
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

/// Reads the `cursors` file of a core's WAL directory (missing: none).
pub fn load_cursors(dir: &Path) -> HashMap<String, Pos> {
    let Ok(text) = std::fs::read_to_string(dir.join("cursors")) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, p) = l.rsplit_once(' ')?;
            Some((id.to_string(), p.parse().ok()?))
        })
        .collect()
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

/// Which entries beyond samples an endpoint takes (`send_native_histograms`, `send_exemplars`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Accept {
    pub histograms: bool,
    pub exemplars: bool,
}

/// Reads an endpoint's backlog back from the WAL as remote-write entries, record by record,
/// from its cursor up to the head.
pub struct WalReader {
    dir: PathBuf,
    reader: Option<SegmentReader>,
    /// Labels sections of the current segment's series, by ref.
    series: HashMap<u32, Vec<u8>>,
    /// The current segment's series values, for values stored as changes.
    values: record::Values,
    /// The segment reader's damage count when the last record was read.
    damage_seen: u64,
    /// Records ending at or before this offset of the first segment read were sent already:
    /// only their series declarations are needed.
    skip_until: u64,
    /// End of the last record consumed: everything before it has been handed out.
    pub position: Pos,
    pub damaged_bytes: u64,
    pub missing_series: u64,
    /// Samples stored as a change from a value lost to damage.
    pub lost_values: u64,
}

impl WalReader {
    pub fn new(dir: &Path, from: Pos) -> WalReader {
        WalReader {
            dir: dir.to_path_buf(),
            reader: None,
            series: HashMap::new(),
            values: record::Values::default(),
            damage_seen: 0,
            skip_until: 0,
            position: from,
            damaged_bytes: 0,
            missing_series: 0,
            lost_values: 0,
        }
    }

    /// Appends the next record's samples to `out` as entries (`ends`, `kinds` as the appender
    /// fills them; native histograms and exemplars only as `accept` says). Returns the record's
    /// end position and newest timestamp, or `None` once `head` is reached.
    pub fn next_record(
        &mut self,
        head: Pos,
        first_segment: u32,
        accept: Accept,
        out: &mut Vec<u8>,
        ends: &mut Vec<u32>,
        kinds: &mut Vec<u8>,
    ) -> io::Result<Option<(Pos, i64)>> {
        use crate::entry::{
            KIND_EXEMPLAR, KIND_HISTOGRAM, KIND_SAMPLE, encode_exemplar_raw, encode_histogram_raw,
            encode_series_raw,
        };
        loop {
            if self.position >= head {
                return Ok(None);
            }
            if pos_segment(self.position) < first_segment {
                self.position = pos(first_segment, 0);
                self.reader = None;
            }
            let seg = pos_segment(self.position);
            let limit = (seg == pos_segment(head)).then(|| pos_offset(head));
            match &mut self.reader {
                Some(r) if r.index() == seg => r.set_limit(limit)?,
                _ => {
                    self.reader = Some(SegmentReader::open(&self.dir, seg, 0, limit)?);
                    self.skip_until = pos_offset(self.position);
                    self.series.clear();
                    self.values.clear();
                    self.damage_seen = 0;
                }
            }
            let Some(r) = &mut self.reader else {
                unreachable!("opened above")
            };
            let Some(end) = r.advance()? else {
                self.damaged_bytes += std::mem::take(&mut r.damage.skipped_bytes);
                if seg < pos_segment(head) {
                    self.position = pos(seg + 1, 0);
                    self.reader = None;
                    continue;
                }
                return Ok(None);
            };
            let rec = r.current();
            if r.damage.skipped_bytes != self.damage_seen {
                // Records were lost before this one: values stored as changes from theirs
                // cannot be trusted until each series' value is stored whole again.
                self.damage_seen = r.damage.skipped_bytes;
                self.values.clear();
            }
            let Some((&kind, body)) = rec.split_first() else {
                continue;
            };
            let sent = pos_offset(end) <= self.skip_until;
            let mut newest = i64::MIN;
            let series = &mut self.series;
            let missing = &mut self.missing_series;
            let lost = &mut self.lost_values;
            let decoded = record::decode(kind, body, &mut self.values, |item| match item {
                record::Item::Series { r, labels } => {
                    series.insert(r, labels.to_vec());
                }
                _ if sent => {}
                record::Item::Unknown { .. } => *lost += 1,
                // Checked by decoding; remote write does not send metadata from the WAL.
                record::Item::Metadata { .. } => {}
                record::Item::Sample { r, ts, value } => match series.get(&r) {
                    Some(l) => {
                        encode_series_raw(out, l, value, ts);
                        ends.push(out.len() as u32);
                        kinds.push(KIND_SAMPLE);
                        newest = newest.max(ts);
                    }
                    None => *missing += 1,
                },
                record::Item::Histogram { r, body } | record::Item::Exemplar { r, body } => {
                    let histogram = matches!(kind, HISTOGRAMS);
                    if !(if histogram {
                        accept.histograms
                    } else {
                        accept.exemplars
                    }) {
                        return;
                    }
                    match series.get(&r) {
                        Some(l) if histogram => {
                            encode_histogram_raw(out, l, body);
                            ends.push(out.len() as u32);
                            kinds.push(KIND_HISTOGRAM);
                        }
                        Some(l) => {
                            encode_exemplar_raw(out, l, body);
                            ends.push(out.len() as u32);
                            kinds.push(KIND_EXEMPLAR);
                        }
                        None => *missing += 1,
                    }
                }
            });
            if let Err(e) = decoded {
                // A record whose frame checked out but whose body does not decode: skip it.
                self.damaged_bytes += body.len() as u64;
                self.values.clear();
                crate::log!(
                    Level::Warn,
                    "wal",
                    "skipped an undecodable WAL record",
                    dir = self.dir.display(),
                    err = e.0
                );
            }
            if !sent {
                self.position = end;
                return Ok(Some((end, newest)));
            }
        }
    }
}
