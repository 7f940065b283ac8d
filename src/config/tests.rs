//! Configuration tests: good files with every default checked, and bad files with the exact
//! error each must produce.

use super::*;

fn load(yaml: &str) -> Result<Config, ConfigError> {
    load_str(yaml, "prometheus.yml")
}

/// `check_err(yaml, "prometheus.yml:LINE: FIELD: REASON")`: the whole message must match.
fn check_err(yaml: &str, want: &str) {
    match load(yaml) {
        Ok(c) => panic!("expected an error for:\n{yaml}\ngot {c:?}"),
        Err(e) => assert_eq!(e.to_string(), want, "for:\n{yaml}"),
    }
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = load("").unwrap();
    assert!(c.scrape_configs.is_empty() && c.remote_write.is_empty());
    assert_eq!(c.global.scrape_interval, Duration::from_secs(60));
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(10));
}

#[test]
fn prometheus_defaults() {
    let c = load(
        "scrape_configs:\n- job_name: node\n  static_configs:\n  - targets: ['localhost:9100']\nremote_write:\n- url: http://localhost:9090/api/v1/write\n",
    )
    .unwrap();
    let sc = &c.scrape_configs[0];
    assert_eq!(sc.scrape_interval, Duration::from_secs(60));
    assert_eq!(sc.scrape_timeout, Duration::from_secs(10));
    assert_eq!(sc.metrics_path, "/metrics");
    assert_eq!(sc.scheme, "http");
    assert!(!sc.honor_labels);
    assert!(sc.honor_timestamps);
    assert!(sc.enable_compression);
    assert_eq!(
        sc.scrape_protocols,
        crate::exposition::ScrapeProtocol::DEFAULT.to_vec()
    );
    assert_eq!(sc.fallback_scrape_protocol, None);
    let rw = &c.remote_write[0];
    assert_eq!(rw.remote_timeout, Duration::from_secs(30));
    assert_eq!(rw.queue, QueueConfig::default());
    assert_eq!(rw.queue.capacity, 10_000);
    assert_eq!(rw.queue.max_shards, 50);
    assert_eq!(rw.queue.min_shards, 1);
    assert_eq!(rw.queue.max_samples_per_send, 2000);
    assert_eq!(rw.queue.batch_send_deadline, Duration::from_secs(5));
    assert_eq!(rw.queue.min_backoff, Duration::from_millis(30));
    assert_eq!(rw.queue.max_backoff, Duration::from_secs(5));
    assert!(!rw.queue.retry_on_http_429);
    assert_eq!(rw.name.len(), 6, "unnamed endpoints get a short hash");
    assert_eq!(rw.url.to_string(), "http://localhost:9090/api/v1/write");
}

#[test]
fn timeout_defaults_follow_the_interval() {
    // A job interval below the global timeout caps the timeout at the interval.
    let c = load("scrape_configs:\n- job_name: a\n  scrape_interval: 5s\n").unwrap();
    assert_eq!(c.scrape_configs[0].scrape_timeout, Duration::from_secs(5));
    // A global interval below the default timeout does the same globally.
    let c = load("global:\n  scrape_interval: 2s\nscrape_configs:\n- job_name: a\n").unwrap();
    assert_eq!(c.global.scrape_timeout, Duration::from_secs(2));
    assert_eq!(c.scrape_configs[0].scrape_interval, Duration::from_secs(2));
    assert_eq!(c.scrape_configs[0].scrape_timeout, Duration::from_secs(2));
    // The global timeout is inherited when it fits.
    let c = load(
        "global:\n  scrape_interval: 30s\n  scrape_timeout: 20s\nscrape_configs:\n- job_name: a\n",
    )
    .unwrap();
    assert_eq!(c.scrape_configs[0].scrape_timeout, Duration::from_secs(20));
}

