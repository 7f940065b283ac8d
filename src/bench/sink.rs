//! `spate bench sink`: a Remote Write receiver that decodes every request, counts series and
//! samples, and checks each series' timestamps for reordering, duplicates and gaps.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::server::{self, Reply, Request};
use super::{Flags, Tool, flag, run_until_signal, unix_now};
use crate::remote::decode::{SeriesScratch, for_each_series};
use crate::runtime::TcpListener;

/// Counts kept by the sink. Shared between the serving core and the signal thread.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub requests: u64,
    /// Requests answered with an error on purpose (`--fail-ratio`) or because they were invalid.
    pub errors: u64,
    pub decode_errors: u64,
    pub series: u64,
    pub samples: u64,
    pub out_of_order: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Compressed request bytes accepted.
    pub bytes: u64,
    /// Accepted samples whose metric name has the `--name-prefix`, by timestamp second.
    pub prefixed_by_second: BTreeMap<i64, u64>,
}

impl Counts {
    pub fn to_json(&self, elapsed: f64) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"requests\": {}, \"errors\": {}, \"decode_errors\": {}, \"series\": {}, \"samples\": {}, \"out_of_order\": {}, \"duplicates\": {}, \"gaps\": {}, \"bytes\": {}, \"elapsed_seconds\": {:.3}, \"samples_per_second\": {:.1}, \"bytes_per_sample\": {:.2}",
            self.requests,
            self.errors,
            self.decode_errors,
            self.series,
            self.samples,
            self.out_of_order,
            self.duplicates,
            self.gaps,
            self.bytes,
            elapsed,
            self.samples as f64 / elapsed.max(1e-9),
            self.bytes as f64 / (self.samples.max(1)) as f64
        );
        s.push('}');
        s
    }

    /// A copy without the per-second map (for the summary and the final report).
    pub fn scalars(&self) -> Counts {
        Counts {
            prefixed_by_second: BTreeMap::new(),
            ..*self
        }
    }

    /// Accepted prefixed samples with timestamps in `[from, to)` (Unix seconds).
    pub fn prefixed_between(&self, from: i64, to: i64) -> u64 {
        if from >= to {
            // An empty window (BTreeMap::range panics on a reversed one).
            return 0;
        }
        self.prefixed_by_second
            .range(from..to)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The series map's keys are already hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Per-series checks over everything accepted.
pub struct Checker {
    last: HashMap<u64, i64, BuildHasherDefault<IdentityHasher>>,
    /// A step longer than this (ms) within a series counts as a gap.
    gap_ms: Option<i64>,
    prefix: Option<Vec<u8>>,
    scratch: SeriesScratch,
    raw: Vec<u8>,
    decoder: snap::raw::Decoder,
    /// A request's series, decoded and checked before anything is counted: (series hash,
    /// name has the prefix, end of its timestamps in `timestamps`).
    decoded: Vec<(u64, bool, u32)>,
    timestamps: Vec<i64>,
    pub counts: Counts,
}

impl Checker {
    pub fn new(interval: Option<Duration>, prefix: Option<String>) -> Checker {
        Checker {
            last: HashMap::default(),
            gap_ms: interval.map(|d| (d.as_millis() as i64) * 3 / 2),
            prefix: prefix.map(String::into_bytes),
            scratch: SeriesScratch::default(),
            raw: Vec::new(),
            decoder: snap::raw::Decoder::new(),
            decoded: Vec::new(),
            timestamps: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Decodes and checks one snappy-compressed Remote Write 2.0 `Request`; returns the
    /// samples, histograms and exemplars written. Nothing is counted on error.
    pub fn ingest_v2(&mut self, compressed: &[u8]) -> Result<[u64; 3], String> {
        self.decompress(compressed)?;
        let req = <crate::entry::proto::v2::Request as prost::Message>::decode(&self.raw[..])
            .map_err(|e| format!("protobuf: {e}"))?;
        if req.symbols.first().is_some_and(|s| !s.is_empty()) {
            return Err("symbols[0] must be the empty string".into());
        }
        let sym = |r: u32| {
            req.symbols
                .get(r as usize)
                .map(String::as_bytes)
                .ok_or_else(|| format!("label reference {r} is past the symbol table"))
        };
        let mut written = [0u64; 3];
        self.decoded.clear();
        self.timestamps.clear();
        for t in &req.timeseries {
            if t.labels_refs.len() % 2 != 0 {
                return Err("labels_refs must hold name and value pairs".into());
            }
            let mut h = SEED;
            let mut name: &[u8] = b"";
            for pair in t.labels_refs.chunks(2) {
                let (n, v) = (sym(pair[0])?, sym(pair[1])?);
                h = fold(fold(h, n), v);
                if n == b"__name__" {
                    name = v;
                }
            }
            for e in &t.exemplars {
                for r in &e.labels_refs {
                    sym(*r)?;
                }
            }
            written[0] += t.samples.len() as u64;
            written[1] += t.histograms.len() as u64;
            written[2] += t.exemplars.len() as u64;
            let prefixed = self.prefix.as_ref().is_some_and(|p| name.starts_with(p));
            self.timestamps.extend(
                t.samples
                    .iter()
                    .map(|s| s.timestamp)
                    .chain(t.histograms.iter().map(|h| h.timestamp)),
            );
            self.decoded
                .push((h, prefixed, self.timestamps.len() as u32));
        }
        self.count_decoded(compressed.len());
        Ok(written)
    }

    fn decompress(&mut self, compressed: &[u8]) -> Result<(), String> {
        let len = snap::raw::decompress_len(compressed).map_err(|e| format!("snappy: {e}"))?;
        self.raw.resize(len, 0);
        self.decoder
            .decompress(compressed, &mut self.raw)
            .map(|_| ())
            .map_err(|e| format!("snappy: {e}"))
    }

    /// Counts the request just decoded into `decoded` and `timestamps` (`compressed` bytes),
    /// checking each series' order against what it had.
    fn count_decoded(&mut self, compressed: usize) {
        let mut map = std::mem::take(&mut self.counts.prefixed_by_second);
        let mut seconds = SecondCounts::new(&mut map);
        let mut start = 0;
        for &(h, prefixed, end) in &self.decoded {
            for ts in &self.timestamps[start..end as usize] {
                check_one(
                    &mut self.last,
                    &mut self.counts,
                    &mut seconds,
                    self.gap_ms,
                    prefixed,
                    h,
                    *ts,
                );
            }
            start = end as usize;
        }
        drop(seconds);
        self.counts.prefixed_by_second = map;
        self.counts.series = self.last.len() as u64;
        self.counts.bytes += compressed as u64;
    }

    /// Decodes and checks one snappy-compressed `WriteRequest`. Nothing is counted on error:
    /// the request is decoded whole first (one pass), then its series are counted.
    pub fn ingest(&mut self, compressed: &[u8]) -> Result<(), String> {
        self.decompress(compressed)?;
        let (decoded, timestamps, prefix) = (&mut self.decoded, &mut self.timestamps, &self.prefix);
        decoded.clear();
        timestamps.clear();
        for_each_series(&self.raw, &mut self.scratch, |body, s| {
            let mut h = SEED;
            let mut name: &[u8] = b"";
            for (n, v) in &s.labels {
                let (n, v) = (&body[n.clone()], &body[v.clone()]);
                h = fold(fold(h, n), v);
                if n == b"__name__" {
                    name = v;
                }
            }
            let prefixed = prefix.as_ref().is_some_and(|p| name.starts_with(p));
            timestamps.extend(
                s.samples
                    .iter()
                    .map(|(_, t)| *t)
                    .chain(s.histograms.iter().copied()),
            );
            decoded.push((h, prefixed, timestamps.len() as u32));
        })
        .map_err(|e| e.to_string())?;
        self.count_decoded(compressed.len());
        Ok(())
    }
}

/// Prefixed samples counted by second: a request's samples mostly share a second, so the
/// map is touched when the second changes (and once at the end), not for every sample.
struct SecondCounts<'a> {
    map: &'a mut BTreeMap<i64, u64>,
    second: i64,
    n: u64,
}

impl<'a> SecondCounts<'a> {
    fn new(map: &'a mut BTreeMap<i64, u64>) -> Self {
        SecondCounts {
            map,
            second: 0,
            n: 0,
        }
    }

    fn add(&mut self, ts: i64) {
        let second = ts.div_euclid(1000);
        if second != self.second {
            self.flush();
            self.second = second;
        }
        self.n += 1;
    }

    fn flush(&mut self) {
        if self.n > 0 {
            *self.map.entry(self.second).or_default() += self.n;
            self.n = 0;
        }
    }
}

impl Drop for SecondCounts<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Counts one sample of series `h` at `ts`: reordered, duplicated, after a gap, or in order.
fn check_one(
    last: &mut HashMap<u64, i64, BuildHasherDefault<IdentityHasher>>,
    counts: &mut Counts,
    seconds: &mut SecondCounts<'_>,
    gap_ms: Option<i64>,
    prefixed: bool,
    h: u64,
    ts: i64,
) {
    counts.samples += 1;
    if prefixed {
        seconds.add(ts);
    }
    match last.entry(h) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(ts);
        }
        std::collections::hash_map::Entry::Occupied(mut o) => {
            let prev = o.get_mut();
            if ts < *prev {
                counts.out_of_order += 1;
            } else if ts == *prev {
                counts.duplicates += 1;
            } else {
                if gap_ms.is_some_and(|g| ts - *prev > g) {
                    counts.gaps += 1;
                }
                *prev = ts;
            }
        }
    }
}

