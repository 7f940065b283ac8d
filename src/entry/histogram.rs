//! Native histograms, from the protobuf exposition's `io.prometheus.client.Histogram` to
//! Remote Write's `prometheus.Histogram`, with Prometheus' limits on their resolution
//! (`native_histogram_min_bucket_factor`, `native_histogram_bucket_limit`) applied on the way.
//!
//! Spans have the same layout in both schemas and are copied as they are, and deltas and
//! counts are re-packed, unless a limit merges buckets: then the spans and buckets are
//! decoded, merged into a coarser schema as Prometheus' `reduceResolution` merges them, and
//! written anew.

use std::ops::Range;

use super::put_varint;
use super::varint_len;
use crate::protowire::{WireError, fixed64, key, len_delimited, skip, varint};

/// The exponential schemas: from one bucket boundary to the next is a factor of
/// 2^(2^-schema).
pub const SCHEMA_MIN: i32 = -4;
pub const SCHEMA_MAX: i32 = 8;
/// Schemas reserved for exponential buckets (of a future Prometheus): a job's largest schema
/// reduces them like any other, the bucket limit cannot.
const SCHEMA_RESERVED: std::ops::RangeInclusive<i64> = -9..=52;

/// `prometheus.Histogram.reset_hint` for gauge histograms.
pub const RESET_HINT_GAUGE: i32 = 3;

/// A job's limits on native histogram resolution, applied in Prometheus' order: first the
/// largest schema, then the bucket limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// `native_histogram_bucket_limit`: the most buckets, both sides together; 0 is none.
    pub bucket_limit: u64,
    /// The largest schema `native_histogram_min_bucket_factor` leaves ([`SCHEMA_MAX`]: any).
    pub max_schema: i32,
}

impl Default for Resolution {
    fn default() -> Self {
        Resolution {
            bucket_limit: 0,
            max_schema: SCHEMA_MAX,
        }
    }
}

impl Resolution {
    pub fn new(bucket_limit: u64, min_bucket_factor: f64) -> Resolution {
        Resolution {
            bucket_limit,
            max_schema: pick_schema(min_bucket_factor),
        }
    }

    fn is_unlimited(&self) -> bool {
        self.bucket_limit == 0 && self.max_schema >= SCHEMA_MAX
    }
}

/// Prometheus' `pickSchema`: the largest schema whose growth factor from one bucket to the
/// next, 2^(2^-schema), is at least `factor`, within [`SCHEMA_MIN`, `SCHEMA_MAX`]. A factor
/// of 1 or less (or not a number) sets no limit.
pub fn pick_schema(factor: f64) -> i32 {
    let factor = if factor > 1.0 { factor } else { 1.00271 };
    let floor = (-factor.log2().log2()).floor();
    if floor >= f64::from(SCHEMA_MAX) {
        SCHEMA_MAX
    } else if floor <= f64::from(SCHEMA_MIN) {
        SCHEMA_MIN
    } else {
        floor as i32
    }
}

/// Why a native histogram was not written.
#[derive(Debug, PartialEq, Eq)]
pub enum HistogramError {
    /// Not a valid message, or spans that do not match the buckets.
    Invalid(&'static str),
    /// More buckets than `native_histogram_bucket_limit`, even at the lowest resolution, or
    /// buckets whose resolution cannot be reduced (not exponential).
    BucketLimit,
}

impl From<WireError> for HistogramError {
    fn from(e: WireError) -> Self {
        HistogramError::Invalid(e.0)
    }
}

impl std::fmt::Display for HistogramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistogramError::Invalid(why) => write!(f, "invalid native histogram: {why}"),
            // Prometheus' words, which the scrape fails with.
            HistogramError::BucketLimit => f.write_str("histogram bucket limit exceeded"),
        }
    }
}

/// Reused buffers for [`HistogramScratch::transcode`], so histograms cost no allocation once
/// warm.
#[derive(Default)]
pub struct HistogramScratch {
    body: Vec<u8>,
    /// By side (0 negative, 1 positive): the span messages as found, deltas (zigzag) and
    /// counts (bits) as read.
    spans: [Vec<Range<usize>>; 2],
    deltas: [Vec<u64>; 2],
    counts: [Vec<u64>; 2],
    /// The sides decoded, where a limit applies.
    sides: [Side; 2],
}

/// One side's buckets, decoded.
#[derive(Default)]
struct Side {
    /// (offset, length); the first offset is the first bucket's index.
    spans: Vec<(i32, u32)>,
    deltas: Vec<i64>,
    counts: Vec<f64>,
    /// The spans being built by a reduction.
    reduced: Vec<(i32, u32)>,
}

impl Side {
    /// Buckets the spans hold.
    fn len(&self) -> u64 {
        self.spans.iter().map(|s| u64::from(s.1)).sum()
    }

