// spate's web UI: each page is filled in from the Prometheus-compatible API. Plain JavaScript,
// no build step; DOM nodes are made with h() so that no label value is ever parsed as HTML.
"use strict";

const P = document.body.dataset.prefix || "";
const PAGE = document.body.dataset.page;
// --web.enable-target-scrape-proxy: targets link to their response, fetched through spate.
const SCRAPE_PROXY = document.body.dataset.scrapeProxy === "1";
const content = document.getElementById("content");
const params = new URLSearchParams(location.search);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function api(path, options) {
  const r = await fetch(P + "/api/v1/" + path, options);
  const body = await r.json();
  if (body.status !== "success") throw new Error(body.error || ("HTTP " + r.status));
  return body.data;
}

function show(...nodes) {
  content.replaceChildren(...nodes);
}

function fail(e) {
  show(h("p", { class: "error" }, "Error: " + e.message));
}

function labelBadges(labels, diff) {
  return Object.keys(labels).sort().map((k) => {
    const cls = diff ? diff[k] || "" : "";
    return h("span", { class: "badge mono " + cls }, k + '="' + labels[k] + '"');
  });
}

function ago(iso) {
  const t = Date.parse(iso);
  if (!t || t < 0 || iso.startsWith("0001")) return "never";
  const s = (Date.now() - t) / 1000;
  if (s < 1) return "just now";
  if (s < 120) return s.toFixed(1) + "s ago";
  if (s < 7200) return (s / 60).toFixed(1) + "m ago";
  return (s / 3600).toFixed(1) + "h ago";
}

function seconds(x) {
  if (x < 0.001) return (x * 1e6).toFixed(0) + "µs";
  if (x < 1) return (x * 1000).toFixed(1) + "ms";
  return x.toFixed(2) + "s";
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}

function setParam(k, v) {
  if (v) params.set(k, v); else params.delete(k);
  const q = params.toString();
  history.replaceState(null, "", location.pathname + (q ? "?" + q : ""));
}

// Rows of a long list, a page at a time: 10,000 targets never become 10,000 rows at once.
const PAGE_ROWS = 100;
function pagedRows(tbody, items, row) {
  let shown = 0;
  const more = h("button", { class: "more" });
  const moreRow = h("tr", {}, h("td", { colspan: 20 }, more));
  function next() {
    const end = Math.min(items.length, shown + PAGE_ROWS);
    const frag = document.createDocumentFragment();
    for (; shown < end; shown++) frag.append(row(items[shown]));
    moreRow.remove();
    tbody.append(frag);
    if (shown < items.length) {
      more.textContent = "Show " + Math.min(PAGE_ROWS, items.length - shown) + " more of " + (items.length - shown);
      tbody.append(moreRow);
    }
  }
  more.addEventListener("click", next);
  next();
}

// A collapsible group of rows per scrape pool.
function poolBox(name, summary, collapsed, build) {
  const body = h("div", { class: "body" });
  let built = false;
  const box = h("section", { class: "pool" + (collapsed ? " collapsed" : ""), "data-pool": name });
  const ensure = () => { if (!built) { built = true; build(body); } };
  const head = h("div", { class: "head", onclick: () => {
    box.classList.toggle("collapsed");
    if (!box.classList.contains("collapsed")) ensure();
  } }, h("span", { class: "name" }, name), summary);
  box.append(head, body);
  if (!collapsed) ensure();
  return box;
}

async function readiness() {
  const el = document.getElementById("ready");
  try {
    const r = await fetch(P + "/-/ready");
    el.textContent = r.ok ? "ready" : (r.headers.get("X-Prometheus-Stopping") === "true" ? "stopping" : "starting");
  } catch (e) {
    el.textContent = "unreachable";
  }
}

