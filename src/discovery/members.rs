//! The cluster's member list, followed from its source (a file, DNS or Kubernetes) on a
//! thread of its own: every list that differs from the last goes to the manager as
//! [`Command::Members`]. A source that fails keeps its last list (members keep their targets
//! rather than all moving at once).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use super::{Command, TargetGroup};
use crate::cluster::{DnsKind, Source};
use crate::config::{DnsType, KubeApi, KubeRole, KubeSelector, KubernetesSdConfig};
use crate::log::Level;
use crate::selfmetrics::SdStats;

/// Reads the list once, now (for the first targets), where the source allows it: `None` for
/// a source followed by watching, or one that failed (logged).
pub fn first(source: &Source) -> Option<Vec<String>> {
    let read = match source {
        Source::Fixed | Source::Kubernetes { .. } => return None,
        Source::File(path) => read_file(path),
        Source::Dns { name, kind } => lookup(name, *kind),
    };
    read.map_err(|e| log_failure(source, &e)).ok()
}

/// Follows `source` on a thread of its own until the manager is gone.
pub fn follow(
    source: Source,
    refresh: Duration,
    tx: Sender<Command>,
    sd: Arc<SdStats>,
) -> std::io::Result<()> {
    if source == Source::Fixed {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("spate-members".into())
        .spawn(move || match &source {
            Source::Kubernetes {
                namespace,
                service,
                kubeconfig,
            } => watch_service(namespace, service, kubeconfig, &tx, &sd),
            _ => poll(&source, refresh, &tx),
        })?;
    Ok(())
}

fn poll(source: &Source, refresh: Duration, tx: &Sender<Command>) {
    loop {
        std::thread::sleep(refresh);
        let read = match source {
            Source::File(path) => read_file(path),
            Source::Dns { name, kind } => lookup(name, *kind),
            Source::Fixed | Source::Kubernetes { .. } => return,
        };
        match read {
            Ok(members) => {
                if tx.send(Command::Members(members)).is_err() {
                    return;
                }
            }
            Err(e) => log_failure(source, &e),
        }
    }
}

/// Logs this member's view: `what` when it is listed, an error when it is not (it scrapes
/// nothing then).
pub fn log_view(m: &crate::cluster::Membership, what: &str) {
    if m.listed() {
        crate::log!(
            Level::Info,
            "cluster",
            what,
            member = m.me,
            members = m.members.join(","),
            replication_factor = m.replication
        );
    } else {
        crate::log!(
            Level::Error,
            "cluster",
            "this member is not in the cluster's member list: it scrapes nothing until it is",
            member = m.me,
            members = m.members.join(",")
        );
    }
}

fn log_failure(source: &Source, err: &str) {
    crate::log!(
        Level::Error,
        "cluster",
        "cannot read the cluster's member list; the last one stays",
        source = format!("{source:?}"),
        err = err
    );
}

fn read_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --cluster.members-file {}: {e}", path.display()))?;
    Ok(crate::cluster::parse_member_list(&text))
}

fn lookup(name: &str, kind: DnsKind) -> Result<Vec<String>, String> {
    use super::dns::{Record, ResolvConf};
    let kind = match kind {
        DnsKind::Srv => DnsType::Srv,
        DnsKind::A => DnsType::A,
        DnsKind::Aaaa => DnsType::Aaaa,
    };
    let records = ResolvConf::load().lookup(name, kind.code())?;
    Ok(records
        .into_iter()
        .filter_map(|r| match r {
            Record::Srv { target, .. } => {
                let host = target.trim_end_matches('.');
                Some(host.split('.').next().unwrap_or(host).to_string())
            }
            Record::Addr(ip) => Some(ip.to_string()),
            Record::Host(_) => None,
        })
        .collect())
}

