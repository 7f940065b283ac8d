//! Remote-write entries: one `WriteRequest.timeseries` element each, the unit the scrape
//! appender makes, the WAL stores and reads back, and the shards batch and send. Direct
//! protobuf encoding from borrowed label bytes, and the readers of an entry's parts.
//!
//! **Invariant:** knows no storage, no relabeling and no sending; every module that handles
//! samples uses it, it uses only `protowire`.
//!
//! A `WriteRequest` is just its repeated field 1, so a batch body is the concatenation of
//! encoded `timeseries` entries: appending a sample to a batch is appending its entry, and
//! sealing a batch needs no re-encoding. Output is byte-identical to prost's (tested).

pub mod histogram;
pub mod proto;

pub use histogram::{HistogramError, HistogramScratch, RESET_HINT_GAUGE, Resolution};

/// Label names and values of one series, copied into one reused arena so the hot path does not
/// allocate. Values may come from the scrape buffer, unescaped, or from target labels.
#[derive(Default)]
pub struct LabelScratch {
    arena: Vec<u8>,
    /// (name start, name end, value start, value end) into `arena`.
    spans: Vec<[u32; 4]>,
}

impl LabelScratch {
    pub fn clear(&mut self) {
        self.arena.clear();
        self.spans.clear();
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds a label. Empty values are dropped: in Prometheus an empty label is an absent one.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if value.is_empty() {
            return;
        }
        let ns = self.arena.len() as u32;
        self.arena.extend_from_slice(name);
        let vs = self.arena.len() as u32;
        self.arena.extend_from_slice(value);
        self.spans.push([ns, vs, vs, self.arena.len() as u32]);
    }

    /// Adds a label whose name and value are written by the closures (to unescape in place).
    /// An empty value drops the label.
    pub fn push_parts(
        &mut self,
        name: impl FnOnce(&mut Vec<u8>),
        value: impl FnOnce(&mut Vec<u8>),
    ) {
        let ns = self.arena.len() as u32;
        name(&mut self.arena);
        let vs = self.arena.len() as u32;
        value(&mut self.arena);
        let ve = self.arena.len() as u32;
        if ve == vs {
            self.arena.truncate(ns as usize);
            return;
        }
        self.spans.push([ns, vs, vs, ve]);
    }

    /// Adds a label whose value is written by `write` (used to unescape in place).
    pub fn push_with(&mut self, name: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let ns = self.arena.len() as u32;
        self.arena.extend_from_slice(name);
        let vs = self.arena.len() as u32;
        write(&mut self.arena);
        let ve = self.arena.len() as u32;
        if ve == vs {
            self.arena.truncate(ns as usize);
            return;
        }
        self.spans.push([ns, vs, vs, ve]);
    }

    pub fn name(&self, i: usize) -> &[u8] {
        let s = self.spans[i];
        &self.arena[s[0] as usize..s[1] as usize]
    }

    pub fn value(&self, i: usize) -> &[u8] {
        let s = self.spans[i];
        &self.arena[s[2] as usize..s[3] as usize]
    }

