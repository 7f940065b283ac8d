//! The binary's command line: flags, errors, `check-config`, and shutdown by signal.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Spate, TempDir, http_get};

fn spate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(args)
        .output()
        .expect("run spate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_and_help() {
    let (code, out, _) = spate(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("spate, version {}", env!("CARGO_PKG_VERSION"))));
    let (code, out, _) = spate(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--config.file",
        "--storage.agent.path",
        "--web.listen-address",
        "--enable-feature",
        "--log.level",
        "--log.format",
        "--cores",
    ] {
        assert!(out.contains(flag), "help lists {flag}");
    }
}

#[test]
fn bad_flags_exit_non_zero_naming_the_flag() {
    let (code, _, err) = spate(&["--scrape.nope=1"]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown long flag '--scrape.nope'"), "{err}");
    let (code, _, err) = spate(&["--log.level=verbose"]);
    assert_ne!(code, 0);
    assert!(err.contains("'--log.level'"), "{err}");
}

#[test]
fn check_config_stops_at_the_first_invalid_file() {
    let dir = TempDir::new("check");
    let good = dir.path().join("good.yml");
    let bad = dir.path().join("bad.yml");
    let never = dir.path().join("never.yml");
    std::fs::write(
        &good,
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [a:1]\n",
    )
    .unwrap();
    std::fs::write(&bad, "scrape_configs:\n  - job_name: a\n  - job_name: a\n").unwrap();
    std::fs::write(&never, "").unwrap();
    let (code, out, _) = spate(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("SUCCESS"));
    let (code, out, _) = spate(&[
        "check-config",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        never.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        out.contains(&format!(
            "{}:3: scrape_configs[1].job_name: found multiple scrape configs",
            bad.display()
        )),
        "{out}"
    );
    assert!(
        !out.contains("never.yml"),
        "checking stops at the first invalid file"
    );
}

#[test]
fn invalid_config_fails_start_with_the_reason() {
    let dir = TempDir::new("badstart");
    let cfg = dir.path().join("p.yml");
    std::fs::write(&cfg, "global:\n  scrape_interval: nope\n").unwrap();
    let (code, _, err) = spate(&[
        &format!("--config.file={}", cfg.display()),
        "--web.listen-address=127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("p.yml:2") && err.contains("not a valid duration string"),
        "{err}"
    );
}

#[test]
fn serves_health_and_self_metrics_and_stops_on_sigint() {
    let mut s = Spate::start("scrape_configs: []\n", &["--log.format=json"]);
    assert_eq!(http_get(&s.web, "/-/healthy").unwrap().0, 200);
    assert_eq!(http_get(&s.web, "/-/ready").unwrap().0, 200);
    let (_, metrics) = http_get(&s.web, "/metrics").unwrap();
    assert!(metrics.contains("spate_core_targets{core=\"0\"} 0"));
    assert!(metrics.contains("process_resident_memory_bytes"));
    assert_eq!(http_get(&s.web, "/nope").unwrap().0, 404);
    // JSON logs: one object per line.
    let log = s.proc.log_text();
    assert!(
        log.lines().all(|l| l.starts_with('{') && l.ends_with('}')),
        "{log}"
    );
    // SIGINT behaves like SIGTERM.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(s.proc.pid() as i32, libc::SIGINT) };
    common::wait_for(Duration::from_secs(30), "exit on SIGINT", || {
        (!s.proc.is_running()).then_some(())
    });
}

#[test]
fn a_storage_directory_in_use_is_refused() {
    let dir = TempDir::new("lock");
    let cfg = dir.path().join("p.yml");
    std::fs::write(&cfg, "scrape_configs: []\n").unwrap();
    let storage = format!("--storage.agent.path={}", dir.path().join("data").display());
    let first = common::Spate::start("scrape_configs: []\n", &[&storage]);
    let (code, _, err) = spate(&[
        &format!("--config.file={}", cfg.display()),
        &storage,
        "--web.listen-address=127.0.0.1:0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("is in use by another process"), "{err}");
    drop(first);
}

/// Every flag Debian's Prometheus lists in `--help` is spate's, or refused or ignored by name:
/// never "unknown flag". (Prometheus 3's additions are in `cli.rs`' own table and tests.)
#[test]
fn no_prometheus_flag_is_unknown() {
    let Some(prometheus) = common::require_program("prometheus", "prometheus") else {
        return;
    };
    let out = Command::new(prometheus).arg("--help").output().unwrap();
    let help =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let flags: Vec<String> = help
        .lines()
        // Flags start their lines; wrapped help text is indented further.
        .filter(|l| l.len() - l.trim_start().len() <= 8)
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| {
            l.split(|c: char| c == '=' || c.is_whitespace())
                .next()
                .unwrap_or("")
                .replace("[no-]", "")
        })
        .filter(|f| {
            !f.is_empty() && !["version", "help", "help-long", "help-man"].contains(&f.as_str())
        })
        .collect();
    assert!(flags.len() > 30, "{flags:?}");
    for flag in &flags {
        // With a value and the check-config command, so nothing is started.
        let (code, _, err) = spate(&[&format!("--{flag}=x"), "check-config", "/nonexistent.yml"]);
        assert!(!err.contains("unknown long flag"), "--{flag}: {err}");
        assert_ne!(code, 0, "--{flag}=x with a missing file cannot succeed");
    }
}
