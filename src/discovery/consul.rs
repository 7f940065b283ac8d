//! `consul_sd_configs`: services from Consul's catalog, followed with blocking queries as
//! Prometheus does (`discovery/consul/consul.go`): the catalog's service list (unless
//! `services` names them), and each service's health entries, one watcher per service, each
//! asking again at most once per `refresh_interval` and waiting up to two minutes for a change
//! (`index`/`wait`). One group per service, `source` its name; a failed query keeps the
//! service's last group and is counted.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::http::get;
use super::kubernetes::sanitize;
use super::{Command, Outbox, TargetGroup};
use crate::config::ConsulSdConfig;
use crate::log::Level;
use crate::runtime::{LocalNotify, race, sleep};
use crate::selfmetrics::SdStats;

/// How long a blocking query waits for a change.
const WATCH_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_BODY: usize = 64 << 20;

/// Runs one `consul_sd_configs` entry until `stop`.
pub fn run(
    cfg: &ConsulSdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &Arc<SdStats>,
) {
    let until_stop = async {
        while !stop.load(Ordering::SeqCst) {
            sleep(Duration::from_millis(100)).await;
        }
    };
    let shared = Rc::new(Shared {
        groups: RefCell::new(BTreeMap::new()),
        changed: LocalNotify::default(),
    });
    let discover = discover(cfg, job, stats, shared.clone());
    let send = async {
        let mut out = Outbox::new(job, provider, tx);
        loop {
            shared.changed.notified().await;
            let groups: Vec<TargetGroup> = shared.groups.borrow().values().cloned().collect();
            if !out.offer(groups) {
                return;
            }
        }
    };
    let _ = crate::runtime::block_on(race(until_stop, race(discover, send)));
}

struct Shared {
    /// The current group of each service watched.
    groups: RefCell<BTreeMap<String, TargetGroup>>,
    changed: LocalNotify,
}

/// One blocking query: the body and the new index, or `None` when nothing changed.
struct Query<'a> {
    cfg: &'a ConsulSdConfig,
    stats: &'a SdStats,
    job: &'a str,
}

impl Query<'_> {
    fn failed(&self, what: &str, err: &str) {
        self.stats.consul_failures.fetch_add(1, Ordering::Relaxed);
        crate::log!(
            Level::Error,
            "discovery",
            "Consul query failed; the last targets stay",
            job = self.job,
            query = what,
            err = err
        );
    }

    /// GETs `path` with the common parameters plus `params`, as a blocking query from
    /// `index`; returns the body and the index the server answered with.
    async fn get(
        &self,
        path: &str,
        params: &[(&str, &str)],
        index: Option<u64>,
    ) -> Result<(Vec<u8>, u64), String> {
        let cfg = self.cfg;
        let base = cfg.url.path_and_query.trim_end_matches('/');
        let mut target = format!("{base}{path}?");
        let mut add = |k: &str, v: &str| {
            if !target.ends_with('?') {
                target.push('&');
            }
            target.push_str(k);
            if !v.is_empty() || k != "stale" {
                target.push('=');
                crate::http::query_escape(&mut target, v);
            }
        };
        for (k, v) in params {
            add(k, v);
        }
        if let Some(i) = index {
            add("index", &i.to_string());
            add("wait", &format!("{}ms", WATCH_TIMEOUT.as_millis()));
        }
        if cfg.allow_stale {
            add("stale", "");
        }
        for (k, v) in [
            ("ns", &cfg.namespace),
            ("partition", &cfg.partition),
            ("filter", &cfg.filter),
        ] {
            if !v.is_empty() {
                add(k, v);
            }
        }
        for (k, v) in &cfg.node_meta {
            add("node-meta", &format!("{k}:{v}"));
        }
        let mut extra = String::from("Accept: application/json\r\n");
        if let Some(t) = &cfg.token {
            extra.push_str(&format!("X-Consul-Token: {}\r\n", t.read()?));
        }
        let limit = WATCH_TIMEOUT + Duration::from_secs(30);
        let r = get(&cfg.http, &cfg.url, &target, &extra, limit, MAX_BODY).await?;
        if r.status != 200 {
            return Err(format!(
                "Consul returned HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body[..r.body.len().min(200)]).trim()
            ));
        }
        Ok((r.body, r.index.unwrap_or(0)))
    }
}

