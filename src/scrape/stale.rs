//! Staleness markers, as Prometheus writes them: for the series a scrape no longer has, for
//! every series of a failed scrape, and for a target removed by discovery or a reload. Each
//! target keeps its last good scrape's eligible entries, snappy-compressed.

use super::*;

/// Per-core scratch for staleness: reused across targets.
#[derive(Default)]
pub(super) struct StaleScratch {
    pub(super) raw: Vec<u8>,
    pub(super) compressed: Vec<u8>,
    pub(super) keys: std::collections::HashSet<[u64; 2]>,
    pub(super) eligible: Vec<u8>,
    pub(super) refs: crate::wal::SeriesCache,
}

/// Staleness markers for every series of a removed target, its report series included.
pub(super) async fn stale_on_removal(
    t: &Target,
    core: &CoreScrape,
    state: &mut TargetState,
    ts: i64,
) {
    let _commit = core.ctl.commit_lock().await;
    let finishing = {
        let mut app = core.appender.borrow_mut();
        let app = &mut *app;
        app.rollback();
        if let Some(last) = state.last.take() {
            app.stale_all(&last, ts);
        }
        let scraped = app.ends.len();
        for name in report_names(t) {
            report_labels(&mut app.labels, name, t, &core.external_labels.borrow());
            app.push(f64::from_bits(STALE_NAN), ts);
        }
        let mut wal = core.ctl.wal.borrow_mut();
        wal.begin(app.entries.len(), app.ends.len());
        app.add_stale(&mut wal, 0..scraped);
        wal.add(
            &app.entries,
            &app.ends,
            scraped..app.ends.len(),
            &mut state.reports,
        );
        wal.finish_start(&app.entries, &[], &mut state.series)
    };
    let committed = commit(core, finishing, &mut state.series).await;
    deliver(core, &mut core.appender.borrow_mut(), committed.ok(), ts);
}

impl Appender {
    /// Adds the staleness markers among the entries (`range`) to the commit. They take refs
    /// of their own: the markers are not part of any scrape's layout.
    pub(super) fn add_stale(&mut self, wal: &mut crate::wal::Wal, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        let refs = &mut self.stale.refs;
        *refs = crate::wal::SeriesCache::default();
        wal.add(&self.entries, &self.ends, range, refs);
    }

    /// Of the entries a failed scrape had appended before it failed, the series the target
    /// has not had before: Prometheus reports them as added although the scrape is dropped.
    pub(super) fn count_new_series(&self, state: &mut TargetState) -> usize {
        if self.ends.is_empty() {
            return 0;
        }
        let known: std::collections::HashSet<[u64; 2]> = state.series.keys().collect();
        let mut n = 0;
        let mut start = 0usize;
        for (end, kind) in self.ends.iter().zip(&self.kinds) {
            let entry = &self.entries[start..*end as usize];
            start = *end as usize;
            if *kind == KIND_EXEMPLAR {
                continue;
            }
            if let Ok((labels, _)) = crate::entry::split_entry(entry) {
                let key = entry_key(labels);
                if !known.contains(&key) && state.failed_seen.insert(key) {
                    n += 1;
                }
            }
        }
        n
    }

    /// After a successful scrape whose series changed (and after the WAL add that keyed them
    /// into `state.series`): staleness markers for the series of the last scrape that are
    /// gone, then this scrape's entries become the ones to compare
    /// with next time.
    pub(super) fn stale_vanished(&mut self, state: &mut TargetState, ts: i64) {
        let sc = &mut self.stale;
        let scraped = self.ends.len();
        // This scrape's series, as the WAL's add just keyed them into the target's cache.
        sc.keys.clear();
        sc.keys.extend(state.series.keys());
        if let Some(last) = state.last.take() {
            self.push_stale(&last, ts, true);
        }
        let sc = &mut self.stale;
        // The entries that can go stale: samples and histograms without their own timestamp.
        sc.eligible.clear();
        let mut start = 0usize;
        let mut skip = self.timestamped.iter().peekable();
        for (i, end) in self.ends[..scraped].iter().enumerate() {
            let entry = &self.entries[start..*end as usize];
            start = *end as usize;
            if skip.peek().is_some_and(|s| **s as usize == i) {
                skip.next();
                continue;
            }
            if self.kinds[i] != KIND_EXEMPLAR {
                sc.eligible.extend_from_slice(entry);
            }
        }
        // Compressed into the core's scratch, then copied at its exact size: the target keeps
        // only what the compressed copy needs (snappy's own output keeps its worst-case size).
        let out = &mut sc.compressed;
        out.resize(snap::raw::max_compress_len(sc.eligible.len()), 0);
        let n = snap::raw::Encoder::new()
            .compress(&sc.eligible, out)
            .unwrap_or(0);
        state.last = Some(out[..n].to_vec());
    }

    /// Staleness markers for every entry of `last` (a failed scrape).
    pub(super) fn stale_all(&mut self, last: &[u8], ts: i64) {
        self.push_stale(last, ts, false);
    }

    /// Appends a staleness marker for each series of `last` (compressed entries); with
    /// `vanished_only`, for those not among this scrape's keys (`stale.keys`).
    pub(super) fn push_stale(&mut self, last: &[u8], ts: i64, vanished_only: bool) {
        let sc = &mut self.stale;
        if !decompress_into(last, &mut sc.raw) {
            return;
        }
        let mut rest = &sc.raw[..];
        while let Some((entry, after)) = next_entry(rest) {
            rest = after;
            if let Ok((labels, _)) = crate::entry::split_entry(entry)
                && !(vanished_only && sc.keys.contains(&entry_key(labels)))
            {
                crate::entry::encode_series_raw(
                    &mut self.entries,
                    labels,
                    f64::from_bits(STALE_NAN),
                    ts,
                );
                self.ends.push(self.entries.len() as u32);
                self.kinds.push(KIND_SAMPLE);
            }
        }
    }
}

pub(super) fn entry_key(labels: &[u8]) -> [u64; 2] {
    let h = xxhash_rust::xxh3::xxh3_128(labels);
    [h as u64, (h >> 64) as u64]
}

pub(super) fn decompress_into(compressed: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(len) = snap::raw::decompress_len(compressed) else {
        return false;
    };
    out.clear();
    out.resize(len, 0);
    snap::raw::Decoder::new()
        .decompress(compressed, out)
        .is_ok()
}

/// The first `WriteRequest.timeseries` entry of `buf` (tag, length, body) and the rest.
pub(super) fn next_entry(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    if buf.first() != Some(&0x0a) {
        return None;
    }
    let mut pos = 1;
    let len = crate::protowire::varint(buf, &mut pos).ok()?;
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    (end <= buf.len()).then(|| (&buf[..end], &buf[end..]))
}