// ---- /agent ----
async function agentPage() {
  const [build, targets, rw] = await Promise.all([
    api("status/buildinfo"), api("targets?state=active"), api("status/remote_write"),
  ]);
  const t = targets.activeTargets;
  const count = (s) => t.filter((x) => x.health === s).length;
  show(
    h("p", {}, "This spate instance runs in agent mode: it discovers and scrapes targets, keeps every sample in its write-ahead log and forwards them by Remote Write. Querying, alerting and rules are not part of an agent; their API endpoints answer 422."),
    h("div", { class: "cards" },
      card("Version", build.version), card("Targets up", count("up")), card("Targets down", count("down")),
      card("Targets unknown", count("unknown")), card("Remote-write endpoints", rw.queues.length),
      card("Samples appended", rw.samplesAppended.toLocaleString()), card("WAL size", bytes(rw.wal.sizeBytes))),
  );
}

function card(k, v) {
  return h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k));
}

// ---- /targets ----
async function targetsPage() {
  const search = h("input", { type: "search", placeholder: "Filter by endpoint or labels", value: params.get("search") || "" });
  const health = h("select", {}, ["all", "up", "down", "unknown"].map((s) => h("option", { value: s }, s === "all" ? "All health" : s)));
  health.value = params.get("health") || "all";
  const refresh = h("select", {}, [["0", "Refresh: off"], ["5", "every 5s"], ["15", "every 15s"], ["30", "every 30s"]].map(([v, l]) => h("option", { value: v }, l)));
  refresh.value = params.get("refresh") || "0";
  const expand = h("button", { onclick: () => document.querySelectorAll(".pool").forEach((b) => b.querySelector(".head").click()) }, "Collapse/expand all");
  const summary = h("span", { class: "muted", id: "summary" });
  const pools = h("div", { id: "pools" });
  show(h("div", { class: "controls" }, search, health, refresh, expand, summary), pools);
  let data = null;
  let timer = null;
  const collapsedNow = new Map();
  function render() {
    const q = search.value.trim().toLowerCase();
    const want = health.value;
    const groups = new Map();
    for (const t of data.activeTargets) {
      if (!groups.has(t.scrapePool)) groups.set(t.scrapePool, []);
      groups.get(t.scrapePool).push(t);
    }
    document.querySelectorAll(".pool").forEach((b) => collapsedNow.set(b.dataset.pool, b.classList.contains("collapsed")));
    const boxes = [];
    let shownTotal = 0;
    let i = 0;
    for (const [pool, all] of groups) {
      const list = all.filter((t) => (want === "all" || t.health === want) && (!q || matches(t, q)));
      shownTotal += list.length;
      const up = all.filter((t) => t.health === "up").length;
      const collapsed = collapsedNow.has(pool) ? collapsedNow.get(pool) : (groups.size > 20 && i > 0);
      i++;
      if (list.length === 0 && (q || want !== "all")) continue;
      boxes.push(poolBox(pool, h("span", { class: "badge " + (up === all.length ? "up" : "down") }, up + "/" + all.length + " up"), collapsed, (body) => {
        const tbody = h("tbody");
        body.append(h("table", { class: "targets" },
          h("thead", {}, h("tr", {}, ["Endpoint", "Labels", "Last scrape", "Duration", "Health", "Interval / timeout", "Error"].map((c) => h("th", {}, c)))),
          tbody));
        pagedRows(tbody, list, targetRow);
      }));
    }
    summary.textContent = shownTotal + " of " + data.activeTargets.length + " targets shown";
    pools.replaceChildren(...boxes);
  }
  function targetRow(t) {
    const steps = P + "/relabel?pool=" + encodeURIComponent(t.scrapePool) + "&labels=" + encodeURIComponent(JSON.stringify(t.discoveredLabels));
    return h("tr", { class: "target", "data-health": t.health },
      h("td", {}, h("a", { href: t.scrapeUrl, class: "mono" }, t.scrapeUrl), h("div", {}, h("a", { href: steps, class: "muted" }, "relabel steps"),
        SCRAPE_PROXY && [" · ", h("a", { href: responseUrl(t), class: "muted response", target: "_blank", rel: "noopener" }, "response")])),
      h("td", {}, labelBadges(t.labels)),
      h("td", {}, ago(t.lastScrape)),
      h("td", { class: "num" }, seconds(t.lastScrapeDuration)),
      h("td", {}, h("span", { class: "badge " + t.health }, t.health)),
      h("td", {}, t.scrapeInterval + " / " + t.scrapeTimeout),
      h("td", { class: "error mono" }, t.lastError));
  }
  async function load() {
    try {
      data = await api("targets?state=active");
      render();
    } catch (e) {
      summary.textContent = "Error: " + e.message;
    }
  }
  function schedule() {
    clearInterval(timer);
    const s = Number(refresh.value);
    if (s > 0) timer = setInterval(load, s * 1000);
  }
  search.addEventListener("input", () => { setParam("search", search.value); render(); });
  health.addEventListener("change", () => { setParam("health", health.value === "all" ? "" : health.value); render(); });
  refresh.addEventListener("change", () => { setParam("refresh", refresh.value === "0" ? "" : refresh.value); schedule(); });
  await load();
  schedule();
}

