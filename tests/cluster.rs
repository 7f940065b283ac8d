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
        .filter(|t| t["scrapePool"] == "bench")
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
    // Each member scrapes its own targets, and counts their series as its active series.
    let (_, exposition) = http_get(&format!("127.0.0.1:{base}"), "/metrics").unwrap();
    let per_target = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count() as f64;
    for (m, (active, _)) in members.iter().zip(&shares) {
        wait_for(Duration::from_secs(30), "scrapes on a member", || {
            (m.metric("prometheus_target_scrape_pool_targets{scrape_job=\"bench\"}")
                == active.len() as f64
                && m.metric("prometheus_agent_active_series ") == active.len() as f64 * per_target)
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

type Labels = Vec<(String, String)>;

/// The tests that run five agents over a thousand targets take turns: side by side on a
/// two-core machine they would measure the machine, not the cluster.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Prometheus' staleness marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `spate bench targets` serving `n` targets of `series` series each; the process and the
/// first port.
fn bench_targets(n: u16, series: usize, dir: &TempDir) -> (Proc, u16) {
    let base = free_port_range(n);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spate"));
    cmd.args([
        "bench".to_string(),
        "targets".into(),
        format!("--targets={n}"),
        format!("--series={series}"),
        format!("--listen=127.0.0.1:{base}"),
    ]);
    (Proc::spawn("targets", &mut cmd, dir.path()), base)
}

/// A configuration scraping targets `base..base+n` as job `bench` every `interval`, writing
/// to each of `urls`.
fn bench_config(base: u16, n: u16, interval: &str, urls: &[String]) -> String {
    let list: Vec<String> = (0..n)
        .map(|i| format!("'127.0.0.1:{}'", base + i))
        .collect();
    let writes: String = urls
        .iter()
        .map(|u| format!("  - url: {u}\n    queue_config: {{batch_send_deadline: 200ms}}\n"))
        .collect();
    format!(
        "global: {{scrape_interval: {interval}}}\nscrape_configs:\n  - job_name: bench\n    static_configs:\n      - targets: [{}]\nremote_write:\n{writes}",
        list.join(", ")
    )
}

/// Which members list each target of job `bench` as active: instance → members.
fn owners_of(members: &[(&str, &Spate)]) -> Option<BTreeMap<String, Vec<String>>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, spate) in members {
        let (active, _) = share(spate)?;
        for a in active {
            owners.entry(a).or_default().push(name.to_string());
        }
    }
    Some(owners)
}

/// Waits until the members in `listed` own every one of `n` targets exactly once, each
/// member some, and the members in `left` none; returns the owner of each target.
fn settled(listed: &[(&str, &Spate)], left: &[(&str, &Spate)], n: u16) -> BTreeMap<String, String> {
    wait_for(Duration::from_secs(90), "the members to settle", || {
        for (_, s) in left {
            if !share(s)?.0.is_empty() {
                return None;
            }
        }
        let owners = owners_of(listed)?;
        let each_once = owners.len() == usize::from(n) && owners.values().all(|o| o.len() == 1);
        let all_busy = listed
            .iter()
            .all(|(m, _)| owners.values().any(|o| o[0] == *m));
        (each_once && all_busy).then(|| {
            owners
                .into_iter()
                .map(|(t, mut o)| (t, o.remove(0)))
                .collect()
        })
    })
}

/// Members `range` as (name, process).
fn refs<'a>(
    names: &[&'a str],
    members: &'a [Spate],
    range: std::ops::Range<usize>,
) -> Vec<(&'a str, &'a Spate)> {
    range.map(|i| (names[i], &members[i])).collect()
}

/// Targets whose owner differs between two assignments.
fn moved(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(t, o)| b.get(*t) != Some(o))
        .map(|(t, _)| t.clone())
        .collect()
}

/// The share static modulo hashing (vmagent's `membersCount`) would move for these targets.
fn modulo_moves(targets: &[String], from: u64, to: u64) -> f64 {
    let moved = targets
        .iter()
        .filter(|t| {
            let key = spate::cluster::target_key("bench", &format!("http://{t}/metrics"));
            let h = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
            h % from != h % to
        })
        .count();
    moved as f64 / targets.len() as f64
}

/// How a test changes the member list.
enum ListSource {
    File(std::path::PathBuf),
    Dns {
        hosts: std::path::PathBuf,
        dnsmasq: Proc,
        resolv: std::path::PathBuf,
    },
}

