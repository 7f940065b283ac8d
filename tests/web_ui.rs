//! The web UI in a real browser (Debian's headless Chromium): every page renders without
//! console errors and shows what the API says — real targets (node_exporter and a failing one)
//! with their health and error, filters, discovered and relabeled labels, a redacted
//! configuration, live remote-write charts, and a relabel debugger that agrees with the labels
//! spate's engine gave the target. Screenshots go to `target/ui-screenshots/`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::browser::Browser;
use common::{Receiver, Spate, TempDir, http_get, start_node_exporter, wait_for};
use serde_json::Value;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots")
}

/// A rule set with every relabel action, under which the target survives.
const EVERY_ACTION: &str = r#"
      - source_labels: [__address__]
        regex: '(.*):(\d+)'
        target_label: port
        replacement: '$2'
      - source_labels: [env]
        target_label: env_lower
        action: lowercase
      - source_labels: [team]
        target_label: team_upper
        action: uppercase
      - source_labels: [__address__]
        modulus: 8
        target_label: __tmp_shard
        action: hashmod
      - source_labels: [job]
        regex: relabel
        action: keep
      - source_labels: [env]
        regex: dev
        action: drop
      - source_labels: [team]
        target_label: team
        action: keepequal
      - source_labels: [env]
        target_label: team
        action: dropequal
      - regex: '__tmp_(.*)'
        replacement: 'x_$1'
        action: labelmap
      - regex: 'team'
        action: labeldrop
      - regex: '__.*|job|env|env_lower|team_upper|port|x_shard'
        action: labelkeep
"#;

#[test]
fn every_page_renders_in_chromium_and_shows_the_agent_state() {
    let dir = TempDir::new("web-ui");
    let Some(node) = start_node_exporter(&dir) else {
        return;
    };
    let Some(browser) = Browser::start() else {
        return;
    };
    let receiver = Receiver::start(|_| 200);
    let sd_file = dir.path().join("sd.json");
    std::fs::write(
        &sd_file,
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"zone": "eu-1"}}}}]"#,
            node.addr
        ),
    )
    .unwrap();
    let config = format!(
        r#"
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ['{node}']}}]
  - job_name: failing
    static_configs: [{{targets: ['127.0.0.1:9']}}]
  - job_name: files
    file_sd_configs: [{{files: ['{sd}']}}]
    relabel_configs:
      - source_labels: [__meta_filepath]
        regex: '.*/(.*)'
        target_label: sd_file
  - job_name: relabel
    static_configs: [{{targets: ['{node}'], labels: {{env: Prod, team: core}}}}]
    relabel_configs:{EVERY_ACTION}
remote_write:
  - url: {url}
    basic_auth: {{username: spate, password: very-secret-password}}
