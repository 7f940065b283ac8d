//! Prometheus' `discovery/kubernetes/*_test.go` cases as tables: the same objects (written as
//! the API serves them, JSON) in, the same groups and labels out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::objects::{Kind, Object};
use super::targets::{self, Attach, Lookup};
use crate::config::KubeRole;

/// A lookup over fixed objects.
#[derive(Default)]
struct Objects(HashMap<(Kind, String), Arc<Object>>);

impl Objects {
    fn with(mut self, kind: Kind, json: &str) -> Objects {
        let obj = parse(kind, json);
        self.0.insert((kind, obj.key()), Arc::new(obj));
        self
    }
}

impl Lookup for Objects {
    fn get(&mut self, kind: Kind, key: &str) -> Option<Arc<Object>> {
        self.0.get(&(kind, key.to_string())).cloned()
    }
}

fn parse(kind: Kind, json: &str) -> Object {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).unwrap();
    kind.parse(&raw).unwrap()
}

type Set = BTreeMap<String, String>;

fn set(pairs: &[(&str, &str)]) -> Set {
    pairs
        .iter()
        .map(|(k, v)| {
            let k = if k.starts_with("__") {
                k.to_string()
            } else {
                format!("__meta_kubernetes_{k}")
            };
            (k, v.to_string())
        })
        .collect()
}

/// Builds the group of `json` under `role` and compares it with the expected source, group
/// labels and targets (each a label set, in order).
fn check(
    role: KubeRole,
    json: &str,
    attach: Attach,
    lookup: &mut Objects,
    source: &str,
    labels: Set,
    targets: Vec<Set>,
) {
    let obj = parse(Kind::of(role), json);
    let g = targets::build(role, &obj, attach, lookup).expect("a group");
    assert_eq!(g.source, source);
    let got_labels: Set = g.labels.into_iter().collect();
    assert_eq!(got_labels, labels, "group labels of {source}");
    let got: Vec<Set> = g
        .targets
        .into_iter()
        .map(|t| t.into_iter().collect())
        .collect();
    assert_eq!(got.len(), targets.len(), "targets of {source}: {got:#?}");
    for (i, (g, e)) in got.iter().zip(&targets).enumerate() {
        assert_eq!(g, e, "target {i} of {source}");
    }
}

const MULTI_PORT_POD: &str = r#"{
  "metadata": {"name": "testpod", "namespace": "default", "uid": "abc123",
    "labels": {"test/label": "testvalue"},
    "annotations": {"test/annotation": "testannotationvalue"},
    "ownerReferences": [{"kind": "testcontrollerkind", "name": "testcontrollername", "controller": true}]},
  "spec": {"nodeName": "testnode", "containers": [
    {"name": "testcontainer0", "image": "testcontainer0:latest", "ports": [
      {"name": "testport0", "protocol": "TCP", "containerPort": 9000},
      {"name": "testport1", "protocol": "UDP", "containerPort": 9001}]},
    {"name": "testcontainer1", "image": "testcontainer1:latest"}]},
  "status": {"podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
    "conditions": [{"type": "Ready", "status": "True"}],
    "containerStatuses": [
      {"name": "testcontainer0", "containerID": "docker://a1b2c3d4e5f6"},
      {"name": "testcontainer1", "containerID": "containerd://6f5e4d3c2b1a"}]}
}"#;

fn simple_pod(ns: &str) -> String {
    format!(
        r#"{{
  "metadata": {{"name": "testpod", "namespace": "{ns}", "uid": "abc123"}},
  "spec": {{"nodeName": "testnode", "containers": [
    {{"name": "testcontainer", "image": "testcontainer:latest",
     "ports": [{{"name": "testport", "protocol": "TCP", "containerPort": 9000}}]}}]}},
  "status": {{"podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Running",
    "conditions": [{{"type": "Ready", "status": "True"}}],
    "containerStatuses": [{{"name": "testcontainer", "containerID": "docker://a1b2c3d4e5f6"}}]}}
}}"#
    )
}

