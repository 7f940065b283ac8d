//! The YAML model exactly as written, and its resolution into [`super::Config`].

mod remote_write;
mod sd;

use remote_write::resolve_remote_write;
use sd::{
    consul_sd_configs, dns_sd_configs, docker_sd_configs, ec2_sd_configs, file_sd_configs,
    http_sd_configs, kubernetes_sd_configs, static_configs,
};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::client::{RawAuthorization, RawBasicAuth, RawHeader, RawOAuth2, RawTls};
use super::{
    Config, ConsulSdConfig, DnsSdConfig, DnsType, DockerHost, DockerSdConfig, Ec2SdConfig,
    FileSdConfig, GlobalConfig, HttpSdConfig, KubeApi, KubeRole, KubeSelector, KubernetesSdConfig,
    MetadataConfig, Problem, PromDuration, QueueConfig, RemoteWriteConfig, ScrapeConfig,
    ScrapeLimits, StaticConfig,
};
use crate::exposition::ScrapeProtocol;
use crate::http::Url;
use crate::names::{Escaping, Validation};
use crate::relabel::{Rule, RuleSpec, Rules};

type Field<T> = Option<Spanned<T>>;

/// Declares a YAML section: its supported fields, and the fields spate parses but refuses
/// because it does not implement them yet (never silently ignored).
macro_rules! section {
    // A discovery section with Prometheus' HTTP client settings (resolved by
    // `sd::client_settings!`).
    (
        $name:ident { $($field:ident : $ty:ty,)* } with_client_settings
        unsupported { $($unsup:ident),* $(,)? }
    ) => {
        section! {
            $name {
                $($field: $ty,)*
                basic_auth: Option<RawBasicAuth>,
                authorization: Option<RawAuthorization>,
                bearer_token: Option<String>,
                bearer_token_file: Option<String>,
                oauth2: Option<RawOAuth2>,
                http_headers: Option<BTreeMap<String, RawHeader>>,
                tls_config: Option<RawTls>,
                follow_redirects: Option<bool>,
                enable_http2: Option<bool>,
                proxy_url: Option<String>,
                no_proxy: Option<String>,
                proxy_from_environment: Option<bool>,
                proxy_connect_header: Option<BTreeMap<String, Vec<String>>>,
            }
            unsupported { $($unsup),* }
        }
    };
    (
        $name:ident { $($field:ident : $ty:ty,)* }
        unsupported { $($unsup:ident),* $(,)? }
    ) => {
        // Some fields are accepted without effect (documented in docs/compatibility.md).
        #[allow(dead_code)]
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            $(#[serde(default)] $field: $ty,)*
            $(#[serde(default)] $unsup: Field<IgnoredAny>,)*
        }

        #[allow(dead_code)]
        impl $name {
            /// The first field present that spate does not implement, with its line.
            fn unsupported(&self) -> Option<(&'static str, u64)> {
                $(if let Some(s) = &self.$unsup {
                    return Some((stringify!($unsup), s.referenced.line()));
                })*
                None
            }
        }
    };
}

section! {
    RawConfig {
        global: Option<RawGlobal>,
        scrape_configs: Option<Vec<RawScrapeConfig>>,
        remote_write: Option<Vec<RawRemoteWrite>>,
        scrape_config_files: Field<Vec<String>>,
        // Not allowed in agent mode when they have entries (Prometheus checks the lists'
        // lengths, so an empty section loads); checked first, with Prometheus' message.
        rule_files: Field<Vec<IgnoredAny>>,
        alerting: Field<RawAlerting>,
        remote_read: Field<Vec<IgnoredAny>>,
        // Read and without effect (docs/compatibility.md): the TSDB and exemplar storage of a
        // server, the OTLP receiver (refused by its flag), Prometheus' own traces, Go's GC.
        storage: Option<IgnoredAny>,
        otlp: Option<IgnoredAny>,
        tracing: Option<IgnoredAny>,
        runtime: Option<IgnoredAny>,
    }
    unsupported {}
}

/// `alerting`, read only to tell an empty section from one with entries.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlerting {
    #[serde(default)]
    alertmanagers: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    alert_relabel_configs: Option<Vec<IgnoredAny>>,
}

section! {
    RawGlobal {
        scrape_interval: Field<PromDuration>,
        scrape_timeout: Field<PromDuration>,
        evaluation_interval: Option<PromDuration>,
        rule_query_offset: Option<PromDuration>,
        external_labels: Option<BTreeMap<String, String>>,
        scrape_protocols: Field<Vec<String>>,
        scrape_native_histograms: Option<bool>,
        always_scrape_classic_histograms: Option<bool>,
        convert_classic_histograms_to_nhcb: Option<bool>,
        body_size_limit: Field<String>,
        sample_limit: Option<u64>,
        label_limit: Option<u64>,
        label_name_length_limit: Option<u64>,
        label_value_length_limit: Option<u64>,
        target_limit: Option<u64>,
        keep_dropped_targets: Option<u64>,
        extra_scrape_metrics: Option<bool>,
        scrape_failure_log_file: Option<String>,
        // Prometheus' PromQL query log: read and without effect in an agent.
        query_log_file: Option<String>,
        metric_name_validation_scheme: Field<String>,
        metric_name_escaping_scheme: Field<String>,
    }
    unsupported {}
}

