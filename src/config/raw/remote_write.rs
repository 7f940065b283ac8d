//! A `remote_write` entry resolved over Prometheus' defaults: URL, protocol version,
//! headers, `queue_config`, `metadata_config`, credentials (SigV4 included) and
//! `write_relabel_configs`.

use super::*;

pub(super) fn resolve_remote_write(
    rw: RawRemoteWrite,
    i: usize,
    names: crate::names::Validation,
) -> Result<RemoteWriteConfig, Problem> {
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

    let headers = remote_headers(&rw.headers, &at)?;
    let queue = queue_config(rw.queue_config, &at)?;
    let metadata = metadata_config(&rw.metadata_config, &at)?;

    // Prometheus turns bearer_token into authorization before the other checks.
    let authorization = crate::config::client::with_bearer(
        rw.authorization,
        rw.basic_auth.is_some() || rw.oauth2.is_some(),
        rw.bearer_token,
        rw.bearer_token_file,
    )
    .map_err(|(field, e)| Problem::field(at(field), e))?;
    let sigv4 = match rw.sigv4 {
        None => None,
        Some(sig) => {
            if rw.basic_auth.is_some() || authorization.is_some() || rw.oauth2.is_some() {
                return Err(Problem::field(
                    at("sigv4"),
                    "at most one of basic_auth, authorization, oauth2, sigv4, azuread or google_iam must be configured",
                ));
            }
            unsupported(&at("sigv4."), sig.unsupported())?;
            Some(resolve_sigv4(sig).map_err(|e| Problem::field(at("sigv4"), e))?)
        }
    };
    let http = crate::config::client::resolve(
        rw.basic_auth,
        authorization,
        None,
        rw.follow_redirects,
        rw.tls_config,
        rw.oauth2,
        crate::config::client::RawProxy {
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
        names,
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

/// `remote_write[i].headers`: no credentials, no reserved header, no line break.
fn remote_headers(
    headers_in: &Option<Spanned<BTreeMap<String, String>>>,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<(String, String)>, Problem> {
    let mut headers = Vec::new();
    if let Some(h) = headers_in {
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
    Ok(headers)
}

/// `remote_write[i].queue_config` over Prometheus' defaults.
fn queue_config(
    raw: Option<RawQueueConfig>,
    at: &dyn Fn(&str) -> String,
) -> Result<QueueConfig, Problem> {
    let mut queue = QueueConfig::default();
    if let Some(q) = raw {
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
    Ok(queue)
}

/// `remote_write[i].metadata_config` over Prometheus' defaults.
fn metadata_config(
    raw: &Option<RawMetadataConfig>,
    at: &dyn Fn(&str) -> String,
) -> Result<MetadataConfig, Problem> {
    let mut metadata = MetadataConfig::default();
    if let Some(m) = raw {
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
    Ok(metadata)
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
            (Some(a), Some(crate::config::client::Secret::Inline(s)))
        }
        (None, None) => (None, None),
        _ => return Err("must provide a AWS SigV4 Access key and Secret Key if credentials are specified in the SigV4 config".into()),
    };
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let role_arn = nonempty(sig.role_arn);
    let external_id = nonempty(sig.external_id);
    let session_name = nonempty(sig.session_name);
    let tags: Vec<(String, String)> = sig.tags.unwrap_or_default().into_iter().collect();
    if role_arn.is_none() {
        for (set, field) in [
            (external_id.is_some(), "external_id"),
            (session_name.is_some(), "session_name"),
            (!tags.is_empty(), "tags"),
        ] {
            if set {
                return Err(format!("{field} can only be used with role_arn"));
            }
        }
    }
    if let Some(name) = &session_name {
        let ok = (2..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || "+=,.@-".contains(c));
        if !ok {
            return Err(
                "session_name must match ^[\\w+=,.@-]{2,64}$ (2-64 alphanumeric and +=,.@- characters)"
                    .into(),
            );
        }
    }
    for (k, v) in &tags {
        if k.is_empty() {
            return Err("tag key must not be empty".into());
        }
        if k.len() > 128 {
            return Err(format!("tag key {k:?} exceeds maximum length of 128"));
        }
        if v.len() > 256 {
            return Err(format!(
                "tag value for key {k:?} exceeds maximum length of 256"
            ));
        }
    }
    let role = role_arn.map(|arn| {
        let mut r = crate::http::sigv4::AssumeRole::new(arn);
        r.external_id = external_id;
        r.use_fips_sts_endpoint = sig.use_fips_sts_endpoint.unwrap_or(false);
        r.session_name = session_name;
        r.tags = tags;
        r
    });
    Ok(crate::http::sigv4::SigV4 {
        region,
        access_key,
        secret_key,
        profile: sig.profile.filter(|p| !p.is_empty()),
        role,
        service: nonempty(sig.service_name),
    })
}
