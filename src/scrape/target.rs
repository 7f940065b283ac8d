//! Scrape targets as Prometheus derives them from a scrape config and its target groups.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{PromDuration, ScrapeConfig};
use crate::entry::LabelScratch;
use crate::hash::label_set_hash;
use crate::http::query_escape;

/// One target, ready for a core to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The `job` label's value.
    pub job: String,
    /// The scrape pool: the `job_name` of the scrape config it comes from (which relabeling
    /// cannot change, unlike the `job` label).
    pub pool: String,
    /// Every label after derivation, `__`-prefixed ones included, sorted by name.
    pub all_labels: Vec<(String, String)>,
    /// The labels before relabeling and the `instance` default (the targets API's
    /// `discoveredLabels`), sorted by name.
    pub discovered: Vec<(String, String)>,
    /// The labels attached to the target's samples (no `__` prefix), sorted by name.
    pub labels: Vec<(String, String)>,
    /// `host:port`.
    pub address: String,
    pub scheme: String,
    /// Path and query of the scrape URL.
    pub path_and_query: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub enable_compression: bool,
    /// The `Accept` header for the job's `scrape_protocols`.
    pub accept: String,
    /// The parser for responses with a missing or unknown `Content-Type`.
    pub fallback: Option<crate::exposition::Format>,
    pub native_histograms: bool,
    pub classic_histograms: bool,
    /// `convert_classic_histograms_to_nhcb`.
    pub convert_nhcb: bool,
    /// How far native histograms' resolution may be reduced to fit the job's limits.
    pub histogram_limits: crate::entry::Resolution,
    /// Stable hash of the label set and URL: picks the core and the scrape phase.
    pub hash: u64,
    pub metric_relabel: std::sync::Arc<crate::relabel::Rules>,
    pub limits: crate::config::ScrapeLimits,
    pub extra_metrics: bool,
    pub track_timestamps_staleness: bool,
    /// Set when the job breaches `target_limit`: every scrape fails with it, unsent.
    pub forced_error: Option<String>,
    /// Auth, headers and redirects for the scrape request.
    pub http: std::sync::Arc<crate::config::client::HttpClientConfig>,
    /// `scrape_failure_log_file`: where failed scrapes are logged.
    pub failure_log: Option<std::sync::Arc<str>>,
    /// `metric_name_validation_scheme`: under legacy names, a scrape with other names fails.
    pub names: crate::names::Validation,
}