fn simple_pod_group(ns: &str) -> (Set, Vec<Set>) {
    (
        set(&[
            ("pod_name", "testpod"),
            ("namespace", ns),
            ("pod_node_name", "testnode"),
            ("pod_ip", "1.2.3.4"),
            ("pod_host_ip", "2.3.4.5"),
            ("pod_ready", "true"),
            ("pod_phase", "Running"),
            ("pod_uid", "abc123"),
        ]),
        vec![set(&[
            ("__address__", "1.2.3.4:9000"),
            ("pod_container_name", "testcontainer"),
            ("pod_container_image", "testcontainer:latest"),
            ("pod_container_port_name", "testport"),
            ("pod_container_port_number", "9000"),
            ("pod_container_port_protocol", "TCP"),
            ("pod_container_init", "false"),
            ("pod_container_id", "docker://a1b2c3d4e5f6"),
        ])],
    )
}

#[test]
fn pod_multi_port() {
    // TestPodDiscoveryBeforeRun.
    let target = |addr, port_name, number, protocol| {
        set(&[
            ("__address__", addr),
            ("pod_container_name", "testcontainer0"),
            ("pod_container_image", "testcontainer0:latest"),
            ("pod_container_port_name", port_name),
            ("pod_container_port_number", number),
            ("pod_container_port_protocol", protocol),
            ("pod_container_init", "false"),
            ("pod_container_id", "docker://a1b2c3d4e5f6"),
        ])
    };
    check(
        KubeRole::Pod,
        MULTI_PORT_POD,
        Attach::default(),
        &mut Objects::default(),
        "pod/default/testpod",
        set(&[
            ("pod_name", "testpod"),
            ("namespace", "default"),
            ("pod_label_test_label", "testvalue"),
            ("pod_labelpresent_test_label", "true"),
            ("pod_annotation_test_annotation", "testannotationvalue"),
            ("pod_annotationpresent_test_annotation", "true"),
            ("pod_node_name", "testnode"),
            ("pod_ip", "1.2.3.4"),
            ("pod_host_ip", "2.3.4.5"),
            ("pod_ready", "true"),
            ("pod_phase", "Running"),
            ("pod_uid", "abc123"),
            ("pod_controller_kind", "testcontrollerkind"),
            ("pod_controller_name", "testcontrollername"),
        ]),
        vec![
            target("1.2.3.4:9000", "testport0", "9000", "TCP"),
            target("1.2.3.4:9001", "testport1", "9001", "UDP"),
            set(&[
                ("__address__", "1.2.3.4"),
                ("pod_container_name", "testcontainer1"),
                ("pod_container_image", "testcontainer1:latest"),
                ("pod_container_init", "false"),
                ("pod_container_id", "containerd://6f5e4d3c2b1a"),
            ]),
        ],
    );
}

#[test]
fn pod_init_container_and_not_ready() {
    // TestPodDiscoveryInitContainer.
    let json = r#"{
  "metadata": {"name": "testpod", "namespace": "default", "uid": "abc123"},
  "spec": {"nodeName": "testnode",
    "containers": [{"name": "testcontainer", "image": "testcontainer:latest",
      "ports": [{"name": "testport", "protocol": "TCP", "containerPort": 9000}]}],
    "initContainers": [{"name": "initcontainer", "image": "initcontainer:latest"}]},
  "status": {"podIP": "1.2.3.4", "hostIP": "2.3.4.5", "phase": "Pending",
    "conditions": [{"type": "Ready", "status": "False"}],
    "containerStatuses": [{"name": "testcontainer", "containerID": "docker://a1b2c3d4e5f6"}],
    "initContainerStatuses": [{"name": "initcontainer", "containerID": "containerd://6f5e4d3c2b1a"}]}
}"#;
    let (mut labels, mut targets) = simple_pod_group("default");
    labels.extend(set(&[("pod_phase", "Pending"), ("pod_ready", "false")]));
    targets.push(set(&[
        ("__address__", "1.2.3.4"),
        ("pod_container_name", "initcontainer"),
        ("pod_container_image", "initcontainer:latest"),
        ("pod_container_init", "true"),
        ("pod_container_id", "containerd://6f5e4d3c2b1a"),
    ]));
    check(
        KubeRole::Pod,
        json,
        Attach::default(),
        &mut Objects::default(),
        "pod/default/testpod",
        labels,
        targets,
    );
}

