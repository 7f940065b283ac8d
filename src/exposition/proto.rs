//! The protobuf exposition format: length-delimited `io.prometheus.client.MetricFamily`
//! messages. Classic series come out as Prometheus makes them: counters, gauges and untyped as
//! one sample; summaries as `_count`, `_sum` and one sample per `quantile`; histograms as
//! `_count`, `_sum` and one `_bucket` per `le`, with the `+Inf` bucket added when absent.
//! With `scrape_native_histograms`, a native histogram comes out as one sample carrying its
//! message bytes (transcoded later by `entry::encode_histogram_series`), followed by its classic
//! series where `always_scrape_classic_histograms` asks for them; without it, as classic series.
//!
//! Names and label pairs are slices of the buffer; `le`/`quantile` values are floats the
//! consumer formats ([`super::Sample::extra_label`]).

use std::ops::Range;

use super::{Exemplar, LabelRef, ParseError, Sample};
use crate::protowire::{WireError, fixed64, key, len_delimited, skip, varint};

const COUNTER: u64 = 0;
const GAUGE: u64 = 1;
const SUMMARY: u64 = 2;
const UNTYPED: u64 = 3;
const HISTOGRAM: u64 = 4;
const GAUGE_HISTOGRAM: u64 = 5;

/// The suffix marking a native histogram sample (never a real name suffix).
const NATIVE: &[u8] = b"\0native";

/// One derived sample: (name suffix, extra float label, value).
type Derived = (&'static [u8], Option<(&'static [u8], f64)>, f64);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    /// Counter, gauge, untyped: the one value.
    Single,
    /// A native histogram, then its classic series when `keep_classic` and it has buckets.
    Native,
    Count,
    Sum,
    /// Quantiles or buckets, read from the submessage at this cursor.
    Repeated(usize),
    InfBucket,
    Done,
}

pub struct ProtoParser<'a, 's> {
    buf: &'a [u8],
    /// Start of the next MetricFamily's length prefix.
    next_family: usize,
    family_name: Range<usize>,
    family_type: u64,
    /// Where family metadata goes, when the caller wants it.
    pub(super) meta: Option<&'s mut Vec<super::FamilyMeta>>,
    /// The current family's body and the cursor over its fields.
    family_body: Range<usize>,
    family_cursor: usize,
    scratch: &'s mut Vec<LabelRef>,
    // The current metric.
    stage: Stage,
    value: f64,
    count: f64,
    sum: f64,
    timestamp_ms: Option<i64>,
    /// The current metric's `created_timestamp`, in milliseconds.
    created_ms: Option<i64>,
    /// The summary or histogram submessage.
    sub: Range<usize>,
    float_histogram: bool,
    inf_seen: bool,
    done: bool,
    /// Native histogram ingestion (`scrape_native_histograms`).
    native: bool,
    /// Classic series of native histograms too (`always_scrape_classic_histograms`).
    keep_classic: bool,
    has_buckets: bool,
    is_native: bool,
    /// How many labels of the scratch are the metric's; an exemplar's follow them.
    metric_labels: usize,
    /// The current sample's exemplar (value, timestamp), its labels after `metric_labels`.
    exemplar: Option<(f64, Option<i64>)>,
}

fn err(at: usize, reason: &str) -> ParseError {
    ParseError {
        line: 0,
        column: at + 1,
        reason: reason.to_string(),
        excerpt: String::new(),
    }
}

fn wire(at: usize) -> impl Fn(WireError) -> ParseError {
    move |e| err(at, &format!("invalid protobuf: {}", e.0))
}

impl<'a, 's> ProtoParser<'a, 's> {
    pub fn new(buf: &'a [u8], scratch: &'s mut Vec<LabelRef>) -> Self {
        Self::with_options(buf, scratch, false, false)
    }