/// The series hash before any label.
const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// Continues the series hash `h` over one name or value (each delimited by its own hash
/// step, so `ab`,`c` and `a`,`bc` differ).
fn fold(h: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, h).rotate_left(17) ^ h
}

/// `spate bench sink`.
pub(crate) const TOOL: Tool = Tool {
    name: "sink",
    help: "Receive Remote Write, decode and check every request.",
    flags: &[
        flag(
            "listen",
            "=HOST:PORT",
            Some("127.0.0.1:9201"),
            "listen address, path /api/v1/write",
        ),
        flag(
            "status",
            "=CODE",
            Some("204"),
            "status for accepted requests",
        ),
        flag(
            "fail-ratio",
            "=R",
            Some("0"),
            "fraction of requests answered with --fail-status",
        ),
        flag(
            "fail-status",
            "=CODE",
            Some("503"),
            "status for failed requests",
        ),
        flag(
            "latency",
            "=DURATION",
            Some("0s"),
            "delay before each answer",
        ),
        flag(
            "interval",
            "=DURATION",
            None,
            "expected sample interval; a longer step in a series is a gap",
        ),
        flag(
            "name-prefix",
            "=P",
            None,
            "also count samples whose metric name starts with P, per second",
        ),
        flag(
            "summary-interval",
            "=D",
            Some("10s"),
            "print a summary line this often",
        ),
        flag(
            "report",
            "=FILE",
            None,
            "write the final counts as JSON on SIGTERM/SIGINT",
        ),
    ],
};

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, TOOL.flags)?;
    let listen: SocketAddr = f.num("listen")?;
    let status: u16 = f.num("status")?;
    let fail_ratio: f64 = f.num("fail-ratio")?;
    let fail_status: u16 = f.num("fail-status")?;
    let latency = f.duration("latency")?;
    let interval = f
        .opt("interval")
        .map(|_| f.duration("interval"))
        .transpose()?;
    let summary_every = f.duration("summary-interval")?;
    let report = f.opt("report");
    if !(0.0..=1.0).contains(&fail_ratio) {
        return Err("--fail-ratio must be between 0 and 1".into());
    }
    std::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let shared = Arc::new(Mutex::new(Counts::default()));
    let started = unix_now();
    eprintln!("sink listening on http://{listen}/api/v1/write; stop with Ctrl-C");
    let prefix = f.opt("name-prefix");
    let shared2 = shared.clone();
    run_until_signal(1, move |_| {
        let (shared, prefix) = (shared2.clone(), prefix.clone());
        async move {
            let listener = match TcpListener::bind(listen) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("cannot listen on {listen}: {e}");
                    std::process::exit(1);
                }
            };
            let checker = Rc::new(std::cell::RefCell::new(Checker::new(interval, prefix)));
            let rng = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
            let shared_h = shared.clone();
            let handler: server::Handler = Rc::new(move |req: &Request<'_>, out: &mut Vec<u8>| {
                let mut c = checker.borrow_mut();
                if req.method == "GET" && req.path.starts_with("/stats") {
                    out.extend_from_slice(
                        stats_json(&c.counts, req.path, unix_now() - started).as_bytes(),
                    );
                    return Reply::ok("application/json");
                }
                if req.method != "POST" || !req.path.starts_with("/api/v1/write") {
                    out.extend_from_slice(b"404 page not found\n");
                    return Reply::status(404);
                }
                c.counts.requests += 1;
                // xorshift: cheap, deterministic failure injection.
                let mut x = rng.get();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rng.set(x);
                let mut reply = if fail_ratio > 0.0 && (x % 1_000_000) as f64 / 1e6 < fail_ratio {
                    c.counts.errors += 1;
                    Reply::status(fail_status)
                } else {
                    let v2 = req
                        .content_type
                        .contains("proto=io.prometheus.write.v2.Request");
                    let ingested = if v2 {
                        c.ingest_v2(req.body).map(Some)
                    } else {
                        c.ingest(req.body).map(|()| None)
                    };
                    match ingested {
                        Ok(written) => {
                            let mut r = Reply::status(status);
                            if let Some([s, h, e]) = written {
                                r.headers = vec![
                                    ("X-Prometheus-Remote-Write-Samples-Written", s.to_string()),
                                    (
                                        "X-Prometheus-Remote-Write-Histograms-Written",
                                        h.to_string(),
                                    ),
                                    ("X-Prometheus-Remote-Write-Exemplars-Written", e.to_string()),
                                ];
                            }
                            r
                        }
                        Err(e) => {
                            c.counts.errors += 1;
                            c.counts.decode_errors += 1;
                            out.extend_from_slice(e.as_bytes());
                            Reply::status(400)
                        }
                    }
                };
                reply.delay = latency;
                *shared_h.lock().unwrap_or_else(|e| e.into_inner()) = c.counts.scalars();
                reply
            });
            crate::runtime::spawn(server::serve(listener, handler));
            let mut prev = Counts::default();
            loop {
                crate::runtime::sleep(summary_every).await;
                let now = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let secs = summary_every.as_secs_f64();
                let samples = now.samples - prev.samples;
                eprintln!(
                    "samples/s={:.0} bytes/sample={:.2} requests={} errors={} series={} out_of_order={} duplicates={} gaps={}",
                    samples as f64 / secs,
                    (now.bytes - prev.bytes) as f64 / samples.max(1) as f64,
                    now.requests,
                    now.errors,
                    now.series,
                    now.out_of_order,
                    now.duplicates,
                    now.gaps
                );
                prev = now;
            }
        }
    })?;
    let counts = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let json = counts.to_json(unix_now() - started);
    eprintln!("final: {json}");
    if let Some(path) = report {
        std::fs::write(&path, format!("{json}\n"))
            .map_err(|e| format!("cannot write --report {path}: {e}"))?;
    }
    Ok(())
}

