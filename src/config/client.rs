//! The HTTP client settings Prometheus shares between scrape configs and service discovery
//! (`basic_auth`, `authorization`, `http_headers`, `follow_redirects`), with secrets that
//! never print: inline ones show as `<secret>`, file ones are read when used.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use crate::http::Secret;
use crate::http::base64;
pub use crate::http::oauth2::OAuth2;

/// One `http_headers` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    Plain(String),
    Secret(Secret),
}

/// The resolved client settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpClientConfig {
    /// Username and password.
    pub basic_auth: Option<(Secret, Secret)>,
    /// Scheme (`Bearer` by default) and credentials.
    pub authorization: Option<(String, Secret)>,
    pub headers: Vec<(String, Vec<HeaderValue>)>,
    pub follow_redirects: bool,
    /// `tls_config`, for https targets; the system roots when absent.
    pub tls: Option<crate::http::tls::TlsSettings>,
    /// OAuth 2.0 client credentials: a token fetched from `token_url`, sent as a bearer token.
    pub oauth2: Option<OAuth2>,
    /// `proxy_url` (with `no_proxy`), or the environment's proxies.
    pub proxy: Option<ProxyConfig>,
}

/// Where requests go through an HTTP proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    /// `host:port` of the proxy for `http` and for `https` targets.
    pub http: Option<String>,
    pub https: Option<String>,
    /// `no_proxy` entries: hosts, domains (`example.com` covers its subdomains), IPs,
    /// CIDRs, `*`.
    pub no_proxy: Vec<String>,
    /// Headers for `CONNECT` (https targets through the proxy).
    pub connect_headers: Vec<(String, Vec<Secret>)>,
}

impl ProxyConfig {
    /// The proxy for a target on `host` (no brackets), as Go's `httpproxy` picks it: never
    /// for `localhost` or a loopback address, nor for a `no_proxy` match.
    pub fn for_host(&self, host: &str, tls: bool) -> Option<&str> {
        let proxy = if tls { &self.https } else { &self.http };
        let proxy = proxy.as_deref()?;
        if host.eq_ignore_ascii_case("localhost") {
            return None;
        }
        let ip = host.parse::<std::net::IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return None;
        }
        for entry in &self.no_proxy {
            let entry = entry.trim();
            if entry == "*" {
                return None;
            }
            if let (Some(ip), Some((net, bits))) = (ip, entry.split_once('/'))
                && let (Ok(net), Ok(bits)) = (net.parse::<std::net::IpAddr>(), bits.parse::<u32>())
                && in_cidr(ip, net, bits)
            {
                return None;
            }
            let name = entry
                .rsplit_once(':')
                .filter(|(_, p)| p.parse::<u16>().is_ok())
                .map_or(entry, |(h, _)| h);
            let name = name.trim_start_matches("*.");
            if let Some(suffix) = name.strip_prefix('.') {
                if host.len() > suffix.len()
                    && host
                        .to_ascii_lowercase()
                        .ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
                {
                    return None;
                }
            } else if host.eq_ignore_ascii_case(name)
                || host
                    .to_ascii_lowercase()
                    .ends_with(&format!(".{}", name.to_ascii_lowercase()))
            {
                return None;
            }
        }
        Some(proxy)
    }

    /// The `CONNECT` request's extra header lines.
    pub fn connect_header_lines(&self) -> Result<String, String> {
        let mut out = String::new();
        for (name, values) in &self.connect_headers {
            for v in values {
                out.push_str(&format!("{name}: {}\r\n", v.read()?));
            }
        }
        Ok(out)
    }
}