function responseUrl(t) {
  return P + "/api/v1/targets/scrape?scrapePool=" + encodeURIComponent(t.scrapePool) + "&scrapeUrl=" + encodeURIComponent(t.scrapeUrl);
}

function matches(t, q) {
  if (t.scrapeUrl.toLowerCase().includes(q)) return true;
  for (const [k, v] of Object.entries(t.labels)) {
    if ((k + '="' + v + '"').toLowerCase().includes(q)) return true;
  }
  return false;
}

// ---- /service-discovery ----
async function sdPage() {
  const data = await api("targets?state=any");
  const search = h("input", { type: "search", placeholder: "Filter by labels" });
  const groups = new Map();
  const group = (pool) => {
    if (!groups.has(pool)) groups.set(pool, { active: [], dropped: [] });
    return groups.get(pool);
  };
  for (const t of data.activeTargets) group(t.scrapePool).active.push(t);
  for (const t of data.droppedTargets) group(t.scrapePool).dropped.push(t);
  for (const pool of Object.keys(data.droppedTargetCounts || {})) group(pool);
  const pools = h("div");
  function render() {
    const q = search.value.trim().toLowerCase();
    const has = (labels) => !q || Object.entries(labels).some(([k, v]) => (k + '="' + v + '"').toLowerCase().includes(q));
    const boxes = [];
    let i = 0;
    for (const [pool, g] of groups) {
      const rows = g.active.filter((t) => has(t.discoveredLabels) || has(t.labels)).map((t) => ({ d: t.discoveredLabels, l: t.labels }))
        .concat(g.dropped.filter((t) => has(t.discoveredLabels)).map((t) => ({ d: t.discoveredLabels, l: null })));
      const droppedAll = (data.droppedTargetCounts || {})[pool] || g.dropped.length;
      const summary = h("span", { class: "muted" }, g.active.length + " active / " + droppedAll + " dropped" + (droppedAll > g.dropped.length ? " (" + g.dropped.length + " kept, see keep_dropped_targets)" : ""));
      boxes.push(poolBox(pool, summary, groups.size > 20 && i++ > 0, (body) => {
        const tbody = h("tbody");
        body.append(h("table", { class: "sd" }, h("thead", {}, h("tr", {}, h("th", {}, "Discovered labels"), h("th", {}, "Target labels"), h("th", {}, ""))), tbody));
        pagedRows(tbody, rows, (r) => {
          const stepsCell = h("td");
          const btn = h("button", { onclick: async () => {
            btn.disabled = true;
            try {
              const s = await api("targets/relabel_steps?scrapePool=" + encodeURIComponent(pool) + "&labels=" + encodeURIComponent(JSON.stringify(r.d)));
              stepsCell.append(stepsTable(r.d, s.steps));
            } catch (e) { stepsCell.append(h("p", { class: "error" }, e.message)); }
          } }, "Show relabel steps");
          stepsCell.append(btn);
          return h("tr", { class: r.l ? "active" : "dropped" },
            h("td", {}, labelBadges(r.d)),
            h("td", {}, r.l ? labelBadges(r.l) : h("span", { class: "badge down" }, "Dropped")),
            stepsCell);
        });
      }));
    }
    pools.replaceChildren(...boxes);
  }
  search.addEventListener("input", render);
  show(h("div", { class: "controls" }, search), pools);
  render();
}

