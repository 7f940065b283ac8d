//! Direct protobuf encoding of `WriteRequest` entries from borrowed label bytes.
//!
//! A `WriteRequest` is just its repeated field 1, so a batch body is the concatenation of
//! encoded `timeseries` entries: appending a sample to a batch is appending its entry, and
//! sealing a batch needs no re-encoding. Output is byte-identical to prost's (tested).

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

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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
    let mut labels_len = 0;
    for i in 0..labels.len() {
        let inner = field_len(labels.name(i).len()) + field_len(labels.value(i).len());
        labels_len += 1 + varint_len(inner as u64) + inner;
    }
    let sample_inner = if value != 0.0 { 9 } else { 0 }
        + if timestamp_ms != 0 {
            1 + varint_len(timestamp_ms as u64)
        } else {
            0
        };
    let series_len = labels_len + 1 + varint_len(sample_inner as u64) + sample_inner;

    out.reserve(1 + varint_len(series_len as u64) + series_len);
    out.push(0x0a); // WriteRequest.timeseries, length-delimited
    put_varint(out, series_len as u64);
    for i in 0..labels.len() {
        let (n, v) = (labels.name(i), labels.value(i));
        let inner = field_len(n.len()) + field_len(v.len());
        out.push(0x0a); // TimeSeries.labels
        put_varint(out, inner as u64);
        if !n.is_empty() {
            out.push(0x0a); // Label.name
            put_varint(out, n.len() as u64);
            out.extend_from_slice(n);
        }
        if !v.is_empty() {
            out.push(0x12); // Label.value
            put_varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }
    out.push(0x12); // TimeSeries.samples
    put_varint(out, sample_inner as u64);
    if value != 0.0 {
        out.push(0x09); // Sample.value, fixed64
        out.extend_from_slice(&value.to_bits().to_le_bytes());
    }
    if timestamp_ms != 0 {
        out.push(0x10); // Sample.timestamp, varint (two's complement for negatives)
        put_varint(out, timestamp_ms as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto;
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
