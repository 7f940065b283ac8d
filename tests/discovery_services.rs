//! Service discovery from service registries and cloud APIs against fake servers that answer
//! with recorded responses (the shapes of the providers' API references): Consul, Docker
//! and EC2.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Spate, TestServer, http_get, wait_for};
use serde_json::Value;

fn data(path: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(path),
    )
    .unwrap()
}

/// Active targets of `job`: (labels, discovered labels).
fn active(spate: &Spate, job: &str) -> Vec<(Value, Value)> {
    let Some((_, body)) = http_get(&spate.web, "/api/v1/targets") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut out: Vec<(Value, Value)> = v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t["scrapePool"] == job)
        .map(|t| (t["labels"].clone(), t["discoveredLabels"].clone()))
        .collect();
    out.sort_by_key(|(l, _)| l["instance"].as_str().unwrap_or("").to_string());
    out
}

/// A request a fake server saw: its headers and body.
type Seen = (HashMap<String, String>, String);

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn consul_services_with_blocking_queries_tags_and_token() {
    let index = Arc::new(AtomicU64::new(10));
    let failing = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<HashMap<String, String>>>> = Arc::default();
    let redis = Arc::new(Mutex::new(data("consul/health_service_redis.json")));
    let (idx, fail, log, redis_body) =
        (index.clone(), failing.clone(), seen.clone(), redis.clone());
    let consul = TestServer::start(move |h, _| {
        log.lock().unwrap().push(h.clone());
        if h.get("x-consul-token").map(String::as_str) != Some("acl-token") {
            return (403, "text/plain", b"ACL not found".to_vec());
        }
        if fail.load(Ordering::SeqCst) {
            return (500, "text/plain", b"rpc error: No cluster leader".to_vec());
        }
        let path = h[":path"].split('?').next().unwrap_or("").to_string();
        let body = match path.as_str() {
            "/v1/agent/self" => data("consul/agent_self.json"),
            "/v1/catalog/services" => data("consul/catalog_services.json"),
            "/v1/health/service/redis" => redis_body.lock().unwrap().clone(),
            "/v1/health/service/postgresql" => data("consul/health_service_postgresql.json"),
            _ => return (404, "text/plain", b"not found".to_vec()),
        };
        let i = idx.load(Ordering::SeqCst);
        (
            200,
            leak(format!(
                "header:X-Consul-Index: {i}\r\nContent-Type: application/json"
            )),
            body,
        )
    });
    let config = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: consul\n    consul_sd_configs:\n      - server: '{}'\n        token: acl-token\n        tags: [primary]\n        node_meta: {{rack: r1}}\n        refresh_interval: 1s\n    relabel_configs:\n      - {{source_labels: [__meta_consul_service], target_label: service}}\n",
        consul.addr
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    let targets = wait_for(Duration::from_secs(30), "both tagged services", || {
        let t = active(&spate, "consul");
        (t.len() == 2).then_some(t)
    });
    // The "consul" service has no "primary" tag: not watched.
    let (labels, d) = &targets[0];
    assert_eq!(labels["instance"], "10.1.10.12:8000");
    assert_eq!(labels["service"], "redis");
    assert_eq!(d["__meta_consul_dc"], "dc1");
    assert_eq!(d["__meta_consul_node"], "foobar");
    assert_eq!(d["__meta_consul_tags"], ",primary,v1,");
    assert_eq!(d["__meta_consul_health"], "passing");
    assert_eq!(d["__meta_consul_service_id"], "redis");
    assert_eq!(d["__meta_consul_service_address"], "10.1.10.12");
    assert_eq!(d["__meta_consul_service_port"], "8000");
    assert_eq!(d["__meta_consul_namespace"], "default");
    assert_eq!(d["__meta_consul_metadata_instance_type"], "t2.medium");
    assert_eq!(d["__meta_consul_service_metadata_redis_version"], "4.0");
    assert_eq!(d["__meta_consul_tagged_address_wan"], "10.1.10.12");
    let (labels, d) = &targets[1];
    // No service address: the node's.
    assert_eq!(labels["instance"], "10.1.10.21:5432");
    assert_eq!(d["__meta_consul_health"], "critical");
    assert_eq!(d["__meta_consul_service_address"], "");

    // The queries are blocking ones, with the token, the datacenter, stale reads, node
    // metadata and the tag.
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|h| h[":path"].clone())
        .collect();
    let health = paths
        .iter()
        .find(|p| p.starts_with("/v1/health/service/redis?"))
        .unwrap();
    for part in [
        "dc=dc1",
        "tag=primary",
        "index=",
        "wait=120000ms",
        "stale",
        "node-meta=rack%3Ar1",
    ] {
        assert!(health.contains(part), "{part} missing in {health}");
    }

    // A change (a new index and a second instance) shows up.
    let mut more: Vec<Value> =
        serde_json::from_slice(&data("consul/health_service_redis.json")).unwrap();
    let mut second = more[0].clone();
    second["Service"]["ID"] = "redis-2".into();
    second["Service"]["Port"] = 8001.into();
    more.push(second);
    *redis.lock().unwrap() = serde_json::to_vec(&more).unwrap();
    index.store(11, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the second redis instance", || {
        (active(&spate, "consul").len() == 3).then_some(())
    });

    // Failures are counted and keep the last targets.
    failing.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "a counted failure", || {
        (spate.metric("prometheus_sd_consul_rpc_failures_total") >= 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(active(&spate, "consul").len(), 3);
}

/// A Docker daemon on a unix socket answering the Engine API's container and network lists
/// from recorded answers (chunked, as the daemon sends them); it records each request line.
struct FakeDocker {
    path: std::path::PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
    _dir: common::TempDir,
}

impl FakeDocker {
    fn start() -> FakeDocker {
        use std::io::{Read, Write};
        let dir = common::TempDir::new("docker");
        let path = dir.path().join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buf)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                log.lock().unwrap().push(line.clone());
                let path = line
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .split('?')
                    .next()
                    .unwrap_or("");
                let body = match path {
                    "/containers/json" => data("docker/containers.json"),
                    "/networks" => data("docker/networks.json"),
                    _ => b"{\"message\":\"page not found\"}".to_vec(),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
                let _ = conn.write_all(b"\r\n0\r\n\r\n");
            }
        });
        FakeDocker {
            path,
            requests,
            _dir: dir,
        }
    }
}

