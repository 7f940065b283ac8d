//! Metric family metadata for remote write: what each core's scrapes reported lately (TYPE,
//! HELP, UNIT per family), sent on its own by Remote Write 1.0 (`metadata_config`) and inline
//! with each series by Remote Write 2.0.

use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wal::record::parse_metadata_item;

/// What a core's scrapes reported for remote write: family metadata (sent by Remote Write 1.0
/// on its own and by 2.0 inline) and created timestamps (sent by 2.0), each kept only once an
/// endpoint asked for it.
#[derive(Default)]
pub struct Reported {
    families: RefCell<Families>,
    track_metadata: Cell<bool>,
    created: RefCell<Created>,
    track_created: Cell<bool>,
}

impl Reported {
    /// From now on, scrapes' family metadata is kept.
    pub fn track_metadata(&self) {
        self.track_metadata.set(true);
    }

    /// From now on, scrapes' created timestamps are kept.
    pub fn track_created(&self) {
        self.track_created.set(true);
    }

    /// Records what a committed scrape reported: its metadata items, its entries (for
    /// `_created` samples) and the created timestamps of protobuf series (`(key, ms)`).
    pub fn note(&self, metadata: &[u8], entries: &[u8], created: &[(u64, i64)]) {
        if self.track_metadata.get() && !metadata.is_empty() {
            self.families.borrow_mut().note(metadata, Instant::now());
        }
        if self.track_created.get() {
            let now = Instant::now();
            let mut c = self.created.borrow_mut();
            c.note_entries(entries, now);
            for (key, ms) in created {
                c.insert(*key, *ms, now);
            }
        }
    }

    /// The families reported within `within`, sorted by name (see [`Families::active`]).
    pub fn active_families(&self, within: Duration) -> Vec<Vec<u8>> {
        self.families.borrow_mut().active(within)
    }

    pub fn families(&self) -> Ref<'_, Families> {
        self.families.borrow()
    }

    pub fn created(&self) -> Ref<'_, Created> {
        self.created.borrow()
    }
}

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
        for parsed in crate::wal::record::metadata_iter(metadata) {
            let Ok((item, (_, name, _, _))) = parsed else {
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

/// Appends `items` as `WriteRequest.metadata` (field 3) entries of `MetricMetadata`.
pub fn encode_metadata(items: &[Vec<u8>], out: &mut Vec<u8>) {
    use crate::entry::put_varint;
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

/// Created timestamps of a core's series, from the `_created` samples of OpenMetrics counters,
/// histograms and summaries: the family and labels they belong to → (milliseconds, when last
/// reported). Remote Write 2.0 sends them with the family's samples.
#[derive(Default)]
pub struct Created {
    map: HashMap<u64, (i64, Instant)>,
    notes: u64,
}

/// Labels that tell a family's series apart but are not on its `_created` sample.
const NOT_ON_CREATED: [&[u8]; 3] = [b"__name__", b"le", b"quantile"];

/// Folds one label into a created-timestamp key (labels in their sorted order).
pub fn created_fold(h: u64, name: &[u8], value: &[u8]) -> u64 {
    if NOT_ON_CREATED.contains(&name) {
        return h;
    }
    (h ^ xxhash_rust::xxh3::xxh3_64(name)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ xxhash_rust::xxh3::xxh3_64(value)
}

/// The family a series named `name` gets a created timestamp from: `X` for `X_total`,
/// `X_bucket`, `X_count`, `X_sum`, and for a summary's quantile series `X` itself.
pub fn created_family(name: &[u8], has_quantile: bool) -> Option<&[u8]> {
    for suffix in [&b"_total"[..], b"_bucket", b"_count", b"_sum"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return Some(base);
        }
    }
    has_quantile.then_some(name)
}

/// The key of a family's series for created timestamps: its name, then the folded labels.
pub fn created_key(family: &[u8], folded: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(family) ^ folded.rotate_left(29)
}

impl Created {
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records the `_created` samples among a scrape's entries (1.0 entries, as the appender
    /// writes them; the value is in seconds).
    pub fn note_entries(&mut self, entries: &[u8], now: Instant) {
        for entry in crate::entry::entries(entries) {
            // Most entries are not `_created` samples: look at the name first (the first
            // label of a sorted set, unless a label name sorts before `__name__`).
            if first_label_value(entry).is_some_and(|n| !n.ends_with(b"_created")) {
                continue;
            }
            let Ok((labels, payload)) = crate::entry::split_entry(entry) else {
                continue;
            };
            let crate::entry::EntryPayload::Sample { value, .. } = payload else {
                continue;
            };
            let mut folded = 0;
            let mut name: &[u8] = &[];
            for_each_label(labels, |n, v| {
                if n == b"__name__" {
                    name = v;
                }
                folded = created_fold(folded, n, v);
            });
            let Some(family) = name.strip_suffix(b"_created") else {
                continue;
            };
            if value.is_finite() && value > 0.0 {
                let ms = (value * 1000.0).round() as i64;
                self.map.insert(created_key(family, folded), (ms, now));
            }
        }
        self.notes += 1;
        if self.notes.is_multiple_of(4096) {
            self.map
                .retain(|_, (_, seen)| now.duration_since(*seen) < FORGET_AFTER);
        }
    }

    /// Records the created timestamp (ms) of the series with this key.
    pub fn insert(&mut self, key: u64, ms: i64, now: Instant) {
        self.map.insert(key, (ms, now));
    }

    /// The created timestamp (ms) of the series with this key.
    pub fn get(&self, key: u64) -> Option<i64> {
        self.map.get(&key).map(|(ms, _)| *ms)
    }
}

/// The value of an entry's first label when that label is `__name__` (`None`: another label
/// comes first, or the entry is malformed).
fn first_label_value(entry: &[u8]) -> Option<&[u8]> {
    use crate::protowire::{len_delimited, varint};
    let mut p = 1;
    varint(entry, &mut p).ok()?; // TimeSeries length
    (entry.get(p) == Some(&0x0a)).then_some(())?;
    p += 1;
    let label = len_delimited(entry, &mut p).ok()?;
    let mut q = label.start;
    (entry.get(q) == Some(&0x0a)).then_some(())?;
    q += 1;
    let name = len_delimited(entry, &mut q).ok()?;
    (&entry[name] == b"__name__" && entry.get(q) == Some(&0x12)).then_some(())?;
    q += 1;
    let value = len_delimited(entry, &mut q).ok()?;
    (value.end <= label.end).then(|| &entry[value])
}

/// Calls `f(name, value)` for each `Label` in an encoded labels section.
pub fn for_each_label<'a>(labels: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8])) {
    use crate::protowire::{key, len_delimited};
    let mut p = 0;
    while p < labels.len() {
        let Ok((1, 2)) = key(labels, &mut p) else {
            return;
        };
        let Ok((n, v)) = len_delimited(labels, &mut p)
            .and_then(|l| crate::entry::label_at(&labels[..l.end], l.start))
        else {
            return;
        };
        f(n, v);
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
        let req = <crate::entry::proto::WriteRequest as prost::Message>::decode(&body[..]).unwrap();
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
        let reference = crate::entry::proto::WriteRequest {
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
