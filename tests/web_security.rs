//! `--web.config.file`: TLS with a private CA, bcrypt basic auth on every path (UI, API,
//! `/metrics`, `/-/healthy`), client certificates when required, certificates and users read
//! again without a restart, and an invalid file refused at start with its line and field.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use common::{Spate, TempDir, TestPki, free_port, wait_for};
use rustls::pki_types::ServerName;

/// A TLS client trusting the test CA, with the client certificate when `client_cert`.
fn client(pki: &TestPki, client_cert: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(pki.chain("ca.crt"));
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = if client_cert {
        b.with_client_auth_cert(pki.chain("client.crt"), pki.key("client.key"))
            .unwrap()
    } else {
        b.with_no_client_auth()
    };
    Arc::new(config)
}

/// GET over TLS: `Err` when the connection or handshake fails, else (status, headers, body).
fn https_get(
    addr: &str,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
    auth: Option<(&str, &str)>,
) -> Result<(u16, String, String), String> {
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some((user, pass)) = auth {
        let mut enc = String::new();
        spate::http::base64(format!("{user}:{pass}").as_bytes(), &mut enc);
        req.push_str(&format!("Authorization: Basic {enc}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify after a full response is fine here.
        Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

fn hash(password: &str) -> String {
    bcrypt::hash_with_salt(password, 10, *b"spate-web-salt!!")
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY)
}

#[test]
fn tls_and_basic_auth_guard_every_path_and_reload_with_the_file() {
    let Some(pki) = TestPki::make() else {
        return;
    };
    let dir = TempDir::new("webcfg");
    // Paths relative to the web config file's directory.
    for f in ["server.crt", "server.key", "ca.crt"] {
        std::fs::copy(pki.path(f), dir.path().join(f)).unwrap();
    }
    let web = dir.path().join("web.yml");
    let write = |users: &str, client_auth: &str| {
        std::fs::write(
            &web,
            format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{client_auth}\
                 http_server_config:\n  headers:\n    X-Frame-Options: deny\n\
                 basic_auth_users:\n{users}"
            ),
        )
        .unwrap();
    };
    write(&format!("  alice: {}\n", hash("wonderland")), "");
    let spate = Spate::launch(
        "scrape_configs: []\n",
        &[&format!("--web.config.file={}", web.display())],
        |_| {},
    );
    let addr = spate.web.clone();
    let tls = client(&pki, false);
    let good = Some(("alice", "wonderland"));
    wait_for(Duration::from_secs(30), "spate to serve TLS", || {
        https_get(&addr, "/-/ready", &tls, good)
            .ok()
            .filter(|(s, _, _)| *s == 200)
    });
    for path in [
        "/metrics",
        "/-/healthy",
        "/agent",
        "/targets",
        "/api/v1/status/buildinfo",
        "/api/v1/targets",
    ] {
        let (status, head, _) = https_get(&addr, path, &tls, None).unwrap();
        assert_eq!(status, 401, "{path} without credentials");
        assert!(head.contains("www-authenticate: basic"), "{path}: {head}");
        let (status, _, _) = https_get(&addr, path, &tls, Some(("alice", "wrong"))).unwrap();
        assert_eq!(status, 401, "{path} with a wrong password");
        let (status, _, _) = https_get(&addr, path, &tls, Some(("mallory", "wonderland"))).unwrap();
        assert_eq!(status, 401, "{path} with an unknown user");
        let (status, head, _) = https_get(&addr, path, &tls, good).unwrap();
        assert_eq!(status, 200, "{path} with credentials");
        assert!(head.contains("x-frame-options: deny"), "{path}: {head}");
    }
    let (_, _, metrics) = https_get(&addr, "/metrics", &tls, good).unwrap();
    let failures: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("spate_web_auth_failures_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the auth failure counter");
    assert!(
        failures >= 18.0,
        "wrong credentials are counted: {failures}"
    );
    // Plain HTTP is not served on a TLS listener.
    assert!(common::http_get(&addr, "/-/healthy").is_none_or(|(s, _)| s != 200));

    // The file is read again: a new user works without a restart, the old one stops working.
    write(&format!("  bob: {}\n", hash("builder")), "");
    let (status, _, _) = https_get(&addr, "/-/healthy", &tls, Some(("bob", "builder"))).unwrap();
    assert_eq!(status, 200);
    let (status, _, _) = https_get(&addr, "/-/healthy", &tls, good).unwrap();
    assert_eq!(status, 401);

    // A client certificate, when required, at the next handshake.
    std::fs::copy(pki.path("ca.crt"), dir.path().join("clients.crt")).unwrap();
    write(
        &format!("  bob: {}\n", hash("builder")),
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\n",
    );
    let bob = Some(("bob", "builder"));
    assert!(
        https_get(&addr, "/-/healthy", &tls, bob).is_err(),
        "a client without a certificate is refused"
    );
    let with_cert = client(&pki, true);
    let (status, _, _) = https_get(&addr, "/-/healthy", &with_cert, bob).unwrap();
    assert_eq!(status, 200);
}

#[test]
fn an_invalid_web_config_stops_the_start_naming_file_line_and_field() {
    let dir = TempDir::new("webcfg-bad");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    )
    .unwrap();
    let cfg = dir.path().join("spate.yml");
    std::fs::write(&cfg, "scrape_configs: []\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.agent.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
        .arg(format!("--web.config.file={}", web.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let want = format!("{}:4: tls_server_config.cipher_suites", web.display());
    assert!(log.contains(&want), "{log}");
}

/// A slow or hostile client cannot take the server: past `--web.max-connections` a request
/// waits for a slot, a connection that does not finish its head within `--web.read-timeout` is
/// closed (freeing its slot), and an oversized head is refused.
#[test]
fn slow_clients_are_bounded_by_connections_read_timeout_and_head_size() {
    let spate = Spate::start(
        "scrape_configs: []\n",
        &["--web.max-connections=2", "--web.read-timeout=3s"],
    );
    let addr = spate.web.clone();
    // Two clients that start a request and never finish it hold both slots.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let third = addr.clone();
    std::thread::spawn(move || {
        let _ = tx.send(common::http_get(&third, "/-/healthy"));
    });
    // While both slots are held, the third request is not answered…
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a request was served beyond --web.max-connections"
    );
    // …and once the read timeout closes the slow ones, it is.
    let answered = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the third request is served after the slow ones time out");
    assert_eq!(answered.map(|r| r.0), Some(200));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        assert!(
            buf.is_empty() || text.starts_with("HTTP/1.1 408"),
            "a slow client is closed: {text}"
        );
    }
    // A head over the limit is refused, not buffered.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let big = format!(
        "GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 << 10)
    );
    let _ = s.write_all(big.as_bytes());
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.starts_with("HTTP/1.1 431") || buf.is_empty(),
        "an oversized head is refused: {text}"
    );
    assert_eq!(
        common::http_get(&addr, "/-/healthy").map(|r| r.0),
        Some(200)
    );
}
