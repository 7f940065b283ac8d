//! `kubernetes_sd_configs`: targets from the Kubernetes API, for the roles `node`, `service`,
//! `pod`, `endpoints`, `endpointslice` and `ingress`, with the labels Prometheus sets.
//!
//! A provider (one per configuration entry, on its own thread) subscribes to the reflectors
//! it needs (`watch.rs`: shared list + watch per API server, kind, namespace and selectors):
//! its role's objects in each namespace, and what its targets look up — services and pods
//! for `endpoints` and `endpointslice`, nodes for `attach_metadata.node`, namespaces for
//! `attach_metadata.namespace`. Once every store has listed, it builds one group per object
//! (`targets.rs`) and then rebuilds only the groups a change touches: the changed object's,
//! and those whose build looked up the changed object (a pod behind an endpoints object, a
//! pod's node).

mod client;
mod objects;
mod targets;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, atomic::Ordering};
use std::time::Duration;

use client::Api;
use objects::{Kind, Object};
pub(crate) use targets::sanitize;
use targets::{Attach, Lookup};
use watch::{Notice, Watch, WatchKey};

use super::{Command, TargetGroup};
use crate::config::{KubeRole, KubernetesSdConfig};
use crate::log::Level;
use crate::selfmetrics::SdStats;

/// Runs one `kubernetes_sd_configs` entry until `stop`.
pub fn run(
    cfg: &KubernetesSdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &Arc<SdStats>,
) {
    let api = loop {
        match Api::resolve(&cfg.api, cfg.own_namespace) {
            Ok(api) => break api,
            Err(e) => {
                stats.k8s_failures.fetch_add(1, Ordering::Relaxed);
                crate::log!(
                    Level::Error,
                    "discovery",
                    "cannot set up Kubernetes discovery; retrying",
                    job = job,
                    err = e
                );
                if super::sleep_unless(Duration::from_secs(10), stop) {
                    return;
                }
            }
        }
    };
    let (ntx, nrx) = std::sync::mpsc::channel();
    let mut d = Discovery::new(cfg, &api, ntx, stats);
    // Nothing is sent before every store has its first list (Prometheus waits for the
    // informers' caches to sync).
    while !d.synced() {
        if super::sleep_unless(Duration::from_millis(50), stop) {
            return;
        }
    }
    while nrx.try_recv().is_ok() {}
    d.build_all();
    if !d.send(job, provider, tx) {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        if d.apply(&nrx, Duration::from_millis(100))
            && (!d.changed.is_empty() || !d.removed.is_empty())
            && !d.send(job, provider, tx)
        {
            return;
        }
    }
}

/// One configuration entry's discovery: its stores and the groups built from them.
struct Discovery {
    role: KubeRole,
    attach: Attach,
    /// The stores by kind (one per namespace watched, or one for all).
    stores: HashMap<Kind, Vec<Arc<Watch>>>,
    /// Groups by the key of the object they come from.
    groups: BTreeMap<String, Arc<TargetGroup>>,
    /// Keys whose group changed since the last send.
    changed: BTreeSet<String>,
    /// Sources of groups removed since the last send.
    removed: Vec<String>,
    /// For each object looked up (kind, key), the groups whose build looked it up.
    dependents: HashMap<(Kind, String), BTreeSet<String>>,
    /// For each group, what its build looked up (to forget those links on rebuild).
    lookups: HashMap<String, Vec<(Kind, String)>>,
}

impl Discovery {
    fn new(
        cfg: &KubernetesSdConfig,
        api: &Api,
        tx: Sender<Notice>,
        stats: &Arc<SdStats>,
    ) -> Discovery {
        let mut namespaces = cfg.namespaces.clone();
        if let Some(own) = &api.own_namespace {
            namespaces.push(own.clone());
        }
        if namespaces.is_empty() {
            namespaces.push(String::new());
        }
        let role = cfg.role;
        let mut kinds = vec![Kind::of(role)];
        if matches!(role, KubeRole::Endpoints | KubeRole::EndpointSlice) {
            kinds.extend([Kind::Service, Kind::Pod]);
        }
        let node_targets = matches!(
            role,
            KubeRole::Pod | KubeRole::Endpoints | KubeRole::EndpointSlice
        );
        if cfg.attach_node && node_targets {
            kinds.push(Kind::Node);
        }
        if cfg.attach_namespace && role != KubeRole::Node {
            kinds.push(Kind::Namespace);
        }
        let selector = |kind: Kind| {
            let r = match kind {
                Kind::Pod => KubeRole::Pod,
                Kind::Service => KubeRole::Service,
                Kind::Endpoints => KubeRole::Endpoints,
                Kind::EndpointSlice => KubeRole::EndpointSlice,
                Kind::Node => KubeRole::Node,
                Kind::Ingress => KubeRole::Ingress,
                Kind::Namespace => return (String::new(), String::new()),
            };
            cfg.selectors
                .iter()
                .find(|s| s.role == r)
                .map_or_else(Default::default, |s| (s.label.clone(), s.field.clone()))
        };
        let mut stores: HashMap<Kind, Vec<Arc<Watch>>> = HashMap::new();
        for kind in kinds {
            let (label_selector, field_selector) = selector(kind);
            let spaces: Vec<String> = if kind.namespaced() {
                namespaces.clone()
            } else {
                vec![String::new()]
            };
            for namespace in spaces {
                let key = WatchKey {
                    api: api.clone(),
                    kind,
                    namespace,
                    label_selector: label_selector.clone(),
                    field_selector: field_selector.clone(),
                };
                let w = watch::subscribe(key, tx.clone(), stats);
                stores.entry(kind).or_default().push(w);
            }
        }
        Discovery {
            role,
            attach: Attach {
                node: cfg.attach_node && node_targets,
                namespace: cfg.attach_namespace && role != KubeRole::Node,
            },
            stores,
            groups: BTreeMap::new(),
            changed: BTreeSet::new(),
            removed: Vec::new(),
            dependents: HashMap::new(),
            lookups: HashMap::new(),
        }
    }

