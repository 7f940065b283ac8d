//! `spate bench targets`: a synthetic scrape fleet. Target i listens on PORT+i and serves
//! `/metrics` in the Prometheus text format: counters, gauges, histograms and summaries with a
//! web service's labels, values that change every scrape, and optional churn. `/stats` on any
//! target's port reports what the fleet served, as JSON.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::server::{self, Reply, Request};
use super::{Flags, Tool, flag, run_until_signal};
use crate::names::Escaping;
use crate::runtime::TcpListener;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    /// Bucket `i` of `n` (the last is `+Inf`).
    Bucket(u8, u8),
    Sum,
    Count,
    Quantile(u8),
}

struct Series {
    /// `name{labels` without the closing brace.
    prefix: String,
    kind: Kind,
}

/// The exposition of one target: families with their HELP/TYPE lines and series.
pub(crate) struct Template {
    /// (HELP and TYPE lines, first series index, end series index)
    families: Vec<(String, usize, usize)>,
    series: Vec<Series>,
}

const HANDLERS: [&str; 8] = [
    "/api/v1/query",
    "/api/v1/write",
    "/api/v1/series",
    "/api/v1/labels",
    "/login",
    "/cart",
    "/checkout",
    "/static",
];
const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
const CODES: [&str; 3] = ["200", "404", "500"];
const LES: [&str; 12] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
const QUANTILES: [&str; 3] = ["0.5", "0.9", "0.99"];

impl Template {
    /// About 40% histogram series, 30% counters, 20% gauges, 10% summaries; exactly `n` series.
    pub fn new(n: usize) -> Template {
        let mut t = Template {
            families: Vec::new(),
            series: Vec::new(),
        };
        let web = |k: usize| {
            format!(
                "handler=\"{}{}\",method=\"{}\",code=\"{}\"",
                HANDLERS[k % HANDLERS.len()],
                if k >= HANDLERS.len() {
                    format!("/{}", k / HANDLERS.len())
                } else {
                    String::new()
                },
                METHODS[(k / 8) % 3],
                CODES[(k / 24) % 3]
            )
        };
        let hist_children = n * 4 / 10 / 14;
        t.family(
            "bench_http_request_duration_seconds",
            "histogram",
            "Request latency.",
            |s| {
                for k in 0..hist_children {
                    let base = web(k);
                    for (i, le) in LES.iter().enumerate() {
                        s.push(Series {
                            prefix: format!(
                                "bench_http_request_duration_seconds_bucket{{{base},le=\"{le}\""
                            ),
                            kind: Kind::Bucket(i as u8, LES.len() as u8),
                        });
                    }
                    s.push(Series {
                        prefix: format!("bench_http_request_duration_seconds_sum{{{base}"),
                        kind: Kind::Sum,
                    });
                    s.push(Series {
                        prefix: format!("bench_http_request_duration_seconds_count{{{base}"),
                        kind: Kind::Count,
                    });
                }
            },
        );
        let summary_children = n / 10 / 5;
        t.family(
            "bench_rpc_duration_seconds",
            "summary",
            "RPC latency.",
            |s| {
                for k in 0..summary_children {
                    let base = format!("service=\"svc-{}\",rpc=\"Call{}\"", k % 13, k);
                    for (i, q) in QUANTILES.iter().enumerate() {
                        s.push(Series {
                            prefix: format!("bench_rpc_duration_seconds{{{base},quantile=\"{q}\""),
                            kind: Kind::Quantile(i as u8),
                        });
                    }
                    s.push(Series {
                        prefix: format!("bench_rpc_duration_seconds_sum{{{base}"),
                        kind: Kind::Sum,
                    });
                    s.push(Series {
                        prefix: format!("bench_rpc_duration_seconds_count{{{base}"),
                        kind: Kind::Count,
                    });
                }
            },
        );
        let gauges = n * 2 / 10;
        t.family(
            "bench_open_connections",
            "gauge",
            "Open connections per pool.",
            |s| {
                for k in 0..gauges {
                    s.push(Series {
                        prefix: format!(
                            "bench_open_connections{{pool=\"pool-{k}\",zone=\"z{}\"",
                            k % 3
                        ),
                        kind: Kind::Gauge,
                    });
                }
            },
        );
        let counters = n - t.series.len();
        t.family(
            "bench_http_requests_total",
            "counter",
            "Requests served.",
            |s| {
                for k in 0..counters {
                    s.push(Series {
                        prefix: format!("bench_http_requests_total{{{}", web(k)),
                        kind: Kind::Counter,
                    });
                }
            },
        );
        debug_assert_eq!(t.series.len(), n);
        t
    }

