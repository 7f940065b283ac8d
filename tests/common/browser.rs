//! A headless Chromium driven through ChromeDriver's WebDriver protocol (Debian's `chromium`
//! and `chromium-driver`): load a page, run a script in it, read its console, take a
//! screenshot. Both processes are stopped when the [`Browser`] is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Proc, TempDir, free_port, require_program, wait_for};

pub struct Browser {
    driver: Proc,
    addr: String,
    session: String,
    _profile: TempDir,
}

/// One WebDriver call: (status, JSON body).
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )
    .ok()?;
    // ChromeDriver keeps the connection open: read the head, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (head_len, body_len) = loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while raw.len() < head_len + body_len {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
    let body = String::from_utf8_lossy(&raw[head_len..]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = body.as_str();
    let value = serde_json::from_str(body).unwrap_or(Value::Null);
    Some((status, value))
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session; `None` (a skip outside CI, a
    /// failure under `CI=true`) when the packages are missing.
    pub fn start() -> Option<Browser> {
        let chromium = require_program("chromium", "chromium")?;
        let chromedriver = require_program("chromedriver", "chromium-driver")?;
        let port = free_port();
        let profile = TempDir::new("chromium");
        let driver = Proc::spawn(
            "chromedriver",
            Command::new(chromedriver).arg(format!("--port={port}")),
            profile.path(),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_for(Duration::from_secs(60), "chromedriver to answer", || {
            call(&addr, "GET", "/status", None).filter(|(s, _)| *s == 200)
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            },
        }}});
        let (status, v) = call(&addr, "POST", "/session", Some(&caps)).expect("new session");
        assert_eq!(status, 200, "chromedriver refused the session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        Some(Browser {
            driver,
            addr,
            session,
            _profile: profile,
        })
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let (status, v) = call(&self.addr, method, &path, body.as_ref())
            .unwrap_or_else(|| panic!("chromedriver did not answer {what}"));
        assert_eq!(status, 200, "{what} failed: {v}");
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Waits until `script` returns something truthy and gives it back.
    pub fn wait(&self, what: &str, script: &str) -> Value {
        wait_for(Duration::from_secs(60), what, || {
            let v = self.eval(script);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(_) => true,
            };
            truthy.then_some(v)
        })
    }

    /// Console messages at level SEVERE since the last call (errors, failed loads).
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.cmd("POST", "se/log", Some(json!({"type": "browser"})));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "screenshot", None);
        let png = spate::http::base64_decode(v.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        // Closing the session stops Chromium; dropping `driver` then kills ChromeDriver.
        let _ = call(&self.addr, "DELETE", &path, None);
        let _ = self.driver.pid();
    }
}
