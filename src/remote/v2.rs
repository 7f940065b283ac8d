//! Remote Write 2.0 (`io.prometheus.write.v2.Request`). Batches are kept as 1.0 entries (the
//! WAL reader and the appender make those) and converted when a request is built: every
//! string goes into the request's symbol table (`symbols[0]` is `""`), labels become
//! reference pairs, each series gets its family's metadata (type, help, unit) from what the
//! core's scrapes reported, and samples and native histograms are copied as they are (their
//! messages have the same fields in both versions).

use std::collections::HashMap;

use crate::entry::{label_at, put_varint};
use crate::protowire::{WireError, key, len_delimited, skip};
use crate::remote::metadata::{Created, Families, created_family, created_fold, created_key};

/// Reused buffers for converting batches.
#[derive(Default)]
pub struct Converter {
    /// Symbol hash → index; a hash met with other bytes is added again (duplicates are
    /// allowed in the table).
    index: HashMap<u64, u32, std::hash::BuildHasherDefault<Prehashed>>,
    /// The symbols, in order, as ranges into `bytes`.
    symbols: Vec<(u32, u32)>,
    bytes: Vec<u8>,
    series: Vec<u8>,
    refs: Vec<u32>,
    msg: Vec<u8>,
}

/// The symbol map's keys are xxh3 hashes already: used as they are.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// What a request holds, to compare with the receiver's written counts.
pub type Counts = crate::entry::Tally;

