//! One request to the endpoint: a lane's connection and compression buffers, the
//! credentials (read per request when they come from files or a token), the SigV4 signature,
//! 307/308 redirects with the body, and the response handed to [`super::outcome::classify`].

use std::time::SystemTime;

use super::Shard;
use super::endpoint::{CONTENT_TYPE_V1, CONTENT_TYPE_V2, VERSION_V1, VERSION_V2};
use super::outcome::{Answer, Failure, Outcome, Rules, classify};
use crate::http::Conn;
use crate::remote::v2::Counts;
use crate::runtime::timeout;

/// Go's client follows at most this many redirects.
const MAX_REDIRECTS: usize = 10;

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
        let conn = match &mut lc.conn {
            Ok(c) => c,
            Err(e) => return Outcome::retry(Failure::Other(e.clone())),
        };
        let url = &self.ep.cfg.url;
        let mut here = (url.tls, url.authority());
        let mut path = url.path_and_query.clone();
        // A connection to another host, once a redirect led there.
        let mut elsewhere: Option<Conn> = None;
        let remote_timeout = self.ep.cfg.remote_timeout;
        let (content_type, version) = match v2 {
            Some(_) => (CONTENT_TYPE_V2, VERSION_V2),
            None => (CONTENT_TYPE_V1, VERSION_V1),
        };
        for _ in 0..=MAX_REDIRECTS {
            // The Host header without a default port, as Go writes it (and as signed).
            let host = here
                .1
                .strip_suffix(if here.0 { ":443" } else { ":80" })
                .unwrap_or(&here.1)
                .to_string();
            let signature = match &self.ep.cfg.sigv4 {
                None => String::new(),
                Some(sig) => match sig.credentials() {
                    Ok(creds) => crate::http::sigv4::sign(
                        &crate::http::sigv4::Request {
                            method: "POST",
                            host: &host,
                            path_and_query: &path,
                            headers: &[
                                ("Content-Encoding", "snappy"),
                                ("Content-Type", content_type),
                                ("X-Prometheus-Remote-Write-Version", version),
                            ],
                            body,
                        },
                        &creds,
                        &sig.region,
                        "aps",
                        SystemTime::now(),
                    ),
                    Err(e) => return Outcome::retry(Failure::Other(e)),
                },
            };
            let c = elsewhere.as_mut().unwrap_or(&mut *conn);
            let req = c.request_mut();
            req.extend_from_slice(format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
            req.extend_from_slice(self.ep.head(v2.is_some()).as_bytes());
            // Credentials go with every hop, as Prometheus' authenticating round-tripper adds
            // them to each request.
            req.extend_from_slice(auth.as_bytes());
            req.extend_from_slice(signature.as_bytes());
            if attempt > 0 {
                req.extend_from_slice(format!("Retry-Attempt: {attempt}\r\n").as_bytes());
            }
            req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            req.extend_from_slice(body);
            let resp = match timeout(remote_timeout, c.round_trip(false)).await {
                Err(_) => {
                    c.reset();
                    return Outcome::retry(Failure::Timeout(remote_timeout));
                }
                Ok(Err(e)) => return Outcome::retry(e.into()),
                Ok(Ok(resp)) => resp,
            };
            let status = resp.status;
            // 307 and 308 keep the method and body; Go's client follows them.
            if matches!(status, 307 | 308)
                && self.ep.cfg.http.follow_redirects
                && let Some(location) = resp.location
            {
                let Some((tls, authority, to)) = crate::http::redirect_target(&here, location)
                else {
                    return Outcome::Drop {
                        reason: format!("redirect to {location:?}: not an http or https URL"),
                    };
                };
                if (tls, authority.as_str()) != (here.0, here.1.as_str()) {
                    elsewhere = match self.ep.cfg.http.connection(&authority, tls) {
                        Ok(c) => Some(c),
                        Err(e) => return Outcome::retry(Failure::Other(e)),
                    };
                }
                here = (tls, authority);
                path = to;
                continue;
            }
            let answer = Answer {
                status,
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
            if d.unwritten > 0 {
                // Accepted in part: what the receiver did not write is not retried.
                self.stats
                    .samples_failed
                    .fetch_add(d.unwritten, std::sync::atomic::Ordering::Relaxed);
            }
            return d.outcome;
        }
        Outcome::retry(Failure::Other(format!(
            "stopped after {MAX_REDIRECTS} redirects"
        )))
    }
}
