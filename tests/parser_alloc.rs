//! The hot path allocates nothing per sample: with warm buffers, parsing each corpus payload
//! (and parsing + encoding it for remote write) performs zero heap allocations. A counting
//! global allocator, counting per thread, proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use spate::exposition::{Format, Parser};
use spate::scrape::{Appender, targets_for};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// Every corpus payload with its format (`.prom`: text 0.0.4, `.om`: OpenMetrics, `.pb`:
/// delimited protobuf).
fn corpus() -> Vec<(String, Format, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/exposition");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("prom") => Format::PromText,
            Some("om") => Format::OpenMetrics,
            Some("pb") => Format::Protobuf,
            _ => continue,
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("edge_bad_") {
            continue; // invalid on purpose: see the differential test
        }
        out.push((name, format, std::fs::read(&path).expect("read payload")));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        out.len() >= 5,
        "corpus is missing payloads: {:?}",
        out.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    out
}

fn parse_all(body: &[u8], format: Format, scratch: &mut Vec<spate::exposition::LabelRef>) -> usize {
    let mut p = Parser::new(body, format, scratch);
    let mut n = 0;
    while let Some(s) = p.next() {
        std::hint::black_box(s.expect("corpus payload parses"));
        n += 1;
    }
    n
}

#[test]
fn no_allocation_per_sample() {
    let cfg = spate::config::load_str(
        "global:\n  external_labels: {cluster: c1}\nscrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['10.0.0.1:9100']\n",
        "t.yml",
    )
    .unwrap();
    let target = targets_for(&cfg.scrape_configs[0]).targets.remove(0);
    let external = cfg.global.external_labels.clone();

    // The same target with native histograms ingested (protobuf payloads).
    let cfg_native = spate::config::load_str(
        "scrape_configs:\n- job_name: j\n  scrape_native_histograms: true\n  static_configs:\n  - targets: ['10.0.0.1:9100']\n",
        "t.yml",
    )
    .unwrap();
    let native_target = targets_for(&cfg_native.scrape_configs[0]).targets.remove(0);

    // The same target with a metric_relabel_configs chain that drops, removes and sets.
    let cfg_relabel = spate::config::load_str(
        "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['10.0.0.1:9100']\n  metric_relabel_configs:\n  - {source_labels: [__name__], regex: 'go_gc_.*|.*_bucket', action: drop}\n  - {regex: 'mode|method', action: labeldrop}\n  - {source_labels: [instance], regex: '([^:]+):.*', target_label: host}\n  - {source_labels: [__name__], regex: '(.*)_total', target_label: family}\n",
        "t.yml",
    )
    .unwrap();
    let relabel_target = targets_for(&cfg_relabel.scrape_configs[0])
        .targets
        .remove(0);

    for (name, format, body) in corpus() {
        let target = if format == Format::Protobuf {
            &native_target
        } else {
            &target
        };
        // Parsing alone.
        let mut scratch = Vec::new();
        let samples = parse_all(&body, format, &mut scratch); // warm-up: the scratch grows once
        assert!(samples > 0, "{name}: no samples");
        let n = allocations_during(|| {
            parse_all(&body, format, &mut scratch);
        });
        assert_eq!(
            n, 0,
            "{name}: parsing {samples} samples allocated {n} times"
        );

        // Parse, attach labels, (relabel,) encode remote-write entries.
        for (what, target) in [("encode", target), ("relabel + encode", &relabel_target)] {
            let mut app = Appender::default();
            let mut memo = Default::default();
            let cold = allocations_during(|| {
                app.append_body(target, &external, &body, format, 1, &mut memo)
                    .expect("append");
                app.rollback();
            });
            assert!(
                cold > 0,
                "the counter must see the first pass grow its buffers"
            );
            let n = allocations_during(|| {
                app.append_body(target, &external, &body, format, 1, &mut memo)
                    .expect("append");
                app.rollback();
            });
            assert_eq!(
                n, 0,
                "{name}: parse + {what} of {samples} samples allocated {n} times"
            );
        }
    }
}
