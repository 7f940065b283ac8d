//! Differential test against Prometheus itself: Prometheus agent and spate scrape the same
//! corpus payloads with the same configuration, each forwards to its own recording receiver,
//! and the series and values they forward must be identical. A difference is a bug in spate
//! unless docs/compatibility.md documents it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Proc, Receiver, Spate, TempDir, TestServer, free_port, require_program, wait_for};

/// Report series whose values depend on timing; the others (`up`, the sample counts,
/// `scrape_series_added`) must match, so a payload one agent rejects, the other rejects too.
const REPORT_SERIES: &[&str] = &["scrape_duration_seconds"];

fn corpus() -> Vec<(String, &'static str, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/exposition");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let content_type = match path.extension().and_then(|e| e.to_str()) {
            Some("prom") => "text/plain; version=0.0.4; charset=utf-8",
            Some("om") => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Some("pb") => common::PROTOBUF,
            _ => continue,
        };
        let stem = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace('.', "_");
        out.push((stem, content_type, std::fs::read(&path).unwrap()));
    }
    out.sort();
    out
}

/// Where the oracle (Debian's Prometheus 2.42) and Prometheus 3, which spate follows, differ:
/// these jobs are checked against Prometheus 3's behaviour instead.
const PROMETHEUS_3_DIFFERENCES: &[(&str, &str)] = &[
    (
        "edge_ws_leading_prom",
        "Prometheus 3 skips blanks at the start of a line; 2.42 rejects the scrape",
    ),
    (
        "edge_om_exemplar_gauge_om",
        "Prometheus >= 2.43 accepts exemplars on any series; 2.42 only on _total and _bucket",
    ),
    (
        "native_histograms_pb",
        "without native ingestion Prometheus 3 keeps a native histogram's classic series; 2.42 drops the histogram",
    ),
];

/// Where spate differs from Prometheus agent on purpose (docs/compatibility.md): these jobs
/// are checked for spate's behaviour instead.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[(
    "edge_ts_prom",
    "Prometheus agent's remote write skips samples timestamped before the agent started; spate forwards them",
)];

/// Histogram and summary families declared by `# TYPE` lines, per payload.
fn declared_types(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("# TYPE ")?.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .filter(|(_, t)| t == "histogram" || t == "summary")
        .collect()
}

/// Prometheus 3 stores `le` (histograms) and `quantile` (summaries) in canonical float form
/// (`le="1"` becomes `le="1.0"`); 2.42 keeps them as written. Applied to the oracle's output.
fn as_prometheus_3(labels: &mut [(String, String)], types: &[(String, String)]) {
    let name = labels
        .iter()
        .find(|(n, _)| n == "__name__")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let histogram = types
        .iter()
        .any(|(f, t)| t == "histogram" && name == format!("{f}_bucket"));
    let summary = types.iter().any(|(f, t)| t == "summary" && name == *f);
    for (n, v) in labels.iter_mut() {
        if (n == "le" && histogram) || (n == "quantile" && summary) {
            let mut out = Vec::new();
            spate::exposition::normalize_float_label(v.as_bytes(), &mut out);
            *v = String::from_utf8(out).unwrap();
        }
    }
}

/// Series (labels without `instance`) → the newest value forwarded, per job.
type Forwarded = BTreeMap<String, BTreeMap<Vec<(String, String)>, String>>;