impl Target {
    /// The URL it is scraped at (its params included).
    pub fn url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.address, self.path_and_query)
    }

    /// The label `name` (any label, `__` ones included).
    pub fn label(&self, name: &str) -> Option<&str> {
        self.all_labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A target that could not be built from its labels.
#[derive(Debug, PartialEq)]
pub struct TargetError {
    pub job: String,
    pub address: String,
    pub reason: String,
}

/// Label pairs, sorted by name where a field says so.
pub type Labels = Vec<(String, String)>;

/// One discovered target: its own labels (`__address__` and SD metadata) and its group's.
pub type Discovered = (Labels, Labels);

/// A discovered target that `relabel_configs` dropped (the targets API lists them).
#[derive(Clone, Debug, PartialEq)]
pub struct DroppedTarget {
    pub job: String,
    /// Its labels before relabeling, sorted by name.
    pub discovered: Vec<(String, String)>,
    /// Why, when not relabeling: another cluster member owns it (`sharding: owned by …`).
    pub reason: Option<String>,
}

/// What one scrape config's target groups yield.
#[derive(Debug, Default)]
pub struct Derived {
    pub targets: Vec<Target>,
    pub errors: Vec<TargetError>,
    /// The first `keep_dropped_targets` dropped targets (all when it is 0).
    pub dropped: Vec<DroppedTarget>,
    /// How many were dropped in all.
    pub dropped_count: usize,
}

/// Derives the targets of one scrape config, in the order written, with duplicates removed.
pub fn targets_for(sc: &ScrapeConfig) -> Derived {
    let groups: Vec<Discovered> = sc
        .static_configs
        .iter()
        .flat_map(|g| {
            g.targets.iter().map(|addr| {
                (
                    vec![("__address__".to_string(), addr.clone())],
                    g.labels.clone(),
                )
            })
        })
        .collect();
    derive(sc, &groups)
}

/// Derives targets from discovered label sets: each is (target labels, group labels).
pub fn derive(sc: &ScrapeConfig, discovered: &[Discovered]) -> Derived {
    let mut out = Derived::default();
    let mut seen = std::collections::HashSet::new();
    let mut scratch = sc.relabel_configs.scratch();
    let mut work = LabelScratch::default();
    for (target_labels, group_labels) in discovered {
        match build(sc, target_labels, group_labels, &mut work, &mut scratch) {
            Ok(Built::Target(t)) => {
                if seen.insert(t.hash) {
                    out.targets.push(*t);
                }
            }
            Ok(Built::Dropped(discovered)) => {
                out.dropped_count += 1;
                let keep = sc.limits.keep_dropped_targets;
                if keep == 0 || (out.dropped.len() as u64) < keep {
                    out.dropped.push(DroppedTarget {
                        job: sc.job_name.clone(),
                        discovered,
                        reason: None,
                    });
                }
            }
            Err(reason) => out.errors.push(TargetError {
                job: sc.job_name.clone(),
                address: target_labels
                    .iter()
                    .find(|(k, _)| k == "__address__")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                reason,
            }),
        }
    }
    let limit = sc.limits.target_limit;
    if limit > 0 && out.targets.len() as u64 > limit {
        // As Prometheus: every target of the job fails, so the breach is visible.
        let err = format!(
            "target_limit exceeded (number of targets: {}, limit: {limit})",
            out.targets.len()
        );
        for t in &mut out.targets {
            t.forced_error = Some(err.clone());
        }
    }
    out
}

enum Built {
    Target(Box<Target>),
    /// Dropped by relabeling; its discovered labels.
    Dropped(Vec<(String, String)>),
}

/// Prometheus' `PopulateLabels`: target labels, then group labels where absent, then
/// defaults where absent; `relabel_configs`; checks; `__meta_*` removed; `instance`
/// defaults to `__address__`.
fn build(
    sc: &ScrapeConfig,
    target_labels: &[(String, String)],
    group_labels: &[(String, String)],
    work: &mut LabelScratch,
    scratch: &mut crate::relabel::Scratch,
) -> Result<Built, String> {
    let mut l: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in target_labels {
        l.insert(k.clone(), v.clone());
    }
    for (k, v) in group_labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let defaults = [
        ("job", sc.job_name.clone()),
        (
            "__scrape_interval__",
            PromDuration(sc.scrape_interval).to_string(),
        ),
        (
            "__scrape_timeout__",
            PromDuration(sc.scrape_timeout).to_string(),
        ),
        ("__metrics_path__", sc.metrics_path.clone()),
        ("__scheme__", sc.scheme.clone()),
    ];
    for (k, v) in defaults {
        l.entry(k.to_string()).or_insert(v);
    }
    for (k, vs) in &sc.params {
        if let Some(first) = vs.first() {
            l.entry(format!("__param_{k}"))
                .or_insert_with(|| first.clone());
        }
    }
    let discovered: Vec<(String, String)> = l.iter().map(|(k, v)| (k.clone(), v.clone())).collect();

    if !sc.relabel_configs.is_empty() {
        work.clear();
        for (k, v) in &l {
            work.push(k.as_bytes(), v.as_bytes());
        }
        if !sc.relabel_configs.process(work, scratch) {
            return Ok(Built::Dropped(discovered));
        }
        l.clear();
        for i in 0..work.len() {
            // Label values were UTF-8 and relabeling only joins and slices them at
            // character boundaries; a lossy conversion never changes a valid value.
            let name = String::from_utf8_lossy(work.name(i)).into_owned();
            let value = String::from_utf8_lossy(work.value(i)).into_owned();
            l.insert(name, value);
        }
    }

    let address = l.get("__address__").cloned().unwrap_or_default();
    if address.is_empty() {
        return Err("no address".into());
    }
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    let interval = parse_label_duration(&l, "__scrape_interval__")?;
    let timeout = parse_label_duration(&l, "__scrape_timeout__")?;
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({timeout:?} > {interval:?})"
        ));
    }
    l.retain(|k, _| !k.starts_with("__meta_"));
    l.entry("instance".into())
        .or_insert_with(|| address.clone());

    let scheme = l.get("__scheme__").cloned().unwrap_or_default();
    if scheme != "http" && scheme != "https" {
        return Err(format!("invalid scheme {scheme:?}: use http or https"));
    }
    let mut path = l.get("__metrics_path__").cloned().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    // Config params, with `__param_*` labels overriding the first value of each.
    let mut params: BTreeMap<String, Vec<String>> = sc.params.iter().cloned().collect();
    for (k, v) in &l {
        if let Some(name) = k.strip_prefix("__param_") {
            match params.get_mut(name) {
                Some(vs) if !vs.is_empty() => vs[0] = v.clone(),
                _ => {
                    params.insert(name.to_string(), vec![v.clone()]);
                }
            }
        }
    }
    let mut query = String::new();
    for (k, vs) in &params {
        for v in vs {
            query.push(if query.is_empty() { '?' } else { '&' });
            query_escape(&mut query, k);
            query.push('=');
            query_escape(&mut query, v);
        }
    }
    path.push_str(&query);

    let all_labels: Vec<(String, String)> = l.into_iter().collect();
    let labels: Vec<(String, String)> = all_labels
        .iter()
        .filter(|(k, v)| !k.starts_with("__") && !v.is_empty())
        .cloned()
        .collect();
    let mut hash_input: Vec<(&str, &str)> = all_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let url = format!("{scheme}://{address}{path}");
    hash_input.push(("", url.as_str()));
    let hash = label_set_hash(hash_input);
    Ok(Built::Target(Box::new(Target {
        pool: sc.job_name.clone(),
        job: labels
            .iter()
            .find(|(k, _)| k == "job")
            .map(|(_, v)| v.clone())
            .unwrap_or_default(),
        all_labels,
        discovered,
        labels,
        address,
        scheme,
        path_and_query: path,
        interval,
        timeout,
        honor_labels: sc.honor_labels,
        honor_timestamps: sc.honor_timestamps,
        enable_compression: sc.enable_compression,
        accept: crate::exposition::accept_header(&sc.scrape_protocols, sc.name_escaping),
        names: sc.name_validation,
        fallback: sc.fallback_scrape_protocol.and_then(|p| p.format()),
        native_histograms: sc.scrape_native_histograms,
        classic_histograms: sc.always_scrape_classic_histograms,
        convert_nhcb: sc.convert_classic_histograms_to_nhcb,
        histogram_limits: sc.native_histogram_limits,
        hash,
        metric_relabel: sc.metric_relabel_configs.clone(),
        limits: sc.limits,
        extra_metrics: sc.extra_scrape_metrics,
        track_timestamps_staleness: sc.track_timestamps_staleness,
        forced_error: None,
        http: sc.http.clone(),
        failure_log: sc.scrape_failure_log_file.as_deref().map(Into::into),
    })))
}