impl ListSource {
    fn set(&self, members: &[&str]) {
        match self {
            ListSource::File(path) => {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, members.join("\n") + "\n").unwrap();
                std::fs::rename(&tmp, path).unwrap();
            }
            ListSource::Dns { hosts, dnsmasq, .. } => {
                let text: String = members
                    .iter()
                    .map(|m| format!("{m} members.spate.test\n"))
                    .collect();
                std::fs::write(hosts, text).unwrap();
                // SAFETY: SIGHUP to the dnsmasq child we started: it reads its hosts again.
                unsafe { libc::kill(dnsmasq.pid() as i32, libc::SIGHUP) };
            }
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            ListSource::File(path) => vec![format!("--cluster.members-file={}", path.display())],
            ListSource::Dns { .. } => vec![
                "--cluster.members-dns=members.spate.test".into(),
                "--cluster.members-dns-type=A".into(),
            ],
        }
    }

    fn resolv(&self) -> Option<&std::path::Path> {
        match self {
            ListSource::Dns { resolv, .. } => Some(resolv),
            ListSource::File(_) => None,
        }
    }
}

/// 3 → 5 → 2 members with R=1, the list changed through `source` while 1,000 targets are
/// scraped every 2 s: at every tick each target's series arrive once (the bounded handover
/// overlap aside, at identical timestamps), never missing, never marked stale; a resize
/// moves about the share it must.
fn resize(source: ListSource, dir: &TempDir) {
    let _turn = heavy();
    const N: u16 = 1000;
    const INTERVAL_MS: i64 = 2000;
    let (_targets, base) = bench_targets(N, 1, dir);
    let receiver = common::Receiver::start(|_| 200);
    let config = bench_config(base, N, "2s", &[receiver.url()]);
    let names = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ];
    // Member 127.0.0.x serves its web API on 127.0.0.x.
    let start = |name: &str| {
        let web = format!("{name}:{}", common::free_port());
        let mut args = vec![
            "--cores=1".to_string(),
            format!("--cluster.member={name}"),
            "--cluster.refresh-interval=500ms".into(),
            format!("--web.listen-address={web}"),
        ];
        args.extend(source.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spate = Spate::launch(&config, &args, |cmd| {
            if let Some(r) = source.resolv() {
                cmd.env("SPATE_RESOLV_CONF", r);
            }
        });
        spate.web = web;
        wait_for(Duration::from_secs(30), "a member to be ready", || {
            http_get(&spate.web, "/-/ready").filter(|(code, _)| *code == 200)
        });
        spate
    };
    source.set(&names[..3]);
    let mut members: Vec<Spate> = names[..3].iter().map(|n| start(n)).collect();
    let first = settled(&refs(&names, &members, 0..3), &[], N);
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS as u64));
    let from = unix_ms();

    // 3 → 5: the new members start unlisted (scraping nothing), then the list grows.
    members.push(start(names[3]));
    members.push(start(names[4]));
    source.set(&names[..5]);
    let second = settled(&refs(&names, &members, 0..5), &[], N);
    let grown = moved(&first, &second);
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS as u64));

    // 5 → 2: the list shrinks first; the members that left stop once their targets are
    // handed over.
    source.set(&names[..2]);
    let third = settled(
        &refs(&names, &members, 0..2),
        &refs(&names, &members, 2..5),
        N,
    );
    let shrunk = moved(&second, &third);
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS as u64));
    for m in members.drain(2..).rev() {
        let mut m = m;
        assert!(m.proc.terminate(Duration::from_secs(60)).success());
    }
    std::thread::sleep(Duration::from_millis(4 * INTERVAL_MS as u64));
    let to = unix_ms() - 2 * INTERVAL_MS;

    // Moves: about the share the resize must move, far below what modulo hashing moves.
    let targets: Vec<String> = first.keys().cloned().collect();
    for (what, moved, from_n, to_n) in [("3→5", &grown, 3u64, 5u64), ("5→2", &shrunk, 5, 2)] {
        let share = moved.len() as f64 / f64::from(N);
        let ideal = from_n.abs_diff(to_n) as f64 / from_n.max(to_n) as f64;
        let modulo = modulo_moves(&targets, from_n, to_n);
        eprintln!(
            "{what}: rendezvous moved {share:.3} (ideal {ideal:.3}); modulo would move {modulo:.3}"
        );
        assert!(
            share <= ideal + 0.05,
            "{what}: moved {share}, ideal {ideal}"
        );
        assert!(share < modulo, "{what}: {share} vs modulo {modulo}");
    }
    let moved_any: std::collections::HashSet<&String> = grown.iter().chain(&shrunk).collect();

    // Every series of every target, at every tick between `from` and `to`.
    let mut series: BTreeMap<Labels, Vec<(i64, u64)>> = BTreeMap::new();
    for s in receiver.samples() {
        if s.label("job") == Some("bench") {
            series
                .entry(s.labels.clone())
                .or_default()
                .push((s.ts, s.value.to_bits()));
        }
    }
    assert!(
        series.len() >= usize::from(N) * 6,
        "{} series",
        series.len()
    );
    let (mut gaps, mut overlaps, mut stale) = (Vec::new(), 0usize, Vec::new());
    for (labels, samples) in &mut series {
        let instance = labels
            .iter()
            .find(|(n, _)| n == "instance")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if samples.iter().any(|(_, v)| *v == STALE_NAN) {
            stale.push(instance.clone());
        }
        let mut ts: Vec<i64> = samples
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| (from..=to).contains(t))
            .collect();
        ts.sort();
        let dups = ts.windows(2).filter(|w| w[0] == w[1]).count();
        ts.dedup();
        for w in ts.windows(2) {
            if w[1] - w[0] != INTERVAL_MS {
                gaps.push(format!("{instance}: {} → {}", w[0], w[1]));
            }
        }
        if dups > 0 {
            // Only a moved target is scraped twice, for at most the handover's few ticks.
            assert!(
                moved_any.contains(&instance),
                "{instance} was not moved but has {dups} duplicates"
            );
            assert!(dups <= 6, "{instance}: {dups} duplicate ticks");
            overlaps += 1;
        }
    }
    eprintln!(
        "{} series checked from {from} to {to}: {} gaps, {overlaps} with a handover overlap",
        series.len(),
        gaps.len()
    );
    assert!(gaps.is_empty(), "gaps: {:?}", &gaps[..gaps.len().min(20)]);
    assert!(
        stale.is_empty(),
        "staleness markers for {:?}",
        &stale[..stale.len().min(20)]
    );
}

