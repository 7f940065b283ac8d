//! Target groups from Kubernetes objects, with the labels Prometheus sets for each role
//! (`discovery/kubernetes/*.go`): one group per object, its `source` the object's
//! (`pod/ns/name`, `svc/ns/name`, …). Pure functions of the object and of what they look up
//! in the other stores (a pod's node, an endpoints' service and pods), so they are
//! table-tested with Prometheus' own cases.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::objects::{
    EndpointSlice, Endpoints, Ingress, Kind, Meta, Node, Object, Pod, Service, key,
};
use crate::config::KubeRole;
use crate::discovery::TargetGroup;

const P: &str = "__meta_kubernetes_";
const ADDRESS: &str = "__address__";

type Set = BTreeMap<String, String>;

/// What a role's targets may look up in other stores; each lookup is remembered by the
/// caller, so a change to the object looked up rebuilds the groups that used it.
pub trait Lookup {
    fn get(&mut self, kind: Kind, key: &str) -> Option<Arc<Object>>;
}

/// `attach_metadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attach {
    pub node: bool,
    pub namespace: bool,
}

/// The group's source for an object of `kind` (what Prometheus names it).
pub fn source(kind: Kind, namespace: &str, name: &str) -> String {
    match kind {
        Kind::Pod => format!("pod/{namespace}/{name}"),
        Kind::Service => format!("svc/{namespace}/{name}"),
        Kind::Endpoints => format!("endpoints/{namespace}/{name}"),
        Kind::EndpointSlice => format!("endpointslice/{namespace}/{name}"),
        Kind::Ingress => format!("ingress/{namespace}/{name}"),
        Kind::Node => format!("node/{name}"),
        Kind::Namespace => format!("namespace/{name}"),
    }
}

/// The group for `obj` under `role`; `None` when Prometheus sends none (a node without an
/// address). A group without targets stands for an object that has none now.
pub fn build(
    role: KubeRole,
    obj: &Object,
    attach: Attach,
    lookup: &mut dyn Lookup,
) -> Option<TargetGroup> {
    let (labels, targets, src) = match (role, obj) {
        (KubeRole::Pod, Object::Pod(p)) => {
            let (l, t) = pod(p, attach, lookup);
            (
                l,
                t,
                source(Kind::Pod, &p.metadata.namespace, &p.metadata.name),
            )
        }
        (KubeRole::Service, Object::Service(s)) => {
            let (l, t) = service(s, attach, lookup);
            (
                l,
                t,
                source(Kind::Service, &s.metadata.namespace, &s.metadata.name),
            )
        }
        (KubeRole::Endpoints, Object::Endpoints(e)) => {
            let (l, t) = endpoints(e, attach, lookup);
            (
                l,
                t,
                source(Kind::Endpoints, &e.metadata.namespace, &e.metadata.name),
            )
        }
        (KubeRole::EndpointSlice, Object::EndpointSlice(e)) => {
            let (l, t) = endpoint_slice(e, attach, lookup);
            let src = source(Kind::EndpointSlice, &e.metadata.namespace, &e.metadata.name);
            (l, t, src)
        }
        (KubeRole::Node, Object::Node(n)) => {
            let (l, t) = node(n)?;
            (l, t, source(Kind::Node, "", &n.metadata.name))
        }
        (KubeRole::Ingress, Object::Ingress(i)) => {
            let (l, t) = ingress(i, attach, lookup);
            (
                l,
                t,
                source(Kind::Ingress, &i.metadata.namespace, &i.metadata.name),
            )
        }
        _ => return None,
    };
    Some(TargetGroup {
        source: src,
        targets: targets.into_iter().map(into_labels).collect(),
        labels: into_labels(labels),
    })
}

fn into_labels(s: Set) -> Vec<(String, String)> {
    s.into_iter().collect()
}

/// Prometheus' `strutil.SanitizeLabelName`: every character outside `[a-zA-Z0-9_]` becomes
/// `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn set(s: &mut Set, name: &str, value: impl Into<String>) {
    s.insert(format!("{P}{name}"), value.into());
}

/// `<role>_name`, and each label and annotation with its `…present_…` twin.
fn object_meta(s: &mut Set, meta: &Meta, role: &str) {
    set(s, &format!("{role}_name"), meta.name.clone());
    for (k, v) in &meta.labels {
        let n = sanitize(k);
        set(s, &format!("{role}_label_{n}"), v.clone());
        set(s, &format!("{role}_labelpresent_{n}"), "true");
    }
    for (k, v) in &meta.annotations {
        let n = sanitize(k);
        set(s, &format!("{role}_annotation_{n}"), v.clone());
        set(s, &format!("{role}_annotationpresent_{n}"), "true");
    }
}