/// Waits until `refresh` has passed since `started` (queries are at most that frequent).
async fn pace(started: Instant, refresh: Duration) {
    let left = refresh.saturating_sub(started.elapsed());
    if !left.is_zero() {
        sleep(left).await;
    }
}

async fn discover(cfg: &ConsulSdConfig, job: &str, stats: &Arc<SdStats>, shared: Rc<Shared>) {
    let q = Query { cfg, stats, job };
    // The datacenter: configured, or the agent's own.
    let dc =
        loop {
            if !cfg.datacenter.is_empty() {
                break cfg.datacenter.clone();
            }
            #[derive(Deserialize)]
            struct SelfInfo {
                #[serde(rename = "Config")]
                config: AgentConfig,
            }
            #[derive(Deserialize)]
            struct AgentConfig {
                #[serde(rename = "Datacenter")]
                datacenter: String,
            }
            let started = Instant::now();
            match q.get("/v1/agent/self", &[], None).await.and_then(|(b, _)| {
                serde_json::from_slice::<SelfInfo>(&b).map_err(|e| e.to_string())
            }) {
                Ok(info) => break info.config.datacenter,
                Err(e) => q.failed("agent/self", &e),
            }
            pace(started, cfg.refresh_interval).await;
        };
    // Watchers by service; each has a flag that stops it.
    let mut watchers: HashMap<String, Rc<std::cell::Cell<bool>>> = HashMap::new();
    let start = |name: &str, watchers: &mut HashMap<String, Rc<std::cell::Cell<bool>>>| {
        let gone = Rc::new(std::cell::Cell::new(false));
        watchers.insert(name.to_string(), gone.clone());
        let (cfg, job, dc, name, shared, stats) = (
            cfg.clone(),
            job.to_string(),
            dc.clone(),
            name.to_string(),
            shared.clone(),
            stats.clone(),
        );
        crate::runtime::spawn(async move {
            watch_service(&cfg, &job, &stats, &dc, &name, &shared, &gone).await;
        });
    };
    if !cfg.services.is_empty() {
        for name in &cfg.services {
            start(name, &mut watchers);
        }
        std::future::pending::<()>().await;
    }
    let mut index = Some(0u64);
    loop {
        let started = Instant::now();
        match q
            .get("/v1/catalog/services", &[("dc", &dc)], index)
            .await
            .and_then(|(b, i)| {
                let list: BTreeMap<String, Vec<String>> =
                    serde_json::from_slice(&b).map_err(|e| format!("the service list: {e}"))?;
                Ok((list, i))
            }) {
            Err(e) => q.failed("catalog/services", &e),
            Ok((list, i)) => {
                // An index that goes backwards means the server was reset: start over.
                index = Some(if i < index.unwrap_or(0) { 0 } else { i });
                for (name, tags) in &list {
                    if cfg.tags.iter().all(|t| tags.contains(t)) && !watchers.contains_key(name) {
                        start(name, &mut watchers);
                    }
                }
                let gone: Vec<String> = watchers
                    .keys()
                    .filter(|n| {
                        list.get(*n)
                            .is_none_or(|tags| !cfg.tags.iter().all(|t| tags.contains(t)))
                    })
                    .cloned()
                    .collect();
                for name in gone {
                    if let Some(flag) = watchers.remove(&name) {
                        flag.set(true);
                    }
                    if shared.groups.borrow_mut().remove(&name).is_some() {
                        shared.changed.notify();
                    }
                }
            }
        }
        pace(started, cfg.refresh_interval).await;
    }
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Node,
    #[serde(rename = "Service")]
    service: Service,
    #[serde(rename = "Checks", default)]
    checks: Vec<Check>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Node {
    #[serde(rename = "Node")]
    node: String,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "TaggedAddresses")]
    tagged_addresses: Option<BTreeMap<String, String>>,
    #[serde(rename = "Meta")]
    meta: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Service {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Service")]
    service: String,
    #[serde(rename = "Tags")]
    tags: Option<Vec<String>>,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Meta")]
    meta: Option<BTreeMap<String, String>>,
    #[serde(rename = "Port")]
    port: u16,
    #[serde(rename = "Namespace")]
    namespace: String,
    #[serde(rename = "Partition")]
    partition: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Check {
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "CheckID")]
    check_id: String,
}