    /// Merges the buckets from schema `from` into the coarser `to`.
    fn reduce(&mut self, from: i64, to: i64) {
        if !self.counts.is_empty() {
            reduce(
                &self.spans,
                &mut self.counts,
                from,
                to,
                false,
                &mut self.reduced,
            );
        }
        if !self.deltas.is_empty() || self.counts.is_empty() {
            reduce(
                &self.spans,
                &mut self.deltas,
                from,
                to,
                true,
                &mut self.reduced,
            );
        }
        std::mem::swap(&mut self.spans, &mut self.reduced);
    }
}

impl HistogramScratch {
    /// The `prometheus.Histogram` message for the scraped `io.prometheus.client.Histogram`
    /// `client` (its native fields: count, sum, schema, zero bucket, spans, deltas or
    /// counts), its resolution reduced as `limits` ask.
    pub fn transcode(
        &mut self,
        client: &[u8],
        timestamp_ms: i64,
        reset_hint: i32,
        limits: Resolution,
    ) -> Result<&[u8], HistogramError> {
        self.body.clear();
        for v in self.spans.iter_mut() {
            v.clear();
        }
        for v in self.deltas.iter_mut().chain(self.counts.iter_mut()) {
            v.clear();
        }
        let (spans, deltas, counts) = (&mut self.spans, &mut self.deltas, &mut self.counts);
        let (mut count, mut count_float, mut sum, mut schema, mut zt) =
            (None, None, 0u64, None, 0u64);
        let (mut zc, mut zc_float) = (None, None);
        let mut p = 0;
        while p < client.len() {
            let (field, w) = key(client, &mut p)?;
            match (field, w) {
                (1, 0) => count = Some(varint(client, &mut p)?),
                (4, 1) => count_float = Some(fixed64(client, &mut p)?),
                (2, 1) => sum = fixed64(client, &mut p)?,
                (5, 0) => schema = Some(varint(client, &mut p)?),
                (6, 1) => zt = fixed64(client, &mut p)?,
                (7, 0) => zc = Some(varint(client, &mut p)?),
                (8, 1) => zc_float = Some(fixed64(client, &mut p)?),
                (9 | 12, 2) => spans[usize::from(field == 12)].push(len_delimited(client, &mut p)?),
                // Deltas (sint64, zigzag varints) and counts (doubles), packed or not.
                (10 | 13, 0) => deltas[usize::from(field == 13)].push(varint(client, &mut p)?),
                (10 | 13, 2) => {
                    let r = len_delimited(client, &mut p)?;
                    let mut q = r.start;
                    while q < r.end {
                        deltas[usize::from(field == 13)].push(varint(&client[..r.end], &mut q)?);
                    }
                }
                (11 | 14, 1) => counts[usize::from(field == 14)].push(fixed64(client, &mut p)?),
                (11 | 14, 2) => {
                    let r = len_delimited(client, &mut p)?;
                    let mut q = r.start;
                    while q < r.end {
                        counts[usize::from(field == 14)].push(fixed64(&client[..r.end], &mut q)?);
                    }
                }
                _ => skip(client, &mut p, w)?,
            }
        }
        // The schema the buckets were merged into, if a limit merged them.
        let reduced = if limits.is_unlimited() {
            None
        } else {
            self.limit(client, schema.map_or(0, unzigzag), limits)?
        };

        let h = &mut self.body;
        let tag = |h: &mut Vec<u8>, field: u64, wire: u64| put_varint(h, (field << 3) | wire);
        // The count is a oneof: always written, even when zero.
        put_count(h, (1, 2), count, count_float);
        if sum != 0 && f64::from_bits(sum) != 0.0 {
            tag(h, 3, 1);
            h.extend_from_slice(&sum.to_le_bytes());
        }
        // sint32 in both schemas: copied as it is unless the buckets were merged.
        if let Some(s) = reduced.map(zigzag).or(schema).filter(|s| *s != 0) {
            tag(h, 4, 0);
            put_varint(h, s);
        }
        if zt != 0 && f64::from_bits(zt) != 0.0 {
            tag(h, 5, 1);
            h.extend_from_slice(&zt.to_le_bytes());
        }
        put_count(h, (6, 7), zc, zc_float);
        for (side, (span_field, delta_field, count_field)) in
            [(0usize, (8u64, 9u64, 10u64)), (1, (11, 12, 13))]
        {
            if reduced.is_some() {
                let s = &self.sides[side];
                put_spans(h, span_field, &s.spans);
                put_packed(h, delta_field, s.deltas.iter().map(|d| zigzag(*d)));
                if !s.counts.is_empty() {
                    tag(h, count_field, 2);
                    put_varint(h, s.counts.len() as u64 * 8);
                    for c in &s.counts {
                        h.extend_from_slice(&c.to_le_bytes());
                    }
                }
                continue;
            }
            for r in &self.spans[side] {
                tag(h, span_field, 2);
                put_varint(h, r.len() as u64);
                h.extend_from_slice(&client[r.clone()]);
            }
            put_packed(h, delta_field, self.deltas[side].iter().copied());
            if !self.counts[side].is_empty() {
                tag(h, count_field, 2);
                put_varint(h, self.counts[side].len() as u64 * 8);
                for c in &self.counts[side] {
                    h.extend_from_slice(&c.to_le_bytes());
                }
            }
        }
        if reset_hint != 0 {
            tag(h, 14, 0);
            put_varint(h, reset_hint as u64);
        }
        if timestamp_ms != 0 {
            tag(h, 15, 0);
            put_varint(h, timestamp_ms as u64);
        }
        Ok(&self.body)
    }