#[test]
fn pod_without_ip_has_an_empty_group() {
    // TestPodDiscoveryUpdateEmptyPodIP.
    let json = simple_pod("default").replace(r#""podIP": "1.2.3.4""#, r#""podIP": """#);
    check(
        KubeRole::Pod,
        &json,
        Attach::default(),
        &mut Objects::default(),
        "pod/default/testpod",
        Set::new(),
        vec![],
    );
}

#[test]
fn pod_with_node_and_namespace_metadata() {
    // TestPodDiscoveryWithNodeMetadata, TestPodDiscoveryWithNamespaceMetadata.
    let mut objects = Objects::default()
        .with(
            Kind::Node,
            r#"{"metadata": {"name": "testnode", "labels": {"l1": "v1"}}}"#,
        )
        .with(
            Kind::Namespace,
            r#"{"metadata": {"name": "test-ns",
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {"maintainer": "devops", "build": "v3.4.5"}}}"#,
        );
    let (mut labels, targets) = simple_pod_group("test-ns");
    labels.extend(set(&[
        ("node_name", "testnode"),
        ("node_label_l1", "v1"),
        ("node_labelpresent_l1", "true"),
        ("namespace_annotation_maintainer", "devops"),
        ("namespace_annotationpresent_maintainer", "true"),
        ("namespace_annotation_build", "v3.4.5"),
        ("namespace_annotationpresent_build", "true"),
        ("namespace_label_app", "web"),
        ("namespace_labelpresent_app", "true"),
        ("namespace_label_tier", "frontend"),
        ("namespace_labelpresent_tier", "true"),
    ]));
    check(
        KubeRole::Pod,
        &simple_pod("test-ns"),
        Attach {
            node: true,
            namespace: true,
        },
        &mut objects,
        "pod/test-ns/testpod",
        labels,
        targets,
    );
}

const ENDPOINTS: &str = r#"{
  "metadata": {"name": "testendpoints", "namespace": "default",
    "annotations": {"test.annotation": "test"}},
  "subsets": [
    {"addresses": [{"ip": "1.2.3.4", "hostname": "testendpoint1", "nodeName": "foobar"}],
     "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}]},
    {"addresses": [{"ip": "2.3.4.5"}], "notReadyAddresses": [{"ip": "2.3.4.5"}],
     "ports": [{"name": "testport", "port": 9001, "protocol": "TCP"}]},
    {"addresses": [{"ip": "6.7.8.9", "targetRef": {"kind": "Node", "name": "barbaz"}}],
     "ports": [{"name": "testport", "port": 9002, "protocol": "TCP"}]}
  ]
}"#;

fn endpoints_targets() -> Vec<Set> {
    let port = [
        ("endpoint_port_name", "testport"),
        ("endpoint_port_protocol", "TCP"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let mut s = set(&port);
        s.extend(set(extra));
        s
    };
    vec![
        with(&[
            ("__address__", "1.2.3.4:9000"),
            ("endpoint_hostname", "testendpoint1"),
            ("endpoint_node_name", "foobar"),
            ("endpoint_ready", "true"),
        ]),
        with(&[("__address__", "2.3.4.5:9001"), ("endpoint_ready", "true")]),
        with(&[("__address__", "2.3.4.5:9001"), ("endpoint_ready", "false")]),
        with(&[
            ("__address__", "6.7.8.9:9002"),
            ("endpoint_address_target_kind", "Node"),
            ("endpoint_address_target_name", "barbaz"),
            ("endpoint_ready", "true"),
        ]),
    ]
}

#[test]
fn endpoints_ready_and_not_ready_addresses() {
    // TestEndpointsDiscoveryBeforeRun.
    check(
        KubeRole::Endpoints,
        ENDPOINTS,
        Attach::default(),
        &mut Objects::default(),
        "endpoints/default/testendpoints",
        set(&[
            ("namespace", "default"),
            ("endpoints_name", "testendpoints"),
            ("endpoints_annotation_test_annotation", "test"),
            ("endpoints_annotationpresent_test_annotation", "true"),
        ]),
        endpoints_targets(),
    );
}

#[test]
fn endpoints_with_their_service() {
    // TestEndpointsDiscoveryWithService.
    let mut objects = Objects::default().with(
        Kind::Service,
        r#"{"metadata": {"name": "testendpoints", "namespace": "default",
            "labels": {"app/name": "test"}}}"#,
    );
    check(
        KubeRole::Endpoints,
        ENDPOINTS,
        Attach::default(),
        &mut objects,
        "endpoints/default/testendpoints",
        set(&[
            ("namespace", "default"),
            ("endpoints_name", "testendpoints"),
            ("service_label_app_name", "test"),
            ("service_labelpresent_app_name", "true"),
            ("service_name", "testendpoints"),
            ("endpoints_annotation_test_annotation", "test"),
            ("endpoints_annotationpresent_test_annotation", "true"),
        ]),
        endpoints_targets(),
    );
}