fn forwarded(
    r: &Receiver,
    oracle_types: Option<&BTreeMap<String, Vec<(String, String)>>>,
) -> Forwarded {
    let mut newest: BTreeMap<Vec<(String, String)>, (i64, f64)> = BTreeMap::new();
    for s in r.samples() {
        let name = s.label("__name__").unwrap_or_default();
        if REPORT_SERIES.contains(&name) {
            continue;
        }
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(n, _)| n != "instance")
            .cloned()
            .collect();
        if let Some(types) = oracle_types {
            let job = labels
                .iter()
                .find(|(n, _)| n == "job")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            if let Some(t) = types.get(job) {
                as_prometheus_3(&mut labels, t);
            }
        }
        let e = newest.entry(labels).or_insert((i64::MIN, 0.0));
        if s.ts > e.0 {
            *e = (s.ts, s.value);
        }
    }
    let mut out = Forwarded::new();
    for (labels, (_, v)) in newest {
        let job = labels
            .iter()
            .find(|(n, _)| n == "job")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        // Compare bit patterns via their text, so NaN equals NaN.
        let value = if v.is_nan() {
            format!("NaN({:#x})", v.to_bits())
        } else {
            format!("{v:?}")
        };
        out.entry(job).or_default().insert(labels, value);
    }
    out
}

/// Prometheus agent and spate on the same jobs, scraping every second, each forwarding to a
/// recording receiver of its own.
struct Agents {
    prom_rx: Receiver,
    _prom: common::Proc,
    spate_rx: Receiver,
    spate: Spate,
}

fn start_both(prom_bin: &Path, dir: &TempDir, jobs: &str) -> Agents {
    let config = |url: &str| {
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}remote_write:\n  - url: {url}\n    queue_config:\n      batch_send_deadline: 500ms\n"
        )
    };
    let prom_rx = Receiver::start(|_| 200);
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, config(&prom_rx.url())).unwrap();
    let _prom =
        common::prometheus_agent(prom_bin, dir, &cfg, &format!("127.0.0.1:{}", free_port()));
    let spate_rx = Receiver::start(|_| 200);
    let spate = Spate::start(&config(&spate_rx.url()), &[]);
    Agents {
        prom_rx,
        _prom,
        spate_rx,
        spate,
    }
}