// The effect of each rule, with what it added, removed or changed.
function stepsTable(input, steps) {
  const tbody = h("tbody");
  let before = input;
  steps.forEach((s, i) => {
    const diff = {};
    for (const k of Object.keys(s.output)) diff[k] = !(k in before) ? "added" : before[k] !== s.output[k] ? "changed" : "";
    const removed = s.keep ? Object.keys(before).filter((k) => !(k in s.output)) : [];
    tbody.append(h("tr", { class: "step" + (s.keep ? "" : " step-drop") },
      h("td", { class: "num" }, i + 1),
      h("td", {}, h("pre", {}, ruleText(s.rule))),
      h("td", {}, s.keep ? [labelBadges(s.output, diff), removed.map((k) => h("span", { class: "badge mono removed" }, k + '="' + before[k] + '"'))] : h("span", { class: "badge down" }, "dropped"))));
    if (s.keep) before = s.output;
  });
  const final = steps.length ? (steps[steps.length - 1].keep ? steps[steps.length - 1].output : null) : input;
  return h("div", { class: "steps" },
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Rule"), h("th", {}, "Labels after the rule"))),
      h("tbody", {}, h("tr", {}, h("td", {}, "0"), h("td", { class: "muted" }, "input"), h("td", {}, labelBadges(input)))), tbody),
    h("p", { class: "final" }, final ? ["Final labels: ", h("span", { class: "final-labels" }, labelBadges(final))] : h("strong", { class: "error final-dropped" }, "The target is dropped.")));
}

function ruleText(rule) {
  return Object.entries(rule).map(([k, v]) => k + ": " + (Array.isArray(v) ? "[" + v.join(", ") + "]" : JSON.stringify(v))).join("\n");
}

// ---- /relabel ----
async function relabelPage() {
  const pools = (await api("scrape_pools")).scrapePools;
  const pool = h("select", {}, pools.map((p) => h("option", { value: p }, p)));
  if (params.get("pool")) pool.value = params.get("pool");
  const labels = h("textarea", { id: "labels", placeholder: '{"__address__": "host:9100", "job": "node"}' }, params.get("labels") || "");
  const rules = h("textarea", { id: "rules", placeholder: "- source_labels: [__address__]\n  regex: '(.*):9100'\n  target_label: host\n  replacement: $1" }, params.get("rules") || "");
  const out = h("div", { id: "steps" });
  const mode = h("select", { id: "mode" }, h("option", { value: "pool" }, "Rules of a scrape pool"), h("option", { value: "free" }, "Rules written here"));
  mode.value = params.get("rules") ? "free" : "pool";
  const run = h("button", { id: "run", onclick: go }, "Show steps");
  const poolRow = h("label", {}, "Scrape pool ", pool);
  const rulesBox = h("div", {}, h("h2", {}, "Relabel rules (YAML list, as relabel_configs)"), rules);
  function sync() {
    poolRow.style.display = mode.value === "pool" ? "" : "none";
    rulesBox.style.display = mode.value === "free" ? "" : "none";
  }
  mode.addEventListener("change", sync);
  sync();
  async function go() {
    let input;
    try {
      input = parseLabels(labels.value);
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, "Labels: " + e.message));
      return;
    }
    try {
      let s;
      if (mode.value === "pool") {
        s = await api("targets/relabel_steps?scrapePool=" + encodeURIComponent(pool.value) + "&labels=" + encodeURIComponent(JSON.stringify(input)));
      } else {
        const form = new URLSearchParams({ labels: JSON.stringify(input), rules: rules.value });
        s = await api("relabel_steps", { method: "POST", body: form });
      }
      out.replaceChildren(stepsTable(input, s.steps));
    } catch (e) {
      out.replaceChildren(h("p", { class: "error" }, e.message));
    }
  }
  show(
    h("p", { class: "muted" }, "See what each relabel rule does to a label set, computed by spate's own relabel engine: pick a scrape pool to use its relabel_configs, or write rules here. Labels are a JSON object or a Prometheus label set such as {job=\"node\", __address__=\"host:9100\"}."),
    h("div", { class: "controls" }, mode, poolRow, run),
    h("div", { class: "two" }, h("div", {}, h("h2", {}, "Labels before relabeling"), labels), rulesBox),
    out);
  if (labels.value) go();
}