fn in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u32) -> bool {
    use std::net::IpAddr::{V4, V6};
    match (ip, net) {
        (V4(a), V4(b)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (V6(a), V6(b)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            basic_auth: None,
            authorization: None,
            headers: Vec::new(),
            follow_redirects: true,
            tls: None,
            oauth2: None,
            proxy: None,
        }
    }
}

impl HttpClientConfig {
    /// The TLS connection settings for `host` (an https target).
    pub fn tls_target(&self, host: &str) -> Result<crate::http::TlsTarget, String> {
        let config = match &self.tls {
            Some(t) => t.client()?,
            None => crate::http::tls::default_client()?,
        };
        let name = self.tls.as_ref().and_then(|t| t.server_name.as_deref());
        Ok(crate::http::TlsTarget {
            config,
            server_name: crate::http::tls::server_name(name, host)?,
        })
    }

    /// A connection to `authority` (`host:port`) with these settings: TLS when `tls`, through
    /// the proxy that applies to the host.
    pub fn connection(&self, authority: &str, tls: bool) -> Result<crate::http::Conn, String> {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut conn = crate::http::Conn::new(authority.to_string());
        if tls {
            conn = conn.with_tls(self.tls_target(host)?);
        }
        if let Some(p) = &self.proxy
            && let Some(proxy) = p.for_host(host, tls)
        {
            conn = conn.with_proxy(proxy.to_string(), p.connect_header_lines()?);
        }
        Ok(conn)
    }

    /// Whether the headers must be computed per request (a secret lives in a file, or a token
    /// expires).
    pub fn reads_files(&self) -> bool {
        self.oauth2.is_some()
            || self
                .basic_auth
                .as_ref()
                .is_some_and(|(u, p)| u.is_file() || p.is_file())
            || self
                .authorization
                .as_ref()
                .is_some_and(|(_, c)| c.is_file())
            || self.headers.iter().any(|(_, vs)| {
                vs.iter()
                    .any(|v| matches!(v, HeaderValue::Secret(s) if s.is_file()))
            })
    }

    /// The request headers these settings add, as `Name: value\r\n` lines.
    pub fn header_lines(&self, out: &mut String) -> Result<(), String> {
        if let Some((user, pass)) = &self.basic_auth {
            let raw = format!("{}:{}", user.read()?, pass.read()?);
            out.push_str("Authorization: Basic ");
            base64(raw.as_bytes(), out);
            out.push_str("\r\n");
        }
        if let Some((scheme, creds)) = &self.authorization {
            out.push_str(&format!("Authorization: {scheme} {}\r\n", creds.read()?));
        }
        for (name, values) in &self.headers {
            for v in values {
                let value = match v {
                    HeaderValue::Plain(s) => s.clone(),
                    HeaderValue::Secret(s) => s.read()?,
                };
                if value.contains(['\r', '\n']) {
                    return Err(format!("header {name} has a line break in its value"));
                }
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        Ok(())
    }
}

/// `basic_auth` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasicAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    username_file: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
}

impl RawBasicAuth {
    /// Basic auth from a deprecated inline `username`/`password` pair (Consul's).
    pub(super) fn new(username: String, password: String) -> RawBasicAuth {
        RawBasicAuth {
            username: Some(username),
            password: Some(password),
            ..Default::default()
        }
    }
}

/// `authorization` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthorization {
    #[serde(default)]
    r#type: Option<String>,
    #[serde(default)]
    credentials: Option<String>,
    #[serde(default)]
    credentials_file: Option<String>,
}

/// One `http_headers` entry as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
}

/// `oauth2` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOAuth2 {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default)]
    endpoint_params: Option<BTreeMap<String, String>>,
    #[serde(default)]
    tls_config: Option<RawTls>,
    #[serde(default)]
    proxy_url: Option<serde::de::IgnoredAny>,
}

fn resolve_oauth2(o: RawOAuth2) -> Result<OAuth2, String> {
    if o.proxy_url.is_some() {
        return Err(
            "oauth2 proxy_url is not supported by spate yet; see docs/compatibility.md".into(),
        );
    }
    let token_url = o
        .token_url
        .filter(|u| !u.is_empty())
        .ok_or("oauth2 token_url must be configured")?;
    let token_url = crate::http::Url::parse(&token_url)?;
    let client_secret = exclusive(
        o.client_secret,
        o.client_secret_file,
        "oauth2 client_secret",
    )?
    .unwrap_or(Secret::Inline(String::new()));
    Ok(OAuth2 {
        client_id: o.client_id.unwrap_or_default(),
        client_secret,
        scopes: o.scopes.unwrap_or_default(),
        token_url,
        endpoint_params: o.endpoint_params.unwrap_or_default().into_iter().collect(),
        tls: o.tls_config.map(resolve_tls).transpose()?,
    })
}

