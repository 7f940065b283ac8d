//! The UI and API behind a reverse proxy at a sub-path: Debian's nginx forwards `/spate/` to
//! spate started with `--web.external-url=http://<nginx>/spate/`; in Chromium every page loads
//! through the proxy without console errors, and every link stays under the sub-path.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::Browser;
use common::{Proc, Spate, TempDir, free_port, http_get, require_program, wait_for};
use serde_json::Value;

fn start_nginx(dir: &TempDir, backend: &str) -> Option<(Proc, String)> {
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
             location /spate/ {{ proxy_pass http://{backend}; proxy_set_header Host $host:$server_port; }}\n\
             location / {{ return 404; }}\n  }}\n}}\n"
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

#[test]
fn every_page_and_link_works_behind_nginx_at_a_sub_path() {
    let dir = TempDir::new("proxy");
    let web_port = free_port();
    let backend = format!("127.0.0.1:{web_port}");
    let Some((_nginx, front)) = start_nginx(&dir, &backend) else {
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
    let external = format!("http://{front}/spate/");
    let spate = Spate::launch(
        &config,
        &[&format!("--web.external-url={external}")],
        |cmd| {
            // The last --web.listen-address wins: the port nginx forwards to.
            cmd.arg(format!("--web.listen-address={backend}"));
        },
    );
    // The routes live under the prefix on spate itself, too.
    wait_for(Duration::from_secs(30), "spate under /spate", || {
        http_get(&backend, "/spate/-/ready").filter(|(s, _)| *s == 200)
    });
    assert_eq!(http_get(&backend, "/agent").map(|r| r.0), Some(404));
    let (status, body) = http_get(&front, "/spate/api/v1/targets").unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success");

    browser.goto(&format!("http://{front}/spate/"));
    browser.wait(
        "the agent page through the proxy",
        "return location.pathname === '/spate/agent' && document.querySelector('.cards')",
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
        assert!(
            link.starts_with("/spate/"),
            "a link leaves the sub-path: {link}"
        );
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
    drop(spate);
}
