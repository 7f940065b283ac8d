//! Zero-copy decoding of `prometheus.WriteRequest` bodies (already decompressed): labels come
//! back as offsets into the body, so a receiver counts and checks samples without allocating.
//! Unknown fields (exemplars, histograms, metadata) are skipped, as protobuf requires.

use std::fmt;
use std::ops::Range;

use crate::protowire::{key, len_delimited, skip, varint};

#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid WriteRequest: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<crate::protowire::WireError> for DecodeError {
    fn from(e: crate::protowire::WireError) -> DecodeError {
        DecodeError(e.0)
    }
}

/// One series of a request: its labels (name and value ranges in the body) and samples.
#[derive(Default, Debug)]
pub struct SeriesScratch {
    pub labels: Vec<(Range<usize>, Range<usize>)>,
    pub samples: Vec<(f64, i64)>,
    /// Timestamps of the series' native histograms.
    pub histograms: Vec<i64>,
}

/// Calls `f(body, series)` for each `TimeSeries` in `body`, reusing `scratch`.
pub fn for_each_series(
    body: &[u8],
    scratch: &mut SeriesScratch,
    mut f: impl FnMut(&[u8], &SeriesScratch),
) -> Result<(), DecodeError> {
    let mut pos = 0;
    while pos < body.len() {
        let (field, wire) = key(body, &mut pos)?;
        if field != 1 || wire != 2 {
            skip(body, &mut pos, wire)?;
            continue;
        }
        let ts = len_delimited(body, &mut pos)?;
        scratch.labels.clear();
        scratch.samples.clear();
        scratch.histograms.clear();
        let mut p = ts.start;
        while p < ts.end {
            let (field, wire) = key(&body[..ts.end], &mut p)?;
            match (field, wire) {
                (1, 2) => {
                    let label = len_delimited(&body[..ts.end], &mut p)?;
                    let (mut name, mut value) =
                        (label.start..label.start, label.start..label.start);
                    let mut q = label.start;
                    while q < label.end {
                        let (f, w) = key(&body[..label.end], &mut q)?;
                        match (f, w) {
                            (1, 2) => name = len_delimited(&body[..label.end], &mut q)?,
                            (2, 2) => value = len_delimited(&body[..label.end], &mut q)?,
                            _ => skip(&body[..label.end], &mut q, w)?,
                        }
                    }
                    scratch.labels.push((name, value));
                }
                (2, 2) => {
                    let sample = len_delimited(&body[..ts.end], &mut p)?;
                    let (mut value, mut t) = (0.0, 0i64);
                    let mut q = sample.start;
                    while q < sample.end {
                        let (f, w) = key(&body[..sample.end], &mut q)?;
                        match (f, w) {
                            (1, 1) => {
                                let bytes =
                                    body.get(q..q + 8).ok_or(DecodeError("truncated double"))?;
                                value = f64::from_le_bytes(
                                    bytes
                                        .try_into()
                                        .map_err(|_| DecodeError("truncated double"))?,
                                );
                                q += 8;
                            }
                            (2, 0) => t = varint(&body[..sample.end], &mut q)? as i64,
                            _ => skip(&body[..sample.end], &mut q, w)?,
                        }
                    }
                    scratch.samples.push((value, t));
                }
                (4, 2) => {
                    let h = len_delimited(&body[..ts.end], &mut p)?;
                    let mut q = h.start;
                    let mut t = 0i64;
                    while q < h.end {
                        let (f, w) = key(&body[..h.end], &mut q)?;
                        match (f, w) {
                            (15, 0) => t = varint(&body[..h.end], &mut q)? as i64,
                            _ => skip(&body[..h.end], &mut q, w)?,
                        }
                    }
                    scratch.histograms.push(t);
                }
                _ => skip(&body[..ts.end], &mut p, wire)?,
            }
        }
        f(body, scratch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::proto;
    use prost::Message;

    #[test]
    fn agrees_with_prost() {
        let req = proto::WriteRequest {
            timeseries: vec![
                proto::TimeSeries {
                    histograms: vec![],
                    exemplars: vec![],
                    labels: vec![
                        proto::Label {
                            name: "__name__".into(),
                            value: "up".into(),
                        },
                        proto::Label {
                            name: "job".into(),
                            value: "node".into(),
                        },
                    ],
                    samples: vec![
                        proto::Sample {
                            value: 1.0,
                            timestamp: 1_700_000_000_000,
                        },
                        proto::Sample {
                            value: 0.0,
                            timestamp: -5,
                        },
                    ],
                },
                proto::TimeSeries {
                    histograms: vec![],
                    exemplars: vec![],
                    labels: vec![proto::Label {
                        name: "a".into(),
                        value: "".into(),
                    }],
                    samples: vec![],
                },
            ],
            ..Default::default()
        };
        let body = req.encode_to_vec();
        let mut got = Vec::new();
        for_each_series(&body, &mut SeriesScratch::default(), |b, s| {
            let labels: Vec<proto::Label> = s
                .labels
                .iter()
                .map(|(n, v)| proto::Label {
                    name: String::from_utf8(b[n.clone()].to_vec()).unwrap(),
                    value: String::from_utf8(b[v.clone()].to_vec()).unwrap(),
                })
                .collect();
            let samples = s
                .samples
                .iter()
                .map(|(v, t)| proto::Sample {
                    value: *v,
                    timestamp: *t,
                })
                .collect();
            got.push(proto::TimeSeries {
                labels,
                samples,
                histograms: vec![],
                exemplars: vec![],
            });
        })
        .unwrap();
        assert_eq!(got, req.timeseries);
    }

    #[test]
    fn rejects_truncated_input() {
        let req = proto::WriteRequest {
            timeseries: vec![proto::TimeSeries {
                histograms: vec![],
                exemplars: vec![],
                labels: vec![proto::Label {
                    name: "n".into(),
                    value: "v".into(),
                }],
                samples: vec![proto::Sample {
                    value: 2.0,
                    timestamp: 3,
                }],
            }],
            ..Default::default()
        };
        let body = req.encode_to_vec();
        for cut in 1..body.len() {
            assert!(
                for_each_series(&body[..cut], &mut SeriesScratch::default(), |_, _| {}).is_err(),
                "cut at {cut}"
            );
        }
    }
}
