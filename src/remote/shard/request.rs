//! One request to the endpoint: a lane's connection and compression buffers, the
//! credentials (read per request when they come from files or a token), the SigV4 signature,
//! 307/308 redirects with the body, and the response handed to [`super::outcome::classify`].

use std::time::SystemTime;

use super::Shard;
use super::endpoint::{CONTENT_TYPE_V1, CONTENT_TYPE_V2, VERSION_V1, VERSION_V2};
use super::outcome::{Answer, Failure, Outcome, Rules, classify};
use crate::http::{BODY_REDIRECTS, Conn, Redirects, Request, SendError, host_header, send};
use crate::remote::v2::Counts;
use crate::runtime::timeout;

/// A lane's connection, its OAuth 2.0 token, and its compression buffers.
pub(super) struct LaneConn {
    /// The endpoint's connection, or why it cannot be made (reported at each attempt).
    conn: Result<Conn, String>,
    tokens: crate::http::oauth2::TokenSource,
    encoder: snap::raw::Encoder,
    pub compressed: Vec<u8>,
    /// Remote Write 2.0: the converter and the request it made.
    pub v2: crate::remote::v2::Converter,
    pub v2_body: Vec<u8>,
}

impl LaneConn {
    pub fn new(ep: &super::Endpoint) -> LaneConn {
        let url = &ep.cfg.url;
        LaneConn {
            conn: ep.cfg.http.connection(&url.authority(), url.tls),
            tokens: Default::default(),
            encoder: snap::raw::Encoder::new(),
            compressed: Vec::new(),
            v2: Default::default(),
            v2_body: Vec::new(),
        }
    }

    /// Snappy-compresses `body` into `out`, which only grows: resizing down and up again
    /// would zero the buffer on every send. Fails only for inputs over 4 GiB.
    pub fn compress_into(&mut self, body: &[u8], out: &mut Vec<u8>) -> Result<usize, snap::Error> {
        let need = snap::raw::max_compress_len(body.len());
        if out.len() < need {
            out.resize(need, 0);
        }
        self.encoder.compress(body, out)
    }

    /// Snappy-compresses `body` into [`Self::compressed`].
    pub fn compress(&mut self, body: &[u8]) -> Option<usize> {
        let mut out = std::mem::take(&mut self.compressed);
        let n = self.compress_into(body, &mut out).ok();
        self.compressed = out;
        n
    }
}

impl Shard {
    /// The credentials' header lines when they are read per request.
    async fn auth_lines(
        &self,
        tokens: &mut crate::http::oauth2::TokenSource,
    ) -> Result<String, String> {
        let mut lines = String::new();
        if !self.ep.dynamic_auth {
            return Ok(lines);
        }
        self.ep.cfg.http.header_lines(&mut lines)?;
        if let Some(o) = &self.ep.cfg.http.oauth2 {
            let token = match timeout(self.ep.cfg.remote_timeout, tokens.token(o)).await {
                Ok(t) => t?,
                Err(_) => return Err("oauth2: token request timed out".into()),
            };
            lines.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        Ok(lines)
    }

    /// One request; `v2` holds what a Remote Write 2.0 body carries (`None`: a 1.0 body).
    pub(super) async fn attempt(
        &self,
        lc: &mut LaneConn,
        body: &[u8],
        attempt: u32,
        v2: Option<Counts>,
    ) -> Outcome {
        let auth = match self.auth_lines(&mut lc.tokens).await {
            Ok(a) => a,
            Err(e) => return Outcome::retry(Failure::Other(e)),
        };
        // A role's credentials are fetched (and renewed) before signing; a failure is retried
        // like a failed request, the samples kept.
        if let Some(sig) = &self.ep.cfg.sigv4
            && let Err(e) = sig.prepare().await
        {
            return Outcome::retry(Failure::Other(e));
        }
        let conn = match &mut lc.conn {
            Ok(c) => c,
            Err(e) => return Outcome::retry(Failure::Other(e.clone())),
        };
        let url = &self.ep.cfg.url;
        let authority = url.authority();
        let remote_timeout = self.ep.cfg.remote_timeout;
        let (content_type, version) = match v2 {
            Some(_) => (CONTENT_TYPE_V2, VERSION_V2),
            None => (CONTENT_TYPE_V1, VERSION_V1),
        };
        let req = Request {
            method: "POST",
            origin: (url.tls, &authority),
            // The Host header without a default port, as Go writes it (and as signed).
            host: host_header(url.tls, &authority),
            path: &url.path_and_query,
            headers: self.ep.head(v2.is_some()),
            body,
        };
        let policy = Redirects {
            follow: self.ep.cfg.http.follow_redirects,
            statuses: BODY_REDIRECTS,
            credentials_elsewhere: true,
        };
        // Each hop is signed for its own host and path, and says which retry it is.
        // Credentials go with every hop, as Prometheus' authenticating round-tripper adds them
        // to each request.
        let mut hop = |host: &str, path: &str| -> Result<String, String> {
            let mut extra = auth.clone();
            if let Some(sig) = &self.ep.cfg.sigv4 {
                let creds = sig.credentials()?;
                extra.push_str(&crate::http::sigv4::sign(
                    &crate::http::sigv4::Request {
                        method: "POST",
                        host,
                        path_and_query: path,
                        headers: &[
                            ("Content-Encoding", "snappy"),
                            ("Content-Type", content_type),
                            ("X-Prometheus-Remote-Write-Version", version),
                        ],
                        body,
                    },
                    &creds,
                    &sig.region,
                    sig.service.as_deref().unwrap_or("aps"),
                    SystemTime::now(),
                ));
            }
            if attempt > 0 {
                extra.push_str(&format!("Retry-Attempt: {attempt}\r\n"));
            }
            Ok(extra)
        };
        let connect = |authority: &str, tls: bool| self.ep.cfg.http.connection(authority, tls);
        match timeout(remote_timeout, send(conn, &req, policy, &mut hop, &connect)).await {
            Err(_) => {
                conn.reset();
                return Outcome::retry(Failure::Timeout(remote_timeout));
            }
            Ok(Err(SendError::Http(e))) => return Outcome::retry(e.into()),
            // A redirect nowhere an HTTP client can go: sending again cannot help.
            Ok(Err(e @ SendError::NotFollowable(_))) => {
                return Outcome::Drop {
                    reason: e.to_string(),
                };
            }
            // Credentials that cannot be read, no connection to where a redirect leads, or
            // too many redirects: tried again.
            Ok(Err(e)) => return Outcome::retry(Failure::Other(e.to_string())),
            Ok(Ok(())) => {}
        }
        let Some(resp) = conn.response() else {
            return Outcome::retry(Failure::Other(
                "connection closed before a complete response".into(),
            ));
        };
        let answer = Answer {
            status: resp.status,
            body: resp.body,
            retry_after: resp.retry_after,
            written: resp.written,
        };
        let rules = Rules {
            retry_on_429: self.ep.cfg.queue.retry_on_http_429,
            v2_confirmed: self.ep.v2_confirmed(),
            now_secs: crate::log::unix_millis().max(0) as u64 / 1000,
        };
        let d = classify(&answer, v2, &rules);
        if d.confirms_v2 {
            self.ep.confirm_v2();
        }
        // Accepted in part: what the receiver did not write is not retried.
        self.stats
            .add(crate::selfmetrics::Count::Failed, d.unwritten);
        d.outcome
    }
}