#[test]
fn docker_containers_networks_and_ports() {
    let docker = FakeDocker::start();
    let config = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: docker\n    docker_sd_configs:\n      - host: unix://{}\n        port: 9090\n        refresh_interval: 1s\n        filters: [{{name: status, values: [running]}}]\n",
        docker.path.display()
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    let targets = wait_for(Duration::from_secs(30), "the containers", || {
        let t = active(&spate, "docker");
        (t.len() == 4).then_some(t)
    });
    let by_instance: HashMap<String, Value> = targets
        .into_iter()
        .map(|(l, d)| (l["instance"].as_str().unwrap_or("").to_string(), d))
        .collect();
    // A published TCP port: its private port, with the public one.
    let d = &by_instance["172.17.0.2:2222"];
    assert_eq!(d["__meta_docker_container_id"], "8dfafdbc3a40");
    assert_eq!(d["__meta_docker_container_name"], "/boring_feynman");
    assert_eq!(d["__meta_docker_container_network_mode"], "default");
    assert_eq!(
        d["__meta_docker_container_label_com_example_vendor"],
        "Acme"
    );
    assert_eq!(d["__meta_docker_network_ip"], "172.17.0.2");
    assert_eq!(d["__meta_docker_network_name"], "bridge");
    assert_eq!(d["__meta_docker_network_scope"], "local");
    assert_eq!(d["__meta_docker_network_internal"], "false");
    assert_eq!(d["__meta_docker_network_ingress"], "false");
    assert_eq!(
        d["__meta_docker_network_label_com_example_some_label"],
        "some-value"
    );
    assert_eq!(d["__meta_docker_port_private"], "2222");
    assert_eq!(d["__meta_docker_port_public"], "3333");
    assert_eq!(d["__meta_docker_port_public_ip"], "0.0.0.0");
    // No port: the configured one.
    let d = &by_instance["172.17.0.8:9090"];
    assert_eq!(d["__meta_docker_container_name"], "/coolName");
    assert!(d.get("__meta_docker_port_private").is_none());
    // Host networking: a TCP port on the network's (empty) IP.
    assert_eq!(
        by_instance[":9100"]["__meta_docker_container_network_mode"],
        "host"
    );
    // A container on another's network shares its IP.
    let d = &by_instance["172.17.0.2:9090"];
    assert_eq!(d["__meta_docker_container_name"], "/sidecar");
    assert_eq!(d["__meta_docker_container_label_role"], "sidecar");
    // The filters go to the daemon as the Engine API's JSON parameter.
    let requests = docker.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r
            .starts_with("GET /containers/json?filters=%7B%22status%22%3A%5B%22running%22%5D%7D ")),
        "{requests:?}"
    );
    // The daemon goes away: failures are counted, the last targets stay.
    std::fs::remove_file(&docker.path).unwrap();
    wait_for(Duration::from_secs(30), "a counted Docker failure", || {
        (spate.metric("prometheus_sd_refresh_failures_total{mechanism=\"docker\"}") >= 1.0)
            .then_some(())
    });
    assert_eq!(active(&spate, "docker").len(), 4);
}

