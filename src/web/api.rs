//! The HTTP API under `/api/v1`, in Prometheus' paths, JSON shapes and status codes, plus
//! spate's additions (`/status/remote_write`, `/relabel_steps`). Where spate has more to say it
//! adds fields; it never renames one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::Method;
use serde_json::{Map, Value, json};

use super::{Reply, Req, State};
use crate::relabel::{Rule, RuleSpec, Rules};
use crate::selfmetrics::{ShardStats, WalStats};

/// What a Prometheus agent answers for the query, rules and TSDB endpoints.
const AGENT_ONLY: &str = "unavailable with Prometheus Agent";

/// The endpoints a Prometheus agent refuses with 422 (besides `label/<name>/values`).
const UNAVAILABLE: &[&str] = &[
    "query",
    "query_range",
    "query_exemplars",
    "format_query",
    "parse_query",
    "labels",
    "series",
    "alerts",
    "alertmanagers",
    "rules",
    "status/tsdb",
    "status/tsdb/blocks",
    "admin/tsdb/delete_series",
    "admin/tsdb/clean_tombstones",
    "admin/tsdb/snapshot",
    "read",
];

/// The targets view as the discovery manager last published it.
fn view(state: &State) -> std::sync::MutexGuard<'_, crate::scrape::TargetsView> {
    state.src.targets.lock().unwrap_or_else(|e| e.into_inner())
}

/// A parameter's value (the last one given).
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn success(data: Value) -> Reply {
    Reply::json(200, json!({"status": "success", "data": data}).to_string())
}

fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"status": "error", "errorType": kind, "error": message}).to_string(),
    )
}

pub(super) fn handle(req: &Req, state: &State) -> Reply {
    let path = req.path.strip_prefix("/api/v1/").unwrap_or("");
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let read = get || req.method == Method::POST;
    if UNAVAILABLE.contains(&path) || (path.starts_with("label/") && path.ends_with("/values")) {
        return error(422, "execution", AGENT_ONLY);
    }
    if req.method == Method::OPTIONS {
        return Reply::text(204, "");
    }
    let params = params(req);
    let param = |name: &str| param(&params, name);
    match path {
        "status/buildinfo" if get => success(build_info()),
        "status/runtimeinfo" if get => success(runtime_info(state)),
        "status/flags" if get => {
            let flags: Map<String, Value> = state
                .src
                .flags
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            success(Value::Object(flags))
        }
        "status/config" if get => {
            let yaml = state
                .src
                .registry
                .config_yaml
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            success(json!({ "yaml": yaml }))
        }
        "status/walreplay" if get => success(json!({"min": 0, "max": 0, "current": 0})),
        "status/remote_write" if get => success(remote_write(state)),
        "status/cluster" if get => match cluster(state, param("job"), param("url"), &params) {
            Ok(v) => success(v),
            Err(e) => error(400, "bad_data", &e),
        },
        "targets" if get => {
            let view = view(state).clone();
            let wanted = param("state").unwrap_or("any").to_ascii_lowercase();
            let body = crate::scrape::targets_json(&view, &wanted, param("scrapePool"));
            Reply::json(200, body)
        }
        "targets/metadata" if get => {
            let limit = match int_param(param("limit")) {
                Ok(l) => l,
                Err(e) => return error(400, "bad_data", &e),
            };
            let matchers = match param("match_target").filter(|m| !m.is_empty()) {
                Some(m) => match super::selector::parse(m) {
                    Ok(m) => Some(m),
                    Err(e) => return error(400, "bad_data", &e),
                },
                None => None,
            };
            success(target_metadata(
                state,
                matchers.as_deref(),
                param("metric").unwrap_or(""),
                limit,
            ))
        }
        "metadata" if get => {
            let (limit, per_metric) = match (
                int_param(param("limit")),
                int_param(param("limit_per_metric")),
            ) {
                (Ok(l), Ok(p)) => (l, p),
                (Err(e), _) | (_, Err(e)) => return error(400, "bad_data", &e),
            };
            success(metric_metadata(
                state,
                param("metric").unwrap_or(""),
                limit,
                per_metric,
            ))
        }
        "scrape_pools" if get => {
            let view = view(state);
            let mut pools: Vec<&str> = view.pools.iter().map(|(n, _)| n.as_str()).collect();
            pools.sort_unstable();
            success(json!({ "scrapePools": pools }))
        }
        "targets/relabel_steps" if get => {
            let Some(pool) = param("scrapePool") else {
                return error(400, "bad_data", "scrapePool parameter is required");
            };
            let labels = match labels_param(param("labels")) {
                Ok(l) => l,
                Err(e) => return error(400, "bad_data", &e),
            };
            let rules = {
                let view = view(state);
                view.pools
                    .iter()
                    .find(|(n, _)| n == pool)
                    .map(|(_, r)| r.clone())
            };
            match rules {
                Some(rules) => success(steps(&rules, &labels)),
                None => error(400, "bad_data", &format!("scrape pool {pool:?} not found")),
            }
        }
        // The free-form relabel debugger: labels and rules from the user, spate's engine.
        "relabel_steps" if read => {
            let labels = match labels_param(param("labels")) {
                Ok(l) => l,
                Err(e) => return error(400, "bad_data", &e),
            };
            match rules_param(param("rules").unwrap_or("")) {
                Ok(rules) => success(steps(&rules, &labels)),
                Err(e) => error(400, "bad_data", &e),
            }
        }
        _ if !get && !read => error(405, "bad_data", "method not allowed"),
        _ => Reply::text(404, "404 page not found\n"),
    }
}

