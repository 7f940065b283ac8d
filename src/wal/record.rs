//! WAL record payloads. A scrape commit becomes up to three records, in this order:
//!
//! - **series** (type 1): `n`, then `n` × (`ref`, `len`, labels section). The labels section is
//!   the encoded `TimeSeries.labels` fields, exactly as remote write sends them, so replay
//!   rebuilds an entry without re-encoding labels. A series is declared once per segment,
//!   before its first sample there: every segment is self-contained.
//! - **samples** (type 2): `n`, the value epoch, a base timestamp, then three columns of `n`
//!   items each: refs (zigzag of the gap to the previous ref less one, so a run of consecutive
//!   refs is all zeros), timestamps (zigzag of the offset from the base, zero for one scrape)
//!   and values (see [`put_value`]). Columns of zeros are what snappy compresses best.
//! - **histograms** (type 3): `n` × (`ref`, `len`, encoded remote-write `Histogram`).
//! - **exemplars** (type 4): `n` × (`ref`, `len`, encoded remote-write `Exemplar`), the ref
//!   being the series' whose sample the exemplar came with.
//!
//! - **metadata** (type 5): `n` × (type, family name, unit, help), each string as `len`,
//!   bytes; the type a byte ([`metric_type_code`]). A target's family is written once per
//!   segment and again when its metadata changes, as Prometheus' scrape cache tracks it.
//!
//! All integers are varints.
//!
//! **Values.** Most sample values are decimals with few digits (counters, byte counts, gauges
//! such as `12.5`), so a value is stored as `m / 10^k` where that is exact, else as its 8
//! bytes. Within an *epoch* a series' value is stored as the change of `m` since its previous
//! sample, which for a steady counter is a byte. An epoch is a stretch of one segment (the
//! writer starts a new one every few MiB and with every segment): a series' first sample in an
//! epoch is stored whole, so a reader that lost its state to a damaged page regains it at the
//! next epoch, and readers always read a segment from its start.

use std::collections::HashMap;

use crate::entry::put_varint;
use crate::protowire::{WireError, varint};

pub const SERIES: u8 = 1;
pub const SAMPLES: u8 = 2;
pub const HISTOGRAMS: u8 = 3;
pub const EXEMPLARS: u8 = 4;
pub const METADATA: u8 = 5;

pub fn type_name(t: u8) -> &'static str {
    match t {
        SERIES => "series",
        SAMPLES => "samples",
        HISTOGRAMS => "histograms",
        EXEMPLARS => "exemplars",
        METADATA => "metadata",
        _ => "unknown",
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One decoded item of a record.
#[derive(Debug, PartialEq)]
pub enum Item<'a> {
    Series {
        r: u32,
        labels: &'a [u8],
    },
    Sample {
        r: u32,
        ts: i64,
        value: f64,
    },
    /// A sample stored as a change from a previous value the reader does not have (it was in
    /// a damaged record): lost.
    Unknown {
        r: u32,
    },
    Histogram {
        r: u32,
        body: &'a [u8],
    },
    Exemplar {
        r: u32,
        body: &'a [u8],
    },
    Metadata {
        mtype: u8,
        name: &'a [u8],
        unit: &'a [u8],
        help: &'a [u8],
    },
}

/// A metric type as the metadata record stores it.
pub fn metric_type_code(t: crate::exposition::MetricType) -> u8 {
    use crate::exposition::MetricType::*;
    match t {
        Unknown => 0,
        Counter => 1,
        Gauge => 2,
        Histogram => 3,
        GaugeHistogram => 4,
        Summary => 5,
        Info => 6,
        StateSet => 7,
    }
}

/// A metadata item's type code as Prometheus names the type (`counter`, `gaugehistogram`, …).
pub fn metric_type_name(code: u8) -> &'static str {
    match code {
        1 => "counter",
        2 => "gauge",
        3 => "histogram",
        4 => "gaugehistogram",
        5 => "summary",
        6 => "info",
        7 => "stateset",
        _ => "unknown",
    }
}

/// Appends one metadata item.
pub fn put_metadata(
    out: &mut Vec<u8>,
    mtype: crate::exposition::MetricType,
    name: &[u8],
    unit: &[u8],
    help: &[u8],
) {
    out.push(metric_type_code(mtype));
    for field in [name, unit, help] {
        put_varint(out, field.len() as u64);
        out.extend_from_slice(field);
    }
}