    /// The value of the label `name`, if present.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        (0..self.len())
            .find(|i| self.name(*i) == name)
            .map(|i| self.value(i))
    }

    pub fn remove(&mut self, name: &[u8]) {
        if let Some(i) = (0..self.len()).find(|i| self.name(*i) == name) {
            self.spans.remove(i);
        }
    }

    /// Sets `name` to `value`, as Prometheus' label builder does: the label moves to the end;
    /// an empty value deletes it.
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        self.remove(name);
        self.push(name, value);
    }

    /// Keeps the labels whose name passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let arena = &self.arena;
        self.spans
            .retain(|s| keep(&arena[s[0] as usize..s[1] as usize]));
    }

    /// Removes the labels whose index has its bit set in `mask` (indexes below 64).
    pub fn remove_mask(&mut self, mask: u64) {
        if mask == 0 {
            return;
        }
        let mut i = 0;
        self.spans.retain(|_| {
            let keep = i >= 64 || mask & (1 << i) == 0;
            i += 1;
            keep
        });
    }

    /// Makes this a copy of `other`.
    pub fn copy_from(&mut self, other: &LabelScratch) {
        self.arena.clear();
        self.arena.extend_from_slice(&other.arena);
        self.spans.clear();
        self.spans.extend_from_slice(&other.spans);
    }

    /// A 64-bit hash of the labels in order: names, values and where each ends.
    pub fn fingerprint(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::xxh3_64(&self.arena);
        for s in &self.spans {
            let lens = u64::from(s[1] - s[0]) | (u64::from(s[3] - s[2]) << 32);
            h = (h ^ lens)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
        h
    }

    /// Whether both hold the same labels in the same order.
    pub fn same_as(&self, other: &LabelScratch) -> bool {
        self.len() == other.len()
            && (0..self.len())
                .all(|i| self.name(i) == other.name(i) && self.value(i) == other.value(i))
    }

    /// Sorts by name; returns the first duplicated name, if any.
    pub fn sort(&mut self) -> Result<(), Vec<u8>> {
        let arena = &self.arena;
        let name = |s: &[u32; 4]| &arena[s[0] as usize..s[1] as usize];
        // Exporters usually emit labels in order already; checking is cheaper than sorting.
        if !self.spans.is_sorted_by(|a, b| name(a) <= name(b)) {
            self.spans.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        }
        for i in 1..self.spans.len() {
            if self.name(i - 1) == self.name(i) {
                return Err(self.name(i).to_vec());
            }
        }
        Ok(())
    }
}

pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len as u64) + len
    }
}

/// Appends one `WriteRequest.timeseries` entry (field 1) holding `labels` (sorted) and one
/// sample. Zero values are omitted as proto3 (and prost) omit them.
pub fn encode_series(out: &mut Vec<u8>, labels: &LabelScratch, value: f64, timestamp_ms: i64) {
    let sample_inner = sample_len(value, timestamp_ms);
    let series_len = labels_len(labels) + 1 + varint_len(sample_inner as u64) + sample_inner;
    out.reserve(1 + varint_len(series_len as u64) + series_len);
    out.push(0x0a); // WriteRequest.timeseries, length-delimited
    put_varint(out, series_len as u64);
    put_labels(out, labels);
    put_sample(out, sample_inner, value, timestamp_ms);
}

/// [`encode_series`] for labels given as (name, value) pairs, sorted by name, none empty:
/// the same bytes, written straight from where the labels are.
pub fn encode_series_pairs(
    out: &mut Vec<u8>,
    labels: &[(&[u8], &[u8])],
    value: f64,
    timestamp_ms: i64,
) {
    let sample_inner = sample_len(value, timestamp_ms);
    let labels_len: usize = labels.iter().map(|(n, v)| label_len(n, v)).sum();
    let series_len = labels_len + 1 + varint_len(sample_inner as u64) + sample_inner;
    out.reserve(1 + varint_len(series_len as u64) + series_len);
    out.push(0x0a);
    put_varint(out, series_len as u64);
    for (n, v) in labels {
        put_label(out, n, v);
    }
    put_sample(out, sample_inner, value, timestamp_ms);
}

/// The bytes [`put_labels`] writes for `labels`.
pub fn labels_len(labels: &LabelScratch) -> usize {
    (0..labels.len())
        .map(|i| label_len(labels.name(i), labels.value(i)))
        .sum()
}

/// The bytes [`put_label`] writes for one label.
fn label_len(n: &[u8], v: &[u8]) -> usize {
    let inner = field_len(n.len()) + field_len(v.len());
    1 + varint_len(inner as u64) + inner
}

/// `labels` as repeated `Label` messages in field 1 of their parent.
pub fn put_labels(out: &mut Vec<u8>, labels: &LabelScratch) {
    for i in 0..labels.len() {
        put_label(out, labels.name(i), labels.value(i));
    }
}