/// The node's name, labels and annotations (`attach_metadata.node`).
fn node_labels(s: &mut Set, node_name: Option<&str>, lookup: &mut dyn Lookup) {
    let Some(name) = node_name else { return };
    if let Some(obj) = lookup.get(Kind::Node, name)
        && let Object::Node(n) = &*obj
    {
        object_meta(s, &n.metadata, "node");
    }
}

/// The namespace's labels and annotations (`attach_metadata.namespace`).
fn namespace_labels(s: &mut Set, namespace: &str, lookup: &mut dyn Lookup) {
    if let Some(obj) = lookup.get(Kind::Namespace, namespace)
        && let Object::Namespace(n) = &*obj
    {
        for (k, v) in &n.metadata.labels {
            let n = sanitize(k);
            set(s, &format!("namespace_label_{n}"), v.clone());
            set(s, &format!("namespace_labelpresent_{n}"), "true");
        }
        for (k, v) in &n.metadata.annotations {
            let n = sanitize(k);
            set(s, &format!("namespace_annotation_{n}"), v.clone());
            set(s, &format!("namespace_annotationpresent_{n}"), "true");
        }
    }
}

fn join_host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// Pod role.

fn pod_ready(p: &Pod) -> String {
    p.status
        .conditions
        .iter()
        .find(|c| c.kind == "Ready")
        .map_or_else(|| "unknown".to_string(), |c| c.status.to_lowercase())
}

/// The labels every target of a pod carries (pod role groups, endpoints targets).
fn pod_labels(p: &Pod) -> Set {
    let mut s = Set::new();
    set(&mut s, "pod_ip", p.status.pod_ip.clone());
    set(&mut s, "pod_ready", pod_ready(p));
    set(&mut s, "pod_phase", p.status.phase.clone());
    set(&mut s, "pod_node_name", p.spec.node_name.clone());
    set(&mut s, "pod_host_ip", p.status.host_ip.clone());
    set(&mut s, "pod_uid", p.metadata.uid.clone());
    object_meta(&mut s, &p.metadata, "pod");
    if let Some(owner) = p
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
    {
        if !owner.kind.is_empty() {
            set(&mut s, "pod_controller_kind", owner.kind.clone());
        }
        if !owner.name.is_empty() {
            set(&mut s, "pod_controller_name", owner.name.clone());
        }
    }
    s
}

fn container_id(statuses: &[super::objects::ContainerStatus], name: &str) -> String {
    statuses
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.container_id.clone())
        .unwrap_or_default()
}

fn pod(p: &Pod, attach: Attach, lookup: &mut dyn Lookup) -> (Set, Vec<Set>) {
    // No IP yet (starting) or any more (evicted): an empty group.
    if p.status.pod_ip.is_empty() {
        return (Set::new(), Vec::new());
    }
    let mut labels = pod_labels(p);
    set(&mut labels, "namespace", p.metadata.namespace.clone());
    if attach.node {
        node_labels(&mut labels, Some(&p.spec.node_name), lookup);
    }
    if attach.namespace {
        namespace_labels(&mut labels, &p.metadata.namespace, lookup);
    }
    let mut targets = Vec::new();
    let all = p
        .spec
        .containers
        .iter()
        .map(|c| (c, false))
        .chain(p.spec.init_containers.iter().map(|c| (c, true)));
    for (c, init) in all {
        let statuses = if init {
            &p.status.init_container_statuses
        } else {
            &p.status.container_statuses
        };
        let mut base = Set::new();
        set(&mut base, "pod_container_name", c.name.clone());
        set(
            &mut base,
            "pod_container_id",
            container_id(statuses, &c.name),
        );
        set(&mut base, "pod_container_image", c.image.clone());
        set(&mut base, "pod_container_init", init.to_string());
        if c.ports.is_empty() {
            // No port: the pod IP alone, for relabeling to complete.
            base.insert(ADDRESS.into(), p.status.pod_ip.clone());
            targets.push(base);
            continue;
        }
        for port in &c.ports {
            let mut t = base.clone();
            let number = port.container_port.to_string();
            t.insert(ADDRESS.into(), join_host_port(&p.status.pod_ip, &number));
            set(&mut t, "pod_container_port_number", number);
            set(&mut t, "pod_container_port_name", port.name.clone());
            set(&mut t, "pod_container_port_protocol", port.protocol.clone());
            targets.push(t);
        }
    }
    (labels, targets)
}

// Service role.