/// Splits metadata items written by [`put_metadata`]: each item's bytes and family name.
pub fn metadata_items(buf: &[u8]) -> Result<Vec<ItemAndName<'_>>, WireError> {
    metadata_iter(buf)
        .map(|r| r.map(|(item, (_, name, _, _))| (item, name)))
        .collect()
}

/// Each metadata item written by [`put_metadata`]: its bytes and its fields; stops after the
/// first malformed one.
pub fn metadata_iter(
    buf: &[u8],
) -> impl Iterator<Item = Result<(&[u8], MetadataItem<'_>), WireError>> {
    let mut p = 0;
    std::iter::from_fn(move || {
        if p >= buf.len() {
            return None;
        }
        let start = p;
        match metadata_item(buf, &mut p) {
            Ok(m) => Some(Ok((&buf[start..p], m))),
            Err(e) => {
                p = buf.len();
                Some(Err(e))
            }
        }
    })
}

/// One metadata item written by [`put_metadata`]: (type, name, unit, help).
pub fn parse_metadata_item(item: &[u8]) -> Option<MetadataItem<'_>> {
    let mut p = 0;
    metadata_item(item, &mut p).ok()
}

pub type MetadataItem<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);
/// A metadata item's bytes and its family name.
pub type ItemAndName<'a> = (&'a [u8], &'a [u8]);

fn metadata_item<'a>(buf: &'a [u8], p: &mut usize) -> Result<MetadataItem<'a>, WireError> {
    let mtype = *buf.get(*p).ok_or(WireError("truncated metadata"))?;
    if mtype > 7 {
        return Err(WireError("invalid metric type in metadata"));
    }
    *p += 1;
    let name = bytes(buf, p)?;
    let unit = bytes(buf, p)?;
    let help = bytes(buf, p)?;
    Ok((mtype, name, unit, help))
}

/// Scale marking a value kept as raw bits (no decimal state to take a change from).
pub const RAW: u8 = 0xff;
/// Scale hints for [`decimal`]: no previous value; a previous value that was raw.
const NO_HINT: u8 = 0xfe;
const STAYS_RAW: u8 = RAW;
/// Value header of a value stored as its 8 bytes.
const RAW_HEADER: u64 = ((MAX_SCALE as u64 + 1) << 1) | 1;
/// Largest decimal scale tried: `10^k` and `m` stay exact in an f64 up to here.
const MAX_SCALE: u8 = 12;
const POW10: [f64; MAX_SCALE as usize + 1] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

/// A series' last value as the value column knows it: `m / 10^k` in `epoch`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueState {
    pub m: i64,
    pub k: u8,
    pub epoch: u32,
}

impl Default for ValueState {
    fn default() -> Self {
        ValueState {
            m: 0,
            k: RAW,
            epoch: u32::MAX,
        }
    }
}

/// `v` as `m / 10^k` exactly (bit for bit, as the reader will compute it), trying scale `hint`
/// first; `None` for values that are no short decimal (and for NaN, infinities, `-0`).
fn decimal(v: f64, hint: u8) -> Option<(i64, u8)> {
    let exact = |k: u8| {
        let p = POW10[usize::from(k)];
        let m = (v * p).round();
        if m.is_nan() || m.abs() >= 9_007_199_254_740_992.0 {
            return None;
        }
        let m = m as i64;
        ((m as f64 / p).to_bits() == v.to_bits()).then_some((m, k))
    };
    if !v.is_finite() {
        return None;
    }
    if hint <= MAX_SCALE
        && let Some(d) = exact(hint)
    {
        return Some(d);
    }
    if hint == STAYS_RAW {
        // A series whose last value was no short decimal rarely turns into one: only whole
        // numbers are looked for, which costs one try instead of thirteen.
        return exact(0);
    }
    (0..=MAX_SCALE).filter(|k| *k != hint).find_map(exact)
}

