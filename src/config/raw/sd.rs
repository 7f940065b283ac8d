//! Service discovery sections of a scrape config: `static_configs`, `file_sd_configs`,
//! `dns_sd_configs` and `http_sd_configs`, checked as Prometheus checks them.

use super::*;

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
            files: files.value,
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
        let http = crate::config::client::resolve(
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