fn service_labels(s: &Service) -> Set {
    let mut l = Set::new();
    set(&mut l, "namespace", s.metadata.namespace.clone());
    object_meta(&mut l, &s.metadata, "service");
    l
}

fn service(s: &Service, attach: Attach, lookup: &mut dyn Lookup) -> (Set, Vec<Set>) {
    let mut labels = service_labels(s);
    if attach.namespace {
        namespace_labels(&mut labels, &s.metadata.namespace, lookup);
    }
    let host = format!("{}.{}.svc", s.metadata.name, s.metadata.namespace);
    let targets = s
        .spec
        .ports
        .iter()
        .map(|port| {
            let mut t = Set::new();
            t.insert(ADDRESS.into(), join_host_port(&host, port.port));
            set(&mut t, "service_port_name", port.name.clone());
            set(&mut t, "service_port_number", port.port.to_string());
            set(&mut t, "service_port_protocol", port.protocol.clone());
            set(&mut t, "service_type", s.spec.kind.clone());
            if s.spec.kind == "ExternalName" {
                set(
                    &mut t,
                    "service_external_name",
                    s.spec.external_name.clone(),
                );
            } else {
                set(&mut t, "service_cluster_ip", s.spec.cluster_ip.clone());
            }
            if s.spec.kind == "LoadBalancer" {
                set(
                    &mut t,
                    "service_loadbalancer_ip",
                    s.spec.load_balancer_ip.clone(),
                );
            }
            t
        })
        .collect();
    (labels, targets)
}

/// The pod an address points to, when it is one this discovery watches.
fn resolve_pod(
    target: Option<&super::objects::ObjectRef>,
    lookup: &mut dyn Lookup,
) -> Option<Arc<Object>> {
    let r = target.filter(|r| r.kind == "Pod")?;
    lookup
        .get(Kind::Pod, &key(&r.namespace, &r.name))
        .filter(|o| matches!(**o, Object::Pod(_)))
}

fn as_pod(o: &Object) -> &Pod {
    match o {
        Object::Pod(p) => p,
        _ => unreachable!("resolve_pod returns pods only"),
    }
}

/// Targets for the container ports of the pods seen that no endpoint port covered.
fn unbound_ports(seen: &[(Arc<Object>, Vec<i32>)], targets: &mut Vec<Set>) {
    for (obj, ports) in seen {
        let p = as_pod(obj);
        if p.status.pod_ip.is_empty() {
            continue;
        }
        for c in &p.spec.containers {
            for cport in &c.ports {
                if ports.contains(&cport.container_port) {
                    continue;
                }
                let number = cport.container_port.to_string();
                let mut t = pod_labels(p);
                t.insert(ADDRESS.into(), join_host_port(&p.status.pod_ip, &number));
                set(&mut t, "pod_container_name", c.name.clone());
                set(&mut t, "pod_container_image", c.image.clone());
                set(&mut t, "pod_container_port_name", cport.name.clone());
                set(&mut t, "pod_container_port_number", number);
                set(
                    &mut t,
                    "pod_container_port_protocol",
                    cport.protocol.clone(),
                );
                set(&mut t, "pod_container_init", "false");
                targets.push(t);
            }
        }
    }
}

/// Records a pod seen at an endpoint port, in first-seen order.
fn note_seen(seen: &mut Vec<(Arc<Object>, Vec<i32>)>, pod: &Arc<Object>, port: i32) {
    let k = pod.key();
    match seen.iter_mut().find(|(p, _)| p.key() == k) {
        Some((_, ports)) => ports.push(port),
        None => seen.push((pod.clone(), vec![port])),
    }
}

/// The container port labels of the pod's container that serves `port`.
fn container_port_labels(t: &mut Set, p: &Pod, port: i32, protocol: &str) {
    for c in &p.spec.containers {
        if let Some(cport) = c.ports.iter().find(|cp| cp.container_port == port) {
            set(t, "pod_container_name", c.name.clone());
            set(t, "pod_container_image", c.image.clone());
            set(t, "pod_container_port_name", cport.name.clone());
            set(t, "pod_container_port_number", port.to_string());
            set(t, "pod_container_port_protocol", protocol.to_string());
            set(t, "pod_container_init", "false");
            return;
        }
    }
}

// Endpoints role.