/// The proxy settings as written.
#[derive(Default)]
pub(super) struct RawProxy {
    pub proxy_url: Option<String>,
    pub no_proxy: Option<String>,
    pub proxy_from_environment: Option<bool>,
    pub proxy_connect_header: Option<BTreeMap<String, Vec<String>>>,
}

fn proxy_authority(url: &str) -> Result<String, String> {
    let u = crate::http::Url::parse(url).map_err(|e| format!("invalid proxy_url: {e}"))?;
    if u.tls {
        return Err(
            "https proxies are not supported by spate yet; use an http:// proxy_url".into(),
        );
    }
    Ok(u.authority())
}

fn resolve_proxy(p: RawProxy) -> Result<Option<ProxyConfig>, String> {
    let from_env = p.proxy_from_environment.unwrap_or(false);
    if from_env && (p.proxy_url.is_some() || p.no_proxy.is_some()) {
        return Err("if proxy_from_environment is configured, proxy_url and no_proxy must not be configured".into());
    }
    if p.no_proxy.is_some() && p.proxy_url.is_none() {
        return Err("if no_proxy is configured, proxy_url must also be configured".into());
    }
    let connect_headers = p
        .proxy_connect_header
        .unwrap_or_default()
        .into_iter()
        .map(|(k, vs)| (k, vs.into_iter().map(Secret::Inline).collect()))
        .collect::<Vec<_>>();
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let cfg = if from_env {
        let authority = |v: Option<String>| -> Result<Option<String>, String> {
            v.map(|u| {
                let u = if u.contains("://") {
                    u
                } else {
                    format!("http://{u}")
                };
                proxy_authority(&u)
            })
            .transpose()
        };
        ProxyConfig {
            http: authority(env(&["HTTP_PROXY", "http_proxy"]))?,
            https: authority(env(&["HTTPS_PROXY", "https_proxy"]))?,
            no_proxy: env(&["NO_PROXY", "no_proxy"])
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            connect_headers,
        }
    } else if let Some(url) = p.proxy_url.filter(|u| !u.is_empty()) {
        let a = proxy_authority(&url)?;
        ProxyConfig {
            http: Some(a.clone()),
            https: Some(a),
            no_proxy: p
                .no_proxy
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            connect_headers,
        }
    } else {
        if !connect_headers.is_empty() {
            return Err("if proxy_connect_header is configured, proxy_url or proxy_from_environment must also be configured".into());
        }
        return Ok(None);
    };
    Ok(Some(cfg))
}

/// `tls_config` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    #[serde(default)]
    ca: Option<String>,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
    #[serde(default)]
    min_version: Option<String>,
}

fn pem(
    inline: Option<String>,
    file: Option<String>,
    what: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!(
            "at most one of {what} and {what}_file must be configured"
        )),
        (Some(s), None) => Ok(Some(s.into_bytes())),
        (None, Some(f)) => {
            let f = super::paths::join(f);
            std::fs::read(&f)
                .map(Some)
                .map_err(|e| format!("unable to read {what}_file {f}: {e}"))
        }
        (None, None) => Ok(None),
    }
}

fn resolve_tls(t: RawTls) -> Result<crate::http::tls::TlsSettings, String> {
    let min_version = match t.min_version.as_deref() {
        None | Some("TLS10") | Some("TLS11") | Some("TLS12") => 12,
        Some("TLS13") => 13,
        Some(v) => return Err(format!("unknown TLS version: {v}")),
    };
    // A file that cannot be read leaves these settings unusable but the configuration
    // loaded, as in Prometheus (the job's requests fail with the reason; a reload reads the
    // files again). A service-account CA in an example configuration run outside a cluster
    // is the common case.
    let files = (|| {
        Ok::<_, String>((
            pem(t.ca, t.ca_file, "ca")?,
            pem(t.cert, t.cert_file, "cert")?,
            pem(t.key, t.key_file, "key")?,
        ))
    })();
    let (ca, cert, key) = match files {
        Ok(f) => f,
        Err(e) if e.starts_with("unable to read") => {
            crate::log!(
                crate::log::Level::Error,
                "config",
                "TLS settings cannot be used; requests with them fail until a reload reads the files",
                err = e
            );
            return Ok(crate::http::tls::TlsSettings::unavailable(e));
        }
        Err(e) => return Err(e),
    };
    crate::http::tls::TlsSettings::new(
        ca,
        cert,
        key,
        t.server_name,
        t.insecure_skip_verify.unwrap_or(false),
        min_version,
    )
}