#[test]
fn full_supported_config() {
    let c = load(
        r#"
global:
  scrape_interval: 1m30s
  scrape_timeout: 100ms
  evaluation_interval: 1m
  external_labels:
    region: eu
    empty: ""
    cluster: c1
scrape_configs:
  - job_name: node
    scrape_interval: 15s
    scrape_timeout: 5s
    metrics_path: /probe
    scheme: http
    honor_labels: true
    honor_timestamps: false
    enable_compression: false
    params:
      module: [http_2xx]
    static_configs:
      - targets: [a:1, "b:2"]
        labels: {env: prod}
remote_write:
  - url: http://r:9090/api/v1/write
    name: primary
    remote_timeout: 10s
    headers: {X-Scope-OrgID: tenant}
    queue_config:
      capacity: 500
      max_samples_per_send: 100
      batch_send_deadline: 1s
      min_backoff: 10ms
      max_backoff: 1s
      retry_on_http_429: true
    metadata_config:
      send: false
"#,
    )
    .unwrap();
    assert_eq!(c.global.scrape_interval, Duration::from_secs(90));
    assert_eq!(c.global.scrape_timeout, Duration::from_millis(100));
    assert_eq!(
        c.global.external_labels,
        vec![
            ("cluster".into(), "c1".into()),
            ("region".into(), "eu".into())
        ]
    );
    let sc = &c.scrape_configs[0];
    assert_eq!(
        (sc.scrape_interval, sc.scrape_timeout),
        (Duration::from_secs(15), Duration::from_secs(5))
    );
    assert_eq!(sc.metrics_path, "/probe");
    assert!(sc.honor_labels && !sc.honor_timestamps && !sc.enable_compression);
    assert_eq!(sc.params, vec![("module".into(), vec!["http_2xx".into()])]);
    assert_eq!(
        sc.static_configs[0].targets,
        vec!["a:1".to_string(), "b:2".to_string()]
    );
    assert_eq!(
        sc.static_configs[0].labels,
        vec![("env".into(), "prod".into())]
    );
    let rw = &c.remote_write[0];
    assert_eq!(rw.name, "primary");
    assert_eq!(rw.remote_timeout, Duration::from_secs(10));
    assert_eq!(rw.headers, vec![("X-Scope-OrgID".into(), "tenant".into())]);
    assert_eq!(rw.queue.capacity, 500);
    assert_eq!(rw.queue.max_samples_per_send, 100);
    assert_eq!(rw.queue.batch_send_deadline, Duration::from_secs(1));
    assert_eq!(rw.queue.min_backoff, Duration::from_millis(10));
    assert_eq!(rw.queue.max_backoff, Duration::from_secs(1));
    assert!(rw.queue.retry_on_http_429);
    assert_eq!(rw.queue.max_shards, 50, "unset fields keep their defaults");
}