    /// Applies `limits` as Prometheus' scrape appenders do: a schema above the largest
    /// allowed is reduced to it (maxSchemaAppender), then, while there are more buckets than
    /// the limit, the schema is reduced by one (bucketLimitAppender). The schema the buckets
    /// end in when they were merged (the sides decoded into `self.sides`); `None` when the
    /// histogram stays as it is.
    fn limit(
        &mut self,
        client: &[u8],
        schema: i64,
        limits: Resolution,
    ) -> Result<Option<i64>, HistogramError> {
        self.decode(client)?;
        let buckets = |sides: &[Side; 2]| sides[0].len() + sides[1].len();
        let mut to = schema;
        let max_schema = i64::from(limits.max_schema);
        if max_schema < i64::from(SCHEMA_MAX) && SCHEMA_RESERVED.contains(&to) && to > max_schema {
            for side in &mut self.sides {
                side.reduce(to, max_schema);
            }
            to = max_schema;
        }
        let limit = limits.bucket_limit;
        if limit > 0 && buckets(&self.sides) > limit {
            if !(i64::from(SCHEMA_MIN)..=i64::from(SCHEMA_MAX)).contains(&to) {
                return Err(HistogramError::BucketLimit);
            }
            while buckets(&self.sides) > limit {
                if to <= i64::from(SCHEMA_MIN) {
                    return Err(HistogramError::BucketLimit);
                }
                for side in &mut self.sides {
                    side.reduce(to, to - 1);
                }
                to -= 1;
            }
        }
        Ok((to != schema).then_some(to))
    }

    /// Decodes both sides' spans and buckets into `self.sides`, checking that they agree
    /// (as Prometheus validates a histogram before it appends it).
    fn decode(&mut self, client: &[u8]) -> Result<(), HistogramError> {
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.spans.clear();
            for (n, r) in self.spans[i].iter().enumerate() {
                let span = decode_span(&client[r.clone()])?;
                if n > 0 && span.0 < 0 {
                    return Err(HistogramError::Invalid(
                        "a span after the first has a negative offset",
                    ));
                }
                side.spans.push(span);
            }
            side.deltas.clear();
            side.deltas
                .extend(self.deltas[i].iter().map(|d| unzigzag(*d)));
            side.counts.clear();
            side.counts
                .extend(self.counts[i].iter().map(|c| f64::from_bits(*c)));
            let n = side.len();
            let agree = |len: usize| len as u64 == n;
            let ok = match (side.deltas.len(), side.counts.len()) {
                (0, 0) => n == 0,
                (d, 0) => agree(d),
                (0, c) => agree(c),
                (d, c) => agree(d) && agree(c),
            };
            if !ok {
                return Err(HistogramError::Invalid(
                    "the spans do not hold as many buckets as there are counts",
                ));
            }
        }
        Ok(())
    }
}

/// A bucket's count, as a delta from the one before (integer histograms) or absolute
/// (float histograms).
trait Count: Copy {
    const ZERO: Self;
    fn plus(self, other: Self) -> Self;
    fn minus(self, other: Self) -> Self;
}

impl Count for i64 {
    const ZERO: Self = 0;
    fn plus(self, other: Self) -> Self {
        self.wrapping_add(other)
    }
    fn minus(self, other: Self) -> Self {
        self.wrapping_sub(other)
    }
}

impl Count for f64 {
    const ZERO: Self = 0.0;
    fn plus(self, other: Self) -> Self {
        self + other
    }
    fn minus(self, other: Self) -> Self {
        self - other
    }
}