const BACKING_POD: &str = r#"{
  "metadata": {"name": "testpod", "namespace": "default", "uid": "deadbeef"},
  "spec": {"nodeName": "testnode", "containers": [
    {"name": "c1", "image": "c1:latest", "ports": [{"name": "mainport", "containerPort": 9000, "protocol": "TCP"}]},
    {"name": "c2", "image": "c2:latest", "ports": [{"name": "sideport", "containerPort": 9001, "protocol": "TCP"}]}]},
  "status": {"hostIP": "2.3.4.5", "podIP": "1.2.3.4"}
}"#;

fn backing_pod_labels() -> Set {
    set(&[
        ("pod_name", "testpod"),
        ("pod_ip", "1.2.3.4"),
        ("pod_ready", "unknown"),
        ("pod_phase", ""),
        ("pod_node_name", "testnode"),
        ("pod_host_ip", "2.3.4.5"),
        ("pod_uid", "deadbeef"),
        ("pod_container_init", "false"),
    ])
}

fn side_port_target() -> Set {
    let mut t = backing_pod_labels();
    t.extend(set(&[
        ("__address__", "1.2.3.4:9001"),
        ("pod_container_name", "c2"),
        ("pod_container_image", "c2:latest"),
        ("pod_container_port_name", "sideport"),
        ("pod_container_port_number", "9001"),
        ("pod_container_port_protocol", "TCP"),
    ]));
    t
}