#[test]
fn bad_files_give_exact_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "scrape_configs:\n  - job_name: a\n    scrape_intervl: 5s\n",
            "prometheus.yml:3: unknown field `scrape_intervl`",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5x\n",
            "prometheus.yml:3: not a valid duration string: \"5x\"",
        ),
        (
            "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
            "prometheus.yml:3: scrape_configs[1].job_name: found multiple scrape configs with job name \"a\"",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 10s\n",
            "prometheus.yml:4: scrape_configs[0].scrape_timeout: scrape timeout greater than scrape interval for scrape config with job name \"a\"",
        ),
        (
            "global:\n  scrape_interval: 5s\n  scrape_timeout: 6s\n",
            "prometheus.yml:3: global.scrape_timeout: global scrape timeout greater than scrape interval",
        ),
        (
            "global:\n  scrape_interval: 5s\nscrape_configs:\n  - job_name: a\n    scrape_timeout: 10s\n",
            "prometheus.yml:5: scrape_configs[0].scrape_timeout: scrape timeout greater than scrape interval for scrape config with job name \"a\"",
        ),
        (
            "scrape_configs:\n  - job_name: \"\"\n",
            "prometheus.yml:2: scrape_configs[0].job_name: job_name is empty",
        ),
        (
            "scrape_configs:\n  - scrape_interval: 5s\n",
            "prometheus.yml: scrape_configs[0]: job_name is missing",
        ),
        (
            "rule_files:\n  - rules.yml\n",
            "prometheus.yml:2: rule_files: field rule_files is not allowed in agent mode",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    azure_sd_configs:\n      - subscription_id: x\n",
            "prometheus.yml:4: scrape_configs[0].azure_sd_configs: not supported by spate yet; remove it or see docs/compatibility.md",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    docker_sd_configs:\n      - host: docker.example:2375\n",
            "prometheus.yml:4: scrape_configs[0].docker_sd_configs[0].host: \"docker.example:2375\" is not a Docker host: use unix:///path, tcp://host:port or http(s)://host:port",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - namespaces: {names: [a]}\n",
            "prometheus.yml: scrape_configs[0].kubernetes_sd_configs[0].role: role missing (one of: pod, service, endpoints, endpointslice, node, ingress)",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: deployment\n",
            "prometheus.yml:4: scrape_configs[0].kubernetes_sd_configs[0].role: unknown Kubernetes SD role \"deployment\": use pod, service, endpoints, endpointslice, node or ingress",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - {role: pod, api_server: 'https://k:6443', kubeconfig_file: kc}\n",
            "prometheus.yml: scrape_configs[0].kubernetes_sd_configs[0]: cannot use 'kubeconfig_file' and 'api_server' simultaneously",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - {role: pod, authorization: {credentials: x}}\n",
            "prometheus.yml: scrape_configs[0].kubernetes_sd_configs[0]: to use custom HTTP client configuration please provide the 'api_server' URL explicitly",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - {role: pod, api_server: 'https://k:6443', namespaces: {own_namespace: true}}\n",
            "prometheus.yml: scrape_configs[0].kubernetes_sd_configs[0]: cannot use 'api_server' and 'namespaces.own_namespace' simultaneously",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n        selectors:\n          - {role: service, label: a=b}\n",
            "prometheus.yml:6: scrape_configs[0].kubernetes_sd_configs[0].selectors[0]: pod role supports only pod selectors",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: endpoints\n        selectors:\n          - {role: pod, label: a=b}\n          - {role: pod, field: spec.nodeName=x}\n",
            "prometheus.yml:7: scrape_configs[0].kubernetes_sd_configs[0].selectors[1]: duplicated selector role: pod",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n        selectors:\n          - {role: pod, label: 'app in prod'}\n",
            "prometheus.yml:6: scrape_configs[0].kubernetes_sd_configs[0].selectors[0].label: label selector \"app in prod\": \"app in prod\" has an invalid key",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - {role: pod, attach_metadata: {deployment: true}}\n",
            "prometheus.yml:4: scrape_configs[0].kubernetes_sd_configs[0].attach_metadata.deployment: not supported by spate yet; remove it or see docs/compatibility.md",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs: [targets: [a:1]\n",
            "prometheus.yml:3: unclosed bracket '['",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['h/x:1']\n",
            "prometheus.yml:4: scrape_configs[0].static_configs[0].targets: \"h/x:1\" is not a valid host:port address",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
            "prometheus.yml:3: scrape_configs[0].scheme: unknown scheme \"ftp\": use http or https",
        ),
        (
            "remote_write:\n  - name: x\n",
            "prometheus.yml: remote_write[0]: url for remote_write is empty",
        ),
        (
            "remote_write:\n  - url: localhost:9090\n",
            "prometheus.yml:2: remote_write[0].url: \"localhost:9090\" is not a valid URL: it must start with http:// or https://",
        ),
        (
            "remote_write:\n  - url: http://a/\n    name: x\n  - url: http://b/\n    name: x\n",
            "prometheus.yml:5: remote_write[1]: found multiple remote write configs with name \"x\"",
        ),
        (
            "remote_write:\n  - url: http://a/\n    headers:\n      Content-Type: x\n",
            "prometheus.yml:4: remote_write[0].headers: Content-Type is a reserved header. It must not be changed",
        ),
        (
            "remote_write:\n  - url: http://a/\n    queue_config:\n      max_samples_per_send: 0\n",
            "prometheus.yml: remote_write[0].queue_config.max_samples_per_send: must be greater than 0, got 0",
        ),
        (
            "remote_write:\n  - url: http://a/\n    queue_config:\n      min_backoff: 10s\n      max_backoff: 1s\n",
            "prometheus.yml: remote_write[0].queue_config: max_backoff must not be less than min_backoff",
        ),
        (
            "remote_write:\n  - url: http://a/\n    basic_auth: {username: u}\n    sigv4: {region: x}\n",
            "prometheus.yml: remote_write[0].sigv4: at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured",
        ),
        (
            "remote_write:\n  - url: http://a/\n    sigv4:\n      region: x\n      external_id: y\n",
            "prometheus.yml: remote_write[0].sigv4: external_id can only be used with role_arn",
        ),
        (
            "remote_write:\n  - url: http://a/\n    sigv4: {region: x, access_key: a}\n",
            "prometheus.yml: remote_write[0].sigv4: must provide a AWS SigV4 Access key and Secret Key if credentials are specified in the SigV4 config",
        ),
        (
            "remote_write:\n  - url: http://a/\n    protobuf_message: foo\n",
            "prometheus.yml:3: remote_write[0].protobuf_message: unknown remote write protobuf message \"foo\": use prometheus.WriteRequest or io.prometheus.write.v2.Request",
        ),
        (
            "remote_write:\n  - url: http://a/\n    azuread:\n      cloud: AzurePublic\n",
            "prometheus.yml:4: remote_write[0].azuread: not supported by spate yet; remove it or see docs/compatibility.md",
        ),
        (
            "global:\n  metric_name_validation_scheme: legacy\n  external_labels:\n    1bad: x\n",
            "prometheus.yml: global.external_labels: \"1bad\" is not a valid label name",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    relabel_configs:\n      - action: hashmod\n        target_label: x\n",
            "prometheus.yml:4: scrape_configs[0].relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    metric_relabel_configs:\n      - regex: 'a(b'\n        action: drop\n",
            "prometheus.yml:4: scrape_configs[0].metric_relabel_configs[0]: invalid regular expression \"a(b\": error: unclosed group",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['/etc/targets/*/x.json']\n",
            "prometheus.yml:4: scrape_configs[0].file_sd_configs[0].files: path name \"/etc/targets/*/x.json\" is not valid for file discovery: use a .json, .yml or .yaml file, with '*' only in the file name",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    dns_sd_configs:\n      - names: [x.example]\n        type: A\n",
            "prometheus.yml: scrape_configs[0].dns_sd_configs[0].port: a port is required in DNS-SD configs for all record types except SRV",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    authorization: {type: Basic, credentials: x}\n",
            "prometheus.yml: scrape_configs[0].authorization: authorization type cannot be set to \"basic\", use \"basic_auth\" instead",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: p, password_file: /f}\n",
            "prometheus.yml: scrape_configs[0].basic_auth: at most one of basic_auth password & basic_auth password_file must be configured",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    http_headers:\n      User-Agent: {values: [x]}\n",
            "prometheus.yml: scrape_configs[0].http_headers: setting header \"User-Agent\" is not allowed",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    body_size_limit: 10 parsecs\n",
            "prometheus.yml:3: scrape_configs[0].body_size_limit: \"10 parsecs\" is not a valid size: use a number and a unit, e.g. 10MB or 512KiB",
        ),
    ];
    for (yaml, want) in cases {
        check_err(yaml, want);
    }
}