/// Watches the EndpointSlices of `service` through Kubernetes discovery: members are the
/// pods whose endpoints are ready (a terminating pod's are not).
fn watch_service(
    namespace: &Option<String>,
    service: &str,
    kubeconfig: &Option<std::path::PathBuf>,
    tx: &Sender<Command>,
    sd: &Arc<SdStats>,
) {
    let cfg = KubernetesSdConfig {
        role: KubeRole::EndpointSlice,
        api: match kubeconfig {
            Some(path) => KubeApi::Kubeconfig(path.clone()),
            None => KubeApi::InCluster,
        },
        namespaces: namespace.iter().cloned().collect(),
        own_namespace: namespace.is_none(),
        selectors: vec![KubeSelector {
            role: KubeRole::EndpointSlice,
            label: format!("kubernetes.io/service-name={service}"),
            field: String::new(),
        }],
        attach_node: false,
        attach_namespace: false,
    };
    let (inner_tx, inner_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, stats) = (stop.clone(), sd.clone());
    let spawned = std::thread::Builder::new()
        .name("spate-members-k8s".into())
        .spawn(move || super::kubernetes::run(&cfg, "cluster", 0, &inner_tx, &flag, &stats));
    if let Err(e) = spawned {
        crate::log!(
            Level::Error,
            "cluster",
            "cannot start the member list's watch",
            err = e
        );
        return;
    }
    let mut groups: BTreeMap<String, Arc<TargetGroup>> = BTreeMap::new();
    loop {
        match inner_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Command::Groups { groups: all, .. }) => {
                groups = all
                    .into_iter()
                    .map(|g| (g.source.clone(), Arc::new(g)))
                    .collect();
            }
            Ok(Command::Changes {
                changed, removed, ..
            }) => {
                for s in removed {
                    groups.remove(&s);
                }
                for g in changed {
                    groups.insert(g.source.clone(), g);
                }
            }
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if tx
            .send(Command::Members(ready_pods(groups.values())))
            .is_err()
        {
            stop.store(true, Ordering::SeqCst);
            return;
        }
    }
}

/// The pods named by ready endpoints of these EndpointSlice groups (an endpoint without a
/// `ready` condition counts as ready, as Kubernetes reads it).
fn ready_pods<'a>(groups: impl Iterator<Item = &'a Arc<TargetGroup>>) -> Vec<String> {
    let get = |t: &'a [(String, String)], name: &str| {
        t.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    };
    let mut pods = BTreeSet::new();
    for g in groups {
        for t in &g.targets {
            let kind = get(t, "__meta_kubernetes_endpointslice_address_target_kind");
            let name = get(t, "__meta_kubernetes_endpointslice_address_target_name");
            let ready = get(
                t,
                "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
            );
            if let (Some("Pod"), Some(name)) = (kind, name)
                && ready != Some("false")
            {
                pods.insert(name.to_string());
            }
        }
    }
    pods.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, kind: &str, ready: Option<&str>) -> Vec<(String, String)> {
        let mut t = vec![
            (
                "__meta_kubernetes_endpointslice_address_target_kind".to_string(),
                kind.to_string(),
            ),
            (
                "__meta_kubernetes_endpointslice_address_target_name".to_string(),
                name.to_string(),
            ),
        ];
        if let Some(r) = ready {
            t.push((
                "__meta_kubernetes_endpointslice_endpoint_conditions_ready".to_string(),
                r.to_string(),
            ));
        }
        t
    }

    #[test]
    fn members_are_the_ready_pods() {
        let g = Arc::new(TargetGroup {
            source: "endpointslice/ns/spate-abc".into(),
            targets: vec![
                target("spate-0", "Pod", Some("true")),
                target("spate-0", "Pod", Some("true")),
                target("spate-1", "Pod", Some("false")),
                target("spate-2", "Pod", None),
                target("node-a", "Node", Some("true")),
            ],
            labels: vec![],
        });
        assert_eq!(ready_pods([g].iter()), vec!["spate-0", "spate-2"]);
    }
}
