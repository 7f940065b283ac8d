//! The UI and API behind a reverse proxy at a sub-path, both ways a proxy is set up: Debian's
//! nginx forwards `/spate/…` unchanged to a spate started with
//! `--web.external-url=http://<nginx>/spate/` (the route prefix follows the URL), and strips
//! `/stripped/` for a spate started with `--web.route-prefix=/`. In Chromium every page loads
//! through the proxy without console errors, and every link stays under the sub-path.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::Browser;
use common::{Proc, Spate, TempDir, free_port, http_get, require_program, wait_for};
use serde_json::Value;

/// nginx with one `location` per (sub-path, `proxy_pass` URL).
fn start_nginx(dir: &TempDir, locations: &[(&str, String)]) -> Option<(Proc, String)> {
    let nginx = require_program("nginx", "nginx-light")?;
    let port = free_port();
    let d = dir.path().display();
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root;"
    } else {
        ""
    };
    let conf = format!(
        "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n\
             {locations}\n\
             location / {{ return 404; }}\n  }}\n}}\n",
        locations = locations
            .iter()
            .map(|(path, to)| format!(
                "location {path} {{ proxy_pass {to}; proxy_set_header Host $host:$server_port; }}"
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let proc = Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"]),
        dir.path(),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for(Duration::from_secs(30), "nginx to listen", || {
        http_get(&addr, "/").filter(|(s, _)| *s == 404)
    });
    Some((proc, addr))
}

/// Starts spate with `args` on `backend` and waits until it answers at `ready`.
fn start_spate(config: &str, backend: &str, args: &[&str], ready: &str) -> Spate {
    let spate = Spate::launch(config, args, |cmd| {
        // The last --web.listen-address wins: the port nginx forwards to.
        cmd.arg(format!("--web.listen-address={backend}"));
    });
    wait_for(Duration::from_secs(30), "spate behind the proxy", || {
        http_get(backend, ready).filter(|(s, _)| *s == 200)
    });
    spate
}

/// Every page under `http://{front}{sub}` in Chromium: the root leads to the agent page, each
/// link stays under `sub`, and each page renders through the proxy without console errors.
fn check_pages(browser: &Browser, front: &str, sub: &str) {
    let (status, body) = http_get(front, &format!("{sub}api/v1/targets")).unwrap();
    assert_eq!(status, 200, "{sub}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");
    browser.goto(&format!("http://{front}{sub}"));
    browser.wait(
        "the agent page through the proxy",
        &format!("return location.pathname === '{sub}agent' && document.querySelector('.cards')"),
    );
    let links = browser.eval(
        "return [...document.querySelectorAll('a[href]')].map(a => new URL(a.href).pathname)",
    );
    let links: Vec<String> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert!(links.len() >= 8, "{links:?}");
    for link in &links {
        assert!(link.starts_with(sub), "a link leaves {sub}: {link}");
    }
    for link in &links {
        browser.goto(&format!("http://{front}{link}"));
        let shown = browser.wait(
            &format!("{link} to render through the proxy"),
            "const c = document.querySelector('#content'); return c && c.innerText !== 'Loading…' && c.innerText",
        );
        let text = shown.as_str().unwrap_or_default();
        assert!(!text.starts_with("Error"), "{link}: {text}");
        let errors = browser.console_errors();
        assert!(errors.is_empty(), "{link}: console errors: {errors:?}");
    }
}

#[test]
fn every_page_and_link_works_behind_nginx_at_a_sub_path() {
    let dir = TempDir::new("proxy");
    let (kept, stripped) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let locations = [
        // The path goes on as it is: spate serves under /spate.
        ("/spate/", format!("http://{kept}")),
        // The proxy strips /stripped/: spate serves at its root.
        ("/stripped/", format!("http://{stripped}/")),
    ];
    let Some((_nginx, front)) = start_nginx(&dir, &locations) else {
        return;
    };
    let Some(browser) = Browser::start() else {
        return;
    };
    let target = common::CounterTarget::start();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: counter\n    static_configs: [{{targets: ['{}']}}]\n",
        target.addr
    );

    let url = format!("--web.external-url=http://{front}/spate/");
    let spate = start_spate(&config, &kept, &[&url], "/spate/-/ready");
    // The routes live under the prefix on spate itself, too.
    assert_eq!(http_get(&kept, "/agent").map(|r| r.0), Some(404));
    check_pages(&browser, &front, "/spate/");
    drop(spate);

    let url = format!("--web.external-url=http://{front}/stripped/");
    let spate = start_spate(
        &config,
        &stripped,
        &[&url, "--web.route-prefix=/"],
        "/-/ready",
    );
    check_pages(&browser, &front, "/stripped/");
    drop(spate);
}