#[test]
fn scrape_protocols_inherit_and_validate() {
    use crate::exposition::ScrapeProtocol::*;
    let c = load(
        "global:\n  scrape_protocols: [PrometheusText0.0.4]\nscrape_configs:\n- job_name: a\n- job_name: b\n  scrape_protocols: [OpenMetricsText1.0.0, PrometheusText1.0.0]\n  fallback_scrape_protocol: PrometheusText0.0.4\n",
    )
    .unwrap();
    assert_eq!(
        c.scrape_configs[0].scrape_protocols,
        vec![PrometheusText0_0_4],
        "inherited from global"
    );
    assert_eq!(
        c.scrape_configs[1].scrape_protocols,
        vec![OpenMetricsText1_0_0, PrometheusText1_0_0]
    );
    assert_eq!(
        c.scrape_configs[1].fallback_scrape_protocol,
        Some(PrometheusText0_0_4)
    );
    for (yaml, want) in [
        (
            "scrape_configs:\n- job_name: a\n  scrape_protocols: [Text]\n",
            "prometheus.yml:3: scrape_configs[0].scrape_protocols: unknown scrape protocol Text, supported: [PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0 OpenMetricsText0.0.1 OpenMetricsText1.0.0]",
        ),
        (
            "scrape_configs:\n- job_name: a\n  scrape_protocols: [PrometheusText0.0.4, PrometheusText0.0.4]\n",
            "prometheus.yml:3: scrape_configs[0].scrape_protocols: duplicated protocol in scrape_protocols, got PrometheusText0.0.4",
        ),
        (
            "global:\n  scrape_protocols: []\n",
            "prometheus.yml:2: global.scrape_protocols: scrape_protocols cannot be empty",
        ),
        (
            "scrape_configs:\n- job_name: a\n  fallback_scrape_protocol: Protobuf\n",
            "prometheus.yml:3: scrape_configs[0].fallback_scrape_protocol: unknown scrape protocol Protobuf, supported: [PrometheusProto PrometheusText0.0.4 PrometheusText1.0.0 OpenMetricsText0.0.1 OpenMetricsText1.0.0]",
        ),
    ] {
        check_err(yaml, want);
    }
}

#[test]
fn error_names_the_file_when_it_cannot_be_read() {
    let e = load_file(Path::new("/nonexistent/spate.yml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/spate.yml: cannot read the configuration file:"),
        "{e}"
    );
}

#[test]
fn shipped_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.yml");
    let c = load_file(&path).unwrap();
    assert_eq!(
        c.remote_write[0].url.to_string(),
        "http://localhost:9090/api/v1/write"
    );
    assert_eq!(
        c.scrape_configs[0].static_configs[0].targets,
        vec!["localhost:9095".to_string()]
    );
}

#[test]
fn sizes_are_base_2_as_in_prometheus() {
    use super::raw::parse_bytes;
    assert_eq!(parse_bytes("0"), Ok(0));
    assert_eq!(parse_bytes("512B"), Ok(512));
    assert_eq!(parse_bytes("10KB"), Ok(10 << 10));
    assert_eq!(parse_bytes("10KiB"), Ok(10 << 10));
    assert_eq!(parse_bytes("10MB"), Ok(10 << 20));
    assert_eq!(parse_bytes("1GB512MB"), Ok((1 << 30) + (512 << 20)));
    assert_eq!(parse_bytes("1.5MB"), Ok(3 << 19));
    assert!(parse_bytes("10").is_err(), "a unit is required");
    assert!(parse_bytes("10XB").is_err());
}