fn endpoints(e: &Endpoints, attach: Attach, lookup: &mut dyn Lookup) -> (Set, Vec<Set>) {
    let ns = &e.metadata.namespace;
    let mut labels = Set::new();
    set(&mut labels, "namespace", ns.clone());
    if let Some(obj) = lookup.get(Kind::Service, &key(ns, &e.metadata.name))
        && let Object::Service(s) = &*obj
    {
        labels.extend(service_labels(s));
    }
    object_meta(&mut labels, &e.metadata, "endpoints");
    if attach.namespace {
        namespace_labels(&mut labels, ns, lookup);
    }
    let mut targets = Vec::new();
    let mut seen: Vec<(Arc<Object>, Vec<i32>)> = Vec::new();
    for subset in &e.subsets {
        for port in &subset.ports {
            let ready = subset.addresses.iter().map(|a| (a, "true"));
            let not_ready = subset.not_ready_addresses.iter().map(|a| (a, "false"));
            for (addr, ready) in ready.chain(not_ready) {
                let mut t = Set::new();
                t.insert(ADDRESS.into(), join_host_port(&addr.ip, port.port));
                set(&mut t, "endpoint_port_name", port.name.clone());
                set(&mut t, "endpoint_port_protocol", port.protocol.clone());
                set(&mut t, "endpoint_ready", ready);
                if let Some(r) = &addr.target_ref {
                    set(&mut t, "endpoint_address_target_kind", r.kind.clone());
                    set(&mut t, "endpoint_address_target_name", r.name.clone());
                }
                if let Some(n) = &addr.node_name {
                    set(&mut t, "endpoint_node_name", n.clone());
                }
                if !addr.hostname.is_empty() {
                    set(&mut t, "endpoint_hostname", addr.hostname.clone());
                }
                if attach.node {
                    let node = addr.node_name.as_deref().or_else(|| {
                        addr.target_ref
                            .as_ref()
                            .filter(|r| r.kind == "Node")
                            .map(|r| r.name.as_str())
                    });
                    node_labels(&mut t, node, lookup);
                }
                if let Some(pod) = resolve_pod(addr.target_ref.as_ref(), lookup) {
                    let p = as_pod(&pod);
                    t.extend(pod_labels(p));
                    container_port_labels(&mut t, p, port.port, &port.protocol);
                    note_seen(&mut seen, &pod, port.port);
                }
                targets.push(t);
            }
        }
    }
    unbound_ports(&seen, &mut targets);
    (labels, targets)
}

// EndpointSlice role.

fn endpoint_slice(e: &EndpointSlice, attach: Attach, lookup: &mut dyn Lookup) -> (Set, Vec<Set>) {
    let ns = &e.metadata.namespace;
    let mut labels = Set::new();
    set(&mut labels, "namespace", ns.clone());
    set(
        &mut labels,
        "endpointslice_address_type",
        e.address_type.clone(),
    );
    object_meta(&mut labels, &e.metadata, "endpointslice");
    if let Some(svc) = e.metadata.labels.get("kubernetes.io/service-name")
        && let Some(obj) = lookup.get(Kind::Service, &key(ns, svc))
        && let Object::Service(s) = &*obj
    {
        labels.extend(service_labels(s));
    }
    if attach.namespace {
        namespace_labels(&mut labels, ns, lookup);
    }
    let mut targets = Vec::new();
    let mut seen: Vec<(Arc<Object>, Vec<i32>)> = Vec::new();
    for ep in &e.endpoints {
        for port in &e.ports {
            for addr in &ep.addresses {
                let mut t = Set::new();
                let address = match port.port {
                    Some(p) => join_host_port(addr, p),
                    None => addr.clone(),
                };
                t.insert(ADDRESS.into(), address);
                if let Some(n) = &port.name {
                    set(&mut t, "endpointslice_port_name", n.clone());
                }
                if let Some(p) = &port.protocol {
                    set(&mut t, "endpointslice_port_protocol", p.clone());
                }
                if let Some(p) = port.port {
                    set(&mut t, "endpointslice_port", p.to_string());
                }
                if let Some(p) = &port.app_protocol {
                    set(&mut t, "endpointslice_port_app_protocol", p.clone());
                }
                let c = &ep.conditions;
                for (name, v) in [
                    ("ready", c.ready),
                    ("serving", c.serving),
                    ("terminating", c.terminating),
                ] {
                    if let Some(v) = v {
                        set(
                            &mut t,
                            &format!("endpointslice_endpoint_conditions_{name}"),
                            v.to_string(),
                        );
                    }
                }
                if let Some(h) = &ep.hostname {
                    set(&mut t, "endpointslice_endpoint_hostname", h.clone());
                }
                if let Some(r) = &ep.target_ref {
                    set(&mut t, "endpointslice_address_target_kind", r.kind.clone());
                    set(&mut t, "endpointslice_address_target_name", r.name.clone());
                }
                if let Some(n) = &ep.node_name {
                    set(&mut t, "endpointslice_endpoint_node_name", n.clone());
                }
                if let Some(z) = &ep.zone {
                    set(&mut t, "endpointslice_endpoint_zone", z.clone());
                }
                for (k, v) in &ep.deprecated_topology {
                    let n = sanitize(k);
                    set(
                        &mut t,
                        &format!("endpointslice_endpoint_topology_{n}"),
                        v.clone(),
                    );
                    set(
                        &mut t,
                        &format!("endpointslice_endpoint_topology_present_{n}"),
                        "true",
                    );
                }
                if attach.node {
                    let node = match &ep.target_ref {
                        Some(r) if r.kind == "Node" => Some(r.name.as_str()),
                        _ => ep.node_name.as_deref(),
                    };
                    node_labels(&mut t, node, lookup);
                }
                if let Some(pod) = resolve_pod(ep.target_ref.as_ref(), lookup) {
                    let p = as_pod(&pod);
                    t.extend(pod_labels(p));
                    if let Some(number) = port.port {
                        let protocol = p
                            .spec
                            .containers
                            .iter()
                            .flat_map(|c| &c.ports)
                            .find(|cp| cp.container_port == number)
                            .map(|cp| cp.protocol.clone())
                            .unwrap_or_default();
                        container_port_labels(&mut t, p, number, &protocol);
                        note_seen(&mut seen, &pod, number);
                    } else {
                        note_seen(&mut seen, &pod, -1);
                    }
                }
                targets.push(t);
            }
        }
    }
    unbound_ports(&seen, &mut targets);
    (labels, targets)
}

