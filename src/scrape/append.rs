//! The appender: a scrape's samples as remote-write entries, with the target's labels merged
//! (`honor_labels`), `metric_relabel_configs` applied (memoized per position), Prometheus'
//! limits checked, external labels added, exemplars and native histograms as entries of their
//! own, family metadata and created timestamps collected. Reused across a core's scrapes, so
//! steady state does not allocate.

use super::*;
use crate::entry::{HistogramError, encode_histogram_message};

/// Per-core scratch for building a scrape's samples: reused across every scrape on the core,
/// so steady state does not allocate.
#[derive(Default)]
pub struct Appender {
    /// Encoded `WriteRequest.timeseries` entries of the scrape in progress.
    pub(super) entries: Vec<u8>,
    /// End offset of each entry in `entries`.
    pub(super) ends: Vec<u32>,
    pub(super) labels: LabelScratch,
    pub(super) parse_scratch: Vec<LabelRef>,
    /// Each entry's kind (`encode::KIND_*`): endpoints may not take histograms or exemplars.
    pub(super) kinds: Vec<u8>,
    pub(super) histogram_scratch: crate::entry::HistogramScratch,
    pub(super) exemplar_labels: LabelScratch,
    /// Whether exemplars become entries: some endpoint has `send_exemplars`.
    pub exemplars: bool,
    pub(super) family_meta: Vec<exposition::FamilyMeta>,
    /// The scrape's metric family metadata, as WAL metadata items (see `wal::record`).
    pub(super) metadata: Vec<u8>,
    pub(super) help: Vec<u8>,
    pub(super) relabel: crate::relabel::Scratch,
    /// Entries (by index) that carried their own timestamp: no staleness markers for them
    /// unless the job tracks it.
    pub(super) timestamped: Vec<u32>,
    pub(super) stale: StaleScratch,
    /// Created timestamps the scrape carried (protobuf `created_timestamp`), by the key
    /// `remote::metadata::created_key` gives their series: (key, milliseconds).
    pub(super) created: Vec<(u64, i64)>,
    /// The classic histogram being converted to a native one (`convert_classic_histograms_to_nhcb`),
    /// the labels of the sample being looked at, and the converted message.
    pub(super) nhcb: super::nhcb::Collector,
    pub(super) nhcb_probe: LabelScratch,
    pub(super) nhcb_message: Vec<u8>,
    /// Label values [`write_direct`] rewrites (`le`, `quantile` in canonical form).
    pub(super) direct_values: Vec<u8>,
}

/// What the label pipeline needs beyond the labels: the job, the external labels, the
/// metric relabeling memo and the running counts, shared by scraped series and converted
/// histograms.
struct Pipeline<'a> {
    t: &'a Target,
    external_labels: &'a [(String, String)],
    memo: &'a mut crate::relabel::Memo,
    counts: Appended,
    /// Series the sample limit counted: those written, and the one past it.
    admitted: u64,
    limit_error: Option<String>,
    /// A native histogram had more buckets than the job's limit allows.
    bucket_limit_hit: bool,
}

impl Pipeline<'_> {
    /// Runs a series' labels (`labels`, as scraped) through the target's labels, metric
    /// relabeling (memoized at `position`, `key` its fingerprint), the name and label checks
    /// and the external labels, sorted. `Ok(true)`: counted as kept, its entry goes on to the
    /// sample limit ([`Self::admit`]); `Ok(false)`: dropped.
    #[allow(clippy::too_many_arguments)]
    fn labels(
        &mut self,
        labels: &mut LabelScratch,
        relabel: &mut crate::relabel::Scratch,
        position: usize,
        key: u64,
        exposed_empty: impl Fn(&[u8]) -> bool + Copy,
    ) -> Result<bool, String> {
        let t = self.t;
        if t.metric_relabel.is_empty() {
            merge_target_labels(labels, t, exposed_empty);
        } else {
            let kept = self.memo.process(
                &t.metric_relabel,
                position,
                key,
                labels,
                |l| merge_target_labels(l, t, exposed_empty),
                relabel,
            );
            if !kept {
                return Ok(false);
            }
            if labels.get(b"__name__").is_none() {
                return Err("missing metric name (__name__ label)".into());
            }
        }
        if t.names == crate::names::Validation::Legacy && !legacy_names(labels) {
            // As Prometheus checks a series under `metric_name_validation_scheme: legacy`.
            return Err(format!(
                "invalid metric name or label names: {}",
                show_labels(labels)
            ));
        }
        if let Some(e) = check_label_limits(labels, &t.limits) {
            return Err(e);
        }
        for (k, v) in self.external_labels {
            if labels.get(k.as_bytes()).is_none() {
                labels.push(k.as_bytes(), v.as_bytes());
            }
        }
        if let Err(dup) = labels.sort() {
            return Err(format!(
                "label name {:?} is not unique in a sample",
                String::from_utf8_lossy(&dup)
            ));
        }
        self.counts.kept += 1;
        Ok(true)
    }

    /// Counts a series [`Self::labels`] passed against the sample limit: whether to write it.
    /// Past the limit, series are still counted (so the report shows the real numbers) and
    /// histograms still checked against the bucket limit, as Prometheus does. A native
    /// histogram over the bucket limit is not counted here (Prometheus checks that limit
    /// first); a scrape past both fails with the sample limit.
    fn admit(&mut self) -> bool {
        self.admitted += 1;
        let limit = self.t.limits.sample_limit;
        if limit > 0 && self.admitted > limit {
            self.limit_error = Some("sample limit exceeded".into());
            return false;
        }
        true
    }

    /// Why the scrape failed, if a limit failed it: the sample limit before the bucket limit.
    fn limit_failure(&self) -> Option<String> {
        match &self.limit_error {
            Some(e) => Some(e.clone()),
            None if self.bucket_limit_hit => Some(HistogramError::BucketLimit.to_string()),
            None => None,
        }
    }

    /// The limits the scrape went past so far.
    fn exceeded(&self) -> Exceeded {
        Exceeded {
            sample_limit: self.limit_error.is_some(),
            bucket_limit: self.bucket_limit_hit,
        }
    }
}

/// What one scrape appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Appended {
    /// Samples exposed (`scrape_samples_scraped`).
    pub scraped: usize,
    /// Samples left after metric relabeling (`scrape_samples_post_metric_relabeling`).
    pub kept: usize,
}