#[test]
fn limits_inherit_from_global_and_relabel_rules_load() {
    let c = load(
        "global:\n  sample_limit: 100\n  body_size_limit: 1MB\nscrape_configs:\n- job_name: a\n- job_name: b\n  sample_limit: 5\n  label_limit: 9\n  metric_relabel_configs:\n  - {source_labels: [__name__], regex: 'x.*', action: drop}\n",
    )
    .unwrap();
    let (a, b) = (&c.scrape_configs[0], &c.scrape_configs[1]);
    assert_eq!(a.limits.sample_limit, 100);
    assert_eq!(a.limits.body_size_limit, 1 << 20);
    assert_eq!(b.limits.sample_limit, 5);
    assert_eq!(b.limits.label_limit, 9);
    assert_eq!(b.limits.body_size_limit, 1 << 20);
    assert_eq!(b.metric_relabel_configs.0.len(), 1);
    assert!(a.metric_relabel_configs.is_empty());
    assert!(
        a.http.follow_redirects,
        "Prometheus follows redirects by default"
    );
}

/// Prometheus agent refuses `alerting`, `rule_files` and `remote_read` by the length of their
/// lists, not by the key: empty sections load (Prometheus' `TestAgentMode` cases refuse, the
/// empty forms users leave in copied files load).
#[test]
fn agent_mode_refuses_sections_with_entries_only() {
    for empty in [
        "alerting:\n",
        "alerting:\n  alertmanagers:\n",
        "alerting:\n  alertmanagers: []\n",
        "alerting:\n  alertmanagers: []\n  alert_relabel_configs: []\n",
        "rule_files:\n  # - first.rules\n",
        "rule_files: []\n",
        "remote_read:\n",
        "remote_read: []\n",
    ] {
        let text = format!("{empty}remote_write:\n  - url: http://remote1/push\n");
        crate::config::load_str(&text, "prometheus.yml")
            .unwrap_or_else(|e| panic!("{empty:?}: {e}"));
    }
    for (text, field) in [
        // Prometheus' config/testdata/agent_mode.with_*.yml.
        (
            "alerting:\n  alertmanagers:\n    - scheme: https\n      static_configs:\n        - targets:\n            - \"1.2.3.4:9093\"\n",
            "alerting",
        ),
        (
            "alerting:\n  alert_relabel_configs:\n    - action: uppercase\n      source_labels: [instance]\n      target_label: instance\n",
            "alerting",
        ),
        (
            "rule_files:\n  - \"first.rules\"\n  - \"my/*.rules\"\n",
            "rule_files",
        ),
        (
            "remote_read:\n  - url: http://remote1/read\n    read_recent: true\n    name: default\n    enable_http2: false\n",
            "remote_read",
        ),
        // An Alertmanager entry with no targets is still an entry.
        (
            "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: []\n",
            "alerting",
        ),
    ] {
        let e = crate::config::load_str(text, "prometheus.yml")
            .expect_err(text)
            .to_string();
        assert!(
            e.contains(&format!("field {field} is not allowed in agent mode")),
            "{text:?}: {e}"
        );
    }
    // What is under `alerting` is still checked.
    let e = crate::config::load_str("alerting:\n  alertmanager: []\n", "prometheus.yml")
        .expect_err("misspelt");
    assert!(e.to_string().contains("alertmanager"), "{e}");
}