#[test]
fn endpoints_with_pods_and_their_other_ports() {
    // TestEndpointsDiscoveryAdd.
    let json = r#"{
  "metadata": {"name": "testendpoints", "namespace": "default"},
  "subsets": [{"addresses": [{"ip": "4.3.2.1",
      "targetRef": {"kind": "Pod", "name": "testpod", "namespace": "default"}}],
    "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}]}]
}"#;
    let mut objects = Objects::default().with(Kind::Pod, BACKING_POD);
    let mut main = backing_pod_labels();
    main.extend(set(&[
        ("__address__", "4.3.2.1:9000"),
        ("endpoint_port_name", "testport"),
        ("endpoint_port_protocol", "TCP"),
        ("endpoint_ready", "true"),
        ("endpoint_address_target_kind", "Pod"),
        ("endpoint_address_target_name", "testpod"),
        ("pod_container_name", "c1"),
        ("pod_container_image", "c1:latest"),
        ("pod_container_port_name", "mainport"),
        ("pod_container_port_number", "9000"),
        ("pod_container_port_protocol", "TCP"),
    ]));
    check(
        KubeRole::Endpoints,
        json,
        Attach::default(),
        &mut objects,
        "endpoints/default/testendpoints",
        set(&[
            ("endpoints_name", "testendpoints"),
            ("namespace", "default"),
        ]),
        vec![main, side_port_target()],
    );
}

#[test]
fn endpoint_slice_conditions_zones_and_topology() {
    // TestEndpointSliceDiscoveryBeforeRun.
    let json = r#"{
  "metadata": {"name": "testendpoints", "namespace": "default",
    "labels": {"kubernetes.io/service-name": "testendpoints"},
    "annotations": {"test.annotation": "test"}},
  "addressType": "IPv4",
  "ports": [{"name": "testport", "port": 9000, "protocol": "TCP", "appProtocol": "http"}],
  "endpoints": [
    {"addresses": ["1.2.3.4"], "conditions": {"ready": true, "serving": true, "terminating": false},
     "hostname": "testendpoint1", "targetRef": {}, "nodeName": "foobar",
     "deprecatedTopology": {"topology": "value"}, "zone": "us-east-1a"},
    {"addresses": ["2.3.4.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
     "zone": "us-east-1b"},
    {"addresses": ["3.4.5.6"], "conditions": {"ready": false, "serving": true, "terminating": true},
     "zone": "us-east-1c"},
    {"addresses": ["4.5.6.7"], "conditions": {"ready": true, "serving": true, "terminating": false},
     "targetRef": {"kind": "Node", "name": "barbaz"}, "zone": "us-east-1a"}
  ]
}"#;
    let port = [
        ("endpointslice_port", "9000"),
        ("endpointslice_port_app_protocol", "http"),
        ("endpointslice_port_name", "testport"),
        ("endpointslice_port_protocol", "TCP"),
    ];
    let with = |extra: &[(&str, &str)], ready: &str, terminating: &str| {
        let mut s = set(&port);
        s.extend(set(extra));
        s.extend(set(&[
            ("endpointslice_endpoint_conditions_ready", ready),
            ("endpointslice_endpoint_conditions_serving", "true"),
            ("endpointslice_endpoint_conditions_terminating", terminating),
        ]));
        s
    };
    check(
        KubeRole::EndpointSlice,
        json,
        Attach::default(),
        &mut Objects::default(),
        "endpointslice/default/testendpoints",
        set(&[
            ("endpointslice_address_type", "IPv4"),
            ("namespace", "default"),
            ("endpointslice_name", "testendpoints"),
            (
                "endpointslice_label_kubernetes_io_service_name",
                "testendpoints",
            ),
            (
                "endpointslice_labelpresent_kubernetes_io_service_name",
                "true",
            ),
            ("endpointslice_annotation_test_annotation", "test"),
            ("endpointslice_annotationpresent_test_annotation", "true"),
        ]),
        vec![
            with(
                &[
                    ("__address__", "1.2.3.4:9000"),
                    ("endpointslice_address_target_kind", ""),
                    ("endpointslice_address_target_name", ""),
                    ("endpointslice_endpoint_hostname", "testendpoint1"),
                    ("endpointslice_endpoint_node_name", "foobar"),
                    ("endpointslice_endpoint_topology_present_topology", "true"),
                    ("endpointslice_endpoint_topology_topology", "value"),
                    ("endpointslice_endpoint_zone", "us-east-1a"),
                ],
                "true",
                "false",
            ),
            with(
                &[
                    ("__address__", "2.3.4.5:9000"),
                    ("endpointslice_endpoint_zone", "us-east-1b"),
                ],
                "true",
                "false",
            ),
            with(
                &[
                    ("__address__", "3.4.5.6:9000"),
                    ("endpointslice_endpoint_zone", "us-east-1c"),
                ],
                "false",
                "true",
            ),
            with(
                &[
                    ("__address__", "4.5.6.7:9000"),
                    ("endpointslice_address_target_kind", "Node"),
                    ("endpointslice_address_target_name", "barbaz"),
                    ("endpointslice_endpoint_zone", "us-east-1a"),
                ],
                "true",
                "false",
            ),
        ],
    );
}

#[test]
fn endpoint_slice_with_pods_and_their_other_ports() {
    // TestEndpointSliceDiscoveryAdd.
    let json = r#"{
  "metadata": {"name": "testendpoints", "namespace": "default"},
  "addressType": "IPv4",
  "ports": [{"name": "testport", "port": 9000, "protocol": "TCP"}],
  "endpoints": [{"addresses": ["4.3.2.1"],
    "targetRef": {"kind": "Pod", "name": "testpod", "namespace": "default"},
    "conditions": {"ready": false}}]
}"#;
    let mut objects = Objects::default().with(Kind::Pod, BACKING_POD);
    let mut main = backing_pod_labels();
    main.extend(set(&[
        ("__address__", "4.3.2.1:9000"),
        ("endpointslice_address_target_kind", "Pod"),
        ("endpointslice_address_target_name", "testpod"),
        ("endpointslice_endpoint_conditions_ready", "false"),
        ("endpointslice_port", "9000"),
        ("endpointslice_port_name", "testport"),
        ("endpointslice_port_protocol", "TCP"),
        ("pod_container_name", "c1"),
        ("pod_container_image", "c1:latest"),
        ("pod_container_port_name", "mainport"),
        ("pod_container_port_number", "9000"),
        ("pod_container_port_protocol", "TCP"),
    ]));
    check(
        KubeRole::EndpointSlice,
        json,
        Attach::default(),
        &mut objects,
        "endpointslice/default/testendpoints",
        set(&[
            ("endpointslice_address_type", "IPv4"),
            ("endpointslice_name", "testendpoints"),
            ("namespace", "default"),
        ]),
        vec![main, side_port_target()],
    );
}

