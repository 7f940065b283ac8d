//! The Prometheus configuration file: the YAML model, Prometheus' defaults, and validation with
//! errors that name the file, the line and the field.
//!
//! Parsing happens in two steps. `raw` mirrors the YAML exactly (unknown fields are errors,
//! fields spate does not implement yet are parsed and refused by name); `resolve` applies
//! Prometheus' defaults and cross-field rules and produces the [`Config`] the agent runs on.
//! Reload (a later stage) reuses exactly this path.

pub mod client;
mod duration;
mod env;
pub mod paths;
mod raw;
pub mod redact;

pub use duration::{PromDuration, parse_duration};
pub mod kube_selector;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::exposition::ScrapeProtocol;
use crate::http::Url;

/// A fully resolved configuration: every default applied, every cross-field rule checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub global: GlobalConfig,
    pub scrape_configs: Vec<ScrapeConfig>,
    pub remote_write: Vec<RemoteWriteConfig>,
}

impl Config {
    /// Adds (or replaces) external labels the command line gives (a cluster's HA-tracker
    /// labels), keeping them sorted by name.
    pub fn add_external_labels(&mut self, labels: &[(String, String)]) {
        let ext = &mut self.global.external_labels;
        for (k, v) in labels {
            ext.retain(|(n, _)| n != k);
            ext.push((k.clone(), v.clone()));
        }
        ext.sort();
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GlobalConfig {
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    /// Sorted by name, empty values removed.
    pub external_labels: Vec<(String, String)>,
    pub scrape_protocols: Vec<ScrapeProtocol>,
    pub scrape_native_histograms: bool,
    pub always_scrape_classic_histograms: bool,
    /// `convert_classic_histograms_to_nhcb`, for jobs that do not set their own.
    pub convert_classic_histograms_to_nhcb: bool,
    pub limits: ScrapeLimits,
    pub extra_scrape_metrics: bool,
}

/// Scrape limits; 0 means no limit. A job's zero takes the global value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrapeLimits {
    /// Uncompressed body bytes.
    pub body_size_limit: u64,
    /// Samples left after metric relabeling.
    pub sample_limit: u64,
    /// Labels per series, `__name__` included.
    pub label_limit: u64,
    pub label_name_length_limit: u64,
    pub label_value_length_limit: u64,
    /// Active targets per job.
    pub target_limit: u64,
    /// Dropped targets kept for the targets API.
    pub keep_dropped_targets: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    pub job_name: String,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub metrics_path: String,
    pub scheme: String,
    /// Sorted by parameter name.
    pub params: Vec<(String, Vec<String>)>,
    pub static_configs: Vec<StaticConfig>,
    pub file_sd_configs: Vec<FileSdConfig>,
    pub http_sd_configs: Vec<HttpSdConfig>,
    pub dns_sd_configs: Vec<DnsSdConfig>,
    pub kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    pub consul_sd_configs: Vec<ConsulSdConfig>,
    pub docker_sd_configs: Vec<DockerSdConfig>,
    pub ec2_sd_configs: Vec<Ec2SdConfig>,
    /// How targets are requested: auth, headers, redirects.
    pub http: std::sync::Arc<client::HttpClientConfig>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub enable_compression: bool,
    /// In order of preference: the `Accept` header.
    pub scrape_protocols: Vec<ScrapeProtocol>,
    /// The parser for a response with a missing or unknown `Content-Type`.
    pub fallback_scrape_protocol: Option<ScrapeProtocol>,
    /// Ingest native histograms as such (protobuf only).
    pub scrape_native_histograms: bool,
    /// Keep the classic series of histograms that also have native buckets (and of those
    /// converted to custom buckets).
    pub always_scrape_classic_histograms: bool,
    /// Classic histograms become native histograms with custom buckets.
    pub convert_classic_histograms_to_nhcb: bool,
    /// `native_histogram_bucket_limit` and `native_histogram_min_bucket_factor`.
    pub native_histogram_limits: crate::entry::Resolution,
    pub relabel_configs: crate::relabel::Rules,
    /// Shared by the job's targets (and their cores' relabel scratch).
    pub metric_relabel_configs: std::sync::Arc<crate::relabel::Rules>,
    /// Staleness markers also for series exposed with explicit timestamps.
    pub track_timestamps_staleness: bool,
    pub limits: ScrapeLimits,
    /// Adds `scrape_timeout_seconds`, `scrape_sample_limit` and `scrape_body_size_bytes`.
    pub extra_scrape_metrics: bool,
    /// Where failed scrapes are logged (the job's file, else the global one).
    pub scrape_failure_log_file: Option<String>,
    /// `metric_name_validation_scheme`: the names relabeling may write and a scrape takes.
    pub name_validation: crate::names::Validation,
    /// `metric_name_escaping_scheme`: what the target is asked to do with other names.
    pub name_escaping: crate::names::Escaping,
}

/// `file_sd_configs`: target groups read from JSON or YAML files.
#[derive(Clone, Debug, PartialEq)]
pub struct FileSdConfig {
    /// Paths; the last component may hold a `*`.
    pub files: Vec<String>,
    pub refresh_interval: Duration,
}

/// `http_sd_configs`: target groups fetched from a URL.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSdConfig {
    pub url: Url,
    /// The URL as written (`__meta_url`).
    pub url_text: String,
    pub http: client::HttpClientConfig,
    pub refresh_interval: Duration,
}