/// Appends one value to the value column and updates `st`, the series' state. A varint
/// header `h` says how: even: `m` changed by `unzigzag(h >> 1)` since the series' previous
/// value in this epoch, at the same scale (a change below 32 takes one byte); odd, with
/// `h >> 1` at most [`MAX_SCALE`]: that scale, then `zigzag(m)`; `h == RAW_HEADER`: the 8
/// bytes of the f64 follow.
pub fn put_value(out: &mut Vec<u8>, v: f64, st: &mut ValueState, epoch: u32) {
    let hint = match (st.epoch == epoch, st.k) {
        (false, _) => NO_HINT,
        (true, RAW) => STAYS_RAW,
        (true, k) => k,
    };
    match decimal(v, hint) {
        Some((m, k)) if k == hint => {
            put_varint(out, zigzag(m.wrapping_sub(st.m)) << 1);
            st.m = m;
        }
        Some((m, k)) => {
            put_varint(out, (u64::from(k) << 1) | 1);
            put_varint(out, zigzag(m));
            *st = ValueState { m, k, epoch };
        }
        None => {
            out.push(RAW_HEADER as u8);
            out.extend_from_slice(&v.to_bits().to_le_bytes());
            *st = ValueState {
                m: 0,
                k: RAW,
                epoch,
            };
        }
    }
}

/// Reads one value written by [`put_value`]; `None` when it is a change from a state the
/// reader does not have.
fn get_value(
    buf: &[u8],
    p: &mut usize,
    st: &mut ValueState,
    epoch: u32,
) -> Result<Option<f64>, WireError> {
    let h = varint(buf, p)?;
    if h & 1 == 0 {
        if st.epoch != epoch || st.k > MAX_SCALE {
            return Ok(None);
        }
        st.m = st.m.wrapping_add(unzigzag(h >> 1));
        return Ok(Some(st.m as f64 / POW10[usize::from(st.k)]));
    }
    match h >> 1 {
        k @ 0..=12 => {
            let k = k as u8;
            let m = unzigzag(varint(buf, p)?);
            *st = ValueState { m, k, epoch };
            Ok(Some(m as f64 / POW10[usize::from(k)]))
        }
        _ if h == RAW_HEADER => {
            let b = buf
                .get(*p..*p + 8)
                .ok_or(WireError("truncated sample value"))?;
            *p += 8;
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            *st = ValueState {
                m: 0,
                k: RAW,
                epoch,
            };
            Ok(Some(f64::from_bits(u64::from_le_bytes(w))))
        }
        _ => Err(WireError("invalid value header")),
    }
}

/// Builds a samples record from (ref, timestamp) pairs and a value column made with
/// [`put_value`].
pub fn put_samples(out: &mut Vec<u8>, epoch: u32, refs_ts: &[(u32, i64)], values: &[u8]) {
    put_varint(out, refs_ts.len() as u64);
    put_varint(out, u64::from(epoch));
    let base = refs_ts.first().map_or(0, |s| s.1);
    put_varint(out, zigzag(base));
    let mut prev: i64 = -1;
    for (r, _) in refs_ts {
        put_varint(out, zigzag(i64::from(*r) - prev - 1));
        prev = i64::from(*r);
    }
    for (_, ts) in refs_ts {
        put_varint(out, zigzag(ts.wrapping_sub(base)));
    }
    out.extend_from_slice(values);
}

/// What a reader knows of each series' last value, for one segment.
#[derive(Default)]
pub struct Values {
    by_ref: HashMap<u32, ValueState>,
}

impl Values {
    /// Forgets everything: at a new segment, and after damage (what was lost may have held
    /// values later changes build on).
    pub fn clear(&mut self) {
        self.by_ref.clear();
    }
}

/// Appends a series or histogram item (`ref`, `len`, bytes); the caller writes the count first.
pub fn put_ref_bytes(out: &mut Vec<u8>, r: u32, bytes: &[u8]) {
    put_varint(out, u64::from(r));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn put_count(out: &mut Vec<u8>, n: usize) {
    put_varint(out, n as u64);
}

fn ref_of(v: u64) -> Result<u32, WireError> {
    u32::try_from(v).map_err(|_| WireError("series ref out of range"))
}

fn bytes<'a>(buf: &'a [u8], p: &mut usize) -> Result<&'a [u8], WireError> {
    let n = usize::try_from(varint(buf, p)?).map_err(|_| WireError("length overflow"))?;
    let end = p
        .checked_add(n)
        .filter(|e| *e <= buf.len())
        .ok_or(WireError("truncated record"))?;
    let b = &buf[*p..end];
    *p = end;
    Ok(b)
}

/// The item count a record starts with.
pub fn count(buf: &[u8]) -> Result<usize, WireError> {
    usize::try_from(varint(buf, &mut 0)?).map_err(|_| WireError("count overflow"))
}