section! {
    RawScrapeConfig {
        job_name: Field<String>,
        scrape_interval: Field<PromDuration>,
        scrape_timeout: Field<PromDuration>,
        metrics_path: Option<String>,
        scheme: Field<String>,
        params: Option<BTreeMap<String, Vec<String>>>,
        static_configs: Option<Vec<RawStaticConfig>>,
        file_sd_configs: Option<Vec<RawFileSd>>,
        http_sd_configs: Option<Vec<RawHttpSd>>,
        dns_sd_configs: Option<Vec<RawDnsSd>>,
        kubernetes_sd_configs: Option<Vec<RawKubernetesSd>>,
        consul_sd_configs: Option<Vec<RawConsulSd>>,
        docker_sd_configs: Option<Vec<RawDockerSd>>,
        ec2_sd_configs: Option<Vec<RawEc2Sd>>,
        honor_labels: Option<bool>,
        honor_timestamps: Option<bool>,
        enable_compression: Option<bool>,
        track_timestamps_staleness: Field<bool>,
        follow_redirects: Option<bool>,
        enable_http2: Option<bool>,
        basic_auth: Option<RawBasicAuth>,
        authorization: Option<RawAuthorization>,
        bearer_token: Option<String>,
        bearer_token_file: Option<String>,
        http_headers: Option<BTreeMap<String, RawHeader>>,
        tls_config: Option<RawTls>,
        oauth2: Option<RawOAuth2>,
        proxy_url: Option<String>,
        no_proxy: Option<String>,
        proxy_from_environment: Option<bool>,
        proxy_connect_header: Option<BTreeMap<String, Vec<String>>>,
        scrape_protocols: Field<Vec<String>>,
        fallback_scrape_protocol: Field<String>,
        scrape_native_histograms: Option<bool>,
        always_scrape_classic_histograms: Option<bool>,
        convert_classic_histograms_to_nhcb: Option<bool>,
        relabel_configs: Option<Vec<Spanned<RuleSpec>>>,
        metric_relabel_configs: Option<Vec<Spanned<RuleSpec>>>,
        body_size_limit: Field<String>,
        sample_limit: Option<u64>,
        label_limit: Option<u64>,
        label_name_length_limit: Option<u64>,
        label_value_length_limit: Option<u64>,
        target_limit: Option<u64>,
        keep_dropped_targets: Option<u64>,
        extra_scrape_metrics: Option<bool>,
        scrape_failure_log_file: Option<String>,
        metric_name_validation_scheme: Field<String>,
        metric_name_escaping_scheme: Field<String>,
        native_histogram_bucket_limit: Option<u64>,
        native_histogram_min_bucket_factor: Option<f64>,
    }
    unsupported {
        // Protocols and histograms.
        scrape_classic_histograms,
        // Service discovery other than static, file, HTTP and DNS.
        aws_sd_configs, lightsail_sd_configs, azure_sd_configs, gce_sd_configs,
        digitalocean_sd_configs, dockerswarm_sd_configs, nomad_sd_configs,
        eureka_sd_configs, hetzner_sd_configs, ionos_sd_configs, kuma_sd_configs,
        linode_sd_configs, marathon_sd_configs, nerve_sd_configs, oci_sd_configs,
        openstack_sd_configs, outscale_sd_configs, ovhcloud_sd_configs, puppetdb_sd_configs,
        scaleway_sd_configs, serverset_sd_configs, stackit_sd_configs, triton_sd_configs,
        uyuni_sd_configs, vultr_sd_configs,
    }
}

section! {
    RawFileSd {
        files: Field<Vec<String>>,
        refresh_interval: Option<PromDuration>,
    }
    unsupported {}
}

section! {
    RawDnsSd {
        names: Field<Vec<String>>,
        r#type: Field<String>,
        port: Option<u16>,
        refresh_interval: Option<PromDuration>,
    }
    unsupported {}
}

section! {
    RawHttpSd {
        url: Field<String>,
        refresh_interval: Option<PromDuration>,
        basic_auth: Option<RawBasicAuth>,
        authorization: Option<RawAuthorization>,
        bearer_token: Option<String>,
        bearer_token_file: Option<String>,
        http_headers: Option<BTreeMap<String, RawHeader>>,
        tls_config: Option<RawTls>,
        follow_redirects: Option<bool>,
        enable_http2: Option<bool>,
    }
    unsupported {
        oauth2, proxy_url, no_proxy, proxy_from_environment, proxy_connect_header,
    }
}

