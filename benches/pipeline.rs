//! The per-core data path, stage by stage: parse, parse → encode (labels attached, remote-write
//! entries), and snappy compression of the encoded batch. Throughput is reported per byte of
//! exposition text; samples/s = bytes/s ÷ (payload bytes / samples), printed at start.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spate::exposition::{Format, Parser};
use spate::scrape::{Appender, targets_for};

// The allocator the spate binary uses, so allocation-heavy stages measure as they run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn node_exporter_payload() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/exposition/node_exporter.prom"
    ))
    .expect("fixture")
}

/// A web service's exposition: request histograms and counters with five labels each.
fn app_payload() -> Vec<u8> {
    let mut s = String::new();
    s.push_str("# HELP http_request_duration_seconds Request latency.\n# TYPE http_request_duration_seconds histogram\n");
    let les = [
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
    ];
    for h in 0..40 {
        for method in ["GET", "POST"] {
            for code in ["200", "500"] {
                let base = format!(
                    "handler=\"/api/v1/items/{h}\",method=\"{method}\",code=\"{code}\",service=\"checkout\",pod=\"checkout-7d9f8b6c5-x2x9q\""
                );
                for (i, le) in les.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "http_request_duration_seconds_bucket{{{base},le=\"{le}\"}} {}",
                        (i + 1) * 17 + h
                    );
                }
                let _ = writeln!(
                    s,
                    "http_request_duration_seconds_sum{{{base}}} {}.25",
                    h * 3
                );
                let _ = writeln!(
                    s,
                    "http_request_duration_seconds_count{{{base}}} {}",
                    12 * 17 + h
                );
                let _ = writeln!(s, "http_requests_total{{{base}}} {}", 1000 + h);
            }
        }
    }
    s.into_bytes()
}

