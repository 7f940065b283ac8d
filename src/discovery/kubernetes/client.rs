//! Reaching the API server: where it is and with which credentials (`api_server` with the
//! section's client settings, `kubeconfig_file`, or the pod's service account), and the two
//! requests discovery makes — a paged list and a watch read as a stream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::KubeApi;
use crate::config::client::{HttpClientConfig, Secret};
use crate::http::Url;

/// Where the service account's files are in a pod.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Overrides [`SERVICE_ACCOUNT_DIR`] (a service account mounted elsewhere).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "SPATE_KUBERNETES_SERVICEACCOUNT_DIR";

/// An API server and how requests reach it.
#[derive(Clone, Debug, PartialEq)]
pub struct Api {
    pub url: Url,
    pub http: HttpClientConfig,
    /// The pod's own namespace (in-cluster, when `own_namespace` asks for it).
    pub own_namespace: Option<String>,
}

impl Api {
    /// Resolves the configured access. In-cluster and kubeconfig files are read now.
    pub fn resolve(api: &KubeApi, own_namespace: bool) -> Result<Api, String> {
        match api {
            KubeApi::Server { url, http } => Ok(Api {
                url: url.clone(),
                http: (**http).clone(),
                own_namespace: None,
            }),
            KubeApi::Kubeconfig(path) => kubeconfig(path),
            KubeApi::InCluster => in_cluster(own_namespace),
        }
    }

    /// The path and query of a request for `path` (which starts with `/`) under the API
    /// server's own path.
    fn target(&self, path: &str) -> String {
        let base = self.url.path_and_query.trim_end_matches('/');
        format!("{base}{path}")
    }

    /// GETs `path` (with its query) and returns the status and the body.
    pub async fn get(&self, path: &str, max_body: usize) -> Result<(u16, Vec<u8>), String> {
        let r = crate::discovery::http::get(
            &self.http,
            &self.url,
            &self.target(path),
            ACCEPT,
            REQUEST_TIMEOUT,
            max_body,
        )
        .await?;
        Ok((r.status, r.body))
    }

    /// Opens `path` as a stream (a watch): the connection, the status and the content type.
    pub async fn open_stream(&self, path: &str) -> Result<(crate::http::Conn, u16), String> {
        let authority = self.url.authority();
        let mut conn = self.http.connection(&authority, self.url.tls)?;
        let headers = self.headers()?;
        let head = crate::http::Head {
            method: "GET",
            host: &authority,
            path: &self.target(path),
            headers: &headers,
            credentials: true,
            extra: "",
        };
        crate::http::write_request(conn.request_mut(), &head, &[]);
        let opened = crate::runtime::timeout(REQUEST_TIMEOUT, conn.open_stream()).await;
        let (status, _) = opened
            .map_err(|_| format!("request timed out after {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        Ok((conn, status))
    }

    fn headers(&self) -> Result<String, String> {
        let mut h = format!(
            "User-Agent: spate/{}\r\n{ACCEPT}",
            env!("CARGO_PKG_VERSION")
        );
        self.http.header_lines(&mut h)?;
        Ok(h)
    }
}

/// The API answers JSON.
const ACCEPT: &str = "Accept: application/json\r\n";

/// How long a list page, or a watch's response head, may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod's service account: `KUBERNETES_SERVICE_HOST`/`_PORT`, the token (read at each
/// request, so a rotated token is picked up) and the cluster CA.
fn in_cluster(own_namespace: bool) -> Result<Api, String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").unwrap_or_default();
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_default();
    if host.is_empty() || port.is_empty() {
        return Err("unable to load in-cluster configuration: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be defined (or set api_server or kubeconfig_file)".into());
    }
    let dir = std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
        .map_or_else(|| PathBuf::from(SERVICE_ACCOUNT_DIR), PathBuf::from);
    let token = dir.join("token");
    std::fs::metadata(&token).map_err(|e| {
        format!(
            "cannot read the service account token {}: {e}",
            token.display()
        )
    })?;
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path)
        .map_err(|e| format!("cannot read the cluster CA {}: {e}", ca_path.display()))?;
    let url = Url::parse(&format!(
        "https://{}",
        crate::http::join_host_port(
            &host,
            port.parse()
                .map_err(|_| format!("KUBERNETES_SERVICE_PORT {port:?} is not a port"))?
        )
    ))?;
    let own = if own_namespace {
        let path = dir.join("namespace");
        let ns = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "could not determine the pod's namespace from {}: {e}",
                path.display()
            )
        })?;
        if ns.trim().is_empty() {
            return Err(format!(
                "could not read own namespace name ({} is empty)",
                path.display()
            ));
        }
        Some(ns.trim().to_string())
    } else {
        None
    };
    Ok(Api {
        url,
        http: HttpClientConfig {
            authorization: Some(("Bearer".into(), Secret::File(token))),
            tls: Some(crate::http::tls::TlsSettings::new(
                Some(ca),
                None,
                None,
                None,
                false,
                12,
            )?),
            ..base_client()
        },
        own_namespace: own,
    })
}