/// A scrape that failed after its body was read: the counts so far, for the report series.
#[derive(Debug)]
pub struct AppendError {
    pub message: String,
    pub counts: Appended,
    /// The limits the scrape went past (`prometheus_target_scrapes_exceeded_*_total`).
    pub exceeded: Exceeded,
}

/// Which of a scrape's limits it went past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exceeded {
    pub sample_limit: bool,
    pub bucket_limit: bool,
}

impl Appender {
    /// An appender that makes exemplars into entries when `exemplars`.
    pub fn with_exemplars(exemplars: bool) -> Appender {
        Appender {
            exemplars,
            ..Default::default()
        }
    }

    /// Parses a scrape body and encodes each sample, with the target's and the external labels
    /// attached, as a remote-write entry. Returns the number of samples; on error the caller
    /// rolls back.
    pub fn append_body(
        &mut self,
        t: &Target,
        external_labels: &[(String, String)],
        body: &[u8],
        format: exposition::Format,
        scrape_ts: i64,
        memo: &mut crate::relabel::Memo,
    ) -> Result<Appended, AppendError> {
        let mut p = Pipeline {
            t,
            external_labels,
            memo,
            counts: Appended::default(),
            admitted: 0,
            limit_error: None,
            bucket_limit_hit: false,
        };
        let fail = |message: String, p: &Pipeline<'_>| AppendError {
            message,
            counts: p.counts,
            exceeded: p.exceeded(),
        };
        // The parser's buffers leave the appender while it runs (and come back after), so the
        // appender's own methods can write entries meanwhile.
        let (mut scratch, mut family_meta) = (
            std::mem::take(&mut self.parse_scratch),
            std::mem::take(&mut self.family_meta),
        );
        let result = self.append_parsed(
            &mut p,
            Parser::with_histograms(
                body,
                format,
                &mut scratch,
                t.native_histograms,
                t.classic_histograms,
            )
            .with_metadata(&mut family_meta),
            body,
            scrape_ts,
        );
        self.parse_scratch = scratch;
        self.family_meta = family_meta;
        result.map_err(|e| fail(e, &p))?;
        if self.nhcb.key().is_some() {
            let written = self.write_nhcb(&mut p, scrape_ts);
            written.map_err(|e| fail(e, &p))?;
        }
        self.encode_metadata(body, format);
        p.memo.trim(p.counts.scraped);
        match p.limit_failure() {
            Some(message) => Err(fail(message, &p)),
            None => Ok(p.counts),
        }
    }

    /// Appends every sample `parser` yields (see [`Self::append_body`]).
    fn append_parsed(
        &mut self,
        p: &mut Pipeline<'_>,
        mut parser: Parser<'_, '_>,
        body: &[u8],
        scrape_ts: i64,
    ) -> Result<(), String> {
        let t = p.t;
        let fail = |message: String, _counts: Appended| message;
        // Where nothing but the target's and the external labels join a series' labels, a
        // sample's entry can be written straight from the scraped bytes.
        let mut fixed_store = [NO_LABEL; FIXED_MAX];
        let fixed = if direct_eligible(t) {
            fixed_labels(t, p.external_labels, &mut fixed_store).map(|n| &fixed_store[..n])
        } else {
            None
        };
        while let Some(sample) = parser.next() {
            let s = sample.map_err(|e| fail(e.to_string(), p.counts))?;
            if t.convert_nhcb {
                // A classic histogram's series go into its native histogram; the one before
                // is written once another series starts.
                let part = match (s.histogram_family, &s.native) {
                    (Some(family), None) => {
                        let probe = &mut self.nhcb_probe;
                        scraped_labels(probe, &s, body);
                        let name = probe.get(b"__name__").unwrap_or_default();
                        super::nhcb::Part::of(name, family).map(|part| (part, family))
                    }
                    _ => None,
                };
                let key = part
                    .map(|(_, family)| super::nhcb::Collector::key_of(&self.nhcb_probe, family));
                if self.nhcb.key().is_some() && self.nhcb.key() != key {
                    self.write_nhcb(p, scrape_ts)?;
                }
                if let (Some((part, family)), Some(key)) = (part, key) {
                    let le = self
                        .nhcb_probe
                        .get(b"le")
                        .and_then(crate::exposition::parse_float);
                    let probe = std::mem::take(&mut self.nhcb_probe);
                    self.nhcb
                        .add(key, &probe, family, (part, le), s.value, s.timestamp_ms);
                    self.nhcb_probe = probe;
                    if !t.classic_histograms {
                        continue;
                    }
                }
            }
            p.counts.scraped += 1;
            let (ts, explicit) = match s.timestamp_ms {
                Some(ts) if t.honor_timestamps => (ts, true),
                _ => (scrape_ts, false),
            };
            if let Some(fixed) = fixed
                && s.native.is_none()
                && s.created_ms.is_none()
                && !(self.exemplars && s.exemplar.is_some())
            {
                let start = self.entries.len();
                if write_direct(
                    &mut self.entries,
                    &mut self.direct_values,
                    &s,
                    body,
                    fixed,
                    ts,
                ) {
                    p.counts.kept += 1;
                    if !p.admit() {
                        self.entries.truncate(start);
                        continue;
                    }
                    if explicit && !t.track_timestamps_staleness {
                        self.timestamped.push(self.ends.len() as u32);
                    }
                    self.kinds.push(KIND_SAMPLE);
                    self.ends.push(self.entries.len() as u32);
                    continue;
                }
            }
            let labels = &mut self.labels;
            scraped_labels(labels, &s, body);
            let exposed_empty = |name: &[u8]| exposes_empty(&s, body, name);
            // The memo's key, only where there is metric relabeling to remember.
            let mut key = if t.metric_relabel.is_empty() {
                0
            } else {
                labels.fingerprint()
            };
            if t.honor_labels && !t.metric_relabel.is_empty() {
                // Labels exposed empty change what the target's labels add: part of the key.
                for l in s.labels.iter().filter(|l| l.value.0 == l.value.1) {
                    key = (key ^ xxhash_rust::xxh3::xxh3_64(l.name(body)))
                        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        .rotate_left(31);
                }
            }
            let position = p.counts.scraped - 1;
            let write = p
                .labels(labels, &mut self.relabel, position, key, exposed_empty)
                .map_err(|e| fail(e, p.counts))?;
            if !write {
                continue;
            }
            let counts = p.counts;
            let entry = self.ends.len() as u32;
            match &s.native {
                Some((range, gauge)) => {
                    let hint = if *gauge {
                        crate::entry::RESET_HINT_GAUGE
                    } else {
                        0
                    };
                    let client = &body[range.clone()];
                    match self
                        .histogram_scratch
                        .transcode(client, ts, hint, t.histogram_limits)
                    {
                        Ok(h) if p.admit() => {
                            encode_histogram_message(&mut self.entries, &self.labels, h);
                        }
                        Ok(_) => continue,
                        Err(HistogramError::BucketLimit) => {
                            // Not written; the scrape fails once it is read to the end.
                            p.bucket_limit_hit = true;
                            continue;
                        }
                        Err(e) => return Err(fail(e.to_string(), counts)),
                    }
                    self.kinds.push(KIND_HISTOGRAM);
                }
                None => {
                    if !p.admit() {
                        continue;
                    }
                    encode_series(&mut self.entries, &self.labels, s.value, ts);
                    self.kinds.push(KIND_SAMPLE);
                    if let Some(ms) = s.created_ms {
                        note_created(&self.labels, ms, &mut self.created);
                    }
                }
            }
            if explicit && !t.track_timestamps_staleness {
                self.timestamped.push(entry);
            }
            self.ends.push(self.entries.len() as u32);
            if self.exemplars
                && let Some(ex) = &s.exemplar
            {
                // As Prometheus appends it: an exemplar without a timestamp takes its sample's.
                let el = &mut self.exemplar_labels;
                el.clear();
                for l in ex.labels {
                    if l.escaped || l.name_escaped {
                        el.push_parts(
                            |out| unescape_label_value(l.name(body), out),
                            |out| unescape_label_value(l.value(body), out),
                        );
                    } else {
                        el.push(l.name(body), l.value(body));
                    }
                }
                if let Err(dup) = el.sort() {
                    return Err(fail(
                        format!(
                            "label name {:?} is not unique in an exemplar",
                            String::from_utf8_lossy(&dup)
                        ),
                        counts,
                    ));
                }
                encode_exemplar_series(
                    &mut self.entries,
                    &self.labels,
                    el,
                    ex.value,
                    ex.timestamp_ms.unwrap_or(ts),
                );
                self.kinds.push(KIND_EXEMPLAR);
                self.ends.push(self.entries.len() as u32);
            }
        }
        Ok(())
    }

    /// Writes the classic histogram collected so far as a native histogram with custom
    /// buckets, through the same label pipeline as a scraped series (counted as one scraped
    /// sample, as Prometheus counts it). One that cannot be converted is dropped.
    fn write_nhcb(&mut self, p: &mut Pipeline<'_>, scrape_ts: i64) -> Result<(), String> {
        let t = p.t;
        let ts = match self.nhcb.timestamp_ms {
            Some(ts) if t.honor_timestamps => ts,
            _ => scrape_ts,
        };
        let explicit = self.nhcb.timestamp_ms.is_some() && t.honor_timestamps;
        let Some(buckets) = self.nhcb.finish(ts, &mut self.nhcb_message) else {
            return Ok(());
        };
        p.counts.scraped += 1;
        self.labels.copy_from(&self.nhcb.labels);
        let key = self.labels.fingerprint() ^ 0x6e68_6362; // not a classic series' key
        let position = p.counts.scraped - 1;
        if !p.labels(&mut self.labels, &mut self.relabel, position, key, |_| {
            false
        })? {
            return Ok(());
        }
        // Custom buckets cannot be merged: more than the bucket limit fails the scrape.
        let limit = t.histogram_limits.bucket_limit;
        if limit > 0 && buckets > limit {
            p.bucket_limit_hit = true;
            return Ok(());
        }
        if !p.admit() {
            return Ok(());
        }
        if explicit && !t.track_timestamps_staleness {
            self.timestamped.push(self.ends.len() as u32);
        }
        encode_histogram_message(&mut self.entries, &self.labels, &self.nhcb_message);
        self.kinds.push(KIND_HISTOGRAM);
        self.ends.push(self.entries.len() as u32);
        Ok(())
    }

    /// Encodes the families the parser reported (TYPE, HELP unescaped, UNIT) for the WAL.
    fn encode_metadata(&mut self, body: &[u8], format: exposition::Format) {
        self.metadata.clear();
        for m in &self.family_meta {
            self.help.clear();
            if let Some(h) = m.help.clone() {
                exposition::unescape_help(&body[h], format, &mut self.help);
            }
            crate::wal::record::put_metadata(
                &mut self.metadata,
                m.mtype.unwrap_or(exposition::MetricType::Unknown),
                &body[m.name.clone()],
                m.unit.clone().map_or(&[][..], |u| &body[u]),
                &self.help,
            );
        }
    }

    /// The scrape's family metadata, encoded for the WAL.
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The encoded entries of the scrape in progress: a valid `WriteRequest` body.
    pub fn entries(&self) -> &[u8] {
        &self.entries
    }

    /// Where each entry of [`Self::entries`] ends.
    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// Each entry's kind (`encode::KIND_*`).
    pub fn kinds(&self) -> &[u8] {
        &self.kinds
    }

    pub fn rollback(&mut self) {
        self.created.clear();
        self.metadata.clear();
        self.entries.clear();
        self.ends.clear();
        self.kinds.clear();
        self.timestamped.clear();
    }

    pub(super) fn push(&mut self, value: f64, ts: i64) {
        encode_series(&mut self.entries, &self.labels, value, ts);
        self.ends.push(self.entries.len() as u32);
        self.kinds.push(KIND_SAMPLE);
    }
}