section! {
    RawKubernetesSd {
        role: Field<String>,
        api_server: Field<String>,
        kubeconfig_file: Field<String>,
        namespaces: Option<RawKubeNamespaces>,
        selectors: Option<Vec<Spanned<RawKubeSelector>>>,
        attach_metadata: Option<RawKubeAttach>,
    } with_client_settings
    unsupported {}
}

section! {
    RawConsulSd {
        server: Field<String>,
        path_prefix: Option<String>,
        token: Option<String>,
        datacenter: Option<String>,
        namespace: Option<String>,
        partition: Option<String>,
        scheme: Field<String>,
        username: Option<String>,
        password: Option<String>,
        services: Option<Vec<String>>,
        tags: Option<Vec<String>>,
        node_meta: Option<BTreeMap<String, String>>,
        tag_separator: Option<String>,
        allow_stale: Option<bool>,
        refresh_interval: Option<PromDuration>,
        filter: Option<String>,
    } with_client_settings
    unsupported {}
}

section! {
    RawDockerSd {
        host: Field<String>,
        port: Option<u16>,
        host_networking_host: Option<String>,
        match_first_network: Option<bool>,
        filters: Option<Vec<RawDockerFilter>>,
        refresh_interval: Option<PromDuration>,
    } with_client_settings
    unsupported {}
}

section! {
    RawEc2Sd {
        region: Option<String>,
        endpoint: Option<String>,
        access_key: Option<String>,
        secret_key: Option<String>,
        profile: Option<String>,
        refresh_interval: Option<PromDuration>,
        port: Option<u16>,
        filters: Option<Vec<RawDockerFilter>>,
        role_arn: Option<String>,
    } with_client_settings
    unsupported {}
}

section! {
    RawDockerFilter {
        name: Option<String>,
        values: Option<Vec<String>>,
    }
    unsupported {}
}

section! {
    RawKubeNamespaces {
        own_namespace: Option<bool>,
        names: Option<Vec<String>>,
    }
    unsupported {}
}

section! {
    RawKubeSelector {
        role: Option<String>,
        label: Option<String>,
        field: Option<String>,
    }
    unsupported {}
}

section! {
    RawKubeAttach {
        node: Option<bool>,
        namespace: Option<bool>,
    }
    unsupported {
        deployment, job, cronjob,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStaticConfig {
    #[serde(default)]
    targets: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

section! {
    RawRemoteWrite {
        url: Field<String>,
        name: Field<String>,
        remote_timeout: Option<PromDuration>,
        headers: Option<Spanned<BTreeMap<String, String>>>,
        queue_config: Option<RawQueueConfig>,
        metadata_config: Option<RawMetadataConfig>,
        protobuf_message: Field<String>,
        send_exemplars: Field<bool>,
        send_native_histograms: Option<bool>,
        follow_redirects: Option<bool>,
        enable_http2: Option<bool>,
        round_robin_dns: Field<bool>,
        write_relabel_configs: Option<Vec<Spanned<RuleSpec>>>,
        basic_auth: Option<RawBasicAuth>,
        authorization: Option<RawAuthorization>,
        bearer_token: Option<String>,
        bearer_token_file: Option<String>,
        tls_config: Option<RawTls>,
        oauth2: Option<RawOAuth2>,
        proxy_url: Option<String>,
        no_proxy: Option<String>,
        proxy_from_environment: Option<bool>,
        proxy_connect_header: Option<BTreeMap<String, Vec<String>>>,
        sigv4: Option<RawSigV4>,
    }
    unsupported {
        azuread, google_iam, failed_request_logging,
    }
}

section! {
    RawSigV4 {
        region: Option<String>,
        access_key: Option<String>,
        secret_key: Option<String>,
        profile: Option<String>,
        role_arn: Option<String>,
        external_id: Option<String>,
        use_fips_sts_endpoint: Option<bool>,
        session_name: Option<String>,
        tags: Option<BTreeMap<String, String>>,
        service_name: Option<String>,
    }
    unsupported {}
}

section! {
    RawQueueConfig {
        capacity: Option<i64>,
        max_shards: Option<i64>,
        min_shards: Option<i64>,
        max_samples_per_send: Option<i64>,
        batch_send_deadline: Option<PromDuration>,
        min_backoff: Option<PromDuration>,
        max_backoff: Option<PromDuration>,
        retry_on_http_429: Option<bool>,
        sample_age_limit: Option<PromDuration>,
    }
    unsupported {}
}

section! {
    RawMetadataConfig {
        send: Option<bool>,
        send_interval: Option<PromDuration>,
        max_samples_per_send: Option<i64>,
    }
    unsupported {}
}

/// Headers a user may not set on remote-write requests (Prometheus' list).
pub(super) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-encoding",
    "content-length",
    "content-type",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "www-authenticate",
    "accept-encoding",
    "x-prometheus-remote-write-version",
    "x-prometheus-remote-read-version",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

pub(super) fn parse(text: &str) -> Result<RawConfig, Problem> {
    // An empty file is a valid, empty configuration, as in Prometheus.
    Ok(parse_yaml(text)?.unwrap_or_default())
}

/// YAML into `T`, strictly (unknown fields are errors); `None` for an empty document.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<Option<T>, Problem> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let line = e.location().map(|l| l.line()).unwrap_or(0);
        let mut reason = e.to_string();
        // The position is already in front of our message, and the list of every valid field
        // name is longer than helpful.
        for cut in [" at line ", ", expected one of "] {
            if let Some(i) = reason.find(cut) {
                reason.truncate(i);
            }
        }
        Problem {
            file: None,
            line: (line > 0).then_some(line),
            field: None,
            reason,
        }
    })
}

