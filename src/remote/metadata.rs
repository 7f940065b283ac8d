//! Metric family metadata for remote write: what each core's scrapes reported lately (TYPE,
//! HELP, UNIT per family), sent on its own by Remote Write 1.0 (`metadata_config`) and inline
//! with each series by Remote Write 2.0.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wal::record::parse_metadata_item;

/// A core's families, by name: the metadata item (as `wal::record::put_metadata` writes it)
/// and when a scrape last reported it.
#[derive(Default)]
pub struct Families {
    map: HashMap<u64, (Vec<u8>, Instant)>,
}

/// Families not reported for this long are forgotten (their targets are gone).
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl Families {
    /// Records a scrape's metadata items.
    pub fn note(&mut self, metadata: &[u8], now: Instant) {
        let mut p = 0;
        while p < metadata.len() {
            let start = p;
            let Some(len) = item_len(&metadata[p..]) else {
                return;
            };
            p += len;
            let item = &metadata[start..p];
            let Some((_, name, _, _)) = parse_metadata_item(item) else {
                return;
            };
            let key = xxhash_rust::xxh3::xxh3_64(name);
            match self.map.get_mut(&key) {
                Some((known, seen)) => {
                    if known.as_slice() != item {
                        known.clear();
                        known.extend_from_slice(item);
                    }
                    *seen = now;
                }
                None => {
                    self.map.insert(key, (item.to_vec(), now));
                }
            }
        }
    }

    /// The items reported within `within`, sorted by family name; forgets long-gone ones.
    pub fn active(&mut self, within: Duration) -> Vec<Vec<u8>> {
        let now = Instant::now();
        self.map
            .retain(|_, (_, seen)| now.duration_since(*seen) < FORGET_AFTER.max(within));
        let mut out: Vec<Vec<u8>> = self
            .map
            .values()
            .filter(|(_, seen)| now.duration_since(*seen) <= within)
            .map(|(item, _)| item.clone())
            .collect();
        out.sort_by(|a, b| {
            let name = |i: &[u8]| parse_metadata_item(i).map(|m| m.1.to_vec());
            name(a).cmp(&name(b))
        });
        out
    }

    /// The metadata of the family a series named `metric` belongs to: the name itself, or
    /// the name without a suffix its family's series carry (`_total`, `_bucket`, …), as
    /// Prometheus' scrape cache looks it up. Returns (type, unit, help).
    pub fn lookup(&self, metric: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        const SUFFIXES: [&[u8]; 8] = [
            b"",
            b"_total",
            b"_bucket",
            b"_count",
            b"_sum",
            b"_created",
            b"_gcount",
            b"_gsum",
        ];
        SUFFIXES.iter().find_map(|s| {
            let family = metric.strip_suffix(*s)?;
            let (item, _) = self.map.get(&xxhash_rust::xxh3::xxh3_64(family))?;
            let (t, name, unit, help) = parse_metadata_item(item)?;
            (name == family).then_some((t, unit, help))
        })
    }
}

/// The length of the metadata item at the start of `buf`.
fn item_len(buf: &[u8]) -> Option<usize> {
    let mut p = 1;
    for _ in 0..3 {
        let n = crate::protowire::varint(buf, &mut p).ok()? as usize;
        p = p.checked_add(n).filter(|e| *e <= buf.len())?;
    }
    Some(p)
}

/// Appends `items` as `WriteRequest.metadata` (field 3) entries of `MetricMetadata`.
pub fn encode_metadata(items: &[Vec<u8>], out: &mut Vec<u8>) {
    use crate::remote::encode::put_varint;
    let field = |tag: u8, v: &[u8], body: &mut Vec<u8>| {
        if !v.is_empty() {
            body.push(tag);
            put_varint(body, v.len() as u64);
            body.extend_from_slice(v);
        }
    };
    let mut body = Vec::new();
    for item in items {
        let Some((t, name, unit, help)) = parse_metadata_item(item) else {
            continue;
        };
        body.clear();
        if t != 0 {
            body.push(0x08);
            body.push(t);
        }
        field(0x12, name, &mut body);
        field(0x22, help, &mut body);
        field(0x2a, unit, &mut body);
        out.push(0x1a);
        put_varint(out, body.len() as u64);
        out.extend_from_slice(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::MetricType;
    use crate::wal::record::put_metadata;

    #[test]
    fn families_are_found_by_series_name_and_encoded_as_prost_does() {
        let mut scrape = Vec::new();
        put_metadata(
            &mut scrape,
            MetricType::Counter,
            b"http_requests",
            b"",
            b"Requests.",
        );
        put_metadata(
            &mut scrape,
            MetricType::Histogram,
            b"latency_seconds",
            b"seconds",
            b"",
        );
        put_metadata(&mut scrape, MetricType::Gauge, b"temp", b"", b"T\nwo lines");
        let mut f = Families::default();
        f.note(&scrape, Instant::now());
        assert_eq!(
            f.lookup(b"http_requests_total"),
            Some((1, &b""[..], &b"Requests."[..]))
        );
        assert_eq!(f.lookup(b"latency_seconds_bucket").map(|m| m.0), Some(3));
        assert_eq!(f.lookup(b"temp").map(|m| m.0), Some(2));
        assert_eq!(f.lookup(b"other_total"), None);

        let items = f.active(Duration::from_secs(60));
        let mut body = Vec::new();
        encode_metadata(&items, &mut body);
        let req =
            <crate::remote::proto::WriteRequest as prost::Message>::decode(&body[..]).unwrap();
        let got: Vec<_> = req
            .metadata
            .iter()
            .map(|m| {
                (
                    m.r#type,
                    m.metric_family_name.as_str(),
                    m.help.as_str(),
                    m.unit.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "http_requests", "Requests.", ""),
                (3, "latency_seconds", "", "seconds"),
                (2, "temp", "T\nwo lines", ""),
            ]
        );
        let reference = crate::remote::proto::WriteRequest {
            metadata: req.metadata.clone(),
            ..Default::default()
        };
        assert_eq!(
            prost::Message::encode_to_vec(&reference),
            body,
            "byte-identical to prost"
        );
    }
}
