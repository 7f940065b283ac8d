//! WAL record payloads. A scrape commit becomes up to three records, in this order:
//!
//! - **series** (type 1): `n`, then `n` × (`ref`, `len`, labels section). The labels section is
//!   the encoded `TimeSeries.labels` fields, exactly as remote write sends them, so replay
//!   rebuilds an entry without re-encoding labels. A series is declared once per segment,
//!   before its first sample there: every segment is self-contained.
//! - **samples** (type 2): `n`, base timestamp, then `n` × (ref delta, timestamp delta, value),
//!   deltas zigzag varints. A value that is an integer below 2^53 in magnitude is stored as
//!   `zigzag(v) << 1`, any other as `1` followed by its 8 bytes.
//! - **histograms** (type 3): `n` × (`ref`, `len`, encoded remote-write `Histogram`).
//!
//! Types 4 (exemplars) and 5 (metadata) are reserved. All integers are varints.

use crate::protowire::{WireError, varint};
use crate::remote::encode::put_varint;

pub const SERIES: u8 = 1;
pub const SAMPLES: u8 = 2;
pub const HISTOGRAMS: u8 = 3;

pub fn type_name(t: u8) -> &'static str {
    match t {
        SERIES => "series",
        SAMPLES => "samples",
        HISTOGRAMS => "histograms",
        4 => "exemplars",
        5 => "metadata",
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
    Series { r: u32, labels: &'a [u8] },
    Sample { r: u32, ts: i64, value: f64 },
    Histogram { r: u32, body: &'a [u8] },
}

/// Builds a samples record.
pub struct SamplesWriter<'a> {
    out: &'a mut Vec<u8>,
    base: i64,
    prev_ref: i64,
}

impl<'a> SamplesWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>, n: usize, base_ts: i64) -> Self {
        put_varint(out, n as u64);
        put_varint(out, zigzag(base_ts));
        SamplesWriter {
            out,
            base: base_ts,
            prev_ref: 0,
        }
    }

    pub fn push(&mut self, r: u32, ts: i64, value: f64) {
        put_varint(self.out, zigzag(i64::from(r) - self.prev_ref));
        self.prev_ref = i64::from(r);
        put_varint(self.out, zigzag(ts.wrapping_sub(self.base)));
        let i = value as i64;
        if (i as f64).to_bits() == value.to_bits() && i.unsigned_abs() < (1 << 53) {
            put_varint(self.out, zigzag(i) << 1);
        } else {
            self.out.push(1);
            self.out.extend_from_slice(&value.to_bits().to_le_bytes());
        }
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

/// Decodes a record of type `kind`, calling `f` for each item; returns the item count.
pub fn decode<'a>(
    kind: u8,
    buf: &'a [u8],
    mut f: impl FnMut(Item<'a>),
) -> Result<usize, WireError> {
    let mut p = 0;
    let n = usize::try_from(varint(buf, &mut p)?).map_err(|_| WireError("count overflow"))?;
    // Every item takes at least two bytes: a count beyond that is corruption.
    if n > buf.len() {
        return Err(WireError("item count exceeds the record"));
    }
    match kind {
        SERIES | HISTOGRAMS => {
            for _ in 0..n {
                let r = ref_of(varint(buf, &mut p)?)?;
                let b = bytes(buf, &mut p)?;
                f(if kind == SERIES {
                    Item::Series { r, labels: b }
                } else {
                    Item::Histogram { r, body: b }
                });
            }
        }
        SAMPLES => {
            let base = unzigzag(varint(buf, &mut p)?);
            let mut prev: i64 = 0;
            for _ in 0..n {
                prev = prev.wrapping_add(unzigzag(varint(buf, &mut p)?));
                let r = u32::try_from(prev).map_err(|_| WireError("series ref out of range"))?;
                let ts = base.wrapping_add(unzigzag(varint(buf, &mut p)?));
                let v = varint(buf, &mut p)?;
                let value = if v == 1 {
                    let b = buf
                        .get(p..p + 8)
                        .ok_or(WireError("truncated sample value"))?;
                    p += 8;
                    let mut w = [0u8; 8];
                    w.copy_from_slice(b);
                    f64::from_bits(u64::from_le_bytes(w))
                } else {
                    unzigzag(v >> 1) as f64
                };
                f(Item::Sample { r, ts, value });
            }
        }
        _ => return Ok(0), // reserved types are skipped
    }
    if p != buf.len() {
        return Err(WireError("trailing bytes in record"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0002),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            i64::MIN as f64,
        ];
        let mut rec = Vec::new();
        let mut w = SamplesWriter::new(&mut rec, values.len(), 1_700_000_000_000);
        let mut want = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let r = [5u32, 0, u32::MAX, 7][i % 4];
            let ts = 1_700_000_000_000 + [0i64, -3, i64::MAX / 2, 1][i % 4];
            w.push(r, ts, *v);
            want.push((r, ts, v.to_bits()));
        }
        let mut got = Vec::new();
        let n = decode(SAMPLES, &rec, |it| match it {
            Item::Sample { r, ts, value } => got.push((r, ts, value.to_bits())),
            other => panic!("{other:?}"),
        })
        .unwrap();
        assert_eq!(n, values.len());
        assert_eq!(got, want);
        // Counters cost a few bytes each.
        let mut small = Vec::new();
        let mut w = SamplesWriter::new(&mut small, 100, 1_700_000_000_000);
        for r in 0..100 {
            w.push(r, 1_700_000_000_000, 1000.0 + f64::from(r));
        }
        assert!(small.len() < 100 * 5, "{} bytes", small.len());
    }

    #[test]
    fn series_round_trip_and_corruption_is_an_error() {
        let mut rec = Vec::new();
        put_count(&mut rec, 2);
        put_ref_bytes(&mut rec, 1, b"abc");
        put_ref_bytes(&mut rec, 300, b"");
        let mut got = Vec::new();
        decode(SERIES, &rec, |it| {
            if let Item::Series { r, labels } = it {
                got.push((r, labels.to_vec()))
            }
        })
        .unwrap();
        assert_eq!(got, [(1, b"abc".to_vec()), (300, vec![])]);
        for cut in 0..rec.len() {
            assert!(decode(SERIES, &rec[..cut], |_| {}).is_err(), "cut {cut}");
        }
        let mut long = rec.clone();
        long.push(0);
        assert!(decode(SERIES, &long, |_| {}).is_err());
    }
}