fn unsupported(section: &str, found: Option<(&'static str, u64)>) -> Result<(), Problem> {
    match found {
        Some((field, line)) => Err(Problem::at(
            line,
            format!("{section}{field}"),
            "not supported by spate yet; remove it or see docs/compatibility.md",
        )),
        None => Ok(()),
    }
}

/// A protocol name as Prometheus spells it.
fn protocol(name: &str, line: u64, field: &str) -> Result<ScrapeProtocol, Problem> {
    match ScrapeProtocol::parse(name) {
        Some(p) => Ok(p),
        None => Err(Problem::at(
            line,
            field,
            format!(
                "unknown scrape protocol {name}, supported: [PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0 OpenMetricsText0.0.1 OpenMetricsText1.0.0]"
            ),
        )),
    }
}

fn protocols(list: &Spanned<Vec<String>>, field: &str) -> Result<Vec<ScrapeProtocol>, Problem> {
    let line = list.referenced.line();
    if list.value.is_empty() {
        return Err(Problem::at(line, field, "scrape_protocols cannot be empty"));
    }
    let mut out = Vec::new();
    for name in &list.value {
        let p = protocol(name, line, field)?;
        if out.contains(&p) {
            return Err(Problem::at(
                line,
                field,
                format!("duplicated protocol in scrape_protocols, got {name}"),
            ));
        }
        out.push(p);
    }
    Ok(out)
}

pub(super) fn resolve(raw: RawConfig) -> Result<Config, Problem> {
    let count = |l: &Option<Vec<IgnoredAny>>| l.as_ref().map_or(0, Vec::len);
    let entries = [
        (
            "rule_files",
            raw.rule_files
                .as_ref()
                .map(|s| (s.referenced.line(), s.value.len())),
        ),
        (
            "alerting",
            raw.alerting.as_ref().map(|s| {
                let a = &s.value;
                let n = count(&a.alertmanagers) + count(&a.alert_relabel_configs);
                (s.referenced.line(), n)
            }),
        ),
        (
            "remote_read",
            raw.remote_read
                .as_ref()
                .map(|s| (s.referenced.line(), s.value.len())),
        ),
    ];
    for (field, present) in entries {
        if let Some((line, n)) = present
            && n > 0
        {
            return Err(Problem::at(
                line,
                field,
                format!("field {field} is not allowed in agent mode"),
            ));
        }
    }
    unsupported("", raw.unsupported())?;

    let raw_global = raw.global.unwrap_or_default();
    // The global failure log is the default of each job's (Prometheus keeps both).
    let failure_log = raw_global
        .scrape_failure_log_file
        .clone()
        .filter(|f| !f.is_empty())
        .map(crate::config::paths::join);
    let names = validation(
        &raw_global.metric_name_validation_scheme,
        "global.metric_name_validation_scheme",
    )?
    .unwrap_or_default();
    let global_escaping = escaping(
        &raw_global.metric_name_escaping_scheme,
        "global.metric_name_escaping_scheme",
        "global",
    )?;
    let resolved_global = resolve_global(raw_global, names)?;
    let global = Globals {
        cfg: &resolved_global,
        failure_log: failure_log.as_deref(),
        names,
        escaping: global_escaping,
    };

    let mut scrape_configs = Vec::new();
    let mut jobs = HashSet::new();
    for (i, sc) in raw
        .scrape_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let line = sc
            .job_name
            .as_ref()
            .map(|s| s.referenced.line())
            .unwrap_or(0);
        let sc = resolve_scrape(sc, i, global)?;
        if !jobs.insert(sc.job_name.clone()) {
            return Err(Problem::at(
                line,
                format!("scrape_configs[{i}].job_name"),
                format!(
                    "found multiple scrape configs with job name {:?}",
                    sc.job_name
                ),
            ));
        }
        scrape_configs.push(sc);
    }

    if let Some(patterns) = &raw.scrape_config_files {
        let included = scrape_config_files(patterns, global, &jobs)?;
        scrape_configs.extend(included);
    }

    let mut remote_write = Vec::new();
    let mut names = HashSet::new();
    for (i, rw) in raw.remote_write.unwrap_or_default().into_iter().enumerate() {
        let name_line = rw.name.as_ref().map(|s| s.referenced.line()).unwrap_or(0);
        let explicit_name = rw.name.is_some();
        let rw = resolve_remote_write(rw, i, global.names)?;
        if !names.insert(rw.name.clone()) {
            let reason = if explicit_name {
                format!(
                    "found multiple remote write configs with name {:?}",
                    rw.name
                )
            } else {
                "duplicate remote write configs are not allowed".to_string()
            };
            return Err(Problem::at(name_line, format!("remote_write[{i}]"), reason));
        }
        remote_write.push(rw);
    }

    Ok(Config {
        global: resolved_global,
        scrape_configs,
        remote_write,
    })
}

