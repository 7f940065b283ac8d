//! AWS Signature Version 4 for Remote Write to Amazon Managed Service for Prometheus
//! (`sigv4`), as Prometheus signs its requests: service `aps`, the body's SHA-256, and the
//! request's content, version, host and date headers signed. Credentials come from the
//! configuration, else the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else the shared credentials file's profile; they are read at each
//! request, so rotated keys are picked up.
//!
//! With `role_arn`, those are only the base credentials: the requests are signed with the
//! role's temporary credentials, which AWS STS' `AssumeRole` gives for them (with
//! `external_id`, at the region's STS endpoint, its FIPS one with `use_fips_sts_endpoint`, or
//! at `AWS_ENDPOINT_URL_STS`). They are kept, shared by every request with these settings,
//! and renewed a minute before they expire.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ring::{digest, hmac};

use super::Secret;

/// `sigv4` as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigV4 {
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// The shared credentials file's profile (`AWS_PROFILE`, else `default`, when empty).
    pub profile: Option<String>,
    /// `role_arn`: sign as this role.
    pub role: Option<AssumeRole>,
    /// `service_name`: the service signed for (`aps`, Amazon Managed Service for Prometheus,
    /// when empty).
    pub service: Option<String>,
}

/// `role_arn`, `external_id` and `use_fips_sts_endpoint`, and the role's credentials once
/// assumed (shared by the clones of one configuration).
#[derive(Clone, Debug)]
pub struct AssumeRole {
    pub role_arn: String,
    pub external_id: Option<String>,
    pub use_fips_sts_endpoint: bool,
    /// `session_name` (else the time in nanoseconds, as the AWS SDK names sessions).
    pub session_name: Option<String>,
    /// `tags`, session tags, sorted by key.
    pub tags: Vec<(String, String)>,
    assumed: Arc<Mutex<Option<Assumed>>>,
    /// A renewal is under way (others go on with the credentials that still hold).
    renewing: Arc<std::sync::atomic::AtomicBool>,
}

/// Temporary credentials and when they expire.
#[derive(Clone, Debug)]
struct Assumed {
    creds: Credentials,
    expires: SystemTime,
}

impl AssumeRole {
    pub fn new(role_arn: String) -> AssumeRole {
        AssumeRole {
            role_arn,
            external_id: None,
            use_fips_sts_endpoint: false,
            session_name: None,
            tags: Vec::new(),
            assumed: Default::default(),
            renewing: Default::default(),
        }
    }

