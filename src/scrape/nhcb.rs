//! `convert_classic_histograms_to_nhcb`: a classic histogram's `_bucket`, `_count` and `_sum`
//! series become one native histogram with custom buckets (schema −53), as Prometheus 3's
//! `convertnhcb` builds it: cumulative bucket counts become per-bucket counts, a missing `+Inf`
//! bucket is implied from the count, the bucket bounds (but `+Inf`) are the custom values, and
//! empty buckets are compacted away (at most two kept inside a span for integer counts, none
//! for float counts). A histogram that cannot be converted (counts not cumulative, negative, a
//! count that disagrees with the `+Inf` bucket) is dropped, as Prometheus drops it.

use crate::entry::LabelScratch;

/// Prometheus' schema for native histograms with custom bucket bounds.
const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// The classic series of one histogram (one label set), collected as they are scraped.
#[derive(Default)]
pub(super) struct Collector {
    /// Hash of the histogram's base name and labels but `le`; `None` while idle.
    key: Option<u64>,
    /// The native histogram's labels: the base name, the labels but `le`.
    pub(super) labels: LabelScratch,
    /// The timestamp its series carried (the last one seen).
    pub(super) timestamp_ms: Option<i64>,
    temp: TempHistogram,
}

/// Which classic series of a histogram a sample is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    Bucket,
    Count,
    Sum,
}

impl Part {
    /// The part `name` is of the histogram family `family` (`family_bucket` and so on).
    pub(super) fn of(name: &[u8], family: &[u8]) -> Option<Part> {
        let rest = name.strip_prefix(family)?;
        match rest {
            b"_bucket" => Some(Part::Bucket),
            b"_count" => Some(Part::Count),
            b"_sum" => Some(Part::Sum),
            _ => None,
        }
    }
}

impl Collector {
    /// The key of the histogram `labels` (a classic series' labels) belong to: its base name
    /// and its labels but `le`.
    pub(super) fn key_of(labels: &LabelScratch, family: &[u8]) -> u64 {
        let mut h = xxhash_rust::xxh3::xxh3_64(family);
        for i in 0..labels.len() {
            let n = labels.name(i);
            if n == b"__name__" || n == b"le" {
                continue;
            }
            h = (h ^ xxhash_rust::xxh3::xxh3_64(n)).rotate_left(17);
            h = (h ^ xxhash_rust::xxh3::xxh3_64(labels.value(i)))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
        h
    }

    /// The histogram being collected, if any.
    pub(super) fn key(&self) -> Option<u64> {
        self.key
    }

    /// Adds a classic series' sample (`labels` its labels; `part` which series it is, with
    /// its bound for a bucket).
    pub(super) fn add(
        &mut self,
        key: u64,
        labels: &LabelScratch,
        family: &[u8],
        (part, le): (Part, Option<f64>),
        value: f64,
        timestamp_ms: Option<i64>,
    ) {
        if self.key != Some(key) {
            self.key = Some(key);
            self.temp = TempHistogram::default();
            self.labels.clear();
            self.labels.push(b"__name__", family);
            for i in 0..labels.len() {
                let n = labels.name(i);
                if n != b"__name__" && n != b"le" {
                    self.labels.push(n, labels.value(i));
                }
            }
        }
        self.timestamp_ms = timestamp_ms.or(self.timestamp_ms);
        match (part, le) {
            (Part::Bucket, Some(le)) => self.temp.set_bucket_count(le, value),
            (Part::Bucket, None) => {}
            (Part::Count, _) => self.temp.set_count(value),
            (Part::Sum, _) => self.temp.set_sum(value),
        }
    }

    /// Ends the histogram being collected: its `prometheus.Histogram` message (with
    /// `timestamp_ms`) in `out` and the number of buckets it holds, or `None` when it cannot
    /// be converted (dropped). The labels stay in [`Self::labels`] until the next histogram
    /// starts.
    pub(super) fn finish(&mut self, timestamp_ms: i64, out: &mut Vec<u8>) -> Option<u64> {
        self.key = None;
        let temp = std::mem::take(&mut self.temp);
        let h = temp.convert().ok()?;
        out.clear();
        Some(h.encode(timestamp_ms, out))
    }
}

/// A classic histogram's values as they are collected (Prometheus' `TempHistogram`).
#[derive(Default)]
struct TempHistogram {
    /// (upper bound, cumulative count), sorted by bound.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: f64,
    err: Option<&'static str>,
}

impl TempHistogram {
    fn set_bucket_count(&mut self, le: f64, count: f64) {
        if self.err.is_some() {
            return;
        }
        if le.is_nan() {
            self.err = Some("bucket boundary must not be NaN");
            return;
        }
        if count < 0.0 {
            self.err = Some("bucket count must be non-negative");
            return;
        }
        let i = self.buckets.partition_point(|b| b.0 < le);
        if self.buckets.get(i).is_some_and(|b| b.0 == le) {
            return; // a duplicate sample
        }
        if i > 0 && count < self.buckets[i - 1].1 {
            self.err = Some("count is not cumulative");
            return;
        }
        if self.buckets.get(i).is_some_and(|b| count > b.1) {
            self.err = Some("count is not cumulative");
            return;
        }
        self.buckets.insert(i, (le, count));
    }

