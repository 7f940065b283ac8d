//! The configuration as `/api/v1/status/config` shows it: the YAML as loaded, re-emitted with
//! every secret replaced by `<secret>`, as Prometheus shows secrets.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Keys whose values are secrets in Prometheus' configuration.
const SECRET_KEYS: &[&str] = &[
    "password",
    "credentials",
    "client_secret",
    "bearer_token",
    "key",
    "secret_key",
    "secrets",
];

/// A YAML document as a tree.
#[derive(Debug, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = a.next_element()? {
                    out.push(n);
                }
                Ok(Node::Seq(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<Node, Node>()? {
                    let key = match k {
                        Node::Str(s) => s,
                        other => scalar(&other),
                    };
                    out.push((key, v));
                }
                Ok(Node::Map(out))
            }
        }
        d.deserialize_any(V)
    }
}

fn scalar(n: &Node) -> String {
    match n {
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Str(s) => quote(s),
        _ => String::new(),
    }
}

/// A double-quoted YAML string: the JSON escapes `log::quoted` writes are valid YAML.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::log::quoted(&mut out, s);
    out
}

fn key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        quote(k)
    }
}

fn redact(n: &mut Node) {
    match n {
        Node::Map(entries) => {
            for (k, v) in entries {
                if SECRET_KEYS.contains(&k.as_str()) {
                    match v {
                        Node::Seq(items) => {
                            for i in items {
                                *i = Node::Str("<secret>".into());
                            }
                        }
                        Node::Null => {}
                        other => *other = Node::Str("<secret>".into()),
                    }
                } else {
                    redact(v);
                }
            }
        }
        Node::Seq(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn emit(n: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match n {
        Node::Map(entries) if !entries.is_empty() => {
            for (k, v) in entries {
                out.push_str(&pad);
                out.push_str(&key(k));
                out.push(':');
                match v {
                    Node::Map(e) if !e.is_empty() => {
                        out.push('\n');
                        emit(v, indent + 2, out);
                    }
                    Node::Seq(s) if !s.is_empty() => {
                        out.push('\n');
                        emit(v, indent, out);
                    }
                    _ => {
                        out.push(' ');
                        emit_inline(v, out);
                        out.push('\n');
                    }
                }
            }
        }
        Node::Seq(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Node::Map(e) if !e.is_empty() => {
                        // The first key on the dash line, the rest aligned under it.
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        out.push_str(inner.trim_start());
                    }
                    Node::Seq(s) if !s.is_empty() => {
                        out.push('\n');
                        emit(item, indent + 2, out);
                    }
                    _ => {
                        emit_inline(item, out);
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            emit_inline(other, out);
            out.push('\n');
        }
    }
}

fn emit_inline(n: &Node, out: &mut String) {
    match n {
        Node::Map(_) => out.push_str("{}"),
        Node::Seq(_) => out.push_str("[]"),
        other => out.push_str(&scalar(other)),
    }
}

/// The configuration text with its secrets replaced by `<secret>`.
pub fn redacted(text: &str) -> Result<String, String> {
    let node: Option<Node> = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
    let mut node = node.unwrap_or(Node::Map(Vec::new()));
    redact(&mut node);
    let mut out = String::new();
    emit(&node, 0, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_and_the_rest_round_trips() {
        let text = "global:\n  scrape_interval: 15s\n  external_labels: {dc: \"eu\\n1\"}\nscrape_configs:\n  - job_name: a\n    basic_auth: {username: u, password: hunter2}\n    authorization: {credentials_file: /run/token}\n    http_headers:\n      X-Key: {values: [plain], secrets: [s1, s2]}\n    static_configs:\n      - targets: ['h:1', 'h:2']\n        labels: {}\n    metric_relabel_configs: []\n    sample_limit: 10\n";
        let out = redacted(text).unwrap();
        assert!(
            !out.contains("hunter2") && !out.contains("s1") && !out.contains("s2"),
            "{out}"
        );
        assert!(out.contains("password: \"<secret>\""), "{out}");
        assert!(
            out.contains("credentials_file: \"/run/token\""),
            "a path is not a secret"
        );
        // The output is YAML meaning the same thing (secrets aside).
        let again: Node = serde_saphyr::from_str(&out).unwrap();
        let mut want: Node = serde_saphyr::from_str(text).unwrap();
        redact(&mut want);
        assert_eq!(again, want, "{out}");
    }
}