#[test]
fn three_to_five_to_two_members_by_a_members_file() {
    let dir = TempDir::new("cluster-file");
    let list = dir.path().join("members.txt");
    resize(ListSource::File(list), &dir);
}

#[test]
fn three_to_five_to_two_members_by_dns() {
    let dir = TempDir::new("cluster-dns");
    let hosts = dir.path().join("members.hosts");
    std::fs::write(&hosts, "").unwrap();
    let records = [format!("--addn-hosts={}", hosts.display())];
    let Some((dnsmasq, resolv)) = common::start_dnsmasq(&dir, &records) else {
        return;
    };
    resize(
        ListSource::Dns {
            hosts,
            dnsmasq,
            resolv,
        },
        &dir,
    );
}

/// VictoriaMetrics' raw export of `selector`: series labels → (timestamps, values).
fn vm_export(vm: &str, selector: &str) -> BTreeMap<String, Vec<(i64, f64)>> {
    let path = format!("/api/v1/export?match[]={}", common::urlencode(selector));
    let (_, body) = http_get(vm, &path).expect("VictoriaMetrics export");
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("export line");
        let ts = v["timestamps"].as_array().cloned().unwrap_or_default();
        let vals = v["values"].as_array().cloned().unwrap_or_default();
        let samples = ts
            .iter()
            .zip(&vals)
            .map(|(t, x)| (t.as_i64().unwrap_or(0), x.as_f64().unwrap_or(f64::NAN)))
            .collect();
        out.insert(v["metric"].to_string(), samples);
    }
    out
}