    fn set_count(&mut self, count: f64) {
        if self.err.is_some() {
            return;
        }
        if count < 0.0 {
            self.err = Some("count must be non-negative");
            return;
        }
        self.count = Some(count);
    }

    fn set_sum(&mut self, sum: f64) {
        if self.err.is_none() {
            self.sum = sum;
        }
    }

    fn convert(mut self) -> Result<Converted, &'static str> {
        if let Some(e) = self.err {
            return Err(e);
        }
        let count = match self.count {
            Some(c) => c,
            None => self.buckets.last().map_or(0.0, |b| b.1),
        };
        if !self.buckets.is_empty() && self.buckets.last().is_some_and(|b| b.0 != f64::INFINITY) {
            self.buckets.push((f64::INFINITY, count));
        }
        if let Some(last) = self.buckets.last()
            && last.1 != count
        {
            return Err("count mismatch");
        }
        let custom: Vec<f64> = self
            .buckets
            .iter()
            .map(|b| b.0)
            .filter(|le| *le != f64::INFINITY)
            .collect();
        let mut per_bucket = Vec::with_capacity(self.buckets.len());
        let mut prev = 0.0;
        for b in &self.buckets {
            per_bucket.push(b.1 - prev);
            prev = b.1;
        }
        let integer = count.fract() == 0.0 && self.buckets.iter().all(|b| b.1.fract() == 0.0);
        Ok(Converted {
            integer,
            count,
            sum: self.sum,
            per_bucket,
            custom,
        })
    }
}

/// A converted histogram: per-bucket counts over the custom bounds (`+Inf` last).
#[derive(Debug, PartialEq)]
struct Converted {
    integer: bool,
    count: f64,
    sum: f64,
    per_bucket: Vec<f64>,
    custom: Vec<f64>,
}

impl Converted {
    /// The spans over the buckets kept: empty ones are cut at a span's edges, and a run of
    /// more than `max_empty` of them inside starts a new span (Prometheus' `Compact`).
    fn spans(&self, max_empty: usize) -> Vec<(i32, u32, usize)> {
        // (offset, length, first bucket index)
        let b = &self.per_bucket;
        let mut out: Vec<(i32, u32, usize)> = Vec::new();
        let mut i = 0;
        let mut prev_end = 0usize;
        while i < b.len() {
            if b[i] == 0.0 {
                i += 1;
                continue;
            }
            let start = i;
            let mut end = i + 1; // one past the last non-empty bucket of the span
            let mut j = end;
            while j < b.len() {
                if b[j] != 0.0 {
                    end = j + 1;
                    j += 1;
                } else {
                    let zeros = b[j..].iter().take_while(|c| **c == 0.0).count();
                    if zeros > max_empty || j + zeros >= b.len() {
                        break;
                    }
                    j += zeros;
                }
            }
            out.push(((start - prev_end) as i32, (end - start) as u32, start));
            prev_end = end;
            i = end;
        }
        out
    }