    fn current(&self) -> Option<Assumed> {
        self.assumed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl PartialEq for AssumeRole {
    fn eq(&self, o: &AssumeRole) -> bool {
        (
            &self.role_arn,
            &self.external_id,
            self.use_fips_sts_endpoint,
            &self.session_name,
            &self.tags,
        ) == (
            &o.role_arn,
            &o.external_id,
            o.use_fips_sts_endpoint,
            &o.session_name,
            &o.tags,
        )
    }
}

impl Eq for AssumeRole {}

/// Temporary credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// The role's credentials are asked for this long (the AWS SDKs' default).
const ROLE_DURATION_SECONDS: u64 = 900;

/// Keys to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl SigV4 {
    /// The credentials to sign with: the role's (see [`Self::prepare`]), else the base ones.
    pub fn credentials(&self) -> Result<Credentials, String> {
        let Some(role) = &self.role else {
            return self.base_credentials();
        };
        match role.current() {
            Some(a) if SystemTime::now() < a.expires => Ok(a.creds),
            _ => Err(format!(
                "sigv4: no credentials for role {} yet (AssumeRole has not succeeded)",
                role.role_arn
            )),
        }
    }

    /// With `role_arn`, assumes the role when its credentials are missing or about to expire.
    /// Call before [`Self::credentials`], where requests may wait.
    pub async fn prepare(&self) -> Result<(), String> {
        let Some(role) = &self.role else {
            return Ok(());
        };
        use std::sync::atomic::Ordering::{AcqRel, Release};
        let now = SystemTime::now();
        let current = role.current();
        if current
            .as_ref()
            .is_some_and(|a| now + RENEW_BEFORE < a.expires)
        {
            return Ok(());
        }
        let still_valid = current.is_some_and(|a| now < a.expires);
        // One renewal at a time while the credentials still hold; without any, each asks.
        if role.renewing.swap(true, AcqRel) && still_valid {
            return Ok(());
        }
        let result = self.assume(role).await;
        role.renewing.store(false, Release);
        let assumed =
            result.map_err(|e| format!("sigv4: cannot assume role {}: {e}", role.role_arn))?;
        *role.assumed.lock().unwrap_or_else(|p| p.into_inner()) = Some(assumed);
        Ok(())
    }

    /// The STS endpoint: `AWS_ENDPOINT_URL_STS` (or `AWS_ENDPOINT_URL`), else the region's
    /// (FIPS with `use_fips_sts_endpoint`).
    fn sts_url(&self, fips: bool) -> Result<super::Url, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let url = match env("AWS_ENDPOINT_URL_STS").or_else(|| env("AWS_ENDPOINT_URL")) {
            Some(u) => u,
            None => {
                let suffix = if self.region.starts_with("cn-") {
                    "amazonaws.com.cn"
                } else {
                    "amazonaws.com"
                };
                let fips = if fips { "-fips" } else { "" };
                format!("https://sts{fips}.{}.{suffix}/", self.region)
            }
        };
        super::Url::parse(&url)
    }

    /// One `AssumeRole` call, signed with the base credentials.
    async fn assume(&self, role: &AssumeRole) -> Result<Assumed, String> {
        let base = self.base_credentials()?;
        let url = self.sts_url(role.use_fips_sts_endpoint)?;
        let session = role.session_name.clone().unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_string()
        });
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "AssumeRole".into()),
            ("DurationSeconds".into(), ROLE_DURATION_SECONDS.to_string()),
            ("RoleArn".into(), role.role_arn.clone()),
            ("RoleSessionName".into(), session),
            ("Version".into(), "2011-06-15".into()),
        ];
        if let Some(id) = &role.external_id {
            params.push(("ExternalId".into(), id.clone()));
        }
        for (i, (k, v)) in role.tags.iter().enumerate() {
            params.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
            params.push((format!("Tags.member.{}.Value", i + 1), v.clone()));
        }
        params.sort();
        let mut body = String::new();
        for (i, (k, v)) in params.iter().enumerate() {
            if i > 0 {
                body.push('&');
            }
            super::query_escape(&mut body, k);
            body.push('=');
            super::query_escape(&mut body, v);
        }
        let body = body.replace('+', "%20");
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let authority = url.authority();
        let host = match (url.tls, url.port) {
            (true, 443) | (false, 80) => url.host.clone(),
            _ => authority.clone(),
        };
        let signature = sign(
            &Request {
                method: "POST",
                host: &host,
                path_and_query: &url.path_and_query,
                headers: &[("Content-Type", content_type)],
                body: body.as_bytes(),
            },
            &base,
            &self.region,
            "sts",
            SystemTime::now(),
        );
        let headers = format!(
            "User-Agent: spate/{}\r\nContent-Type: {content_type}\r\n{signature}",
            env!("CARGO_PKG_VERSION")
        );
        let mut conn = super::Conn::new(authority.clone());
        if url.tls {
            conn = conn.with_tls(super::TlsTarget {
                config: super::tls::default_client()?,
                server_name: super::tls::server_name(None, &url.host)?,
            });
        }
        let req = super::Request {
            method: "POST",
            origin: (url.tls, &authority),
            host: &host,
            path: &url.path_and_query,
            headers: &headers,
            body: body.as_bytes(),
        };
        let policy = super::Redirects {
            follow: false,
            statuses: super::BODY_REDIRECTS,
            credentials_elsewhere: false,
        };
        let connect = |_: &str, _: bool| Err("STS redirects are not followed".to_string());
        let mut hop = |_: &str, _: &str| Ok(String::new());
        let sent = super::send(&mut conn, &req, policy, &mut hop, &connect);
        match crate::runtime::timeout(Duration::from_secs(30), sent).await {
            Err(_) => return Err(format!("{} did not answer within 30s", url.authority())),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(())) => {}
        }
        let resp = conn
            .response()
            .ok_or("connection closed before a complete response")?;
        assumed_from(resp.status, &String::from_utf8_lossy(resp.body))
    }

    /// The configured keys, the environment's, or the shared credentials file's profile.
    fn base_credentials(&self) -> Result<Credentials, String> {
        if let (Some(a), Some(s)) = (&self.access_key, &self.secret_key) {
            return Ok(Credentials {
                access_key: a.clone(),
                secret_key: s.read()?,
                session_token: None,
            });
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.profile.is_none()
            && let (Some(a), Some(s)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials {
                access_key: a,
                secret_key: s,
                session_token: env("AWS_SESSION_TOKEN"),
            });
        }
        let profile = self
            .profile
            .clone()
            .or_else(|| env("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into());
        let path = env("AWS_SHARED_CREDENTIALS_FILE")
            .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")))
            .ok_or("sigv4: no credentials: set access_key and secret_key, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials file")?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "sigv4: no credentials in the configuration or the environment, and {path}: {e}"
            )
        })?;
        profile_credentials(&text, &profile)
            .ok_or_else(|| format!("sigv4: profile {profile:?} in {path} has no aws_access_key_id and aws_secret_access_key"))
    }
}

