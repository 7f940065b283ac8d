//! What the targets API shows about each target: its labels, and the outcome of its last
//! scrape. Written by the target's core once per scrape, read by the web thread.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use super::Target;
use crate::config::PromDuration;
use crate::log::quoted;

/// A target as the API reports it: the target itself, the outcome of its last scrape (written
/// by its core), and the metric metadata its last good scrape reported.
pub struct TargetStatus {
    pub target: Target,
    pub scrape_url: String,
    pub interval: String,
    pub timeout: String,
    last: Mutex<LastScrape>,
    /// Metadata items (`wal::record` encoding) of the last successful scrape.
    metadata: Mutex<Vec<u8>>,
}

#[derive(Clone, Default)]
struct LastScrape {
    /// None before the first scrape ("unknown").
    up: Option<bool>,
    error: String,
    at: Option<SystemTime>,
    duration: f64,
}

impl TargetStatus {
    pub fn new(t: Target) -> TargetStatus {
        TargetStatus {
            scrape_url: t.url(),
            interval: PromDuration(t.interval).to_string(),
            timeout: PromDuration(t.timeout).to_string(),
            target: t,
            last: Mutex::new(LastScrape::default()),
            metadata: Mutex::new(Vec::new()),
        }
    }

    /// The status of a target that replaces `old` (a reload changed it): its own labels and
    /// settings, with the health and metadata `old` had.
    pub fn succeeding(t: Target, old: &TargetStatus) -> TargetStatus {
        let s = TargetStatus::new(t);
        *s.last.lock().unwrap_or_else(|e| e.into_inner()) =
            old.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        *s.metadata.lock().unwrap_or_else(|e| e.into_inner()) = old.metadata();
        s
    }

    /// Records a scrape's outcome (`error` empty when it succeeded).
    pub fn record(&self, at: SystemTime, duration: f64, error: Option<&str>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.up = Some(error.is_none());
        last.error.clear();
        last.error.push_str(error.unwrap_or(""));
        last.at = Some(at);
        last.duration = duration;
    }

    /// Keeps a successful scrape's metadata items; copies them only when they changed.
    pub fn note_metadata(&self, items: &[u8]) {
        let mut kept = self.metadata.lock().unwrap_or_else(|e| e.into_inner());
        if kept.as_slice() != items {
            kept.clear();
            kept.extend_from_slice(items);
        }
    }

    /// The metadata items of the last successful scrape.
    pub fn metadata(&self) -> Vec<u8> {
        self.metadata
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn labels_json(out: &mut String, labels: &[(String, String)]) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        quoted(out, k);
        out.push(':');
        quoted(out, v);
    }
    out.push('}');
}

/// Every target the targets API shows.
#[derive(Clone, Default)]
pub struct TargetsView {
    pub active: Vec<std::sync::Arc<TargetStatus>>,
    pub dropped: Vec<super::DroppedTarget>,
    /// Dropped targets per job (all of them, not only those kept), in configuration order.
    pub dropped_counts: Vec<(String, usize)>,
    /// Each scrape pool (job) in configuration order, with its target relabeling rules.
    pub pools: Vec<(String, std::sync::Arc<crate::relabel::Rules>)>,
}

/// The body of `/api/v1/targets`, in Prometheus' shape. `state` is `active`, `dropped` or
/// `any`; `pool` keeps one job's targets.
pub fn targets_json(view: &TargetsView, state: &str, pool: Option<&str>) -> String {
    let in_pool = |job: &str| pool.is_none_or(|p| p == job);
    let show_active = state == "any" || state == "active";
    let show_dropped = state == "any" || state == "dropped";
    let mut out = String::from(r#"{"status":"success","data":{"activeTargets":["#);
    let mut first = true;
    for t in view
        .active
        .iter()
        .filter(|t| show_active && in_pool(&t.target.pool))
    {
        if !first {
            out.push(',');
        }
        first = false;
        let last = t.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        out.push_str(r#"{"discoveredLabels":"#);
        labels_json(&mut out, &t.target.discovered);
        out.push_str(r#","labels":"#);
        labels_json(&mut out, &t.target.labels);
        out.push_str(r#","scrapePool":"#);
        quoted(&mut out, &t.target.pool);
        out.push_str(r#","scrapeUrl":"#);
        quoted(&mut out, &t.scrape_url);
        out.push_str(r#","globalUrl":"#);
        quoted(&mut out, &t.scrape_url);
        out.push_str(r#","lastError":"#);
        quoted(&mut out, &last.error);
        let at = last
            .at
            .map(crate::log::rfc3339_millis)
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into());
        let health = match last.up {
            None => "unknown",
            Some(true) => "up",
            Some(false) => "down",
        };
        let _ = write!(
            out,
            r#","lastScrape":"{at}","lastScrapeDuration":{},"health":"{health}","scrapeInterval":"{}","scrapeTimeout":"{}"}}"#,
            last.duration, t.interval, t.timeout
        );
    }
    out.push_str(r#"],"droppedTargets":["#);
    let mut first = true;
    for d in view
        .dropped
        .iter()
        .filter(|d| show_dropped && in_pool(&d.job))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(r#"{"discoveredLabels":"#);
        labels_json(&mut out, &d.discovered);
        out.push_str(r#","scrapePool":"#);
        quoted(&mut out, &d.job);
        if let Some(reason) = &d.reason {
            // spate's own field: a target dropped for another reason than relabeling.
            out.push_str(r#","droppedReason":"#);
            quoted(&mut out, reason);
        }
        out.push('}');
    }
    out.push_str(r#"],"droppedTargetCounts":{"#);
    let mut first = true;
    for (job, n) in view.dropped_counts.iter().filter(|(j, _)| in_pool(j)) {
        if !first {
            out.push(',');
        }
        first = false;
        quoted(&mut out, job);
        let _ = write!(out, ":{n}");
    }
    out.push_str("}}}");
    out
}