fn count_samples(body: &[u8], format: Format) -> usize {
    let mut scratch = Vec::new();
    let mut p = Parser::new(body, format, &mut scratch);
    let mut n = 0;
    while let Some(s) = p.next() {
        s.expect("fixture parses");
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    let cfg = spate::config::load_str(
        "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['10.1.2.3:9100']\n    labels: {env: prod}\n",
        "bench.yml",
    )
    .expect("config");
    let target = targets_for(&cfg.scrape_configs[0]).targets.remove(0);
    // A typical metric_relabel_configs chain: drop families by name, drop a label, add one.
    let relabel_cfg = spate::config::load_str(
        "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['10.1.2.3:9100']\n    labels: {env: prod}\n  metric_relabel_configs:\n  - source_labels: [__name__]\n    regex: 'go_gc_.*|node_scrape_collector_.*|http_request_size_bytes_.*'\n    action: drop\n  - regex: 'uid|pod_uid|le_old'\n    action: labeldrop\n  - source_labels: [instance]\n    regex: '([^:]+):.*'\n    target_label: host\n",
        "bench.yml",
    )
    .expect("config");
    let relabel_target = targets_for(&relabel_cfg.scrape_configs[0])
        .targets
        .remove(0);
    let external = vec![("cluster".to_string(), "eu-1".to_string())];

    let mut om = app_payload();
    om.extend_from_slice(b"# EOF\n");
    for (name, body, format) in [
        ("node_exporter", node_exporter_payload(), Format::PromText),
        ("app_histograms", app_payload(), Format::PromText),
        ("app_histograms_openmetrics", om, Format::OpenMetrics),
        (
            "node_exporter_protobuf",
            std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/exposition/node_exporter.pb"
            ))
            .expect("fixture"),
            Format::Protobuf,
        ),
    ] {
        let samples = count_samples(&body, format);
        eprintln!(
            "{name}: {} bytes, {samples} samples, {:.1} bytes/sample",
            body.len(),
            body.len() as f64 / samples as f64
        );
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(body.len() as u64));

        g.bench_function("parse", |b| {
            let mut scratch = Vec::new();
            b.iter(|| {
                let mut p = Parser::new(black_box(&body), format, &mut scratch);
                let mut sum = 0.0;
                while let Some(Ok(s)) = p.next() {
                    sum += s.value;
                }
                black_box(sum)
            })
        });

        g.bench_function("parse_encode", |b| {
            let mut app = Appender::default();
            let mut memo = Default::default();
            b.iter(|| {
                let n = app
                    .append_body(
                        &target,
                        &external,
                        black_box(&body),
                        format,
                        1_700_000_000_000,
                        &mut memo,
                    )
                    .unwrap();
                app.rollback();
                black_box(n)
            })
        });

        g.bench_function("parse_encode_relabel", |b| {
            let mut app = Appender::default();
            let mut memo = Default::default();
            b.iter(|| {
                let n = app
                    .append_body(
                        &relabel_target,
                        &external,
                        black_box(&body),
                        format,
                        1_700_000_000_000,
                        &mut memo,
                    )
                    .unwrap();
                app.rollback();
                black_box(n)
            })
        });

        let mut app = Appender::default();
        app.append_body(
            &target,
            &external,
            &body,
            format,
            1_700_000_000_000,
            &mut Default::default(),
        )
        .unwrap();
        let encoded = app.entries().to_vec();
        eprintln!(
            "{name}: encoded {} bytes ({:.1} bytes/sample)",
            encoded.len(),
            encoded.len() as f64 / samples as f64
        );
        // WAL commit of one scrape whose series are all known already (steady state).
        let wal_dir =
            std::env::temp_dir().join(format!("spate-bench-wal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&wal_dir);
        let (mut wal, _) = spate::wal::Wal::open(
            &wal_dir,
            spate::wal::WalOptions {
                fsync_interval: std::time::Duration::from_secs(3600),
                ..Default::default()
            },
            Default::default(),
        )
        .expect("wal");
        let ends = app.ends().to_vec();
        let mut cache = spate::wal::SeriesCache::default();
        g.bench_function("wal_commit", |b| {
            b.iter(|| black_box(wal.commit(black_box(&encoded), &ends, &mut cache).unwrap()))
        });
        drop(wal);
        let _ = std::fs::remove_dir_all(&wal_dir);
        g.bench_function("snappy_encoded_batch", |b| {
            let mut enc = snap::raw::Encoder::new();
            let mut out = vec![0; snap::raw::max_compress_len(encoded.len())];
            b.iter(|| black_box(enc.compress(black_box(&encoded), &mut out).unwrap()))
        });
        g.finish();
    }
}

/// Target relabeling of 100k discovered targets, with a chain shaped like a Kubernetes pod
/// job's: keep by an annotation, build the address, copy labels by labelmap, shard by hashmod.
fn target_relabel(c: &mut Criterion) {
    let cfg = spate::config::load_str(
        "scrape_configs:
- job_name: pods
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: 'true', action: keep}
  - {source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port], separator: ':', regex: '(.+):(\\d+)', target_label: __address__, replacement: '$1:$2'}
  - {regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__address__], modulus: 4, target_label: __tmp_shard, action: hashmod}
  - {source_labels: [__tmp_shard], regex: '0|1|2|3', action: keep}
",
        "bench.yml",
    )
    .expect("config");
    let sc = &cfg.scrape_configs[0];
    let discovered: Vec<spate::scrape::Discovered> = (0..100_000)
        .map(|i| {
            let l = |k: &str, v: String| (k.to_string(), v);
            (
                vec![
                    l(
                        "__address__",
                        format!("10.{}.{}.{}:8080", i >> 16, (i >> 8) & 255, i & 255),
                    ),
                    l("__meta_kubernetes_namespace", format!("ns-{}", i % 50)),
                    l("__meta_kubernetes_pod_name", format!("app-{i}-7f9c")),
                    l(
                        "__meta_kubernetes_pod_ip",
                        format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    ),
                    l(
                        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
                        (if i % 10 == 0 { "false" } else { "true" }).into(),
                    ),
                    l(
                        "__meta_kubernetes_pod_annotation_prometheus_io_port",
                        "9102".into(),
                    ),
                    l(
                        "__meta_kubernetes_pod_label_app",
                        format!("app-{}", i % 300),
                    ),
                    l(
                        "__meta_kubernetes_pod_label_pod_template_hash",
                        "7f9c".into(),
                    ),
                ],
                vec![],
            )
        })
        .collect();
    let mut g = c.benchmark_group("target_relabel");
    g.sample_size(10);
    g.throughput(Throughput::Elements(discovered.len() as u64));
    g.bench_function("100k_pods", |b| {
        b.iter(|| {
            let d = spate::scrape::derive(sc, black_box(&discovered));
            assert_eq!(d.targets.len(), 90_000);
            black_box(d.targets.len())
        })
    });
    g.finish();
}

