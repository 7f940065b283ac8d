//! Service discovery and reload with real processes: file_sd and http_sd against real files
//! and servers, and configuration reloads (valid, invalid, and one that moves a target to
//! another job) by `POST /-/reload` and SIGHUP.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{CounterTarget, Receiver, Spate, TestServer, http_get, http_request, wait_for};
use serde_json::Value;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Active targets as (job, instance, labels), from `/api/v1/targets`.
fn active(spate: &Spate) -> Vec<(String, String, Value)> {
    let Some((_, body)) = http_get(&spate.web, "/api/v1/targets") else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            (
                t["scrapePool"].as_str().unwrap_or("").to_string(),
                t["labels"]["instance"].as_str().unwrap_or("").to_string(),
                t["labels"].clone(),
            )
        })
        .collect()
}

fn stale_markers(r: &Receiver, job: &str, instance: &str, name: &str) -> usize {
    r.samples()
        .iter()
        .filter(|s| {
            s.label("job") == Some(job)
                && s.label("instance") == Some(instance)
                && s.label("__name__") == Some(name)
                && s.value.to_bits() == STALE_NAN
        })
        .count()
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn file_sd_follows_the_files_and_removed_targets_go_stale() {
    let (a, b) = (CounterTarget::start(), CounterTarget::start());
    let receiver = Receiver::start(|_| 200);
    let dir = common::TempDir::new("file-sd");
    let sd = dir.path().join("targets.json");
    write_atomically(
        &sd,
        &format!(
            r#"[{{"targets": ["{}"], "labels": {{"team": "x"}}}}]"#,
            a.addr
        ),
    );
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: files\n    file_sd_configs:\n      - files: ['{}']\n    relabel_configs:\n      - {{source_labels: [__meta_filepath], target_label: sd_file}}\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        dir.path().join("*.json").display(),
        receiver.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let t = wait_for(Duration::from_secs(30), "the file's target", || {
        active(&spate).into_iter().find(|t| t.1 == a_addr)
    });
    assert_eq!(t.2["team"], "x");
    assert_eq!(t.2["sd_file"], sd.display().to_string(), "__meta_filepath");
    wait_for(Duration::from_secs(30), "samples from a", || {
        (a.served.load(Ordering::SeqCst) >= 2).then_some(())
    });

    // A second target, and a second file matching the glob.
    let changed = Instant::now();
    write_atomically(
        &dir.path().join("more.json"),
        &format!(r#"[{{"targets": ["{b_addr}"]}}]"#),
    );
    wait_for(Duration::from_secs(30), "the new file's target", || {
        active(&spate).iter().any(|t| t.1 == b_addr).then_some(())
    });
    eprintln!("file_sd change visible after {:?}", changed.elapsed());

    // A broken file keeps its targets.
    std::fs::write(&sd, "[{ not json").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(active(&spate).iter().any(|t| t.1 == a_addr), "kept");
    assert!(spate.proc.log_text().contains("cannot read a file_sd file"));
    assert!(spate.metric("prometheus_sd_file_read_errors_total") >= 1.0);
    assert_eq!(
        spate.metric("prometheus_sd_discovered_targets{config=\"files\""),
        2.0
    );

    // a leaves the file: it stops and its series go stale at its next tick.
    write_atomically(&sd, "[]");
    wait_for(Duration::from_secs(30), "a to go", || {
        (!active(&spate).iter().any(|t| t.1 == a_addr)).then_some(())
    });
    wait_for(Duration::from_secs(30), "a's staleness markers", || {
        (stale_markers(&receiver, "files", &a_addr, "test_counter") == 1
            && stale_markers(&receiver, "files", &a_addr, "up") == 1)
            .then_some(())
    });
    let served = a.served.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        a.served.load(Ordering::SeqCst) <= served + 1,
        "a is no longer scraped"
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
    assert_eq!(
        stale_markers(&receiver, "files", &b_addr, "up"),
        0,
        "no markers at shutdown"
    );
}

#[test]
fn http_sd_discovers_targets_and_keeps_them_while_it_fails() {
    let (a, b) = (CounterTarget::start(), CounterTarget::start());
    let receiver = Receiver::start(|_| 200);
    let phase = Arc::new(AtomicU64::new(0));
    let p = phase.clone();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let (aa, bb) = (a_addr.clone(), b_addr.clone());
    let sd = TestServer::start(move |headers, _| {
        assert_eq!(
            headers.get("accept").map(String::as_str),
            Some("application/json")
        );
        match p.load(Ordering::SeqCst) {
            0 => (
                200,
                "application/json",
                format!(r#"[{{"targets": ["{aa}"], "labels": {{"dc": "one"}}}}]"#).into_bytes(),
            ),
            1 => (503, "text/plain", b"down".to_vec()),
            _ => (
                200,
                "application/json; charset=utf-8",
                format!(r#"[{{"targets": ["{bb}"]}}]"#).into_bytes(),
            ),
        }
    });
    let url = format!("http://{}/sd", sd.addr);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: web\n    http_sd_configs:\n      - url: {url}\n        refresh_interval: 1s\n    relabel_configs:\n      - {{source_labels: [__meta_url], target_label: sd_url}}\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n",
        receiver.url()
    );
    let mut spate = Spate::start(&config, &[]);
    let t = wait_for(Duration::from_secs(30), "the discovered target", || {
        active(&spate).into_iter().find(|t| t.1 == a_addr)
    });
    assert_eq!(t.2["dc"], "one");
    assert_eq!(t.2["sd_url"], url);
    phase.store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        active(&spate).iter().any(|t| t.1 == a_addr),
        "kept while failing"
    );
    let log = spate.proc.log_text();
    assert!(
        log.contains("service discovery failed") && log.contains("mechanism=\"http http://"),
        "{log}"
    );
    assert!(spate.metric("prometheus_sd_http_failures_total") >= 1.0);
    phase.store(2, Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "the new list", || {
        let now = active(&spate);
        (now.len() == 1 && now[0].1 == b_addr).then_some(())
    });
    // A reload that changes the job: the target the new provider finds again keeps running,
    // with no staleness markers in between.
    wait_for(Duration::from_secs(30), "b scraped", || {
        (b.served.load(Ordering::SeqCst) >= 2).then_some(())
    });
    std::fs::write(
        spate.dir.path().join("spate.yml"),
        config.replace("refresh_interval: 1s", "refresh_interval: 2s"),
    )
    .unwrap();
    let before = b.served.load(Ordering::SeqCst);
    // SAFETY: sending a signal to the child this test started.
    unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGHUP) };
    wait_for(
        Duration::from_secs(30),
        "b scraped after the reload",
        || (b.served.load(Ordering::SeqCst) >= before + 3).then_some(()),
    );
    // Batches go out every 200 ms: what was written is at the receiver by now.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(stale_markers(&receiver, "web", &b_addr, "up"), 0);
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn http_sd_follows_redirects_as_configured_and_keeps_credentials_on_its_host() {
    let a = CounterTarget::start();
    let a_addr = a.addr.to_string();
    let seen_auth_at_list = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let seen = seen_auth_at_list.clone();
    let list = TestServer::start(move |headers, _| {
        let auth = headers.get("authorization").cloned();
        seen.lock().unwrap().push(auth);
        (
            200,
            "application/json",
            format!(r#"[{{"targets": ["{a_addr}"]}}]"#).into_bytes(),
        )
    });
    // The discovery URL redirects to another server (another host:port), as a load balancer
    // or a moved endpoint does.
    let location: &'static str = Box::leak(format!("http://{}/list", list.addr).into_boxed_str());
    let first_auth = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let fa = first_auth.clone();
    let front = TestServer::start(move |headers, _| {
        fa.lock()
            .unwrap()
            .push(headers.get("authorization").cloned());
        (302, location, Vec::new())
    });
    let receiver = Receiver::start(|_| 200);
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: followed\n    http_sd_configs:\n      - url: http://{front}/sd\n        refresh_interval: 1s\n        authorization: {{credentials: sd-secret}}\n  - job_name: not_followed\n    http_sd_configs:\n      - url: http://{front}/sd\n        refresh_interval: 1s\n        follow_redirects: false\nremote_write:\n  - url: {}\n",
        receiver.url(),
        front = front.addr,
    );
    let mut spate = Spate::start(&config, &[]);
    let found = wait_for(
        Duration::from_secs(30),
        "the target behind the redirect",
        || {
            active(&spate)
                .into_iter()
                .find(|t| t.0 == "followed" && t.1 == a.addr.to_string())
        },
    );
    assert_eq!(found.0, "followed");
    // The job that does not follow redirects fails (a 302 is not a target list) and finds
    // nothing.
    wait_for(Duration::from_secs(30), "a failed refresh", || {
        (spate.metric("prometheus_sd_http_failures_total") >= 1.0).then_some(())
    });
    assert!(active(&spate).iter().all(|t| t.0 != "not_followed"));
    assert!(
        spate
            .proc
            .log_text()
            .contains("server returned HTTP status 302"),
        "the failure says why"
    );
    // Credentials went to the discovery URL's host, not to the host the redirect led to (as
    // Go's client strips them).
    assert!(
        first_auth
            .lock()
            .unwrap()
            .contains(&Some("Bearer sd-secret".to_string()))
    );
    let at_list = seen_auth_at_list.lock().unwrap().clone();
    assert!(!at_list.is_empty());
    assert!(at_list.iter().all(Option::is_none), "{at_list:?}");
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn reloads_apply_valid_configs_reject_invalid_ones_and_move_targets_between_jobs() {
    let t = CounterTarget::start();
    let other = CounterTarget::start();
    let receiver = Receiver::start(|_| 200);
    let job_config = |jobs: &[(&str, &CounterTarget)]| {
        let mut out = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (name, target) in jobs {
            out.push_str(&format!(
                "  - job_name: {name}\n    static_configs: [{{targets: ['{}']}}]\n",
                target.addr
            ));
        }
        out.push_str(&format!(
            "remote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n",
            receiver.url()
        ));
        out
    };
    let mut spate = Spate::start(&job_config(&[("first", &t)]), &["--web.enable-lifecycle"]);
    let cfg_path = spate.dir.path().join("spate.yml");
    let instance = t.addr.to_string();
    wait_for(Duration::from_secs(30), "a scrape in job first", || {
        receiver
            .samples()
            .iter()
            .any(|s| s.label("job") == Some("first"))
            .then_some(())
    });

    // The target moves to another job: the old series go stale, the new job scrapes it.
    std::fs::write(&cfg_path, job_config(&[("second", &t)])).unwrap();
    let (code, body) = http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 200, "{body}");
    let jobs: Vec<String> = active(&spate).into_iter().map(|t| t.0).collect();
    assert_eq!(jobs, ["second"]);
    wait_for(
        Duration::from_secs(30),
        "samples of job second, and first stale",
        || {
            let second = receiver
                .samples()
                .iter()
                .any(|s| s.label("job") == Some("second") && s.value.to_bits() != STALE_NAN);
            (second && stale_markers(&receiver, "first", &instance, "test_counter") == 1)
                .then_some(())
        },
    );
    assert_eq!(
        spate.metric("prometheus_config_last_reload_successful"),
        1.0
    );

    // An invalid configuration is refused; the running one stays.
    std::fs::write(
        &cfg_path,
        "scrape_configs:\n  - job_name: x\n    scrape_interval: nonsense\n",
    )
    .unwrap();
    let (code, body) = http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 500);
    assert!(body.starts_with("failed to reload config:"), "{body}");
    assert!(body.contains("nonsense"), "names the bad value: {body}");
    assert_eq!(
        spate.metric("prometheus_config_last_reload_successful"),
        0.0
    );
    assert_eq!(active(&spate).len(), 1);

    // SIGHUP reloads too: a job is added, the existing one runs on untouched.
    let before = t.served.load(Ordering::SeqCst);
    std::fs::write(&cfg_path, job_config(&[("second", &t), ("third", &other)])).unwrap();
    // SAFETY: sending a signal to the child this test started.
    unsafe { libc::kill(spate.proc.pid() as i32, libc::SIGHUP) };
    wait_for(Duration::from_secs(30), "the reload by SIGHUP", || {
        (spate.metric("prometheus_config_last_reload_successful") == 1.0
            && active(&spate).len() == 2)
            .then_some(())
    });
    wait_for(Duration::from_secs(30), "job second still scraped", || {
        (t.served.load(Ordering::SeqCst) >= before + 2).then_some(())
    });
    assert_eq!(
        stale_markers(&receiver, "second", &instance, "test_counter"),
        0,
        "an unchanged job is not disturbed"
    );
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

#[test]
fn reload_needs_the_lifecycle_flag() {
    let spate = Spate::start("", &[]);
    let (code, body) = http_request(&spate.web, "POST", "/-/reload").unwrap();
    assert_eq!(code, 403);
    assert_eq!(body, "Lifecycle API is not enabled.\n");
}

#[test]
fn dns_sd_finds_srv_a_aaaa_and_mx_targets_from_a_real_dns_server() {
    let t = CounterTarget::start();
    let port = t.addr.port();
    let dir = common::TempDir::new("dns-sd");
    let records = [
        format!("--srv-host=_metrics._tcp.spate.test,t1.spate.test,{port}"),
        "--host-record=t1.spate.test,127.0.0.1".to_string(),
        "--host-record=a.spate.test,127.0.0.1".to_string(),
        "--host-record=six.spate.test,::1".to_string(),
        "--mx-host=mail.spate.test,t1.spate.test,10".to_string(),
    ];
    let Some((mut dns, resolv)) = common::start_dnsmasq(&dir, &records) else {
        return;
    };
    let receiver = Receiver::start(|_| 200);
    let job = |name: &str, sd: &str| {
        format!(
            "  - job_name: {name}\n    dns_sd_configs: [{sd}]\n    relabel_configs:\n      - {{regex: '__meta_dns_(.+)', action: labelmap}}\n"
        )
    };
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n{}{}{}{}remote_write:\n  - url: {}\n",
        job(
            "srv",
            "{names: [_metrics._tcp.spate.test], refresh_interval: 1s}"
        ),
        job(
            "a",
            &format!("{{names: [a.spate.test], type: A, port: {port}, refresh_interval: 1s}}")
        ),
        job(
            "aaaa",
            "{names: [six.spate.test], type: AAAA, port: 9, refresh_interval: 1s}"
        ),
        job(
            "mx",
            &format!("{{names: [mail.spate.test], type: MX, port: {port}, refresh_interval: 1s}}")
        ),
        receiver.url()
    );
    let mut spate = Spate::start_with(&config, &[], |cmd| {
        cmd.env("SPATE_RESOLV_CONF", &resolv);
    });
    let targets = wait_for(
        Duration::from_secs(60),
        "a target from every record type",
        || {
            let now = active(&spate);
            (now.len() == 4).then_some(now)
        },
    );
    let get = |job: &str| targets.iter().find(|t| t.0 == job).unwrap().clone();
    let srv = get("srv");
    assert_eq!(srv.1, format!("t1.spate.test:{port}"));
    assert_eq!(srv.2["name"], "_metrics._tcp.spate.test");
    assert_eq!(srv.2["srv_record_target"], "t1.spate.test.");
    assert_eq!(srv.2["srv_record_port"], port.to_string());
    assert_eq!(get("a").1, format!("127.0.0.1:{port}"));
    assert_eq!(get("a").2["name"], "a.spate.test");
    assert_eq!(get("aaaa").1, "[::1]:9");
    let mx = get("mx");
    assert_eq!(mx.1, format!("t1.spate.test:{port}"));
    assert_eq!(mx.2["mx_record_target"], "t1.spate.test.");
    // The A target is a real one: it is scraped.
    wait_for(
        Duration::from_secs(30),
        "the A record's target scraped",
        || {
            receiver
                .samples()
                .iter()
                .any(|s| s.label("job") == Some("a") && s.label("__name__") == Some("test_counter"))
                .then_some(())
        },
    );
    // The DNS server goes away: the targets stay.
    dns.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(active(&spate).len(), 4, "last good targets kept");
    assert!(spate.proc.log_text().contains("DNS lookup failed"));
    assert!(spate.metric("prometheus_sd_dns_lookup_failures_total") >= 1.0);
    assert!(spate.metric("prometheus_sd_dns_lookups_total") >= 4.0);
    assert!(spate.proc.terminate(Duration::from_secs(60)).success());
}

