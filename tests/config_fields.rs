//! No configuration field is silently ignored: every field spate parses is either used or
//! listed under "Accepted without effect" in docs/compatibility.md.
//!
//! Two levels are checked from the sources:
//! - each field of a YAML section (`section!` in `src/config/raw/mod.rs`, and the raw client
//!   settings) is read in the configuration's resolution (`.field` outside its declaration);
//! - each field of the resolved configuration (`Config` and the structs it holds) is read
//!   outside `src/config/`, by the code that acts on it.
//!
//! A field read somewhere under its name passes, so a field read by one user and ignored by
//! another is not caught here; the feature's own tests cover that.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The text of every `.rs` file under `dir`, except those `skip` says.
fn sources(dir: &Path, skip: impl Fn(&Path) -> bool) -> String {
    common::rust_files(dir)
        .iter()
        .filter(|f| !skip(f))
        .map(|f| std::fs::read_to_string(f).expect("read source"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` reads `.name` (not `.name_more`).
fn reads(text: &str, name: &str) -> bool {
    let needle = format!(".{name}");
    text.match_indices(&needle).any(|(i, _)| {
        let after = text[i + needle.len()..].chars().next();
        !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Field names in the braces after each `opener` (`pub struct X {` or `Name {` of a
/// `section!`), up to `closer`, the line that closes the body.
fn fields_of(text: &str, opener: &str, closer: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(opener) {
        let after = &rest[i + opener.len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = after.find('{') else { break };
        // Only a struct body right after the name (not a function or an impl).
        if after[name.len()..open].trim().is_empty() {
            let body = &after[open + 1..];
            let end = body.find(closer).unwrap_or(body.len());
            for line in body[..end].lines() {
                let line = line.trim().trim_start_matches("pub ");
                if line.starts_with("//") || line.starts_with('#') {
                    continue;
                }
                if let Some((field, _)) = line.split_once(':') {
                    let field = field.trim();
                    if !field.is_empty()
                        && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        out.push((name.clone(), field.to_string()));
                    }
                }
            }
        }
        rest = after;
    }
    out
}

/// The names listed (in backticks) in docs/compatibility.md's "Accepted without effect".
fn listed_without_effect() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/compatibility.md")).expect("compat doc");
    let start = doc
        .find("## Accepted without effect")
        .expect("docs/compatibility.md has an \"Accepted without effect\" section");
    let section = &doc[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut names = BTreeSet::new();
    for quoted in section.split('`').skip(1).step_by(2) {
        // `scrape_configs[].enable_http2` names the field enable_http2.
        let last = quoted.rsplit('.').next().unwrap_or(quoted);
        names.insert(last.trim_end_matches("[]").to_string());
    }
    names
}

#[test]
fn every_yaml_field_is_resolved_or_listed_as_without_effect() {
    let config = root().join("src/config");
    let raw = std::fs::read_to_string(config.join("raw/mod.rs")).expect("raw config");
    let client = std::fs::read_to_string(config.join("client.rs")).expect("client config");
    let mut fields = fields_of(&raw, "section! {\n    ", "\n    }");
    fields.extend(fields_of(&client, "struct ", "\n}"));
    fields.retain(|(s, _)| s.starts_with("Raw"));
    assert!(fields.len() > 60, "found {} YAML fields", fields.len());
    let resolution = sources(&config, |_| false);
    let listed = listed_without_effect();
    let ignored: Vec<String> = fields
        .iter()
        .filter(|(_, f)| !reads(&resolution, f) && !listed.contains(f))
        .map(|(s, f)| format!("{s}.{f}"))
        .collect();
    assert!(
        ignored.is_empty(),
        "parsed but never resolved, and not listed under \"Accepted without effect\" in docs/compatibility.md: {ignored:?}"
    );
}

#[test]
fn every_resolved_field_is_used_or_listed_as_without_effect() {
    let src = root().join("src");
    let mut text = String::new();
    for f in ["config/mod.rs", "config/client.rs"] {
        text.push_str(&std::fs::read_to_string(src.join(f)).expect("config source"));
    }
    let fields = fields_of(&text, "pub struct ", "\n}");
    assert!(fields.len() > 40, "found {} resolved fields", fields.len());
    // The resolution writes the fields; their users (the client settings' own methods
    // included) read them.
    let users = sources(&src, |p| {
        p == src.join("config/mod.rs") || p.starts_with(src.join("config/raw"))
    });
    let listed = listed_without_effect();
    let unused: Vec<String> = fields
        .iter()
        .filter(|(_, f)| !reads(&users, f) && !listed.contains(f))
        .map(|(s, f)| format!("{s}.{f}"))
        .collect();
    assert!(
        unused.is_empty(),
        "resolved but read by nothing outside src/config, and not listed under \"Accepted without effect\" in docs/compatibility.md: {unused:?}"
    );
}

#[test]
fn the_checker_reads_fields_and_accesses() {
    let text =
        "pub struct A {\n    pub one: u8,\n    /// doc\n    pub two_x: Option<u8>,\n}\nfn f() {}\n";
    assert_eq!(
        fields_of(text, "pub struct ", "\n}"),
        [
            ("A".to_string(), "one".to_string()),
            ("A".into(), "two_x".into())
        ]
    );
    assert!(reads("x.two_x + 1", "two_x"));
    assert!(!reads("x.two_xy", "two_x"));
    assert!(listed_without_effect().contains("enable_http2"));
}