/// The query string's parameters, and a form body's.
fn params(req: &Req) -> Vec<(String, String)> {
    let mut out = crate::http::query_pairs(&req.query);
    if !req.body.is_empty() {
        out.extend(crate::http::query_pairs(&String::from_utf8_lossy(
            &req.body,
        )));
    }
    out
}

/// The largest response and the longest wait of `/api/v1/targets/scrape`.
const SCRAPE_PROXY_MAX_BODY: usize = 10 << 20;
const SCRAPE_PROXY_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /api/v1/targets/scrape?scrapePool=&scrapeUrl=` (with `--web.enable-target-scrape-proxy`):
/// fetches an active target once, with its job's client settings, off the event loop, and
/// answers with what it served as plain text (`X-Target-Status` and `X-Target-Content-Type`
/// say what the target answered).
pub(super) async fn target_scrape(query: &str, state: &State) -> Reply {
    let params = crate::http::query_pairs(query);
    let param = |name: &str| param(&params, name);
    let (Some(pool), Some(url)) = (param("scrapePool"), param("scrapeUrl")) else {
        return error(
            400,
            "bad_data",
            "scrapePool and scrapeUrl parameters are required",
        );
    };
    let status = {
        let view = view(state);
        view.active
            .iter()
            .find(|t| t.target.pool == pool && t.scrape_url == url)
            .cloned()
    };
    let Some(status) = status else {
        return error(
            400,
            "bad_data",
            &format!("{url:?} is not an active target of scrape pool {pool:?}"),
        );
    };
    let limit = status.target.timeout.min(SCRAPE_PROXY_TIMEOUT);
    let fetched = tokio::task::spawn_blocking(move || {
        crate::scrape::fetch_once(&status.target, SCRAPE_PROXY_MAX_BODY, limit)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the fetch failed: {e}")));
    match fetched {
        Err(e) => error(502, "unavailable", &e),
        Ok(served) => {
            let kind = if served.content_type.contains("protobuf") {
                "application/octet-stream"
            } else {
                "text/plain; charset=utf-8"
            };
            Reply::new(200, kind, served.body)
                .with(
                    hyper::header::HeaderName::from_static("x-target-status"),
                    served.status.to_string(),
                )
                .with(
                    hyper::header::HeaderName::from_static("x-target-content-type"),
                    served.content_type,
                )
                .with(hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        }
    }
}

/// A `limit`-style parameter: `-1` (no limit) when absent.
fn int_param(text: Option<&str>) -> Result<i64, String> {
    match text {
        None | Some("") => Ok(-1),
        Some(t) => t
            .parse()
            .map_err(|_| format!("limit must be a number, got {t:?}")),
    }
}

/// Each active target's metadata, as the scrape caches hold it: the families its last good
/// scrape reported, with their type, help and unit. `metric` keeps one family (and leaves
/// its name out of the entries, as Prometheus does). `limit` (`-1`: all) is checked before
/// each target, whose entries then all go in, as in Prometheus.
fn target_metadata(
    state: &State,
    matchers: Option<&[super::selector::Matcher]>,
    metric: &str,
    limit: i64,
) -> Value {
    let active = view(state).active.clone();
    let mut out = Vec::new();
    for t in &active {
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        if matchers.is_some_and(|m| !super::selector::matches_all(m, &t.target.labels)) {
            continue;
        }
        let items = t.metadata();
        for item in crate::wal::record::metadata_iter(&items) {
            let Ok((_, (code, name, unit, help))) = item else {
                break;
            };
            if !metric.is_empty() && name != metric.as_bytes() {
                continue;
            }
            let target: Map<String, Value> = t
                .target
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut entry = json!({
                "target": target,
                "type": crate::wal::record::metric_type_name(code),
                "help": String::from_utf8_lossy(help),
                "unit": String::from_utf8_lossy(unit),
            });
            if metric.is_empty() {
                entry["metric"] = json!(String::from_utf8_lossy(name));
            }
            out.push(entry);
        }
    }
    Value::Array(out)
}

/// Metadata by family over every active target, each distinct (type, help, unit) once:
/// `limit` families (`-1`: all), `limit_per_metric` entries per family (`0` or `-1`: all;
/// as in Prometheus, it applies only when no `metric` is asked for).
fn metric_metadata(state: &State, metric: &str, limit: i64, per_metric: i64) -> Value {
    let active = view(state).active.clone();
    let mut families: std::collections::BTreeMap<String, Vec<(String, String, String)>> =
        Default::default();
    for t in &active {
        let items = t.metadata();
        for item in crate::wal::record::metadata_iter(&items) {
            let Ok((_, (code, name, unit, help))) = item else {
                break;
            };
            if !metric.is_empty() && name != metric.as_bytes() {
                continue;
            }
            let entry = (
                crate::wal::record::metric_type_name(code).to_string(),
                String::from_utf8_lossy(help).into_owned(),
                String::from_utf8_lossy(unit).into_owned(),
            );
            let list = families
                .entry(String::from_utf8_lossy(name).into_owned())
                .or_default();
            let room = per_metric <= 0 || !metric.is_empty() || (list.len() as i64) < per_metric;
            if room && !list.contains(&entry) {
                list.push(entry);
            }
        }
    }
    let mut out = Map::new();
    for (name, list) in families {
        if limit >= 0 && out.len() as i64 >= limit {
            break;
        }
        let list: Vec<Value> = list
            .into_iter()
            .map(|(kind, help, unit)| json!({"type": kind, "help": help, "unit": unit}))
            .collect();
        out.insert(name, Value::Array(list));
    }
    Value::Object(out)
}

/// `labels={"name":"value",…}`.
fn labels_param(text: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(text) = text else {
        return Err("labels parameter is required (a JSON object of label names to values)".into());
    };
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|e| format!("labels must be a JSON object of strings: {e}"))?;
    Ok(map.into_iter().collect())
}

/// `rules=` a YAML list of relabel configs, checked as the configuration file's are.
fn rules_param(text: &str) -> Result<Rules, String> {
    let specs: Option<Vec<RuleSpec>> = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        format!(
            "rules must be a YAML list of relabel configs: {}",
            msg.lines().next().unwrap_or(&msg)
        )
    })?;
    let mut rules = Vec::new();
    for (i, spec) in specs.unwrap_or_default().iter().enumerate() {
        rules.push(Rule::new(spec).map_err(|e| format!("rule {}: {e}", i + 1))?);
    }
    Ok(Rules(rules))
}

/// `{steps:[{rule, output, keep}]}`.
fn steps(rules: &Rules, labels: &[(String, String)]) -> Value {
    let steps: Vec<Value> = rules
        .0
        .iter()
        .zip(rules.steps(labels))
        .map(|(rule, step)| {
            let output: Map<String, Value> = step
                .output
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            json!({"rule": rule_json(rule), "output": output, "keep": step.keep})
        })
        .collect();
    json!({ "steps": steps })
}

/// A rule as Prometheus marshals a relabel config: empty fields left out.
fn rule_json(rule: &Rule) -> Value {
    let mut m = Map::new();
    if !rule.source_labels.is_empty() {
        m.insert("source_labels".into(), json!(rule.source_labels));
    }
    m.insert("separator".into(), json!(rule.separator));
    m.insert("regex".into(), json!(rule.regex.as_str()));
    if rule.modulus != 0 {
        m.insert("modulus".into(), json!(rule.modulus));
    }
    if !rule.target_label.is_empty() {
        m.insert("target_label".into(), json!(rule.target_label));
    }
    m.insert("replacement".into(), json!(rule.replacement));
    m.insert("action".into(), json!(rule.action.as_str()));
    Value::Object(m)
}

/// Prometheus' fields, with the compiler's version in `goVersion` and again in `rustVersion`.
pub(super) fn build_info() -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": env!("SPATE_REVISION"),
        "branch": env!("SPATE_BRANCH"),
        "buildUser": "",
        "buildDate": env!("SPATE_BUILD_DATE"),
        "goVersion": env!("SPATE_RUSTC"),
        "rustVersion": env!("SPATE_RUSTC"),
    })
}

fn rfc3339(secs: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
    crate::log::rfc3339_millis(t)
}

/// spate's cluster status: this member, the member list with each member's share of the
/// targets, and (with `job` and `url`, plus the values of any key labels as parameters of
/// their names) which members own that target.
fn cluster(
    state: &State,
    job: Option<&str>,
    url: Option<&str>,
    params: &[(String, String)],
) -> Result<Value, String> {
    let view = state
        .src
        .registry
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(v) = view else {
        return Ok(json!({"enabled": false}));
    };
    let m = &v.membership;
    let members: Vec<Value> = m
        .members
        .iter()
        .map(|name| {
            json!({"name": name, "self": *name == m.me,
                   "targets": v.shares.get(name).copied().unwrap_or(0)})
        })
        .collect();
    let mut out = json!({
        "enabled": true,
        "name": m.name,
        "member": m.me,
        "listed": m.listed(),
        "replicationFactor": m.replication,
        "haTracker": m.groups,
        "group": m.group(),
        "keyLabels": m.key_labels,
        "unshardedJobs": m.unsharded_jobs,
        "sharedTargets": v.shared_targets,
        "members": members,
    });
    match (job, url) {
        (Some(job), Some(url)) => {
            let labels: Vec<(String, String)> = m
                .key_labels
                .iter()
                .map(|k| (k.clone(), param(params, k).unwrap_or("").to_string()))
                .collect();
            let owners: Vec<&str> = if m.shards(job) {
                m.owners(&m.key(job, url, &labels))
            } else {
                m.members.iter().map(String::as_str).collect()
            };
            out["target"] = json!({"job": job, "url": url, "owners": owners});
        }
        (None, None) => {}
        _ => return Err("give both job and url to look up a target's owners".into()),
    }
    Ok(out)
}

fn runtime_info(state: &State) -> Value {
    let reg = &state.src.registry;
    let storage = &state.src.storage;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let cores: Vec<Value> = reg
        .cores
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let driver = c.driver_name().unwrap_or("starting");
            json!({"id": i, "driver": driver, "targets": c.targets.load(Relaxed),
                   "walSizeBytes": c.wal.size_bytes.load(Relaxed)})
        })
        .collect();
    let wal_size = wal_sum(reg, |w| &w.size_bytes);
    let corruptions = reg
        .cores
        .iter()
        .filter(|c| c.wal.read_damaged_bytes.load(Relaxed) > 0)
        .count();
    let retention = match (storage.max_time.is_zero(), storage.max_size) {
        (true, 0) => String::new(),
        (true, size) => format!("{}B", size),
        (false, 0) => crate::config::PromDuration(storage.max_time).to_string(),
        (false, size) => format!(
            "{} or {}B",
            crate::config::PromDuration(storage.max_time),
            size
        ),
    };
    json!({
        "startTime": rfc3339(reg.start_time_secs),
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "hostname": super::hostname().unwrap_or_default(),
        "serverTime": rfc3339(now),
        "reloadConfigSuccess": reg.reload_successful.load(Relaxed),
        "lastConfigTime": rfc3339(f64::from_bits(reg.reload_success_time.load(Relaxed))),
        "corruptionCount": corruptions,
        "goroutineCount": threads,
        "GOMAXPROCS": reg.cores.len(),
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": retention,
        "cores": cores,
        "walDirectory": storage.path.join("wal").display().to_string(),
        "walSizeBytes": wal_size,
        "walRetention": {
            "maxTime": crate::config::PromDuration(storage.max_time).to_string(),
            "maxSizeBytes": storage.max_size,
        },
    })
}

/// A WAL counter summed over the cores.
fn wal_sum(reg: &crate::selfmetrics::Registry, f: fn(&WalStats) -> &AtomicU64) -> u64 {
    reg.cores.iter().map(|c| f(&c.wal).load(Relaxed)).sum()
}

/// Per endpoint, summed over the cores' shards: what the remote-write page charts. Names
/// follow Prometheus' remote-write metrics and its proposed status endpoint.
fn remote_write(state: &State) -> Value {
    let reg = &state.src.registry;
    let highest_ms = reg
        .cores
        .iter()
        .map(|c| c.highest_ts_ms.load(Relaxed))
        .max()
        .unwrap_or(0);
    let queues: Vec<Value> = reg
        .endpoints()
        .into_iter()
        .map(|(name, url, shards)| {
            // A counter summed (or its largest value) over the endpoint's shards, one per core.
            let sum = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
                shards.iter().map(|s| f(s).load(Relaxed)).sum()
            };
            let max = |f: fn(&ShardStats) -> &AtomicU64| -> u64 {
                shards.iter().map(|s| f(s).load(Relaxed)).max().unwrap_or(0)
            };
            let sent_ms = max(|s| &s.highest_sent_ts_ms);
            let delay = if sent_ms == 0 || highest_ms == 0 {
                0.0
            } else {
                highest_ms.saturating_sub(sent_ms) as f64 / 1000.0
            };
            json!({
                "name": name,
                "url": url,
                "shards": {
                    "current": sum(|s| &s.shards),
                    "desired": sum(|s| &s.shards_desired),
                    "min": sum(|s| &s.shards_min),
                    "max": sum(|s| &s.shards_max),
                    "capacity": max(|s| &s.capacity),
                    "maxSamplesPerSend": max(|s| &s.max_samples_per_send),
                },
                "pending": {
                    "samples": sum(|s| &s.samples_pending),
                    "histograms": sum(|s| &s.histograms_pending),
                    "exemplars": sum(|s| &s.exemplars_pending),
                },
                "sent": {
                    "samples": sum(|s| &s.samples_sent),
                    "histograms": sum(|s| &s.histograms_sent),
                    "exemplars": sum(|s| &s.exemplars_sent),
                    "metadata": sum(|s| &s.metadata_sent),
                },
                "failed": {
                    "samples": sum(|s| &s.samples_failed),
                    "histograms": sum(|s| &s.histograms_failed),
                    "exemplars": sum(|s| &s.exemplars_failed),
                    "metadata": sum(|s| &s.metadata_failed),
                    "requests": sum(|s| &s.requests_failed),
                },
                "retried": {
                    "samples": sum(|s| &s.samples_retried),
                    "histograms": sum(|s| &s.histograms_retried),
                    "exemplars": sum(|s| &s.exemplars_retried),
                    "metadata": sum(|s| &s.metadata_retried),
                },
                "dropped": {
                    "queueFull": sum(|s| &s.samples_dropped_queue_full)
                        + sum(|s| &s.histograms_dropped_queue_full)
                        + sum(|s| &s.exemplars_dropped_queue_full),
                    "tooOld": sum(|s| &s.samples_dropped_too_old)
                        + sum(|s| &s.histograms_dropped_too_old)
                        + sum(|s| &s.exemplars_dropped_too_old),
                    "relabel": sum(|s| &s.samples_dropped_relabel)
                        + sum(|s| &s.histograms_dropped_relabel)
                        + sum(|s| &s.exemplars_dropped_relabel),
                    "walRetention": sum(|s| &s.samples_dropped_wal_size),
                },
                "bytesSent": sum(|s| &s.bytes_sent) + sum(|s| &s.metadata_bytes),
                "backlogBytes": sum(|s| &s.wal_backlog_bytes),
                "highestSentTimestamp": sent_ms as f64 / 1000.0,
                "delaySeconds": delay,
            })
        })
        .collect();
    let wal = json!({
        "sizeBytes": wal_sum(reg, |w| &w.size_bytes),
        "segmentsCreated": wal_sum(reg, |w| &w.segments_created),
        "segmentsDeleted": wal_sum(reg, |w| &w.segments_deleted),
        "bytesWritten": wal_sum(reg, |w| &w.bytes),
    });
    json!({
        "highestTimestamp": highest_ms as f64 / 1000.0,
        "samplesAppended": reg.cores.iter().map(|c| c.samples_appended.load(Relaxed)).sum::<u64>(),
        "histogramsAppended": reg.cores.iter().map(|c| c.histograms_appended.load(Relaxed)).sum::<u64>(),
        "exemplarsAppended": reg.cores.iter().map(|c| c.exemplars_appended.load(Relaxed)).sum::<u64>(),
        "queues": queues,
        "wal": wal,
    })
}