/// `bearer_token` and `bearer_token_file`, deprecated but still read by Prometheus in every
/// HTTP client section: an `authorization` of type Bearer, with Prometheus' conflict messages
/// (its common/config `http.conf.*.bad.yml` cases).
#[test]
fn bearer_token_fields_are_authorization() {
    use crate::http::Secret;
    let cfg = crate::config::load_str(
        "scrape_configs:\n  - job_name: a\n    bearer_token: t1\n  - job_name: b\n    bearer_token_file: /run/token\n    http_sd_configs:\n      - {url: 'http://sd/', bearer_token: t2}\n    kubernetes_sd_configs:\n      - {role: pod, api_server: 'https://k8s', bearer_token_file: /run/k8s}\nremote_write:\n  - url: http://rw/write\n    bearer_token: t3\n",
        "prometheus.yml",
    )
    .unwrap();
    let auth = |h: &crate::config::client::HttpClientConfig| h.authorization.clone();
    assert_eq!(
        auth(&cfg.scrape_configs[0].http),
        Some(("Bearer".into(), Secret::Inline("t1".into())))
    );
    assert_eq!(
        auth(&cfg.scrape_configs[1].http),
        Some(("Bearer".into(), Secret::File("/run/token".into())))
    );
    assert_eq!(
        auth(&cfg.scrape_configs[1].http_sd_configs[0].http),
        Some(("Bearer".into(), Secret::Inline("t2".into())))
    );
    match &cfg.scrape_configs[1].kubernetes_sd_configs[0].api {
        crate::config::KubeApi::Server { http, .. } => assert_eq!(
            auth(http),
            Some(("Bearer".into(), Secret::File("/run/k8s".into())))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        auth(&cfg.remote_write[0].http),
        Some(("Bearer".into(), Secret::Inline("t3".into())))
    );
    for (section, msg) in [
        (
            "bearer_token: a\n    bearer_token_file: /f",
            "at most one of bearer_token & bearer_token_file must be configured",
        ),
        (
            "bearer_token: a\n    basic_auth: {username: u, password: p}",
            "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
        ),
        (
            "bearer_token_file: /f\n    authorization: {credentials: c}",
            "authorization is not compatible with bearer_token & bearer_token_file",
        ),
    ] {
        for text in [
            format!("scrape_configs:\n  - job_name: a\n    {section}\n"),
            format!("remote_write:\n  - url: http://rw/write\n    {section}\n"),
        ] {
            let e = crate::config::load_str(&text, "prometheus.yml")
                .expect_err(&text)
                .to_string();
            assert!(e.contains(msg), "{text}: {e}");
        }
    }
    // As an authorization, it excludes sigv4 in remote write.
    let e = crate::config::load_str(
        "remote_write:\n  - url: http://rw/write\n    bearer_token: t\n    sigv4: {region: eu-west-1}\n",
        "prometheus.yml",
    )
    .expect_err("bearer with sigv4");
    assert!(
        e.to_string()
            .contains("at most one of basic_auth, authorization, oauth2, sigv4")
    );
    // An empty token is no token, as in Prometheus.
    let cfg = crate::config::load_str(
        "scrape_configs:\n  - job_name: a\n    bearer_token: ''\n    basic_auth: {username: u}\n",
        "prometheus.yml",
    )
    .unwrap();
    assert!(cfg.scrape_configs[0].http.authorization.is_none());
}

/// A fresh directory for files a test loads.
fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("spate-config-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn relative_paths_are_relative_to_the_files_directory() {
    let dir = scratch_dir("relative");
    let main = dir.join("prometheus.yml");
    std::fs::write(
        &main,
        "global:\n  scrape_failure_log_file: failures.log\n  query_log_file: queries.log\nscrape_configs:\n  - job_name: a\n    bearer_token_file: secrets/token\n    file_sd_configs: [{files: ['sd/*.json', /abs/b.yml]}]\n  - job_name: b\n    scrape_failure_log_file: /var/log/b.log\n",
    )
    .unwrap();
    let c = load_file(&main).unwrap();
    let a = &c.scrape_configs[0];
    let d = dir.display();
    assert_eq!(
        a.scrape_failure_log_file.as_deref(),
        Some(format!("{d}/failures.log").as_str())
    );
    assert_eq!(
        a.file_sd_configs[0].files,
        [format!("{d}/sd/*.json"), "/abs/b.yml".to_string()]
    );
    let (_, token) = a.http.authorization.as_ref().unwrap();
    assert_eq!(
        format!("{token:?}"),
        format!(
            "{:?}",
            crate::http::Secret::File(format!("{d}/secrets/token").into())
        )
    );
    assert_eq!(
        c.scrape_configs[1].scrape_failure_log_file.as_deref(),
        Some("/var/log/b.log")
    );
    // Text loaded without a file keeps paths relative to the working directory.
    let c = load("global:\n  scrape_failure_log_file: f.log\nscrape_configs:\n  - job_name: x\n")
        .unwrap();
    assert_eq!(
        c.scrape_configs[0].scrape_failure_log_file.as_deref(),
        Some("f.log")
    );
}

#[test]
fn scrape_config_files_add_jobs_with_prometheus_rules() {
    let dir = scratch_dir("includes");
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    let main = dir.join("prometheus.yml");
    let write_main = |includes: &str| {
        std::fs::write(
            &main,
            format!("global:\n  scrape_interval: 7s\nscrape_config_files:\n{includes}scrape_configs:\n  - job_name: main\n"),
        )
        .unwrap();
    };
    std::fs::write(
        dir.join("jobs/b.yml"),
        "scrape_configs:\n  - job_name: b\n    file_sd_configs: [{files: [b.json]}]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/a.yml"),
        "scrape_configs:\n  - job_name: a1\n    scrape_interval: 3s\n  - job_name: a2\n",
    )
    .unwrap();
    std::fs::write(dir.join("jobs/ignored.json"), "not yaml: [").unwrap();
    write_main("  - jobs/*.yml\n  - missing/*.yml\n  - nothing.yml\n");
    let c = load_file(&main).unwrap();
    let jobs: Vec<&str> = c
        .scrape_configs
        .iter()
        .map(|s| s.job_name.as_str())
        .collect();
    assert_eq!(
        jobs,
        ["main", "a1", "a2", "b"],
        "main first, then files in name order"
    );
    assert_eq!(c.scrape_configs[1].scrape_interval, Duration::from_secs(3));
    assert_eq!(
        c.scrape_configs[2].scrape_interval,
        Duration::from_secs(7),
        "global applies"
    );
    assert_eq!(
        c.scrape_configs[3].file_sd_configs[0].files,
        [format!("{}/jobs/b.json", dir.display())],
        "paths in an included file are relative to its directory"
    );

    let a = dir.join("jobs/a.yml").display().to_string();
    let b = dir.join("jobs/b.yml").display().to_string();
    // A job name used twice: in the main file and a file, or in two files.
    std::fs::write(
        dir.join("jobs/b.yml"),
        "scrape_configs:\n  - job_name: main\n",
    )
    .unwrap();
    assert_eq!(
        load_file(&main).unwrap_err().to_string(),
        format!(
            "{b}:2: scrape_configs[0].job_name: found multiple scrape configs with job name \"main\", first found in main config file"
        )
    );
    std::fs::write(
        dir.join("jobs/b.yml"),
        "scrape_configs:\n  - job_name: x\n  - job_name: a2\n",
    )
    .unwrap();
    assert_eq!(
        load_file(&main).unwrap_err().to_string(),
        format!(
            "{b}:3: scrape_configs[1].job_name: found multiple scrape configs with job name \"a2\", first found in {a:?}"
        )
    );
    // Only scrape_configs inside; errors name the included file.
    std::fs::write(dir.join("jobs/b.yml"), "global:\n  scrape_interval: 1s\n").unwrap();
    let e = load_file(&main).unwrap_err();
    assert_eq!(e.file, b);
    assert!(e.to_string().contains("global"), "{e}");
    std::fs::write(
        dir.join("jobs/b.yml"),
        "scrape_configs:\n  - job_name: b\n    scrape_interval: soon\n",
    )
    .unwrap();
    let e = load_file(&main).unwrap_err();
    assert_eq!((e.file.as_str(), e.line), (b.as_str(), Some(3)), "{e}");
    // A `*` outside the last path component.
    std::fs::write(dir.join("jobs/b.yml"), "scrape_configs: []\n").unwrap();
    write_main("  - 'j*/a.yml'\n");
    assert_eq!(
        load_file(&main).unwrap_err().to_string(),
        format!(
            "{}:4: scrape_config_files: invalid scrape config file path \"j*/a.yml\"",
            main.display()
        )
    );
    // The checksum auto-reload compares follows the included files.
    write_main("  - jobs/*.yml\n");
    let before = checksum(&main).unwrap();
    std::fs::write(
        dir.join("jobs/b.yml"),
        "scrape_configs:\n  - job_name: b2\n",
    )
    .unwrap();
    assert_ne!(checksum(&main).unwrap(), before);
    std::fs::write(dir.join("jobs/b.yml"), "scrape_configs: []\n").unwrap();
    assert_eq!(checksum(&main).unwrap(), before);
}