/// A `scrape_config_files` file: only scrape configs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScrapeConfigFile {
    #[serde(default)]
    scrape_configs: Option<Vec<RawScrapeConfig>>,
}

/// The scrape configs of the files `scrape_config_files` names, as Prometheus reads them: each
/// pattern (relative to the main file's directory, a `*` only in its last component) in
/// order, its files in name order, each file holding only `scrape_configs`, resolved with the
/// main file's `global` and with relative paths relative to its own directory. A job name
/// already used, in the main file or an earlier file, is an error naming both.
fn scrape_config_files(
    patterns: &Spanned<Vec<String>>,
    global: Globals<'_>,
    main_jobs: &HashSet<String>,
) -> Result<Vec<ScrapeConfig>, Problem> {
    let line = patterns.referenced.line();
    let mut seen: BTreeMap<String, String> = main_jobs
        .iter()
        .map(|j| (j.clone(), "main config file".to_string()))
        .collect();
    let mut out = Vec::new();
    for pattern in &patterns.value {
        // Prometheus' rule for rule and scrape config file paths: `*` in the last component only.
        let dir = pattern.rsplit_once('/').map_or("", |(d, _)| d);
        if dir.contains('*') {
            return Err(Problem::at(
                line,
                "scrape_config_files",
                format!("invalid scrape config file path {pattern:?}"),
            ));
        }
        let joined = crate::config::paths::join(pattern.clone());
        for file in crate::config::paths::expand(&joined) {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| {
                Problem::field("scrape_config_files", format!("cannot read {shown:?}: {e}"))
                    .in_file(&shown)
            })?;
            let parsed: RawScrapeConfigFile = parse_yaml(&text)
                .map_err(|p| p.in_file(&shown))?
                .unwrap_or_default();
            let dir = file.parent().unwrap_or(std::path::Path::new(""));
            for (i, sc) in parsed
                .scrape_configs
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                let job_line = sc.job_name.as_ref().map_or(0, |s| s.referenced.line());
                let sc = crate::config::paths::within(dir, || resolve_scrape(sc, i, global))
                    .map_err(|p| p.in_file(&shown))?;
                if let Some(first) = seen.get(&sc.job_name) {
                    return Err(Problem::at(
                        job_line,
                        format!("scrape_configs[{i}].job_name"),
                        format!(
                            "found multiple scrape configs with job name {:?}, first found in {first}",
                            sc.job_name
                        ),
                    )
                    .in_file(&shown));
                }
                seen.insert(sc.job_name.clone(), format!("{shown:?}"));
                out.push(sc);
            }
        }
    }
    Ok(out)
}

