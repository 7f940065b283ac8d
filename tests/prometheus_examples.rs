//! Prometheus' own example configurations (`tests/data/prometheus-examples/`, copied from its
//! `documentation/examples/`): spate's verdict on each matches Prometheus agent's. Where
//! Prometheus 3 agent loads a file, spate loads it too, unless the file uses a discovery kind
//! docs/compatibility.md lists as refused; where Prometheus refuses it, spate refuses it.
//!
//! The expected verdicts are Prometheus 3's. Where Debian's Prometheus 2.42 gives the same
//! one (its `promtool check config --agent --syntax-only`), the test asks it too, so the table
//! is checked against a real Prometheus; the other rows say why 2.42 is no oracle for them.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// What Prometheus 3 agent does with a file.
#[derive(Debug)]
enum Prometheus {
    Loads,
    /// Refused; the message holds this.
    Refuses(&'static str),
}

/// What spate does, where it differs from Prometheus' verdict.
enum Spate {
    Same,
    /// Refused for a discovery kind docs/compatibility.md lists as refused.
    RefusesDiscovery(&'static str),
}

struct Example {
    file: &'static str,
    prometheus: Prometheus,
    spate: Spate,
    /// Why Debian's Prometheus 2.42 cannot check this row (`None`: it gives the same verdict).
    not_in_242: Option<&'static str>,
}

const EXAMPLES: &[Example] = &[
    Example {
        file: "prometheus.yml",
        // An alertmanagers entry (whose targets are all commented out) is an entry.
        prometheus: Prometheus::Refuses("field alerting is not allowed in agent mode"),
        spate: Spate::Same,
        not_in_242: None,
    },
    Example {
        file: "prometheus-agent.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::Same,
        not_in_242: None,
    },
    Example {
        file: "prometheus-consul.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::Same,
        not_in_242: Some("Debian builds Prometheus without Consul discovery"),
    },
    Example {
        file: "prometheus-docker.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::Same,
        not_in_242: None,
    },
    Example {
        file: "prometheus-dockerswarm.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::RefusesDiscovery("dockerswarm_sd_configs"),
        not_in_242: None,
    },
    Example {
        file: "prometheus-kubernetes.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::Same,
        not_in_242: Some("Debian builds Prometheus without Kubernetes discovery"),
    },
    Example {
        file: "prometheus-linode.yml",
        // `credentials` sits beside `authorization`, not under it: an unknown field.
        prometheus: Prometheus::Refuses("credentials"),
        spate: Spate::RefusesDiscovery("linode_sd_configs"),
        not_in_242: Some("Debian builds Prometheus without Linode discovery"),
    },
    Example {
        file: "prometheus-otlp.yml",
        // `otlp` and `storage.tsdb` load in an agent (and mean nothing to it).
        prometheus: Prometheus::Loads,
        spate: Spate::Same,
        not_in_242: Some("2.42 predates the otlp section"),
    },
    Example {
        file: "prometheus-puppetdb.yml",
        prometheus: Prometheus::Loads,
        spate: Spate::RefusesDiscovery("puppetdb_sd_configs"),
        not_in_242: None,
    },
    Example {
        file: "prometheus-vultr.yml",
        prometheus: Prometheus::Refuses("credentials"),
        spate: Spate::RefusesDiscovery("vultr_sd_configs"),
        not_in_242: None,
    },
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/prometheus-examples")
}

/// spate's verdict: `Ok(())` or the error it prints.
fn spate_verdict(file: &PathBuf) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run spate check-config");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_example_gets_prometheus_agents_verdict() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|e| e.file.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every copied example has a row, and every row a file"
    );

    let compat = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/compatibility.md"),
    )
    .unwrap();
    let refused = &compat[compat.find("## Refused").unwrap()..compat.find("## Accepted").unwrap()];
    for e in EXAMPLES {
        let path = dir().join(e.file);
        let got = spate_verdict(&path);
        match (&e.prometheus, &e.spate, &got) {
            (Prometheus::Loads, Spate::Same, Ok(())) => {}
            (Prometheus::Refuses(why), Spate::Same, Err(msg)) => {
                assert!(
                    msg.contains(why),
                    "{}: spate refuses it, but not for {why:?}: {msg}",
                    e.file
                )
            }
            (_, Spate::RefusesDiscovery(kind), Err(msg)) => {
                assert!(
                    msg.contains(kind) && msg.contains("not supported by spate yet"),
                    "{}: refused, but not for {kind}: {msg}",
                    e.file
                );
                assert!(
                    refused.contains(&format!("`{kind}`")),
                    "{kind} is not listed as refused in docs/compatibility.md"
                );
            }
            _ => panic!(
                "{}: Prometheus agent: {:?}; spate: {got:?}",
                e.file, e.prometheus
            ),
        }
    }
}

/// The rows Debian's Prometheus 2.42 can judge get its verdict.
#[test]
fn the_table_agrees_with_debians_prometheus_where_it_can_tell() {
    let Some(promtool) = common::require_program("promtool", "prometheus") else {
        return;
    };
    for e in EXAMPLES.iter().filter(|e| e.not_in_242.is_none()) {
        let out = Command::new(&promtool)
            .args(["check", "config", "--agent", "--syntax-only"])
            .arg(dir().join(e.file))
            .output()
            .expect("run promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match e.prometheus {
            Prometheus::Loads => assert!(out.status.success(), "{}: {text}", e.file),
            Prometheus::Refuses(why) => assert!(
                !out.status.success() && text.contains(why),
                "{}: expected a refusal for {why:?}: {text}",
                e.file
            ),
        }
    }
}