    /// With native histograms ingested as such (`native`), and their classic series kept as
    /// well (`keep_classic`).
    pub fn with_options(
        buf: &'a [u8],
        scratch: &'s mut Vec<LabelRef>,
        native: bool,
        keep_classic: bool,
    ) -> Self {
        ProtoParser {
            buf,
            next_family: 0,
            family_name: 0..0,
            family_type: UNTYPED,
            meta: None,
            family_body: 0..0,
            family_cursor: 0,
            scratch,
            stage: Stage::Done,
            value: 0.0,
            count: 0.0,
            sum: 0.0,
            timestamp_ms: None,
            created_ms: None,
            sub: 0..0,
            float_histogram: false,
            inf_seen: false,
            done: false,
            native,
            keep_classic,
            has_buckets: false,
            is_native: false,
            metric_labels: 0,
            exemplar: None,
        }
    }

    #[allow(clippy::should_implement_trait)] // lends from self: cannot be an Iterator
    pub fn next(&mut self) -> Option<Result<Sample<'a, '_>, ParseError>> {
        if self.done {
            return None;
        }
        match self.advance() {
            Ok(Some((suffix, extra, value))) => {
                let native = suffix == NATIVE;
                let (labels, ex_labels) = self.scratch.split_at(self.metric_labels);
                Some(Ok(Sample {
                    name: &self.buf[self.family_name.clone()],
                    name_escaped: false,
                    name_suffix: if native { b"" } else { suffix },
                    labels,
                    extra_label: extra,
                    native: native.then(|| (self.sub.clone(), self.family_type == GAUGE_HISTOGRAM)),
                    value,
                    timestamp_ms: self.timestamp_ms,
                    created_ms: self.created_ms,
                    exemplar: self.exemplar.map(|(value, timestamp_ms)| Exemplar {
                        labels: ex_labels,
                        value,
                        timestamp_ms,
                    }),
                    // The classic series of a histogram scraped as a native one too are not
                    // converted again (Prometheus keeps them classic).
                    histogram_family: (!native
                        && self.family_type == HISTOGRAM
                        && !(self.native && self.is_native))
                        .then(|| &self.buf[self.family_name.clone()]),
                }))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// Moves to the next sample: (name suffix, extra label, value), or None at the end.
    #[allow(clippy::type_complexity)]
    fn advance(&mut self) -> Result<Option<Derived>, ParseError> {
        self.scratch.truncate(self.metric_labels);
        self.exemplar = None;
        loop {
            let is_hist = matches!(self.family_type, HISTOGRAM | GAUGE_HISTOGRAM);
            match self.stage {
                Stage::Single => {
                    self.stage = Stage::Done;
                    if self.family_type == COUNTER {
                        self.counter_exemplar()?;
                    }
                    return Ok(Some((b"", None, self.value)));
                }
                Stage::Native => {
                    self.stage = if self.keep_classic && self.has_buckets {
                        Stage::Count
                    } else {
                        Stage::Done
                    };
                    return Ok(Some((NATIVE, None, f64::NAN)));
                }
                Stage::Count => {
                    self.stage = Stage::Sum;
                    return Ok(Some((b"_count", None, self.count)));
                }
                Stage::Sum => {
                    self.stage = Stage::Repeated(self.sub.start);
                    return Ok(Some((b"_sum", None, self.sum)));
                }
                Stage::Repeated(mut p) => {
                    let buf = self.buf;
                    let end = self.sub.end;
                    // Find the next field 3 (quantile or bucket) of the submessage.
                    let mut item = None;
                    while p < end {
                        let (field, w) = key(&buf[..end], &mut p).map_err(wire(p))?;
                        if field == 3 && w == 2 {
                            item = Some(len_delimited(&buf[..end], &mut p).map_err(wire(p))?);
                            break;
                        }
                        skip(&buf[..end], &mut p, w).map_err(wire(p))?;
                    }
                    let Some(item) = item else {
                        self.stage = if is_hist && !self.inf_seen {
                            Stage::InfBucket
                        } else {
                            Stage::Done
                        };
                        continue;
                    };
                    self.stage = Stage::Repeated(p);
                    return Ok(Some(if is_hist {
                        self.bucket(item)?
                    } else {
                        self.quantile(item)?
                    }));
                }
                Stage::InfBucket => {
                    self.stage = Stage::Done;
                    return Ok(Some((b"_bucket", Some((b"le", f64::INFINITY)), self.count)));
                }
                Stage::Done => {
                    if !self.next_metric()? {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn quantile(&self, item: Range<usize>) -> Result<Derived, ParseError> {
        let (mut q, mut v) = (0.0, 0.0);
        let buf = &self.buf[..item.end];
        let mut p = item.start;
        while p < item.end {
            let (field, w) = key(buf, &mut p).map_err(wire(p))?;
            match (field, w) {
                (1, 1) => q = f64::from_bits(fixed64(buf, &mut p).map_err(wire(p))?),
                (2, 1) => v = f64::from_bits(fixed64(buf, &mut p).map_err(wire(p))?),
                _ => skip(buf, &mut p, w).map_err(wire(p))?,
            }
        }
        Ok((b"", Some((b"quantile", q)), v))
    }

    fn bucket(&mut self, item: Range<usize>) -> Result<Derived, ParseError> {
        let (mut upper, mut count, mut count_float) = (0.0, 0u64, 0.0);
        let buf = &self.buf[..item.end];
        let mut p = item.start;
        while p < item.end {
            let (field, w) = key(buf, &mut p).map_err(wire(p))?;
            match (field, w) {
                (1, 0) => count = varint(buf, &mut p).map_err(wire(p))?,
                (2, 1) => upper = f64::from_bits(fixed64(buf, &mut p).map_err(wire(p))?),
                (3, 2) => {
                    let ex = len_delimited(buf, &mut p).map_err(wire(p))?;
                    self.read_exemplar(ex)?;
                }
                (4, 1) => count_float = f64::from_bits(fixed64(buf, &mut p).map_err(wire(p))?),
                _ => skip(buf, &mut p, w).map_err(wire(p))?,
            }
        }
        if upper == f64::INFINITY {
            self.inf_seen = true;
        }
        let value = if self.float_histogram {
            count_float
        } else {
            count as f64
        };
        Ok((b"_bucket", Some((b"le", upper)), value))
    }

    /// Decodes the next Metric (moving to the next family when needed); false at the end.
    fn next_metric(&mut self) -> Result<bool, ParseError> {
        let buf = self.buf;
        loop {
            // Next field 4 (metric) of the current family.
            let end = self.family_body.end;
            while self.family_cursor < end {
                let at = self.family_cursor;
                let (field, w) = key(&buf[..end], &mut self.family_cursor).map_err(wire(at))?;
                if field == 4 && w == 2 {
                    let m =
                        len_delimited(&buf[..end], &mut self.family_cursor).map_err(wire(at))?;
                    self.decode_metric(m)?;
                    return Ok(true);
                }
                skip(&buf[..end], &mut self.family_cursor, w).map_err(wire(at))?;
            }
            // Next family.
            if self.next_family >= buf.len() {
                return Ok(false);
            }
            let at = self.next_family;
            let body = len_delimited(buf, &mut self.next_family).map_err(wire(at))?;
            self.family_name = 0..0;
            self.family_type = COUNTER; // the proto default
            let (mut help, mut unit) = (None, None);
            let mut p = body.start;
            while p < body.end {
                let (field, w) = key(&buf[..body.end], &mut p).map_err(wire(p))?;
                match (field, w) {
                    (1, 2) => {
                        self.family_name =
                            len_delimited(&buf[..body.end], &mut p).map_err(wire(p))?
                    }
                    (2, 2) => {
                        help = Some(len_delimited(&buf[..body.end], &mut p).map_err(wire(p))?)
                    }
                    (5, 2) => {
                        unit = Some(len_delimited(&buf[..body.end], &mut p).map_err(wire(p))?)
                    }
                    (3, 0) => {
                        self.family_type = varint(&buf[..body.end], &mut p).map_err(wire(p))?
                    }
                    _ => skip(&buf[..body.end], &mut p, w).map_err(wire(p))?,
                }
            }
            if self.family_name.is_empty() {
                return Err(err(at, "metric family without a name"));
            }
            if std::str::from_utf8(&buf[self.family_name.clone()]).is_err() {
                return Err(err(at, "metric family name is not valid UTF-8"));
            }
            if self.family_type > GAUGE_HISTOGRAM {
                return Err(err(
                    at,
                    &format!("unknown metric type {}", self.family_type),
                ));
            }
            if let Some(sink) = self.meta.as_deref_mut() {
                use super::MetricType;
                let mtype = match self.family_type {
                    COUNTER => MetricType::Counter,
                    GAUGE => MetricType::Gauge,
                    SUMMARY => MetricType::Summary,
                    HISTOGRAM => MetricType::Histogram,
                    GAUGE_HISTOGRAM => MetricType::GaugeHistogram,
                    _ => MetricType::Unknown,
                };
                sink.push(super::FamilyMeta {
                    name: self.family_name.clone(),
                    mtype: Some(mtype),
                    help: help.filter(|h: &Range<usize>| !h.is_empty()),
                    unit: unit.filter(|u: &Range<usize>| !u.is_empty()),
                });
            }
            self.family_cursor = body.start;
            self.family_body = body;
        }
    }

    /// Appends a `LabelPair` message to the scratch.
    fn push_label_pair(&mut self, pair: Range<usize>, at: usize) -> Result<(), ParseError> {
        let buf = &self.buf[..pair.end];
        let (mut name, mut value) = (pair.start..pair.start, pair.start..pair.start);
        let mut q = pair.start;
        while q < pair.end {
            let (f, w) = key(buf, &mut q).map_err(wire(q))?;
            match (f, w) {
                (1, 2) => name = len_delimited(buf, &mut q).map_err(wire(q))?,
                (2, 2) => value = len_delimited(buf, &mut q).map_err(wire(q))?,
                _ => skip(buf, &mut q, w).map_err(wire(q))?,
            }
        }
        if std::str::from_utf8(&buf[value.clone()]).is_err() {
            return Err(err(at, "invalid UTF-8 label value"));
        }
        self.scratch.push(LabelRef {
            name: (name.start as u32, name.end as u32),
            value: (value.start as u32, value.end as u32),
            escaped: false,
            name_escaped: false,
            float_value: false,
        });
        Ok(())
    }

    /// The exemplar of the current counter (`Counter.exemplar`, field 2), if any.
    fn counter_exemplar(&mut self) -> Result<(), ParseError> {
        let sub = self.sub.clone();
        let buf = &self.buf[..sub.end];
        let mut p = sub.start;
        while p < sub.end {
            let (field, w) = key(buf, &mut p).map_err(wire(p))?;
            if (field, w) == (2, 2) {
                let ex = len_delimited(buf, &mut p).map_err(wire(p))?;
                return self.read_exemplar(ex);
            }
            skip(buf, &mut p, w).map_err(wire(p))?;
        }
        Ok(())
    }

    /// An `Exemplar` message: labels to the scratch, value and timestamp to `self.exemplar`.
    /// The timestamp is milliseconds from `seconds` and `nanos`, as Prometheus takes it.
    fn read_exemplar(&mut self, ex: Range<usize>) -> Result<(), ParseError> {
        let buf = &self.buf[..ex.end];
        let (mut value, mut timestamp_ms) = (0.0, None);
        let mut p = ex.start;
        while p < ex.end {
            let at = p;
            let (field, w) = key(buf, &mut p).map_err(wire(at))?;
            match (field, w) {
                (1, 2) => {
                    let pair = len_delimited(buf, &mut p).map_err(wire(at))?;
                    self.push_label_pair(pair, at)?;
                }
                (2, 1) => value = f64::from_bits(fixed64(buf, &mut p).map_err(wire(at))?),
                (3, 2) => {
                    let ts = len_delimited(buf, &mut p).map_err(wire(at))?;
                    let (mut secs, mut nanos) = (0i64, 0i64);
                    let mut q = ts.start;
                    while q < ts.end {
                        let (f, w) = key(&buf[..ts.end], &mut q).map_err(wire(q))?;
                        match (f, w) {
                            (1, 0) => {
                                secs = varint(&buf[..ts.end], &mut q).map_err(wire(q))? as i64
                            }
                            (2, 0) => {
                                nanos =
                                    varint(&buf[..ts.end], &mut q).map_err(wire(q))? as i32 as i64
                            }
                            _ => skip(&buf[..ts.end], &mut q, w).map_err(wire(q))?,
                        }
                    }
                    timestamp_ms =
                        Some(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000));
                }
                _ => skip(buf, &mut p, w).map_err(wire(at))?,
            }
        }
        self.exemplar = Some((value, timestamp_ms));
        Ok(())
    }

    fn decode_metric(&mut self, m: Range<usize>) -> Result<(), ParseError> {
        let buf = &self.buf[..m.end];
        self.scratch.clear();
        self.timestamp_ms = None;
        self.created_ms = None;
        self.value = 0.0;
        self.count = 0.0;
        self.sum = 0.0;
        self.sub = 0..0;
        self.float_histogram = false;
        self.inf_seen = false;
        self.has_buckets = false;
        self.is_native = false;
        let want_sub = match self.family_type {
            SUMMARY => 4,
            HISTOGRAM | GAUGE_HISTOGRAM => 7,
            COUNTER => 3,
            GAUGE => 2,
            _ => 5,
        };
        let mut p = m.start;
        while p < m.end {
            let at = p;
            let (field, w) = key(buf, &mut p).map_err(wire(at))?;
            match (field, w) {
                (1, 2) => {
                    let pair = len_delimited(buf, &mut p).map_err(wire(at))?;
                    self.push_label_pair(pair, at)?;
                }
                (6, 0) => {
                    let ts = varint(buf, &mut p).map_err(wire(at))? as i64;
                    self.timestamp_ms = (ts != 0).then_some(ts);
                }
                (f, 2) if f == want_sub => {
                    self.sub = len_delimited(buf, &mut p).map_err(wire(at))?
                }
                _ => skip(buf, &mut p, w).map_err(wire(at))?,
            }
        }
        // Scalar fields of the submessage.
        let sub = self.sub.clone();
        let mut p = sub.start;
        let mut count_float = None;
        while p < sub.end {
            let at = p;
            let (field, w) = key(&buf[..sub.end], &mut p).map_err(wire(at))?;
            match (self.family_type, field, w) {
                (COUNTER | GAUGE | UNTYPED, 1, 1) => {
                    self.value = f64::from_bits(fixed64(buf, &mut p).map_err(wire(at))?)
                }
                (SUMMARY | HISTOGRAM | GAUGE_HISTOGRAM, 1, 0) => {
                    self.count = varint(buf, &mut p).map_err(wire(at))? as f64
                }
                (SUMMARY | HISTOGRAM | GAUGE_HISTOGRAM, 2, 1) => {
                    self.sum = f64::from_bits(fixed64(buf, &mut p).map_err(wire(at))?)
                }
                // `created_timestamp`: Counter 3, Summary 4, Histogram 15.
                (COUNTER, 3, 2) | (SUMMARY, 4, 2) | (HISTOGRAM, 15, 2) => {
                    let t = len_delimited(&buf[..sub.end], &mut p).map_err(wire(at))?;
                    self.created_ms = Some(timestamp(&buf[..t.end], t.start)?);
                }
                (HISTOGRAM | GAUGE_HISTOGRAM, 4, 1) => {
                    count_float = Some(f64::from_bits(fixed64(buf, &mut p).map_err(wire(at))?))
                }
                (HISTOGRAM | GAUGE_HISTOGRAM, 3, _) => {
                    self.has_buckets = true;
                    skip(&buf[..sub.end], &mut p, w).map_err(wire(at))?;
                }
                // Prometheus calls a histogram native when it has spans, a zero threshold or
                // a zero count (`isNativeHistogram`).
                (HISTOGRAM | GAUGE_HISTOGRAM, 9 | 12, _) => {
                    self.is_native = true;
                    skip(&buf[..sub.end], &mut p, w).map_err(wire(at))?;
                }
                (HISTOGRAM | GAUGE_HISTOGRAM, 6, 1) => {
                    self.is_native |= f64::from_bits(fixed64(buf, &mut p).map_err(wire(at))?) > 0.0;
                }
                (HISTOGRAM | GAUGE_HISTOGRAM, 7, 0) => {
                    self.is_native |= varint(buf, &mut p).map_err(wire(at))? > 0;
                }
                _ => skip(&buf[..sub.end], &mut p, w).map_err(wire(at))?,
            }
        }
        if let Some(c) = count_float {
            self.count = c;
            self.float_histogram = true;
        }
        self.metric_labels = self.scratch.len();
        self.stage = match self.family_type {
            HISTOGRAM | GAUGE_HISTOGRAM if self.native && self.is_native => Stage::Native,
            SUMMARY | HISTOGRAM | GAUGE_HISTOGRAM => Stage::Count,
            _ => Stage::Single,
        };
        Ok(())
    }
}

/// A `google.protobuf.Timestamp` message starting at `p`: milliseconds from `seconds` and
/// `nanos`.
fn timestamp(buf: &[u8], mut p: usize) -> Result<i64, ParseError> {
    let (mut secs, mut nanos) = (0i64, 0i64);
    while p < buf.len() {
        let (field, w) = key(buf, &mut p).map_err(wire(p))?;
        match (field, w) {
            (1, 0) => secs = varint(buf, &mut p).map_err(wire(p))? as i64,
            (2, 0) => nanos = varint(buf, &mut p).map_err(wire(p))? as i32 as i64,
            _ => skip(buf, &mut p, w).map_err(wire(p))?,
        }
    }
    Ok(secs.saturating_mul(1000).saturating_add(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    use super::super::client_model::{
        Bucket, Exemplar, Histogram, LabelPair, Metric, MetricFamily, Quantile, Summary, Timestamp,
        Value,
    };

    fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
        pairs
            .iter()
            .map(|(n, v)| LabelPair {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect()
    }

    fn metric(l: &[(&str, &str)]) -> Metric {
        Metric {
            label: labels(l),
            ..Default::default()
        }
    }

    /// Parses into `name[suffix]{labels,extra} value @ts` lines.
    fn parse(families: &[MetricFamily]) -> Result<Vec<String>, ParseError> {
        let mut body = Vec::new();
        for f in families {
            f.encode_length_delimited(&mut body).unwrap();
        }
        let mut scratch = Vec::new();
        let mut p = ProtoParser::new(&body, &mut scratch);
        let mut out = Vec::new();
        while let Some(s) = p.next() {
            let s = s?;
            let mut line = format!(
                "{}{}",
                String::from_utf8_lossy(s.name),
                String::from_utf8_lossy(s.name_suffix)
            );
            let render = |labels: &[LabelRef]| -> Vec<String> {
                labels
                    .iter()
                    .map(|l| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(l.name(&body)),
                            String::from_utf8_lossy(l.value(&body))
                        )
                    })
                    .collect()
            };
            let mut ls = render(s.labels);
            if let Some((n, v)) = s.extra_label {
                let mut f = Vec::new();
                super::super::format_go_float(v, &mut f);
                ls.push(format!(
                    "{}={}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(&f)
                ));
            }
            line.push_str(&format!("{{{}}} {}", ls.join(","), s.value));
            if let Some(ts) = s.timestamp_ms {
                line.push_str(&format!(" @{ts}"));
            }
            if let Some(ct) = s.created_ms {
                line.push_str(&format!(" ct={ct}"));
            }
            if let Some(ex) = s.exemplar {
                let ls = render(ex.labels);
                line.push_str(&format!(" # {{{}}} {}", ls.join(","), ex.value));
                if let Some(ts) = ex.timestamp_ms {
                    line.push_str(&format!(" @{ts}"));
                }
            }
            out.push(line);
        }
        Ok(out)
    }

    #[test]
    fn created_timestamps_of_counters_summaries_and_histograms() {
        let ts = |seconds, nanos| Some(Timestamp { seconds, nanos });
        let families = vec![
            MetricFamily {
                name: "jobs_total".into(),
                r#type: 0,
                metric: vec![Metric {
                    counter: Some(Value {
                        value: 2.0,
                        exemplar: None,
                        created_timestamp: ts(1_700_000_000, 250_000_000),
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "rpc".into(),
                r#type: 2,
                metric: vec![Metric {
                    summary: Some(Summary {
                        sample_count: 1,
                        sample_sum: 0.5,
                        quantile: vec![],
                        created_timestamp: ts(1_600_000_000, 0),
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "lat".into(),
                r#type: 4,
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(1),
                        sample_sum: Some(0.5),
                        created_timestamp: ts(1_500_000_000, 0),
                        ..Default::default()
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
        ];
        assert_eq!(
            parse(&families).unwrap(),
            [
                "jobs_total{} 2 ct=1700000000250",
                "rpc_count{} 1 ct=1600000000000",
                "rpc_sum{} 0.5 ct=1600000000000",
                "lat_count{} 1 ct=1500000000000",
                "lat_sum{} 0.5 ct=1500000000000",
                "lat_bucket{le=+Inf} 1 ct=1500000000000",
            ]
        );
    }

    #[test]
    fn counter_and_bucket_exemplars() {
        let ex = |trace: &str, value, ts: Option<(i64, i32)>| Exemplar {
            label: labels(&[("trace_id", trace)]),
            value,
            timestamp: ts.map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        };
        let bucket = |count, upper, exemplar| Bucket {
            cumulative_count: Some(count),
            upper_bound: Some(upper),
            cumulative_count_float: None,
            exemplar,
        };
        let families = vec![
            MetricFamily {
                name: "requests_total".into(),
                r#type: 0,
                metric: vec![Metric {
                    counter: Some(Value {
                        value: 7.0,
                        exemplar: Some(ex("abc", 1.0, Some((1_520_879_607, 789_000_000)))),
                        created_timestamp: None,
                    }),
                    ..metric(&[("code", "200")])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "latency".into(),
                r#type: 4,
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(3),
                        sample_sum: Some(0.5),
                        bucket: vec![
                            bucket(1, 0.1, Some(ex("t1", 0.05, None))),
                            bucket(3, 1.0, None),
                        ],
                        ..Default::default()
                    }),
                    ..metric(&[("a", "b")])
                }],
                ..Default::default()
            },
        ];
        assert_eq!(
            parse(&families).unwrap(),
            [
                "requests_total{code=200} 7 # {trace_id=abc} 1 @1520879607789",
                "latency_count{a=b} 3",
                "latency_sum{a=b} 0.5",
                "latency_bucket{a=b,le=0.1} 1 # {trace_id=t1} 0.05",
                "latency_bucket{a=b,le=1.0} 3",
                "latency_bucket{a=b,le=+Inf} 3",
            ]
        );
    }

    #[test]
    fn classic_series_as_prometheus_derives_them() {
        let families = vec![
            MetricFamily {
                name: "requests_total".into(),
                help: "Requests.".into(),
                r#type: 0,
                metric: vec![Metric {
                    counter: Some(Value {
                        value: 7.0,
                        exemplar: None,
                        created_timestamp: None,
                    }),
                    timestamp_ms: 1_700_000_000_000,
                    ..metric(&[("code", "200"), ("method", "get")])
                }],
            },
            MetricFamily {
                name: "temp".into(),
                r#type: 1,
                metric: vec![Metric {
                    gauge: Some(Value {
                        value: -1.5,
                        exemplar: None,
                        created_timestamp: None,
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "raw".into(),
                r#type: 3,
                metric: vec![Metric {
                    untyped: Some(Value {
                        value: 3.0,
                        exemplar: None,
                        created_timestamp: None,
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "rpc_seconds".into(),
                r#type: 2,
                metric: vec![Metric {
                    summary: Some(Summary {
                        sample_count: 10,
                        sample_sum: 2.5,
                        quantile: vec![
                            Quantile {
                                quantile: 0.5,
                                value: 0.2,
                            },
                            Quantile {
                                quantile: 1.0,
                                value: 0.9,
                            },
                        ],
                        created_timestamp: None,
                    }),
                    ..metric(&[("svc", "a")])
                }],
                ..Default::default()
            },
            MetricFamily {
                name: "lat_seconds".into(),
                r#type: 4,
                metric: vec![Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(5),
                        sample_sum: Some(1.25),
                        bucket: vec![
                            Bucket {
                                cumulative_count: Some(2),
                                upper_bound: Some(0.1),
                                cumulative_count_float: None,
                                exemplar: None,
                            },
                            Bucket {
                                cumulative_count: Some(4),
                                upper_bound: Some(1.0),
                                cumulative_count_float: None,
                                exemplar: None,
                            },
                        ],
                        ..Default::default()
                    }),
                    ..metric(&[])
                }],
                ..Default::default()
            },
        ];
        assert_eq!(
            parse(&families).unwrap(),
            vec![
                "requests_total{code=200,method=get} 7 @1700000000000",
                "temp{} -1.5",
                "raw{} 3",
                "rpc_seconds_count{svc=a} 10",
                "rpc_seconds_sum{svc=a} 2.5",
                "rpc_seconds{svc=a,quantile=0.5} 0.2",
                "rpc_seconds{svc=a,quantile=1.0} 0.9",
                "lat_seconds_count{} 5",
                "lat_seconds_sum{} 1.25",
                "lat_seconds_bucket{le=0.1} 2",
                "lat_seconds_bucket{le=1.0} 4",
                "lat_seconds_bucket{le=+Inf} 5",
            ]
        );
    }

    #[test]
    fn float_and_native_only_histograms() {
        let families = vec![MetricFamily {
            name: "h".into(),
            r#type: 4,
            metric: vec![
                Metric {
                    histogram: Some(Histogram {
                        sample_count_float: Some(2.5),
                        sample_sum: Some(1.0),
                        bucket: vec![Bucket {
                            cumulative_count: Some(0),
                            upper_bound: Some(f64::INFINITY),
                            cumulative_count_float: Some(2.5),
                            exemplar: None,
                        }],
                        ..Default::default()
                    }),
                    ..metric(&[("k", "float")])
                },
                // Native parts only: Prometheus without native ingestion keeps count, sum, +Inf.
                Metric {
                    histogram: Some(Histogram {
                        sample_count: Some(3),
                        sample_sum: Some(4.0),
                        schema: Some(3),
                        ..Default::default()
                    }),
                    ..metric(&[("k", "native")])
                },
            ],
            ..Default::default()
        }];
        assert_eq!(
            parse(&families).unwrap(),
            vec![
                "h_count{k=float} 2.5",
                "h_sum{k=float} 1",
                "h_bucket{k=float,le=+Inf} 2.5",
                "h_count{k=native} 3",
                "h_sum{k=native} 4",
                "h_bucket{k=native,le=+Inf} 3",
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let families = [MetricFamily {
            name: "x".into(),
            r#type: 1,
            metric: vec![Metric {
                gauge: Some(Value {
                    value: 1.0,
                    exemplar: None,
                    created_timestamp: None,
                }),
                ..metric(&[("a", "b")])
            }],
            ..Default::default()
        }];
        let mut body = Vec::new();
        families[0].encode_length_delimited(&mut body).unwrap();
        for cut in 1..body.len() {
            let mut scratch = Vec::new();
            let mut p = ProtoParser::new(&body[..cut], &mut scratch);
            let mut failed = false;
            while let Some(s) = p.next() {
                if s.is_err() {
                    failed = true;
                }
            }
            assert!(failed, "a body cut at {cut} must be reported");
        }
        let nameless = MetricFamily {
            r#type: 1,
            ..Default::default()
        }
        .encode_length_delimited_to_vec();
        let mut scratch = Vec::new();
        let e = ProtoParser::new(&nameless, &mut scratch)
            .next()
            .unwrap()
            .unwrap_err();
        assert!(e.to_string().contains("without a name"), "{e}");
    }
}