/// Whether `t`'s series take nothing but its own and the external labels: no metric
/// relabeling, no `honor_labels`, no label limits, UTF-8 names (see [`write_direct`]).
fn direct_eligible(t: &Target) -> bool {
    let l = &t.limits;
    t.metric_relabel.is_empty()
        && !t.honor_labels
        && t.names == crate::names::Validation::Utf8
        && l.label_limit == 0
        && l.label_name_length_limit == 0
        && l.label_value_length_limit == 0
}

const NO_LABEL: (&[u8], &[u8]) = (&[], &[]);

/// The most target and external labels the direct path merges in.
const FIXED_MAX: usize = 24;

/// The labels every series of `t` gets, in `out` (no allocation): its own, and the external
/// labels it does not have, sorted by name (empty values left out, as an empty label is an
/// absent one). How many; `None` when there are more than [`FIXED_MAX`].
fn fixed_labels<'a>(
    t: &'a Target,
    external: &'a [(String, String)],
    out: &mut [(&'a [u8], &'a [u8]); FIXED_MAX],
) -> Option<usize> {
    let own = t.labels.iter().map(|(k, v)| (k, v));
    let more = external
        .iter()
        .filter(|(k, _)| !t.labels.iter().any(|(tk, _)| tk == k))
        .map(|(k, v)| (k, v));
    let mut n = 0;
    for (k, v) in own.chain(more).filter(|(_, v)| !v.is_empty()) {
        *out.get_mut(n)? = (k.as_bytes(), v.as_bytes());
        n += 1;
    }
    out[..n].sort_unstable_by(|a, b| a.0.cmp(b.0));
    Some(n)
}