/// The remote-write sending stage on its own, per batch of `max_samples_per_send` (2,000)
/// samples with 8 labels each: encoding entries from label sets and compressing the batch
/// (live sending); rebuilding entries from WAL label sections (reading a backlog back); and
/// converting a batch to Remote Write 2.0 before compressing it.
fn remote_encode(c: &mut Criterion) {
    use spate::entry::{LabelScratch, encode_series, encode_series_raw, split_entry};
    const BATCH: usize = 2000;
    let series: Vec<LabelScratch> = (0..BATCH)
        .map(|i| {
            let mut l = LabelScratch::default();
            l.push(b"__name__", b"http_request_duration_seconds_bucket");
            l.push(
                b"handler",
                format!("/api/v1/resource/{}", i % 40).as_bytes(),
            );
            l.push(
                b"instance",
                format!("10.0.{}.{}:9100", i % 7, i % 250).as_bytes(),
            );
            l.push(b"job", b"api-server");
            l.push(
                b"le",
                ["0.005", "0.01", "0.1", "1", "+Inf"][i % 5].as_bytes(),
            );
            l.push(b"method", ["GET", "POST", "PUT"][i % 3].as_bytes());
            l.push(b"replica", b"r1");
            l.push(b"status", ["200", "404", "500"][i % 3].as_bytes());
            l
        })
        .collect();
    let mut batch = Vec::new();
    for (i, l) in series.iter().enumerate() {
        encode_series(&mut batch, l, i as f64 * 1.5, 1_700_000_000_000);
    }
    let sections: Vec<Vec<u8>> = spate::entry::entries(&batch)
        .map(|e| split_entry(e).unwrap().0.to_vec())
        .collect();
    eprintln!(
        "remote_encode: {} bytes per batch of {BATCH} ({:.1} bytes/sample)",
        batch.len(),
        batch.len() as f64 / BATCH as f64
    );
    let mut g = c.benchmark_group("remote_encode");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut enc = snap::raw::Encoder::new();
    let mut out = vec![0; snap::raw::max_compress_len(batch.len() * 2)];
    let mut body = Vec::with_capacity(batch.len());
    g.bench_function("v1_encode_compress", |b| {
        b.iter(|| {
            body.clear();
            for (i, l) in series.iter().enumerate() {
                encode_series(&mut body, l, black_box(i as f64), 1_700_000_000_000);
            }
            black_box(enc.compress(&body, &mut out).unwrap())
        })
    });
    g.bench_function("wal_readback_encode_compress", |b| {
        b.iter(|| {
            body.clear();
            for (i, l) in sections.iter().enumerate() {
                encode_series_raw(&mut body, l, black_box(i as f64), 1_700_000_000_000);
            }
            black_box(enc.compress(&body, &mut out).unwrap())
        })
    });
    let mut conv = spate::remote::v2::Converter::default();
    let mut v2 = Vec::new();
    g.bench_function("v2_convert_compress", |b| {
        b.iter(|| {
            conv.convert(black_box(&batch), None, None, &mut v2)
                .unwrap();
            black_box(enc.compress(&v2, &mut out).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench, target_relabel, remote_encode);
criterion_main!(benches);
