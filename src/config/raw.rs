//! The YAML model exactly as written, and its resolution into [`super::Config`].

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::client::{RawAuthorization, RawBasicAuth, RawHeader, RawOAuth2, RawTls};
use super::{
    Config, DnsSdConfig, DnsType, FileSdConfig, GlobalConfig, HttpSdConfig, MetadataConfig,
    Problem, PromDuration, QueueConfig, RemoteWriteConfig, ScrapeConfig, ScrapeLimits,
    StaticConfig,
};
use crate::exposition::ScrapeProtocol;
use crate::http::Url;
use crate::relabel::{Rule, RuleSpec, Rules, is_valid_label_name};

type Field<T> = Option<Spanned<T>>;

/// Declares a YAML section: its supported fields, and the fields spate parses but refuses
/// because it does not implement them yet (never silently ignored).
macro_rules! section {
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
    }
    unsupported {
        scrape_config_files, storage, tracing, otlp, runtime,
        // Not allowed in agent mode at all; checked first with Prometheus' message.
        rule_files, alerting, remote_read,
    }
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
        body_size_limit: Field<String>,
        sample_limit: Option<u64>,
        label_limit: Option<u64>,
        label_name_length_limit: Option<u64>,
        label_value_length_limit: Option<u64>,
        target_limit: Option<u64>,
        keep_dropped_targets: Option<u64>,
        extra_scrape_metrics: Option<bool>,
    }
    unsupported {
        query_log_file,
        scrape_failure_log_file, metric_name_validation_scheme, metric_name_escaping_scheme,
        convert_classic_histograms_to_nhcb,
        native_histogram_bucket_limit, native_histogram_min_bucket_factor,
    }
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
        honor_labels: Option<bool>,
        honor_timestamps: Option<bool>,
        enable_compression: Option<bool>,
        track_timestamps_staleness: Field<bool>,
        follow_redirects: Option<bool>,
        enable_http2: Option<bool>,
        basic_auth: Option<RawBasicAuth>,
        authorization: Option<RawAuthorization>,
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
    }
    unsupported {
        // HTTP client settings for targets.
        bearer_token, bearer_token_file,
        // Limits.
        native_histogram_bucket_limit, native_histogram_min_bucket_factor,
        // Protocols and histograms.
        scrape_classic_histograms,
        convert_classic_histograms_to_nhcb, metric_name_validation_scheme,
        metric_name_escaping_scheme, scrape_failure_log_file,
        // Service discovery other than static, file, HTTP and DNS.
        kubernetes_sd_configs, consul_sd_configs, ec2_sd_configs, aws_sd_configs, lightsail_sd_configs, azure_sd_configs, gce_sd_configs,
        digitalocean_sd_configs, docker_sd_configs, dockerswarm_sd_configs, nomad_sd_configs,
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
        http_headers: Option<BTreeMap<String, RawHeader>>,
        tls_config: Option<RawTls>,
        follow_redirects: Option<bool>,
        enable_http2: Option<bool>,
    }
    unsupported {
        oauth2, proxy_url, no_proxy, proxy_from_environment, proxy_connect_header,
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
    }
    unsupported {
        role_arn, external_id, use_fips_sts_endpoint,
    }
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
    let options = serde_saphyr::options! { with_snippet: false };
    let parsed: Option<RawConfig> =
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
                line: (line > 0).then_some(line),
                field: None,
                reason,
            }
        })?;
    // An empty file is a valid, empty configuration, as in Prometheus.
    Ok(parsed.unwrap_or_default())
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
    for (field, present) in [
        ("rule_files", &raw.rule_files),
        ("alerting", &raw.alerting),
        ("remote_read", &raw.remote_read),
    ] {
        if let Some(s) = present {
            return Err(Problem::at(
                s.referenced.line(),
                field,
                format!("field {field} is not allowed in agent mode"),
            ));
        }
    }
    unsupported("", raw.unsupported())?;

    let global = resolve_global(raw.global.unwrap_or_default())?;

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
        let sc = resolve_scrape(sc, i, &global)?;
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

    let mut remote_write = Vec::new();
    let mut names = HashSet::new();
    for (i, rw) in raw.remote_write.unwrap_or_default().into_iter().enumerate() {
        let name_line = rw.name.as_ref().map(|s| s.referenced.line()).unwrap_or(0);
        let explicit_name = rw.name.is_some();
        let rw = resolve_remote_write(rw, i)?;
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
        global,
        scrape_configs,
        remote_write,
    })
}

fn resolve_global(g: RawGlobal) -> Result<GlobalConfig, Problem> {
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
        if !is_valid_label_name(&name) {
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
        scrape_interval: interval,
        scrape_timeout: timeout,
        external_labels,
        scrape_protocols,
    })
}