/// The length of a `Sample` message; zero fields are omitted as proto3 omits them.
fn sample_len(value: f64, timestamp_ms: i64) -> usize {
    (if value != 0.0 { 9 } else { 0 })
        + if timestamp_ms != 0 {
            1 + varint_len(timestamp_ms as u64)
        } else {
            0
        }
}

/// Appends the `TimeSeries.samples` field holding one sample of length `len`.
fn put_sample(out: &mut Vec<u8>, len: usize, value: f64, timestamp_ms: i64) {
    out.push(0x12); // TimeSeries.samples
    put_varint(out, len as u64);
    if value != 0.0 {
        out.push(0x09); // Sample.value, fixed64
        out.extend_from_slice(&value.to_bits().to_le_bytes());
    }
    if timestamp_ms != 0 {
        out.push(0x10); // Sample.timestamp, varint (two's complement for negatives)
        put_varint(out, timestamp_ms as u64);
    }
}

/// Appends an entry from an already encoded labels section (the `TimeSeries.labels` fields,
/// as [`split_entry`] returns them) and one float sample: what the WAL reader rebuilds.
pub fn encode_series_raw(out: &mut Vec<u8>, labels: &[u8], value: f64, timestamp_ms: i64) {
    let sample_inner = sample_len(value, timestamp_ms);
    let series_len = labels.len() + 1 + varint_len(sample_inner as u64) + sample_inner;
    out.push(0x0a);
    put_varint(out, series_len as u64);
    out.extend_from_slice(labels);
    put_sample(out, sample_inner, value, timestamp_ms);
}

/// Appends an entry holding `labels` and a `Histogram` message encoded already (a native
/// histogram with custom buckets converted from a classic one).
pub fn encode_histogram_message(out: &mut Vec<u8>, labels: &LabelScratch, histogram: &[u8]) {
    let series_len = labels_len(labels) + 1 + varint_len(histogram.len() as u64) + histogram.len();
    out.push(0x0a);
    put_varint(out, series_len as u64);
    put_labels(out, labels);
    out.push(0x22); // TimeSeries.histograms
    put_varint(out, histogram.len() as u64);
    out.extend_from_slice(histogram);
}

/// Appends an entry from an encoded labels section and an encoded `Histogram` message.
pub fn encode_histogram_raw(out: &mut Vec<u8>, labels: &[u8], histogram: &[u8]) {
    encode_message_raw(out, labels, 0x22, histogram); // TimeSeries.histograms
}

/// Appends an entry from an encoded labels section and an encoded `Exemplar` message.
pub fn encode_exemplar_raw(out: &mut Vec<u8>, labels: &[u8], exemplar: &[u8]) {
    encode_message_raw(out, labels, 0x1a, exemplar); // TimeSeries.exemplars
}

fn encode_message_raw(out: &mut Vec<u8>, labels: &[u8], tag: u8, message: &[u8]) {
    let series_len = labels.len() + 1 + varint_len(message.len() as u64) + message.len();
    out.push(0x0a);
    put_varint(out, series_len as u64);
    out.extend_from_slice(labels);
    out.push(tag);
    put_varint(out, message.len() as u64);
    out.extend_from_slice(message);
}

/// Appends an entry that holds one exemplar of the series `labels` and no sample, as Prometheus
/// sends exemplars: `exemplar` is the exemplar's own labels (sorted), `value` and timestamp.
pub fn encode_exemplar_series(
    out: &mut Vec<u8>,
    labels: &LabelScratch,
    exemplar: &LabelScratch,
    value: f64,
    timestamp_ms: i64,
) {
    let ts_len = if timestamp_ms != 0 {
        1 + varint_len(timestamp_ms as u64)
    } else {
        0
    };
    let body_len = labels_len(exemplar) + 9 + ts_len;
    let series_len = labels_len(labels) + 1 + varint_len(body_len as u64) + body_len;
    out.push(0x0a);
    put_varint(out, series_len as u64);
    put_labels(out, labels);
    out.push(0x1a); // TimeSeries.exemplars
    put_varint(out, body_len as u64);
    put_labels(out, exemplar);
    out.push(0x11); // Exemplar.value, fixed64
    out.extend_from_slice(&value.to_bits().to_le_bytes());
    if timestamp_ms != 0 {
        out.push(0x18); // Exemplar.timestamp
        put_varint(out, timestamp_ms as u64);
    }
}

