//! Service discovery sections of a scrape config: `static_configs`, `file_sd_configs`,
//! `dns_sd_configs` and `http_sd_configs`, checked as Prometheus checks them.

use super::*;

/// The HTTP client settings of a discovery section (its `basic_auth`, `authorization`,
/// `oauth2`, `http_headers`, `tls_config`, `follow_redirects` and proxy fields), resolved with
/// Prometheus' rules; errors name `field`'s sub-field.
macro_rules! client_settings {
    ($raw:ident, $field:expr) => {
        crate::config::client::with_bearer(
            $raw.authorization,
            $raw.basic_auth.is_some() || $raw.oauth2.is_some(),
            $raw.bearer_token,
            $raw.bearer_token_file,
        )
        .and_then(|authorization| {
            crate::config::client::resolve(
                $raw.basic_auth,
                authorization,
                $raw.http_headers,
                $raw.follow_redirects,
                $raw.tls_config,
                $raw.oauth2,
                crate::config::client::RawProxy {
                    proxy_url: $raw.proxy_url,
                    no_proxy: $raw.no_proxy,
                    proxy_from_environment: $raw.proxy_from_environment,
                    proxy_connect_header: $raw.proxy_connect_header,
                },
            )
        })
        .map_err(|(f, e)| Problem::field(format!("{}.{f}", $field), e))
    };
}

/// `static_configs` of a scrape config (`at` names a field of it).
pub(super) fn static_configs(
    list: Vec<RawStaticConfig>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<StaticConfig>, Problem> {
    let mut static_configs = Vec::new();
    for (j, st) in list.into_iter().enumerate() {
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
            // Target labels are checked as Prometheus 3 checks a label set: UTF-8 names.
            if !crate::names::Validation::Utf8.is_valid_label_name(name.as_bytes()) {
                return Err(Problem::field(
                    at(&format!("static_configs[{j}].labels")),
                    format!("{name:?} is not a valid label name"),
                ));
            }
            labels.push((name, value));
        }
        static_configs.push(StaticConfig { targets, labels });
    }
    Ok(static_configs)
}

/// `file_sd_configs` of a scrape config (`at` names a field of it).
pub(super) fn file_sd_configs(
    list: Vec<RawFileSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<FileSdConfig>, Problem> {
    let mut file_sd_configs = Vec::new();
    for (j, f) in list.into_iter().enumerate() {
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
            files: files
                .value
                .into_iter()
                .map(crate::config::paths::join)
                .collect(),
            refresh_interval: f.refresh_interval.map_or(Duration::from_secs(300), |d| d.0),
        });
    }
    Ok(file_sd_configs)
}