fn parse_label_duration(l: &BTreeMap<String, String>, name: &str) -> Result<Duration, String> {
    let v = l.get(name).map(String::as_str).unwrap_or("");
    let d =
        crate::config::parse_duration(v).map_err(|e| format!("error parsing {name} label: {e}"))?;
    if d.is_zero() {
        return Err(format!("{name} label must not be zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    fn targets(yaml: &str) -> (Vec<Target>, Vec<TargetError>) {
        let d = derived(yaml);
        (d.targets, d.errors)
    }

    fn derived(yaml: &str) -> Derived {
        let cfg = load_str(yaml, "t.yml").unwrap();
        targets_for(&cfg.scrape_configs[0])
    }

    #[test]
    fn derives_prometheus_target_labels() {
        let (ts, errs) = targets(
            "scrape_configs:\n- job_name: node\n  scrape_interval: 15s\n  params:\n    module: [http_2xx, other]\n    a: [\"x y\"]\n  static_configs:\n  - targets: ['localhost:9100', 'localhost:9100', 'h:1']\n    labels: {env: prod}\n",
        );
        assert!(errs.is_empty());
        assert_eq!(ts.len(), 2, "duplicates are removed");
        let t = &ts[0];
        assert_eq!(
            t.labels,
            vec![
                ("env".into(), "prod".into()),
                ("instance".into(), "localhost:9100".into()),
                ("job".into(), "node".into())
            ]
        );
        assert_eq!(t.label("__scrape_interval__"), Some("15s"));
        assert_eq!(t.label("__scrape_timeout__"), Some("10s"));
        assert_eq!(t.label("__param_module"), Some("http_2xx"));
        assert_eq!(
            t.url(),
            "http://localhost:9100/metrics?a=x+y&module=http_2xx&module=other"
        );
        assert_ne!(ts[0].hash, ts[1].hash);
    }

    #[test]
    fn group_labels_override_defaults() {
        let (ts, _) = targets(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['a:1']\n    labels: {job: other, __metrics_path__: /probe, instance: named}\n",
        );
        assert_eq!(ts[0].job, "other");
        assert_eq!(ts[0].label("instance"), Some("named"));
        assert_eq!(ts[0].path_and_query, "/probe");
    }

    #[test]
    fn bad_targets_are_reported() {
        let (ts, errs) = targets(
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['a:1']\n    labels: {__scheme__: ftp}\n  - targets: ['b:1']\n    labels: {__scrape_interval__: 0s}\n",
        );
        assert!(ts.is_empty());
        assert_eq!(errs[0].reason, "invalid scheme \"ftp\": use http or https");
        assert_eq!(errs[1].reason, "__scrape_interval__ label must not be zero");
    }

    #[test]
    fn hash_is_stable() {
        let (a, _) =
            targets("scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['a:1']\n");
        let (b, _) =
            targets("scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['a:1']\n");
        assert_eq!(a[0].hash, b[0].hash);
        // Pinned: a target's core and phase must not move between releases.
        assert_eq!(a[0].hash, 0xed14_170a_d834_88e9, "{:#x}", a[0].hash);
    }
}