#[test]
fn ec2_instances_signed_paged_and_filtered() {
    let bodies: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let failing = Arc::new(AtomicBool::new(false));
    let (log, fail) = (bodies.clone(), failing.clone());
    let ec2 = TestServer::start(move |h, body| {
        let body = String::from_utf8_lossy(body).to_string();
        log.lock().unwrap().push((h.clone(), body.clone()));
        if fail.load(Ordering::SeqCst) {
            // EC2's error document.
            return (
                503,
                "text/xml;charset=UTF-8",
                b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>a1</RequestID></Response>".to_vec(),
            );
        }
        let xml = if body.contains("Action=DescribeAvailabilityZones") {
            data("ec2/describe_availability_zones.xml")
        } else if body.contains("NextToken=page-2") {
            data("ec2/describe_instances_2.xml")
        } else {
            data("ec2/describe_instances_1.xml")
        };
        (200, "text/xml;charset=UTF-8", xml)
    });
    let config = format!(
        "global: {{scrape_interval: 1h}}\nscrape_configs:\n  - job_name: ec2\n    ec2_sd_configs:\n      - region: eu-west-1\n        endpoint: http://{}\n        access_key: AKIDEXAMPLE\n        secret_key: wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\n        port: 9100\n        refresh_interval: 1s\n        filters: [{{name: instance-state-name, values: [running, pending]}}]\n",
        ec2.addr
    );
    let spate = Spate::start(&config, &["--cores=1"]);
    let targets = wait_for(Duration::from_secs(30), "the instances", || {
        let t = active(&spate, "ec2");
        (t.len() == 2).then_some(t)
    });
    // The terminated instance has no private IP: no target.
    let (labels, d) = &targets[0];
    assert_eq!(labels["instance"], "10.0.0.157:9100");
    assert_eq!(d["__meta_ec2_platform"], "windows");
    assert_eq!(d["__meta_ec2_instance_lifecycle"], "spot");
    assert_eq!(d["__meta_ec2_availability_zone_id"], "euw1-az3");
    assert_eq!(d["__meta_ec2_tag_team"], "payments & billing");
    assert_eq!(d["__meta_ec2_subnet_id"], ",subnet-0aa1b2c3,");
    assert!(d.get("__meta_ec2_public_ip").is_none());
    let (labels, d) = &targets[1];
    assert_eq!(labels["instance"], "192.168.1.88:9100");
    let want = [
        ("__meta_ec2_ami", "ami-bff32ccc"),
        ("__meta_ec2_architecture", "x86_64"),
        ("__meta_ec2_availability_zone", "eu-west-1c"),
        ("__meta_ec2_availability_zone_id", "euw1-az1"),
        ("__meta_ec2_instance_id", "i-1234567890abcdef0"),
        ("__meta_ec2_instance_state", "running"),
        ("__meta_ec2_instance_type", "t2.micro"),
        (
            "__meta_ec2_ipv6_addresses",
            ",2001:db6:4696:0:1ce:9e2c:9a61:a12a,",
        ),
        ("__meta_ec2_owner_id", "123456789012"),
        (
            "__meta_ec2_primary_ipv6_addresses",
            ",2001:db6:4696:0:1ce:9e2c:9a61:a12a,",
        ),
        ("__meta_ec2_primary_subnet_id", "subnet-56f5f633"),
        (
            "__meta_ec2_private_dns_name",
            "ip-192-168-1-88.eu-west-1.compute.internal",
        ),
        ("__meta_ec2_private_ip", "192.168.1.88"),
        (
            "__meta_ec2_public_dns_name",
            "ec2-54-194-252-215.eu-west-1.compute.amazonaws.com",
        ),
        ("__meta_ec2_public_ip", "54.194.252.215"),
        ("__meta_ec2_region", "eu-west-1"),
        ("__meta_ec2_subnet_id", ",subnet-56f5f633,subnet-77a5f644,"),
        ("__meta_ec2_tag_Name", "Server_1"),
        ("__meta_ec2_tag_aws_autoscaling_groupName", "web-asg"),
        ("__meta_ec2_vpc_id", "vpc-11112222"),
    ];
    for (k, v) in want {
        assert_eq!(d[k], v, "{k}");
    }
    // Signed POSTs of the Query API, with the filters.
    let seen = bodies.lock().unwrap().clone();
    let (h, body) = seen
        .iter()
        .find(|(_, b)| b.contains("Action=DescribeInstances"))
        .unwrap();
    assert_eq!(h[":method"], "POST");
    assert!(body.contains("Version=2016-11-15"));
    assert!(body.contains("Filter.1.Name=instance-state-name"));
    assert!(body.contains("Filter.1.Value.1=running") && body.contains("Filter.1.Value.2=pending"));
    let auth = &h["authorization"];
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains("/eu-west-1/ec2/aws4_request"),
        "{auth}"
    );
    assert!(h.contains_key("x-amz-date"));
    // Throttled: counted, logged with EC2's code, the last targets stay.
    failing.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "a counted EC2 failure", || {
        (spate.metric("prometheus_sd_refresh_failures_total{mechanism=\"ec2\"}") >= 1.0)
            .then_some(())
    });
    assert!(spate.proc.log_text().contains("RequestLimitExceeded"));
    assert_eq!(active(&spate, "ec2").len(), 2);
}