// Node role.

/// The node's address by Kubernetes' preference, and every address by type.
fn node_address(n: &Node) -> Option<(String, BTreeMap<String, String>)> {
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for a in &n.status.addresses {
        first
            .entry(a.kind.clone())
            .or_insert_with(|| a.address.clone());
    }
    let preferred = [
        "InternalIP",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
        "LegacyHostIP",
        "Hostname",
    ]
    .iter()
    .find_map(|k| first.get(*k).cloned())?;
    Some((preferred, first))
}

fn node(n: &Node) -> Option<(Set, Vec<Set>)> {
    let mut labels = Set::new();
    set(&mut labels, "node_provider_id", n.spec.provider_id.clone());
    object_meta(&mut labels, &n.metadata, "node");
    let Some((addr, by_type)) = node_address(n) else {
        crate::log!(
            crate::log::Level::Warn,
            "discovery",
            "No node address found",
            node = n.metadata.name
        );
        return None;
    };
    let mut t = Set::new();
    t.insert(
        ADDRESS.into(),
        join_host_port(&addr, n.status.daemon_endpoints.kubelet_endpoint.port),
    );
    t.insert("instance".into(), n.metadata.name.clone());
    for (kind, a) in by_type {
        t.insert(sanitize(&format!("{P}node_address_{kind}")), a);
    }
    Some((labels, vec![t]))
}

// Ingress role.

/// Whether `host` matches the TLS host `pattern` (equal, or a `*.` wildcard of the same
/// depth).
fn matches_host(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.first() == Some(&"*") && p.len() == h.len() && p[1..] == h[1..]
}

fn ingress(i: &Ingress, attach: Attach, lookup: &mut dyn Lookup) -> (Set, Vec<Set>) {
    let mut labels = Set::new();
    set(&mut labels, "namespace", i.metadata.namespace.clone());
    if let Some(c) = &i.spec.ingress_class_name {
        set(&mut labels, "ingress_class_name", c.clone());
    }
    object_meta(&mut labels, &i.metadata, "ingress");
    if attach.namespace {
        namespace_labels(&mut labels, &i.metadata.namespace, lookup);
    }
    let tls_hosts: Vec<&str> = i
        .spec
        .tls
        .iter()
        .flat_map(|t| t.hosts.iter().map(String::as_str))
        .collect();
    let mut targets = Vec::new();
    for rule in &i.spec.rules {
        let scheme = if tls_hosts.iter().any(|p| matches_host(p, &rule.host)) {
            "https"
        } else {
            "http"
        };
        let paths: Vec<String> = match &rule.http {
            None => vec!["/".to_string()],
            Some(h) => h
                .paths
                .iter()
                .map(|p| {
                    if p.path.is_empty() {
                        "/".to_string()
                    } else {
                        p.path.clone()
                    }
                })
                .collect(),
        };
        for path in paths {
            let mut t = Set::new();
            t.insert(ADDRESS.into(), rule.host.clone());
            set(&mut t, "ingress_scheme", scheme);
            set(&mut t, "ingress_host", rule.host.clone());
            set(&mut t, "ingress_path", path);
            targets.push(t);
        }
    }
    (labels, targets)
}