/// `consul_sd_configs`: services from Consul's catalog, followed with blocking queries.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsulSdConfig {
    /// `scheme://server` and `path_prefix`.
    pub url: Url,
    /// `token`, sent as `X-Consul-Token`.
    pub token: Option<client::Secret>,
    /// Empty: the agent's own datacenter.
    pub datacenter: String,
    pub namespace: String,
    pub partition: String,
    pub tag_separator: String,
    pub allow_stale: bool,
    pub refresh_interval: Duration,
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Services must have every one of these tags.
    pub tags: Vec<String>,
    pub node_meta: Vec<(String, String)>,
    /// A Consul filter expression.
    pub filter: String,
    pub http: client::HttpClientConfig,
}

/// `docker_sd_configs`: containers from a Docker Engine, listed every `refresh_interval`.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerSdConfig {
    pub host: DockerHost,
    /// The port of containers that publish no TCP port.
    pub port: u16,
    /// The address of containers in host networking mode.
    pub host_networking_host: String,
    /// With several networks, only the first by name.
    pub match_first_network: bool,
    /// `filters` as the Engine API's `filters` query parameter (JSON).
    pub filters: String,
    pub refresh_interval: Duration,
    pub http: client::HttpClientConfig,
}

/// `ec2_sd_configs`: instances from EC2's `DescribeInstances`, every `refresh_interval`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ec2SdConfig {
    /// Region, keys or profile, signed with SigV4 (service `ec2`).
    pub sigv4: crate::http::sigv4::SigV4,
    /// The API endpoint (`https://ec2.<region>.amazonaws.com` by default).
    pub endpoint: Url,
    pub port: u16,
    /// `filters` (name, values).
    pub filters: Vec<(String, Vec<String>)>,
    pub refresh_interval: Duration,
    pub http: client::HttpClientConfig,
}

/// Where the Docker Engine API is.
#[derive(Clone, Debug, PartialEq)]
pub enum DockerHost {
    Unix(std::path::PathBuf),
    Http(Url),
}

/// `kubernetes_sd_configs`: targets from the Kubernetes API, listed and watched.
#[derive(Clone, Debug, PartialEq)]
pub struct KubernetesSdConfig {
    pub role: KubeRole,
    /// Where the API server is and how requests reach it.
    pub api: KubeApi,
    /// `namespaces.names`; empty (and no `own_namespace`) means every namespace.
    pub namespaces: Vec<String>,
    /// `namespaces.own_namespace`: the pod's own namespace (in-cluster only).
    pub own_namespace: bool,
    /// Label and field selectors for the objects of each role watched.
    pub selectors: Vec<KubeSelector>,
    /// `attach_metadata.node`: the node's name, labels and annotations on pod, endpoints and
    /// endpointslice targets.
    pub attach_node: bool,
    /// `attach_metadata.namespace`: the namespace's labels and annotations.
    pub attach_namespace: bool,
}

/// How the API server is reached.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeApi {
    /// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, its token and CA.
    InCluster,
    /// `api_server`, with the section's HTTP client settings.
    Server {
        url: Url,
        http: Box<client::HttpClientConfig>,
    },
    /// `kubeconfig_file`: its current context.
    Kubeconfig(std::path::PathBuf),
}

/// A Kubernetes discovery role: what kind of object each target comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KubeRole {
    Node,
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Ingress,
}

impl KubeRole {
    pub const ALL: [KubeRole; 6] = [
        KubeRole::Pod,
        KubeRole::Service,
        KubeRole::Endpoints,
        KubeRole::EndpointSlice,
        KubeRole::Node,
        KubeRole::Ingress,
    ];