/// The most labels a series may have for [`write_direct`]; more take the full pipeline.
const DIRECT_MAX: usize = 40;

/// Writes a float sample's entry straight from the scraped bytes when `fixed` (the target's
/// and external labels, sorted) are all its labels take: no label is escaped, none shares a
/// name with a fixed one, the name has no suffix. The same bytes as the full pipeline writes
/// (tested), without copying the labels into a scratch, merging them one by one or sorting
/// them all. `false`: nothing was written, the sample needs the full pipeline.
fn write_direct(
    entries: &mut Vec<u8>,
    values: &mut Vec<u8>,
    s: &exposition::Sample<'_, '_>,
    body: &[u8],
    fixed: &[(&[u8], &[u8])],
    ts: i64,
) -> bool {
    const NONE: (&[u8], &[u8]) = NO_LABEL;
    if s.name_escaped
        || s.name.is_empty()
        || !s.name_suffix.is_empty()
        || s.extra_label.is_some()
        || s.labels.len() + 1 + fixed.len() > DIRECT_MAX
    {
        return false;
    }
    // Canonical `le` and `quantile` values first, so the pairs below can borrow them.
    values.clear();
    let mut ends = [0u32; DIRECT_MAX];
    for (i, l) in s.labels.iter().enumerate() {
        if l.escaped || l.name_escaped {
            return false;
        }
        if l.float_value {
            normalize_float_label(l.value(body), values);
            ends[i] = values.len() as u32;
        }
    }
    let mut scraped = [NONE; DIRECT_MAX];
    scraped[0] = (b"__name__", s.name);
    let (mut n, mut at) = (1, 0usize);
    for (i, l) in s.labels.iter().enumerate() {
        let value = if l.float_value {
            let v = &values[at..ends[i] as usize];
            at = ends[i] as usize;
            v
        } else {
            l.value(body)
        };
        if !value.is_empty() {
            scraped[n] = (l.name(body), value);
            n += 1;
        }
    }
    let scraped = &mut scraped[..n];
    if !scraped.windows(2).all(|w| name_cmp(w[0].0, w[1].0).is_lt()) {
        scraped.sort_unstable_by(|a, b| name_cmp(a.0, b.0));
        if scraped.windows(2).any(|w| w[0].0 == w[1].0) {
            return false; // a duplicate name: the full pipeline says which
        }
    }
    // Merge the two sorted lists; a name in both takes the full pipeline (`exported_`).
    let mut all = [NONE; DIRECT_MAX];
    let (mut i, mut j, mut m) = (0, 0, 0);
    while i < scraped.len() || j < fixed.len() {
        let take_scraped = match (scraped.get(i), fixed.get(j)) {
            (Some(a), Some(b)) => match name_cmp(a.0, b.0) {
                std::cmp::Ordering::Equal => return false,
                o => o.is_lt(),
            },
            (Some(_), None) => true,
            _ => false,
        };
        if take_scraped {
            all[m] = scraped[i];
            i += 1;
        } else {
            all[m] = fixed[j];
            j += 1;
        }
        m += 1;
    }
    crate::entry::encode_series_pairs(entries, &all[..m], s.value, ts);
    true
}

/// Orders label names as bytes: by the first byte where that differs (most names), with no
/// call to compare the rest.
#[inline]
fn name_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Keeps the created timestamp of the series `labels` (sorted, final) for Remote Write 2.0.
pub(super) fn note_created(labels: &LabelScratch, ms: i64, created: &mut Vec<(u64, i64)>) {
    use crate::remote::metadata::{created_family, created_fold, created_key};
    let (mut folded, mut name, mut quantile) = (0u64, &b""[..], false);
    for i in 0..labels.len() {
        let (n, v) = (labels.name(i), labels.value(i));
        if n == b"__name__" {
            name = v;
        }
        quantile |= n == b"quantile";
        folded = created_fold(folded, n, v);
    }
    if let Some(family) = created_family(name, quantile) {
        created.push((created_key(family, folded), ms));
    }
}

/// Prometheus' label limits, on a sample's labels after relabeling (before external labels).
pub(super) fn check_label_limits(
    labels: &LabelScratch,
    limits: &crate::config::ScrapeLimits,
) -> Option<String> {
    if limits.label_limit == 0
        && limits.label_name_length_limit == 0
        && limits.label_value_length_limit == 0
    {
        return None;
    }
    // Go's `%.50s`: at most 50 characters. Only formatted for an error.
    let short = |b: &[u8]| -> String { String::from_utf8_lossy(b).chars().take(50).collect() };
    let metric = || short(labels.get(b"__name__").unwrap_or_default());
    if limits.label_limit > 0 && labels.len() as u64 > limits.label_limit {
        return Some(format!(
            "label_limit exceeded (metric: {}, number of labels: {}, limit: {})",
            metric(),
            labels.len(),
            limits.label_limit
        ));
    }
    // Lengths in bytes, as Go's `len` counts them.
    for i in 0..labels.len() {
        let (name, value) = (labels.name(i), labels.value(i));
        let name_len = name.len() as u64;
        if limits.label_name_length_limit > 0 && name_len > limits.label_name_length_limit {
            return Some(format!(
                "label_name_length_limit exceeded (metric: {}, label name: {}, length: {name_len}, limit: {})",
                metric(),
                short(name),
                limits.label_name_length_limit
            ));
        }
        let value_len = value.len() as u64;
        if limits.label_value_length_limit > 0 && value_len > limits.label_value_length_limit {
            return Some(format!(
                "label_value_length_limit exceeded (metric: {}, label name: {}, value: {:?}, length: {value_len}, limit: {})",
                metric(),
                short(name),
                short(value),
                limits.label_value_length_limit
            ));
        }
    }
    None
}

