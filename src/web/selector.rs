//! Label selectors as the API's `match_target` takes them: `{job="node", instance=~"10\\..*"}`,
//! optionally after a metric name. Matchers are `=`, `!=`, `=~`, `!~`; regexes are fully
//! anchored with RE2 semantics, as in PromQL; values are double-, single- or back-quoted
//! strings with Go's escapes.

use crate::relabel::GoRegex;

/// One matcher.
pub struct Matcher {
    name: String,
    op: Op,
}

enum Op {
    Eq(String),
    Ne(String),
    Re(GoRegex),
    NotRe(GoRegex),
}

impl Matcher {
    /// Whether `labels` satisfy the matcher (a missing label has the empty value).
    fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = labels
            .iter()
            .find(|(k, _)| *k == self.name)
            .map_or("", |(_, v)| v.as_str());
        match &self.op {
            Op::Eq(v) => value == v,
            Op::Ne(v) => value != v,
            Op::Re(r) => r.is_match(value.as_bytes()),
            Op::NotRe(r) => !r.is_match(value.as_bytes()),
        }
    }
}

/// Whether every matcher holds for `labels`.
pub fn matches_all(matchers: &[Matcher], labels: &[(String, String)]) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

/// Parses a selector; the error says where it went wrong.
pub fn parse(text: &str) -> Result<Vec<Matcher>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    p.skip_space();
    let name = p.ident();
    if !name.is_empty() {
        out.push(Matcher {
            name: "__name__".into(),
            op: Op::Eq(name),
        });
    }
    p.skip_space();
    if p.peek().is_none() && !out.is_empty() {
        return Ok(out);
    }
    p.expect(b'{')?;
    loop {
        p.skip_space();
        if p.eat(b'}') {
            break;
        }
        let label = p.ident();
        if label.is_empty() {
            return Err(p.error("a label name"));
        }
        p.skip_space();
        let op = if p.eat_str("=~") {
            "=~"
        } else if p.eat_str("!~") {
            "!~"
        } else if p.eat_str("!=") {
            "!="
        } else if p.eat(b'=') {
            "="
        } else {
            return Err(p.error("one of =, !=, =~, !~"));
        };
        p.skip_space();
        let value = p.string()?;
        let regex = |v: &str| GoRegex::new(v).map_err(|e| format!("invalid regex {v:?}: {e}"));
        let op = match op {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            "=~" => Op::Re(regex(&value)?),
            _ => Op::NotRe(regex(&value)?),
        };
        out.push(Matcher { name: label, op });
        p.skip_space();
        if p.eat(b',') {
            continue;
        }
        p.expect(b'}')?;
        break;
    }
    p.skip_space();
    if p.peek().is_some() {
        return Err(p.error("the end of the selector"));
    }
    if out.is_empty() {
        return Err("a selector needs at least one matcher".into());
    }
    Ok(out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, s: &str) -> bool {
        if self.s[self.i..].starts_with(s.as_bytes()) {
            self.i += s.len();
            true
        } else {
            false
        }
    }
    fn error(&self, wanted: &str) -> String {
        format!(
            "expected {wanted} at position {} of the selector",
            self.i + 1
        )
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("'{}'", c as char)))
        }
    }
    /// A name: letters, digits, `_` and `:`, not starting with a digit.
    fn ident(&mut self) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            let ok = c.is_ascii_alphabetic()
                || c == b'_'
                || c == b':'
                || (self.i > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// A quoted string with Go's escapes (a back-quoted one is raw).
    fn string(&mut self) -> Result<String, String> {
        let quote = match self.peek() {
            Some(q @ (b'"' | b'\'' | b'`')) => q,
            _ => return Err(self.error("a quoted string")),
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error("a closing quote"));
            };
            self.i += 1;
            if c == quote {
                break;
            }
            if c == b'\\' && quote != b'`' {
                let Some(e) = self.peek() else {
                    return Err(self.error("an escaped character"));
                };
                self.i += 1;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'\\' | b'"' | b'\'' => out.push(e),
                    _ => return Err(self.error("a valid escape (\\n, \\t, \\r, \\\\, \\\", \\')")),
                }
            } else {
                out.push(c);
            }
        }
        String::from_utf8(out).map_err(|_| "the selector is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matchers_select_as_promql_does() {
        let t = labels(&[("job", "node"), ("instance", "10.0.0.1:9100")]);
        for (sel, want) in [
            (r#"{job="node"}"#, true),
            (r#"{job!="node"}"#, false),
            (r#"{job=~"no.*"}"#, true),
            (r#"{job=~"no"}"#, false),
            (r#"{job!~"x|y", instance=~"10\\..*"}"#, true),
            (r#"{ zone = "" }"#, true),
            (r#"{zone!=""}"#, false),
            (r#"{job='node',}"#, true),
            ("{job=`node`}", true),
        ] {
            let m = parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(matches_all(&m, &t), want, "{sel}");
        }
        let up = parse("up").unwrap();
        assert!(!matches_all(&up, &t), "a metric name matches __name__");
    }

    #[test]
    fn bad_selectors_say_where() {
        for (sel, want) in [
            ("{job}", "one of =, !=, =~, !~ at position 5"),
            (r#"{job="node""#, "expected '}' at position 12"),
            (r#"{job="node"} x"#, "the end of the selector"),
            (r#"{job=~"("}"#, "invalid regex"),
            ("{}", "at least one matcher"),
            (r#"{job="a\q"}"#, "a valid escape"),
        ] {
            let e = match parse(sel) {
                Ok(_) => panic!("accepted {sel}"),
                Err(e) => e,
            };
            assert!(e.contains(want), "{sel}: {e}");
        }
    }
}
