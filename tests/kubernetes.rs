//! Kubernetes service discovery end to end: spate against a fake API server (tests/common/
//! kube.rs) serving real object JSON, in-cluster (service-account token and CA, over TLS) and
//! with `api_server`; Prometheus' example configuration and a Prometheus Operator one load
//! unchanged, discover, and scrape pods served by `spate bench targets`; list + watch keeps the
//! objects up to date in place and recovers from `410 Gone` and dropped watches.

mod common;

use std::path::Path;
use std::time::Duration;

use common::kube::{FakeKube, GoneAs};
use common::{
    Proc, Receiver, Spate, TempDir, TestPki, TlsFront, free_port_range, http_get, wait_for,
};
use serde_json::{Value, json};

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn object(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/kubernetes")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A pod from the recorded one: its name, IP, metrics port, labels and readiness.
fn pod(name: &str, ip: &str, port: u16, app: &str, ready: bool) -> Value {
    let mut p = object("pod.json");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["uid"] = json!(format!("uid-{name}"));
    p["metadata"]["labels"]["app"] = json!(app);
    p["status"]["podIP"] = json!(ip);
    p["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(port);
    p["status"]["conditions"][1]["status"] = json!(if ready { "True" } else { "False" });
    p
}

/// Active targets of `job` as their label sets, and their discovered labels.
fn active(spate: &Spate, job: &str) -> Vec<(Value, Value, String)> {
    let Some((_, body)) = http_get(&spate.web, "/api/v1/targets") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["scrapePool"] == job)
        .map(|t| {
            (
                t["labels"].clone(),
                t["discoveredLabels"].clone(),
                t["health"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn instances(spate: &Spate, job: &str) -> Vec<String> {
    let mut v: Vec<String> = active(spate, job)
        .into_iter()
        .map(|(l, _, _)| l["instance"].as_str().unwrap_or("").to_string())
        .collect();
    v.sort();
    v
}

/// The cluster a test runs against: a fake API server behind TLS, a service account for it,
/// and `n` bench targets to stand in for pods.
struct Cluster {
    kube: FakeKube,
    _front: TlsFront,
    front_port: u16,
    account: TempDir,
    _pki: TestPki,
    _targets: Proc,
    base: u16,
}

impl Cluster {
    fn start(n: u16) -> Option<Cluster> {
        let pki = TestPki::make()?;
        let kube = FakeKube::start(Some("sa-token-1"));
        let front = TlsFront::start(&pki, kube.addr);
        let account = TempDir::new("serviceaccount");
        std::fs::write(account.path().join("token"), "sa-token-1").unwrap();
        std::fs::copy(pki.path("ca.crt"), account.path().join("ca.crt")).unwrap();
        std::fs::write(account.path().join("namespace"), "monitoring").unwrap();
        let base = free_port_range(n);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spate"));
        cmd.args([
            "bench".to_string(),
            "targets".into(),
            format!("--targets={n}"),
            "--series=20".into(),
            format!("--listen=127.0.0.1:{base}"),
        ]);
        let targets = Proc::spawn("targets", &mut cmd, account.path());
        Some(Cluster {
            front_port: front.addr.port(),
            kube,
            _front: front,
            account,
            _pki: pki,
            _targets: targets,
            base,
        })
    }

    /// Starts spate on `config` as a pod of this cluster would run.
    fn spate(&self, config: &str) -> Spate {
        self.spate_with(config, &[])
    }

    /// Like `spate`, with more flags.
    fn spate_with(&self, config: &str, args: &[&str]) -> Spate {
        let (port, dir) = (self.front_port, self.account.path().to_path_buf());
        let mut all = vec!["--cores=1"];
        all.extend_from_slice(args);
        Spate::start_with(config, &all, move |cmd| {
            cmd.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
                .env("KUBERNETES_SERVICE_PORT", port.to_string())
                .env("SPATE_KUBERNETES_SERVICEACCOUNT_DIR", dir);
        })
    }

    fn lists(&self, path: &str) -> usize {
        self.kube
            .requests()
            .iter()
            .filter(|r| {
                r.strip_prefix("LIST ")
                    .is_some_and(|p| p.starts_with(&format!("{path}?")))
            })
            .count()
    }
}

fn stale_markers(r: &Receiver, job: &str, instance: &str) -> usize {
    r.samples()
        .iter()
        .filter(|s| {
            s.label("job") == Some(job)
                && s.label("instance") == Some(instance)
                && s.value.to_bits() == STALE_NAN
        })
        .count()
}

fn with_remote_write(scrape_configs: &str, receiver: &Receiver) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n{scrape_configs}",
        receiver.url()
    )
}

#[test]
fn prometheus_example_configuration_discovers_and_scrapes_in_cluster() {
    let Some(c) = Cluster::start(3) else { return };
    let kube = &c.kube;
    kube.apply(object("namespace.json"));
    kube.apply(object("node.json"));
    for i in 0..3u16 {
        kube.apply(pod(
            &format!("bench-{i}"),
            "127.0.0.1",
            c.base + i,
            "bench",
            true,
        ));
    }
    kube.apply(object("service.json"));
    kube.apply(object("ingress.json"));
    // The API server's own service and endpoints (default/kubernetes, port "https").
    let mut svc = object("service.json");
    svc["metadata"]["name"] = json!("kubernetes");
    svc["metadata"]["labels"] = json!({"component": "apiserver", "provider": "kubernetes"});
    svc["spec"]["ports"] =
        json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]);
    kube.apply(svc);
    kube.apply(json!({"kind": "Endpoints", "apiVersion": "v1",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": c.front_port, "protocol": "TCP"}]}]}));
    // Endpoints of my-service: the three bench pods.
    let mut eps = object("endpoints.json");
    eps["subsets"] = json!([{
        "addresses": (0..3).map(|i| json!({"ip": "127.0.0.1", "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("bench-{i}")}})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 9376, "protocol": "TCP"}]}]);
    kube.apply(eps);

    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/kubernetes/prometheus-kubernetes.yml"),
    )
    .unwrap();
    let receiver = Receiver::start(|_| 200);
    let spate = c.spate(&with_remote_write(&example, &receiver));

    let pods: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", c.base + i))
        .collect();
    wait_for(
        Duration::from_secs(60),
        "the three pods to be scraped",
        || {
            let t = active(&spate, "kubernetes-pods");
            (t.len() == 3 && t.iter().all(|(_, _, h)| h == "up")).then_some(())
        },
    );
    assert_eq!(instances(&spate, "kubernetes-pods"), pods);
    let (labels, discovered, _) = active(&spate, "kubernetes-pods").remove(0);
    assert_eq!(labels["kubernetes_namespace"], "default");
    assert_eq!(labels["kubernetes_pod_name"], "bench-0");
    assert_eq!(labels["app"], "bench");
    assert_eq!(labels["pod_template_hash"], "66b6c48dd5");
    assert_eq!(
        discovered["__meta_kubernetes_pod_controller_kind"],
        "ReplicaSet"
    );
    assert_eq!(
        discovered["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
        "true"
    );
    assert_eq!(discovered["__meta_kubernetes_pod_ready"], "true");

    // Every other job of the example discovered what Prometheus would.
    assert_eq!(
        instances(&spate, "kubernetes-apiservers"),
        vec![format!("127.0.0.1:{}", c.front_port)]
    );
    assert_eq!(instances(&spate, "kubernetes-nodes"), vec!["node-1"]);
    let (node, found, _) = active(&spate, "kubernetes-nodes").remove(0);
    assert_eq!(found["__address__"], "192.168.49.2:10250");
    assert_eq!(
        found["__meta_kubernetes_node_address_InternalIP"],
        "192.168.49.2"
    );
    assert_eq!(node["kubernetes_io_hostname"], "node-1");
    assert_eq!(instances(&spate, "kubernetes-cadvisor"), vec!["node-1"]);
    // my-service's three addresses (one target: the same labels once relabeled, as the pods
    // share an IP here), each pod's container port no endpoint port covers, and the API
    // server's endpoint (the example keeps every endpoint).
    let mut want: Vec<String> = pods.clone();
    want.push("127.0.0.1:9376".into());
    want.push(format!("127.0.0.1:{}", c.front_port));
    want.sort();
    assert_eq!(instances(&spate, "kubernetes-service-endpoints"), want);
    let endpoints = active(&spate, "kubernetes-service-endpoints");
    assert!(
        endpoints
            .iter()
            .any(|(l, _, _)| l["kubernetes_name"] == "my-service"
                && l["app_kubernetes_io_name"] == "MyApp"
                && l["instance"] == "127.0.0.1:9376")
    );
    assert_eq!(
        instances(&spate, "kubernetes-services"),
        vec!["kubernetes.default.svc:443", "my-service.default.svc:80"]
    );
    assert_eq!(
        instances(&spate, "kubernetes-ingresses"),
        vec![
            "http://plain.foo.com/testpath",
            "https://https-example.foo.com/"
        ]
    );

    // Samples from the pods reach the receiver with the relabeled labels.
    wait_for(
        Duration::from_secs(30),
        "pod samples at the receiver",
        || r_has(&receiver, "kubernetes-pods", &pods[1]).then_some(()),
    );

    // A pod that turns not-ready stays a target, with the label saying so.
    kube.apply(pod("bench-1", "127.0.0.1", c.base + 1, "bench", false));
    wait_for(Duration::from_secs(30), "bench-1 to show not ready", || {
        active(&spate, "kubernetes-pods")
            .into_iter()
            .find(|(l, d, _)| {
                l["kubernetes_pod_name"] == "bench-1" && d["__meta_kubernetes_pod_ready"] == "false"
            })
    });
    assert_eq!(instances(&spate, "kubernetes-pods").len(), 3);

    // A deleted pod goes away, and its series get staleness markers.
    kube.delete("Pod", "default", "bench-2");
    wait_for(Duration::from_secs(30), "bench-2 to go", || {
        (instances(&spate, "kubernetes-pods") == pods[..2]).then_some(())
    });
    wait_for(
        Duration::from_secs(30),
        "bench-2's staleness markers",
        || (stale_markers(&receiver, "kubernetes-pods", &pods[2]) > 0).then_some(()),
    );
    assert_eq!(stale_markers(&receiver, "kubernetes-pods", &pods[0]), 0);

    // One list per collection, shared by every job that watches it, and events applied in
    // place: pods are watched once for the pod role and both endpoints jobs.
    assert_eq!(c.lists("/api/v1/pods"), 1, "{:#?}", kube.requests());
    assert_eq!(c.lists("/api/v1/endpoints"), 1);
    assert_eq!(c.lists("/api/v1/nodes"), 1);
    assert!(
        spate.metric("prometheus_sd_kubernetes_events_total{event=\"delete\",role=\"pod\"}") >= 1.0
    );
    assert!(
        spate.metric("prometheus_sd_kubernetes_events_total{event=\"update\",role=\"pod\"}") >= 1.0
    );
    assert_eq!(spate.metric("prometheus_sd_kubernetes_failures_total"), 0.0);
}

fn r_has(r: &Receiver, job: &str, instance: &str) -> bool {
    r.samples()
        .iter()
        .any(|s| s.label("job") == Some(job) && s.label("instance") == Some(instance))
}

#[test]
fn prometheus_operator_configuration_loads_and_discovers() {
    let Some(c) = Cluster::start(1) else { return };
    let kube = &c.kube;
    let mut p = pod("nginx-0", "127.0.0.1", c.base, "nginx", true);
    p["metadata"]["namespace"] = json!("default");
    kube.apply(p);
    let mut elsewhere = pod("nginx-9", "127.0.0.9", 80, "nginx", true);
    elsewhere["metadata"]["namespace"] = json!("other");
    kube.apply(elsewhere);
    kube.apply(object("service.json"));
    let mut eps = object("endpoints.json");
    eps["subsets"][0]["addresses"][0]["ip"] = json!("127.0.0.1");
    eps["subsets"][0]["addresses"][0]["targetRef"]["name"] = json!("nginx-0");
    eps["subsets"][0]["ports"][0]["port"] = json!(c.base);
    kube.apply(eps);
    let config = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kubernetes/prometheus-operator.yml"),
    )
    .unwrap();
    let spate = c.spate(&config);
    let addr = format!("127.0.0.1:{}", c.base);
    let svc = wait_for(
        Duration::from_secs(60),
        "the ServiceMonitor's target",
        || active(&spate, "serviceMonitor/default/my-service/0").pop(),
    );
    assert_eq!(svc.0["instance"], addr.as_str());
    assert_eq!(svc.0["job"], "my-service");
    assert_eq!(svc.0["namespace"], "default");
    assert_eq!(svc.0["service"], "my-service");
    assert_eq!(svc.0["pod"], "nginx-0");
    assert_eq!(svc.0["container"], "nginx");
    assert_eq!(svc.0["endpoint"], "http");
    let pm = wait_for(Duration::from_secs(30), "the PodMonitor's target", || {
        active(&spate, "podMonitor/default/nginx/0").pop()
    });
    assert_eq!(pm.0["instance"], addr.as_str());
    assert_eq!(pm.0["job"], "default/nginx");
    // Only the namespace named is watched.
    assert_eq!(active(&spate, "podMonitor/default/nginx/0").len(), 1);
    assert!(
        kube.requests()
            .iter()
            .all(|r| !r.contains("/namespaces/other/"))
    );
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.starts_with("LIST /api/v1/namespaces/default/pods?"))
    );
}

#[test]
fn list_and_watch_recover_from_gone_and_dropped_connections() {
    let kube = FakeKube::start(Some("secret"));
    let dir = TempDir::new("k8s-watch");
    std::fs::write(dir.path().join("token"), "secret").unwrap();
    kube.apply(pod("a", "10.0.0.1", 80, "x", true));
    let config = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: pods\n    kubernetes_sd_configs:\n      - role: pod\n        api_server: {}\n        authorization: {{credentials_file: {}}}\n",
        kube.url(),
        dir.path().join("token").display()
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    let wait_pods = |want: &[&str]| {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        wait_for(Duration::from_secs(60), &format!("pods {want:?}"), || {
            let mut got: Vec<String> = active(&spate, "pods")
                .into_iter()
                .map(|(_, d, _)| {
                    d["__meta_kubernetes_pod_name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            got.sort();
            (got == want).then_some(())
        })
    };
    wait_pods(&["a"]);
    let lists = |k: &FakeKube| {
        k.requests()
            .iter()
            .filter(|r| r.starts_with("LIST "))
            .count()
    };
    let watches = |k: &FakeKube| {
        k.requests()
            .iter()
            .filter(|r| r.starts_with("WATCH "))
            .count()
    };
    assert_eq!(lists(&kube), 1);
    // Events are applied in place, without listing again.
    kube.apply(pod("b", "10.0.0.2", 80, "x", true));
    wait_pods(&["a", "b"]);
    assert_eq!(lists(&kube), 1);

    // Compaction: the resumed watch gets 410 Gone as the status, and spate lists again at
    // once; what changed meanwhile is found.
    kube.compact(GoneAs::Status);
    kube.delete("Pod", "default", "a");
    wait_pods(&["b"]);
    assert_eq!(lists(&kube), 2, "{:#?}", kube.requests());

    // The same with 410 as an ERROR event in the watch stream.
    kube.compact(GoneAs::Event);
    kube.apply(pod("c", "10.0.0.3", 80, "x", true));
    wait_pods(&["b", "c"]);
    assert_eq!(lists(&kube), 3, "{:#?}", kube.requests());

    // A watch broken mid-stream is resumed from the last version seen: no new list.
    let before = watches(&kube);
    kube.drop_watches();
    kube.apply(pod("d", "10.0.0.4", 80, "x", true));
    wait_pods(&["b", "c", "d"]);
    assert_eq!(lists(&kube), 3, "{:#?}", kube.requests());
    assert!(watches(&kube) > before);
    let resumed = kube.requests().last().cloned().unwrap_or_default();
    assert!(
        resumed.contains("resourceVersion=") && !resumed.contains("resourceVersion=&"),
        "{resumed}"
    );
    assert!(spate.metric("prometheus_sd_kubernetes_failures_total") >= 1.0);
    assert_eq!(
        spate.metric("prometheus_sd_kubernetes_events_total{event=\"add\",role=\"pod\"}"),
        4.0
    );
}

#[test]
fn wrong_credentials_are_counted_and_the_last_targets_stay() {
    let kube = FakeKube::start(Some("right"));
    kube.apply(pod("a", "10.0.0.1", 80, "x", true));
    let dir = TempDir::new("k8s-auth");
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong").unwrap();
    let config = format!(
        "scrape_configs:\n  - job_name: pods\n    kubernetes_sd_configs:\n      - role: pod\n        api_server: {}\n        authorization: {{credentials_file: {}}}\n",
        kube.url(),
        token.display()
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    wait_for(Duration::from_secs(30), "a failure to be counted", || {
        (spate.metric("prometheus_sd_kubernetes_failures_total") >= 1.0).then_some(())
    });
    assert!(active(&spate, "pods").is_empty());
    // The token file is read at each request: a rotated token is picked up.
    std::fs::write(&token, "right").unwrap();
    wait_for(
        Duration::from_secs(60),
        "the pod once the token is right",
        || (active(&spate, "pods").len() == 1).then_some(()),
    );
}

#[test]
fn kubeconfig_selectors_namespaces_and_attached_metadata() {
    let Some(pki) = TestPki::make() else { return };
    let kube = FakeKube::start(Some("kc-token"));
    let front = TlsFront::start(&pki, kube.addr);
    let dir = TempDir::new("kubeconfig");
    std::fs::write(dir.path().join("token"), "kc-token").unwrap();
    std::fs::copy(pki.path("ca.crt"), dir.path().join("ca.crt")).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n",
            front.addr.port()
        ),
    )
    .unwrap();
    kube.apply(object("namespace.json"));
    kube.apply(object("node.json"));
    kube.apply(pod("web-1", "10.0.0.1", 80, "web", true));
    kube.apply(pod("db-1", "10.0.0.2", 80, "db", true));
    let mut other = pod("web-2", "10.0.0.3", 80, "web", true);
    other["metadata"]["namespace"] = json!("other");
    kube.apply(other);
    let config = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: web\n    kubernetes_sd_configs:\n      - role: pod\n        kubeconfig_file: {}\n        namespaces: {{names: [default]}}\n        selectors:\n          - role: pod\n            label: app=web\n            field: spec.nodeName=node-1\n        attach_metadata: {{node: true, namespace: true}}\n",
        kubeconfig.display()
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    let (_, d, _) = wait_for(Duration::from_secs(60), "web-1", || {
        active(&spate, "web").pop()
    });
    assert_eq!(d["__meta_kubernetes_pod_name"], "web-1");
    assert_eq!(d["__meta_kubernetes_node_name"], "node-1");
    assert_eq!(
        d["__meta_kubernetes_node_label_topology_kubernetes_io_zone"],
        "us-west2-a"
    );
    assert_eq!(d["__meta_kubernetes_namespace_label_team"], "platform");
    assert_eq!(d["__meta_kubernetes_namespace_annotation_owner"], "sre");
    assert_eq!(active(&spate, "web").len(), 1);
    let pods_list = kube
        .requests()
        .into_iter()
        .find(|r| r.starts_with("LIST /api/v1/namespaces/default/pods?"))
        .expect("a namespaced pod list");
    assert!(pods_list.contains("labelSelector=app%3Dweb"), "{pods_list}");
    assert!(
        pods_list.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "{pods_list}"
    );
    // A node label change reaches the pod's target (the pod itself did not change).
    let mut node = object("node.json");
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("us-west2-b");
    kube.apply(node);
    wait_for(
        Duration::from_secs(30),
        "the node's new zone on the pod target",
        || {
            active(&spate, "web").into_iter().find(|(_, d, _)| {
                d["__meta_kubernetes_node_label_topology_kubernetes_io_zone"] == "us-west2-b"
            })
        },
    );
}

#[test]
fn own_namespace_is_the_service_account_s() {
    let Some(c) = Cluster::start(1) else { return };
    let mut mine = pod("mine", "127.0.0.1", c.base, "x", true);
    mine["metadata"]["namespace"] = json!("monitoring");
    c.kube.apply(mine);
    c.kube.apply(pod("theirs", "127.0.0.2", c.base, "x", true));
    let spate = c.spate(
        "global: {scrape_interval: 1h}\nscrape_configs:\n  - job_name: own\n    kubernetes_sd_configs:\n      - {role: pod, namespaces: {own_namespace: true}}\n",
    );
    let (_, d, _) = wait_for(
        Duration::from_secs(60),
        "the pod of the own namespace",
        || active(&spate, "own").pop(),
    );
    assert_eq!(d["__meta_kubernetes_namespace"], "monitoring");
    assert_eq!(active(&spate, "own").len(), 1);
    assert!(
        c.kube
            .requests()
            .iter()
            .all(|r| !r.contains(" /api/v1/pods?") && !r.contains("/namespaces/default/"))
    );
}

/// The EndpointSlice of service `spate` in `monitoring` with one endpoint per (pod, ready).
fn member_slice(pods: &[(&str, bool)]) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, (name, ready))| {
            json!({"addresses": [format!("10.1.0.{}", i + 1)],
                   "conditions": {"ready": ready, "serving": ready, "terminating": !ready},
                   "targetRef": {"kind": "Pod", "namespace": "monitoring", "name": name}})
        })
        .collect();
    json!({"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
           "metadata": {"name": "spate-x1", "namespace": "monitoring",
                        "labels": {"kubernetes.io/service-name": "spate"}},
           "addressType": "IPv4", "endpoints": endpoints,
           "ports": [{"name": "web", "protocol": "TCP", "port": 9095}]})
}

/// A cluster whose members are the ready pods behind its service: a pod that terminates (its
/// endpoint no longer ready) hands its targets to the others.
#[test]
fn cluster_members_are_the_ready_pods_behind_a_service() {
    let Some(c) = Cluster::start(12) else {
        return;
    };
    c.kube.apply(member_slice(&[
        ("spate-0", true),
        ("spate-1", true),
        ("spate-2", true),
    ]));
    let targets: Vec<String> = (0..12)
        .map(|i| format!("'127.0.0.1:{}'", c.base + i))
        .collect();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let members: Vec<Spate> = (0..3)
        .map(|i| {
            c.spate_with(
                &config,
                &[
                    "--cluster.members-kubernetes=spate",
                    &format!("--cluster.member=spate-{i}"),
                ],
            )
        })
        .collect();
    let shares = |want: usize| {
        wait_for(Duration::from_secs(60), "the members' shares", || {
            let counts: Vec<usize> = members
                .iter()
                .map(|m| instances(m, "bench").len())
                .collect();
            let busy = counts.iter().filter(|n| **n > 0).count();
            (counts.iter().sum::<usize>() == 12 && busy == want).then_some(counts)
        })
    };
    let three = shares(3);
    // spate-2 terminates: its endpoint is no longer ready.
    c.kube.apply(member_slice(&[
        ("spate-0", true),
        ("spate-1", true),
        ("spate-2", false),
    ]));
    let two = shares(2);
    assert_eq!(two[2], 0, "{three:?} → {two:?}");
    let (_, body) = http_get(&members[0].web, "/api/v1/status/cluster").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = v["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["spate-0", "spate-1"]);
    let owned: u64 = v["data"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["targets"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, 12);
    // Which member owns a given target, by job and URL.
    let url = format!("http://127.0.0.1:{}/metrics", c.base);
    let owner = common::cluster_owners(&members[0].web, "bench", &url).remove(0);
    let i: usize = owner.trim_start_matches("spate-").parse().unwrap();
    assert!(instances(&members[i], "bench").contains(&format!("127.0.0.1:{}", c.base)));
    assert!(members[0].metric("spate_cluster_members ") == 2.0);
}