fn resolve_global(g: RawGlobal, names: Validation) -> Result<GlobalConfig, Problem> {
    unsupported("global.", g.unsupported())?;
    let default_interval = Duration::from_secs(60);
    let default_timeout = Duration::from_secs(10);
    let interval = match g.scrape_interval.as_ref().map(|s| s.value.0) {
        Some(d) if !d.is_zero() => d,
        _ => default_interval,
    };
    let timeout = match &g.scrape_timeout {
        Some(s) if !s.value.0.is_zero() => {
            if s.value.0 > interval {
                return Err(Problem::at(
                    s.referenced.line(),
                    "global.scrape_timeout",
                    "global scrape timeout greater than scrape interval",
                ));
            }
            s.value.0
        }
        _ => default_timeout.min(interval),
    };
    let mut external_labels = Vec::new();
    for (name, value) in g.external_labels.unwrap_or_default() {
        if !names.is_valid_label_name(name.as_bytes()) {
            return Err(Problem::field(
                "global.external_labels",
                format!("{name:?} is not a valid label name"),
            ));
        }
        if name == "__name__" {
            return Err(Problem::field(
                "global.external_labels",
                "external label __name__ is not allowed",
            ));
        }
        // `${VAR}` from the environment, as Prometheus 3 always expands it; a label whose
        // value ends up empty is dropped.
        let value = super::env::expand(
            &value,
            |v| std::env::var(v).ok(),
            |v| {
                crate::log!(
                    crate::log::Level::Warn,
                    "config",
                    "Empty environment variable",
                    name = v
                )
            },
        );
        if !value.is_empty() {
            external_labels.push((name, value));
        }
    }
    let limits = limits(
        &g.body_size_limit,
        [
            g.sample_limit,
            g.label_limit,
            g.label_name_length_limit,
            g.label_value_length_limit,
            g.target_limit,
            g.keep_dropped_targets,
        ],
        &ScrapeLimits::default(),
        "global.",
    )?;
    let scrape_native_histograms = g.scrape_native_histograms.unwrap_or(false);
    let scrape_protocols = match &g.scrape_protocols {
        Some(list) => protocols(list, "global.scrape_protocols")?,
        None if scrape_native_histograms => ScrapeProtocol::PROTO_FIRST.to_vec(),
        None => ScrapeProtocol::DEFAULT.to_vec(),
    };
    Ok(GlobalConfig {
        limits,
        extra_scrape_metrics: g.extra_scrape_metrics.unwrap_or(false),
        scrape_native_histograms,
        always_scrape_classic_histograms: g.always_scrape_classic_histograms.unwrap_or(false),
        convert_classic_histograms_to_nhcb: g.convert_classic_histograms_to_nhcb.unwrap_or(false),
        scrape_interval: interval,
        scrape_timeout: timeout,
        external_labels,
        scrape_protocols,
    })
}

/// What a scrape config inherits: the resolved `global`, the global failure log file, and
/// the global name validation and escaping schemes (escaping `None`: unset, from validation).
#[derive(Clone, Copy)]
struct Globals<'a> {
    cfg: &'a GlobalConfig,
    failure_log: Option<&'a str>,
    names: Validation,
    escaping: Option<Escaping>,
}

/// `metric_name_validation_scheme` as written (`None`: unset).
fn validation(f: &Field<String>, field: &str) -> Result<Option<Validation>, Problem> {
    match f {
        None => Ok(None),
        Some(s) if s.value.is_empty() => Ok(None),
        Some(s) => Validation::parse(&s.value).map(Some).ok_or_else(|| {
            Problem::at(
                s.referenced.line(),
                field,
                format!("unrecognized ValidationScheme: {:?}", s.value),
            )
        }),
    }
}

/// `metric_name_escaping_scheme` as written (`None`: unset); `what` names the section in
/// Prometheus' message.
fn escaping(f: &Field<String>, field: &str, what: &str) -> Result<Option<Escaping>, Problem> {
    match f {
        None => Ok(None),
        Some(s) if s.value.is_empty() => Ok(None),
        Some(s) => Escaping::parse(&s.value).map(Some).ok_or_else(|| {
            Problem::at(
                s.referenced.line(),
                field,
                format!(
                    "unknown {what} name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got {:?}",
                    s.value
                ),
            )
        }),
    }
}