#[test]
fn service_ports_and_types() {
    // TestServiceDiscoveryAdd (multi-port, ClusterIP) and the ExternalName and LoadBalancer
    // cases of service_test.go.
    let json = r#"{
  "metadata": {"name": "testservice", "namespace": "default",
    "labels": {"test-label": "testvalue"}, "annotations": {"test-annotation": "testannotationvalue"}},
  "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "ports": [
    {"name": "testport0", "protocol": "TCP", "port": 30900},
    {"name": "testport1", "protocol": "UDP", "port": 30901}]}
}"#;
    let target = |port: &str, name: &str, protocol: &str| {
        set(&[
            ("__address__", &format!("testservice.default.svc:{port}")),
            ("service_type", "ClusterIP"),
            ("service_cluster_ip", "10.0.0.1"),
            ("service_port_name", name),
            ("service_port_number", port),
            ("service_port_protocol", protocol),
        ])
    };
    let labels = set(&[
        ("service_name", "testservice"),
        ("namespace", "default"),
        ("service_label_test_label", "testvalue"),
        ("service_labelpresent_test_label", "true"),
        ("service_annotation_test_annotation", "testannotationvalue"),
        ("service_annotationpresent_test_annotation", "true"),
    ]);
    check(
        KubeRole::Service,
        json,
        Attach::default(),
        &mut Objects::default(),
        "svc/default/testservice",
        labels,
        vec![
            target("30900", "testport0", "TCP"),
            target("30901", "testport1", "UDP"),
        ],
    );
    let external = r#"{"metadata": {"name": "testservice-external", "namespace": "default"},
  "spec": {"type": "ExternalName", "externalName": "FooExternalName",
    "ports": [{"name": "testport", "protocol": "TCP", "port": 31900}]}}"#;
    check(
        KubeRole::Service,
        external,
        Attach::default(),
        &mut Objects::default(),
        "svc/default/testservice-external",
        set(&[
            ("service_name", "testservice-external"),
            ("namespace", "default"),
        ]),
        vec![set(&[
            ("__address__", "testservice-external.default.svc:31900"),
            ("service_type", "ExternalName"),
            ("service_port_name", "testport"),
            ("service_port_number", "31900"),
            ("service_port_protocol", "TCP"),
            ("service_external_name", "FooExternalName"),
        ])],
    );
    let lb = r#"{"metadata": {"name": "testservice-loadbalancer", "namespace": "default"},
  "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.1", "loadBalancerIP": "127.0.0.1",
    "ports": [{"name": "testport", "protocol": "TCP", "port": 31900}]}}"#;
    check(
        KubeRole::Service,
        lb,
        Attach::default(),
        &mut Objects::default(),
        "svc/default/testservice-loadbalancer",
        set(&[
            ("service_name", "testservice-loadbalancer"),
            ("namespace", "default"),
        ]),
        vec![set(&[
            ("__address__", "testservice-loadbalancer.default.svc:31900"),
            ("service_type", "LoadBalancer"),
            ("service_port_name", "testport"),
            ("service_port_number", "31900"),
            ("service_port_protocol", "TCP"),
            ("service_cluster_ip", "10.0.0.1"),
            ("service_loadbalancer_ip", "127.0.0.1"),
        ])],
    );
}