// A JSON object, or `{a="b", c="d"}` / `a="b", c="d"`.
function parseLabels(text) {
  const t = text.trim();
  if (!t) return {};
  if (t.startsWith("{") && t.includes('":')) return JSON.parse(t);
  const out = {};
  const body = t.replace(/^\{/, "").replace(/\}$/, "");
  const re = /\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/gy;
  let m;
  let end = 0;
  while ((m = re.exec(body)) !== null) {
    out[m[1]] = JSON.parse('"' + m[2] + '"');
    end = re.lastIndex;
  }
  if (body.slice(end).trim()) throw new Error("cannot read labels near: " + body.slice(end, end + 30));
  return out;
}

// ---- /status ----
async function statusPage() {
  const [build, rt] = await Promise.all([api("status/buildinfo"), api("status/runtimeinfo")]);
  const rows = (o, skip) => Object.entries(o).filter(([k]) => !skip.includes(k)).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, typeof v === "object" ? JSON.stringify(v) : String(v))));
  const cores = h("table", {}, h("thead", {}, h("tr", {}, ["Core", "I/O driver", "Targets", "WAL size"].map((c) => h("th", {}, c)))),
    h("tbody", {}, rt.cores.map((c) => h("tr", {}, h("td", {}, c.id), h("td", {}, c.driver), h("td", { class: "num" }, c.targets), h("td", { class: "num" }, bytes(c.walSizeBytes))))));
  show(
    h("h2", {}, "Runtime information"), h("table", { id: "runtime" }, h("tbody", {}, rows(rt, ["cores"]))),
    h("h2", {}, "Data-plane cores"), cores,
    h("h2", {}, "Build information"), h("table", { id: "build" }, h("tbody", {}, rows(build, []))));
}

// ---- /cluster ----
async function clusterPage() {
  const c = await api("status/cluster");
  if (!c.enabled) {
    show(h("p", { id: "cluster-off" }, "This agent is not part of a cluster: it scrapes every target it discovers. See the --cluster.* flags."));
    return;
  }
  const total = c.members.reduce((n, m) => n + m.targets, 0) || 1;
  const facts = [["Cluster", c.name], ["This member", c.member], ["Listed", c.listed ? "yes" : "no — it scrapes nothing"],
    ["Replication factor", c.replicationFactor], ["HA-tracker groups", c.haTracker ? "group " + c.group : "off"],
    ["Targets in shared jobs", c.sharedTargets], ["Key labels", c.keyLabels.join(", ") || "(job and URL)"],
    ["Jobs every member scrapes", c.unshardedJobs.join(", ") || "(none)"]];
  const members = h("table", { id: "members" }, h("thead", {}, h("tr", {}, ["Member", "Targets owned", "Share"].map((t) => h("th", {}, t)))),
    h("tbody", {}, c.members.map((m) => h("tr", { class: m.self ? "self" : "" }, h("td", { class: "mono" }, m.name + (m.self ? " (this member)" : "")),
      h("td", { class: "num" }, m.targets), h("td", { class: "num" }, (100 * m.targets / total).toFixed(1) + "%")))));
  const job = h("input", { id: "owner-job", placeholder: "job", value: params.get("job") || "" });
  const url = h("input", { id: "owner-url", placeholder: "scrape URL, e.g. http://10.0.0.1:9100/metrics", size: 50, value: params.get("url") || "" });
  const answer = h("span", { id: "owner-answer", class: "mono" });
  async function lookup() {
    setParam("job", job.value); setParam("url", url.value);
    if (!job.value || !url.value) return;
    try {
      const r = await api("status/cluster?job=" + encodeURIComponent(job.value) + "&url=" + encodeURIComponent(url.value));
      answer.textContent = "owned by " + r.target.owners.join(", ");
    } catch (e) { answer.textContent = "Error: " + e.message; }
  }
  show(h("h2", {}, "This member"), h("table", { id: "cluster" }, h("tbody", {}, facts.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, String(v)))))),
    h("h2", {}, "Members"), members,
    h("h2", {}, "Who owns a target"), h("div", { class: "controls" }, job, url, h("button", { id: "owner-go", onclick: lookup }, "Look up"), answer));
  lookup();
}