fn base_client() -> HttpClientConfig {
    HttpClientConfig {
        follow_redirects: true,
        ..Default::default()
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeConfig {
    clusters: Vec<Named<KubeCluster>>,
    users: Vec<Named<KubeUser>>,
    contexts: Vec<Named<KubeContext>>,
    #[serde(rename = "current-context")]
    current_context: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named<T: Default> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct KubeCluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
    proxy_url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct KubeUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    username: Option<String>,
    password: Option<String>,
    exec: Option<serde::de::IgnoredAny>,
    auth_provider: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeContext {
    cluster: String,
    user: String,
}

/// A kubeconfig file's current context: its cluster's server and CA, and its user's
/// credentials (token or token file, client certificate, basic auth). `exec` and
/// `auth-provider` plugins are refused by name.
fn kubeconfig(path: &Path) -> Result<Api, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read kubeconfig {shown}: {e}"))?;
    let cfg: KubeConfig =
        serde_saphyr::from_str(&text).map_err(|e| format!("kubeconfig {shown}: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let ctx = cfg
        .contexts
        .iter()
        .find(|c| c.name == cfg.current_context)
        .ok_or_else(|| {
            format!(
                "kubeconfig {shown}: current-context {:?} is not defined",
                cfg.current_context
            )
        })?;
    let cluster = cfg
        .clusters
        .iter()
        .find(|c| c.name == ctx.value.cluster)
        .ok_or_else(|| {
            format!(
                "kubeconfig {shown}: cluster {:?} is not defined",
                ctx.value.cluster
            )
        })?;
    let no_user = Named::default();
    let user = match ctx.value.user.as_str() {
        "" => &no_user,
        name => cfg
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| format!("kubeconfig {shown}: user {name:?} is not defined"))?,
    };
    let c = &cluster.value;
    let u = &user.value;
    if u.exec.is_some() || u.auth_provider.is_some() {
        return Err(format!(
            "kubeconfig {shown}: user {:?} uses an exec or auth-provider plugin, which spate does not run; use a token, tokenFile or client certificate",
            user.name
        ));
    }
    if c.proxy_url.is_some() {
        return Err(format!(
            "kubeconfig {shown}: proxy-url is not supported by spate yet; use api_server with proxy_url"
        ));
    }
    let url = Url::parse(&c.server).map_err(|e| format!("kubeconfig {shown}: server: {e}"))?;
    let data = |inline: &Option<String>,
                file: &Option<String>,
                what: &str|
     -> Result<Option<Vec<u8>>, String> {
        match (inline, file) {
            (Some(d), _) => crate::http::base64_decode(d.trim())
                .map(Some)
                .ok_or_else(|| format!("kubeconfig {shown}: {what}-data is not valid base64")),
            (None, Some(f)) => std::fs::read(rel(f))
                .map(Some)
                .map_err(|e| format!("kubeconfig {shown}: cannot read {what} {f}: {e}")),
            (None, None) => Ok(None),
        }
    };
    let ca = data(
        &c.certificate_authority_data,
        &c.certificate_authority,
        "certificate-authority",
    )?;
    let cert = data(
        &u.client_certificate_data,
        &u.client_certificate,
        "client-certificate",
    )?;
    let key = data(&u.client_key_data, &u.client_key, "client-key")?;
    let tls = if url.tls {
        Some(
            crate::http::tls::TlsSettings::new(
                ca,
                cert,
                key,
                c.tls_server_name.clone(),
                c.insecure_skip_tls_verify,
                12,
            )
            .map_err(|e| format!("kubeconfig {shown}: {e}"))?,
        )
    } else {
        None
    };
    let authorization = match (&u.token, &u.token_file) {
        (Some(t), _) if !t.is_empty() => Some(("Bearer".to_string(), Secret::Inline(t.clone()))),
        (_, Some(f)) => Some(("Bearer".to_string(), Secret::File(rel(f)))),
        _ => None,
    };
    let basic_auth = match (&u.username, &u.password) {
        (Some(n), p) if authorization.is_none() => Some((
            Secret::Inline(n.clone()),
            Secret::Inline(p.clone().unwrap_or_default()),
        )),
        _ => None,
    };
    Ok(Api {
        url,
        http: HttpClientConfig {
            authorization,
            basic_auth,
            tls,
            ..base_client()
        },
        own_namespace: None,
    })
}