"#,
        node = node.addr,
        sd = sd_file.display(),
        url = receiver.url(),
    );
    let spate = Spate::start(&config, &["--web.enable-target-scrape-proxy"]);
    let base = format!("http://{}", spate.web);
    let shots = screenshots();
    let visit = |page: &str, ready: &str| -> Value {
        browser.goto(&format!("{base}{page}"));
        let v = browser.wait(&format!("{page} to render"), ready);
        let errors = browser.console_errors();
        assert!(errors.is_empty(), "{page}: console errors: {errors:?}");
        let name = match page.trim_start_matches('/').split('?').next() {
            Some("") | None => "agent",
            Some(n) => n,
        };
        browser.screenshot(&shots.join(format!("{name}.png")));
        v
    };

    // `/` leads to the agent page.
    visit(
        "/",
        "return location.pathname === '/agent' && document.querySelector('.cards')",
    );

    // Targets: node_exporter up, the failing one down with its error.
    wait_for(Duration::from_secs(60), "both targets scraped", || {
        let (_, body) = http_get(&spate.web, "/api/v1/targets")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["data"]["activeTargets"]
            .as_array()?
            .iter()
            .all(|t| t["health"] != "unknown")
            .then_some(())
    });
    visit(
        "/targets",
        "return document.querySelectorAll('tr.target').length >= 4",
    );
    let rows = browser.eval(
        "return [...document.querySelectorAll('.pool')].map(p => ({pool: p.dataset.pool, \
         rows: [...p.querySelectorAll('tr.target')].map(r => ({health: r.dataset.health, text: r.innerText}))}))",
    );
    let pool = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool"] == name)
            .unwrap_or_else(|| panic!("no pool {name}: {rows}"))["rows"]
            .clone()
    };
    assert_eq!(pool("node")[0]["health"], "up", "{rows}");
    assert!(
        pool("node")[0]["text"]
            .as_str()
            .unwrap()
            .contains(&node.addr)
    );
    assert_eq!(pool("failing")[0]["health"], "down", "{rows}");
    let failing = pool("failing")[0]["text"].as_str().unwrap().to_string();
    assert!(
        failing.contains("connect") || failing.contains("refused"),
        "the failing target shows its error: {failing}"
    );
    // Filtering: by health, then by free text over labels.
    browser.eval(
        "const s = document.querySelector('select'); s.value = 'down'; s.dispatchEvent(new Event('change')); return true",
    );
    let shown = browser.wait(
        "the health filter",
        "const r = [...document.querySelectorAll('tr.target')]; return r.length === 1 && r.map(x => x.dataset.health)",
    );
    assert_eq!(shown, serde_json::json!(["down"]));
    browser.eval(
        "const s = document.querySelector('select'); s.value = 'all'; s.dispatchEvent(new Event('change')); \
         const i = document.querySelector('input[type=search]'); i.value = 'job=\"files\"'; i.dispatchEvent(new Event('input')); return true",
    );
    let shown = browser.wait(
        "the text filter",
        "const p = [...document.querySelectorAll('.pool')]; return p.length === 1 && p[0].dataset.pool",
    );
    assert_eq!(shown, "files");
    assert!(
        browser
            .eval("return location.search")
            .as_str()
            .unwrap()
            .contains("search="),
        "the filter is kept in the URL"
    );
    // With --web.enable-target-scrape-proxy a target links to its response, fetched by spate.
    browser.goto(&format!("{base}/targets"));
    let link = browser.wait(
        "the response link",
        "const a = document.querySelector('.pool[data-pool=node] a.response'); return a && a.href",
    );
    browser.goto(link.as_str().unwrap());
    browser.wait(
        "node_exporter's response through spate",
        "return document.body && document.body.innerText.includes('node_exporter_build_info')",
    );

    // Service discovery: the file_sd target's discovered labels beside its relabeled ones.
    visit(
        "/service-discovery",
        "return document.querySelector('.pool[data-pool=files] tr.active')",
    );
    let sd = browser.eval(
        "const r = document.querySelector('.pool[data-pool=files] tr.active'); return [r.cells[0].innerText, r.cells[1].innerText]",
    );
    let (discovered, relabeled) = (sd[0].as_str().unwrap(), sd[1].as_str().unwrap());
    assert!(
        discovered.contains("__meta_filepath=") && discovered.contains("zone=\"eu-1\""),
        "{discovered}"
    );
    assert!(
        relabeled.contains("sd_file=\"sd.json\"") && !relabeled.contains("__meta_filepath"),
        "{relabeled}"
    );

    // Configuration: secrets redacted.
    let yaml = visit(
        "/config",
        "const p = document.querySelector('#config'); return p && p.innerText",
    );
    let yaml = yaml.as_str().unwrap();
    assert!(yaml.contains("<secret>"), "{yaml}");
    assert!(!yaml.contains("very-secret-password"), "{yaml}");

    // Status and flags.
    let status = visit(
        "/status",
        "const t = document.querySelector('#runtime'); return t && t.innerText",
    );
    assert!(status.as_str().unwrap().contains("reloadConfigSuccess"));
    let flags = visit(
        "/flags",
        "const t = document.querySelector('#flags'); return t && t.innerText.includes('--web.listen-address') && t.innerText",
    );
    assert!(flags.as_str().unwrap().contains(&spate.web));

    // Remote write: the charts get points as the page polls.
    visit(
        "/remote-write",
        "return [...document.querySelectorAll('.queue .plot')].length >= 4",
    );
    let points = browser.wait(
        "the remote-write charts to get data points",
        "const p = document.querySelector('.queue .plot').plot; \
         return p.data[0].length >= 3 && p.data[1].some(v => v > 0) && p.data[0].length",
    );
    assert!(points.as_u64().unwrap() >= 3);
    browser.screenshot(&shots.join("remote-write.png"));

    // The relabel debugger, for the pool with every action: the final labels are the labels
    // spate gave the target.
    let (_, body) = http_get(&spate.web, "/api/v1/targets?scrapePool=relabel").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let target = &v["data"]["activeTargets"][0];
    let discovered = target["discoveredLabels"].to_string();
    // The debugger's final labels, sorted, without the `__` ones a scrape drops.
    let final_shown = |browser: &Browser| -> Vec<String> {
        let shown = browser.wait(
            "the relabel steps",
            "const f = document.querySelector('.final-labels'); return f && [...f.querySelectorAll('.badge')].map(b => b.innerText)",
        );
        let mut labels: Vec<String> = shown
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_string())
            .filter(|b| !b.starts_with("__"))
            .collect();
        labels.sort();
        labels
    };
    visit(
        &format!(
            "/relabel?pool=relabel&labels={}",
            common::urlencode(&discovered)
        ),
        "return document.querySelectorAll('tr.step').length === 11",
    );
    let got = final_shown(&browser);
    let mut want: Vec<String> = target["labels"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "instance")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    want.sort();
    assert_eq!(got, want, "the debugger's final labels are the target's");
    assert!(
        want.iter().any(|l| l.starts_with("x_shard="))
            && want.iter().any(|l| l == "env_lower=\"prod\"")
            && want.iter().any(|l| l == "team_upper=\"CORE\""),
        "{want:?}"
    );
    // The same rules written in the free-form debugger give the same labels.
    let rules = EVERY_ACTION
        .lines()
        .map(|l| l.strip_prefix("      ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let script = format!(
        "document.querySelector('#mode').value = 'free'; document.querySelector('#mode').dispatchEvent(new Event('change')); \
         document.querySelector('#rules').value = {rules}; document.querySelector('.final-labels').remove(); \
         document.querySelector('#run').click(); return true",
        rules = serde_json::to_string(&rules).unwrap()
    );
    browser.eval(&script);
    let free = final_shown(&browser);
    assert_eq!(free, want, "free-form rules give the same final labels");
    assert!(browser.console_errors().is_empty());
    browser.screenshot(&shots.join("relabel.png"));
}

