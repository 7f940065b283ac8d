//! Scrape targets as Prometheus derives them from a scrape config and its target groups.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{PromDuration, ScrapeConfig};
use crate::hash::label_set_hash;
use crate::http::query_escape;

/// One target, ready for a core to scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub job: String,
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
    /// Stable hash of the label set and URL: picks the core and the scrape phase.
    pub hash: u64,
}

impl Target {
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

/// Derives the targets of one scrape config, in the order written, with duplicates removed.
pub fn targets_for(sc: &ScrapeConfig) -> (Vec<Target>, Vec<TargetError>) {
    let mut out: Vec<Target> = Vec::new();
    let mut errors = Vec::new();
    for group in &sc.static_configs {
        for addr in &group.targets {
            match build(sc, addr, &group.labels) {
                Ok(t) => {
                    if !out.iter().any(|o| o.all_labels == t.all_labels) {
                        out.push(t);
                    }
                }
                Err(reason) => errors.push(TargetError {
                    job: sc.job_name.clone(),
                    address: addr.clone(),
                    reason,
                }),
            }
        }
    }
    (out, errors)
}

/// Prometheus' `PopulateLabels` without relabeling: target labels, then group labels where
/// absent, then defaults where absent; `instance` defaults to `__address__`.
fn build(
    sc: &ScrapeConfig,
    address: &str,
    group_labels: &[(String, String)],
) -> Result<Target, String> {
    let mut l: BTreeMap<String, String> = BTreeMap::new();
    l.insert("__address__".into(), address.to_string());
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
    let discovered: Vec<(String, String)> = l.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    l.retain(|k, _| !k.starts_with("__meta_"));
    l.entry("instance".into())
        .or_insert_with(|| address.clone());

    let scheme = l.get("__scheme__").cloned().unwrap_or_default();
    if scheme != "http" {
        return Err(format!(
            "scheme {scheme:?} is not supported by spate yet; use http"
        ));
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
    Ok(Target {
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
        accept: crate::exposition::accept_header(&sc.scrape_protocols),
        fallback: sc.fallback_scrape_protocol.and_then(|p| p.format()),
        native_histograms: sc.scrape_native_histograms,
        classic_histograms: sc.always_scrape_classic_histograms,
        hash,
    })
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
            "scrape_configs:\n- job_name: j\n  static_configs:\n  - targets: ['a:1']\n    labels: {__scheme__: https}\n",
        );
        assert!(ts.is_empty());
        assert!(errs[0].reason.contains("https"), "{errs:?}");
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