/// Prometheus' `reduceResolution`: the buckets over `spans` in schema `from` merged into the
/// coarser schema `to`, bucket `i` into bucket `((i - 1) >> (from - to)) + 1`. `buckets` are
/// rewritten in place (a bucket is read before any write reaches it, as merging never adds
/// buckets); the new spans go to `out`. Deltas stay deltas (`delta`); absolute counts add up.
fn reduce<T: Count>(
    spans: &[(i32, u32)],
    buckets: &mut Vec<T>,
    from: i64,
    to: i64,
    delta: bool,
    out: &mut Vec<(i32, u32)>,
) {
    out.clear();
    let shift = (from - to) as u32;
    let (mut idx, mut read, mut written) = (0i64, 0usize, 0usize);
    // The last target bucket's index; the absolute count of the last origin bucket and of
    // the last target bucket (for deltas).
    let (mut last_target, mut last_count, mut last_target_count) = (0i64, T::ZERO, T::ZERO);
    for &(offset, length) in spans {
        idx += i64::from(offset);
        for _ in 0..length {
            let origin = buckets[read];
            read += 1;
            let target = ((idx - 1) >> shift) + 1;
            idx += 1;
            if written == 0 {
                out.push((target as i32, 1));
                buckets[0] = origin;
                written = 1;
                (last_target, last_count, last_target_count) = (target, origin, origin);
                continue;
            }
            if target == last_target {
                if delta {
                    last_count = last_count.plus(origin);
                    buckets[written - 1] = buckets[written - 1].plus(last_count);
                    last_target_count = last_target_count.plus(last_count);
                } else {
                    buckets[written - 1] = buckets[written - 1].plus(origin);
                }
                continue;
            }
            // A new target bucket: next to the last one, or past a gap (a new span).
            match out.last_mut() {
                Some(last) if target == last_target + 1 => last.1 += 1,
                _ => out.push(((target - last_target - 1) as i32, 1)),
            }
            last_target = target;
            buckets[written] = if delta {
                last_count = last_count.plus(origin);
                let d = last_count.minus(last_target_count);
                last_target_count = last_count;
                d
            } else {
                origin
            };
            written += 1;
        }
    }
    buckets.truncate(written);
}

/// A count oneof (`count`, `zero_count`): the float one in field `fields.1` where the
/// scraped message had one, else the integer one (zero if absent) in field `fields.0`.
fn put_count(h: &mut Vec<u8>, fields: (u64, u64), int: Option<u64>, float: Option<u64>) {
    match float {
        Some(bits) => {
            put_varint(h, (fields.1 << 3) | 1);
            h.extend_from_slice(&bits.to_le_bytes());
        }
        None => {
            put_varint(h, fields.0 << 3);
            put_varint(h, int.unwrap_or(0));
        }
    }
}

/// A `BucketSpan` message: (offset, length).
fn decode_span(msg: &[u8]) -> Result<(i32, u32), WireError> {
    let (mut offset, mut length, mut p) = (0i32, 0u32, 0);
    while p < msg.len() {
        let (field, w) = key(msg, &mut p)?;
        match (field, w) {
            (1, 0) => offset = unzigzag(varint(msg, &mut p)?) as i32,
            (2, 0) => length = varint(msg, &mut p)? as u32,
            _ => skip(msg, &mut p, w)?,
        }
    }
    Ok((offset, length))
}

/// Writes each span as a `BucketSpan` message in field `field`.
fn put_spans(h: &mut Vec<u8>, field: u64, spans: &[(i32, u32)]) {
    for &(offset, length) in spans {
        let offset = zigzag(i64::from(offset));
        let len = if offset != 0 {
            1 + varint_len(offset)
        } else {
            0
        } + if length != 0 {
            1 + varint_len(u64::from(length))
        } else {
            0
        };
        put_varint(h, (field << 3) | 2);
        put_varint(h, len as u64);
        if offset != 0 {
            put_varint(h, 1 << 3);
            put_varint(h, offset);
        }
        if length != 0 {
            put_varint(h, 2 << 3);
            put_varint(h, u64::from(length));
        }
    }
}