/// 10,000 targets in one pool: the targets and service-discovery pages show the first 100 rows
/// and a button for the next ones instead of building every row, and filtering still works.
#[test]
fn ten_thousand_targets_render_a_page_at_a_time() {
    let Some(browser) = Browser::start() else {
        return;
    };
    // Closed loopback ports, scraped once an hour: the targets exist, their scrapes barely.
    let targets: Vec<String> = (0..10_000)
        .map(|i| format!("'127.0.0.2:{}'", 10_000 + i))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1h\nscrape_configs:\n  - job_name: many\n    static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    );
    let spate = Spate::start(&config, &[]);
    let base = format!("http://{}", spate.web);
    browser.goto(&format!("{base}/targets"));
    let summary = browser.wait(
        "the targets page with 10,000 targets",
        "const s = document.querySelector('#summary'); return s && s.innerText.includes('10000') && s.innerText",
    );
    assert_eq!(summary, "10000 of 10000 targets shown");
    let rows = browser.eval("return document.querySelectorAll('tr.target').length");
    assert_eq!(rows, 100, "one page of rows, not all of them");
    let more = browser.eval("return document.querySelector('button.more').innerText");
    assert_eq!(more, "Show 100 more of 9900");
    browser.eval("document.querySelector('button.more').click(); return true");
    let rows = browser.eval("return document.querySelectorAll('tr.target').length");
    assert_eq!(rows, 200);
    // Filtering over all 10,000 finds the one asked for.
    browser.eval(
        "const i = document.querySelector('input[type=search]'); i.value = '127.0.0.2:19999'; i.dispatchEvent(new Event('input')); return true",
    );
    let shown = browser.wait(
        "the filtered target",
        "const r = document.querySelectorAll('tr.target'); return r.length === 1 && r[0].innerText",
    );
    assert!(shown.as_str().unwrap().contains("127.0.0.2:19999"));
    browser.goto(&format!("{base}/service-discovery"));
    browser.wait(
        "the service-discovery page with 10,000 targets",
        "return document.querySelectorAll('.pool[data-pool=many] tr.active').length === 100",
    );
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.screenshot(&screenshots().join("targets-10000.png"));
}

/// The cluster page: this member, the member list with each one's share of the targets, and
/// who owns a target looked up by job and URL; outside a cluster it says so.
#[test]
fn the_cluster_page_shows_members_shares_and_owners() {
    let Some(browser) = Browser::start() else {
        return;
    };
    let targets: Vec<String> = (1..=40).map(|i| format!("'10.0.0.{i}:9100'")).collect();
    let config = format!(
        "scrape_configs:\n  - job_name: node\n    static_configs: [{{targets: [{}]}}]\n",
        targets.join(", ")
    );
    let spate = Spate::start(
        &config,
        &["--cluster.members=m0,m1,m2", "--cluster.member=m1"],
    );
    let base = format!("http://{}", spate.web);
    browser.goto(&format!(
        "{base}/cluster?job=node&url={}",
        common::urlencode("http://10.0.0.7:9100/metrics")
    ));
    let rows = browser.wait(
        "the member list",
        "const r = [...document.querySelectorAll('#members tbody tr')].map(tr => [...tr.cells].map(c => c.textContent)); \
         return r.length === 3 && document.querySelector('#owner-answer').textContent ? r : null",
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows[1][0], "m1 (this member)");
    let shown: u64 = rows.iter().map(|r| r[1].parse::<u64>().unwrap()).sum();
    assert_eq!(shown, 40, "{rows:?}");
    // The page's answer is the API's, and the API's is what the members scrape.
    let owner =
        common::cluster_owners(&spate.web, "node", "http://10.0.0.7:9100/metrics").remove(0);
    let answer = browser.eval("return document.querySelector('#owner-answer').textContent");
    assert_eq!(answer, Value::String(format!("owned by {owner}")));
    let (_, body) = http_get(&spate.web, "/api/v1/targets").unwrap();
    let active: Value = serde_json::from_str(&body).unwrap();
    let mine = active["data"]["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["labels"]["instance"] == "10.0.0.7:9100");
    assert_eq!(mine, owner == "m1");
    assert_eq!(
        rows[1][1].parse::<usize>().unwrap(),
        active["data"]["activeTargets"].as_array().unwrap().len()
    );
    assert!(browser.console_errors().is_empty());
    browser.screenshot(&screenshots().join("cluster.png"));
    // Outside a cluster the page says so.
    let alone = Spate::start("", &[]);
    browser.goto(&format!("http://{}/cluster", alone.web));
    browser.wait("the note", "return document.querySelector('#cluster-off')");
}