#[test]
fn sigv4_roles_follow_prometheus_rules() {
    let rw = |sigv4: &str| {
        format!(
            "remote_write:\n  - url: https://aps.example/api/v1/remote_write\n    sigv4: {sigv4}\n"
        )
    };
    let c = load(&rw("{region: eu-west-1, role_arn: 'arn:aws:iam::1:role/w', external_id: x, use_fips_sts_endpoint: true, session_name: s1, tags: {b: '2', a: '1'}, service_name: aps}")).unwrap();
    let sig = c.remote_write[0].sigv4.as_ref().unwrap();
    let role = sig.role.as_ref().unwrap();
    assert_eq!(role.role_arn, "arn:aws:iam::1:role/w");
    assert_eq!(role.external_id.as_deref(), Some("x"));
    assert!(role.use_fips_sts_endpoint);
    assert_eq!(role.session_name.as_deref(), Some("s1"));
    assert_eq!(
        role.tags,
        [("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(sig.service.as_deref(), Some("aps"));
    for (sigv4, why) in [
        (
            "{region: r, external_id: x}",
            "external_id can only be used with role_arn",
        ),
        (
            "{region: r, session_name: abc}",
            "session_name can only be used with role_arn",
        ),
        (
            "{region: r, tags: {a: b}}",
            "tags can only be used with role_arn",
        ),
        (
            "{region: r, role_arn: a, session_name: 'a b'}",
            "session_name must match",
        ),
        (
            "{region: r, role_arn: a, tags: {'': b}}",
            "tag key must not be empty",
        ),
    ] {
        let e = load(&rw(sigv4)).unwrap_err().to_string();
        assert!(e.contains(why), "{sigv4}: {e}");
    }
    let c = load("scrape_configs:\n  - job_name: ec2\n    ec2_sd_configs: [{region: eu-west-1, role_arn: 'arn:aws:iam::1:role/sd'}]\n").unwrap();
    let role = c.scrape_configs[0].ec2_sd_configs[0]
        .sigv4
        .role
        .as_ref()
        .unwrap();
    assert_eq!(role.role_arn, "arn:aws:iam::1:role/sd");
}

#[test]
fn name_validation_and_escaping_follow_prometheus_rules() {
    use crate::names::{Escaping, Validation};
    let job = |global: &str, local: &str| {
        load(&format!(
            "global:\n{global}scrape_configs:\n  - job_name: j\n{local}"
        ))
    };
    let schemes = |c: Config| {
        let sc = &c.scrape_configs[0];
        (sc.name_validation, sc.name_escaping)
    };
    // Prometheus 3's defaults: UTF-8 names, asked for unescaped.
    assert_eq!(
        schemes(job("", "").unwrap()),
        (Validation::Utf8, Escaping::AllowUtf8)
    );
    // Legacy, globally or per job: underscores unless set.
    let legacy = "  metric_name_validation_scheme: legacy\n";
    assert_eq!(
        schemes(job(legacy, "").unwrap()),
        (Validation::Legacy, Escaping::Underscores)
    );
    assert_eq!(
        schemes(job("", "    metric_name_validation_scheme: legacy\n").unwrap()),
        (Validation::Legacy, Escaping::Underscores)
    );
    // A job's own validation does not inherit the global escaping.
    assert_eq!(
        schemes(
            job(
                "  metric_name_escaping_scheme: allow-utf-8\n",
                "    metric_name_validation_scheme: legacy\n"
            )
            .unwrap()
        ),
        (Validation::Legacy, Escaping::Underscores)
    );
    // The global escaping applies to jobs without a validation of their own.
    assert_eq!(
        schemes(job("  metric_name_escaping_scheme: dots\n", "").unwrap()),
        (Validation::Utf8, Escaping::Dots)
    );
    assert_eq!(
        schemes(job("", "    metric_name_escaping_scheme: values\n").unwrap()),
        (Validation::Utf8, Escaping::Values)
    );
    let err = |g: &str, l: &str| job(g, l).unwrap_err().to_string();
    assert!(
        err(legacy, "    metric_name_escaping_scheme: allow-utf-8\n")
            .ends_with("utf8 metric names requested but validation scheme is not set to UTF8")
    );
    assert!(
        err("  metric_name_validation_scheme: ascii\n", "")
            .ends_with("unrecognized ValidationScheme: \"ascii\"")
    );
    assert!(err("", "    metric_name_escaping_scheme: dashes\n").ends_with(
        "unknown scrape config name escaping method specified, must be one of 'allow-utf-8', 'underscores', 'dots', or 'values', got \"dashes\""
    ));
    // Relabeling writes the names its job's scheme takes; external labels the global one.
    let dotted =
        "    relabel_configs: [{source_labels: [__address__], target_label: 'service.name'}]\n";
    assert!(job("", dotted).is_ok());
    assert!(
        err(
            "",
            &format!("    metric_name_validation_scheme: legacy\n{dotted}")
        )
        .contains("\"service.name\" is invalid 'target_label' for replace action")
    );
    assert!(load("global:\n  external_labels: {'k8s.cluster': a}\n").is_ok());
    assert!(
        load("global:\n  metric_name_validation_scheme: legacy\n  external_labels: {'k8s.cluster': a}\n")
            .unwrap_err()
            .to_string()
            .contains("\"k8s.cluster\" is not a valid label name")
    );
    // The Accept header carries the escaping.
    let c = job("", "    metric_name_escaping_scheme: underscores\n").unwrap();
    assert_eq!(c.scrape_configs[0].name_escaping, Escaping::Underscores);
}

#[test]
fn nhcb_conversion_is_inherited_from_global() {
    let c = load("global:\n  convert_classic_histograms_to_nhcb: true\nscrape_configs:\n  - job_name: a\n  - job_name: b\n    convert_classic_histograms_to_nhcb: false\n").unwrap();
    assert!(c.scrape_configs[0].convert_classic_histograms_to_nhcb);
    assert!(!c.scrape_configs[1].convert_classic_histograms_to_nhcb);
    assert!(
        !load("scrape_configs:\n  - job_name: a\n")
            .unwrap()
            .scrape_configs[0]
            .convert_classic_histograms_to_nhcb
    );
}

#[test]
fn native_histogram_limits_are_per_job_as_in_prometheus() {
    use crate::entry::Resolution;
    let c = load("scrape_configs:\n  - job_name: a\n    native_histogram_bucket_limit: 10\n    native_histogram_min_bucket_factor: 1.1\n  - job_name: b\n").unwrap();
    assert_eq!(
        c.scrape_configs[0].native_histogram_limits,
        Resolution {
            bucket_limit: 10,
            max_schema: 2
        }
    );
    assert_eq!(
        c.scrape_configs[1].native_histogram_limits,
        Resolution::default()
    );
    // Prometheus' global section has neither: an unknown field there, as in Prometheus.
    for field in [
        "native_histogram_bucket_limit: 10",
        "native_histogram_min_bucket_factor: 1.1",
    ] {
        let e = load(&format!("global:\n  {field}\nscrape_configs: []\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