fn resolve_scrape(
    sc: RawScrapeConfig,
    i: usize,
    global: &GlobalConfig,
) -> Result<ScrapeConfig, Problem> {
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
    let http = super::client::resolve(
        sc.basic_auth,
        sc.authorization,
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
    let mut static_configs = Vec::new();
    for (j, st) in sc
        .static_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let mut targets = Vec::new();
        for t in st.targets.unwrap_or_default() {
            if t.value.is_empty() || t.value.contains('/') {
                return Err(Problem::at(
                    t.referenced.line(),
                    at(&format!("static_configs[{j}].targets")),
                    format!("{:?} is not a valid host:port address", t.value),
                ));
            }
            targets.push(t.value);
        }
        let mut labels = Vec::new();
        for (name, value) in st.labels.unwrap_or_default() {
            if !is_valid_label_name(&name) {
                return Err(Problem::field(
                    at(&format!("static_configs[{j}].labels")),
                    format!("{name:?} is not a valid label name"),
                ));
            }
            labels.push((name, value));
        }
        static_configs.push(StaticConfig { targets, labels });
    }
    let mut file_sd_configs = Vec::new();
    for (j, f) in sc
        .file_sd_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = at(&format!("file_sd_configs[{j}]"));
        unsupported(&format!("{field}."), f.unsupported())?;
        let files = required_list(
            f.files,
            &field,
            "files",
            "file service discovery config must contain at least one path name",
        )?;
        for name in &files.value {
            if !valid_sd_file_pattern(name) {
                return Err(Problem::at(
                    files.referenced.line(),
                    format!("{field}.files"),
                    format!(
                        "path name {name:?} is not valid for file discovery: use a .json, .yml or .yaml file, with '*' only in the file name"
                    ),
                ));
            }
        }
        file_sd_configs.push(FileSdConfig {
            files: files.value,
            refresh_interval: f.refresh_interval.map_or(Duration::from_secs(300), |d| d.0),
        });
    }
    let mut dns_sd_configs = Vec::new();
    for (j, d) in sc
        .dns_sd_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = at(&format!("dns_sd_configs[{j}]"));
        unsupported(&format!("{field}."), d.unsupported())?;
        let names = required_list(
            d.names,
            &field,
            "names",
            "DNS-SD config must contain at least one SRV record name",
        )?;
        let record_type = match d.r#type.as_ref().map(|t| t.value.to_ascii_uppercase()) {
            None => DnsType::Srv,
            Some(t) => match t.as_str() {
                "SRV" => DnsType::Srv,
                "A" => DnsType::A,
                "AAAA" => DnsType::Aaaa,
                "MX" => DnsType::Mx,
                "NS" => DnsType::Ns,
                _ => {
                    let line = d.r#type.as_ref().map_or(0, |t| t.referenced.line());
                    return Err(Problem::at(
                        line,
                        format!("{field}.type"),
                        format!("invalid DNS-SD records type {t}: use SRV, A, AAAA, MX or NS"),
                    ));
                }
            },
        };
        let port = d.port.unwrap_or(0);
        if record_type != DnsType::Srv && port == 0 {
            return Err(Problem::field(
                format!("{field}.port"),
                "a port is required in DNS-SD configs for all record types except SRV",
            ));
        }
        dns_sd_configs.push(DnsSdConfig {
            names: names.value,
            record_type,
            port,
            refresh_interval: d.refresh_interval.map_or(Duration::from_secs(30), |r| r.0),
        });
    }
    let mut http_sd_configs = Vec::new();
    for (j, h) in sc
        .http_sd_configs
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let field = at(&format!("http_sd_configs[{j}]"));
        unsupported(&format!("{field}."), h.unsupported())?;
        let url = h
            .url
            .ok_or_else(|| Problem::field(field.clone(), "URL is missing"))?;
        let parsed = Url::parse(&url.value)
            .map_err(|e| Problem::at(url.referenced.line(), format!("{field}.url"), e))?;
        let http = super::client::resolve(
            h.basic_auth,
            h.authorization,
            h.http_headers,
            h.follow_redirects,
            h.tls_config,
            None,
            Default::default(),
        )
        .map_err(|(f, e)| Problem::field(format!("{field}.{f}"), e))?;
        http_sd_configs.push(HttpSdConfig {
            http,
            url: parsed,
            url_text: url.value.clone(),
            refresh_interval: h.refresh_interval.map_or(Duration::from_secs(60), |d| d.0),
        });
    }
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
    Ok(ScrapeConfig {
        relabel_configs: rules(&sc.relabel_configs, &at("relabel_configs"))?,
        metric_relabel_configs: std::sync::Arc::new(rules(
            &sc.metric_relabel_configs,
            &at("metric_relabel_configs"),
        )?),
        track_timestamps_staleness: sc
            .track_timestamps_staleness
            .as_ref()
            .is_some_and(|v| v.value),
        limits,
        extra_scrape_metrics: sc
            .extra_scrape_metrics
            .unwrap_or(global.extra_scrape_metrics),
        scrape_protocols,
        fallback_scrape_protocol,
        scrape_native_histograms,
        always_scrape_classic_histograms: sc
            .always_scrape_classic_histograms
            .unwrap_or(global.always_scrape_classic_histograms),
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

/// Prometheus' rule for file_sd paths: a `.json`, `.yml` or `.yaml` file, with a `*` glob
/// allowed only in the last path component.
fn valid_sd_file_pattern(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    if !["json", "yml", "yaml", "JSON", "YML", "YAML"].contains(&ext) {
        return false;
    }
    match name.find('*') {
        None => true,
        Some(star) => !name[star..].contains('/') && name[star + 1..].find('*').is_none(),
    }
}

/// Validates a list of relabel rules; errors name the rule and its line.
fn rules(list: &Option<Vec<Spanned<RuleSpec>>>, field: &str) -> Result<Rules, Problem> {
    let mut out = Vec::new();
    for (i, spec) in list.iter().flatten().enumerate() {
        let rule = Rule::new(&spec.value)
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

fn resolve_remote_write(rw: RawRemoteWrite, i: usize) -> Result<RemoteWriteConfig, Problem> {
    let at = |f: &str| format!("remote_write[{i}].{f}");
    unsupported(&at(""), rw.unsupported())?;
    let url_field = rw.url.as_ref().ok_or_else(|| {
        Problem::field(
            format!("remote_write[{i}]"),
            "url for remote_write is empty",
        )
    })?;
    let url = Url::parse(&url_field.value)
        .map_err(|e| Problem::at(url_field.referenced.line(), at("url"), e))?;
    for (field, value, supported) in [("round_robin_dns", &rw.round_robin_dns, false)] {
        if let Some(v) = value
            && v.value != supported
        {
            return Err(Problem::at(
                v.referenced.line(),
                at(field),
                format!("{field}: {} is not supported by spate yet", v.value),
            ));
        }
    }
    let v2 = match &rw.protobuf_message {
        None => false,
        Some(p) if p.value == "prometheus.WriteRequest" => false,
        Some(p) if p.value == "io.prometheus.write.v2.Request" => true,
        Some(p) => {
            return Err(Problem::at(
                p.referenced.line(),
                at("protobuf_message"),
                format!(
                    "unknown remote write protobuf message {:?}: use prometheus.WriteRequest or io.prometheus.write.v2.Request",
                    p.value
                ),
            ));
        }
    };

    let mut headers = Vec::new();
    if let Some(h) = &rw.headers {
        for (name, value) in &h.value {
            let lower = name.to_ascii_lowercase();
            if lower == "authorization" {
                return Err(Problem::at(
                    h.referenced.line(),
                    at("headers"),
                    "authorization header must be changed via the basic_auth, authorization, oauth2, sigv4, azuread or google_iam parameter",
                ));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(Problem::at(
                    h.referenced.line(),
                    at("headers"),
                    format!("{name} is a reserved header. It must not be changed"),
                ));
            }
            if value.contains(['\r', '\n']) {
                return Err(Problem::at(
                    h.referenced.line(),
                    at("headers"),
                    format!("header {name} has a line break in its value"),
                ));
            }
            headers.push((name.clone(), value.clone()));
        }
    }

    let mut queue = QueueConfig::default();
    if let Some(q) = rw.queue_config {
        let positive = |field: &str, v: Option<i64>, default: usize| -> Result<usize, Problem> {
            match v {
                None => Ok(default),
                Some(n) if n > 0 => Ok(n as usize),
                Some(n) => Err(Problem::field(
                    at(&format!("queue_config.{field}")),
                    format!("must be greater than 0, got {n}"),
                )),
            }
        };
        queue.capacity = positive("capacity", q.capacity, queue.capacity)?;
        queue.max_shards = positive("max_shards", q.max_shards, queue.max_shards)?;
        queue.min_shards = positive("min_shards", q.min_shards, queue.min_shards)?;
        queue.max_samples_per_send = positive(
            "max_samples_per_send",
            q.max_samples_per_send,
            queue.max_samples_per_send,
        )?;
        if let Some(d) = q.batch_send_deadline {
            queue.batch_send_deadline = d.0;
        }
        if let Some(d) = q.min_backoff {
            queue.min_backoff = d.0;
        }
        if let Some(d) = q.max_backoff {
            queue.max_backoff = d.0;
        }
        if let Some(b) = q.retry_on_http_429 {
            queue.retry_on_http_429 = b;
        }
        if let Some(d) = q.sample_age_limit {
            queue.sample_age_limit = d.0;
        }
        if queue.min_shards > queue.max_shards {
            return Err(Problem::field(
                at("queue_config"),
                "min_shards must not be greater than max_shards",
            ));
        }
        if queue.max_backoff < queue.min_backoff {
            return Err(Problem::field(
                at("queue_config"),
                "max_backoff must not be less than min_backoff",
            ));
        }
    }
    let mut metadata = MetadataConfig::default();
    if let Some(m) = &rw.metadata_config {
        if let Some(n) = m.max_samples_per_send {
            if n <= 0 {
                return Err(Problem::field(
                    at("metadata_config.max_samples_per_send"),
                    "must be greater than 0",
                ));
            }
            metadata.max_samples_per_send = n as usize;
        }
        if let Some(b) = m.send {
            metadata.send = b;
        }
        if let Some(d) = &m.send_interval {
            if d.0.is_zero() {
                return Err(Problem::field(
                    at("metadata_config.send_interval"),
                    "must be greater than 0",
                ));
            }
            metadata.send_interval = d.0;
        }
    }

    let sigv4 = match rw.sigv4 {
        None => None,
        Some(sig) => {
            if rw.basic_auth.is_some() || rw.authorization.is_some() || rw.oauth2.is_some() {
                return Err(Problem::field(
                    at("sigv4"),
                    "at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured",
                ));
            }
            unsupported(&at("sigv4."), sig.unsupported())?;
            Some(resolve_sigv4(sig).map_err(|e| Problem::field(at("sigv4"), e))?)
        }
    };
    let http = super::client::resolve(
        rw.basic_auth,
        rw.authorization,
        None,
        rw.follow_redirects,
        rw.tls_config,
        rw.oauth2,
        super::client::RawProxy {
            proxy_url: rw.proxy_url,
            no_proxy: rw.no_proxy,
            proxy_from_environment: rw.proxy_from_environment,
            proxy_connect_header: rw.proxy_connect_header,
        },
    )
    .map_err(|(field, e)| Problem::field(at(field), e))?;
    let write_relabel_configs = std::sync::Arc::new(rules(
        &rw.write_relabel_configs,
        &at("write_relabel_configs"),
    )?);
    let remote_timeout = rw
        .remote_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(30));
    let name = match &rw.name {
        Some(n) => n.value.clone(),
        None => {
            // Prometheus names an unnamed queue after a hash of its config; ours covers what
            // identifies an endpoint here (url, headers, timeout, queue settings).
            let ident = format!(
                "{}|{:?}|{:?}|{:?}|{:?}|{:?}",
                url_field.value, headers, remote_timeout, queue, http, write_relabel_configs
            );
            format!("{:016x}", crate::hash::fnv1a64(ident.as_bytes()))[..6].to_string()
        }
    };
    Ok(RemoteWriteConfig {
        url,
        name,
        remote_timeout,
        headers,
        queue,
        // Remote Write 2.0 always carries native histograms, as in Prometheus.
        send_native_histograms: v2 || rw.send_native_histograms.unwrap_or(false),
        send_exemplars: rw.send_exemplars.is_some_and(|v| v.value),
        http,
        write_relabel_configs,
        // Remote Write 2.0 sends metadata with each series instead.
        metadata: MetadataConfig {
            send: metadata.send && !v2,
            ..metadata
        },
        v2,
        sigv4,
    })
}

/// `sigv4`: the region from the file or the environment, keys given together or not at all.
fn resolve_sigv4(sig: RawSigV4) -> Result<crate::http::sigv4::SigV4, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let region = sig
        .region
        .filter(|r| !r.is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .ok_or("region is not set: set sigv4.region, or AWS_REGION in the environment")?;
    let (access_key, secret_key) = match (sig.access_key, sig.secret_key) {
        (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => {
            (Some(a), Some(super::client::Secret::Inline(s)))
        }
        (None, None) => (None, None),
        _ => return Err("must provide a AWS SigV4 Access key and Secret Key if credentials are specified in the SigV4 config".into()),
    };
    Ok(crate::http::sigv4::SigV4 {
        region,
        access_key,
        secret_key,
        profile: sig.profile.filter(|p| !p.is_empty()),
    })
}