/// `/stats` or `/stats?from=T0&to=T1` (Unix seconds): the counts, plus the prefixed samples
/// with timestamps in the window.
fn stats_json(c: &Counts, path: &str, elapsed: f64) -> String {
    let mut json = c.to_json(elapsed);
    let q = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let get = |k: &str| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<i64>().ok())
    };
    if let (Some(from), Some(to)) = (get("from"), get("to")) {
        json.pop();
        let _ = write!(
            json,
            ", \"window_samples\": {}}}",
            c.prefixed_between(from, to)
        );
    }
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::proto::{Label, Sample, TimeSeries, WriteRequest};
    use prost::Message;

    fn request(series: &[(&str, &[i64])]) -> Vec<u8> {
        let req = WriteRequest {
            timeseries: series
                .iter()
                .map(|(name, ts)| TimeSeries {
                    histograms: vec![],
                    exemplars: vec![],
                    labels: vec![Label {
                        name: "__name__".into(),
                        value: name.to_string(),
                    }],
                    samples: ts
                        .iter()
                        .map(|t| Sample {
                            value: 1.0,
                            timestamp: *t,
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        };
        snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn counts_series_and_samples() {
        let mut c = Checker::new(None, None);
        c.ingest(&request(&[("a", &[1000, 2000]), ("b", &[1000])]))
            .unwrap();
        c.ingest(&request(&[("a", &[3000]), ("c", &[1000])]))
            .unwrap();
        assert_eq!((c.counts.series, c.counts.samples), (3, 5));
        assert_eq!(
            (c.counts.out_of_order, c.counts.duplicates, c.counts.gaps),
            (0, 0, 0)
        );
    }

    #[test]
    fn detects_reordering_duplicates_and_gaps() {
        let mut c = Checker::new(Some(Duration::from_secs(1)), None);
        c.ingest(&request(&[("a", &[1000, 2000])])).unwrap();
        c.ingest(&request(&[("a", &[2000])])).unwrap(); // duplicate
        c.ingest(&request(&[("a", &[1500])])).unwrap(); // out of order
        c.ingest(&request(&[("a", &[3000, 6000])])).unwrap(); // 3s step: a gap
        c.ingest(&request(&[("b", &[5000]), ("a", &[7000])]))
            .unwrap();
        assert_eq!(c.counts.duplicates, 1);
        assert_eq!(c.counts.out_of_order, 1);
        assert_eq!(c.counts.gaps, 1);
        assert_eq!(c.counts.samples, 8);
    }

    #[test]
    fn invalid_requests_change_nothing() {
        let mut c = Checker::new(None, None);
        assert!(c.ingest(b"not snappy").is_err());
        let mut good = request(&[("a", &[1000])]);
        c.ingest(&good).unwrap();
        // A valid snappy frame around a truncated protobuf.
        let raw = snap::raw::Decoder::new().decompress_vec(&good).unwrap();
        good = snap::raw::Encoder::new()
            .compress_vec(&raw[..raw.len() - 2])
            .unwrap();
        assert!(c.ingest(&good).is_err());
        assert_eq!(c.counts.samples, 1);
    }

    #[test]
    fn windows_count_prefixed_samples_by_timestamp() {
        let mut c = Checker::new(None, Some("bench_".into()));
        c.ingest(&request(&[
            ("bench_x", &[10_000, 11_000, 12_500]),
            ("up", &[10_000]),
        ]))
        .unwrap();
        assert_eq!(c.counts.prefixed_between(10, 12), 2);
        assert_eq!(c.counts.prefixed_between(0, 100), 3);
        assert_eq!(
            c.counts.prefixed_between(12, 10),
            0,
            "a reversed window is empty"
        );
        let json = stats_json(&c.counts, "/stats?from=10&to=13", 1.0);
        assert!(json.contains("\"window_samples\": 3}"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["samples"], 4);
    }
}