#[test]
fn forwards_the_same_series_and_values_as_prometheus_agent() {
    let dir = TempDir::new("diff");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let payloads = Arc::new(corpus());
    let served = payloads.clone();
    let server = TestServer::start(move |headers, _| {
        let path = headers.get(":path").cloned().unwrap_or_default();
        match served
            .iter()
            .find(|(stem, _, _)| path == format!("/{stem}"))
        {
            Some((_, ct, body)) => (200, *ct, body.clone()),
            None => (404, "text/plain", b"not found".to_vec()),
        }
    });
    let jobs: String = payloads
        .iter()
        .map(|(stem, _, _)| {
            format!("  - job_name: {stem}\n    metrics_path: /{stem}\n    static_configs:\n      - targets: ['{}']\n", server.addr)
        })
        .collect();
    let Agents {
        prom_rx,
        _prom,
        spate_rx,
        mut spate,
    } = start_both(&prom_bin, &dir, &jobs);

    // Wait until both forwarded every job, twice over, then compare.
    let ready = |r: &Receiver| {
        let f = forwarded(r, None);
        payloads
            .iter()
            .all(|(stem, _, _)| f.get(stem).is_some_and(|s| !s.is_empty()))
    };
    wait_for(
        Duration::from_secs(120),
        "both agents to forward every payload",
        || (ready(&prom_rx) && ready(&spate_rx)).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    let types: BTreeMap<String, Vec<(String, String)>> = payloads
        .iter()
        .map(|(stem, _, body)| (stem.clone(), declared_types(body)))
        .collect();
    let (prom, ours) = (
        forwarded(&prom_rx, Some(&types)),
        forwarded(&spate_rx, None),
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());

    let mut report = String::new();
    for (stem, _, _) in payloads.iter() {
        let (p, s) = (&prom[stem], &ours[stem]);
        if PROMETHEUS_3_DIFFERENCES.iter().any(|(job, _)| job == stem) {
            // Prometheus 3 accepts these payloads: spate must scrape them successfully.
            let up = s
                .iter()
                .find(|(k, _)| k.iter().any(|(n, v)| n == "__name__" && v == "up"))
                .map(|(_, v)| v.clone());
            assert_eq!(
                up.as_deref(),
                Some("1.0"),
                "{stem}: spate must accept it as Prometheus 3 does"
            );
            continue;
        }
        if DELIBERATE_DIFFERENCES.iter().any(|(job, _)| job == stem) {
            let sample = s
                .iter()
                .find(|(k, _)| k.iter().any(|(n, v)| n == "__name__" && v == "edge_ts"));
            assert_eq!(
                sample.map(|(_, v)| v.as_str()),
                Some("1.0"),
                "{stem}: spate forwards the timestamped sample"
            );
            continue;
        }
        let (pk, sk): (BTreeSet<_>, BTreeSet<_>) = (p.keys().collect(), s.keys().collect());
        for missing in pk.difference(&sk) {
            report.push_str(&format!("{stem}: spate lacks {missing:?}\n"));
        }
        for extra in sk.difference(&pk) {
            report.push_str(&format!("{stem}: spate adds {extra:?}\n"));
        }
        for k in pk.intersection(&sk) {
            if p[*k] != s[*k] {
                report.push_str(&format!(
                    "{stem}: {k:?}: prometheus {} spate {}\n",
                    p[*k], s[*k]
                ));
            }
        }
    }
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}

/// What an agent forwarded, reduced to what must not depend on when it scraped: every series
/// that got a sample, every series that got a staleness marker, and the set of values each
/// series took (timestamps, durations and series with their own clock left out).
#[derive(Debug, Default, PartialEq)]
struct Behaviour {
    series: BTreeSet<Vec<(String, String)>>,
    staled: BTreeSet<Vec<(String, String)>>,
    values: BTreeMap<Vec<(String, String)>, BTreeSet<String>>,
}

/// Per job, the non-zero values of `scrape_series_added` in time order: how often, and by
/// how much, each agent saw series it did not know.
fn series_added(r: &Receiver) -> BTreeMap<String, Vec<String>> {
    let mut added: Vec<(String, i64, f64)> = r
        .samples()
        .into_iter()
        .filter(|s| s.label("__name__") == Some("scrape_series_added") && s.value > 0.0)
        .map(|s| {
            (
                s.label("job").unwrap_or_default().to_string(),
                s.ts,
                s.value,
            )
        })
        .collect();
    added.sort_by_key(|(job, ts, _)| (job.clone(), *ts));
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (job, _, v) in added {
        out.entry(job).or_default().push(format!("{v}"));
    }
    out
}

fn behaviour(r: &Receiver) -> Behaviour {
    let mut b = Behaviour::default();
    for s in r.samples() {
        let name = s.label("__name__").unwrap_or_default();
        if name == "scrape_duration_seconds" {
            continue;
        }
        if s.value.to_bits() == 0x7ff0_0000_0000_0002 {
            b.staled.insert(s.labels.clone());
            continue;
        }
        b.series.insert(s.labels.clone());
        b.values
            .entry(s.labels.clone())
            .or_default()
            .insert(format!("{:?}", s.value));
    }
    b
}

/// Relabeling (target and metric), honor_labels conflicts, a sample limit breached, series
/// vanishing, a target failing and coming back: Prometheus agent and spate scrape the same
/// targets through the same phases, and must forward the same series, values and staleness
/// markers.
#[test]
fn relabeling_limits_and_staleness_match_prometheus_agent() {
    let dir = TempDir::new("diff-scrape");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    // Phases by wall time, shared by both agents, from the moment both have forwarded the
    // first phase: 0–6 s all series; 6–14 s one vanishes; 14–20 s the target fails; after
    // that, all series again.
    let clock: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Default::default();
    let since = {
        let clock = clock.clone();
        move || {
            clock
                .lock()
                .unwrap()
                .map_or(Duration::ZERO, |t| t.elapsed())
        }
    };
    let phase_clock = since.clone();
    let phase = move || match phase_clock().as_secs() {
        0..6 => 0,
        6..14 => 1,
        14..20 => 2,
        _ => 3,
    };
    let flappy_phase = phase.clone();
    let app = TestServer::start(move |_, _| match phase() {
        2 => (500, "text/plain", b"down".to_vec()),
        p => {
            let mut body = String::from(
                "# TYPE req_total counter\nreq_total{path=\"/a\",code=\"200\"} 10\ntemp{id=\"x\",job=\"exposed\",instance=\"inner\"} 3\ngo_gc_cycles 4\nblank{job=\"\",zone=\"\"} 5\n",
            );
            if p != 1 {
                body.push_str("req_total{path=\"/b\",code=\"503\"} 20\n");
            }
            (200, "text/plain; version=0.0.4", body.into_bytes())
        }
    });
    // A target that answers with an empty body while one series of `app` is gone: its
    // series go stale, and when they come back they are not counted as added again
    // (`scrape_series_added`), as Prometheus keeps its scrape cache through an empty scrape.
    let flappy = TestServer::start(move |_, _| {
        let body: &[u8] = match flappy_phase() {
            1 => b"",
            _ => b"f_one 1\nf_two 2\n",
        };
        (200, "text/plain; version=0.0.4", body.to_vec())
    });
    let many = TestServer::start(|_, _| {
        (
            200,
            "text/plain; version=0.0.4",
            b"a 1\nb 2\nc 3\nd 4\ne 5\n".to_vec(),
        )
    });
    // A file_sd target that leaves its file mid-run: both agents must mark it stale.
    let sd_dir = TempDir::new("diff-scrape-sd");
    let sd_file = sd_dir.path().join("targets.json");
    let leaving = TestServer::start(|_, _| {
        (
            200,
            "text/plain; version=0.0.4",
            b"leaving_metric 7\n".to_vec(),
        )
    });
    std::fs::write(
        &sd_file,
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"src": "file"}}}}]"#,
            leaving.addr
        ),
    )
    .unwrap();
    let jobs = format!(
        "  - job_name: files
    file_sd_configs: [{{files: ['{sd}'], refresh_interval: 1s}}]
  - job_name: app
    static_configs: [{{targets: ['{app}'], labels: {{team: core, __tmp_tier: gold}}}}]
    relabel_configs:
      - {{source_labels: [__tmp_tier], target_label: tier}}
      - {{source_labels: [__address__], modulus: 4, target_label: shard, action: hashmod}}
      - {{source_labels: [team], target_label: team_upper, action: uppercase}}
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'go_gc_.*', action: drop}}
      - {{regex: id, action: labeldrop}}
      - {{source_labels: [code], regex: '(\\d)\\d\\d', target_label: class, replacement: '${{1}}xx'}}
      - {{source_labels: [__name__, path], separator: '@', regex: 'req_total@/(.*)', target_label: route, replacement: 'r_$1'}}
  - job_name: app_honor
    honor_labels: true
    static_configs: [{{targets: ['{app}']}}]
    metric_relabel_configs:
      - {{regex: '(p.*)', replacement: 'x_${{1}}', action: labelmap}}
      - {{regex: 'path', action: labeldrop}}
  - job_name: flappy
    static_configs: [{{targets: ['{flappy}']}}]
  - job_name: limited
    sample_limit: 3
    static_configs: [{{targets: ['{many}']}}]
  - job_name: kept
    sample_limit: 3
    static_configs: [{{targets: ['{many}']}}]
    metric_relabel_configs:
      - {{source_labels: [__name__], regex: 'a|b', action: drop}}