/// Whether every name of a series is a legacy one (the metric name's charset includes `:`).
fn legacy_names(labels: &LabelScratch) -> bool {
    (0..labels.len()).all(|i| {
        let name = labels.name(i);
        if name == b"__name__" {
            crate::names::is_legacy_metric_name(labels.value(i))
        } else {
            crate::names::is_legacy_label_name(name)
        }
    })
}

/// `{name="value", …}`, as Prometheus prints a label set in an error.
fn show_labels(labels: &LabelScratch) -> String {
    let mut out = String::from("{");
    for i in 0..labels.len() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&String::from_utf8_lossy(labels.name(i)));
        out.push('=');
        crate::log::quoted(&mut out, &String::from_utf8_lossy(labels.value(i)));
    }
    out.push('}');
    out
}

/// Whether the sample exposes the label `name` with an empty value (which `LabelScratch`
/// drops, but which still counts as exposed for `honor_labels`).
fn exposes_empty(s: &exposition::Sample<'_, '_>, body: &[u8], name: &[u8]) -> bool {
    s.labels.iter().any(|l| {
        l.value.0 == l.value.1
            && if l.name_escaped {
                let mut unescaped = Vec::new();
                unescape_label_value(l.name(body), &mut unescaped);
                unescaped == name
            } else {
                l.name(body) == name
            }
    })
}

/// Attaches the target's labels to a scraped sample as Prometheus does: with `honor_labels`
/// the exposed value wins, even an empty one (`job=""` leaves the series without `job`);
/// otherwise the target's does, and a conflicting exposed label is kept as
/// `exported_<name>` (prefix repeated until free; shortest names first). `exposed_empty`
/// tells whether the sample exposes a label with an empty value.
pub(super) fn merge_target_labels(
    labels: &mut LabelScratch,
    t: &Target,
    exposed_empty: impl Fn(&[u8]) -> bool,
) {
    if t.honor_labels {
        for (k, v) in &t.labels {
            if labels.get(k.as_bytes()).is_none() && !exposed_empty(k.as_bytes()) {
                labels.push(k.as_bytes(), v.as_bytes());
            }
        }
        return;
    }
    // Conflicts are rare; only then allocate.
    let mut conflicts: Vec<(String, Vec<u8>)> = Vec::new();
    for (k, _) in &t.labels {
        if let Some(v) = labels.get(k.as_bytes()) {
            conflicts.push((k.clone(), v.to_vec()));
            labels.remove(k.as_bytes());
        }
    }
    for (k, v) in &t.labels {
        labels.push(k.as_bytes(), v.as_bytes());
    }
    conflicts.sort_by_key(|(k, _)| k.len());
    for (name, value) in conflicts {
        let mut new_name = name;
        loop {
            new_name.insert_str(0, "exported_");
            if labels.get(new_name.as_bytes()).is_none() {
                labels.push(new_name.as_bytes(), &value);
                break;
            }
        }
    }
}

pub(super) fn report_labels(
    labels: &mut LabelScratch,
    name: &str,
    t: &Target,
    external: &[(String, String)],
) {
    labels.clear();
    labels.push(b"__name__", name.as_bytes());
    for (k, v) in &t.labels {
        labels.push(k.as_bytes(), v.as_bytes());
    }
    for (k, v) in external {
        if labels.get(k.as_bytes()).is_none() {
            labels.push(k.as_bytes(), v.as_bytes());
        }
    }
    // Target labels are unique by construction and never `__name__`.
    let _ = labels.sort();
}

