//! A cluster of spate processes sharing targets (`--cluster.*`): every target is scraped by
//! exactly R members, each member decides alone from the same member list, and targets
//! another member owns are listed as dropped.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{Proc, Spate, TempDir, free_port_range, http_get, wait_for};
use serde_json::Value;

/// (active instances, dropped count) of job `bench` on a member.
fn share(spate: &Spate) -> Option<(Vec<String>, u64)> {
    let (_, body) = http_get(&spate.web, "/api/v1/targets")?;
    let v: Value = serde_json::from_str(&body).ok()?;
    let active = v["data"]["activeTargets"]
        .as_array()?
        .iter()
        .map(|t| t["labels"]["instance"].as_str().unwrap_or("").to_string())
        .collect();
    Some((active, v["data"]["droppedTargetCounts"]["bench"].as_u64()?))
}

fn run(replication: usize) {
    const N: u16 = 30;
    let dir = TempDir::new("cluster");
    let base = free_port_range(N);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spate"));
    cmd.args([
        "bench".to_string(),
        "targets".into(),
        format!("--targets={N}"),
        "--series=5".into(),
        format!("--listen=127.0.0.1:{base}"),
    ]);
    let _targets = Proc::spawn("targets", &mut cmd, dir.path());
    let list: Vec<String> = (0..N)
        .map(|i| format!("'127.0.0.1:{}'", base + i))
        .collect();
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    );
    let members: Vec<Spate> = ["a", "b", "c"]
        .iter()
        .map(|m| {
            Spate::start(
                &config,
                &[
                    "--cores=1",
                    "--cluster.members=a,b,c",
                    &format!("--cluster.member={m}"),
                    &format!("--cluster.replication-factor={replication}"),
                ],
            )
        })
        .collect();
    let shares: Vec<(Vec<String>, u64)> =
        wait_for(Duration::from_secs(30), "every member's share", || {
            members.iter().map(share).collect::<Option<Vec<_>>>()
        });
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for (active, dropped) in &shares {
        // What a member does not scrape, it lists as dropped.
        assert_eq!(active.len() as u64 + dropped, u64::from(N));
        for a in active {
            *owners.entry(a.clone()).or_default() += 1;
        }
    }
    assert_eq!(owners.len(), usize::from(N), "every target has an owner");
    // A dropped target names its owners.
    for (m, name) in members.iter().zip(["a", "b", "c"]) {
        let (_, body) = http_get(&m.web, "/api/v1/targets?state=dropped").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        for d in v["data"]["droppedTargets"].as_array().unwrap() {
            let reason = d["droppedReason"].as_str().unwrap_or("");
            let owners = reason.strip_prefix("sharding: owned by ").unwrap_or("");
            assert_eq!(owners.split(", ").count(), replication, "{reason}");
            assert!(!owners.split(", ").any(|o| o == name), "{name}: {reason}");
        }
    }
    assert!(
        owners.values().all(|n| *n == replication),
        "each target scraped by {replication} members: {owners:?}"
    );
    // Each member scrapes its own targets.
    for (m, (active, _)) in members.iter().zip(&shares) {
        if active.is_empty() {
            continue;
        }
        wait_for(Duration::from_secs(30), "scrapes on a member", || {
            (m.metric("prometheus_target_scrape_pool_targets{scrape_job=\"bench\"}")
                == active.len() as f64)
                .then_some(())
        });
    }
}

#[test]
fn three_members_share_targets_once_each() {
    run(1);
}

#[test]
fn an_ha_pair_factor_scrapes_each_target_twice() {
    run(2);
}

#[test]
fn a_member_missing_from_the_list_scrapes_nothing() {
    let spate = Spate::start(
        "scrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: ['127.0.0.1:1']\n",
        &["--cores=1", "--cluster.members=a,b", "--cluster.member=z"],
    );
    let (active, dropped) = wait_for(Duration::from_secs(30), "the share", || share(&spate));
    assert!(active.is_empty());
    assert_eq!(dropped, 1);
    assert!(
        spate
            .proc
            .log_text()
            .contains("not in the cluster's member list")
    );
}