",
        app = app.addr,
        many = many.addr,
        flappy = flappy.addr,
        sd = sd_file.display(),
    );
    let Agents {
        prom_rx,
        _prom,
        spate_rx,
        mut spate,
    } = start_both(&prom_bin, &dir, &jobs);

    // Both agents scrape the first phase before the clock starts.
    let saw_b = |r: &Receiver| {
        r.samples()
            .iter()
            .any(|x| x.label("route") == Some("r_b") && x.value == 20.0)
    };
    wait_for(
        Duration::from_secs(120),
        "both agents to scrape the first phase",
        || (saw_b(&prom_rx) && saw_b(&spate_rx)).then_some(()),
    );
    *clock.lock().unwrap() = Some(std::time::Instant::now());
    // The file_sd target leaves at 8 s.
    while since() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let tmp = sd_dir.path().join("targets.tmp");
    std::fs::write(&tmp, "[]").unwrap();
    std::fs::rename(&tmp, &sd_file).unwrap();
    // Both must have seen the last phase for a few scrapes before the comparison.
    while since() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let (prom, ours) = (behaviour(&prom_rx), behaviour(&spate_rx));
    let (prom_added, ours_added) = (series_added(&prom_rx), series_added(&spate_rx));
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_eq!(
        prom_added.get("flappy").map(Vec::len),
        Some(1),
        "Prometheus counts flappy's series once: {prom_added:?}"
    );
    assert_eq!(
        ours_added, prom_added,
        "scrape_series_added (non-zero values in order, per job): spate, then Prometheus"
    );

    // The run went through every phase, for both.
    let route_b = |b: &Behaviour| {
        b.staled
            .iter()
            .any(|l| l.iter().any(|(n, v)| n == "route" && v == "r_b"))
    };
    assert!(
        route_b(&prom) && route_b(&ours),
        "the vanished series went stale"
    );

    let mut report = String::new();
    for (what, p, s) in [
        ("series", &prom.series, &ours.series),
        ("staleness markers", &prom.staled, &ours.staled),
    ] {
        for missing in p.difference(s) {
            report.push_str(&format!("{what}: spate lacks {missing:?}\n"));
        }
        for extra in s.difference(p) {
            report.push_str(&format!("{what}: spate adds {extra:?}\n"));
        }
    }
    for (labels, pv) in &prom.values {
        if let Some(sv) = ours.values.get(labels)
            && pv != sv
        {
            report.push_str(&format!("{labels:?}: prometheus {pv:?} spate {sv:?}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}

/// `/api/v1/targets` from both agents for the same configuration: every field Prometheus
/// agent gives an active or dropped target, spate gives too, with the same value (times and
/// durations aside).
#[test]
fn targets_api_matches_prometheus_agent_field_by_field() {
    let dir = TempDir::new("diff-targets");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let up = TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"m 1\n".to_vec()));
    let down = TestServer::start(|_, _| (500, "text/plain", b"no".to_vec()));
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:
  - job_name: api
    params: {{module: [m1]}}
    static_configs:
      - targets: ['{up}', '{down}']
        labels: {{env: prod, __tmp_keep: 'yes'}}
      - targets: ['10.255.255.1:9']
        labels: {{__tmp_keep: 'no'}}
    relabel_configs:
      - {{source_labels: [__tmp_keep], regex: 'yes', action: keep}}
      - {{source_labels: [__address__], regex: '(.*):(.*)', target_label: port, replacement: '$2'}}
      - {{target_label: __param_extra, replacement: x}}
",
        up = up.addr,
        down = down.addr
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &config).unwrap();
    let prom_web = format!("127.0.0.1:{}", free_port());
    let _prom = common::prometheus_agent(&prom_bin, &dir, &cfg, &prom_web);
    let spate = Spate::start(&config, &[]);
    let settled = |web: &str| {
        wait_for(Duration::from_secs(60), "both targets scraped", || {
            let (_, body) = common::http_get(web, "/api/v1/targets")?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let active = v["data"]["activeTargets"].as_array()?;
            (active.len() == 2 && active.iter().all(|t| t["health"] != "unknown"))
                .then(|| v.clone())
        })
    };
    let (p, s) = (settled(&prom_web), settled(&spate.web));
    let by_instance = |v: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        v["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["labels"]["instance"].as_str().unwrap().to_string(),
                    t.clone(),
                )
            })
            .collect()
    };
    let (pa, sa) = (by_instance(&p), by_instance(&s));
    assert_eq!(pa.keys().collect::<Vec<_>>(), sa.keys().collect::<Vec<_>>());
    let mut report = String::new();
    for (instance, pt) in &pa {
        let st = &sa[instance];
        for (key, pv) in pt.as_object().unwrap() {
            let Some(sv) = st.get(key) else {
                report.push_str(&format!("{instance}: spate lacks {key}\n"));
                continue;
            };
            match key.as_str() {
                // Times differ between two processes; the shape must not.
                "lastScrape" => assert!(sv.as_str().is_some_and(|t| t.ends_with('Z'))),
                "lastScrapeDuration" => assert!(sv.is_number()),
                "globalUrl" => {}
                _ if pv != sv => {
                    report.push_str(&format!("{instance}: {key}: prometheus {pv} spate {sv}\n"))
                }
                _ => {}
            }
        }
    }
    let dropped = |v: &serde_json::Value| -> Vec<serde_json::Value> {
        v["data"]["droppedTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["discoveredLabels"].clone())
            .collect()
    };
    if dropped(&p) != dropped(&s) {
        report.push_str(&format!(
            "droppedTargets: prometheus {:?} spate {:?}\n",
            dropped(&p),
            dropped(&s)
        ));
    }
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}