/// `dns_sd_configs` of a scrape config (`at` names a field of it).
pub(super) fn dns_sd_configs(
    list: Vec<RawDnsSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<DnsSdConfig>, Problem> {
    let mut dns_sd_configs = Vec::new();
    for (j, d) in list.into_iter().enumerate() {
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
    Ok(dns_sd_configs)
}

/// `http_sd_configs` of a scrape config (`at` names a field of it).
pub(super) fn http_sd_configs(
    list: Vec<RawHttpSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<HttpSdConfig>, Problem> {
    let mut http_sd_configs = Vec::new();
    for (j, h) in list.into_iter().enumerate() {
        let field = at(&format!("http_sd_configs[{j}]"));
        unsupported(&format!("{field}."), h.unsupported())?;
        let url = h
            .url
            .ok_or_else(|| Problem::field(field.clone(), "URL is missing"))?;
        let parsed = Url::parse(&url.value)
            .map_err(|e| Problem::at(url.referenced.line(), format!("{field}.url"), e))?;
        let authorization = crate::config::client::with_bearer(
            h.authorization,
            h.basic_auth.is_some(),
            h.bearer_token,
            h.bearer_token_file,
        )
        .map_err(|(f, e)| Problem::field(format!("{field}.{f}"), e))?;
        let http = crate::config::client::resolve(
            h.basic_auth,
            authorization,
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
    Ok(http_sd_configs)
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

/// `kubernetes_sd_configs` of a scrape config (`at` names a field of it), with Prometheus'
/// rules: a role, at most one of `api_server` and `kubeconfig_file`, client settings only
/// with `api_server`, `own_namespace` only in-cluster, selectors only for the roles a role
/// watches, once each.
pub(super) fn kubernetes_sd_configs(
    list: Vec<RawKubernetesSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<KubernetesSdConfig>, Problem> {
    let mut out = Vec::new();
    for (j, k) in list.into_iter().enumerate() {
        let field = at(&format!("kubernetes_sd_configs[{j}]"));
        unsupported(&format!("{field}."), k.unsupported())?;
        let role_line = k.role.as_ref().map_or(0, |r| r.referenced.line());
        let role = match &k.role {
            None => {
                return Err(Problem::field(
                    format!("{field}.role"),
                    "role missing (one of: pod, service, endpoints, endpointslice, node, ingress)",
                ));
            }
            Some(r) => KubeRole::parse(&r.value).ok_or_else(|| {
                Problem::at(
                    role_line,
                    format!("{field}.role"),
                    format!(
                        "unknown Kubernetes SD role {:?}: use pod, service, endpoints, endpointslice, node or ingress",
                        r.value
                    ),
                )
            })?,
        };
        let custom_http = k.basic_auth.is_some()
            || k.authorization.is_some()
            || k.oauth2.is_some()
            || k.http_headers.is_some()
            || k.tls_config.is_some()
            || k.proxy_url.is_some()
            || k.no_proxy.is_some()
            || k.proxy_from_environment == Some(true)
            || k.proxy_connect_header.is_some()
            || k.follow_redirects == Some(false)
            || k.enable_http2 == Some(false);
        let ns = k.namespaces.unwrap_or_default();
        unsupported(&format!("{field}.namespaces."), ns.unsupported())?;
        let own_namespace = ns.own_namespace.unwrap_or(false);
        let fail = |f: &str, msg: &str| Err(Problem::field(format!("{field}{f}"), msg.to_string()));
        // An empty string is no value (the Prometheus Operator writes `kubeconfig_file: ""`).
        let api_server = k.api_server.as_ref().filter(|u| !u.value.is_empty());
        let kubeconfig_file = k.kubeconfig_file.as_ref().filter(|f| !f.value.is_empty());
        let api = match (api_server, kubeconfig_file) {
            (Some(_), Some(_)) => {
                return fail(
                    "",
                    "cannot use 'kubeconfig_file' and 'api_server' simultaneously",
                );
            }
            (None, Some(_)) if custom_http => {
                return fail(
                    "",
                    "cannot use a custom HTTP client configuration together with 'kubeconfig_file'",
                );
            }
            (None, None) if custom_http => {
                return fail(
                    "",
                    "to use custom HTTP client configuration please provide the 'api_server' URL explicitly",
                );
            }
            (Some(_), None) if own_namespace => {
                return fail(
                    "",
                    "cannot use 'api_server' and 'namespaces.own_namespace' simultaneously",
                );
            }
            (None, Some(_)) if own_namespace => {
                return fail(
                    "",
                    "cannot use 'kubeconfig_file' and 'namespaces.own_namespace' simultaneously",
                );
            }
            (None, Some(path)) => {
                KubeApi::Kubeconfig(crate::config::paths::join(path.value.clone()).into())
            }
            (None, None) => KubeApi::InCluster,
            (Some(url), None) => {
                let parsed = Url::parse(&url.value).map_err(|e| {
                    Problem::at(url.referenced.line(), format!("{field}.api_server"), e)
                })?;
                let http = client_settings!(k, &field)?;
                KubeApi::Server {
                    url: parsed,
                    http: Box::new(http),
                }
            }
        };
        let allowed: &[KubeRole] = match role {
            KubeRole::Pod => &[KubeRole::Pod],
            KubeRole::Service => &[KubeRole::Service],
            KubeRole::Endpoints => &[KubeRole::Pod, KubeRole::Service, KubeRole::Endpoints],
            KubeRole::EndpointSlice => &[KubeRole::Pod, KubeRole::Service, KubeRole::EndpointSlice],
            KubeRole::Node => &[KubeRole::Node],
            KubeRole::Ingress => &[KubeRole::Ingress],
        };
        let mut selectors: Vec<KubeSelector> = Vec::new();
        for (i, sel) in k.selectors.unwrap_or_default().into_iter().enumerate() {
            let line = sel.referenced.line();
            let sel = sel.value;
            let sf = format!("{field}.selectors[{i}]");
            unsupported(&format!("{sf}."), sel.unsupported())?;
            let name = sel.role.unwrap_or_default();
            let Some(sel_role) = KubeRole::parse(&name) else {
                return Err(Problem::at(
                    line,
                    format!("{sf}.role"),
                    format!("unknown Kubernetes SD role {name:?}"),
                ));
            };
            if selectors.iter().any(|s| s.role == sel_role) {
                return Err(Problem::at(
                    line,
                    sf,
                    format!("duplicated selector role: {name}"),
                ));
            }
            if !allowed.contains(&sel_role) {
                let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
                return Err(Problem::at(
                    line,
                    sf,
                    format!(
                        "{} role supports only {} selectors",
                        role.as_str(),
                        names.join(", ")
                    ),
                ));
            }
            let label = sel.label.unwrap_or_default();
            let field_sel = sel.field.unwrap_or_default();
            for (what, text) in [("label", &label), ("field", &field_sel)] {
                if let Err(e) = crate::config::kube_selector::check(text, what == "field") {
                    return Err(Problem::at(line, format!("{sf}.{what}"), e));
                }
            }
            selectors.push(KubeSelector {
                role: sel_role,
                label,
                field: field_sel,
            });
        }
        let attach = k.attach_metadata.unwrap_or_default();
        unsupported(&format!("{field}.attach_metadata."), attach.unsupported())?;
        out.push(KubernetesSdConfig {
            role,
            api,
            namespaces: ns.names.unwrap_or_default(),
            own_namespace,
            selectors,
            attach_node: attach.node.unwrap_or(false),
            attach_namespace: attach.namespace.unwrap_or(false),
        });
    }
    Ok(out)
}

/// `consul_sd_configs` of a scrape config (`at` names a field of it), with Prometheus'
/// defaults and rules: a server is required; `token`, `authorization` and `oauth2` exclude
/// each other; the deprecated `username`/`password` are basic auth.
pub(super) fn consul_sd_configs(
    list: Vec<RawConsulSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<ConsulSdConfig>, Problem> {
    let mut out = Vec::new();
    for (j, c) in list.into_iter().enumerate() {
        let field = at(&format!("consul_sd_configs[{j}]"));
        unsupported(&format!("{field}."), c.unsupported())?;
        let server = c
            .server
            .as_ref()
            .map_or("localhost:8500", |s| s.value.as_str());
        if server.trim().is_empty() {
            return Err(Problem::field(
                format!("{field}.server"),
                "consul SD configuration requires a server address",
            ));
        }
        let scheme = c.scheme.as_ref().map_or("http", |s| s.value.as_str());
        if scheme != "http" && scheme != "https" {
            let line = c.scheme.as_ref().map_or(0, |s| s.referenced.line());
            return Err(Problem::at(
                line,
                format!("{field}.scheme"),
                format!("unknown scheme {scheme:?}: use http or https"),
            ));
        }
        let prefix = c.path_prefix.clone().unwrap_or_default();
        let url = Url::parse(&format!("{scheme}://{server}/{}", prefix.trim_matches('/')))
            .map_err(|e| Problem::field(format!("{field}.server"), e))?;
        let token = c.token.clone().filter(|t| !t.is_empty());
        if token.is_some() && (c.authorization.is_some() || c.oauth2.is_some()) {
            return Err(Problem::field(
                field,
                "at most one of consul SD configuration token, authorization or oauth2 can be configured",
            ));
        }
        let mut c = c;
        if c.username.is_some() || c.password.is_some() {
            if c.basic_auth.is_some() {
                return Err(Problem::field(
                    field,
                    "at most one of consul SD configuration username and password and basic auth can be configured",
                ));
            }
            c.basic_auth = Some(crate::config::client::RawBasicAuth::new(
                c.username.take().unwrap_or_default(),
                c.password.take().unwrap_or_default(),
            ));
        }
        let http = client_settings!(c, &field)?;
        out.push(ConsulSdConfig {
            url,
            token: token.map(crate::config::client::Secret::Inline),
            datacenter: c.datacenter.unwrap_or_default(),
            namespace: c.namespace.unwrap_or_default(),
            partition: c.partition.unwrap_or_default(),
            tag_separator: c.tag_separator.unwrap_or_else(|| ",".to_string()),
            allow_stale: c.allow_stale.unwrap_or(true),
            refresh_interval: c.refresh_interval.map_or(Duration::from_secs(30), |d| d.0),
            services: c.services.unwrap_or_default(),
            tags: c.tags.unwrap_or_default(),
            node_meta: c.node_meta.unwrap_or_default().into_iter().collect(),
            filter: c.filter.unwrap_or_default(),
            http,
        });
    }
    Ok(out)
}

/// `docker_sd_configs` of a scrape config (`at` names a field of it): a host
/// (`unix:///path`, `tcp://host:port`, `http(s)://…`), Prometheus' defaults (port 80,
/// `localhost` for host networking, the first network only, every 60 s).
pub(super) fn docker_sd_configs(
    list: Vec<RawDockerSd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<DockerSdConfig>, Problem> {
    let mut out = Vec::new();
    for (j, d) in list.into_iter().enumerate() {
        let field = at(&format!("docker_sd_configs[{j}]"));
        unsupported(&format!("{field}."), d.unsupported())?;
        let host = d
            .host
            .as_ref()
            .filter(|h| !h.value.is_empty())
            .ok_or_else(|| Problem::field(format!("{field}.host"), "host missing"))?;
        let bad = |e: String| Problem::at(host.referenced.line(), format!("{field}.host"), e);
        let target = if let Some(path) = host.value.strip_prefix("unix://") {
            DockerHost::Unix(path.into())
        } else if let Some(rest) = host.value.strip_prefix("tcp://") {
            DockerHost::Http(Url::parse(&format!("http://{rest}")).map_err(bad)?)
        } else if host.value.starts_with("http://") || host.value.starts_with("https://") {
            DockerHost::Http(Url::parse(&host.value).map_err(bad)?)
        } else {
            return Err(bad(format!(
                "{:?} is not a Docker host: use unix:///path, tcp://host:port or http(s)://host:port",
                host.value
            )));
        };
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, f) in d.filters.unwrap_or_default().into_iter().enumerate() {
            unsupported(&format!("{field}.filters[{i}]."), f.unsupported())?;
            let name = f.name.unwrap_or_default();
            if name.is_empty() {
                return Err(Problem::field(
                    format!("{field}.filters[{i}].name"),
                    "a Docker filter needs a name",
                ));
            }
            filters
                .entry(name)
                .or_default()
                .extend(f.values.unwrap_or_default());
        }
        let http = client_settings!(d, &field)?;
        out.push(DockerSdConfig {
            host: target,
            port: d.port.unwrap_or(80),
            host_networking_host: d
                .host_networking_host
                .unwrap_or_else(|| "localhost".to_string()),
            match_first_network: d.match_first_network.unwrap_or(true),
            filters: if filters.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&filters).unwrap_or_default()
            },
            refresh_interval: d.refresh_interval.map_or(Duration::from_secs(60), |r| r.0),
            http,
        });
    }
    Ok(out)
}

/// `ec2_sd_configs` of a scrape config (`at` names a field of it): a region (or the
/// environment's `AWS_REGION`), keys or a profile (else the environment's or the shared
/// credentials file's, as remote write's `sigv4`), Prometheus' defaults (port 80, 60 s).
pub(super) fn ec2_sd_configs(
    list: Vec<RawEc2Sd>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<Ec2SdConfig>, Problem> {
    let mut out = Vec::new();
    for (j, e) in list.into_iter().enumerate() {
        let field = at(&format!("ec2_sd_configs[{j}]"));
        unsupported(&format!("{field}."), e.unsupported())?;
        let region = e
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
            .or_else(|| {
                std::env::var("AWS_DEFAULT_REGION")
                    .ok()
                    .filter(|r| !r.is_empty())
            })
            .ok_or_else(|| {
                Problem::field(
                    format!("{field}.region"),
                    "EC2 SD configuration requires a region (or AWS_REGION in the environment)",
                )
            })?;
        let endpoint = e
            .endpoint
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("https://ec2.{region}.amazonaws.com"));
        let endpoint = Url::parse(&endpoint)
            .map_err(|err| Problem::field(format!("{field}.endpoint"), err))?;
        let mut filters = Vec::new();
        for (i, f) in e.filters.unwrap_or_default().into_iter().enumerate() {
            unsupported(&format!("{field}.filters[{i}]."), f.unsupported())?;
            let name = f.name.unwrap_or_default();
            if name.is_empty() {
                return Err(Problem::field(
                    format!("{field}.filters[{i}].name"),
                    "EC2 SD configuration filter name must not be empty",
                ));
            }
            let values = f.values.unwrap_or_default();
            if values.is_empty() {
                return Err(Problem::field(
                    format!("{field}.filters[{i}].values"),
                    "EC2 SD configuration filter values cannot be empty",
                ));
            }
            filters.push((name, values));
        }
        let http = client_settings!(e, &field)?;
        out.push(Ec2SdConfig {
            sigv4: crate::http::sigv4::SigV4 {
                region,
                access_key: e.access_key.filter(|k| !k.is_empty()),
                secret_key: e
                    .secret_key
                    .filter(|k| !k.is_empty())
                    .map(crate::config::client::Secret::Inline),
                profile: e.profile.filter(|p| !p.is_empty()),
                role: e
                    .role_arn
                    .filter(|r| !r.is_empty())
                    .map(crate::http::sigv4::AssumeRole::new),
                service: None,
            },
            endpoint,
            port: e.port.unwrap_or(80),
            filters,
            refresh_interval: e.refresh_interval.map_or(Duration::from_secs(60), |r| r.0),
            http,
        });
    }
    Ok(out)
}
