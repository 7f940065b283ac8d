//! The Kubernetes objects discovery reads, trimmed to the fields it uses: serde skips the
//! rest of each object as it parses, so the store holds only these (memory grows with the
//! objects watched, not with their full size).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::KubeRole;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Meta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub resource_version: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub owner_references: Vec<OwnerRef>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    pub controller: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

// Pods.

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Pod {
    pub metadata: Meta,
    pub spec: PodSpec,
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    pub node_name: String,
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerPort {
    pub name: String,
    pub container_port: i32,
    pub protocol: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    pub phase: String,
    #[serde(rename = "podIP")]
    pub pod_ip: String,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    pub conditions: Vec<Condition>,
    pub container_statuses: Vec<ContainerStatus>,
    pub init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    pub name: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
}

// Services.

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Service {
    pub metadata: Meta,
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: String,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: String,
    pub external_name: String,
    pub ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServicePort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
}

// Endpoints.

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Endpoints {
    pub metadata: Meta,
    pub subsets: Vec<EndpointSubset>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSubset {
    pub addresses: Vec<EndpointAddress>,
    pub not_ready_addresses: Vec<EndpointAddress>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointAddress {
    pub ip: String,
    pub hostname: String,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectRef>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointPort {
    pub name: String,
    pub port: i32,
    pub protocol: String,
    pub app_protocol: Option<String>,
}

// EndpointSlices (discovery.k8s.io/v1).

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSlice {
    pub metadata: Meta,
    pub address_type: String,
    pub endpoints: Vec<SliceEndpoint>,
    pub ports: Vec<SlicePort>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SliceEndpoint {
    pub addresses: Vec<String>,
    pub conditions: SliceConditions,
    pub hostname: Option<String>,
    pub target_ref: Option<ObjectRef>,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    pub deprecated_topology: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct SliceConditions {
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct SlicePort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
}

// Nodes.

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Node {
    pub metadata: Meta,
    pub spec: NodeSpec,
    pub status: NodeStatus,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    #[serde(rename = "providerID")]
    pub provider_id: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    pub addresses: Vec<NodeAddress>,
    pub daemon_endpoints: DaemonEndpoints,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct DaemonEndpoints {
    pub kubelet_endpoint: KubeletEndpoint,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct KubeletEndpoint {
    #[serde(rename = "Port")]
    pub port: i32,
}

// Ingresses (networking.k8s.io/v1).

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Ingress {
    pub metadata: Meta,
    pub spec: IngressSpec,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct IngressSpec {
    pub ingress_class_name: Option<String>,
    pub tls: Vec<IngressTls>,
    pub rules: Vec<IngressRule>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngressTls {
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngressRule {
    pub host: String,
    pub http: Option<IngressHttp>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngressHttp {
    pub paths: Vec<IngressPath>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct IngressPath {
    pub path: String,
}

// Namespaces.

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Namespace {
    pub metadata: Meta,
}

/// The kinds of object watched: each role's own, and the ones other roles look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Node,
    Ingress,
    Namespace,
}

impl Kind {
    /// The kind whose objects a role's targets come from.
    pub fn of(role: KubeRole) -> Kind {
        match role {
            KubeRole::Pod => Kind::Pod,
            KubeRole::Service => Kind::Service,
            KubeRole::Endpoints => Kind::Endpoints,
            KubeRole::EndpointSlice => Kind::EndpointSlice,
            KubeRole::Node => Kind::Node,
            KubeRole::Ingress => Kind::Ingress,
        }
    }

    /// The collection's path under the API server, in `namespace` (all when empty).
    pub fn path(self, namespace: &str) -> String {
        let (group, plural) = match self {
            Kind::Pod => ("/api/v1", "pods"),
            Kind::Service => ("/api/v1", "services"),
            Kind::Endpoints => ("/api/v1", "endpoints"),
            Kind::Node => ("/api/v1", "nodes"),
            Kind::Namespace => ("/api/v1", "namespaces"),
            Kind::EndpointSlice => ("/apis/discovery.k8s.io/v1", "endpointslices"),
            Kind::Ingress => ("/apis/networking.k8s.io/v1", "ingresses"),
        };
        if namespace.is_empty() || !self.namespaced() {
            format!("{group}/{plural}")
        } else {
            format!("{group}/namespaces/{namespace}/{plural}")
        }
    }

    /// Nodes and namespaces are cluster-wide.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Node | Kind::Namespace)
    }

    /// The role name in `prometheus_sd_kubernetes_events_total`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslice",
            Kind::Node => "node",
            Kind::Ingress => "ingress",
            Kind::Namespace => "namespace",
        }
    }

    pub const ALL: [Kind; 7] = [
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Ingress,
        Kind::Namespace,
    ];

    /// Parses one object of this kind from its JSON.
    pub fn parse(self, json: &serde_json::value::RawValue) -> Result<Object, serde_json::Error> {
        let s = json.get();
        Ok(match self {
            Kind::Pod => Object::Pod(serde_json::from_str(s)?),
            Kind::Service => Object::Service(serde_json::from_str(s)?),
            Kind::Endpoints => Object::Endpoints(serde_json::from_str(s)?),
            Kind::EndpointSlice => Object::EndpointSlice(serde_json::from_str(s)?),
            Kind::Node => Object::Node(serde_json::from_str(s)?),
            Kind::Ingress => Object::Ingress(serde_json::from_str(s)?),
            Kind::Namespace => Object::Namespace(serde_json::from_str(s)?),
        })
    }
}

/// One stored object.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
    Node(Node),
    Ingress(Ingress),
    Namespace(Namespace),
}

impl Object {
    pub fn meta(&self) -> &Meta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// The store key: `namespace/name`, or `name` for cluster-wide objects.
    pub fn key(&self) -> String {
        let m = self.meta();
        key(&m.namespace, &m.name)
    }
}

/// `namespace/name`, or `name` without a namespace (client-go's key).
pub fn key(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}