    /// The name in the configuration (and in metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            KubeRole::Node => "node",
            KubeRole::Pod => "pod",
            KubeRole::Service => "service",
            KubeRole::Endpoints => "endpoints",
            KubeRole::EndpointSlice => "endpointslice",
            KubeRole::Ingress => "ingress",
        }
    }

    pub fn parse(s: &str) -> Option<KubeRole> {
        KubeRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One `selectors` entry: which objects of `role` are watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeSelector {
    pub role: KubeRole,
    pub label: String,
    pub field: String,
}

/// `dns_sd_configs`: targets from DNS records.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSdConfig {
    pub names: Vec<String>,
    pub record_type: DnsType,
    /// The port of A, AAAA, MX and NS targets (SRV records carry their own).
    pub port: u16,
    pub refresh_interval: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsType {
    Srv,
    A,
    Aaaa,
    Mx,
    Ns,
}

impl DnsType {
    /// The record type's code in DNS messages.
    pub fn code(self) -> u16 {
        match self {
            DnsType::A => 1,
            DnsType::Ns => 2,
            DnsType::Mx => 15,
            DnsType::Aaaa => 28,
            DnsType::Srv => 33,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct StaticConfig {
    pub targets: Vec<String>,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RemoteWriteConfig {
    pub url: Url,
    /// `name` if given, else a short stable hash of the endpoint's config (as Prometheus does).
    pub name: String,
    pub remote_timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub queue: QueueConfig,
    /// Send native histograms (Prometheus' default: false).
    pub send_native_histograms: bool,
    /// Send exemplars (from OpenMetrics and protobuf scrapes) as Prometheus does: each in an
    /// entry of its own, with its series' labels and no sample.
    pub send_exemplars: bool,
    /// Authentication, TLS, proxy and redirects, as for scrapes.
    pub http: client::HttpClientConfig,
    /// Applied to every series before it is sent to this endpoint.
    pub write_relabel_configs: std::sync::Arc<crate::relabel::Rules>,
    pub metadata: MetadataConfig,
    /// `protobuf_message: io.prometheus.write.v2.Request`: Remote Write 2.0, falling back to
    /// 1.0 when the receiver does not take it.
    pub v2: bool,
    /// AWS Signature Version 4 (Amazon Managed Service for Prometheus).
    pub sigv4: Option<crate::http::sigv4::SigV4>,
}

/// `metadata_config`: family metadata sent in requests of its own (Remote Write 1.0).
#[derive(Clone, Debug, PartialEq)]
pub struct MetadataConfig {
    pub send: bool,
    pub send_interval: Duration,
    pub max_samples_per_send: usize,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        MetadataConfig {
            send: true,
            send_interval: Duration::from_secs(60),
            max_samples_per_send: 2000,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    pub capacity: usize,
    pub max_shards: usize,
    pub min_shards: usize,
    pub max_samples_per_send: usize,
    pub batch_send_deadline: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub retry_on_http_429: bool,
    pub sample_age_limit: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 10_000,
            max_shards: 50,
            min_shards: 1,
            max_samples_per_send: 2000,
            batch_send_deadline: Duration::from_secs(5),
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: false,
            sample_age_limit: Duration::ZERO,
        }
    }
}

/// A configuration error. Displays as `FILE:LINE: FIELD: REASON` (line and field when known).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<u64>,
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Where an error was found, before the file name is known.
#[derive(Debug)]
pub(crate) struct Problem {
    /// The file it is in, when not the main one (a `scrape_config_files` file).
    file: Option<String>,
    line: Option<u64>,
    field: Option<String>,
    reason: String,
}

impl Problem {
    pub(crate) fn at(line: u64, field: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            file: None,
            line: (line > 0).then_some(line),
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            file: None,
            line: None,
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
    /// The same problem, found in `file`.
    pub(crate) fn in_file(self, file: &str) -> Problem {
        Problem {
            file: Some(self.file.unwrap_or_else(|| file.to_string())),
            ..self
        }
    }
    fn into_error(self, file: &str) -> ConfigError {
        ConfigError {
            file: self.file.unwrap_or_else(|| file.to_string()),
            line: self.line,
            field: self.field,
            reason: self.reason,
        }
    }
}

/// Reads and validates a configuration file.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: None,
        field: None,
        reason: format!("cannot read the configuration file: {e}"),
    })?;
    // Relative paths in the file are relative to its directory.
    let dir = path.parent().unwrap_or(Path::new(""));
    paths::within(dir, || load_str(&text, &name))
}

/// A checksum of the configuration file and of the files its `scrape_config_files` name
/// (their names and contents), as Prometheus' auto-reload computes it; `None` when the main
/// file cannot be read.
pub fn checksum(path: &Path) -> Option<u64> {
    let main = std::fs::read(path).ok()?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&main);
    #[derive(serde::Deserialize, Default)]
    struct Includes {
        #[serde(default)]
        scrape_config_files: Vec<String>,
    }
    let text = String::from_utf8_lossy(&main);
    let includes: Includes = serde_saphyr::from_str::<Option<Includes>>(&text)
        .ok()
        .flatten()
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new(""));
    for pattern in includes.scrape_config_files {
        let pattern = paths::within(dir, || paths::join(pattern));
        for file in paths::expand(&pattern) {
            h.update(file.as_os_str().as_encoded_bytes());
            h.update(&std::fs::read(&file).unwrap_or_default());
        }
    }
    Some(h.digest())
}

/// Validates configuration text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    raw::parse(text)
        .and_then(raw::resolve)
        .map_err(|p| p.into_error(file))
}

#[cfg(test)]
mod tests;