/// An API answer: its status and its JSON (null when the body is not JSON).
fn get(web: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = common::http_get(web, path).expect("an answer");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The status, pool and agent-mode endpoints from both agents on the same configuration and
/// the same flags: Prometheus agent's fields are all there with the same types, values that do
/// not depend on the process agree, and the endpoints an agent refuses answer alike.
#[test]
fn status_endpoints_match_prometheus_agent() {
    let dir = TempDir::new("diff-status");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let up = TestServer::start(|_, _| (200, "text/plain; version=0.0.4", b"m 1\n".to_vec()));
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: zeta\n    static_configs: [{{targets: ['{up}']}}]\n  - job_name: alpha\n    static_configs: [{{targets: ['{up}']}}]\n",
        up = up.addr
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &config).unwrap();
    let flags = [
        "--web.page-title=Fleet agent",
        "--web.max-connections=77",
        "--web.read-timeout=2m",
        "--web.cors.origin=https?://ui\\.example",
        "--web.enable-lifecycle",
        "--storage.remote.flush-deadline=30s",
        "--storage.agent.retention.max-time=12h",
        "--log.level=warn",
    ];
    let prom_web = format!("127.0.0.1:{}", free_port());
    let _prom = Proc::spawn(
        "prometheus-agent",
        Command::new(&prom_bin)
            .arg("--enable-feature=agent")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.agent.path={}",
                dir.path().join("agent").display()
            ))
            .arg(format!("--web.listen-address={prom_web}"))
            .args(flags),
        dir.path(),
    );
    let spate = Spate::start(&config, &flags);
    wait_for(
        Duration::from_secs(60),
        "Prometheus agent to list its pools",
        || {
            let (_, v) = get(&prom_web, "/api/v1/scrape_pools");
            (v["data"]["scrapePools"].as_array()?.len() == 2).then_some(())
        },
    );
    let mut report = String::new();
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    };
    // Every field Prometheus gives, spate gives with the same JSON type.
    for path in ["/api/v1/status/buildinfo", "/api/v1/status/runtimeinfo"] {
        let ((ps, p), (ss, s)) = (get(&prom_web, path), get(&spate.web, path));
        assert_eq!((ps, ss), (200, 200), "{path}");
        assert_eq!(p["status"], s["status"], "{path}");
        for (key, pv) in p["data"].as_object().unwrap() {
            match s["data"].get(key) {
                None => report.push_str(&format!("{path}: spate lacks {key}\n")),
                Some(sv) if kind(sv) != kind(pv) => {
                    report.push_str(&format!("{path}: {key}: prometheus {pv} spate {sv}\n"))
                }
                Some(_) => {}
            }
        }
    }
    let (_, s) = get(&spate.web, "/api/v1/status/runtimeinfo");
    assert_eq!(s["data"]["reloadConfigSuccess"], true);
    // The flags given to both show the same values.
    let ((_, p), (_, s)) = (
        get(&prom_web, "/api/v1/status/flags"),
        get(&spate.web, "/api/v1/status/flags"),
    );
    for flag in flags {
        let name = flag.trim_start_matches("--").split('=').next().unwrap();
        if p["data"][name] != s["data"][name] {
            report.push_str(&format!(
                "flags: {name}: prometheus {} spate {}\n",
                p["data"][name], s["data"][name]
            ));
        }
    }
    for (name, v) in s["data"].as_object().unwrap() {
        assert!(v.is_string(), "flag {name} is a string: {v}");
    }
    // Same answers, whole bodies.
    for path in [
        "/api/v1/scrape_pools",
        "/api/v1/status/walreplay",
        "/api/v1/query?query=up",
        "/api/v1/query_range?query=up&start=0&end=1&step=1",
        "/api/v1/query_exemplars?query=up",
        "/api/v1/labels",
        "/api/v1/label/job/values",
        "/api/v1/series?match[]=up",
        "/api/v1/rules",
        "/api/v1/alerts",
        "/api/v1/alertmanagers",
        "/api/v1/status/tsdb",
        "/api/v1/nonexistent",
    ] {
        let ((ps, p), (ss, s)) = (get(&prom_web, path), get(&spate.web, path));
        if ps != ss || p != s {
            report.push_str(&format!("{path}: prometheus {ps} {p} spate {ss} {s}\n"));
        }
    }
    let (_, s) = get(&spate.web, "/api/v1/status/config");
    assert!(
        s["data"]["yaml"]
            .as_str()
            .is_some_and(|y| y.contains("alpha"))
    );
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}

