//! `docker_sd_configs`: containers from a Docker Engine API (a unix socket or HTTP), listed
//! every `refresh_interval` as Prometheus does (`discovery/moby/docker.go`): one target per
//! container, network and published TCP port (or the configured port when none), with the
//! container's and the network's labels. A failed refresh keeps the last list and is counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Deserialize;

use super::kubernetes::sanitize;
use super::{Command, TargetGroup};
use crate::config::{DockerHost, DockerSdConfig};
use crate::selfmetrics::SdStats;

const MAX_BODY: usize = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Refreshes until `stop`; each list that changed is sent.
pub fn run(
    cfg: &DockerSdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &SdStats,
) {
    let poll = super::Poll {
        job,
        provider,
        tx,
        stop,
        interval: cfg.refresh_interval,
        failures: &stats.docker_failures,
        what: "docker",
    };
    poll.run(|| refresh(cfg).map(|g| vec![g]));
}

/// GETs `path` from the Engine API and returns the body of a 200 answer.
fn get(cfg: &DockerSdConfig, path: &str) -> Result<Vec<u8>, String> {
    match &cfg.host {
        DockerHost::Unix(socket) => get_unix(socket, path),
        DockerHost::Http(url) => {
            let base = url.path_and_query.trim_end_matches('/');
            let target = format!("{base}{path}");
            let fetched = crate::runtime::block_on(super::http::get(
                &cfg.http,
                url,
                &target,
                "Accept: application/json\r\n",
                TIMEOUT,
                MAX_BODY,
            ))
            .map_err(|e| format!("cannot start an executor for the request: {e}"))??;
            if fetched.status != 200 {
                return Err(format!(
                    "Docker returned HTTP {} for {path}",
                    fetched.status
                ));
            }
            Ok(fetched.body)
        }
    }
}

/// One request over the daemon's unix socket (`Connection: close`, read to the end).
fn get_unix(socket: &std::path::Path, path: &str) -> Result<Vec<u8>, String> {
    let shown = socket.display();
    let mut s = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to the Docker socket {shown}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: spate/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .map_err(|e| format!("{shown}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_BODY as u64 + 64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{shown}: {e}"))?;
    let head = crate::http::parse_head(&buf, false)?
        .ok_or_else(|| format!("{shown}: incomplete response"))?;
    if head.status != 200 {
        return Err(format!("Docker returned HTTP {} for {path}", head.status));
    }
    let mut body = buf.split_off(head.head_len);
    match head.framing {
        crate::http::Framing::Chunked => {
            let n = crate::http::dechunk_in_place(&mut body)?;
            body.truncate(n);
        }
        crate::http::Framing::Length(n) => body.truncate(n),
        crate::http::Framing::Close => {}
    }
    Ok(body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Container {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Names")]
    names: Vec<String>,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "Ports")]
    ports: Vec<Port>,
    #[serde(rename = "HostConfig")]
    host_config: HostConfig,
    #[serde(rename = "NetworkSettings")]
    network_settings: NetworkSettings,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Port {
    #[serde(rename = "IP")]
    ip: String,
    #[serde(rename = "PrivatePort")]
    private: u16,
    #[serde(rename = "PublicPort")]
    public: u16,
    #[serde(rename = "Type")]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HostConfig {
    #[serde(rename = "NetworkMode")]
    network_mode: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct NetworkSettings {
    #[serde(rename = "Networks")]
    networks: Option<BTreeMap<String, Option<Endpoint>>>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Endpoint {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "IPAddress")]
    ip: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Network {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Scope")]
    scope: String,
    #[serde(rename = "Internal")]
    internal: bool,
    #[serde(rename = "Ingress")]
    ingress: bool,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

const P: &str = "__meta_docker_";

fn refresh(cfg: &DockerSdConfig) -> Result<TargetGroup, String> {
    let mut path = "/containers/json".to_string();
    if !cfg.filters.is_empty() {
        path.push_str("?filters=");
        crate::http::query_escape(&mut path, &cfg.filters);
    }
    let containers: Vec<Container> = serde_json::from_slice(&get(cfg, &path)?)
        .map_err(|e| format!("cannot parse the container list: {e}"))?;
    let networks: Vec<Network> = serde_json::from_slice(&get(cfg, "/networks")?)
        .map_err(|e| format!("cannot parse the network list: {e}"))?;
    Ok(group(cfg, &containers, &networks))
}

/// Prometheus' target group from the container and network lists.
fn group(cfg: &DockerSdConfig, containers: &[Container], networks: &[Network]) -> TargetGroup {
    let mut network_labels: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for n in networks {
        let mut l = vec![
            (format!("{P}network_id"), n.id.clone()),
            (format!("{P}network_name"), n.name.clone()),
            (format!("{P}network_scope"), n.scope.clone()),
            (format!("{P}network_internal"), n.internal.to_string()),
            (format!("{P}network_ingress"), n.ingress.to_string()),
        ];
        for (k, v) in n.labels.iter().flatten() {
            l.push((format!("{P}network_label_{}", sanitize(k)), v.clone()));
        }
        network_labels.insert(&n.id, l);
    }
    let by_id: BTreeMap<&str, &Container> = containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut targets = Vec::new();
    for c in containers {
        let Some(name) = c.names.first() else {
            continue;
        };
        let mut common = vec![
            (format!("{P}container_id"), c.id.clone()),
            (format!("{P}container_name"), name.clone()),
            (
                format!("{P}container_network_mode"),
                c.host_config.network_mode.clone(),
            ),
        ];
        for (k, v) in c.labels.iter().flatten() {
            common.push((format!("{P}container_label_{}", sanitize(k)), v.clone()));
        }
        let mut nets: BTreeMap<String, Endpoint> = c
            .network_settings
            .networks
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        // A container sharing another's network (`container:<id>`) uses that one's.
        let mut mode = c.host_config.network_mode.clone();
        while nets.is_empty() {
            let Some(other) = mode.strip_prefix("container:").and_then(|id| by_id.get(id)) else {
                break;
            };
            nets = other
                .network_settings
                .networks
                .iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect();
            mode = other.host_config.network_mode.clone();
        }
        if cfg.match_first_network && nets.len() > 1 {
            nets = nets.into_iter().take(1).collect();
        }
        for n in nets.values() {
            let extend = |t: &mut BTreeMap<String, String>| {
                t.extend(common.iter().cloned());
                t.extend(
                    network_labels
                        .get(n.network_id.as_str())
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
            };
            let mut added = false;
            for p in c.ports.iter().filter(|p| p.kind == "tcp") {
                let mut t = BTreeMap::new();
                t.insert(format!("{P}network_ip"), n.ip.clone());
                t.insert(format!("{P}port_private"), p.private.to_string());
                if p.public > 0 {
                    t.insert(format!("{P}port_public"), p.public.to_string());
                    t.insert(format!("{P}port_public_ip"), p.ip.clone());
                }
                extend(&mut t);
                t.insert(
                    "__address__".into(),
                    crate::http::join_host_port(&n.ip, p.private),
                );
                targets.push(t.into_iter().collect());
                added = true;
            }
            if !added {
                let mut t = BTreeMap::new();
                t.insert(format!("{P}network_ip"), n.ip.clone());
                extend(&mut t);
                let addr = if c.host_config.network_mode != "host" {
                    crate::http::join_host_port(&n.ip, cfg.port)
                } else {
                    cfg.host_networking_host.clone()
                };
                t.insert("__address__".into(), addr);
                targets.push(t.into_iter().collect());
            }
        }
    }
    TargetGroup {
        source: "Docker".into(),
        targets,
        labels: Vec::new(),
    }
}