/// The credentials of an `AssumeRole` answer, or the error it gives.
fn assumed_from(status: u16, text: &str) -> Result<Assumed, String> {
    let doc = super::xml::parse_xml(text)
        .map_err(|e| format!("STS answered HTTP {status} with no readable XML: {e}"))?;
    if status != 200 {
        let code = doc.find("Code").map(|n| n.text.as_str()).unwrap_or("");
        let message = doc.find("Message").map(|n| n.text.as_str()).unwrap_or("");
        return Err(format!("STS answered HTTP {status}: {code}: {message}"));
    }
    let creds = doc
        .find("Credentials")
        .ok_or("the AssumeRole answer has no Credentials")?;
    // Keys and tokens are base64: whitespace in them is the document's layout.
    let field = |name: &str| {
        creds
            .child(name)
            .map(|n| n.text.split_whitespace().collect::<String>())
            .filter(|t| !t.is_empty())
            .ok_or(format!("the AssumeRole answer has no {name}"))
    };
    let expiration = field("Expiration")?;
    let expires = parse_iso8601(&expiration).ok_or(format!(
        "the AssumeRole answer's Expiration {expiration:?} is not a time"
    ))?;
    Ok(Assumed {
        creds: Credentials {
            access_key: field("AccessKeyId")?,
            secret_key: field("SecretAccessKey")?,
            session_token: Some(field("SessionToken")?),
        },
        expires,
    })
}

/// `2019-11-09T13:34:41Z` (fractional seconds and a numeric offset allowed).
fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let (oh, om) = (
                o.get(1..3)?.parse::<i64>().ok()?,
                o.get(4..6)?.parse::<i64>().ok()?,
            );
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// A profile's keys from a shared credentials file (INI).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let (mut a, mut s, mut t) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => a = v,
                "aws_secret_access_key" => s = v,
                "aws_session_token" => t = v,
                _ => {}
            }
        }
    }
    Some(Credentials {
        access_key: a?,
        secret_key: s?,
        session_token: t,
    })
}