    fn synced(&self) -> bool {
        self.stores.values().flatten().all(|w| w.synced())
    }

    /// The stored object `key` of `kind`.
    fn get(&self, kind: Kind, key: &str) -> Option<Arc<Object>> {
        let namespace = if kind.namespaced() {
            key.split_once('/').map_or("", |(ns, _)| ns)
        } else {
            ""
        };
        self.stores.get(&kind)?.iter().find_map(|w| {
            let k = &w.key().namespace;
            if k.is_empty() || k == namespace {
                w.get(key)
            } else {
                None
            }
        })
    }

    fn build_all(&mut self) {
        let primary = Kind::of(self.role);
        let keys: Vec<String> = self
            .stores
            .get(&primary)
            .into_iter()
            .flatten()
            .flat_map(|w| w.objects())
            .map(|o| o.key())
            .collect();
        for k in keys {
            self.rebuild(&k);
        }
    }

    /// Builds (or removes) the group of the primary object `key`, remembering its lookups.
    fn rebuild(&mut self, key: &str) {
        for dep in self.lookups.remove(key).unwrap_or_default() {
            if let Some(set) = self.dependents.get_mut(&dep) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(&dep);
                }
            }
        }
        let Some(obj) = self.get(Kind::of(self.role), key) else {
            self.remove_group(key);
            return;
        };
        let mut rec = Recorder {
            d: self,
            seen: Vec::new(),
        };
        let group = targets::build(self.role, &obj, self.attach, &mut rec);
        let seen = rec.seen;
        for dep in &seen {
            self.dependents
                .entry(dep.clone())
                .or_default()
                .insert(key.to_string());
        }
        self.lookups.insert(key.to_string(), seen);
        match group {
            Some(g) if self.groups.get(key).is_some_and(|old| **old == g) => {}
            Some(g) => {
                self.groups.insert(key.to_string(), Arc::new(g));
                self.changed.insert(key.to_string());
            }
            None => self.remove_group(key),
        }
    }

    fn remove_group(&mut self, key: &str) {
        if let Some(old) = self.groups.remove(key) {
            self.removed.push(old.source.clone());
            self.changed.remove(key);
        }
    }

    /// Waits up to `wait` for notices, takes every pending one and rebuilds what they touch;
    /// true when something was rebuilt.
    fn apply(&mut self, rx: &Receiver<Notice>, wait: Duration) -> bool {
        let first = match rx.recv_timeout(wait) {
            Ok(n) => n,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return false,
        };
        let primary = Kind::of(self.role);
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut note = |d: &Self, n: Notice| {
            if n.kind == primary {
                touched.insert(n.key.clone());
            }
            if let Some(deps) = d.dependents.get(&(n.kind, n.key)) {
                touched.extend(deps.iter().cloned());
            }
        };
        note(self, first);
        while let Ok(n) = rx.try_recv() {
            note(self, n);
        }
        for k in &touched {
            self.rebuild(k);
        }
        !touched.is_empty()
    }

    /// Sends the groups that changed since the last send (every group the first time); false
    /// once the manager is gone.
    fn send(&mut self, job: &str, provider: u64, tx: &Sender<Command>) -> bool {
        let changed: Vec<Arc<TargetGroup>> = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|k| self.groups.get(&k).cloned())
            .collect();
        let removed = std::mem::take(&mut self.removed);
        tx.send(Command::Changes {
            job: job.to_string(),
            provider,
            changed,
            removed,
        })
        .is_ok()
    }
}

/// A [`Lookup`] over the stores that records what was looked up.
struct Recorder<'a> {
    d: &'a Discovery,
    seen: Vec<(Kind, String)>,
}

impl Lookup for Recorder<'_> {
    fn get(&mut self, kind: Kind, key: &str) -> Option<Arc<Object>> {
        self.seen.push((kind, key.to_string()));
        self.d.get(kind, key)
    }
}