/// `/api/v1/targets/metadata` and `/api/v1/metadata` from both agents scraping the same
/// targets: the same entries (in any order), the same filters and limits, the same errors.
#[test]
fn metadata_endpoints_match_prometheus_agent() {
    let dir = TempDir::new("diff-metadata");
    let Some(prom_bin) = require_program("prometheus", "prometheus") else {
        return;
    };
    let body = b"# HELP requests_total Requests served.\n# TYPE requests_total counter\nrequests_total 7\n\
# HELP temperature_celsius Room \\\\ temperature\\nin C.\n# TYPE temperature_celsius gauge\ntemperature_celsius 21.5\n\
# HELP latency_seconds Latency.\n# TYPE latency_seconds histogram\nlatency_seconds_bucket{le=\"1\"} 1\nlatency_seconds_bucket{le=\"+Inf\"} 2\nlatency_seconds_sum 1.5\nlatency_seconds_count 2\n\
# TYPE rpc_seconds summary\nrpc_seconds{quantile=\"0.5\"} 0.1\nrpc_seconds_sum 1\nrpc_seconds_count 3\n\
untyped_thing 3\n"
        .to_vec();
    let other = b"# HELP requests_total Requests, counted elsewhere.\n# TYPE requests_total counter\nrequests_total 1\n".to_vec();
    let a = TestServer::start(move |_, _| (200, "text/plain; version=0.0.4", body.clone()));
    let b = TestServer::start(move |_, _| (200, "text/plain; version=0.0.4", other.clone()));
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: alpha\n    static_configs: [{{targets: ['{a}']}}]\n  - job_name: beta\n    static_configs: [{{targets: ['{a}', '{b}']}}]\n",
        a = a.addr,
        b = b.addr
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(&cfg, &config).unwrap();
    let prom_web = format!("127.0.0.1:{}", free_port());
    let _prom = common::prometheus_agent(&prom_bin, &dir, &cfg, &prom_web);
    let spate = Spate::start(&config, &[]);
    for web in [&prom_web, &spate.web] {
        wait_for(Duration::from_secs(60), "every target's metadata", || {
            let (_, v) = get(web, "/api/v1/targets/metadata");
            // Three targets: four families with TYPE or HELP lines each on one server, one
            // on the other (a series without them has no metadata).
            (v["data"].as_array()?.len() == 9).then_some(())
        });
    }
    // Entries as a sorted list of their JSON texts: order is not part of the API.
    let entries = |v: &serde_json::Value| -> Vec<String> {
        let mut e: Vec<String> = match &v["data"] {
            serde_json::Value::Array(a) => a.iter().map(|x| x.to_string()).collect(),
            serde_json::Value::Object(o) => {
                let mut out = Vec::new();
                for (name, list) in o {
                    let mut list: Vec<String> = list
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.to_string())
                        .collect();
                    list.sort();
                    out.push(format!("{name}: {list:?}"));
                }
                out
            }
            other => vec![other.to_string()],
        };
        e.sort();
        e
    };
    let mut report = String::new();
    for path in [
        "/api/v1/targets/metadata",
        "/api/v1/targets/metadata?metric=requests_total",
        "/api/v1/targets/metadata?match_target=%7Bjob%3D%22alpha%22%7D",
        "/api/v1/targets/metadata?match_target=%7Bjob%3D~%22b.*%22%7D&metric=temperature_celsius",
        "/api/v1/targets/metadata?limit=0",
        "/api/v1/metadata",
        "/api/v1/metadata?metric=requests_total",
        "/api/v1/metadata?metric=requests_total&limit_per_metric=1",
        "/api/v1/metadata?metric=nothing_like_it",
    ] {
        let ((ps, p), (ss, s)) = (get(&prom_web, path), get(&spate.web, path));
        if ps != ss || p["status"] != s["status"] || entries(&p) != entries(&s) {
            report.push_str(&format!(
                "{path}: prometheus {ps} {:?}\n  spate {ss} {:?}\n",
                entries(&p),
                entries(&s)
            ));
        }
    }
    // A limit that keeps an arbitrary subset: the same count.
    let path = "/api/v1/metadata?limit=2";
    let ((_, p), (_, s)) = (get(&prom_web, path), get(&spate.web, path));
    if entries(&p).len() != entries(&s).len() {
        report.push_str(&format!("{path}: prometheus {p} spate {s}\n"));
    }
    // `limit` on targets' metadata is checked before each target, whose entries are then all
    // taken: the count depends on the order targets come in (random in Prometheus, as Go's
    // map order is), from the limit up to the limit plus a target's entries less one (4 here).
    let path = "/api/v1/targets/metadata?limit=3";
    let ((_, p), (_, s)) = (get(&prom_web, path), get(&spate.web, path));
    for (who, v) in [("prometheus", &p), ("spate", &s)] {
        if !(3..=6).contains(&entries(v).len()) {
            report.push_str(&format!("{path}: {who} {v}\n"));
        }
    }
    // Bad input: the same status and error type.
    for path in [
        "/api/v1/targets/metadata?match_target=%7Bjob%7D",
        "/api/v1/targets/metadata?limit=x",
        "/api/v1/metadata?limit=x",
    ] {
        let ((ps, p), (ss, s)) = (get(&prom_web, path), get(&spate.web, path));
        if ps != ss || p["errorType"] != s["errorType"] {
            report.push_str(&format!("{path}: prometheus {ps} {p} spate {ss} {s}\n"));
        }
    }
    assert!(
        report.is_empty(),
        "differences from Prometheus agent:\n{report}"
    );
}