fn resolve_scrape(
    sc: RawScrapeConfig,
    i: usize,
    globals: Globals<'_>,
) -> Result<ScrapeConfig, Problem> {
    let global = globals.cfg;
    let at = |f: &str| format!("scrape_configs[{i}].{f}");
    unsupported(&at(""), sc.unsupported())?;
    let job = match &sc.job_name {
        Some(s) if !s.value.is_empty() => s.value.clone(),
        Some(s) => {
            return Err(Problem::at(
                s.referenced.line(),
                at("job_name"),
                "job_name is empty",
            ));
        }
        None => {
            return Err(Problem::field(
                format!("scrape_configs[{i}]"),
                "job_name is missing",
            ));
        }
    };
    let interval = match sc.scrape_interval.as_ref().map(|s| s.value.0) {
        Some(d) if !d.is_zero() => d,
        _ => global.scrape_interval,
    };
    let timeout = match &sc.scrape_timeout {
        Some(s) if !s.value.0.is_zero() => {
            if s.value.0 > interval {
                return Err(Problem::at(
                    s.referenced.line(),
                    at("scrape_timeout"),
                    format!(
                        "scrape timeout greater than scrape interval for scrape config with job name {job:?}"
                    ),
                ));
            }
            s.value.0
        }
        _ => global.scrape_timeout.min(interval),
    };
    let scheme = match &sc.scheme {
        None => "http".to_string(),
        Some(s) if s.value == "http" => s.value.clone(),
        Some(s) if s.value == "https" => s.value.clone(),
        Some(s) => {
            return Err(Problem::at(
                s.referenced.line(),
                at("scheme"),
                format!("unknown scheme {:?}: use http or https", s.value),
            ));
        }
    };
    let authorization = super::client::with_bearer(
        sc.authorization,
        sc.basic_auth.is_some() || sc.oauth2.is_some(),
        sc.bearer_token,
        sc.bearer_token_file,
    )
    .map_err(|(field, e)| Problem::field(at(field), e))?;
    let http = super::client::resolve(
        sc.basic_auth,
        authorization,
        sc.http_headers,
        sc.follow_redirects,
        sc.tls_config,
        sc.oauth2,
        super::client::RawProxy {
            proxy_url: sc.proxy_url,
            no_proxy: sc.no_proxy,
            proxy_from_environment: sc.proxy_from_environment,
            proxy_connect_header: sc.proxy_connect_header,
        },
    )
    .map_err(|(field, e)| Problem::field(at(field), e))?;
    let metrics_path = sc.metrics_path.unwrap_or_else(|| "/metrics".to_string());
    if !metrics_path.starts_with('/') {
        return Err(Problem::field(
            at("metrics_path"),
            format!("{metrics_path:?} must start with '/'"),
        ));
    }
    let static_configs = static_configs(sc.static_configs.unwrap_or_default(), &at)?;
    let file_sd_configs = file_sd_configs(sc.file_sd_configs.unwrap_or_default(), &at)?;
    let dns_sd_configs = dns_sd_configs(sc.dns_sd_configs.unwrap_or_default(), &at)?;
    let http_sd_configs = http_sd_configs(sc.http_sd_configs.unwrap_or_default(), &at)?;
    let kubernetes_sd_configs =
        kubernetes_sd_configs(sc.kubernetes_sd_configs.unwrap_or_default(), &at)?;
    let consul_sd_configs = consul_sd_configs(sc.consul_sd_configs.unwrap_or_default(), &at)?;
    let docker_sd_configs = docker_sd_configs(sc.docker_sd_configs.unwrap_or_default(), &at)?;
    let ec2_sd_configs = ec2_sd_configs(sc.ec2_sd_configs.unwrap_or_default(), &at)?;
    let scrape_native_histograms = sc
        .scrape_native_histograms
        .unwrap_or(global.scrape_native_histograms);
    let scrape_protocols = match &sc.scrape_protocols {
        Some(list) => protocols(list, &at("scrape_protocols"))?,
        // Native histograms travel only in the protobuf format: ask for it first.
        None if scrape_native_histograms => ScrapeProtocol::PROTO_FIRST.to_vec(),
        None => global.scrape_protocols.clone(),
    };
    let fallback_scrape_protocol = match &sc.fallback_scrape_protocol {
        Some(f) => Some(protocol(
            &f.value,
            f.referenced.line(),
            &at("fallback_scrape_protocol"),
        )?),
        None => None,
    };
    let limits = limits(
        &sc.body_size_limit,
        [
            sc.sample_limit,
            sc.label_limit,
            sc.label_name_length_limit,
            sc.label_value_length_limit,
            sc.target_limit,
            sc.keep_dropped_targets,
        ],
        &global.limits,
        &at(""),
    )?;
    // Prometheus' rules: the job's validation scheme, else the global one; the job's
    // escaping, else the global one when the job sets no validation of its own, else what
    // its validation implies; UTF-8 names only under UTF-8 validation.
    let local_names = validation(
        &sc.metric_name_validation_scheme,
        &at("metric_name_validation_scheme"),
    )?;
    let names = local_names.unwrap_or(globals.names);
    let implied = |v: Validation| match v {
        Validation::Legacy => Escaping::Underscores,
        Validation::Utf8 => Escaping::AllowUtf8,
    };
    let name_escaping = match escaping(
        &sc.metric_name_escaping_scheme,
        &at("metric_name_escaping_scheme"),
        "scrape config",
    )? {
        Some(e) => e,
        None if local_names.is_none() => globals.escaping.unwrap_or(implied(globals.names)),
        None => implied(names),
    };
    if name_escaping == Escaping::AllowUtf8 && names != Validation::Utf8 {
        return Err(Problem::field(
            at("metric_name_escaping_scheme"),
            "utf8 metric names requested but validation scheme is not set to UTF8",
        ));
    }
    Ok(ScrapeConfig {
        name_validation: names,
        name_escaping,
        relabel_configs: rules(&sc.relabel_configs, &at("relabel_configs"), names)?,
        metric_relabel_configs: std::sync::Arc::new(rules(
            &sc.metric_relabel_configs,
            &at("metric_relabel_configs"),
            names,
        )?),
        track_timestamps_staleness: sc
            .track_timestamps_staleness
            .as_ref()
            .is_some_and(|v| v.value),
        limits,
        extra_scrape_metrics: sc
            .extra_scrape_metrics
            .unwrap_or(global.extra_scrape_metrics),
        scrape_failure_log_file: sc
            .scrape_failure_log_file
            .filter(|f| !f.is_empty())
            .map(crate::config::paths::join)
            .or_else(|| globals.failure_log.map(String::from)),
        scrape_protocols,
        fallback_scrape_protocol,
        scrape_native_histograms,
        always_scrape_classic_histograms: sc
            .always_scrape_classic_histograms
            .unwrap_or(global.always_scrape_classic_histograms),
        convert_classic_histograms_to_nhcb: sc
            .convert_classic_histograms_to_nhcb
            .unwrap_or(global.convert_classic_histograms_to_nhcb),
        native_histogram_limits: crate::entry::Resolution::new(
            sc.native_histogram_bucket_limit.unwrap_or(0),
            sc.native_histogram_min_bucket_factor.unwrap_or(0.0),
        ),
        job_name: job,
        scrape_interval: interval,
        scrape_timeout: timeout,
        metrics_path,
        scheme,
        params: sc.params.unwrap_or_default().into_iter().collect(),
        static_configs,
        file_sd_configs,
        http_sd_configs,
        dns_sd_configs,
        kubernetes_sd_configs,
        consul_sd_configs,
        docker_sd_configs,
        ec2_sd_configs,
        http: std::sync::Arc::new(http),
        honor_labels: sc.honor_labels.unwrap_or(false),
        honor_timestamps: sc.honor_timestamps.unwrap_or(true),
        enable_compression: sc.enable_compression.unwrap_or(true),
    })
}