impl Converter {
    fn symbol(&mut self, s: &[u8]) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let h = xxhash_rust::xxh3::xxh3_64(s);
        if let Some(&i) = self.index.get(&h) {
            let (a, b) = self.symbols[i as usize];
            if &self.bytes[a as usize..b as usize] == s {
                return i;
            }
        }
        let i = self.symbols.len() as u32;
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s);
        self.symbols.push((start, self.bytes.len() as u32));
        self.index.entry(h).or_insert(i);
        i
    }

    /// Converts a batch body (1.0 entries) into a 2.0 request in `out`.
    pub fn convert(
        &mut self,
        body: &[u8],
        families: Option<&Families>,
        created: Option<&Created>,
        out: &mut Vec<u8>,
    ) -> Result<Counts, WireError> {
        let created = created.filter(|c| !c.is_empty());
        self.index.clear();
        self.symbols.clear();
        self.bytes.clear();
        self.series.clear();
        self.symbols.push((0, 0));
        let mut counts = Counts::default();
        for entry in crate::entry::entries(body) {
            self.convert_entry(entry, families, created, &mut counts)?;
        }
        out.clear();
        for &(a, b) in &self.symbols {
            out.push(0x22); // Request.symbols
            put_varint(out, u64::from(b - a));
            out.extend_from_slice(&self.bytes[a as usize..b as usize]);
        }
        out.extend_from_slice(&self.series);
        Ok(counts)
    }

    fn convert_entry(
        &mut self,
        entry: &[u8],
        families: Option<&Families>,
        created: Option<&Created>,
        counts: &mut Counts,
    ) -> Result<(), WireError> {
        let mut p = 0;
        key(entry, &mut p)?;
        let ts = len_delimited(entry, &mut p)?;
        let buf = &entry[..ts.end];
        let mut p = ts.start;
        self.refs.clear();
        self.msg.clear();
        let mut name: &[u8] = &[];
        let (mut folded, mut quantile) = (0u64, false);
        let mut start_ts = None;
        while p < ts.end {
            let (field, wire) = key(buf, &mut p)?;
            match (field, wire) {
                (1, 2) => {
                    let l = len_delimited(buf, &mut p)?;
                    let (n, v) = label_at(&buf[..l.end], l.start)?;
                    if n == b"__name__" {
                        name = v;
                    }
                    if created.is_some() {
                        folded = created_fold(folded, n, v);
                        quantile |= n == b"quantile";
                    }
                    let (n, v) = (self.symbol(n), self.symbol(v));
                    self.refs.extend([n, v]);
                }
                (2, 2) => {
                    let s = len_delimited(buf, &mut p)?;
                    // The family's created timestamp, from its `_created` sample.
                    start_ts = created.and_then(|c| {
                        let family = created_family(name, quantile)?;
                        c.get(created_key(family, folded))
                    });
                    self.msg.push(0x12); // TimeSeries.samples
                    match start_ts {
                        None => {
                            put_varint(&mut self.msg, s.len() as u64);
                            self.msg.extend_from_slice(&buf[s]);
                        }
                        Some(ct) => {
                            let ct = ct as u64;
                            let len = s.len() + 1 + crate::entry::varint_len(ct);
                            put_varint(&mut self.msg, len as u64);
                            self.msg.extend_from_slice(&buf[s]);
                            self.msg.push(0x18); // Sample.start_timestamp
                            put_varint(&mut self.msg, ct);
                        }
                    }
                    counts.samples += 1;
                }
                (4, 2) => {
                    let h = len_delimited(buf, &mut p)?;
                    self.msg.push(0x1a); // TimeSeries.histograms
                    put_varint(&mut self.msg, h.len() as u64);
                    self.msg.extend_from_slice(&buf[h]);
                    counts.histograms += 1;
                }
                (3, 2) => {
                    let e = len_delimited(buf, &mut p)?;
                    self.exemplar(&buf[..e.end], e.start)?;
                    counts.exemplars += 1;
                }
                (_, w) => skip(buf, &mut p, w)?,
            }
        }
        let meta = families.and_then(|f| f.lookup(name));
        let mut refs_len = 0;
        for r in &self.refs {
            refs_len += crate::entry::varint_len(u64::from(*r));
        }
        let mut md = [0u8; 32];
        let mut md_len = 0;
        if let Some((t, unit, help)) = meta {
            let (help, unit) = (self.symbol(help), self.symbol(unit));
            let mut m = Vec::with_capacity(16);
            for (tag, v) in [(0x08u8, u32::from(t)), (0x18, help), (0x20, unit)] {
                if v != 0 {
                    m.push(tag);
                    put_varint(&mut m, u64::from(v));
                }
            }
            md[0] = 0x2a; // TimeSeries.metadata
            md[1] = m.len() as u8;
            md[2..2 + m.len()].copy_from_slice(&m);
            md_len = 2 + m.len();
        }
        let refs_field = if refs_len > 0 {
            1 + crate::entry::varint_len(refs_len as u64) + refs_len
        } else {
            0
        };
        let ct_len = start_ts.map_or(0, |ct| 1 + crate::entry::varint_len(ct as u64));
        let len = refs_field + self.msg.len() + md_len + ct_len;
        self.series.push(0x2a); // Request.timeseries
        put_varint(&mut self.series, len as u64);
        if refs_len > 0 {
            self.series.push(0x0a); // TimeSeries.labels_refs, packed
            put_varint(&mut self.series, refs_len as u64);
            for r in &self.refs {
                put_varint(&mut self.series, u64::from(*r));
            }
        }
        self.series.extend_from_slice(&self.msg);
        self.series.extend_from_slice(&md[..md_len]);
        if let Some(ct) = start_ts {
            // Remote Write 2.0 before start timestamps (rc.4): TimeSeries.created_timestamp.
            self.series.push(0x30);
            put_varint(&mut self.series, ct as u64);
        }
        Ok(())
    }

    /// Appends a 1.0 `Exemplar` (labels as `Label` messages) to `msg` as a 2.0 one.
    fn exemplar(&mut self, buf: &[u8], start: usize) -> Result<(), WireError> {
        let mut p = start;
        let mut refs = Vec::new();
        let mut rest = Vec::new();
        while p < buf.len() {
            let at = p;
            let (field, wire) = key(buf, &mut p)?;
            if (field, wire) == (1, 2) {
                let l = len_delimited(buf, &mut p)?;
                let (n, v) = label_at(&buf[..l.end], l.start)?;
                refs.push(self.symbol(n));
                refs.push(self.symbol(v));
            } else {
                skip(buf, &mut p, wire)?;
                // Value (2) and timestamp (3) keep their numbers.
                rest.extend_from_slice(&buf[at..p]);
            }
        }
        let mut ex = Vec::with_capacity(rest.len() + 2 * refs.len() + 4);
        if !refs.is_empty() {
            let refs_len: usize = refs
                .iter()
                .map(|r| crate::entry::varint_len(u64::from(*r)))
                .sum();
            ex.push(0x0a);
            put_varint(&mut ex, refs_len as u64);
            for r in &refs {
                put_varint(&mut ex, u64::from(*r));
            }
        }
        ex.extend_from_slice(&rest);
        self.msg.push(0x22); // TimeSeries.exemplars
        put_varint(&mut self.msg, ex.len() as u64);
        self.msg.extend_from_slice(&ex);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::proto::v2;
    use crate::entry::{LabelScratch, encode_exemplar_series, encode_series};
    use crate::exposition::MetricType;

    #[test]
    fn a_batch_converts_to_a_request_the_published_schema_decodes() {
        let mut body = Vec::new();
        let mut labels = LabelScratch::default();
        for (name, job, v, ts) in [
            ("http_requests_total", "api", 7.0, 1000),
            ("temp", "api", -1.5, 1000),
            ("http_requests_total", "web", 0.0, 2000),
        ] {
            labels.clear();
            labels.push(b"__name__", name.as_bytes());
            labels.push(b"job", job.as_bytes());
            encode_series(&mut body, &labels, v, ts);
        }
        let mut ex = LabelScratch::default();
        ex.push(b"trace_id", b"abc");
        encode_exemplar_series(&mut body, &labels, &ex, 1.25, 2000);
        let mut meta = Vec::new();
        crate::wal::record::put_metadata(
            &mut meta,
            MetricType::Counter,
            b"http_requests",
            b"",
            b"Requests.",
        );
        let mut families = Families::default();
        families.note(&meta, std::time::Instant::now());

        let mut c = Converter::default();
        let mut out = Vec::new();
        let counts = c.convert(&body, Some(&families), None, &mut out).unwrap();
        assert_eq!(
            counts,
            Counts {
                samples: 3,
                histograms: 0,
                exemplars: 1
            }
        );
        let req = <v2::Request as prost::Message>::decode(&out[..]).unwrap();
        assert_eq!(req.symbols[0], "");
        let sym = |r: u32| req.symbols[r as usize].as_str();
        let labels_of = |t: &v2::TimeSeries| -> Vec<(String, String)> {
            t.labels_refs
                .chunks(2)
                .map(|p| (sym(p[0]).to_string(), sym(p[1]).to_string()))
                .collect()
        };
        assert_eq!(req.timeseries.len(), 4);
        let t0 = &req.timeseries[0];
        assert_eq!(
            labels_of(t0),
            [
                ("__name__".into(), "http_requests_total".into()),
                ("job".into(), "api".into())
            ]
        );
        assert_eq!((t0.samples[0].value, t0.samples[0].timestamp), (7.0, 1000));
        let m = t0.metadata.clone().unwrap();
        assert_eq!((m.r#type, sym(m.help_ref), m.unit_ref), (1, "Requests.", 0));
        assert_eq!(
            req.timeseries[1].metadata, None,
            "no family reported: no metadata"
        );
        assert_eq!(req.timeseries[2].samples[0].value, 0.0);
        let e = &req.timeseries[3];
        assert!(e.samples.is_empty());
        assert_eq!(e.exemplars[0].value, 1.25);
        assert_eq!(e.exemplars[0].timestamp, 2000);
        assert_eq!(sym(e.exemplars[0].labels_refs[0]), "trace_id");
        assert_eq!(sym(e.exemplars[0].labels_refs[1]), "abc");
        assert_eq!(t0.created_timestamp, 0, "no _created sample: none");
        // Each string once.
        let mut unique = req.symbols.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), req.symbols.len());
    }

    #[test]
    fn created_timestamps_go_with_their_family_series() {
        let mut scrape = Vec::new();
        let mut l = LabelScratch::default();
        let mut entry = |name: &str, extra: &[(&str, &str)], v: f64| {
            l.clear();
            l.push(b"__name__", name.as_bytes());
            l.push(b"job", b"app");
            for (n, val) in extra {
                l.push(n.as_bytes(), val.as_bytes());
            }
            l.sort().unwrap();
            encode_series(&mut scrape, &l, v, 5000);
        };
        entry("req_total", &[("path", "/a")], 7.0);
        entry("req_created", &[("path", "/a")], 1_700_000_000.25);
        entry("req_total", &[("path", "/b")], 1.0);
        entry("lat_bucket", &[("le", "0.5")], 3.0);
        entry("lat_count", &[], 3.0);
        entry("lat_created", &[], 1_600_000_000.0);
        entry("temp", &[], 20.0);
        let mut created = Created::default();
        created.note_entries(&scrape, std::time::Instant::now());
        let mut out = Vec::new();
        Converter::default()
            .convert(&scrape, None, Some(&created), &mut out)
            .unwrap();
        let req = <v2::Request as prost::Message>::decode(&out[..]).unwrap();
        let ct: Vec<(i64, i64)> = req
            .timeseries
            .iter()
            .map(|t| (t.created_timestamp, t.samples[0].start_timestamp))
            .collect();
        assert_eq!(
            ct,
            [
                (1_700_000_000_250, 1_700_000_000_250),
                (0, 0), // the _created sample itself
                (0, 0), // another label set: no _created sample
                (1_600_000_000_000, 1_600_000_000_000),
                (1_600_000_000_000, 1_600_000_000_000),
                (0, 0),
                (0, 0),
            ]
        );
        assert_eq!(
            req.timeseries[0].samples[0].value, 7.0,
            "the sample is intact"
        );
    }

    #[test]
    fn native_histograms_cross_unchanged() {
        use crate::entry::proto::{BucketSpan, Histogram};
        use crate::entry::{encode_histogram_raw, split_entry};
        let h = Histogram {
            count_int: Some(12),
            sum: 3.5,
            schema: 3,
            zero_threshold: 1e-128,
            zero_count_int: Some(2),
            positive_spans: vec![BucketSpan {
                offset: -2,
                length: 3,
            }],
            positive_deltas: vec![4, -1, 2],
            negative_spans: vec![BucketSpan {
                offset: 1,
                length: 1,
            }],
            negative_deltas: vec![1],
            reset_hint: 1,
            timestamp: 1_700_000_000_123,
            ..Default::default()
        };
        let mut l = LabelScratch::default();
        l.push(b"__name__", b"rpc_seconds");
        l.push(b"job", b"api");
        let mut sample = Vec::new();
        encode_series(&mut sample, &l, 1.0, 1);
        let labels = split_entry(&sample).unwrap().0;
        let mut body = Vec::new();
        encode_histogram_raw(&mut body, labels, &prost::Message::encode_to_vec(&h));
        let mut out = Vec::new();
        let counts = Converter::default()
            .convert(&body, None, None, &mut out)
            .unwrap();
        assert_eq!(
            counts,
            Counts {
                samples: 0,
                histograms: 1,
                exemplars: 0
            }
        );
        let req = <v2::Request as prost::Message>::decode(&out[..]).unwrap();
        assert_eq!(req.timeseries[0].histograms, [h]);
        assert!(req.timeseries[0].samples.is_empty());
    }
}