/// Consul's `HealthChecks.AggregatedStatus`: maintenance, then critical, then warning, then
/// passing.
fn aggregated_status(checks: &[Check]) -> &'static str {
    let maintenance = checks.iter().any(|c| {
        c.status == "maintenance"
            || c.check_id == "_node_maintenance"
            || c.check_id.starts_with("_service_maintenance:")
    });
    if maintenance {
        "maintenance"
    } else if checks.iter().any(|c| c.status == "critical") {
        "critical"
    } else if checks.iter().any(|c| c.status == "warning") {
        "warning"
    } else {
        "passing"
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    crate::http::join_host_port(host.trim_start_matches('[').trim_end_matches(']'), port)
}

/// The group of service `name` from its health entries, with Prometheus' labels.
fn group(name: &str, dc: &str, separator: &str, entries: &[Entry]) -> TargetGroup {
    const P: &str = "__meta_consul_";
    let mut targets = Vec::new();
    for e in entries {
        let s = &e.service;
        let tags = s.tags.as_deref().unwrap_or_default();
        let tags = format!("{separator}{}{separator}", tags.join(separator));
        let host = if s.address.is_empty() {
            &e.node.address
        } else {
            &s.address
        };
        let mut t: BTreeMap<String, String> = BTreeMap::new();
        t.insert("__address__".into(), join_host_port(host, s.port));
        for (k, v) in [
            ("address", e.node.address.clone()),
            ("node", e.node.node.clone()),
            ("namespace", s.namespace.clone()),
            ("partition", s.partition.clone()),
            ("tags", tags),
            ("service_address", s.address.clone()),
            ("service_port", s.port.to_string()),
            ("service_id", s.id.clone()),
            ("health", aggregated_status(&e.checks).to_string()),
        ] {
            t.insert(format!("{P}{k}"), v);
        }
        for (prefix, map) in [
            ("metadata_", &e.node.meta),
            ("service_metadata_", &s.meta),
            ("tagged_address_", &e.node.tagged_addresses),
        ] {
            for (k, v) in map.iter().flatten() {
                t.insert(format!("{P}{prefix}{}", sanitize(k)), v.clone());
            }
        }
        targets.push(t.into_iter().collect());
    }
    TargetGroup {
        source: name.to_string(),
        targets,
        labels: vec![
            (format!("{P}dc"), dc.to_string()),
            (format!("{P}service"), name.to_string()),
        ],
    }
}

async fn watch_service(
    cfg: &ConsulSdConfig,
    job: &str,
    stats: &SdStats,
    dc: &str,
    name: &str,
    shared: &Shared,
    gone: &std::cell::Cell<bool>,
) {
    let q = Query { cfg, stats, job };
    let path = format!("/v1/health/service/{}", escape_path(name));
    let mut index = 0u64;
    while !gone.get() {
        let started = Instant::now();
        let mut params: Vec<(&str, &str)> = vec![("dc", dc)];
        for t in &cfg.tags {
            params.push(("tag", t));
        }
        match q.get(&path, &params, Some(index)).await.and_then(|(b, i)| {
            let entries: Vec<Entry> =
                serde_json::from_slice(&b).map_err(|e| format!("the entries of {name}: {e}"))?;
            Ok((entries, i))
        }) {
            Err(e) => q.failed("health/service", &e),
            Ok((entries, i)) => {
                index = if i < index { 0 } else { i };
                if gone.get() {
                    return;
                }
                let g = group(name, dc, &cfg.tag_separator, &entries);
                let mut groups = shared.groups.borrow_mut();
                if groups.get(name) != Some(&g) {
                    groups.insert(name.to_string(), g);
                    shared.changed.notify();
                }
            }
        }
        pace(started, cfg.refresh_interval).await;
    }
}