/// A `Label` message as field 1 of its parent (`TimeSeries.labels`, `Exemplar.labels`).
fn put_label(out: &mut Vec<u8>, n: &[u8], v: &[u8]) {
    let inner = field_len(n.len()) + field_len(v.len());
    out.push(0x0a);
    put_varint(out, inner as u64);
    if !n.is_empty() {
        out.push(0x0a);
        put_varint(out, n.len() as u64);
        out.extend_from_slice(n);
    }
    if !v.is_empty() {
        out.push(0x12);
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// What one encoded entry holds: its labels section and its one sample, histogram or
/// exemplar.
#[derive(Debug, PartialEq)]
pub enum EntryPayload<'a> {
    Sample { value: f64, timestamp_ms: i64 },
    Histogram(&'a [u8]),
    Exemplar(&'a [u8]),
}

/// What kind of entry the appender made, for endpoints that take only some kinds.
pub const KIND_SAMPLE: u8 = 0;
pub const KIND_HISTOGRAM: u8 = 1;
pub const KIND_EXEMPLAR: u8 = 2;

/// The kind of an encoded entry (a malformed one counts as a sample).
pub fn entry_kind(entry: &[u8]) -> u8 {
    match split_entry(entry) {
        Ok((_, EntryPayload::Histogram(_))) => KIND_HISTOGRAM,
        Ok((_, EntryPayload::Exemplar(_))) => KIND_EXEMPLAR,
        _ => KIND_SAMPLE,
    }
}

/// Whether a histogram entry holds a native histogram with custom buckets (schema −53),
/// which Remote Write 1.0 cannot carry.
pub fn is_custom_buckets(entry: &[u8]) -> bool {
    let Ok((_, EntryPayload::Histogram(h))) = split_entry(entry) else {
        return false;
    };
    let mut p = 0;
    while p < h.len() {
        let Ok((field, wire)) = crate::protowire::key(h, &mut p) else {
            return false;
        };
        if (field, wire) == (4, 0) {
            // sint32 −53, zigzag-encoded.
            return crate::protowire::varint(h, &mut p).is_ok_and(|v| v == 105);
        }
        if crate::protowire::skip(h, &mut p, wire).is_err() {
            return false;
        }
    }
    false
}

/// Entries counted by kind: Prometheus counts samples, histograms and exemplars apart
/// (`prometheus_remote_storage_samples_total`, `…_histograms_total`, `…_exemplars_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
}

impl Tally {
    /// The entries of these kinds.
    pub fn of(kinds: &[u8]) -> Tally {
        let (mut h, mut e) = (0u64, 0u64);
        for k in kinds {
            h += u64::from(*k == KIND_HISTOGRAM);
            e += u64::from(*k == KIND_EXEMPLAR);
        }
        Tally {
            samples: kinds.len() as u64 - h - e,
            histograms: h,
            exemplars: e,
        }
    }

    /// One entry of `kind`.
    pub fn one(kind: u8) -> Tally {
        let mut t = Tally::default();
        match kind {
            KIND_HISTOGRAM => t.histograms = 1,
            KIND_EXEMPLAR => t.exemplars = 1,
            _ => t.samples = 1,
        }
        t
    }

    /// Every entry, whatever its kind.
    pub fn total(&self) -> usize {
        (self.samples + self.histograms + self.exemplars) as usize
    }
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.samples += o.samples;
        self.histograms += o.histograms;
        self.exemplars += o.exemplars;
    }
}

impl std::ops::SubAssign for Tally {
    fn sub_assign(&mut self, o: Tally) {
        self.samples = self.samples.saturating_sub(o.samples);
        self.histograms = self.histograms.saturating_sub(o.histograms);
        self.exemplars = self.exemplars.saturating_sub(o.exemplars);
    }
}

/// A hash of an entry's labels section (`0x0a len TimeSeries`, labels first, as this module
/// writes them): which of an endpoint's lanes sends the series. Every entry of a series (its
/// samples, histograms and exemplars) hashes alike. A malformed entry hashes whole.
pub fn series_key(entry: &[u8]) -> u64 {
    use crate::protowire::{len_delimited, varint};
    let mut p = 1;
    if entry.first() != Some(&0x0a) || varint(entry, &mut p).is_err() {
        return xxhash_rust::xxh3::xxh3_64(entry);
    }
    let start = p;
    while entry.get(p) == Some(&0x0a) {
        p += 1;
        if len_delimited(entry, &mut p).is_err() {
            return xxhash_rust::xxh3::xxh3_64(entry);
        }
    }
    xxhash_rust::xxh3::xxh3_64(&entry[start..p])
}

/// The timestamp of an entry's sample, native histogram (`Histogram.timestamp`, field 15) or
/// exemplar (`Exemplar.timestamp`, field 3); `None` for a malformed entry.
pub fn entry_timestamp(entry: &[u8]) -> Option<i64> {
    let field_ts = |msg: &[u8], field: u64| -> Option<i64> {
        use crate::protowire::{key, skip, varint};
        let mut p = 0;
        while p < msg.len() {
            match key(msg, &mut p).ok()? {
                (f, 0) if f == field => return Some(varint(msg, &mut p).ok()? as i64),
                (_, w) => skip(msg, &mut p, w).ok()?,
            }
        }
        Some(0)
    };
    match split_entry(entry).ok()?.1 {
        EntryPayload::Sample { timestamp_ms, .. } => Some(timestamp_ms),
        EntryPayload::Histogram(h) => field_ts(h, 15),
        EntryPayload::Exemplar(e) => field_ts(e, 3),
    }
}

/// The entries of a batch body (concatenated `0x0a len TimeSeries`), each whole; stops at
/// the first malformed one.
pub fn entries(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut p = 0;
    std::iter::from_fn(move || {
        let start = p;
        let mut q = p + 1;
        if body.get(p) != Some(&0x0a) {
            return None;
        }
        let r = crate::protowire::len_delimited(body, &mut q).ok()?;
        p = r.end;
        Some(&body[start..r.end])
    })
}

/// The name and value of the `Label` message that runs from `start` to the end of `buf`.
pub fn label_at(buf: &[u8], start: usize) -> Result<(&[u8], &[u8]), crate::protowire::WireError> {
    use crate::protowire::{key, len_delimited, skip};
    let mut q = start;
    let (mut name, mut value) = (0..0, 0..0);
    while q < buf.len() {
        match key(buf, &mut q)? {
            (1, 2) => name = len_delimited(buf, &mut q)?,
            (2, 2) => value = len_delimited(buf, &mut q)?,
            (_, w) => skip(buf, &mut q, w)?,
        }
    }
    Ok((&buf[name], &buf[value]))
}

/// Splits one entry written by this module (`0x0a len TimeSeries`) into its labels section
/// and its payload.
pub fn split_entry(entry: &[u8]) -> Result<(&[u8], EntryPayload<'_>), crate::protowire::WireError> {
    use crate::protowire::{WireError, fixed64, key, len_delimited, skip, varint};
    let mut p = 0;
    let (field, wire) = key(entry, &mut p)?;
    if (field, wire) != (1, 2) {
        return Err(WireError("not a timeseries entry"));
    }
    let body = len_delimited(entry, &mut p)?;
    let buf = &entry[..body.end];
    let mut p = body.start;
    let labels_start = p;
    let mut labels_end = p;
    let mut payload = None;
    while p < body.end {
        let (field, wire) = key(buf, &mut p)?;
        match (field, wire) {
            (1, 2) => {
                len_delimited(buf, &mut p)?;
                labels_end = p;
            }
            (2, 2) => {
                let s = len_delimited(buf, &mut p)?;
                let (mut value, mut ts) = (0.0, 0i64);
                let mut q = s.start;
                while q < s.end {
                    match key(&buf[..s.end], &mut q)? {
                        (1, 1) => value = f64::from_bits(fixed64(&buf[..s.end], &mut q)?),
                        (2, 0) => ts = varint(&buf[..s.end], &mut q)? as i64,
                        (_, w) => skip(&buf[..s.end], &mut q, w)?,
                    }
                }
                payload = Some(EntryPayload::Sample {
                    value,
                    timestamp_ms: ts,
                });
            }
            (4, 2) => {
                let h = len_delimited(buf, &mut p)?;
                payload = Some(EntryPayload::Histogram(&buf[h]));
            }
            (3, 2) => {
                let e = len_delimited(buf, &mut p)?;
                payload = Some(EntryPayload::Exemplar(&buf[e]));
            }
            (_, w) => skip(buf, &mut p, w)?,
        }
    }
    let payload = payload.ok_or(WireError("entry without a sample"))?;
    Ok((&buf[labels_start..labels_end], payload))
}

#[cfg(test)]
mod tests {
    use super::proto;
    use super::*;
    use prost::Message;

    fn check(labels: &[(&str, &str)], value: f64, ts: i64) {
        let mut scratch = LabelScratch::default();
        for (n, v) in labels {
            scratch.push(n.as_bytes(), v.as_bytes());
        }
        scratch.sort().unwrap();
        let mut ours = Vec::new();
        encode_series(&mut ours, &scratch, value, ts);
        let mut sorted: Vec<_> = labels.iter().filter(|(_, v)| !v.is_empty()).collect();
        sorted.sort();
        let reference = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                histograms: vec![],
                exemplars: vec![],
                labels: sorted
                    .iter()
                    .map(|(n, v)| proto::Label {
                        name: n.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                samples: vec![proto::Sample {
                    value,
                    timestamp: ts,
                }],
            }],
            ..Default::default()
        };
        assert_eq!(
            ours,
            reference.encode_to_vec(),
            "labels={labels:?} value={value} ts={ts}"
        );
    }

    #[test]
    fn byte_identical_to_prost() {
        check(
            &[
                ("__name__", "up"),
                ("job", "node"),
                ("instance", "localhost:9100"),
            ],
            1.0,
            1_700_000_000_000,
        );
        check(&[("__name__", "x")], 0.0, 0);
        check(&[("__name__", "x")], -0.5, -1);
        check(&[("__name__", "x"), ("empty", "")], f64::NAN, 5);
        check(
            &[("__name__", "long"), ("v", &"y".repeat(300))],
            f64::INFINITY,
            i64::MAX,
        );
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        check(&[("__name__", "stale")], stale, 1);
    }

    #[test]
    fn concatenated_entries_decode_as_one_request() {
        let mut body = Vec::new();
        let mut s = LabelScratch::default();
        for i in 0..3 {
            s.clear();
            s.push(b"__name__", format!("m{i}").as_bytes());
            s.sort().unwrap();
            encode_series(&mut body, &s, i as f64, 1000 + i);
        }
        let req = proto::WriteRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 3);
        assert_eq!(req.timeseries[2].samples[0].timestamp, 1002);
    }

    #[test]
    fn sort_reports_duplicate_names() {
        let mut s = LabelScratch::default();
        s.push(b"b", b"1");
        s.push(b"a", b"2");
        s.push(b"b", b"3");
        assert_eq!(s.sort(), Err(b"b".to_vec()));
    }
}