#[test]
fn node_address_preference_and_labels() {
    // TestNodeDiscoveryBeforeStart: InternalIP first, the kubelet port, `instance`.
    let json = r#"{
  "metadata": {"name": "test", "labels": {"test-label": "testvalue"},
    "annotations": {"test-annotation": "testannotationvalue"}},
  "status": {"addresses": [{"type": "InternalIP", "address": "1.2.3.4"}],
    "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}
}"#;
    check(
        KubeRole::Node,
        json,
        Attach::default(),
        &mut Objects::default(),
        "node/test",
        set(&[
            ("node_name", "test"),
            ("node_provider_id", ""),
            ("node_label_test_label", "testvalue"),
            ("node_labelpresent_test_label", "true"),
            ("node_annotation_test_annotation", "testannotationvalue"),
            ("node_annotationpresent_test_annotation", "true"),
        ]),
        vec![
            set(&[
                ("__address__", "1.2.3.4:10250"),
                ("__instance__", "test"),
                ("node_address_InternalIP", "1.2.3.4"),
            ])
            .into_iter()
            .map(|(k, v)| match k.as_str() {
                "__instance__" => ("instance".to_string(), v),
                _ => (k, v),
            })
            .collect(),
        ],
    );
    // ExternalIP comes before Hostname; no address at all gives no group.
    let external = parse(
        Kind::Node,
        r#"{"metadata": {"name": "n"}, "status": {"addresses": [
        {"type": "Hostname", "address": "host-n"}, {"type": "ExternalIP", "address": "9.9.9.9"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}"#,
    );
    let g = targets::build(
        KubeRole::Node,
        &external,
        Attach::default(),
        &mut Objects::default(),
    )
    .unwrap();
    let t: Set = g.targets[0].iter().cloned().collect();
    assert_eq!(t["__address__"], "9.9.9.9:10250");
    assert_eq!(t["__meta_kubernetes_node_address_Hostname"], "host-n");
    let none = parse(Kind::Node, r#"{"metadata": {"name": "n"}}"#);
    assert!(
        targets::build(
            KubeRole::Node,
            &none,
            Attach::default(),
            &mut Objects::default()
        )
        .is_none()
    );
}

#[test]
fn ingress_hosts_paths_and_tls_schemes() {
    // The shape of TestIngressDiscoveryAdd: TLS by exact host or a `*.` wildcard of the same
    // depth; a rule without http gets the path "/".
    let json = r#"{
  "metadata": {"name": "testingress", "namespace": "default",
    "labels": {"test/label": "testvalue"}, "annotations": {"test/annotation": "testannotationvalue"}},
  "spec": {"ingressClassName": "testclass",
    "tls": [{"hosts": ["*.example.com", "testing.example.com"]}],
    "rules": [
      {"host": "example.com", "http": {"paths": [{"path": "/"}, {"path": "/foo"}]}},
      {"host": "test.example.com", "http": {"paths": [{}]}},
      {"host": "testing.example.com"},
      {"host": "a.b.example.com"}
    ]}
}"#;
    let target = |host: &str, scheme: &str, path: &str| {
        set(&[
            ("__address__", host),
            ("ingress_scheme", scheme),
            ("ingress_host", host),
            ("ingress_path", path),
        ])
    };
    check(
        KubeRole::Ingress,
        json,
        Attach::default(),
        &mut Objects::default(),
        "ingress/default/testingress",
        set(&[
            ("ingress_name", "testingress"),
            ("namespace", "default"),
            ("ingress_label_test_label", "testvalue"),
            ("ingress_labelpresent_test_label", "true"),
            ("ingress_annotation_test_annotation", "testannotationvalue"),
            ("ingress_annotationpresent_test_annotation", "true"),
            ("ingress_class_name", "testclass"),
        ]),
        vec![
            target("example.com", "http", "/"),
            target("example.com", "http", "/foo"),
            target("test.example.com", "https", "/"),
            target("testing.example.com", "https", "/"),
            target("a.b.example.com", "http", "/"),
        ],
    );
}

#[test]
fn label_names_are_sanitized_as_prometheus_does() {
    assert_eq!(
        targets::sanitize("app.kubernetes.io/name"),
        "app_kubernetes_io_name"
    );
    assert_eq!(targets::sanitize("a-b_c9"), "a_b_c9");
}

#[test]
fn collection_paths() {
    assert_eq!(Kind::Pod.path(""), "/api/v1/pods");
    assert_eq!(Kind::Pod.path("ns"), "/api/v1/namespaces/ns/pods");
    assert_eq!(Kind::Node.path("ns"), "/api/v1/nodes");
    assert_eq!(
        Kind::EndpointSlice.path("a"),
        "/apis/discovery.k8s.io/v1/namespaces/a/endpointslices"
    );
    assert_eq!(
        Kind::Ingress.path(""),
        "/apis/networking.k8s.io/v1/ingresses"
    );
}
