//! TLS for scrapes (`https` targets, `tls_config`): rustls with the ring provider. Roots are the
//! system's (`SSL_CERT_FILE`, else Debian's bundle) unless `ca`/`ca_file` is given; client
//! certificates, `server_name`, `insecure_skip_verify` and `min_version` as Prometheus has them.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// `tls_config` resolved: PEM contents (files read when the configuration loads) and
/// settings. The client configuration built from it is shared by every target of a job.
#[derive(Clone)]
pub struct TlsSettings {
    pub ca: Option<Vec<u8>>,
    pub cert: Option<Vec<u8>>,
    pub key: Option<Vec<u8>>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
    /// Lowest version accepted: 12 or 13 (Prometheus' default is TLS 1.2).
    pub min_version: u8,
    /// The client configuration, or why there is none (a file named in the settings could
    /// not be read when they loaded: requests with them fail, as Prometheus' scrape pools
    /// without an HTTP client do, and the rest of the configuration still runs).
    client: Result<Arc<ClientConfig>, String>,
}

impl PartialEq for TlsSettings {
    fn eq(&self, o: &TlsSettings) -> bool {
        self.ca == o.ca
            && self.cert == o.cert
            && self.key == o.key
            && self.server_name == o.server_name
            && self.insecure_skip_verify == o.insecure_skip_verify
            && self.min_version == o.min_version
            && self.client.as_ref().err() == o.client.as_ref().err()
    }
}

impl Eq for TlsSettings {}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca", &self.ca.as_ref().map(|_| "<pem>"))
            .field("cert", &self.cert.as_ref().map(|_| "<pem>"))
            .field("key", &self.key.as_ref().map(|_| "<secret>"))
            .field("server_name", &self.server_name)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("min_version", &self.min_version)
            .finish()
    }
}

impl TlsSettings {
    /// Validates the settings and builds their client configuration.
    pub fn new(
        ca: Option<Vec<u8>>,
        cert: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
        server_name: Option<String>,
        insecure_skip_verify: bool,
        min_version: u8,
    ) -> Result<TlsSettings, String> {
        let client = build(
            ca.as_deref(),
            cert.as_deref(),
            key.as_deref(),
            insecure_skip_verify,
            min_version,
        )?;
        Ok(TlsSettings {
            ca,
            cert,
            key,
            server_name,
            insecure_skip_verify,
            min_version,
            client: Ok(client),
        })
    }

    /// Settings that cannot be used: `why` is the error every request with them gets.
    pub fn unavailable(why: String) -> TlsSettings {
        TlsSettings {
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            insecure_skip_verify: false,
            min_version: 12,
            client: Err(why),
        }
    }

    pub fn client(&self) -> Result<Arc<ClientConfig>, String> {
        self.client.clone()
    }
}

/// The client configuration for targets without `tls_config`: system roots, TLS 1.2+.
pub fn default_client() -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| build(None, None, None, false, 12))
        .clone()
}

/// The name to verify and send as SNI: `server_name`, else the target's host.
pub fn server_name(configured: Option<&str>, host: &str) -> Result<ServerName<'static>, String> {
    let name = configured.unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string())
        .map_err(|e| format!("invalid TLS server name {name:?}: {e}"))
}

fn system_roots() -> Result<Vec<CertificateDer<'static>>, String> {
    let path = std::env::var("SSL_CERT_FILE")
        .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".to_string());
    let pem = std::fs::read(&path)
        .map_err(|e| format!("cannot read the system CA bundle {path}: {e} (set SSL_CERT_FILE)"))?;
    certs(&pem, &path)
}

pub(crate) fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM certificate in {what}: {e:?}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {what}"));
    }
    Ok(certs)
}

fn build(
    ca: Option<&[u8]>,
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
    insecure_skip_verify: bool,
    min_version: u8,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if min_version >= 13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let list = match ca {
            Some(pem) => certs(pem, "ca")?,
            None => system_roots()?,
        };
        let (_, ignored) = roots.add_parsable_certificates(list);
        if roots.is_empty() {
            return Err(format!(
                "no usable CA certificate ({ignored} could not be parsed)"
            ));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (cert, key) {
        (Some(c), Some(k)) => {
            let chain = certs(c, "cert")?;
            let key = PrivateKeyDer::from_pem_slice(k)
                .map_err(|e| format!("invalid PEM private key in key: {e:?}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate and key do not match: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("client cert and key must both be configured".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `insecure_skip_verify: true`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