/// A parsed sample's labels as exposed: its name (with a derived series' suffix), the label a
/// derived series adds (`le`, `quantile`), and the others, unescaped and with float values
/// normalized only where they need it.
fn scraped_labels(labels: &mut LabelScratch, s: &exposition::Sample<'_, '_>, body: &[u8]) {
    labels.clear();
    if s.name_escaped {
        labels.push_with(b"__name__", |out| unescape_label_value(s.name, out));
    } else if s.name_suffix.is_empty() {
        labels.push(b"__name__", s.name);
    } else {
        labels.push_with(b"__name__", |out| {
            out.extend_from_slice(s.name);
            out.extend_from_slice(s.name_suffix);
        });
    }
    if let Some((name, v)) = s.extra_label {
        labels.push_with(name, |out| format_go_float(v, out));
    }
    for l in s.labels {
        if l.name_escaped {
            labels.push_parts(
                |out| unescape_label_value(l.name(body), out),
                |out| unescape_label_value(l.value(body), out),
            );
        } else if l.escaped {
            labels.push_with(l.name(body), |out| unescape_label_value(l.value(body), out));
        } else if l.float_value {
            labels.push_with(l.name(body), |out| {
                normalize_float_label(l.value(body), out)
            });
        } else {
            labels.push(l.name(body), l.value(body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(honor: bool, labels: &[(&str, &str)]) -> Target {
        Target {
            job: "j".into(),
            pool: "j".into(),
            all_labels: vec![],
            discovered: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            address: "a:1".into(),
            scheme: "http".into(),
            path_and_query: "/metrics".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            honor_labels: honor,
            honor_timestamps: true,
            enable_compression: true,
            accept: exposition::DEFAULT_ACCEPT.into(),
            fallback: None,
            native_histograms: false,
            classic_histograms: false,
            convert_nhcb: false,
            histogram_limits: Default::default(),
            hash: 0,
            metric_relabel: Default::default(),
            limits: Default::default(),
            extra_metrics: false,
            track_timestamps_staleness: false,
            forced_error: None,
            http: Default::default(),
            failure_log: None,
            names: Default::default(),
        }
    }

    /// An appender that has taken `body` for `t`.
    fn appended(t: &Target, body: &[u8], format: exposition::Format) -> Appender {
        let mut app = Appender::default();
        app.append_body(t, &[], body, format, 1_000, &mut Default::default())
            .unwrap();
        app
    }

    fn merged(honor: bool, exposed: &[(&str, &str)], tl: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut s = LabelScratch::default();
        for (k, v) in exposed {
            s.push(k.as_bytes(), v.as_bytes());
        }
        let exposed_empty = |name: &[u8]| {
            exposed
                .iter()
                .any(|(k, v)| v.is_empty() && k.as_bytes() == name)
        };
        merge_target_labels(&mut s, &target(honor, tl), exposed_empty);
        s.sort().unwrap();
        (0..s.len())
            .map(|i| {
                (
                    String::from_utf8(s.name(i).to_vec()).unwrap(),
                    String::from_utf8(s.value(i).to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_labels_win_and_exposed_become_exported() {
        let got = merged(
            false,
            &[
                ("__name__", "m"),
                ("job", "exposed"),
                ("exported_job", "taken"),
                ("instance", "i"),
            ],
            &[("instance", "a:1"), ("job", "j")],
        );
        assert_eq!(
            got,
            owned(&[
                ("__name__", "m"),
                ("exported_exported_job", "exposed"),
                ("exported_instance", "i"),
                ("exported_job", "taken"),
                ("instance", "a:1"),
                ("job", "j"),
            ])
        );
    }

    #[test]
    fn honor_labels_keeps_exposed_values() {
        let got = merged(
            true,
            &[("__name__", "m"), ("job", "exposed")],
            &[("instance", "a:1"), ("job", "j")],
        );
        assert_eq!(
            got,
            owned(&[("__name__", "m"), ("instance", "a:1"), ("job", "exposed")])
        );
    }

    #[test]
    fn an_empty_exposed_label_wins_with_honor_labels_only() {
        let exposed = [("__name__", "m"), ("job", ""), ("zone", "")];
        let tl = [("instance", "a:1"), ("job", "j"), ("zone", "z")];
        assert_eq!(
            merged(true, &exposed, &tl),
            owned(&[("__name__", "m"), ("instance", "a:1")])
        );
        assert_eq!(
            merged(false, &exposed, &tl),
            owned(&[
                ("__name__", "m"),
                ("instance", "a:1"),
                ("job", "j"),
                ("zone", "z")
            ])
        );
        // Through the parser: an empty value written in the body, its name quoted or not.
        use crate::entry::proto;
        use prost::Message;
        for body in [&b"m{job=\"\"} 1\n"[..], b"m{\"job\"=\"\",zone=\"\"} 1\n"] {
            let t = target(true, &[("job", "j"), ("instance", "a:1")]);
            let app = appended(&t, body, exposition::Format::PromText);
            let req = proto::WriteRequest::decode(app.entries()).unwrap();
            let names: Vec<&str> = req.timeseries[0]
                .labels
                .iter()
                .map(|l| l.name.as_str())
                .collect();
            assert_eq!(names, ["__name__", "instance"], "{body:?}");
        }
    }

    /// A protobuf classic histogram (buckets, no native fields) is converted as a text one
    /// is; one that is native too keeps its classic series classic.
    #[test]
    fn protobuf_classic_histograms_convert_to_custom_buckets() {
        use crate::entry::proto;
        use crate::exposition::client_model::{
            Bucket, Histogram, Metric, MetricFamily, encode_delimited, metric_type,
        };
        use prost::Message;
        let bucket = |count, upper| Bucket {
            cumulative_count: Some(count),
            upper_bound: Some(upper),
            cumulative_count_float: None,
            exemplar: None,
        };
        let family = |native: bool| MetricFamily {
            name: "rpc_seconds".into(),
            r#type: metric_type::HISTOGRAM,
            metric: vec![Metric {
                histogram: Some(Histogram {
                    sample_count: Some(5),
                    sample_sum: Some(2.5),
                    bucket: vec![bucket(2, 0.5), bucket(5, 1.0)],
                    schema: native.then_some(1),
                    zero_threshold: native.then_some(0.001),
                    zero_count: native.then_some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = encode_delimited(&[family(false)]);
        let mut t = target(false, &[("job", "j")]);
        t.convert_nhcb = true;
        let mut app = Appender::default();
        let n = app
            .append_body(
                &t,
                &[],
                &body,
                exposition::Format::Protobuf,
                1_000,
                &mut Default::default(),
            )
            .unwrap();
        assert_eq!(n.scraped, 1, "one converted histogram");
        assert_eq!(app.kinds(), [KIND_HISTOGRAM]);
        let req = proto::WriteRequest::decode(app.entries()).unwrap();
        let h = &req.timeseries[0].histograms[0];
        assert_eq!(req.timeseries[0].labels[0].value, "rpc_seconds");
        assert_eq!((h.schema, h.count_int, h.sum), (-53, Some(5), 2.5));
        assert_eq!(h.custom_values, [0.5, 1.0]);
        assert_eq!(h.positive_deltas, [2, 1]);
        // Scraped as a native histogram too: the native one only, no conversion.
        let body = encode_delimited(&[family(true)]);
        t.native_histograms = true;
        let app = appended(&t, &body, exposition::Format::Protobuf);
        let req = proto::WriteRequest::decode(app.entries()).unwrap();
        assert_eq!(req.timeseries.len(), 1);
        assert_eq!(req.timeseries[0].histograms[0].schema, 1);
    }

    #[test]
    fn exemplars_become_entries_of_their_own_when_an_endpoint_sends_them() {
        use crate::entry::proto;
        use prost::Message;
        let body = b"# TYPE req counter\nreq_total{path=\"/a\"} 5 # {trace_id=\"abc\",span_id=\"1\"} 1.5 1700000000.25\nreq_total{path=\"/b\"} 7 # {trace_id=\"d\\\"e\"} 2\n# EOF\n";
        let t = target(false, &[("job", "j"), ("instance", "a:1")]);
        let mut off = Appender::default();
        off.append_body(
            &t,
            &[],
            body,
            exposition::Format::OpenMetrics,
            1_000,
            &mut Default::default(),
        )
        .unwrap();
        assert_eq!(off.kinds(), [KIND_SAMPLE, KIND_SAMPLE]);

        let mut on = Appender::with_exemplars(true);
        let n = on
            .append_body(
                &t,
                &[],
                body,
                exposition::Format::OpenMetrics,
                1_000,
                &mut Default::default(),
            )
            .unwrap();
        assert_eq!(n.scraped, 2, "exemplars are not samples");
        assert_eq!(
            on.kinds(),
            [KIND_SAMPLE, KIND_EXEMPLAR, KIND_SAMPLE, KIND_EXEMPLAR]
        );
        let req = proto::WriteRequest::decode(on.entries()).unwrap();
        let ex = &req.timeseries[1];
        assert_eq!(ex.labels, req.timeseries[0].labels);
        assert!(ex.samples.is_empty());
        assert_eq!(ex.exemplars.len(), 1);
        let e = &ex.exemplars[0];
        let labels: Vec<(&str, &str)> = e
            .labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect();
        assert_eq!(labels, [("span_id", "1"), ("trace_id", "abc")]);
        assert_eq!((e.value, e.timestamp), (1.5, 1_700_000_000_250));
        // No timestamp: the sample's; escapes undone.
        let e = &req.timeseries[3].exemplars[0];
        assert_eq!((e.value, e.timestamp), (2.0, 1_000));
        assert_eq!(e.labels[0].value, "d\"e");
    }

    fn metadata_of(body: &[u8], format: exposition::Format) -> Vec<(u8, String, String, String)> {
        let mut app = Appender::default();
        let t = target(false, &[("job", "j"), ("instance", "a:1")]);
        app.append_body(&t, &[], body, format, 1_000, &mut Default::default())
            .unwrap();
        let meta = app.metadata().to_vec();
        let mut rec = Vec::new();
        let items = crate::wal::record::metadata_items(&meta).unwrap();
        crate::wal::record::put_count(&mut rec, items.len());
        rec.extend_from_slice(&meta);
        let mut got = Vec::new();
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        crate::wal::record::decode(
            crate::wal::record::METADATA,
            &rec,
            &mut Default::default(),
            |it| {
                if let crate::wal::record::Item::Metadata {
                    mtype,
                    name,
                    unit,
                    help,
                } = it
                {
                    got.push((mtype, s(name), s(unit), s(help)));
                }
            },
        )
        .unwrap();
        got
    }

    #[test]
    fn family_metadata_from_every_format() {
        let text = b"# HELP a_total Requests \\ with \\n and \\\" kept.\n# TYPE a_total counter\na_total 1\n# TYPE g gauge\ng 2\n# HELP lonely Only help.\n";
        assert_eq!(
            metadata_of(text, exposition::Format::PromText),
            [
                (
                    1,
                    "a_total".into(),
                    "".into(),
                    "Requests \\ with \n and \\\" kept.".into()
                ),
                (2, "g".into(), "".into(), "".into()),
                (0, "lonely".into(), "".into(), "Only help.".into()),
            ]
        );
        let om = b"# TYPE lat_seconds histogram\n# UNIT lat_seconds seconds\n# HELP lat_seconds A \\\"quoted\\\" help.\nlat_seconds_bucket{le=\"+Inf\"} 1\nlat_seconds_count 1\nlat_seconds_sum 2\n# EOF\n";
        assert_eq!(
            metadata_of(om, exposition::Format::OpenMetrics),
            [(
                3,
                "lat_seconds".into(),
                "seconds".into(),
                "A \"quoted\" help.".into()
            )]
        );
        let pb = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/exposition/node_exporter.pb"
        ))
        .unwrap();
        let got = metadata_of(&pb, exposition::Format::Protobuf);
        assert!(got.len() > 20, "{} families", got.len());
        assert!(
            got.iter()
                .any(|m| m.1 == "go_gc_duration_seconds" && m.0 == 5 && !m.3.is_empty()),
            "{got:?}"
        );
    }

    /// A protobuf body: counters `c0`, `c1`… and one native histogram of schema 0 with
    /// `buckets` buckets in a row (0 to `buckets - 1`), one observation each.
    fn native_body(counters: usize, buckets: u32) -> Vec<u8> {
        use crate::exposition::client_model::{
            BucketSpan, Histogram, Metric, MetricFamily, Value, encode_delimited, metric_type,
        };
        let mut families: Vec<MetricFamily> = (0..counters)
            .map(|i| MetricFamily {
                name: format!("c{i}"),
                r#type: metric_type::COUNTER,
                metric: vec![Metric {
                    counter: Some(Value {
                        value: 1.0,
                        exemplar: None,
                        created_timestamp: None,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        families.push(MetricFamily {
            name: "h".into(),
            r#type: metric_type::HISTOGRAM,
            metric: vec![Metric {
                histogram: Some(Histogram {
                    sample_count: Some(u64::from(buckets)),
                    sample_sum: Some(1.0),
                    schema: Some(0),
                    zero_threshold: Some(0.001),
                    positive_span: vec![BucketSpan {
                        offset: 0,
                        length: buckets,
                    }],
                    positive_delta: (0..buckets).map(|i| i64::from(i == 0)).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        encode_delimited(&families)
    }

    fn limited_target(sample_limit: u64, bucket_limit: u64, factor: f64) -> Target {
        let mut t = target(false, &[("job", "j")]);
        t.native_histograms = true;
        t.limits.sample_limit = sample_limit;
        t.histogram_limits = crate::entry::Resolution::new(bucket_limit, factor);
        t
    }

    fn append(t: &Target, body: &[u8]) -> Result<Appender, AppendError> {
        let mut app = Appender::default();
        app.append_body(
            t,
            &[],
            body,
            exposition::Format::Protobuf,
            1_000,
            &mut Default::default(),
        )?;
        Ok(app)
    }

    #[test]
    fn native_histograms_are_reduced_to_the_jobs_limits() {
        use crate::entry::proto;
        use prost::Message;
        // Buckets 0..=7 of schema 0: merged twice, into 0, 1, 2 of schema -2.
        let app = append(&limited_target(0, 3, 0.0), &native_body(1, 8)).unwrap();
        let req = proto::WriteRequest::decode(app.entries()).unwrap();
        let h = &req.timeseries[1].histograms[0];
        assert_eq!(h.schema, -2);
        assert_eq!(
            h.positive_spans,
            [proto::BucketSpan {
                offset: 0,
                length: 3
            }]
        );
        // Bucket 0 alone, 1..=4 and 5..=7 (the delta form of 1, 4, 3).
        assert_eq!(h.positive_deltas, [1, 3, -1]);
        // A factor of 4 allows schema -1 at most, whatever the bucket limit.
        let app = append(&limited_target(0, 0, 4.0), &native_body(1, 8)).unwrap();
        let req = proto::WriteRequest::decode(app.entries()).unwrap();
        assert_eq!(req.timeseries[1].histograms[0].schema, -1);
    }

    #[test]
    fn a_histogram_past_the_bucket_limit_fails_the_scrape_as_prometheus() {
        // 64 buckets cannot fit in four at schema -4 (buckets 0..=63 of schema 0 fall in
        // 0 to 4 of schema -4).
        let e = append(&limited_target(0, 1, 0.0), &native_body(2, 64))
            .err()
            .unwrap();
        assert_eq!(e.message, "histogram bucket limit exceeded");
        assert_eq!(
            e.exceeded,
            Exceeded {
                sample_limit: false,
                bucket_limit: true
            }
        );
        // Read to the end and counted, as Prometheus reports it.
        assert_eq!((e.counts.scraped, e.counts.kept), (3, 3));
        // The histogram is not counted against the sample limit: two counters fit in 2.
        let e = append(&limited_target(2, 1, 0.0), &native_body(2, 64))
            .err()
            .unwrap();
        assert_eq!(e.message, "histogram bucket limit exceeded");
        assert!(!e.exceeded.sample_limit);
        // Past both, the sample limit is the error, and both are counted.
        let e = append(&limited_target(1, 1, 0.0), &native_body(2, 64))
            .err()
            .unwrap();
        assert_eq!(e.message, "sample limit exceeded");
        assert_eq!(
            e.exceeded,
            Exceeded {
                sample_limit: true,
                bucket_limit: true
            }
        );
        assert!(append(&limited_target(0, 4, 0.0), &native_body(2, 64)).is_err());
        // Within the limit at schema -4: written.
        assert!(append(&limited_target(0, 5, 0.0), &native_body(2, 64)).is_ok());
    }

    #[test]
    fn converted_classic_histograms_past_the_bucket_limit_fail_the_scrape() {
        let body = b"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 2\nh_bucket{le=\"+Inf\"} 3\nh_sum 3\nh_count 3\n";
        let mut t = limited_target(0, 2, 0.0);
        t.convert_nhcb = true;
        let mut app = Appender::default();
        let e = app
            .append_body(
                &t,
                &[],
                body,
                exposition::Format::PromText,
                1_000,
                &mut Default::default(),
            )
            .err()
            .unwrap();
        assert_eq!(e.message, "histogram bucket limit exceeded");
        // Custom buckets are never merged: three fit in a limit of three.
        t.histogram_limits.bucket_limit = 3;
        let app = appended(&t, body, exposition::Format::PromText);
        assert_eq!(app.kinds(), [KIND_HISTOGRAM]);
    }

    /// Random text bodies, appended through the direct path and (with a label limit that
    /// never bites, which turns it off) through the full pipeline: the same entries, the same
    /// errors.
    #[test]
    fn the_direct_path_writes_what_the_full_pipeline_writes() {
        let mut rng = crate::testrng::Rng::new(0x5851_f42d_4c95_7f2d);
        let mut next = move |n: u64| rng.below(n);
        let names = ["m", "Abc", "__a", "rpc_seconds_bucket", "z_total"];
        let label_names = [
            "a", "b", "job", "instance", "le", "quantile", "zone", "Z", "_x", "region",
        ];
        let values = [
            "", "v", "1", "1e3", "+Inf", "0.50", "a\\\"b", "x\\ny", "ünï",
        ];
        let external = vec![
            ("region".to_string(), "r1".to_string()),
            ("zone".to_string(), "ext".to_string()),
            ("empty".to_string(), String::new()),
        ];
        let (mut direct_hits, mut errors) = (0, 0);
        for round in 0..2000 {
            let mut body = String::new();
            if next(2) == 0 {
                // `le` of the family's buckets in canonical form.
                body.push_str("# TYPE rpc_seconds histogram\n");
            }
            for _ in 0..1 + next(6) {
                body.push_str(names[next(names.len() as u64) as usize]);
                let n = next(5);
                if n > 0 {
                    body.push('{');
                    for k in 0..n {
                        if k > 0 {
                            body.push(',');
                        }
                        let name = label_names[next(label_names.len() as u64) as usize];
                        let value = values[next(values.len() as u64) as usize];
                        body.push_str(&format!("{name}=\"{value}\""));
                    }
                    body.push('}');
                }
                body.push_str(&format!(" {}", next(1000) as f64 / 8.0));
                if next(4) == 0 {
                    body.push_str(&format!(" {}", 1_700_000_000_000u64 + next(1000)));
                }
                body.push('\n');
            }
            let mut t = target(false, &[("job", "j"), ("instance", "a:1")]);
            if next(2) == 0 {
                t.labels.push(("zone".into(), "z1".into()));
            }
            t.track_timestamps_staleness = next(2) == 0;
            let mut slow = target(false, &[]);
            slow.labels = t.labels.clone();
            slow.track_timestamps_staleness = t.track_timestamps_staleness;
            slow.limits.label_limit = 1000;
            assert!(direct_eligible(&t) && !direct_eligible(&slow));
            let run = |t: &Target| {
                let mut app = Appender::default();
                let r = app.append_body(
                    t,
                    &external,
                    body.as_bytes(),
                    exposition::Format::PromText,
                    1_000,
                    &mut Default::default(),
                );
                (
                    r.map_err(|e| e.message),
                    app.entries().to_vec(),
                    app.ends().to_vec(),
                    app.kinds().to_vec(),
                    app.timestamped.clone(),
                )
            };
            let (fast, full) = (run(&t), run(&slow));
            assert_eq!(fast, full, "round {round}:\n{body}");
            errors += usize::from(fast.0.is_err());
            direct_hits += usize::from(fast.0.is_ok() && !fast.1.is_empty());
        }
        assert!(direct_hits > 500 && errors > 50, "{direct_hits} {errors}");
    }

    #[test]
    fn the_direct_path_takes_plain_samples_and_leaves_the_rest() {
        let fixed: [(&[u8], &[u8]); 2] = [(b"instance", b"a:1"), (b"job", b"j")];
        let direct = |line: &str| {
            let mut scratch = Vec::new();
            let mut parser =
                Parser::new(line.as_bytes(), exposition::Format::PromText, &mut scratch);
            let s = parser.next().unwrap().unwrap();
            let (mut out, mut values) = (Vec::new(), Vec::new());
            let took = write_direct(&mut out, &mut values, &s, line.as_bytes(), &fixed, 5);
            took.then_some(out)
        };
        // Labels merged in order, `le` in canonical form, the empty one left out.
        let got =
            direct("# TYPE m histogram\nm_bucket{zone=\"z\",le=\"1\",b=\"\"} 2\n").expect("taken");
        let mut want = LabelScratch::default();
        for (k, v) in [
            ("__name__", "m_bucket"),
            ("instance", "a:1"),
            ("job", "j"),
            ("le", "1.0"),
            ("zone", "z"),
        ] {
            want.push(k.as_bytes(), v.as_bytes());
        }
        let mut expected = Vec::new();
        encode_series(&mut expected, &want, 2.0, 5);
        assert_eq!(got, expected);
        // A name the target has (`exported_`), an escape, a duplicate: the full pipeline.
        assert!(direct("m{job=\"x\"} 1\n").is_none());
        assert!(direct("m{a=\"x\\\"y\"} 1\n").is_none());
        assert!(direct("m{b=\"1\",a=\"2\",b=\"3\"} 1\n").is_none());
    }
}