/// Writes varints packed in field `field`, if there are any.
fn put_packed(h: &mut Vec<u8>, field: u64, values: impl Iterator<Item = u64> + Clone) {
    let len: usize = values.clone().map(varint_len).sum();
    if len == 0 {
        return;
    }
    put_varint(h, (field << 3) | 2);
    put_varint(h, len as u64);
    for v in values {
        put_varint(h, v);
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::super::{LabelScratch, encode_histogram_message, proto};
    use super::*;
    use prost::Message;

    use crate::exposition::client_model::{BucketSpan, Histogram as ClientHistogram};

    /// The spans as Remote Write's schema holds them.
    fn spans(s: &[BucketSpan]) -> Vec<proto::BucketSpan> {
        s.iter()
            .map(|s| proto::BucketSpan {
                offset: s.offset,
                length: s.length,
            })
            .collect()
    }

    fn transcode(c: &ClientHistogram, ts: i64, hint: i32) -> proto::TimeSeries {
        limited(c, ts, hint, Resolution::default()).unwrap()
    }

    /// `c` transcoded under `limits`, as the entry Remote Write carries.
    fn limited(
        c: &ClientHistogram,
        ts: i64,
        hint: i32,
        limits: Resolution,
    ) -> Result<proto::TimeSeries, HistogramError> {
        let mut labels = LabelScratch::default();
        labels.push(b"__name__", b"h");
        let mut scratch = HistogramScratch::default();
        let h = scratch.transcode(&c.encode_to_vec(), ts, hint, limits)?;
        let mut out = Vec::new();
        encode_histogram_message(&mut out, &labels, h);
        let req = proto::WriteRequest::decode(out.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 1);
        Ok(req.timeseries.into_iter().next().unwrap())
    }

    #[test]
    fn integer_histogram_fields_carry_over() {
        let c = ClientHistogram {
            sample_count: Some(12),
            sample_sum: Some(18.4),
            schema: Some(-1),
            zero_threshold: Some(1e-128),
            zero_count: Some(2),
            negative_span: vec![BucketSpan {
                offset: 0,
                length: 2,
            }],
            negative_delta: vec![1, -1],
            positive_span: vec![
                BucketSpan {
                    offset: -2,
                    length: 1,
                },
                BucketSpan {
                    offset: 3,
                    length: 2,
                },
            ],
            positive_delta: vec![1, 2, -3],
            ..Default::default()
        };
        let ts = transcode(&c, 1_700_000_000_123, 0);
        assert_eq!(
            ts.labels,
            vec![proto::Label {
                name: "__name__".into(),
                value: "h".into()
            }]
        );
        assert!(ts.samples.is_empty());
        let h = &ts.histograms[0];
        assert_eq!(h.count_int, Some(12));
        assert_eq!(h.sum, 18.4);
        assert_eq!(h.schema, -1);
        assert_eq!(h.zero_threshold, 1e-128);
        assert_eq!(h.zero_count_int, Some(2));
        assert_eq!(h.negative_spans, spans(&c.negative_span));
        assert_eq!(h.negative_deltas, vec![1, -1]);
        assert_eq!(h.positive_spans, spans(&c.positive_span));
        assert_eq!(h.positive_deltas, vec![1, 2, -3]);
        assert_eq!(h.timestamp, 1_700_000_000_123);
        assert_eq!(h.reset_hint, 0);
    }

    #[test]
    fn float_histogram_and_gauge_hint() {
        let c = ClientHistogram {
            sample_count_float: Some(3.5),
            schema: Some(3),
            positive_span: vec![BucketSpan {
                offset: 1,
                length: 2,
            }],
            positive_count: vec![1.5, 2.0],
            ..Default::default()
        };
        let h = &transcode(&c, 5, RESET_HINT_GAUGE).histograms[0];
        assert_eq!(h.count_float, Some(3.5));
        assert_eq!(h.count_int, None);
        assert_eq!(h.positive_counts, vec![1.5, 2.0]);
        assert_eq!(h.schema, 3);
        assert_eq!(h.reset_hint, RESET_HINT_GAUGE);
        assert_eq!(
            h.zero_count_int,
            Some(0),
            "the zero count is a oneof: always present"
        );
    }

    // Prometheus' TestReduceResolutionHistogram and TestReduceResolutionFloatHistogram
    // (model/histogram/generic_test.go): schema 0 to -1, with an empty span in the middle.
    #[test]
    fn reduce_merges_buckets_as_prometheus() {
        let spans = [(0, 4), (0, 0), (3, 2)];
        let mut out = Vec::new();
        let mut deltas = vec![1i64, 2, -2, 1, -1, 0];
        reduce(&spans, &mut deltas, 0, -1, true, &mut out);
        assert_eq!(out, vec![(0, 3), (1, 1)]);
        assert_eq!(deltas, vec![1, 3, -2, 0]);
        let mut counts = vec![1.0, 3.0, 1.0, 2.0, 1.0, 1.0];
        reduce(&spans, &mut counts, 0, -1, false, &mut out);
        assert_eq!(out, vec![(0, 3), (1, 1)]);
        assert_eq!(counts, vec![1.0, 4.0, 2.0, 2.0]);
    }

    #[test]
    fn reduce_by_several_schemas_at_once_and_below_zero() {
        // Buckets -3..=2 of schema 2 into schema 0 (4 origin buckets per target): -3 falls
        // in target -1+1 = 0 ... as ((i - 1) >> 2) + 1 floors.
        let spans = [(-3, 6)];
        let mut counts = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut out = Vec::new();
        reduce(&spans, &mut counts, 2, 0, false, &mut out);
        // Targets: -3,-2,-1,0 → 0; 1 → 1; 2 → 1.
        assert_eq!(out, vec![(0, 2)]);
        assert_eq!(counts, vec![10.0, 11.0]);
        // The same histogram as deltas reduces to the same counts.
        let mut deltas = vec![1i64, 1, 1, 1, 1, 1];
        reduce(&spans, &mut deltas, 2, 0, true, &mut out);
        assert_eq!(out, vec![(0, 2)]);
        assert_eq!(deltas, vec![10, 1]);
    }

    /// Prometheus' `pickSchema`: the largest schema whose growth factor, 2^(2^-schema), is at
    /// least the factor asked for.
    #[test]
    fn pick_schema_picks_the_largest_schema_with_a_large_enough_factor() {
        for (factor, schema) in [
            (0.0, 8),
            (1.0, 8),
            (f64::NAN, 8),
            (1.001, 8),
            (1.1, 2),
            (1.2, 1),
            (1.5, 0),
            (2.0, 0),
            (3.0, -1),
            (4.0, -1),
            (16.0, -2),
            (65536.0, -4),
            (1e12, -4),
        ] {
            assert_eq!(pick_schema(factor), schema, "factor {factor}");
        }
        for schema in SCHEMA_MIN..=SCHEMA_MAX {
            let growth = 2f64.powf(2f64.powi(-schema));
            // Just under a schema's own factor, it is the one; just over, the next coarser.
            assert_eq!(pick_schema(growth * 0.9999), schema);
            assert_eq!(pick_schema(growth * 1.0001), (schema - 1).max(SCHEMA_MIN));
        }
    }

    fn span(offset: i32, length: u32) -> BucketSpan {
        BucketSpan { offset, length }
    }

    /// Prometheus' `example` of TestBucketLimitAppender: schema 0, three buckets a side.
    fn example(float: bool) -> ClientHistogram {
        let mut h = ClientHistogram {
            sample_count: Some(21),
            sample_sum: Some(33.0),
            schema: Some(0),
            zero_threshold: Some(0.001),
            zero_count: Some(3),
            positive_span: vec![span(0, 3)],
            negative_span: vec![span(0, 3)],
            ..Default::default()
        };
        if float {
            h.sample_count = None;
            h.sample_count_float = Some(21.0);
            h.zero_count = None;
            h.zero_count_float = Some(3.0);
            h.positive_count = vec![3.0; 3];
            h.negative_count = vec![3.0; 3];
        } else {
            h.positive_delta = vec![3, 0, 0];
            h.negative_delta = vec![3, 0, 0];
        }
        h
    }

    /// Prometheus' `bigGap`: buckets (1, 2] and (8, 16] of schema 0.
    fn big_gap(float: bool) -> ClientHistogram {
        let mut h = ClientHistogram {
            sample_count: Some(21),
            sample_sum: Some(33.0),
            schema: Some(0),
            zero_threshold: Some(0.001),
            zero_count: Some(3),
            positive_span: vec![span(1, 1), span(2, 1)],
            positive_delta: vec![1, 0],
            ..Default::default()
        };
        if float {
            h.sample_count_float = Some(21.0);
            h.positive_delta.clear();
            h.positive_count = vec![1.0, 1.0];
        }
        h
    }

    /// Prometheus' `customBuckets`: three buckets of schema -53.
    fn custom_buckets(float: bool) -> ClientHistogram {
        let mut h = ClientHistogram {
            sample_count: Some(9),
            sample_sum: Some(33.0),
            schema: Some(-53),
            positive_span: vec![span(0, 3)],
            positive_delta: vec![3, 0, 0],
            ..Default::default()
        };
        if float {
            h.sample_count_float = Some(9.0);
            h.positive_delta.clear();
            h.positive_count = vec![3.0; 3];
        }
        h
    }

    fn buckets(h: &proto::Histogram) -> usize {
        h.positive_deltas.len()
            + h.negative_deltas.len()
            + h.positive_counts.len()
            + h.negative_counts.len()
    }

    // Prometheus' TestBucketLimitAppender (scrape/target_test.go), integer and float.
    #[test]
    fn bucket_limit_reduces_resolution_as_prometheus() {
        type Make = fn(bool) -> ClientHistogram;
        // (histogram, limit, the buckets and schema it ends with; None: refused)
        type Case = (Make, u64, Option<(usize, i32)>);
        let cases: [Case; 6] = [
            (example, 3, None),
            (example, 4, Some((4, -1))),
            (example, 10, Some((6, 0))),
            (big_gap, 1, Some((1, -2))),
            (custom_buckets, 2, None),
            (custom_buckets, 3, Some((3, -53))),
        ];
        for (make, limit, expect) in cases {
            for float in [false, true] {
                let c = make(float);
                let got = limited(&c, 1000, 0, Resolution::new(limit, 0.0));
                let what = format!("limit {limit}, float {float}, {c:?}");
                match expect {
                    None => assert_eq!(got.err(), Some(HistogramError::BucketLimit), "{what}"),
                    Some((n, schema)) => {
                        let h = &got.expect(&what).histograms[0];
                        assert_eq!((buckets(h), h.schema), (n, schema), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn reduced_histograms_keep_their_counts() {
        // example at limit 4: schema -1, (0.25, 1] and (1, 4] a side: 3 and 6 in each.
        for float in [false, true] {
            let h = limited(&example(float), 1000, 0, Resolution::new(4, 0.0)).unwrap();
            let h = &h.histograms[0];
            let want = vec![proto::BucketSpan {
                offset: 0,
                length: 2,
            }];
            assert_eq!(h.positive_spans, want);
            assert_eq!(h.negative_spans, want);
            if float {
                assert_eq!(h.positive_counts, vec![3.0, 6.0]);
                assert_eq!(h.negative_counts, vec![3.0, 6.0]);
                assert_eq!(h.count_float, Some(21.0));
            } else {
                assert_eq!(h.positive_deltas, vec![3, 3]);
                assert_eq!(h.negative_deltas, vec![3, 3]);
                assert_eq!(h.count_int, Some(21));
            }
            // What a limit leaves alone carries over.
            assert_eq!((h.sum, h.zero_threshold), (33.0, 0.001));
            assert_eq!(h.timestamp, 1000);
        }
        // bigGap at limit 1: one bucket, (1, 16] of schema -2, counting both.
        let h = limited(&big_gap(false), 1000, 0, Resolution::new(1, 0.0)).unwrap();
        let h = &h.histograms[0];
        assert_eq!(
            h.positive_spans,
            vec![proto::BucketSpan {
                offset: 1,
                length: 1
            }]
        );
        assert_eq!(h.positive_deltas, vec![2]);
    }

    // Prometheus' TestMaxSchemaAppender (scrape/target_test.go), integer and float.
    #[test]
    fn min_bucket_factor_caps_the_schema_as_prometheus() {
        type Make = fn(bool) -> ClientHistogram;
        // (histogram, the largest schema, the schema it ends in)
        let cases: [(Make, i32, i32); 3] = [
            (example, -1, -1),
            (example, 0, 0),
            (custom_buckets, -1, -53),
        ];
        for (make, max_schema, want) in cases {
            for float in [false, true] {
                let limits = Resolution {
                    bucket_limit: 0,
                    max_schema,
                };
                let h = limited(&make(float), 1000, 0, limits).unwrap();
                assert_eq!(
                    h.histograms[0].schema, want,
                    "max {max_schema}, float {float}"
                );
            }
        }
        // As configured: a factor of 1.5 allows schema 0 at most, so schema 3 becomes 0.
        let mut h = example(false);
        h.schema = Some(3);
        let got = limited(&h, 1000, 0, Resolution::new(0, 1.5)).unwrap();
        assert_eq!(got.histograms[0].schema, 0);
        // Indexes 0, 1, 2 of schema 3 all fall in bucket 0 and 1 of schema 0.
        assert_eq!(got.histograms[0].positive_deltas, vec![3, 3]);
    }

    #[test]
    fn a_schema_at_the_minimum_cannot_be_reduced_further() {
        let mut h = big_gap(false);
        h.schema = Some(-4);
        h.positive_span = vec![span(0, 1), span(40, 1)];
        assert_eq!(
            limited(&h, 1, 0, Resolution::new(1, 0.0)).err(),
            Some(HistogramError::BucketLimit)
        );
        // Under the limit, it is left alone.
        let h = limited(&h, 1, 0, Resolution::new(2, 0.0)).unwrap();
        assert_eq!(h.histograms[0].schema, -4);
    }

    #[test]
    fn spans_that_disagree_with_the_buckets_are_refused_where_a_limit_applies() {
        let mut h = example(false);
        h.positive_delta.pop();
        let err = limited(&h, 1, 0, Resolution::new(4, 0.0)).unwrap_err();
        assert!(matches!(err, HistogramError::Invalid(_)), "{err:?}");
        assert!(err.to_string().starts_with("invalid native histogram: "));
        let mut h = big_gap(false);
        h.positive_span[1].offset = -2;
        assert!(matches!(
            limited(&h, 1, 0, Resolution::new(1, 0.0)),
            Err(HistogramError::Invalid(_))
        ));
    }

    /// The absolute count of each bucket, by index, as the spans and buckets say.
    fn expand(spans: &[proto::BucketSpan], deltas: &[i64], counts: &[f64]) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        let (mut idx, mut n, mut abs) = (0i64, 0usize, 0i64);
        for s in spans {
            idx += i64::from(s.offset);
            for _ in 0..s.length {
                let c = if counts.is_empty() {
                    abs += deltas[n];
                    abs as f64
                } else {
                    counts[n]
                };
                out.push((idx, c));
                idx += 1;
                n += 1;
            }
        }
        out
    }

    /// Random histograms under random limits, against a plain model of the reduction: each
    /// bucket's count lands in bucket ((i - 1) >> (from - to)) + 1 of the schema reached, the
    /// schema is the largest that meets both limits, and nothing else changes.
    #[test]
    fn random_histograms_reduce_as_the_model_says() {
        let mut rng = crate::testrng::Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move |n: u64| rng.below(n);
        let (mut reduced, mut refusals) = (0, 0);
        for round in 0..3000 {
            let float = next(2) == 0;
            let schema = next(17) as i32 - 6; // -6..=10: reserved ones too
            let mut c = ClientHistogram {
                schema: Some(schema),
                sample_sum: Some(1.5),
                ..Default::default()
            };
            let mut origin = [Vec::new(), Vec::new()];
            for (side, model) in origin.iter_mut().enumerate() {
                let mut idx = next(40) as i64 - 20;
                let mut spans = Vec::new();
                let (mut deltas, mut counts, mut prev) = (Vec::new(), Vec::new(), 0i64);
                for n in 0..next(4) {
                    let offset = if n == 0 { idx } else { next(6) as i64 };
                    if n > 0 {
                        idx += offset;
                    }
                    let length = next(5) as u32;
                    spans.push(span(offset as i32, length));
                    for _ in 0..length {
                        let v = next(10) as i64;
                        deltas.push(v - prev);
                        counts.push(v as f64);
                        prev = v;
                        model.push((idx, v as f64));
                        idx += 1;
                    }
                }
                let (s, d, f) = match side {
                    0 => (
                        &mut c.negative_span,
                        &mut c.negative_delta,
                        &mut c.negative_count,
                    ),
                    _ => (
                        &mut c.positive_span,
                        &mut c.positive_delta,
                        &mut c.positive_count,
                    ),
                };
                *s = spans;
                if float {
                    *f = counts;
                } else {
                    *d = deltas;
                }
            }
            let total: f64 = origin.iter().flatten().map(|b| b.1).sum();
            if float {
                c.sample_count_float = Some(total);
            } else {
                c.sample_count = Some(total as u64);
            }
            let limits = Resolution {
                bucket_limit: next(8),
                max_schema: next(13) as i32 - 4,
            };
            let what = format!("round {round}: {limits:?} {c:?}");
            // The schema the model reaches: the factor's cap, then one step at a time.
            let buckets_at = |to: i32| -> usize {
                origin
                    .iter()
                    .map(|side| {
                        let mut t: Vec<i64> = side
                            .iter()
                            .map(|b| ((b.0 - 1) >> (schema - to)) + 1)
                            .collect();
                        t.dedup();
                        t.len()
                    })
                    .sum()
            };
            let mut to = schema;
            if (-9..=52).contains(&to) && to > limits.max_schema && limits.max_schema < 8 {
                to = limits.max_schema;
            }
            let over = |n: usize| limits.bucket_limit > 0 && n as u64 > limits.bucket_limit;
            let mut refused = over(buckets_at(to)) && !(-4..=8).contains(&to);
            while !refused && over(buckets_at(to)) {
                if to <= -4 {
                    refused = true;
                } else {
                    to -= 1;
                }
            }
            let got = limited(&c, 7, 0, limits);
            if refused {
                assert_eq!(got.err(), Some(HistogramError::BucketLimit), "{what}");
                refusals += 1;
                continue;
            }
            reduced += usize::from(to != schema);
            let h = got.expect(&what).histograms.into_iter().next().unwrap();
            assert_eq!(h.schema, to, "{what}");
            for (side, model) in origin.iter().enumerate() {
                let mut want: Vec<(i64, f64)> = Vec::new();
                for &(i, v) in model {
                    let t = if to == schema {
                        i
                    } else {
                        ((i - 1) >> (schema - to)) + 1
                    };
                    match want.last_mut() {
                        Some(last) if last.0 == t => last.1 += v,
                        _ => want.push((t, v)),
                    }
                }
                let got = match side {
                    0 => expand(&h.negative_spans, &h.negative_deltas, &h.negative_counts),
                    _ => expand(&h.positive_spans, &h.positive_deltas, &h.positive_counts),
                };
                if to == schema {
                    // Untouched: the spans as they came (empty ones included).
                    assert_eq!(got, model.clone(), "{what}");
                } else {
                    assert_eq!(got, want, "side {side}, {what}");
                }
            }
            assert_eq!((h.sum, h.timestamp), (1.5, 7), "{what}");
        }
        // Both outcomes were exercised, often.
        assert!(reduced > 300 && refusals > 300, "{reduced} {refusals}");
    }

    #[test]
    fn mutated_messages_never_panic_under_limits() {
        let mut rng = crate::testrng::Rng::new(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| rng.below(n);
        let mut scratch = HistogramScratch::default();
        for make in [example, big_gap, custom_buckets] {
            for float in [false, true] {
                let good = make(float).encode_to_vec();
                for _ in 0..2000 {
                    let mut m = good.clone();
                    for _ in 0..1 + next(3) {
                        let i = next(m.len() as u64) as usize;
                        m[i] = next(256) as u8;
                    }
                    let limits = Resolution {
                        bucket_limit: next(4),
                        max_schema: next(13) as i32 - 4,
                    };
                    let _ = scratch.transcode(&m, 1, 0, limits);
                }
            }
        }
    }
}
