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
            let mut conn = Conn::new(authority.clone());
            if url.tls {
                let tls = match &cfg.tls {
                    Some(t) => t.client(),
                    None => super::tls::default_client()?,
                };
                let name = cfg.tls.as_ref().and_then(|t| t.server_name.as_deref());
                conn = conn.with_tls(super::TlsTarget {
                    config: tls,
                    server_name: super::tls::server_name(name, &url.host)?,
                });
            }
            self.conn = Some(conn);
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
        let req = conn.request_mut();
        req.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: spate/{}\r\nContent-Type: application/x-www-form-urlencoded\r\nAccept: application/json\r\nAuthorization: Basic {basic}\r\nContent-Length: {}\r\n\r\n",
                url.path_and_query,
                authority,
                env!("CARGO_PKG_VERSION"),
                form.len()
            )
            .as_bytes(),
        );
        req.extend_from_slice(form.as_bytes());
        let resp = conn.round_trip(false).await.map_err(|e| e.to_string())?;
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