/// A list that must be present and not empty; `reason` otherwise, at its line.
fn required_list(
    list: Field<Vec<String>>,
    section: &str,
    key: &str,
    reason: &str,
) -> Result<Spanned<Vec<String>>, Problem> {
    match list {
        Some(l) if !l.value.is_empty() => Ok(l),
        Some(l) => Err(Problem::at(
            l.referenced.line(),
            format!("{section}.{key}"),
            reason,
        )),
        None => Err(Problem::field(section.to_string(), reason)),
    }
}

/// Validates a list of relabel rules under the `names` validation scheme; errors name the
/// rule and its line.
fn rules(
    list: &Option<Vec<Spanned<RuleSpec>>>,
    field: &str,
    names: Validation,
) -> Result<Rules, Problem> {
    let mut out = Vec::new();
    for (i, spec) in list.iter().flatten().enumerate() {
        let rule = Rule::with_names(&spec.value, names)
            .map_err(|e| Problem::at(spec.referenced.line(), format!("{field}[{i}]"), e))?;
        out.push(rule);
    }
    Ok(Rules(out))
}

/// Scrape limits; zero (or absent) takes the value from `inherit`, as Prometheus does.
fn limits(
    body_size: &Field<String>,
    [sample, label, name_len, value_len, target, keep_dropped]: [Option<u64>; 6],
    inherit: &ScrapeLimits,
    section: &str,
) -> Result<ScrapeLimits, Problem> {
    let pick = |v: Option<u64>, parent: u64| match v {
        Some(v) if v > 0 => v,
        _ => parent,
    };
    let body_size_limit = match body_size {
        Some(s) => parse_bytes(&s.value).map_err(|e| {
            Problem::at(s.referenced.line(), format!("{section}body_size_limit"), e)
        })?,
        None => 0,
    };
    Ok(ScrapeLimits {
        body_size_limit: pick(Some(body_size_limit), inherit.body_size_limit),
        sample_limit: pick(sample, inherit.sample_limit),
        label_limit: pick(label, inherit.label_limit),
        label_name_length_limit: pick(name_len, inherit.label_name_length_limit),
        label_value_length_limit: pick(value_len, inherit.label_value_length_limit),
        target_limit: pick(target, inherit.target_limit),
        keep_dropped_targets: pick(keep_dropped, inherit.keep_dropped_targets),
    })
}

/// A size as Prometheus reads `body_size_limit` (base 2: `KB` and `KiB` are both 1024
/// bytes), e.g. `10MB`, `512KiB`, `1GB512MB`, `0`.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a valid size: use a number and a unit, e.g. 10MB or 512KiB");
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let power = match unit {
            "B" => 0,
            "KB" | "KiB" => 1,
            "MB" | "MiB" => 2,
            "GB" | "GiB" => 3,
            "TB" | "TiB" => 4,
            "PB" | "PiB" => 5,
            "EB" | "EiB" => 6,
            _ => return Err(bad()),
        };
        total += n * 1024f64.powi(power);
    }
    Ok(total as u64)
}
