//! The web UI: one small HTML shell per page, filled in by `assets/app.js` from the API, and
//! the static assets, all compiled into the binary (nothing is read from disk, nothing fetched
//! from the internet).
//!
//! The pages Prometheus agent has keep their paths (`/agent`, `/targets`, `/service-discovery`,
//! `/status`, `/flags`, `/config`); spate adds `/remote-write`, `/relabel` and `/cluster`.

use super::{Reply, State};

/// Pages by path: (path, navigation title, needs the chart library).
const PAGES: &[(&str, &str, bool)] = &[
    ("/agent", "Agent", false),
    ("/targets", "Targets", false),
    ("/service-discovery", "Service discovery", false),
    ("/remote-write", "Remote write", true),
    ("/relabel", "Relabel debugger", false),
    ("/cluster", "Cluster", false),
    ("/status", "Status", false),
    ("/flags", "Flags", false),
    ("/config", "Configuration", false),
];

/// Static assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "application/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "application/javascript; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.min.css"),
    ),
    (
        "uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("assets/vendor/uPlot.LICENSE"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

pub(super) fn handle(path: &str, state: &State) -> Reply {
    if let Some(name) = path.strip_prefix("/assets/") {
        return match ASSETS.iter().find(|(n, _, _)| *n == name) {
            Some((_, kind, bytes)) => Reply::new(200, kind, bytes.to_vec()).with(
                hyper::header::CACHE_CONTROL,
                // Assets change only with the binary: an hour, then revalidated by the page.
                "public, max-age=3600",
            ),
            None => Reply::text(404, "404 page not found\n"),
        };
    }
    if path == "/favicon.ico" || path == "/favicon.svg" {
        return handle("/assets/favicon.svg", state);
    }
    match PAGES.iter().find(|(p, _, _)| *p == path) {
        Some(&(page, name, charts)) => Reply::new(
            200,
            "text/html; charset=utf-8",
            shell(page, name, charts, state),
        ),
        None => Reply::text(404, "404 page not found\n"),
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page's HTML: navigation, an empty main element, and the scripts that fill it.
fn shell(page: &str, name: &str, charts: bool, state: &State) -> String {
    let p = escape(&state.link_prefix);
    let title = escape(&state.opts.page_title);
    let mut nav = String::new();
    for (path, label, _) in PAGES {
        let current = if *path == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        nav.push_str(&format!("<a href=\"{p}{path}\"{current}>{label}</a>"));
    }
    let proxy = u8::from(state.opts.target_scrape_proxy);
    let chart_head = if charts {
        format!("<link rel=\"stylesheet\" href=\"{p}/assets/uPlot.min.css\">")
    } else {
        String::new()
    };
    let chart_script = if charts {
        format!("<script src=\"{p}/assets/uPlot.iife.min.js\"></script>")
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{name} · {title}</title>\
<link rel=\"icon\" href=\"{p}/assets/favicon.svg\" type=\"image/svg+xml\">\
<link rel=\"stylesheet\" href=\"{p}/assets/style.css\">{chart_head}</head>\
<body data-page=\"{page}\" data-prefix=\"{p}\" data-scrape-proxy=\"{proxy}\">\
<header><a class=\"brand\" href=\"{p}/agent\">spate</a><nav>{nav}</nav>\
<span id=\"ready\" class=\"badge\"></span></header>\
<main id=\"main\"><h1>{name}</h1><div id=\"content\">Loading…</div></main>\
{chart_script}<script src=\"{p}/assets/app.js\"></script></body></html>\n"
    )
}