/// An HA pair factor (R=2 over three members) into VictoriaMetrics with
/// `-dedup.minScrapeInterval` equal to the scrape interval: after deduplication every series
/// has one sample per interval, with no gap — while a member is killed with SIGKILL and
/// restarted (its WAL backlog arrives after the restart), and for a target that fails every
/// other scrape (of the two members scraping it at a tick, one fails).
#[test]
fn an_ha_pair_into_victoriametrics_keeps_one_sample_per_interval_through_a_kill() {
    let _turn = heavy();
    const N: u16 = 20;
    const INTERVAL_MS: i64 = 2000;
    let dir = TempDir::new("cluster-ha");
    let Some((_vm, vm)) = common::start_victoriametrics(&dir, &["-dedup.minScrapeInterval=2s"])
    else {
        return;
    };
    let (_targets, base) = bench_targets(N, 3, &dir);
    // The first request of each tick fails, the next succeeds: of the two members scraping
    // it at a tick, one fails.
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = served.clone();
    let last = std::sync::Mutex::new(0i64);
    let flaky = common::TestServer::start(move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = unix_ms();
        let mut last = last.lock().unwrap();
        let first_of_tick = now - *last > 1000;
        *last = now;
        if first_of_tick {
            (500, "text/plain", b"failing on purpose\n".to_vec())
        } else {
            (
                200,
                "text/plain; version=0.0.4",
                b"flaky_value 1\n".to_vec(),
            )
        }
    });
    // Member b's own receiver refuses everything for a while before the kill, so b has a
    // backlog in its WAL when it dies.
    let b_fails = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receivers: Vec<common::Receiver> = (0..3)
        .map(|i| {
            let fails = b_fails.clone();
            common::Receiver::start(move |_| {
                if i == 1 && fails.load(std::sync::atomic::Ordering::SeqCst) {
                    503
                } else {
                    200
                }
            })
        })
        .collect();
    let names = ["a", "b", "c"];
    let config = |i: usize| {
        let mut c = bench_config(
            base,
            N,
            "2s",
            &[format!("http://{vm}/api/v1/write"), receivers[i].url()],
        );
        c = c.replace(
            "remote_write:",
            &format!(
                "  - job_name: flaky\n    static_configs:\n      - targets: ['{}']\nremote_write:",
                flaky.addr
            ),
        );
        c
    };
    let storage: Vec<TempDir> = (0..3).map(|_| TempDir::new("cluster-ha-wal")).collect();
    let start = |i: usize| {
        Spate::start(
            &config(i),
            &[
                "--cores=1",
                "--cluster.members=a,b,c",
                &format!("--cluster.member={}", names[i]),
                "--cluster.replication-factor=2",
                &format!("--storage.agent.path={}", storage[i].path().display()),
            ],
        )
    };
    let mut members: Vec<Spate> = (0..3).map(start).collect();
    wait_for(
        Duration::from_secs(60),
        "every target on two members",
        || {
            let owners = owners_of(&refs(&names, &members, 0..3))?;
            (owners.len() == usize::from(N) && owners.values().all(|o| o.len() == 2)).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(INTERVAL_MS as u64));
    let from = unix_ms();
    std::thread::sleep(Duration::from_secs(6));
    b_fails.store(true, std::sync::atomic::Ordering::SeqCst);
    let failing_from = unix_ms();
    std::thread::sleep(Duration::from_secs(6));
    let killed_at = unix_ms();
    // SAFETY: SIGKILL to a child we started.
    unsafe { libc::kill(members[1].proc.pid() as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(6));
    b_fails.store(false, std::sync::atomic::Ordering::SeqCst);
    members[1] = start(1);
    let restarted_at = unix_ms();
    // b's backlog from before the kill arrives after the restart.
    wait_for(Duration::from_secs(60), "b's backlog", || {
        let samples = receivers[1].samples();
        let backlog = samples
            .iter()
            .filter(|s| s.label("job") == Some("bench"))
            .filter(|s| (failing_from + INTERVAL_MS..killed_at - INTERVAL_MS).contains(&s.ts))
            .count();
        (backlog > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(8));
    let to = unix_ms() - 2 * INTERVAL_MS;
    for m in &mut members {
        assert!(m.proc.terminate(Duration::from_secs(60)).success());
    }

    // Each bench sample arrives from exactly two members, but for the ticks b missed.
    let mut copies: BTreeMap<(Labels, i64), usize> = BTreeMap::new();
    for r in &receivers {
        for s in r.samples() {
            if s.label("job") == Some("bench") && (from..=to).contains(&s.ts) {
                *copies.entry((s.labels.clone(), s.ts)).or_default() += 1;
            }
        }
    }
    let outage = killed_at - INTERVAL_MS..restarted_at + 2 * INTERVAL_MS;
    let wrong: Vec<_> = copies
        .iter()
        .filter(|((_, ts), n)| **n != 2 && !outage.contains(ts))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "samples not from exactly two members: {wrong:?}"
    );

    // After VictoriaMetrics' deduplication: one sample per interval, no gap, no NaN.
    let series = wait_for(
        Duration::from_secs(60),
        "VictoriaMetrics to have it all",
        || {
            let all = vm_export(&vm, "{job=~\"bench|flaky\"}");
            let complete = all.values().all(|s| s.iter().any(|(t, _)| *t >= to));
            (all.len() >= usize::from(N) * 8 && complete).then_some(all)
        },
    );
    let mut problems = Vec::new();
    for (labels, samples) in &series {
        let ts: Vec<i64> = samples
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| (from..=to).contains(t))
            .collect();
        if ts.is_empty() {
            problems.push(format!("{labels}: no samples"));
        }
        // With b down, a target only b's partner scrapes fails that tick for good.
        let alone = labels.contains("flaky");
        for w in ts.windows(2) {
            if w[1] - w[0] != INTERVAL_MS && !(alone && outage.contains(&w[0])) {
                problems.push(format!("{labels}: {} → {}", w[0], w[1]));
            }
        }
        let nan = samples
            .iter()
            .filter(|(t, v)| (from..=to).contains(t) && v.is_nan())
            .count();
        if nan > 0 {
            problems.push(format!("{labels}: {nan} NaN"));
        }
    }
    assert!(
        served.load(std::sync::atomic::Ordering::SeqCst) > 10,
        "the flaky target was scraped"
    );
    assert!(
        problems.is_empty(),
        "after deduplication: {:?}",
        &problems[..problems.len().min(20)]
    );
}

/// Cortex/Mimir HA-tracker form: four members with R=2 form groups {spate-0, spate-1} and
/// {spate-2, spate-3}; each target is scraped by both replicas of one group, whose samples
/// carry `cluster=<name>-<group>` and `__replica__=<member>`.
#[test]
fn ha_tracker_groups_label_samples_with_their_group_and_replica() {
    const N: u16 = 16;
    let dir = TempDir::new("cluster-groups");
    let (_targets, base) = bench_targets(N, 2, &dir);
    let receiver = common::Receiver::start(|_| 200);
    let config = bench_config(base, N, "1s", &[receiver.url()]);
    let members: Vec<Spate> = (0..4)
        .map(|i| {
            Spate::start(
                &config,
                &[
                    "--cores=1",
                    "--cluster.members=spate-0,spate-1,spate-2,spate-3",
                    &format!("--cluster.member=spate-{i}"),
                    "--cluster.replication-factor=2",
                    "--cluster.ha-tracker",
                    "--cluster.name=eu",
                ],
            )
        })
        .collect();
    // instance → (cluster label, replicas seen)
    let seen = wait_for(Duration::from_secs(60), "samples from every target", || {
        let mut seen: BTreeMap<
            String,
            (
                std::collections::BTreeSet<String>,
                std::collections::BTreeSet<String>,
            ),
        > = BTreeMap::new();
        for s in receiver.samples() {
            if s.label("job") != Some("bench") {
                continue;
            }
            let e = seen.entry(s.label("instance")?.to_string()).or_default();
            e.0.insert(s.label("cluster")?.to_string());
            e.1.insert(s.label("__replica__")?.to_string());
        }
        (seen.len() == usize::from(N) && seen.values().all(|(_, r)| r.len() == 2)).then_some(seen)
    });
    let mut per_group = [0usize; 2];
    for (instance, (clusters, replicas)) in &seen {
        let clusters: Vec<&String> = clusters.iter().collect();
        assert_eq!(clusters.len(), 1, "{instance}: {clusters:?}");
        let group: usize = clusters[0].strip_prefix("eu-").unwrap().parse().unwrap();
        let want: std::collections::BTreeSet<String> = [
            format!("spate-{}", 2 * group),
            format!("spate-{}", 2 * group + 1),
        ]
        .into();
        assert_eq!(replicas, &want, "{instance}");
        per_group[group] += 1;
    }
    assert!(per_group.iter().all(|n| *n > 0), "{per_group:?}");
    let info = members[3]
        .metric("spate_cluster_member_info{cluster=\"eu\",group=\"1\",member=\"spate-3\"}");
    assert_eq!(info, 1.0);
    // A reload keeps the group's labels: the file has none, and that is no change.
    // SAFETY: SIGHUP to a child we started.
    unsafe { libc::kill(members[3].proc.pid() as i32, libc::SIGHUP) };
    wait_for(Duration::from_secs(30), "the reload", || {
        members[3]
            .proc
            .log_text()
            .contains("Completed loading of configuration file")
            .then_some(())
    });
    assert!(
        !members[3]
            .proc
            .log_text()
            .contains("take effect at the next restart")
    );
}