    /// The `prometheus.Histogram` message Remote Write carries; returns how many buckets it
    /// holds.
    fn encode(&self, timestamp_ms: i64, out: &mut Vec<u8>) -> u64 {
        use crate::entry::put_varint;
        let tag = |out: &mut Vec<u8>, field: u64, wire: u64| put_varint(out, (field << 3) | wire);
        let zigzag = |v: i64| ((v << 1) ^ (v >> 63)) as u64;
        if self.integer {
            tag(out, 1, 0);
            put_varint(out, self.count as u64);
        } else {
            tag(out, 2, 1);
            out.extend_from_slice(&self.count.to_le_bytes());
        }
        if self.sum != 0.0 || self.sum.is_sign_negative() {
            tag(out, 3, 1);
            out.extend_from_slice(&self.sum.to_le_bytes());
        }
        tag(out, 4, 0);
        put_varint(out, zigzag(i64::from(CUSTOM_BUCKETS_SCHEMA)));
        if self.integer {
            tag(out, 6, 0);
            put_varint(out, 0);
        } else {
            tag(out, 7, 1);
            out.extend_from_slice(&0f64.to_le_bytes());
        }
        let spans = self.spans(if self.integer { 2 } else { 0 });
        let mut span = Vec::new();
        for (offset, length, _) in &spans {
            span.clear();
            if *offset != 0 {
                tag(&mut span, 1, 0);
                put_varint(&mut span, zigzag(i64::from(*offset)));
            }
            tag(&mut span, 2, 0);
            put_varint(&mut span, u64::from(*length));
            tag(out, 11, 2);
            put_varint(out, span.len() as u64);
            out.extend_from_slice(&span);
        }
        let kept = spans
            .iter()
            .flat_map(|(_, len, start)| self.per_bucket[*start..*start + *len as usize].iter());
        let mut packed = Vec::new();
        if self.integer {
            let mut prev = 0i64;
            for c in kept {
                let c = *c as i64;
                put_varint(&mut packed, zigzag(c - prev));
                prev = c;
            }
            if !packed.is_empty() {
                tag(out, 12, 2);
                put_varint(out, packed.len() as u64);
                out.extend_from_slice(&packed);
            }
        } else {
            for c in kept {
                packed.extend_from_slice(&c.to_le_bytes());
            }
            if !packed.is_empty() {
                tag(out, 13, 2);
                put_varint(out, packed.len() as u64);
                out.extend_from_slice(&packed);
            }
        }
        if timestamp_ms != 0 {
            tag(out, 15, 0);
            put_varint(out, timestamp_ms as u64);
        }
        if !self.custom.is_empty() {
            tag(out, 16, 2);
            put_varint(out, self.custom.len() as u64 * 8);
            for v in &self.custom {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        spans.iter().map(|s| u64::from(s.1)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::proto;
    use prost::Message;

    fn decode(t: TempHistogram) -> Result<proto::Histogram, &'static str> {
        let mut out = Vec::new();
        t.convert()?.encode(0, &mut out);
        Ok(proto::Histogram::decode(&out[..]).expect("a valid message"))
    }

    fn span(offset: i32, length: u32) -> proto::BucketSpan {
        proto::BucketSpan { offset, length }
    }

    /// `TestNHCBConvert` of Prometheus' `util/convertnhcb`, case by case.
    #[test]
    fn conversion_matches_prometheus() {
        let inf = f64::INFINITY;
        // empty; sum only
        let h = decode(TempHistogram::default()).unwrap();
        assert_eq!(
            (h.schema, h.count_int, h.positive_spans.len()),
            (-53, Some(0), 0)
        );
        let mut t = TempHistogram::default();
        t.set_sum(1000.25);
        assert_eq!(decode(t).unwrap().sum, 1000.25);
        // single integer bucket: the implied +Inf bucket is empty and compacted away
        let mut t = TempHistogram::default();
        t.set_sum(1000.25);
        t.set_bucket_count(0.5, 1000.0);
        let h = decode(t).unwrap();
        assert_eq!(h.count_int, Some(1000));
        assert_eq!(h.positive_spans, [span(0, 1)]);
        assert_eq!(h.positive_deltas, [1000]);
        assert_eq!(h.custom_values, [0.5]);
        // single float bucket
        let mut t = TempHistogram::default();
        t.set_sum(1000.25);
        t.set_bucket_count(0.5, 1337.42);
        let h = decode(t).unwrap();
        assert_eq!(h.count_float, Some(1337.42));
        assert_eq!(h.positive_spans, [span(0, 1)]);
        assert_eq!(h.positive_counts, [1337.42]);
        assert_eq!(h.custom_values, [0.5]);
        // happy case integer, and in mixed order
        for order in [[0.5, 1.0, inf], [0.5, inf, 1.0]] {
            let mut t = TempHistogram::default();
            let count_of = |le: f64| match le {
                0.5 => 50.0,
                1.0 => 950.0,
                _ => 1000.0,
            };
            for le in order {
                t.set_bucket_count(le, count_of(le));
            }
            t.set_count(1000.0);
            t.set_sum(1000.25);
            let h = decode(t).unwrap();
            assert_eq!(h.count_int, Some(1000));
            assert_eq!(h.sum, 1000.25);
            assert_eq!(h.positive_spans, [span(0, 3)]);
            assert_eq!(h.positive_deltas, [50, 850, -850]);
            assert_eq!(h.custom_values, [0.5, 1.0]);
        }
        // happy case float
        let mut t = TempHistogram::default();
        t.set_count(1000.0);
        t.set_sum(1000.25);
        t.set_bucket_count(0.5, 50.0);
        t.set_bucket_count(1.0, 950.5);
        t.set_bucket_count(inf, 1000.0);
        let h = decode(t).unwrap();
        assert_eq!(h.count_float, Some(1000.0));
        assert_eq!(h.positive_counts, [50.0, 900.5, 49.5]);
        // errors
        let mut t = TempHistogram::default();
        t.set_count(1000.0);
        t.set_bucket_count(0.5, 50.0);
        t.set_bucket_count(1.0, 950.0);
        t.set_bucket_count(inf, 900.0);
        assert_eq!(decode(t).unwrap_err(), "count is not cumulative");
        let mut t = TempHistogram::default();
        t.set_count(-1000.0);
        assert_eq!(decode(t).unwrap_err(), "count must be non-negative");
        let mut t = TempHistogram::default();
        t.set_bucket_count(1.0, 5.0);
        t.set_bucket_count(f64::NAN, 10.0);
        assert_eq!(decode(t).unwrap_err(), "bucket boundary must not be NaN");
        let mut t = TempHistogram::default();
        t.set_count(7.0);
        t.set_bucket_count(inf, 5.0);
        assert_eq!(decode(t).unwrap_err(), "count mismatch");
    }

    /// Empty buckets: cut at the edges, up to two kept inside a span of integer counts, none
    /// for float counts (Prometheus' `Compact(2)` and `Compact(0)`).
    #[test]
    fn empty_buckets_are_compacted() {
        let mut t = TempHistogram::default();
        // per bucket: 0, 3, 0, 0, 2, 0, 0, 0, 1, 0 (+Inf)
        for (i, c) in [0.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0, 5.0, 6.0]
            .iter()
            .enumerate()
        {
            t.set_bucket_count(i as f64, *c);
        }
        let h = decode(t).unwrap();
        assert_eq!(h.positive_spans, [span(1, 4), span(3, 1)]);
        assert_eq!(h.positive_deltas, [3, -3, 0, 2, -1]);
        assert_eq!(h.custom_values.len(), 9);
        let mut t = TempHistogram::default();
        for (i, c) in [0.5, 0.5, 2.5].iter().enumerate() {
            t.set_bucket_count(i as f64, *c);
        }
        let h = decode(t).unwrap();
        assert_eq!(h.positive_spans, [span(0, 1), span(1, 1)]);
        assert_eq!(h.positive_counts, [0.5, 2.0]);
    }
}

#[cfg(test)]
mod entry_tests {
    use super::*;

    #[test]
    fn converted_entries_are_known_as_custom_buckets() {
        let mut t = TempHistogram::default();
        t.set_bucket_count(0.5, 2.0);
        let mut msg = Vec::new();
        t.convert().unwrap().encode(1000, &mut msg);
        let mut labels = LabelScratch::default();
        labels.push(b"__name__", b"h");
        let mut entry = Vec::new();
        crate::entry::encode_histogram_message(&mut entry, &labels, &msg);
        assert!(crate::entry::is_custom_buckets(&entry));
    }
}