/// What to sign: the request line's parts, its headers (name, value) without the date and
/// the token, and its body.
pub struct Request<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path_and_query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The header lines that sign `req` for `service` in `region` at `now`: `X-Amz-Date`, the
/// session token when there is one, and `Authorization`.
pub fn sign(
    req: &Request<'_>,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> String {
    let amz_date = amz_date(now);
    let date = &amz_date[..8];
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    headers.push(("host".into(), req.host.to_string()));
    headers.push(("x-amz-date".into(), amz_date.clone()));
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    headers.sort();
    let signed: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    let signed = signed.join(";");
    let (path, query) = req
        .path_and_query
        .split_once('?')
        .unwrap_or((req.path_and_query, ""));
    let mut canonical = format!(
        "{}\n{}\n{}\n",
        req.method,
        uri_path(path),
        canonical_query(query)
    );
    for (n, v) in &headers {
        let _ = writeln!(canonical, "{n}:{v}");
    }
    let _ = write!(
        canonical,
        "\n{signed}\n{}",
        hex(digest::digest(&digest::SHA256, req.body).as_ref())
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = format!("AWS4{}", creds.secret_key).into_bytes();
    for part in [date, region, service, "aws4_request"] {
        key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
            .as_ref()
            .to_vec();
    }
    let signature =
        hex(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), to_sign.as_bytes()).as_ref());
    let mut out = format!("X-Amz-Date: {amz_date}\r\n");
    if let Some(t) = &creds.session_token {
        let _ = write!(out, "X-Amz-Security-Token: {t}\r\n");
    }
    let _ = write!(
        out,
        "Authorization: AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}\r\n",
        creds.access_key
    );
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// RFC 3986 encoding of everything but unreserved characters (and `/` in paths).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn uri_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    // The path as sent may hold escapes already; sign it as AWS normalises it.
    encode(&percent_decode(path), true)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn canonical_query(q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                encode(&percent_decode(&k.replace('+', " ")), false),
                encode(&percent_decode(&v.replace('+', " ")), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ` in UTC.
fn amz_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (y, m, d) = crate::log::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn example() -> (Credentials, SystemTime) {
        (
            Credentials {
                access_key: "AKIDEXAMPLE".into(),
                secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
                session_token: None,
            },
            // 2015-08-30T12:36:00Z, the AWS Signature Version 4 test suite's date.
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160),
        )
    }

    #[test]
    fn matches_the_aws_signature_v4_test_suite() {
        let (creds, now) = example();
        assert_eq!(amz_date(now), "20150830T123600Z");
        for (method, want) in [
            (
                "GET",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let req = Request {
                method,
                host: "example.amazonaws.com",
                path_and_query: "/",
                headers: &[],
                body: b"",
            };
            let lines = sign(&req, &creds, "us-east-1", "service", now);
            assert!(
                lines.starts_with("X-Amz-Date: 20150830T123600Z\r\n"),
                "{lines}"
            );
            assert!(
                lines.contains(&format!(
                    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={want}\r\n"
                )),
                "{method}: {lines}"
            );
        }
    }

    #[test]
    fn query_and_headers_are_canonical_and_the_token_is_signed() {
        let (mut creds, now) = example();
        assert_eq!(canonical_query("b=2&a=1&c=x y"), "a=1&b=2&c=x%20y");
        assert_eq!(uri_path("/api/v1/write"), "/api/v1/write");
        creds.session_token = Some("tok".into());
        let req = Request {
            method: "POST",
            host: "aps-workspaces.us-east-1.amazonaws.com",
            path_and_query: "/workspaces/ws-1/api/v1/remote_write",
            headers: &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
            ],
            body: b"x",
        };
        let lines = sign(&req, &creds, "us-east-1", "aps", now);
        assert!(lines.contains("X-Amz-Security-Token: tok\r\n"));
        assert!(lines.contains(
            "SignedHeaders=content-encoding;content-type;host;x-amz-date;x-amz-security-token,"
        ));
    }

    #[test]
    fn shared_credentials_file_profiles() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = S\n\n[other]\naws_access_key_id=B\naws_secret_access_key=T\naws_session_token=U\n";
        assert_eq!(
            profile_credentials(text, "default").unwrap().access_key,
            "A"
        );
        let other = profile_credentials(text, "other").unwrap();
        assert_eq!(
            (other.secret_key.as_str(), other.session_token.as_deref()),
            ("T", Some("U"))
        );
        assert!(profile_credentials(text, "missing").is_none());
    }

    /// The example answer of AWS STS' AssumeRole API reference.
    const ASSUME_ROLE_ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
  <SourceIdentity>Alice</SourceIdentity>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/demo/TestAR</Arn>
      <AssumedRoleId>ARO123EXAMPLE123:TestAR</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <AccessKeyId>ASIAIOSFODNN7EXAMPLE</AccessKeyId>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <SessionToken>
       AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQW
       LWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGd
       QrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU
       9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz
       +scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==
      </SessionToken>
      <Expiration>2019-11-09T13:34:41Z</Expiration>
    </Credentials>
    <PackedPolicySize>6</PackedPolicySize>
  </AssumeRoleResult>
  <ResponseMetadata>
    <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
  </ResponseMetadata>
</AssumeRoleResponse>"#;

    #[test]
    fn an_assume_role_answer_gives_temporary_credentials() {
        let a = assumed_from(200, ASSUME_ROLE_ANSWER).unwrap();
        assert_eq!(a.creds.access_key, "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(
            a.creds.secret_key,
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
        );
        let token = a.creds.session_token.unwrap();
        assert!(
            token.starts_with("AQoDYXdzEPT//") && token.ends_with("LxBA=="),
            "{token}"
        );
        assert!(!token.contains(char::is_whitespace), "{token}");
        assert_eq!(
            a.expires,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_573_306_481)
        );
        // STS' error document.
        let e = assumed_from(
            403,
            r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/x is not authorized to perform: sts:AssumeRole</Message></Error><RequestId>1</RequestId></ErrorResponse>"#,
        )
        .unwrap_err();
        assert!(e.contains("403: AccessDenied: User: arn:aws:iam"), "{e}");
        assert!(assumed_from(200, "<AssumeRoleResponse/>").is_err());
        assert!(assumed_from(502, "bad gateway").is_err());
    }

    #[test]
    fn iso8601_times() {
        let at = |s| {
            parse_iso8601(s).map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(at("2019-11-09T13:34:41Z"), Some(1_573_306_481));
        assert_eq!(at("2019-11-09T13:34:41.123Z"), Some(1_573_306_481));
        assert_eq!(at("2019-11-09T15:34:41+02:00"), Some(1_573_306_481));
        assert_eq!(at("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(at("2019-11-09 13:34:41Z"), None);
        assert_eq!(at("yesterday"), None);
    }

    #[test]
    fn the_sts_endpoint_follows_the_region_and_fips() {
        let sig = |region: &str| SigV4 {
            region: region.into(),
            access_key: None,
            secret_key: None,
            profile: None,
            role: None,
            service: None,
        };
        // Only when no endpoint override is set in the environment running the tests.
        if std::env::var_os("AWS_ENDPOINT_URL_STS").is_none()
            && std::env::var_os("AWS_ENDPOINT_URL").is_none()
        {
            let host = |region: &str, fips| sig(region).sts_url(fips).unwrap().host;
            assert_eq!(host("eu-west-1", false), "sts.eu-west-1.amazonaws.com");
            assert_eq!(host("us-east-1", true), "sts-fips.us-east-1.amazonaws.com");
            assert_eq!(host("cn-north-1", false), "sts.cn-north-1.amazonaws.com.cn");
            assert!(sig("eu-west-1").sts_url(false).unwrap().tls);
        }
        // Without a successful AssumeRole there is nothing to sign with.
        let mut s = sig("eu-west-1");
        s.role = Some(AssumeRole::new("arn:aws:iam::1:role/r".into()));
        assert!(
            s.credentials()
                .unwrap_err()
                .contains("arn:aws:iam::1:role/r")
        );
    }
}