/// Headers a scrape configuration may not set: remote write's reserved list, plus these.
const RESERVED_FOR_SCRAPES: &[&str] = &["authorization", "x-prometheus-scrape-timeout-seconds"];

fn exclusive(a: Option<String>, b: Option<String>, what: &str) -> Result<Option<Secret>, String> {
    match (a, b) {
        (Some(_), Some(_)) => Err(format!(
            "at most one of {what} & {what}_file must be configured"
        )),
        (Some(s), None) => Ok(Some(Secret::Inline(s))),
        (None, Some(f)) => Ok(Some(Secret::File(super::paths::join(f).into()))),
        (None, None) => Ok(None),
    }
}

/// The deprecated `bearer_token` and `bearer_token_file`, as Prometheus still reads them: an
/// `authorization` of type Bearer, exclusive with one, with each other, and with `basic_auth`
/// and `oauth2` (Prometheus' messages; empty values count as absent).
pub(super) fn with_bearer(
    authorization: Option<RawAuthorization>,
    basic_or_oauth2: bool,
    token: Option<String>,
    file: Option<String>,
) -> Result<Option<RawAuthorization>, (&'static str, String)> {
    let token = token.filter(|t| !t.is_empty());
    let file = file.filter(|f| !f.is_empty());
    if token.is_none() && file.is_none() {
        return Ok(authorization);
    }
    let fail = |m: &str| Err(("bearer_token", m.to_string()));
    if token.is_some() && file.is_some() {
        return fail("at most one of bearer_token & bearer_token_file must be configured");
    }
    if basic_or_oauth2 {
        return fail(
            "at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured",
        );
    }
    if authorization.is_some() {
        return fail("authorization is not compatible with bearer_token & bearer_token_file");
    }
    Ok(Some(RawAuthorization {
        r#type: Some("Bearer".into()),
        credentials: token,
        credentials_file: file,
    }))
}

