//! The entries an endpoint gets, when they differ from what was committed: only the kinds it
//! takes (native histograms and exemplars only where enabled), none older than
//! `sample_age_limit`, relabeled by its `write_relabel_configs`.

use super::Shard;
use crate::entry::{KIND_EXEMPLAR, KIND_HISTOGRAM, LabelScratch, Tally};
use crate::selfmetrics::Count;

/// Reused buffers for the rewritten entries.
#[derive(Default)]
pub(super) struct Rewrite {
    entries: Vec<u8>,
    ends: Vec<u32>,
    kinds: Vec<u8>,
    labels: LabelScratch,
    scratch: crate::relabel::Scratch,
}

impl Shard {
    /// The entries this endpoint gets, their ends and kinds. With nothing to do, the entries
    /// as given.
    pub(super) fn rewrite<'a>(
        &self,
        rw: &'a mut Rewrite,
        entries: &'a [u8],
        ends: &'a [u32],
        kinds: &'a [u8],
    ) -> (&'a [u8], &'a [u32], &'a [u8]) {
        let accept = self.ep.accept();
        let taken = |k: &u8| match *k {
            KIND_HISTOGRAM => accept.histograms,
            KIND_EXEMPLAR => accept.exemplars,
            _ => true,
        };
        let rules = &*self.ep.cfg.write_relabel_configs;
        let age_limit = self.ep.cfg.queue.sample_age_limit;
        // Remote Write 1.0 cannot carry native histograms with custom buckets: they are
        // dropped and counted, as Prometheus drops them.
        let v1 = !self.ep.sends_v2();
        if rules.is_empty()
            && age_limit.is_zero()
            && kinds.iter().all(taken)
            && !(v1 && kinds.contains(&KIND_HISTOGRAM))
        {
            return (entries, ends, kinds);
        }
        let cutoff = (!age_limit.is_zero())
            .then(|| crate::log::unix_millis() - age_limit.as_millis() as i64);
        rw.entries.clear();
        rw.ends.clear();
        rw.kinds.clear();
        let (mut start, mut dropped, mut old) = (0usize, Tally::default(), Tally::default());
        let mut nhcb = 0u64;
        for (end, kind) in ends.iter().zip(kinds) {
            let entry = &entries[start..*end as usize];
            start = *end as usize;
            if !taken(kind) {
                continue;
            }
            if v1 && *kind == KIND_HISTOGRAM && crate::entry::is_custom_buckets(entry) {
                nhcb += 1;
                continue;
            }
            if let Some(c) = cutoff
                && crate::entry::entry_timestamp(entry).is_some_and(|t| t < c)
            {
                old += Tally::one(*kind);
                continue;
            }
            if rules.is_empty() {
                rw.entries.extend_from_slice(entry);
            } else if !relabel_entry(
                entry,
                rules,
                &mut rw.labels,
                &mut rw.scratch,
                &mut rw.entries,
            ) {
                dropped += Tally::one(*kind);
                continue;
            }
            rw.ends.push(rw.entries.len() as u32);
            rw.kinds.push(*kind);
        }
        self.stats.add(Count::DroppedRelabel, dropped);
        if nhcb > 0 {
            self.stats
                .histograms_dropped_nhcb_v1
                .fetch_add(nhcb, std::sync::atomic::Ordering::Relaxed);
            if self.ep.should_log_drop() {
                crate::log!(
                    crate::log::Level::Warn,
                    "remote",
                    "dropped native histograms with custom buckets: Remote Write 1.0 does not support them (use protobuf_message: io.prometheus.write.v2.Request)",
                    remote_name = self.ep.cfg.name,
                    url = self.ep.url,
                    histograms = nhcb
                );
            }
        }
        self.stats.add(Count::DroppedTooOld, old);
        (&rw.entries, &rw.ends, &rw.kinds)
    }

    /// The entries of `body` no older than `sample_age_limit` and their count by kind, the
    /// others counted as dropped; `None` (nothing copied) when no entry is older.
    pub(super) fn drop_too_old(&self, body: &[u8]) -> Option<(Vec<u8>, Tally)> {
        use crate::entry::{entries, entry_kind, entry_timestamp};
        let limit = self.ep.cfg.queue.sample_age_limit;
        let cutoff = crate::log::unix_millis() - limit.as_millis() as i64;
        let too_old = |e: &[u8]| entry_timestamp(e).is_some_and(|t| t < cutoff);
        if !entries(body).any(too_old) {
            return None;
        }
        let mut kept = Vec::with_capacity(body.len());
        let (mut n, mut old) = (Tally::default(), Tally::default());
        for entry in entries(body) {
            if too_old(entry) {
                old += Tally::one(entry_kind(entry));
                continue;
            }
            kept.extend_from_slice(entry);
            n += Tally::one(entry_kind(entry));
        }
        self.stats.add(Count::DroppedTooOld, old);
        Some((kept, n))
    }
}

/// Applies `rules` to an entry's series labels (see [`crate::entry::series_key`] for the layout) and appends
/// the entry with the relabeled labels to `out`, sorted, its payload unchanged. Returns
/// whether the entry was kept: dropped by a rule, left without labels, or malformed, it is
/// not.
pub(crate) fn relabel_entry(
    entry: &[u8],
    rules: &crate::relabel::Rules,
    labels: &mut LabelScratch,
    scratch: &mut crate::relabel::Scratch,
    out: &mut Vec<u8>,
) -> bool {
    use crate::protowire::{len_delimited, varint};
    let mut p = 1;
    let Ok(len) = varint(entry, &mut p) else {
        return false;
    };
    if entry.first() != Some(&0x0a) || p + len as usize != entry.len() {
        return false;
    }
    labels.clear();
    while entry.get(p) == Some(&0x0a) {
        p += 1;
        let Ok((name, value)) = len_delimited(entry, &mut p)
            .and_then(|l| crate::entry::label_at(&entry[..l.end], l.start))
        else {
            return false;
        };
        labels.push(name, value);
    }
    let payload = &entry[p..];
    if !rules.process(labels, scratch) || labels.is_empty() || labels.sort().is_err() {
        return false;
    }
    let len = crate::entry::labels_len(labels) + payload.len();
    out.push(0x0a);
    crate::entry::put_varint(out, len as u64);
    crate::entry::put_labels(out, labels);
    out.extend_from_slice(payload);
    true
}