    fn family(&mut self, name: &str, kind: &str, help: &str, fill: impl FnOnce(&mut Vec<Series>)) {
        let start = self.series.len();
        fill(&mut self.series);
        if self.series.len() > start {
            self.families.push((
                format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"),
                start,
                self.series.len(),
            ));
        }
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Writes the exposition for scrape number `scrape` of target `target`. With churn, each
    /// series carries `gen="N"`, and N moves on for `churn_per_min` of the series each minute.
    pub fn render(&self, out: &mut Vec<u8>, target: u64, scrape: u64, churn: Option<(f64, f64)>) {
        let n = self.series.len().max(1) as f64;
        for (header, start, end) in &self.families {
            out.extend_from_slice(header.as_bytes());
            for i in *start..*end {
                let s = &self.series[i];
                out.extend_from_slice(s.prefix.as_bytes());
                if let Some((minutes, per_min)) = churn {
                    let generation = (minutes * per_min + i as f64 / n).floor() as u64;
                    let _ = write!(out, ",gen=\"{generation}\"");
                }
                out.extend_from_slice(b"} ");
                let seed = target.wrapping_mul(7919).wrapping_add(i as u64);
                let count = scrape * 10 + seed % 5;
                let _ = match s.kind {
                    Kind::Counter => write!(out, "{}", scrape * (1 + seed % 7) + seed),
                    Kind::Gauge => {
                        write!(out, "{}", ((scrape * 31 + seed * 17) % 1000) as f64 / 10.0)
                    }
                    Kind::Bucket(b, n) => {
                        write!(out, "{}", count * (u64::from(b) + 1) / u64::from(n))
                    }
                    Kind::Sum => write!(out, "{}", count as f64 * 0.25),
                    Kind::Count => write!(out, "{count}"),
                    Kind::Quantile(q) => write!(
                        out,
                        "{}",
                        0.01 * f64::from(q + 1) + (scrape % 10) as f64 / 1000.0
                    ),
                };
                out.push(b'\n');
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    scrapes: AtomicU64,
    samples: AtomicU64,
    bytes: AtomicU64,
}

/// `spate bench targets`.
pub(crate) const TOOL: Tool = Tool {
    name: "targets",
    help: "Serve a synthetic scrape fleet.",
    flags: &[
        flag("targets", "=N", Some("10"), "number of targets"),
        flag("series", "=M", Some("1000"), "series per target"),
        flag(
            "listen",
            "=HOST:PORT",
            Some("127.0.0.1:20000"),
            "target i listens on PORT+i, at /metrics",
        ),
        flag(
            "churn",
            "=P",
            Some("0"),
            "percent of series replaced per minute",
        ),
        flag(
            "file-sd",
            "=FILE",
            None,
            "also write the target list as a file_sd_configs JSON file",
        ),
        flag("cores", "=N", Some("1"), "serving threads"),
        flag(
            "utf8-names",
            "=K",
            Some("0"),
            "K more series with UTF-8 names (`bench.utf8.temperature{\"service.name\"=…}`), served quoted or escaped as the scrape's Accept negotiates",
        ),
    ],
};

/// How a scrape's `Accept` asks for names, as a Prometheus 3 client library reads it: the
/// text 1.0.0 format with its `escaping` (UTF-8 names quoted with `allow-utf-8`), else the
/// 0.0.4 format, whose names must be legacy ones (escaped with underscores).
fn negotiate(accept: &str) -> (Escaping, &'static str) {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        if parts.next() != Some("text/plain") {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        if params.iter().any(|(k, v)| *k == "version" && *v == "1.0.0") {
            let escaping = params
                .iter()
                .find(|(k, _)| *k == "escaping")
                .and_then(|(_, v)| Escaping::parse(v))
                .unwrap_or(Escaping::Underscores);
            let content_type = match escaping {
                Escaping::AllowUtf8 => {
                    "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
                }
                Escaping::Underscores => {
                    "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"
                }
                Escaping::Dots => "text/plain; version=1.0.0; charset=utf-8; escaping=dots",
                Escaping::Values => "text/plain; version=1.0.0; charset=utf-8; escaping=values",
            };
            return (escaping, content_type);
        }
    }
    (
        Escaping::Underscores,
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// `k` gauges named `bench.utf8.temperature` with a `service.name` label: quoted as they are
/// under `allow-utf-8`, else escaped with the negotiated scheme (names and label names).
fn render_utf8(out: &mut Vec<u8>, k: usize, target: u64, scrape: u64, escaping: Escaping) {
    const NAME: &str = "bench.utf8.temperature";
    const LABEL: &str = "service.name";
    let (name, label) = match escaping {
        Escaping::AllowUtf8 => (format!("\"{NAME}\""), format!("\"{LABEL}\"")),
        e => (
            crate::names::escape_name(NAME, e),
            crate::names::escape_name(LABEL, e),
        ),
    };
    let _ = writeln!(out, "# HELP {name} A gauge with a UTF-8 name.");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for i in 0..k {
        let value = ((scrape * 13 + target * 7 + i as u64) % 500) as f64 / 10.0;
        let _ = match escaping {
            Escaping::AllowUtf8 => {
                writeln!(out, "{{{name},{label}=\"svc-{i}\",host=\"h\"}} {value}")
            }
            _ => writeln!(out, "{name}{{{label}=\"svc-{i}\",host=\"h\"}} {value}"),
        };
    }
}

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(args, TOOL.flags)?;
    let targets: usize = f.num("targets")?;
    let series: usize = f.num("series")?;
    let churn: f64 = f.num("churn")?;
    let cores: usize = f.num("cores")?;
    let listen: SocketAddr = f.num("listen")?;
    let utf8: usize = f.num("utf8-names")?;
    if targets == 0 || series == 0 || cores == 0 {
        return Err("--targets, --series and --cores must be positive".into());
    }
    if usize::from(listen.port()) + targets > 65536 {
        return Err(format!(
            "ports {}..{} do not fit below 65536",
            listen.port(),
            usize::from(listen.port()) + targets
        ));
    }
    let addrs: Vec<SocketAddr> = (0..targets)
        .map(|i| SocketAddr::new(listen.ip(), listen.port() + i as u16))
        .collect();
    if let Some(path) = f.opt("file-sd") {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        let json = format!(
            "[{{\"targets\": [{}], \"labels\": {{\"fleet\": \"bench\"}}}}]\n",
            list.join(", ")
        );
        std::fs::write(&path, json).map_err(|e| format!("cannot write --file-sd {path}: {e}"))?;
    }
    // Bind every port now so a clash fails at start, naming the port.
    for a in &addrs {
        std::net::TcpListener::bind(a).map_err(|e| format!("cannot listen on {a}: {e}"))?;
    }
    let template = Arc::new(Template::new(series));
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    eprintln!(
        "serving {targets} targets x {series} series on {}..{} at /metrics (churn {churn}%/min); stop with Ctrl-C",
        addrs[0],
        addrs[targets - 1]
    );
    let (addrs, template2, stats2) = (Arc::new(addrs), template.clone(), stats.clone());
    let churn = (churn > 0.0).then_some(churn / 100.0);
    run_until_signal(cores, move |core| {
        let (addrs, template, stats) = (addrs.clone(), template2.clone(), stats2.clone());
        async move {
            for (i, addr) in addrs.iter().enumerate().filter(|(i, _)| i % cores == core) {
                let all = addrs.len();
                let listener = match TcpListener::bind(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("cannot listen on {addr}: {e}");
                        std::process::exit(1);
                    }
                };
                let scrapes = Rc::new(std::cell::Cell::new(0u64));
                let (template, stats) = (template.clone(), stats.clone());
                let handler: server::Handler = Rc::new(
                    move |req: &Request<'_>, out: &mut Vec<u8>| {
                        if req.path == "/stats" {
                            let _ = write!(
                                out,
                                "{{\"scrapes\": {}, \"samples\": {}, \"bytes\": {}, \"series_per_target\": {}, \"targets\": {}}}",
                                stats.scrapes.load(Relaxed),
                                stats.samples.load(Relaxed),
                                stats.bytes.load(Relaxed),
                                template.len(),
                                all
                            );
                            return Reply::ok("application/json");
                        }
                        if req.path != "/metrics" && !req.path.starts_with("/metrics?") {
                            out.extend_from_slice(b"404 page not found\n");
                            return Reply::status(404);
                        }
                        let n = scrapes.get() + 1;
                        scrapes.set(n);
                        let churn = churn.map(|c| (started.elapsed().as_secs_f64() / 60.0, c));
                        template.render(out, i as u64, n, churn);
                        let mut content_type = "text/plain; version=0.0.4; charset=utf-8";
                        if utf8 > 0 {
                            let (escaping, ct) = negotiate(req.accept);
                            render_utf8(out, utf8, i as u64, n, escaping);
                            content_type = ct;
                        }
                        stats.scrapes.fetch_add(1, Relaxed);
                        stats
                            .samples
                            .fetch_add((template.len() + utf8) as u64, Relaxed);
                        stats.bytes.fetch_add(out.len() as u64, Relaxed);
                        Reply::ok(content_type)
                    },
                );
                crate::runtime::spawn(server::serve(listener, handler));
            }
            std::future::pending::<()>().await;
        }
    })?;
    let mut summary = String::new();
    let _ = write!(
        summary,
        "served {} scrapes, {} samples",
        stats.scrapes.load(Relaxed),
        stats.samples.load(Relaxed)
    );
    eprintln!("{summary}");
    let _ = template;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::{Format, Parser};

    fn parse(body: &[u8]) -> Vec<(String, f64)> {
        let mut scratch = Vec::new();
        let mut p = Parser::new(body, Format::PromText, &mut scratch);
        let mut out = Vec::new();
        while let Some(s) = p.next() {
            let s = s.expect("fleet output parses");
            let labels: String = s
                .labels
                .iter()
                .map(|l| {
                    format!(
                        "{}={};",
                        String::from_utf8_lossy(l.name(body)),
                        String::from_utf8_lossy(l.value(body))
                    )
                })
                .collect();
            out.push((
                format!("{}{{{labels}}}", String::from_utf8_lossy(s.name)),
                s.value,
            ));
        }
        out
    }

    #[test]
    fn serves_exactly_the_requested_series_with_all_types() {
        for n in [1, 13, 100, 2500] {
            let t = Template::new(n);
            assert_eq!(t.len(), n);
            let mut body = Vec::new();
            t.render(&mut body, 3, 1, None);
            let samples = parse(&body);
            assert_eq!(samples.len(), n, "n={n}");
            let unique: std::collections::HashSet<_> =
                samples.iter().map(|(s, _)| s.clone()).collect();
            assert_eq!(unique.len(), n, "series are distinct");
        }
        let mut body = Vec::new();
        Template::new(1000).render(&mut body, 0, 1, None);
        let text = String::from_utf8(body).unwrap();
        for kind in ["histogram", "summary", "gauge", "counter"] {
            assert!(text.contains(&format!(" {kind}\n")), "has a {kind}");
        }
    }

    #[test]
    fn values_change_every_scrape_and_histograms_stay_cumulative() {
        let t = Template::new(200);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        t.render(&mut a, 1, 5, None);
        t.render(&mut b, 1, 6, None);
        let (a, b) = (parse(&a), parse(&b));
        let changed = a.iter().zip(&b).filter(|(x, y)| x.1 != y.1).count();
        assert!(changed > 190, "only {changed} of 200 values changed");
        let buckets: Vec<f64> = a
            .iter()
            .filter(|(s, _)| s.contains("_bucket") && s.contains("/api/v1/query;"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(buckets.len(), 12);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    }

    #[test]
    fn churn_replaces_the_requested_share_of_series() {
        let t = Template::new(1000);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        t.render(&mut a, 0, 1, Some((0.0, 0.1)));
        t.render(&mut b, 0, 1, Some((1.0, 0.1)));
        let (a, b) = (parse(&a), parse(&b));
        let replaced = a.iter().zip(&b).filter(|(x, y)| x.0 != y.0).count();
        assert!(
            (90..=110).contains(&replaced),
            "10%/min churn replaced {replaced} of 1000 in a minute"
        );
    }
}
