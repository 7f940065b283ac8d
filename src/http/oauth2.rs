//! OAuth 2.0 client credentials for scrapes: a token from `token_url`, kept until 10 s before
//! it expires (as Go's oauth2 package keeps it), fetched on the target's core with the same
//! HTTP client (TLS included).

use std::time::{Duration, Instant};

/// `oauth2`: the client credentials grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2 {
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub token_url: super::Url,
    /// Extra form parameters of the token request, sorted.
    pub endpoint_params: Vec<(String, String)>,
    /// `tls_config` for an https token URL.
    pub tls: Option<super::tls::TlsSettings>,
}

use super::{Conn, Url, query_escape};
use super::{Secret, base64};

/// Tokens are renewed this long before they expire.
const EXPIRY_DELTA: Duration = Duration::from_secs(10);

/// A target's token and the connection to its token URL.
#[derive(Default)]
pub struct TokenSource {
    conn: Option<Conn>,
    token: Option<(String, Option<Instant>)>,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
}

impl TokenSource {
    /// A valid access token, fetching one when there is none or it is about to expire.
    pub async fn token(&mut self, cfg: &OAuth2) -> Result<String, String> {
        if let Some((t, expiry)) = &self.token
            && expiry.is_none_or(|e| Instant::now() + EXPIRY_DELTA < e)
        {
            return Ok(t.clone());
        }
        let fetched = self.fetch(cfg).await;
        match fetched {
            Ok((token, expiry)) => {
                self.token = Some((token.clone(), expiry));
                Ok(token)
            }
            Err(e) => {
                self.token = None;
                Err(format!("oauth2: cannot fetch token: {e}"))
            }
        }
    }

    async fn fetch(&mut self, cfg: &OAuth2) -> Result<(String, Option<Instant>), String> {
        let url: &Url = &cfg.token_url;
        let authority = url.authority();
        if self
            .conn
            .as_ref()
            .is_none_or(|c| c.authority() != authority)
        {
            self.conn = Some(connection(cfg, &authority, url.tls)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        let mut form = String::from("grant_type=client_credentials");
        if !cfg.scopes.is_empty() {
            form.push_str("&scope=");
            query_escape(&mut form, &cfg.scopes.join(" "));
        }
        for (k, v) in &cfg.endpoint_params {
            form.push('&');
            query_escape(&mut form, k);
            form.push('=');
            query_escape(&mut form, v);
        }
        // Client authentication in the Authorization header, each part form-encoded (RFC 6749
        // 2.3.1), as Go's oauth2 package sends it first.
        let secret = cfg.client_secret.read()?;
        let mut id = String::new();
        query_escape(&mut id, &cfg.client_id);
        let mut pw = String::new();
        query_escape(&mut pw, &secret);
        let mut basic = String::new();
        base64(format!("{id}:{pw}").as_bytes(), &mut basic);
        let headers = format!(
            "User-Agent: spate/{}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nAuthorization: Basic {basic}\r\n",
            env!("CARGO_PKG_VERSION"),
        );
        let req = super::Request {
            method: "POST",
            origin: (url.tls, &authority),
            host: &authority,
            path: &url.path_and_query,
            headers: &headers,
            body: form.as_bytes(),
        };
        // Go's client, which Prometheus' oauth2 package uses: 307 and 308 keep the form, and
        // the client credentials do not go to another host.
        let policy = super::Redirects {
            follow: true,
            statuses: super::BODY_REDIRECTS,
            credentials_elsewhere: false,
        };
        let connect = |authority: &str, tls: bool| connection(cfg, authority, tls);
        super::send(conn, &req, policy, &mut |_, _| Ok(String::new()), &connect)
            .await
            .map_err(|e| e.to_string())?;
        let resp = conn
            .response()
            .ok_or("connection closed before a complete response")?;

        if resp.status != 200 {
            let body = String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned();
            return Err(format!("token endpoint answered {}: {body}", resp.status));
        }
        let text = std::str::from_utf8(resp.body).map_err(|_| "the token response is not UTF-8")?;
        let t: TokenResponse = serde_saphyr::from_str(text).map_err(|e| {
            format!(
                "invalid token response: {}",
                e.to_string().lines().next().unwrap_or("")
            )
        })?;
        if t.access_token.is_empty() {
            return Err("the token response has no access_token".into());
        }
        if let Some(kind) = &t.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!("unsupported token type {kind:?}"));
        }
        let expiry = t
            .expires_in
            .filter(|s| *s > 0.0)
            .map(|s| Instant::now() + Duration::from_secs_f64(s));
        Ok((t.access_token, expiry))
    }
}

/// A connection to the token endpoint (or where it redirects), with `oauth2`'s own TLS
/// settings.
fn connection(cfg: &OAuth2, authority: &str, tls: bool) -> Result<Conn, String> {
    let conn = Conn::new(authority.to_string());
    if !tls {
        return Ok(conn);
    }
    let client = match &cfg.tls {
        Some(t) => t.client()?,
        None => super::tls::default_client()?,
    };
    let name = cfg.tls.as_ref().and_then(|t| t.server_name.as_deref());
    let (host, _) = super::split_host_port(authority, 443)?;
    Ok(conn.with_tls(super::TlsTarget {
        config: client,
        server_name: super::tls::server_name(name, &host)?,
    }))
}