/// Validates the client settings with Prometheus' rules; the error names the field.
pub(super) fn resolve(
    basic_auth: Option<RawBasicAuth>,
    authorization: Option<RawAuthorization>,
    headers: Option<BTreeMap<String, RawHeader>>,
    follow_redirects: Option<bool>,
    tls: Option<RawTls>,
    oauth2: Option<RawOAuth2>,
    proxy: RawProxy,
) -> Result<HttpClientConfig, (&'static str, String)> {
    let auth_count = usize::from(basic_auth.is_some())
        + usize::from(authorization.is_some())
        + usize::from(oauth2.is_some());
    if auth_count > 1 {
        return Err((
            "authorization",
            "at most one of basic_auth, oauth2 & authorization must be configured".into(),
        ));
    }
    let mut out = HttpClientConfig {
        follow_redirects: follow_redirects.unwrap_or(true),
        tls: tls
            .map(resolve_tls)
            .transpose()
            .map_err(|e| ("tls_config", e))?,
        oauth2: oauth2
            .map(resolve_oauth2)
            .transpose()
            .map_err(|e| ("oauth2", e))?,
        proxy: resolve_proxy(proxy).map_err(|e| ("proxy_url", e))?,
        ..Default::default()
    };
    if let Some(b) = basic_auth {
        let user = exclusive(b.username, b.username_file, "basic_auth username")
            .map_err(|e| ("basic_auth", e))?
            .unwrap_or(Secret::Inline(String::new()));
        let pass = exclusive(b.password, b.password_file, "basic_auth password")
            .map_err(|e| ("basic_auth", e))?
            .unwrap_or(Secret::Inline(String::new()));
        out.basic_auth = Some((user, pass));
    }
    if let Some(a) = authorization {
        let scheme = a.r#type.unwrap_or_else(|| "Bearer".into());
        if scheme.eq_ignore_ascii_case("basic") {
            return Err((
                "authorization",
                "authorization type cannot be set to \"basic\", use \"basic_auth\" instead".into(),
            ));
        }
        let creds = exclusive(
            a.credentials,
            a.credentials_file,
            "authorization credentials",
        )
        .map_err(|e| ("authorization", e))?
        .unwrap_or(Secret::Inline(String::new()));
        out.authorization = Some((scheme, creds));
    }
    for (name, h) in headers.unwrap_or_default() {
        let lower = name.to_ascii_lowercase();
        if super::raw::RESERVED_HEADERS.contains(&lower.as_str())
            || RESERVED_FOR_SCRAPES.contains(&lower.as_str())
        {
            return Err((
                "http_headers",
                format!("setting header {name:?} is not allowed"),
            ));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err((
                "http_headers",
                format!("{name:?} is not a valid header name"),
            ));
        }
        let mut values: Vec<HeaderValue> = h.values.into_iter().map(HeaderValue::Plain).collect();
        values.extend(
            h.secrets
                .into_iter()
                .map(|s| HeaderValue::Secret(Secret::Inline(s))),
        );
        values.extend(
            h.files
                .into_iter()
                .map(|f| HeaderValue::Secret(Secret::File(super::paths::join(f).into()))),
        );
        out.headers.push((name, values));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_carry_every_value_and_read_files_each_time() {
        let dir = std::env::temp_dir().join(format!("spate-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v");
        std::fs::write(&f, " from-file\n").unwrap();
        let cfg = HttpClientConfig {
            authorization: Some(("Bearer".into(), Secret::File(f.clone()))),
            headers: vec![(
                "X-Tenant".into(),
                vec![
                    HeaderValue::Plain("a".into()),
                    HeaderValue::Secret(Secret::Inline("b".into())),
                    HeaderValue::Secret(Secret::File(f.clone())),
                ],
            )],
            ..Default::default()
        };
        assert!(cfg.reads_files());
        let mut out = String::new();
        cfg.header_lines(&mut out).unwrap();
        assert_eq!(
            out,
            "Authorization: Bearer from-file\r\nX-Tenant: a\r\nX-Tenant: b\r\nX-Tenant: from-file\r\n"
        );
        std::fs::remove_file(&f).unwrap();
        let err = cfg.header_lines(&mut String::new()).unwrap_err();
        assert!(err.contains("unable to read"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proxies_are_picked_as_go_picks_them() {
        let p = ProxyConfig {
            http: Some("proxy:3128".into()),
            https: Some("proxy:3128".into()),
            no_proxy: vec![
                "internal.example".into(),
                ".svc".into(),
                "10.0.0.0/8".into(),
                "db:5432".into(),
            ],
            connect_headers: Vec::new(),
        };
        assert_eq!(p.for_host("app.example", false), Some("proxy:3128"));
        assert_eq!(p.for_host("localhost", false), None, "never for localhost");
        assert_eq!(p.for_host("127.0.0.1", true), None, "never for loopback");
        assert_eq!(p.for_host("::1", true), None);
        assert_eq!(p.for_host("internal.example", false), None);
        assert_eq!(
            p.for_host("a.internal.example", false),
            None,
            "subdomains too"
        );
        assert_eq!(p.for_host("x.svc", false), None);
        assert_eq!(
            p.for_host("svc", false),
            Some("proxy:3128"),
            ".svc: subdomains only"
        );
        assert_eq!(p.for_host("10.1.2.3", false), None, "CIDR");
        assert_eq!(p.for_host("11.1.2.3", false), Some("proxy:3128"));
        assert_eq!(p.for_host("db", false), None, "a port in no_proxy");
        let all = ProxyConfig {
            no_proxy: vec!["*".into()],
            ..p.clone()
        };
        assert_eq!(all.for_host("anything", false), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::Inline("hunter2".into());
        assert_eq!(format!("{s:?}"), "<secret>");
        let cfg = HttpClientConfig {
            basic_auth: Some((Secret::Inline("u".into()), s)),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