fn escape_path(s: &str) -> String {
    let mut out = String::new();
    crate::http::query_escape(&mut out, s);
    out.replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_entries_become_prometheus_labels() {
        // The shape of Prometheus' consul_test.go `TestAllServices` answer for "test".
        let json = r#"[{
          "Node": {"ID": "b78c2e48", "Node": "node1", "Address": "1.1.1.1", "Datacenter": "test-dc",
                   "TaggedAddresses": {"lan": "192.168.10.10", "wan": "10.0.10.10"},
                   "Meta": {"rack_name": "2304"}},
          "Service": {"ID": "test", "Service": "test", "Tags": ["tag1"], "Address": "",
                      "Meta": {"version": "1.0.0", "environment": "staging"}, "Port": 3341},
          "Checks": [{"Node": "node1", "CheckID": "serfHealth", "Status": "passing"},
                     {"Node": "node1", "CheckID": "service:test", "Status": "warning"}]
        }]"#;
        let entries: Vec<Entry> = serde_json::from_str(json).unwrap();
        let g = group("test", "test-dc", ",", &entries);
        assert_eq!(g.source, "test");
        assert_eq!(
            g.labels,
            vec![
                ("__meta_consul_dc".to_string(), "test-dc".to_string()),
                ("__meta_consul_service".to_string(), "test".to_string()),
            ]
        );
        let t: BTreeMap<String, String> = g.targets[0].iter().cloned().collect();
        let want: BTreeMap<String, String> = [
            ("__address__", "1.1.1.1:3341"),
            ("__meta_consul_address", "1.1.1.1"),
            ("__meta_consul_health", "warning"),
            ("__meta_consul_metadata_rack_name", "2304"),
            ("__meta_consul_namespace", ""),
            ("__meta_consul_node", "node1"),
            ("__meta_consul_partition", ""),
            ("__meta_consul_service_address", ""),
            ("__meta_consul_service_id", "test"),
            ("__meta_consul_service_metadata_environment", "staging"),
            ("__meta_consul_service_metadata_version", "1.0.0"),
            ("__meta_consul_service_port", "3341"),
            ("__meta_consul_tagged_address_lan", "192.168.10.10"),
            ("__meta_consul_tagged_address_wan", "10.0.10.10"),
            ("__meta_consul_tags", ",tag1,"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(t, want);
    }

    #[test]
    fn a_service_address_wins_over_the_node_s() {
        let json = r#"[{"Node": {"Node": "n", "Address": "1.1.1.1"},
          "Service": {"ID": "s1", "Service": "s", "Address": "2.2.2.2", "Port": 80, "Tags": null},
          "Checks": []}]"#;
        let entries: Vec<Entry> = serde_json::from_str(json).unwrap();
        let g = group("s", "dc1", ";", &entries);
        let t: BTreeMap<String, String> = g.targets[0].iter().cloned().collect();
        assert_eq!(t["__address__"], "2.2.2.2:80");
        assert_eq!(t["__meta_consul_tags"], ";;");
        assert_eq!(t["__meta_consul_health"], "passing");
    }

    #[test]
    fn aggregated_health_prefers_maintenance_then_critical() {
        let c = |status: &str, id: &str| Check {
            status: status.into(),
            check_id: id.into(),
        };
        assert_eq!(aggregated_status(&[]), "passing");
        assert_eq!(
            aggregated_status(&[c("passing", "a"), c("critical", "b"), c("warning", "c")]),
            "critical"
        );
        assert_eq!(
            aggregated_status(&[c("critical", "b"), c("passing", "_node_maintenance")]),
            "maintenance"
        );
    }
}