// ---- /flags ----
async function flagsPage() {
  const flags = await api("status/flags");
  const search = h("input", { type: "search", placeholder: "Filter flags" });
  const tbody = h("tbody");
  function render() {
    const q = search.value.toLowerCase();
    tbody.replaceChildren(...Object.keys(flags).sort().filter((k) => !q || k.includes(q) || flags[k].toLowerCase().includes(q))
      .map((k) => h("tr", {}, h("td", { class: "mono" }, "--" + k), h("td", { class: "mono" }, flags[k]))));
  }
  search.addEventListener("input", render);
  show(h("div", { class: "controls" }, search), h("table", { id: "flags" }, h("thead", {}, h("tr", {}, h("th", {}, "Flag"), h("th", {}, "Value"))), tbody));
  render();
}

// ---- /config ----
async function configPage() {
  const cfg = await api("status/config");
  const pre = h("pre", { id: "config" }, cfg.yaml);
  const note = h("span", { class: "muted" });
  const copy = h("button", { id: "copy", onclick: async () => {
    try {
      await navigator.clipboard.writeText(cfg.yaml);
      note.textContent = "Copied.";
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(pre);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      note.textContent = "Selected: press Ctrl+C to copy.";
    }
  } }, "Copy to clipboard");
  show(h("div", { class: "controls" }, copy, note), pre);
}