/// Decodes a record of type `kind`, calling `f` for each item; returns the item count.
/// `values` carries series' values from record to record (see [`put_value`]).
pub fn decode<'a>(
    kind: u8,
    buf: &'a [u8],
    values: &mut Values,
    mut f: impl FnMut(Item<'a>),
) -> Result<usize, WireError> {
    let mut p = 0;
    let n = usize::try_from(varint(buf, &mut p)?).map_err(|_| WireError("count overflow"))?;
    // Every item takes at least two bytes: a count beyond that is corruption.
    if n > buf.len() {
        return Err(WireError("item count exceeds the record"));
    }
    match kind {
        SERIES | HISTOGRAMS | EXEMPLARS => {
            for _ in 0..n {
                let r = ref_of(varint(buf, &mut p)?)?;
                let b = bytes(buf, &mut p)?;
                f(match kind {
                    SERIES => Item::Series { r, labels: b },
                    HISTOGRAMS => Item::Histogram { r, body: b },
                    _ => Item::Exemplar { r, body: b },
                });
            }
        }
        SAMPLES => {
            let epoch =
                u32::try_from(varint(buf, &mut p)?).map_err(|_| WireError("epoch out of range"))?;
            let base = unzigzag(varint(buf, &mut p)?);
            // The ref and timestamp columns are read side by side with the values.
            let mut refs = p;
            for _ in 0..n {
                varint(buf, &mut p)?;
            }
            let mut tss = p;
            for _ in 0..n {
                varint(buf, &mut p)?;
            }
            let mut prev: i64 = -1;
            for _ in 0..n {
                prev = prev
                    .wrapping_add(unzigzag(varint(buf, &mut refs)?))
                    .wrapping_add(1);
                let r = u32::try_from(prev).map_err(|_| WireError("series ref out of range"))?;
                let ts = base.wrapping_add(unzigzag(varint(buf, &mut tss)?));
                let st = values.by_ref.entry(r).or_default();
                match get_value(buf, &mut p, st, epoch)? {
                    Some(value) => f(Item::Sample { r, ts, value }),
                    None => f(Item::Unknown { r }),
                }
            }
        }
        METADATA => {
            for _ in 0..n {
                let (mtype, name, unit, help) = metadata_item(buf, &mut p)?;
                f(Item::Metadata {
                    mtype,
                    name,
                    unit,
                    help,
                });
            }
        }
        _ => return Ok(0), // unknown types are skipped
    }
    if p != buf.len() {
        return Err(WireError("trailing bytes in record"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `scrapes` (each a list of (ref, ts, value)) as samples records, one per scrape,
    /// with writer-side state per ref, and returns the records.
    type Scrape = (u32, Vec<(u32, i64, f64)>);

    fn write(scrapes: &[Scrape]) -> Vec<Vec<u8>> {
        let mut states: HashMap<u32, ValueState> = HashMap::new();
        scrapes
            .iter()
            .map(|(epoch, samples)| {
                let mut vals = Vec::new();
                let mut refs_ts = Vec::new();
                for (r, ts, v) in samples {
                    put_value(&mut vals, *v, states.entry(*r).or_default(), *epoch);
                    refs_ts.push((*r, *ts));
                }
                let mut rec = Vec::new();
                put_samples(&mut rec, *epoch, &refs_ts, &vals);
                rec
            })
            .collect()
    }

    type Got = Vec<Option<(u32, i64, u64)>>;

    fn read(recs: &[Vec<u8>], values: &mut Values) -> Got {
        let mut got = Vec::new();
        for rec in recs {
            let n = decode(SAMPLES, rec, values, |it| match it {
                Item::Sample { r, ts, value } => got.push(Some((r, ts, value.to_bits()))),
                Item::Unknown { .. } => got.push(None),
                other => panic!("{other:?}"),
            })
            .unwrap();
            assert!(n > 0);
        }
        got
    }

    #[test]
    fn samples_round_trip_bit_exact() {
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            42.0,
            1e15,
            9_007_199_254_740_993.0,
            -(2f64.powi(53)),
            0.5,
            0.035,
            0.1 + 0.2,
            12345.678,
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0002), // the staleness marker
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            i64::MIN as f64,
        ];
        // Every value after every other, for one series, in one epoch and across two.
        let mut scrapes = Vec::new();
        let mut want = Vec::new();
        for (i, a) in values.iter().enumerate() {
            for (j, b) in values.iter().enumerate() {
                let epoch = (i * values.len() + j) as u32 / 7;
                let ts = 1_700_000_000_000 + [0i64, -3, i64::MAX / 2, 1][j % 4];
                scrapes.push((epoch, vec![(9, ts, *a), (u32::MAX, ts, *b)]));
                want.push(Some((9, ts, a.to_bits())));
                want.push(Some((u32::MAX, ts, b.to_bits())));
            }
        }
        let recs = write(&scrapes);
        let got = read(&recs, &mut Values::default());
        assert_eq!(got.len(), want.len());
        if let Some(i) = (0..want.len()).find(|i| got[*i] != want[*i]) {
            panic!("item {i}: got {:?}, want {:?}", got[i], want[i]);
        }
    }

    #[test]
    fn steady_series_cost_about_a_byte_and_lost_state_is_reported_not_guessed() {
        // 1,000 series: counters, decimal gauges; 20 scrapes in one epoch.
        let scrape = |s: u32| -> Vec<(u32, i64, f64)> {
            (0..1000u32)
                .map(|r| {
                    let v = if r % 2 == 0 {
                        f64::from(s * (1 + r % 7) + r)
                    } else {
                        f64::from((s * 31 + r * 17) % 1000) / 10.0
                    };
                    (r, 1_700_000_000_000 + i64::from(s) * 10_000, v)
                })
                .collect()
        };
        let scrapes: Vec<_> = (0..20).map(|s| (0u32, scrape(s))).collect();
        let recs = write(&scrapes);
        // Refs and timestamps are columns of zeros, values a byte each: about 3 bytes per
        // sample before compression, and little more than one after.
        let later: usize = recs[1..].iter().map(Vec::len).sum();
        assert!(later < 19 * 3100, "{later} bytes for 19,000 samples");
        let compressed: usize = recs[1..]
            .iter()
            .map(|r| snap::raw::Encoder::new().compress_vec(r).unwrap().len())
            .sum();
        assert!(compressed < 19 * 1300, "{compressed} bytes compressed");
        let mut values = Values::default();
        let all = read(&recs, &mut values);
        assert!(all.iter().all(Option::is_some));
        // A reader that lost the first record cannot know the deltas after it.
        let mut values = Values::default();
        let rest = read(&recs[1..], &mut values);
        assert!(rest.iter().take(1000).all(|s| s.is_none()));
        // A new epoch stores values whole again, and the reader has them.
        let fresh = write(&[(0, scrape(0)), (1, scrape(1)), (1, scrape(2))]);
        let mut values = Values::default();
        let got = read(&fresh[1..], &mut values);
        let want = read(&fresh, &mut Values::default());
        assert!(got == want[1000..], "a new epoch's values are whole");
    }

    #[test]
    fn damaged_sample_records_are_errors_not_panics() {
        let recs = write(&[(3, vec![(1, 5, 1.5), (2, 5, f64::NAN), (7, 6, 3.0)])]);
        let rec = &recs[0];
        for cut in 0..rec.len() {
            let _ = decode(SAMPLES, &rec[..cut], &mut Values::default(), |_| {});
        }
        assert!(
            decode(
                SAMPLES,
                &rec[..rec.len() - 1],
                &mut Values::default(),
                |_| {}
            )
            .is_err()
        );
        let mut long = rec.clone();
        long.push(0);
        assert!(decode(SAMPLES, &long, &mut Values::default(), |_| {}).is_err());
    }

    #[test]
    fn series_round_trip_and_corruption_is_an_error() {
        let mut rec = Vec::new();
        put_count(&mut rec, 2);
        put_ref_bytes(&mut rec, 1, b"abc");
        put_ref_bytes(&mut rec, 300, b"");
        let mut got = Vec::new();
        decode(SERIES, &rec, &mut Values::default(), |it| {
            if let Item::Series { r, labels } = it {
                got.push((r, labels.to_vec()))
            }
        })
        .unwrap();
        assert_eq!(got, [(1, b"abc".to_vec()), (300, vec![])]);
        for cut in 0..rec.len() {
            assert!(
                decode(SERIES, &rec[..cut], &mut Values::default(), |_| {}).is_err(),
                "cut {cut}"
            );
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(decode(SERIES, &long, &mut Values::default(), |_| {}).is_err());
    }
}
