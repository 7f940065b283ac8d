//! The deployment files: the Kubernetes manifests validate against Kubernetes' own schemas
//! (offline, with the `kubernetes-validate` package from PyPI, which ships them), their
//! configurations load in spate and their flags parse; the systemd unit passes
//! `systemd-analyze verify` and scores as hardened in `systemd-analyze security`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn manifests() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [
        "deploy/kubernetes",
        "deploy/kubernetes/ha-pair",
        "deploy/kubernetes/daemonset",
    ] {
        for e in std::fs::read_dir(repo(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(out.len() >= 9, "{out:?}");
    out
}

/// Every document of every manifest.
fn documents() -> Vec<(PathBuf, serde_json::Value)> {
    let mut out = Vec::new();
    for path in manifests() {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let v: serde_json::Value =
                serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.clone(), v));
        }
    }
    out
}

/// `python3 -m kubernetes_validate`, or `None` (a failure under `CI=true`) without it.
fn validator() -> Option<Command> {
    let ok = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "the Python package kubernetes-validate is missing: python3 -m pip install kubernetes-validate (.ci/run installs it)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "kubernetes_validate",
        "--strict",
        "--quiet",
        "-k",
        "1.33.0",
    ]);
    Some(cmd)
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let Some(mut validate) = validator() else {
        return;
    };
    let out = validate.args(manifests()).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does refuse a field Kubernetes does not have.
    let dir = common::TempDir::new("deploy");
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(repo("deploy/kubernetes/statefulset.yaml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("podManagementPolicy", "podManagmentPolicy"),
    )
    .unwrap();
    let out = validator().unwrap().arg(&bad).output().unwrap();
    assert!(!out.status.success(), "a misspelt field passed");
}

#[test]
fn manifest_configurations_load_and_their_flags_parse() {
    let docs = documents();
    let mut configs = 0;
    let mut agents = 0;
    for (path, v) in &docs {
        let kind = v["kind"].as_str().unwrap_or("");
        if kind == "ConfigMap" {
            let text = v["data"]["prometheus.yml"].as_str().unwrap();
            let text = text.replace("__NODE_NAME__", "node-1");
            spate::config::load_str(&text, "prometheus.yml")
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            configs += 1;
        }
        if kind == "StatefulSet" || kind == "DaemonSet" {
            let name = v["metadata"]["name"].as_str().unwrap();
            let pod = format!("{name}-1");
            let spec = &v["spec"]["template"]["spec"];
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{name}");
            let container = &spec["containers"][0];
            let args: Vec<String> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().replace("$(POD_NAME)", &pod))
                .collect();
            let opts = match spate::cli::parse(&args) {
                Ok(spate::cli::Command::Run(o)) => o,
                other => panic!("{name}: {args:?}: {other:?}"),
            };
            let cluster = opts
                .cluster
                .setup(|| None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            // StatefulSets form clusters from their own service; the DaemonSet does not.
            match kind {
                "StatefulSet" => {
                    let c = cluster.unwrap_or_else(|| panic!("{name}: no cluster"));
                    assert_eq!(c.membership.me, pod);
                    let service = v["spec"]["serviceName"].as_str().unwrap();
                    assert!(
                        args.iter()
                            .any(|a| *a == format!("--cluster.members-kubernetes={service}")),
                        "{name}: members from its own service"
                    );
                    assert!(docs.iter().any(|(_, d)| d["kind"] == "Service"
                        && d["metadata"]["name"] == service
                        && d["spec"]["clusterIP"] == "None"));
                }
                _ => assert!(cluster.is_none()),
            }
            assert_eq!(
                opts.storage_path,
                PathBuf::from("/data"),
                "{name}: the WAL on its volume"
            );
            agents += 1;
        }
    }
    assert!(
        configs >= 2 && agents >= 4,
        "{configs} configs, {agents} agents"
    );
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Some(analyze) = common::require_program("systemd-analyze", "systemd") else {
        return;
    };
    let dir = common::TempDir::new("systemd");
    let text = std::fs::read_to_string(repo("deploy/systemd/spate.service")).unwrap();
    // The unit as installed, with the binary where this build put it.
    let unit = dir.path().join("spate.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/spate", env!("CARGO_BIN_EXE_spate")),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // A misspelt key is reported (so the empty output above means something).
    let bad = dir.path().join("bad.service");
    std::fs::write(&bad, text.replace("ProtectHome=", "ProtectHomes=")).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("ProtectHomes"));
    // systemd's own exposure score: below 2 of 10 ("OK").
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split("spate.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(score < 2.0, "exposure {score}:\n{report}");
    for needed in [
        "User=spate",
        "StateDirectory=spate",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LimitNOFILE=",
        "ProtectSystem=strict",
    ] {
        assert!(text.contains(needed), "{needed}");
    }
    // The service's flags are spate's.
    let start = text
        .split("ExecStart=")
        .nth(1)
        .unwrap()
        .split("\nExecReload")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let args: Vec<String> = start.split_whitespace().skip(1).map(String::from).collect();
    let opts = match spate::cli::parse(&args) {
        Ok(spate::cli::Command::Run(o)) => o,
        other => panic!("{args:?}: {other:?}"),
    };
    assert_eq!(opts.storage_path, PathBuf::from("/var/lib/spate"));
}

/// The image's command line is spate's, the configuration it copies in loads, and it runs as
/// the non-root user the manifests expect, with the WAL on its volume.
#[test]
fn the_dockerfile_runs_spate_as_the_manifests_expect() {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let line = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in the Dockerfile"))
            .trim()
            .to_string()
    };
    let cmd: Vec<String> = serde_json::from_str(&line("CMD ")).unwrap();
    let opts = match spate::cli::parse(&cmd) {
        Ok(spate::cli::Command::Run(o)) => o,
        other => panic!("{cmd:?}: {other:?}"),
    };
    assert_eq!(opts.storage_path, PathBuf::from("/data"));
    assert_eq!(line("VOLUME "), "[\"/data\"]");
    assert_eq!(line("USER "), "65532:65532");
    // The configuration copied in is the shipped default, and it loads.
    let copy = text
        .lines()
        .find(|l| l.starts_with("COPY config/"))
        .unwrap();
    let mut parts = copy.split_whitespace().skip(1);
    let (src, dst) = (parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(PathBuf::from(dst), opts.config_file);
    spate::config::load_file(&repo(src)).unwrap();
    // The manifests run the image as that user.
    for (_, v) in documents() {
        if v["kind"] == "StatefulSet" || v["kind"] == "DaemonSet" {
            assert_eq!(
                v["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
                65532
            );
            assert_eq!(
                v["spec"]["template"]["spec"]["containers"][0]["image"],
                "spate:latest"
            );
        }
    }
}