/// `--config.auto-reload`: a changed file is loaded without a signal; an invalid one is refused
/// (the running configuration stays) and tried again until it is fixed. Environment variables in
/// external labels are expanded, as Prometheus 3 does.
#[test]
fn auto_reload_follows_the_file_and_external_labels_expand_the_environment() {
    let t = CounterTarget::start();
    let receiver = Receiver::start(|_| 200);
    let config = |job: &str| {
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels: {{region: '${{SPATE_TEST_REGION}}', literal: 'a$$b', gone: '${{SPATE_TEST_UNSET}}'}}\nscrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['{}']}}]\nremote_write:\n  - url: {}\n    queue_config: {{batch_send_deadline: 200ms}}\n",
            t.addr,
            receiver.url()
        )
    };
    let spate = Spate::start_with(
        &config("first"),
        &["--config.auto-reload", "--config.auto-reload-interval=1s"],
        |cmd| {
            cmd.env("SPATE_TEST_REGION", "eu-1")
                .env_remove("SPATE_TEST_UNSET");
        },
    );
    let cfg_path = spate.dir.path().join("spate.yml");
    let jobs = |s: &Spate| -> Vec<String> { active(s).into_iter().map(|(j, _, _)| j).collect() };
    wait_for(Duration::from_secs(30), "the first job", || {
        (jobs(&spate) == ["first"]).then_some(())
    });
    let sample = wait_for(Duration::from_secs(30), "a sample", || {
        receiver
            .samples()
            .into_iter()
            .find(|s| s.label("job") == Some("first"))
    });
    assert_eq!(sample.label("region"), Some("eu-1"));
    assert_eq!(sample.label("literal"), Some("a$b"));
    assert_eq!(sample.label("gone"), None, "empty after expansion: dropped");
    assert!(spate.proc.log_text().contains("Empty environment variable"));

    write_atomically(&cfg_path, &config("second"));
    wait_for(Duration::from_secs(30), "the changed file applied", || {
        (jobs(&spate) == ["second"]).then_some(())
    });
    write_atomically(
        &cfg_path,
        "scrape_configs: [{job_name: broken, scrape_interval: 1x}]\n",
    );
    wait_for(Duration::from_secs(30), "the invalid file refused", || {
        (spate.metric("prometheus_config_last_reload_successful") == 0.0).then_some(())
    });
    assert_eq!(jobs(&spate), ["second"], "the running configuration stays");
    write_atomically(&cfg_path, &config("third"));
    wait_for(Duration::from_secs(30), "the fixed file applied", || {
        (jobs(&spate) == ["third"]
            && spate.metric("prometheus_config_last_reload_successful") == 1.0)
            .then_some(())
    });

    // `scrape_config_files` (relative to the main file): a job added in an included file,
    // and a change to that file alone, are followed too.
    let jobs_dir = spate.dir.path().join("jobs.d");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let included = |job: &str| {
        format!(
            "scrape_configs:\n  - job_name: {job}\n    static_configs: [{{targets: ['{}']}}]\n",
            t.addr
        )
    };
    write_atomically(&jobs_dir.join("team.yml"), &included("team_a"));
    write_atomically(
        &cfg_path,
        &config("third").replacen(
            "scrape_configs:",
            "scrape_config_files: ['jobs.d/*.yml']\nscrape_configs:",
            1,
        ),
    );
    let sorted = |s: &Spate| {
        let mut j = jobs(s);
        j.sort();
        j
    };
    wait_for(Duration::from_secs(30), "the included job", || {
        (sorted(&spate) == ["team_a", "third"]).then_some(())
    });
    write_atomically(&jobs_dir.join("team.yml"), &included("team_b"));
    wait_for(
        Duration::from_secs(30),
        "the included file's change",
        || (sorted(&spate) == ["team_b", "third"]).then_some(()),
    );
    wait_for(
        Duration::from_secs(30),
        "samples of the included job",
        || {
            receiver
                .samples()
                .iter()
                .any(|s| s.label("job") == Some("team_b"))
                .then_some(())
        },
    );
}