// ---- /remote-write ----
const HISTORY = 180;
async function remoteWritePage() {
  const every = 2000;
  const area = h("div", { id: "queues" });
  const walBox = h("div", { id: "wal" });
  show(h("p", { class: "muted" }, "Live, every 2 s, from /api/v1/status/remote_write. Rates are the change between two polls."), walBox, area);
  const series = new Map(); // name+url -> {box, charts, hist}
  let prev = null;
  let prevAt = 0;
  const walHist = { t: [], size: [] };
  let walChart = null;
  async function poll() {
    let d;
    try {
      d = await api("status/remote_write");
    } catch (e) {
      walBox.replaceChildren(h("p", { class: "error" }, e.message));
      return;
    }
    const now = Date.now() / 1000;
    const dt = prev ? Math.max(0.001, now - prevAt) : 0;
    push(walHist.t, now); push(walHist.size, d.wal.sizeBytes);
    if (!walChart) {
      walBox.replaceChildren(h("h2", {}, "Write-ahead log"), h("div", { class: "cards", id: "wal-cards" }), h("div", { class: "charts" }, h("div", { class: "chart" }, h("h3", {}, "WAL size (bytes)"), walChart = chartIn([walHist.t, walHist.size], ["size"]))));
    }
    walChart.plot.setData([walHist.t, walHist.size]);
    document.getElementById("wal-cards").replaceChildren(card("Size", bytes(d.wal.sizeBytes)), card("Segments created", d.wal.segmentsCreated), card("Segments deleted", d.wal.segmentsDeleted), card("Samples appended", d.samplesAppended.toLocaleString()));
    if (d.queues.length === 0) area.replaceChildren(h("p", {}, "No remote_write endpoints are configured."));
    const prevKeep = new Map();
    for (const q of d.queues) {
      const key = q.name + " " + q.url;
      let s = series.get(key);
      if (!s) {
        s = { hist: { t: [], sent: [], failed: [], retried: [], lanes: [], desired: [], backlog: [], delay: [], pending: [] } };
        s.cards = h("div", { class: "cards" });
        const charts = h("div", { class: "charts" });
        s.box = h("section", { class: "queue", "data-name": q.name }, h("h2", {}, q.name + " ", h("span", { class: "muted mono" }, q.url)), s.cards, charts);
        area.append(s.box);
        const c = (title, cols, names) => { const el = h("div", { class: "chart" }, h("h3", {}, title)); charts.append(el); const ch = chartIn(cols(s.hist), names); el.append(ch); return [ch, cols]; };
        s.charts = [
          c("Samples sent per second", (x) => [x.t, x.sent], ["sent/s"]),
          c("Failures and retries per second", (x) => [x.t, x.failed, x.retried], ["failed/s", "retried/s"]),
          c("Lanes (shards) in use", (x) => [x.t, x.lanes, x.desired], ["current", "desired"]),
          c("Backlog (WAL bytes behind)", (x) => [x.t, x.backlog], ["backlog"]),
          c("Highest sent timestamp lag (s)", (x) => [x.t, x.delay], ["lag"]),
          c("Samples pending in memory", (x) => [x.t, x.pending], ["pending"]),
        ];
        series.set(key, s);
      }
      const p = prev && prev.get(key);
      prevKeep.set(key, q);
      if (!p) continue; // the first poll is the baseline rates are measured from
      const rate = (f) => (p ? Math.max(0, (f(q) - f(p)) / dt) : 0);
      const x = s.hist;
      push(x.t, now); push(x.sent, rate((v) => v.sent.samples)); push(x.failed, rate((v) => v.failed.samples));
      push(x.retried, rate((v) => v.retried.samples)); push(x.lanes, q.shards.current); push(x.desired, q.shards.desired);
      push(x.backlog, q.backlogBytes); push(x.delay, q.delaySeconds); push(x.pending, q.pending.samples);
      for (const [ch, cols] of s.charts) ch.plot.setData(cols(x));
      const healthy = rate((v) => v.failed.samples) === 0 && q.delaySeconds < 120;
      s.cards.replaceChildren(
        card("Health", h("span", { class: "badge " + (healthy ? "up" : "down") }, healthy ? "healthy" : "degraded")),
        card("Samples sent", q.sent.samples.toLocaleString()), card("Failed", q.failed.samples.toLocaleString()),
        card("Retried", q.retried.samples.toLocaleString()), card("Lanes", q.shards.current + " (" + q.shards.min + "–" + q.shards.max + ")"),
        card("Backlog", bytes(q.backlogBytes)), card("Lag", q.delaySeconds.toFixed(1) + "s"), card("Bytes sent", bytes(q.bytesSent)));
    }
    prev = prevKeep;
    prevAt = now;
  }
  await poll();
  setInterval(poll, every);
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > HISTORY) arr.shift();
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
function chartIn(data, names) {
  const el = h("div", { class: "plot" });
  const opts = {
    width: 420, height: 180,
    series: [{}].concat(names.map((n, i) => ({ label: n, stroke: COLORS[i % COLORS.length], width: 1.5 }))),
    axes: [{}, { size: 60 }],
    scales: { x: { time: true } },
    legend: { show: true },
  };
  el.plot = new uPlot(opts, data, el);
  return el;
}

const PAGES = {
  "/agent": agentPage, "/targets": targetsPage, "/service-discovery": sdPage, "/relabel": relabelPage,
  "/status": statusPage, "/flags": flagsPage, "/config": configPage, "/remote-write": remoteWritePage,
  "/cluster": clusterPage,
};

readiness();
setInterval(readiness, 10000);
(PAGES[PAGE] || (async () => show("Unknown page")))().catch(fail);
