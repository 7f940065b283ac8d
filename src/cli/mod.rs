//! Command-line flags, named and defaulted as Prometheus agent's are, and subcommands.
//!
//! Flags take `--name=value` or `--name value`; booleans take `--name` or `--no-name`, as with
//! Prometheus' kingpin. An unknown flag or a bad value is an error that names it.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::PromDuration;
use crate::log::{Format, Level};

mod cluster;
mod foreign;

pub use cluster::{ClusterOptions, ClusterSetup};
use foreign::{Foreign, PROMETHEUS_FLAGS};

#[derive(Clone, Debug, PartialEq)]
pub struct AgentOptions {
    pub config_file: PathBuf,
    pub storage_path: PathBuf,
    pub listen_address: String,
    pub log_level: Level,
    pub log_format: Format,
    /// Data-plane cores; `None` means every CPU this process may run on.
    pub cores: Option<usize>,
    pub flush_deadline: Duration,
    pub wal_segment_size: u64,
    pub wal_compression: bool,
    /// `--storage.agent.wal-compression-type`: snappy or zstd, when compression is on.
    pub wal_compression_type: crate::wal::Compression,
    pub wal_fsync_interval: Duration,
    /// Bound on all WAL segments together; `None`: a fifth of the filesystem.
    pub wal_max_size: Option<u64>,
    /// `--storage.agent.retention.max-time`; zero: no age bound (Prometheus' default).
    pub wal_max_time: Duration,
    /// `--storage.agent.no-lockfile`: do not lock the storage directory.
    pub no_lockfile: bool,
    /// `--web.enable-lifecycle`: `POST /-/reload` reloads the configuration.
    pub enable_lifecycle: bool,
    /// `--web.config.file`: TLS and basic authentication for the web server.
    pub web_config_file: Option<PathBuf>,
    /// `--web.external-url`; `None`: `http://<hostname>:<port>/`.
    pub external_url: Option<String>,
    /// `--web.route-prefix`; `None`: the external URL's path.
    pub route_prefix: Option<String>,
    pub max_connections: usize,
    pub read_timeout: Duration,
    /// `--web.cors.origin`, unanchored as given.
    pub cors_origin: String,
    pub page_title: String,
    /// `--web.enable-target-scrape-proxy`: the UI may fetch a target's response through spate.
    pub target_scrape_proxy: bool,
    /// `--cluster.*`: share targets with the other members of a cluster.
    pub cluster: ClusterOptions,
    /// `--config.auto-reload` (or `--enable-feature=auto-reload-config`).
    pub auto_reload: bool,
    pub auto_reload_interval: Duration,
    /// `--scrape.timestamp-tolerance`, `None` with `--no-scrape.adjust-timestamps`: a scrape
    /// this close to its tick is stamped with the tick's time.
    pub timestamp_tolerance: Option<Duration>,
    /// Prometheus flags given that have no effect in spate, and why (logged at start).
    pub ignored_flags: Vec<(String, &'static str)>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            config_file: PathBuf::from("prometheus.yml"),
            storage_path: PathBuf::from("data-agent/"),
            listen_address: "0.0.0.0:9095".into(),
            log_level: Level::Info,
            log_format: Format::Logfmt,
            cores: None,
            flush_deadline: Duration::from_secs(60),
            wal_segment_size: 128 << 20,
            wal_compression: true,
            wal_compression_type: crate::wal::Compression::Snappy,
            wal_fsync_interval: Duration::from_secs(1),
            wal_max_size: None,
            wal_max_time: Duration::ZERO,
            no_lockfile: false,
            enable_lifecycle: false,
            web_config_file: None,
            external_url: None,
            route_prefix: None,
            max_connections: 512,
            read_timeout: Duration::from_secs(300),
            cors_origin: ".*".into(),
            page_title: "spate".into(),
            target_scrape_proxy: false,
            auto_reload: false,
            auto_reload_interval: Duration::from_secs(30),
            timestamp_tolerance: Some(Duration::from_millis(2)),
            ignored_flags: Vec::new(),
            cluster: ClusterOptions {
                name: "spate".into(),
                replication_factor: 1,
                members_dns_type: "SRV".into(),
                refresh_interval: Duration::from_secs(10),
                ha_cluster_label: "cluster".into(),
                ha_replica_label: "__replica__".into(),
                ..Default::default()
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(Box<AgentOptions>),
    CheckConfig(Vec<PathBuf>),
    Version,
    Help,
}

/// What `--help` prints before the flags.
const USAGE_HEAD: &str = "\
usage: spate [<flags>] [<command> [<args> ...]]

spate: a thread-per-core, Prometheus-compatible metrics agent. It scrapes the targets of a
Prometheus configuration and forwards every sample by Remote Write.
";

/// What `--help` prints after the flags.
const USAGE_COMMANDS: &str = "\
Commands:
  run (default)                  Run the agent.
  check-config <file>...         Check configuration files; exits non-zero at the first
                                 invalid one.
  bench <tool> [<flags>]         Benchmark tools: targets, sink, push ('spate bench --help').
  wal inspect <dir>              Show a WAL: segments, records, damage, cursors and backlogs.
";

/// One flag of `spate run`: its name, how it is given, its help, and what it sets. Parsing and
/// `--help` both read [`FLAGS`], so a flag cannot be parsed without being documented.
struct Flag {
    name: &'static str,
    /// The flag's value in effect, as `/api/v1/status/flags` shows it.
    value: fn(&AgentOptions) -> String,
    /// Shown after the name in `--help` (`="prometheus.yml"`, `=1m`, `=N`); empty for a switch.
    shown: &'static str,
    help: &'static str,
    kind: Kind,
}

/// How a flag takes its value.
enum Kind {
    /// `--name=value` or `--name value`.
    Value(fn(&mut AgentOptions, &str) -> Result<(), String>),
    /// `--name` (or `--name=true|false`); with `negatable`, also `--no-name`.
    Switch {
        set: fn(&mut AgentOptions, bool),
        negatable: bool,
    },
    /// A switch that also takes a value (`--[no-]name`, or `--name=value`).
    SwitchOrValue {
        set: fn(&mut AgentOptions, bool),
        value: fn(&mut AgentOptions, &str) -> Result<(), String>,
    },
}

/// A duration flag's value; `0` is accepted as zero where `zero_ok`.
/// A comma-separated list, blanks dropped.
fn comma_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect()
}

/// A path flag's value as shown (empty when unset).
fn path_value(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn duration(v: &str, zero_ok: bool) -> Result<Duration, String> {
    crate::config::parse_duration(v).or_else(|e| {
        if zero_ok && v == "0" {
            Ok(Duration::ZERO)
        } else {
            Err(e)
        }
    })
}

/// A size flag's value: at least 4 KiB.
fn size(v: &str) -> Result<u64, String> {
    parse_bytes(v)
        .filter(|b| *b >= 4096)
        .ok_or_else(|| "expected a size of at least 4KB such as 128MB or 10GB".to_string())
}

/// Every flag of `spate run`, in `--help` order.
const FLAGS: &[Flag] = &[
    Flag {
        name: "config.file",
        value: |o| o.config_file.display().to_string(),
        shown: "=\"prometheus.yml\"",
        help: "Prometheus configuration file path.",
        kind: Kind::Value(|o, v| {
            o.config_file = PathBuf::from(v);
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.path",
        value: |o| o.storage_path.display().to_string(),
        shown: "=\"data-agent/\"",
        help: "Base path for agent data storage.",
        kind: Kind::Value(|o, v| {
            o.storage_path = PathBuf::from(v);
            Ok(())
        }),
    },
    Flag {
        name: "web.listen-address",
        value: |o| o.listen_address.clone(),
        shown: "=\"0.0.0.0:9095\"",
        help: "Address for /metrics, /-/healthy, /-/ready and the API.",
        kind: Kind::Value(|o, v| {
            // `:9095`, as Prometheus users write it: every IPv4 interface.
            let v = match v.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => v.to_string(),
            };
            crate::http::split_host_port(&v, 0)
                .ok()
                .filter(|(_, port)| v.contains(':') && (*port > 0 || v.ends_with(":0")))
                .ok_or("expected host:port")?;
            o.listen_address = v;
            Ok(())
        }),
    },
    Flag {
        name: "web.enable-lifecycle",
        value: |o| o.enable_lifecycle.to_string(),
        shown: "",
        help: "Enable configuration reloads by POST /-/reload (SIGHUP always reloads).",
        kind: Kind::Switch {
            set: |o, b| o.enable_lifecycle = b,
            negatable: true,
        },
    },
    Flag {
        name: "web.config.file",
        value: |o| {
            o.web_config_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        },
        shown: "=\"\"",
        help: "Path to a web configuration file (TLS, basic authentication, headers), as Prometheus' --web.config.file.",
        kind: Kind::Value(|o, v| {
            o.web_config_file = (!v.is_empty()).then(|| PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        name: "web.external-url",
        value: |o| o.external_url.clone().unwrap_or_default(),
        shown: "=URL",
        help: "The URL users reach spate at (behind a reverse proxy, for example). Links in the UI use its path, and it is the default route prefix.",
        kind: Kind::Value(|o, v| {
            if !(v.is_empty() || v.starts_with("http://") || v.starts_with("https://")) {
                return Err("expected an http:// or https:// URL".into());
            }
            o.external_url = (!v.is_empty()).then(|| v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "web.route-prefix",
        value: |o| o.route_prefix.clone().unwrap_or_default(),
        shown: "=PATH",
        help: "Prefix of the web server's routes. Default: the path of --web.external-url.",
        kind: Kind::Value(|o, v| {
            o.route_prefix = Some(v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "web.max-connections",
        value: |o| o.max_connections.to_string(),
        shown: "=512",
        help: "Most simultaneous web connections; more wait until one ends.",
        kind: Kind::Value(|o, v| {
            let n = v.parse().ok().filter(|n| *n > 0);
            o.max_connections = n.ok_or("expected a positive integer")?;
            Ok(())
        }),
    },
    Flag {
        name: "web.read-timeout",
        value: |o| PromDuration(o.read_timeout).to_string(),
        shown: "=5m",
        help: "Most time to read a request's head or body, and to keep an idle connection.",
        kind: Kind::Value(|o, v| {
            o.read_timeout = duration(v, false)?;
            Ok(())
        }),
    },
    Flag {
        name: "web.cors.origin",
        value: |o| o.cors_origin.clone(),
        shown: "=\".*\"",
        help: "Regex of the origins the API allows (CORS), anchored, e.g. 'https?://(domain1|domain2)\\.com'.",
        kind: Kind::Value(|o, v| {
            regex::Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("invalid regex: {e}"))?;
            o.cors_origin = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "web.enable-target-scrape-proxy",
        value: |o| o.target_scrape_proxy.to_string(),
        shown: "",
        help: "Let the UI and GET /api/v1/targets/scrape fetch an active target's response through spate, once, with the job's client settings (1m and 10MB at most). Off by default: it lets a UI user reach the targets.",
        kind: Kind::Switch {
            set: |o, b| o.target_scrape_proxy = b,
            negatable: true,
        },
    },
    Flag {
        name: "web.page-title",
        value: |o| o.page_title.clone(),
        shown: "=\"spate\"",
        help: "Document title of the web UI's pages.",
        kind: Kind::Value(|o, v| {
            o.page_title = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members",
        value: |o| o.cluster.members.join(","),
        shown: "=\"\"",
        help: "Comma-separated names of the cluster's members (this one included): targets are shared among them by rendezvous hashing. Empty: no cluster.",
        kind: Kind::Value(|o, v| {
            o.cluster.members = comma_list(v);
            Ok(())
        }),
    },
    Flag {
        name: "cluster.member",
        value: |o| o.cluster.member.clone().unwrap_or_default(),
        shown: "=<hostname>",
        help: "This member's name in --cluster.members.",
        kind: Kind::Value(|o, v| {
            o.cluster.member = Some(v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members-count",
        value: |o| o.cluster.members_count.to_string(),
        shown: "=0",
        help: "vmagent's form: the number of members, named 0 to count-1 (with --cluster.member-num).",
        kind: Kind::Value(|o, v| {
            o.cluster.members_count = v
                .parse()
                .map_err(|_| format!("invalid members count {v:?}"))?;
            Ok(())
        }),
    },
    Flag {
        name: "cluster.member-num",
        value: |o| o.cluster.member_num.clone().unwrap_or_default(),
        shown: "=\"\"",
        help: "vmagent's form: this member's number, or a name ending in it (a StatefulSet pod name such as spate-2).",
        kind: Kind::Value(|o, v| {
            o.cluster.member_num = Some(v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "cluster.replication-factor",
        value: |o| o.cluster.replication_factor.to_string(),
        shown: "=1",
        help: "How many members scrape each target (2 for an HA pair whose receiver deduplicates).",
        kind: Kind::Value(|o, v| {
            o.cluster.replication_factor = v
                .parse()
                .map_err(|_| format!("invalid replication factor {v:?}"))?;
            Ok(())
        }),
    },
    Flag {
        name: "cluster.name",
        value: |o| o.cluster.name.clone(),
        shown: "=\"spate\"",
        help: "The cluster's name: every member seeds the scrape phase with it, so a target that moves keeps its timestamps.",
        kind: Kind::Value(|o, v| {
            o.cluster.name = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members-file",
        value: |o| path_value(&o.cluster.members_file),
        shown: "=\"\"",
        help: "A file listing the cluster's members (one per line or comma-separated), read again every --cluster.refresh-interval.",
        kind: Kind::Value(|o, v| {
            o.cluster.members_file = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members-dns",
        value: |o| o.cluster.members_dns.clone().unwrap_or_default(),
        shown: "=\"\"",
        help: "A DNS name (a headless service) whose records list the members, looked up every --cluster.refresh-interval.",
        kind: Kind::Value(|o, v| {
            o.cluster.members_dns = Some(v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members-dns-type",
        value: |o| o.cluster.members_dns_type.clone(),
        shown: "=SRV",
        help: "The records of --cluster.members-dns: SRV (members named by their target's first label, as StatefulSet pods) or A/AAAA (members named by address).",
        kind: Kind::Value(|o, v| {
            o.cluster.members_dns_type = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "cluster.members-kubernetes",
        value: |o| o.cluster.members_kubernetes.clone().unwrap_or_default(),
        shown: "=\"\"",
        help: "[namespace/]service: the members are the ready pods behind this Kubernetes service (watched; pods named by pod name).",
        kind: Kind::Value(|o, v| {
            o.cluster.members_kubernetes = Some(v.to_string());
            Ok(())
        }),
    },
    Flag {
        name: "cluster.kubeconfig-file",
        value: |o| path_value(&o.cluster.kubeconfig),
        shown: "=\"\"",
        help: "The kubeconfig --cluster.members-kubernetes uses (default: the pod's service account).",
        kind: Kind::Value(|o, v| {
            o.cluster.kubeconfig = Some(PathBuf::from(v));
            Ok(())
        }),
    },
    Flag {
        name: "cluster.refresh-interval",
        value: |o| PromDuration(o.cluster.refresh_interval).to_string(),
        shown: "=10s",
        help: "How often a members file or DNS name is read again; a target moving to another member is kept at least this long (and one scrape interval) so the members' views overlap.",
        kind: Kind::Value(|o, v| {
            o.cluster.refresh_interval = duration(v, false)?;
            Ok(())
        }),
    },
    Flag {
        name: "cluster.ha-tracker",
        value: |o| o.cluster.ha_tracker.to_string(),
        shown: "",
        help: "Cortex/Mimir HA-tracker form: members form groups of --cluster.replication-factor replicas by the number ending their names, targets are shared among groups, and each member adds the external labels --cluster.ha-cluster-label=<name>-<group> and --cluster.ha-replica-label=<member>.",
        kind: Kind::Switch {
            set: |o, b| o.cluster.ha_tracker = b,
            negatable: true,
        },
    },
    Flag {
        name: "cluster.ha-cluster-label",
        value: |o| o.cluster.ha_cluster_label.clone(),
        shown: "=cluster",
        help: "The external label naming a member's HA group (with --cluster.ha-tracker).",
        kind: Kind::Value(|o, v| {
            o.cluster.ha_cluster_label = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "cluster.ha-replica-label",
        value: |o| o.cluster.ha_replica_label.clone(),
        shown: "=__replica__",
        help: "The external label naming the member itself (with --cluster.ha-tracker).",
        kind: Kind::Value(|o, v| {
            o.cluster.ha_replica_label = v.to_string();
            Ok(())
        }),
    },
    Flag {
        name: "cluster.key-labels",
        value: |o| o.cluster.key_labels.join(","),
        shown: "=\"\"",
        help: "Comma-separated target labels (after relabeling) added to the key targets are shared by, besides job and scrape URL.",
        kind: Kind::Value(|o, v| {
            o.cluster.key_labels = comma_list(v);
            Ok(())
        }),
    },
    Flag {
        name: "cluster.unsharded-jobs",
        value: |o| o.cluster.unsharded_jobs.join(","),
        shown: "=\"\"",
        help: "Comma-separated job names every member scrapes in full (not shared), such as each agent's own metrics.",
        kind: Kind::Value(|o, v| {
            o.cluster.unsharded_jobs = comma_list(v);
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.use-lockfile",
        value: |o| (!o.no_lockfile).to_string(),
        shown: "",
        help: "Prometheus 2's form of --no-storage.agent.no-lockfile: lock the storage directory (the default).",
        kind: Kind::Switch {
            set: |o, b| o.no_lockfile = !b,
            negatable: true,
        },
    },
    Flag {
        name: "scrape.adjust-timestamps",
        value: |o| o.timestamp_tolerance.is_some().to_string(),
        shown: "",
        help: "Stamp a scrape with its tick's exact time when it starts within --scrape.timestamp-tolerance of it (on by default, as in Prometheus).",
        kind: Kind::Switch {
            set: |o, b| {
                o.timestamp_tolerance =
                    b.then_some(o.timestamp_tolerance.unwrap_or(Duration::from_millis(2)))
            },
            negatable: true,
        },
    },
    Flag {
        name: "scrape.timestamp-tolerance",
        value: |o| {
            o.timestamp_tolerance
                .map(|d| PromDuration(d).to_string())
                .unwrap_or_default()
        },
        shown: "=2ms",
        help: "How far from its tick a scrape may start and still be stamped with the tick's time (at most 1% of the interval).",
        kind: Kind::Value(|o, v| {
            let d = duration(v, true)?;
            if o.timestamp_tolerance.is_some() {
                o.timestamp_tolerance = Some(d);
            }
            Ok(())
        }),
    },
    Flag {
        name: "enable-feature",
        value: |o| {
            if o.auto_reload {
                "agent,auto-reload-config".into()
            } else {
                "agent".into()
            }
        },
        shown: "=...",
        help: "Comma-separated feature names: 'agent' (spate always runs as an agent), 'expand-external-labels' (always on, as in Prometheus 3), 'auto-reload-config' (as --config.auto-reload); other names are refused.",
        kind: Kind::Value(|o, v| {
            for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                match f {
                    "agent" | "expand-external-labels" => {}
                    "auto-reload-config" => o.auto_reload = true,
                    _ => {
                        return Err(format!(
                            "unknown or unsupported feature '{f}' (spate accepts: agent, expand-external-labels, auto-reload-config)"
                        ));
                    }
                }
            }
            Ok(())
        }),
    },
    Flag {
        name: "config.auto-reload",
        value: |o| o.auto_reload.to_string(),
        shown: "",
        help: "Reload the configuration when its file's content changes (checked every --config.auto-reload-interval).",
        kind: Kind::Switch {
            set: |o, b| o.auto_reload = b,
            negatable: true,
        },
    },
    Flag {
        name: "config.auto-reload-interval",
        value: |o| PromDuration(o.auto_reload_interval).to_string(),
        shown: "=30s",
        help: "How often --config.auto-reload checks the configuration file.",
        kind: Kind::Value(|o, v| {
            let d = duration(v, false)?;
            if d < Duration::from_secs(1) {
                return Err("the interval must be at least 1s".into());
            }
            o.auto_reload_interval = d;
            Ok(())
        }),
    },
    Flag {
        name: "agent",
        value: |_| "true".into(),
        shown: "",
        help: "Accepted for Prometheus 3 command lines; spate is always an agent.",
        kind: Kind::Switch {
            set: |_, _| {},
            negatable: false,
        },
    },
    Flag {
        name: "log.level",
        value: |o| o.log_level.as_str().into(),
        shown: "=info",
        help: "Only log messages at or above this level: debug, info, warn, error.",
        kind: Kind::Value(|o, v| {
            o.log_level = Level::parse(v).ok_or("expected one of debug, info, warn, error")?;
            Ok(())
        }),
    },
    Flag {
        name: "log.format",
        value: |o| match o.log_format {
            Format::Logfmt => "logfmt".into(),
            Format::Json => "json".into(),
        },
        shown: "=logfmt",
        help: "Output format of log messages: logfmt, json.",
        kind: Kind::Value(|o, v| {
            o.log_format = match v {
                "logfmt" => Format::Logfmt,
                "json" => Format::Json,
                _ => return Err("expected logfmt or json".into()),
            };
            Ok(())
        }),
    },
    Flag {
        name: "cores",
        value: |o| o.cores.map(|n| n.to_string()).unwrap_or_default(),
        shown: "=N",
        help: "Data-plane cores (pinned threads). Default: every CPU this process may run on.",
        kind: Kind::Value(|o, v| {
            let n = v.parse().ok().filter(|n| *n > 0);
            o.cores = Some(n.ok_or("expected a positive integer")?);
            Ok(())
        }),
    },
    Flag {
        name: "storage.remote.flush-deadline",
        value: |o| PromDuration(o.flush_deadline).to_string(),
        shown: "=1m",
        help: "How long to keep sending queued samples on shutdown (what is left stays in the WAL and is sent after restart).",
        kind: Kind::Value(|o, v| {
            o.flush_deadline = duration(v, false)?;
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.wal-segment-size",
        value: |o| format_bytes(o.wal_segment_size),
        shown: "=128MB",
        help: "Size of a WAL segment file.",
        kind: Kind::Value(|o, v| {
            o.wal_segment_size = size(v)?.min(u64::from(u32::MAX) / 2);
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.wal-compression-type",
        value: |o| match o.wal_compression_type {
            crate::wal::Compression::Zstd => "zstd".into(),
            _ => "snappy".into(),
        },
        shown: "=snappy",
        help: "How WAL records are compressed: snappy or zstd (zstd takes more CPU and less disk).",
        kind: Kind::Value(|o, v| {
            o.wal_compression_type = compression_type(v)?;
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.wal-compression",
        value: |o| o.wal_compression.to_string(),
        shown: "",
        help: "Compress WAL records with snappy (default on; also =snappy, =zstd, =none).",
        kind: Kind::SwitchOrValue {
            set: |o, b| o.wal_compression = b,
            value: |o, v| {
                match v {
                    "none" => o.wal_compression = false,
                    "snappy" | "zstd" => {
                        o.wal_compression = true;
                        o.wal_compression_type = compression_type(v)?;
                    }
                    _ => return Err("expected true, false, snappy, zstd or none".into()),
                }
                Ok(())
            },
        },
    },
    Flag {
        name: "storage.agent.wal-fsync-interval",
        value: |o| PromDuration(o.wal_fsync_interval).to_string(),
        shown: "=1s",
        help: "Most time between fdatasync calls on the WAL (0s: every commit): what a power loss can take. Commits are written before they return, so a crash of spate loses none.",
        kind: Kind::Value(|o, v| {
            o.wal_fsync_interval = duration(v, true)?;
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.no-lockfile",
        value: |o| o.no_lockfile.to_string(),
        shown: "",
        help: "Do not lock the storage directory (it is locked by default so that two agents never share one WAL).",
        kind: Kind::Switch {
            set: |o, b| o.no_lockfile = b,
            negatable: false,
        },
    },
    Flag {
        name: "storage.agent.retention.max-time",
        value: |o| PromDuration(o.wal_max_time).to_string(),
        shown: "=0s",
        help: "Delete WAL segments last written longer ago than this, sent or not (0s: no age bound).",
        kind: Kind::Value(|o, v| {
            o.wal_max_time = duration(v, true)?;
            Ok(())
        }),
    },
    Flag {
        name: "storage.agent.retention.max-size",
        value: |o| {
            o.wal_max_size
                .map(format_bytes)
                .unwrap_or_else(|| "0B".into())
        },
        shown: "=SIZE",
        help: "Bound on the WAL's disk use (e.g. 10GB). Default: a fifth of the filesystem holding --storage.agent.path.",
        kind: Kind::Value(|o, v| {
            o.wal_max_size = Some(size(v)?);
            Ok(())
        }),
    },
];

/// Every flag of `spate run` with its value in effect, for `/api/v1/status/flags`.
pub fn flag_values(opts: &AgentOptions) -> Vec<(String, String)> {
    FLAGS
        .iter()
        .map(|f| (f.name.to_string(), (f.value)(opts)))
        .collect()
}

/// A byte size as Prometheus' flags show one: the largest unit that divides it (`128MB`).
fn format_bytes(b: u64) -> String {
    for (shift, unit) in [(40, "TB"), (30, "GB"), (20, "MB"), (10, "KB")] {
        if b >= 1 << shift && b.is_multiple_of(1 << shift) {
            return format!("{}{unit}", b >> shift);
        }
    }
    format!("{b}B")
}

/// `--help`: the head, every flag of [`FLAGS`] with its help wrapped, and the commands.
pub fn usage() -> String {
    const INDENT: usize = 33;
    const WIDTH: usize = 93;
    let mut out = format!(
        "{USAGE_HEAD}\nFlags:\n  -h, --help                     Show this help.\n      --version                  Show the version.\n"
    );
    for f in FLAGS {
        let mut first = match f.kind {
            Kind::SwitchOrValue { .. } => format!("      --[no-]{}{}", f.name, f.shown),
            _ => format!("      --{}{}", f.name, f.shown),
        };
        if first.len() + 1 >= INDENT {
            out.push_str(&first);
            out.push('\n');
            first = String::new();
        }
        let mut line = format!("{first:INDENT$}");
        for word in f.help.split(' ') {
            if line.len() + 1 + word.len() > WIDTH && line.len() > INDENT {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(INDENT);
            }
            if line.len() > INDENT {
                line.push(' ');
            }
            line.push_str(word);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(USAGE_COMMANDS);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spate: error: {}, try --help", self.0)
    }
}

/// Parses the command line (without the program name): flags from [`FLAGS`], then a command.
pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut opts = AgentOptions::default();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" || arg == "--help-long" || arg == "--help-man" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if arg.starts_with('-') && arg.len() > 1 {
                return Err(CliError(format!("unknown short flag '{arg}'")));
            }
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name == "version" {
            return Ok(Command::Version);
        }
        let negated = name.strip_prefix("no-");
        let Some(f) = FLAGS
            .iter()
            .find(|f| f.name == name || negated == Some(f.name))
        else {
            let base = negated.unwrap_or(name);
            match PROMETHEUS_FLAGS.iter().find(|(n, _)| *n == base) {
                Some((_, Foreign::ServerOnly)) => {
                    return Err(CliError(format!(
                        "The following flag(s) can not be used in agent mode: [\"--{base}\"]"
                    )));
                }
                Some((_, Foreign::Refused(why))) => {
                    return Err(CliError(format!(
                        "flag '--{base}' is a Prometheus flag spate does not support: {why}"
                    )));
                }
                Some((_, Foreign::NoEffect { value, why })) => {
                    if *value && inline.is_none() {
                        i += 1;
                    }
                    opts.ignored_flags.push((base.to_string(), why));
                    continue;
                }
                None => return Err(CliError(format!("unknown long flag '--{name}'"))),
            }
        };
        let bad = |v: &str, e: String| {
            CliError(format!("invalid value '{v}' for flag '--{}': {e}", f.name))
        };
        let switch =
            |set: fn(&mut AgentOptions, bool), opts: &mut AgentOptions, negatable: bool| {
                if negated.is_some() && !negatable {
                    return Err(CliError(format!("unknown long flag '--{name}'")));
                }
                let on = match inline {
                    None => true,
                    Some("true") => true,
                    Some("false") => false,
                    Some(v) => {
                        return Err(CliError(format!(
                            "flag '--{}' is a switch and takes no value, got '{v}'",
                            f.name
                        )));
                    }
                };
                set(opts, on != negated.is_some());
                Ok(())
            };
        match f.kind {
            Kind::Switch { set, negatable } => switch(set, &mut opts, negatable)?,
            Kind::SwitchOrValue { set, value } => match inline {
                Some(v) if negated.is_none() && !matches!(v, "true" | "false") => {
                    value(&mut opts, v).map_err(|e| bad(v, e))?
                }
                _ => switch(set, &mut opts, true)?,
            },
            Kind::Value(set) => {
                if negated.is_some() {
                    return Err(CliError(format!("unknown long flag '--{name}'")));
                }
                let v = match inline {
                    Some(v) => v,
                    None => {
                        let v = args.get(i).ok_or_else(|| {
                            CliError(format!("expected argument for flag '--{name}'"))
                        })?;
                        i += 1;
                        v.as_str()
                    }
                };
                set(&mut opts, v).map_err(|e| bad(v, e))?;
            }
        }
    }
    match positional.first().map(String::as_str) {
        None | Some("run") if positional.len() <= 1 => Ok(Command::Run(Box::new(opts))),
        Some("check-config") => {
            let files: Vec<PathBuf> = positional[1..].iter().map(PathBuf::from).collect();
            if files.is_empty() {
                return Err(CliError(
                    "required argument 'config-files' not provided to check-config".into(),
                ));
            }
            Ok(Command::CheckConfig(files))
        }
        Some("run") => Err(CliError(format!("unexpected argument '{}'", positional[1]))),
        Some(other) => Err(CliError(format!("unknown command or argument '{other}'"))),
        None => unreachable!("handled by the first arm"),
    }
}

/// A byte size as Prometheus' flags take it: a number and a base-2 unit (`B`, `KB`, `MB`,
/// `GB`, `TB`, also written `KiB`…).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match &s[digits..] {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn compression_type(v: &str) -> Result<crate::wal::Compression, String> {
    match v {
        "snappy" => Ok(crate::wal::Compression::Snappy),
        "zstd" => Ok(crate::wal::Compression::Zstd),
        _ => Err("expected snappy or zstd".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_flags_spate_does_not_take_are_named() {
        let err = |args: &[&str]| {
            parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                .map(|_| ())
                .unwrap_err()
                .0
        };
        assert_eq!(
            err(&["--storage.tsdb.path=data/"]),
            "The following flag(s) can not be used in agent mode: [\"--storage.tsdb.path\"]"
        );
        assert!(err(&["--web.enable-remote-write-receiver"]).contains(
            "'--web.enable-remote-write-receiver' is a Prometheus flag spate does not support"
        ));
        // Accepted without effect, with their values, and reported.
        let o = run(&[
            "--auto-gomemlimit.ratio",
            "0.9",
            "--auto-gomaxprocs",
            "--web.console.templates=consoles",
            "--config.file=p.yml",
        ]);
        assert_eq!(o.config_file, PathBuf::from("p.yml"));
        let ignored: Vec<&str> = o.ignored_flags.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            ignored,
            [
                "auto-gomemlimit.ratio",
                "auto-gomaxprocs",
                "web.console.templates"
            ]
        );
        assert!(run(&["--no-storage.agent.use-lockfile"]).no_lockfile);
        assert!(!run(&["--storage.agent.use-lockfile"]).no_lockfile);
        assert_eq!(
            run(&["--scrape.timestamp-tolerance=10ms"]).timestamp_tolerance,
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            run(&["--no-scrape.adjust-timestamps"]).timestamp_tolerance,
            None
        );
        assert!(matches!(
            parse(&["--help-long".to_string()]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn auto_reload_and_feature_names() {
        assert!(!run(&[]).auto_reload);
        assert!(run(&["--config.auto-reload"]).auto_reload);
        let o = run(&["--enable-feature=agent,expand-external-labels,auto-reload-config"]);
        assert!(o.auto_reload);
        assert_eq!(o.auto_reload_interval, Duration::from_secs(30));
        assert_eq!(
            run(&["--config.auto-reload-interval=5s"]).auto_reload_interval,
            Duration::from_secs(5)
        );
        for (args, err) in [
            (&["--config.auto-reload-interval=500ms"][..], "at least 1s"),
            (
                &["--enable-feature=exemplar-storage"][..],
                "unsupported feature 'exemplar-storage'",
            ),
        ] {
            let e = parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                .map(|_| ())
                .unwrap_err();
            assert!(e.0.contains(err), "{args:?}: {}", e.0);
        }
    }

    #[test]
    fn listen_address_without_a_host() {
        assert_eq!(
            run(&["--web.listen-address=:9095"]).listen_address,
            "0.0.0.0:9095"
        );
        assert_eq!(
            run(&["--web.listen-address=127.0.0.1:1"]).listen_address,
            "127.0.0.1:1"
        );
    }

    #[test]
    fn cluster_flags() {
        use crate::cluster::{DnsKind, Source};
        let host = || Some("spate-3".to_string());
        assert_eq!(run(&[]).cluster.setup(host), Ok(None));
        let c = run(&["--cluster.members-dns=spate.ns.svc"])
            .cluster
            .setup(host)
            .unwrap()
            .unwrap();
        assert_eq!(c.membership.me, "spate-3");
        assert_eq!(
            c.source,
            Source::Dns {
                name: "spate.ns.svc".into(),
                kind: DnsKind::Srv
            }
        );
        let c = run(&["--cluster.members-kubernetes=monitoring/spate"])
            .cluster
            .setup(host)
            .unwrap()
            .unwrap();
        assert!(
            matches!(c.source, Source::Kubernetes { namespace: Some(ref n), ref service, .. } if n == "monitoring" && service == "spate")
        );
        // HA-tracker form: this member's group and replica become external labels.
        let c = run(&[
            "--cluster.members=spate-0,spate-1,spate-2,spate-3",
            "--cluster.replication-factor=2",
            "--cluster.ha-tracker",
            "--cluster.name=eu",
        ])
        .cluster
        .setup(host)
        .unwrap()
        .unwrap();
        assert_eq!(
            c.ha_labels,
            vec![
                ("cluster".to_string(), "eu-1".to_string()),
                ("__replica__".to_string(), "spate-3".to_string())
            ]
        );
        for (args, err) in [
            (
                &["--cluster.members=a", "--cluster.members-dns=x"][..],
                "give one member list",
            ),
            (&["--cluster.member=a"][..], "need a member list"),
            (
                &["--cluster.members-dns=x", "--cluster.members-dns-type=MX"][..],
                "is not SRV, A or AAAA",
            ),
            (
                &[
                    "--cluster.members=a,b",
                    "--cluster.member=a",
                    "--cluster.ha-tracker",
                ][..],
                "ending in a number",
            ),
            (
                &["--cluster.members-kubernetes=ns/"][..],
                "[namespace/]service",
            ),
            (
                &["--cluster.members-count=3"][..],
                "needs --cluster.member-num",
            ),
        ] {
            let e = run(args).cluster.setup(host).unwrap_err();
            assert!(e.contains(err), "{args:?}: {e}");
        }
    }

    #[test]
    fn wal_flags() {
        let o = run(&[]);
        assert_eq!(o.wal_segment_size, 128 << 20);
        assert!(o.wal_compression);
        assert_eq!(o.wal_max_size, None);
        let o = run(&[
            "--storage.agent.wal-segment-size=64MB",
            "--no-storage.agent.wal-compression",
            "--storage.agent.retention.max-size",
            "2GB",
            "--storage.agent.wal-fsync-interval=0",
        ]);
        assert_eq!(o.wal_segment_size, 64 << 20);
        assert!(!o.wal_compression);
        assert_eq!(o.wal_max_size, Some(2 << 30));
        assert_eq!(o.wal_fsync_interval, Duration::ZERO);
        assert!(run(&["--storage.agent.wal-compression=snappy"]).wal_compression);
        let z = run(&["--storage.agent.wal-compression-type=zstd"]);
        assert!(z.wal_compression && z.wal_compression_type == crate::wal::Compression::Zstd);
        let z = run(&["--storage.agent.wal-compression=zstd"]);
        assert!(z.wal_compression && z.wal_compression_type == crate::wal::Compression::Zstd);
        assert!(run(&["--storage.agent.no-lockfile"]).no_lockfile);
        assert!(run(&["--web.enable-lifecycle"]).enable_lifecycle);
        assert!(!run(&[]).enable_lifecycle);
        assert!(!run(&[]).no_lockfile);
        for (args, want) in [
            (
                &["--storage.agent.wal-segment-size=12XB"][..],
                "flag '--storage.agent.wal-segment-size'",
            ),
            (
                &["--storage.agent.retention.max-size=1KB"][..],
                "at least 4KB",
            ),
            (
                &["--storage.agent.wal-compression-type=lz4"][..],
                "expected snappy or zstd",
            ),
        ] {
            let e = p(args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    fn p(args: &[&str]) -> Result<Command, CliError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> AgentOptions {
        match p(args) {
            Ok(Command::Run(o)) => *o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_match_prometheus_agent() {
        let o = run(&[]);
        assert_eq!(o.config_file, PathBuf::from("prometheus.yml"));
        assert_eq!(o.storage_path, PathBuf::from("data-agent/"));
        assert_eq!(o.listen_address, "0.0.0.0:9095");
        assert_eq!(o.log_level, Level::Info);
        assert_eq!(o.log_format, Format::Logfmt);
        assert_eq!(o.cores, None);
        assert_eq!(o.flush_deadline, Duration::from_secs(60));
    }

    #[test]
    fn accepts_both_value_styles_and_agent_flags() {
        let o = run(&[
            "--config.file=/etc/p.yml",
            "--storage.agent.path",
            "/var/lib/spate",
            "--enable-feature=agent",
            "--agent",
            "--web.listen-address=127.0.0.1:0",
            "--log.level=debug",
            "--log.format",
            "json",
            "--cores=2",
            "--storage.remote.flush-deadline=5s",
        ]);
        assert_eq!(o.config_file, PathBuf::from("/etc/p.yml"));
        assert_eq!(o.storage_path, PathBuf::from("/var/lib/spate"));
        assert_eq!(o.listen_address, "127.0.0.1:0");
        assert_eq!(o.log_level, Level::Debug);
        assert_eq!(o.log_format, Format::Json);
        assert_eq!(o.cores, Some(2));
        assert_eq!(o.flush_deadline, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--nope"], "unknown long flag '--nope'"),
            (&["-x"], "unknown short flag '-x'"),
            (
                &["--log.level=loud"],
                "invalid value 'loud' for flag '--log.level'",
            ),
            (
                &["--log.format=xml"],
                "invalid value 'xml' for flag '--log.format'",
            ),
            (&["--cores=0"], "invalid value '0' for flag '--cores'"),
            (&["--cores=two"], "invalid value 'two' for flag '--cores'"),
            (
                &["--web.listen-address=nohost"],
                "invalid value 'nohost' for flag '--web.listen-address'",
            ),
            (
                &["--enable-feature=agent,exemplar-storage"],
                "unsupported feature 'exemplar-storage'",
            ),
            (
                &["--config.file"],
                "expected argument for flag '--config.file'",
            ),
            (
                &["--storage.remote.flush-deadline=1"],
                "flag '--storage.remote.flush-deadline'",
            ),
            (&["check-config"], "required argument"),
            (&["frobnicate"], "unknown command or argument 'frobnicate'"),
        ];
        for (args, want) in cases {
            let err = p(args).expect_err(&format!("{args:?}"));
            assert!(err.to_string().contains(want), "{args:?}: got {err}");
            assert!(err.to_string().starts_with("spate: error: "));
        }
    }

    #[test]
    fn help_lists_every_flag_with_its_help() {
        let help = usage();
        for f in FLAGS {
            assert!(
                help.contains(&format!("{}{}", f.name, f.shown)),
                "{}",
                f.name
            );
            let first = f.help.split(' ').take(3).collect::<Vec<_>>().join(" ");
            assert!(help.contains(&first), "{}: {first}", f.name);
        }
        assert!(help.lines().all(|l| l.len() <= 93), "{help}");
        assert!(help.contains("--[no-]storage.agent.wal-compression"));
    }

    #[test]
    fn switches_take_true_false_and_no() {
        assert!(run(&["--web.enable-lifecycle=true"]).enable_lifecycle);
        assert!(!run(&["--web.enable-lifecycle=false"]).enable_lifecycle);
        assert!(!run(&["--web.enable-lifecycle", "--no-web.enable-lifecycle"]).enable_lifecycle);
        assert!(!run(&["--storage.agent.wal-compression=false"]).wal_compression);
        assert!(run(&["--storage.agent.wal-compression=true"]).wal_compression);
        for (args, want) in [
            (&["--agent=yes"][..], "is a switch and takes no value"),
            (&["--no-agent"][..], "unknown long flag '--no-agent'"),
            (&["--no-cores=1"][..], "unknown long flag '--no-cores'"),
            (
                &["--storage.agent.wal-compression=lz4"][..],
                "expected true, false, snappy, zstd or none",
            ),
        ] {
            let e = p(args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn subcommands() {
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(
            p(&["check-config", "a.yml", "b.yml"]),
            Ok(Command::CheckConfig(vec![
                PathBuf::from("a.yml"),
                PathBuf::from("b.yml")
            ]))
        );
        assert!(matches!(p(&["run", "--cores=1"]), Ok(Command::Run(_))));
    }
}
