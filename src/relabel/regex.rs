//! Regular expressions with Go RE2 semantics, as Prometheus compiles them for relabeling:
//! fully anchored as `^(?s:…)$`, with ASCII-only `\d \w \s \b`, `\Q…\E` quoting, Go's
//! literal `[` and `{` rules, and Go's `$name` template expansion.
//!
//! The `regex` crate implements the same leftmost-first semantics as RE2; the differences are
//! in syntax, and `translate` rewrites them. Common shapes (`.*`, `.+`, a literal, a set of
//! literals, a literal prefix) are answered without running the regex at all.

use regex::bytes::{CaptureLocations, Regex};
use regex_syntax::hir::{Class, Hir, HirKind};

/// A relabeling regex.
#[derive(Clone, Debug)]
pub struct GoRegex {
    source: String,
    re: Regex,
    names: Vec<Option<String>>,
    fast: Fast,
}

#[derive(Clone, Debug, PartialEq)]
enum Fast {
    /// `.*` (with `(?s)`): every string. `group1`: the only group is the whole match.
    Any {
        group1: bool,
    },
    /// `.+`: every non-empty string.
    NonEmpty {
        group1: bool,
    },
    /// Exactly these strings (sorted).
    Literals(Vec<Box<[u8]>>),
    /// A literal followed by `.*`.
    Prefix(Box<[u8]>),
    None,
}

impl PartialEq for GoRegex {
    fn eq(&self, other: &GoRegex) -> bool {
        self.source == other.source
    }
}

impl GoRegex {
    /// Compiles `source` (Go RE2 syntax) anchored as Prometheus anchors it.
    pub fn new(source: &str) -> Result<GoRegex, String> {
        let translated = translate(source)?;
        let anchored = format!("^(?s:{translated})$");
        let re = Regex::new(&anchored).map_err(|e| compile_error(source, &e.to_string()))?;
        let names = re.capture_names().map(|n| n.map(str::to_string)).collect();
        let fast = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(&format!("(?s:{translated})"))
            .map(|hir| fast_shape(&hir))
            .unwrap_or(Fast::None);
        Ok(GoRegex {
            source: source.to_string(),
            re,
            names,
            fast,
        })
    }

    /// The expression as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, s: &[u8]) -> bool {
        match &self.fast {
            Fast::Any { .. } => true,
            Fast::NonEmpty { .. } => !s.is_empty(),
            Fast::Literals(set) => set.binary_search_by(|l| (**l).cmp(s)).is_ok(),
            Fast::Prefix(p) => s.starts_with(p),
            Fast::None => self.re.is_match(s),
        }
    }

    /// Locations for [`Self::captures`], reused across calls.
    pub fn locations(&self) -> CaptureLocations {
        self.re.capture_locations()
    }

    /// Matches `s`, filling `locs`; false when it does not match.
    pub fn captures(&self, locs: &mut CaptureLocations, s: &[u8]) -> bool {
        match self.fast {
            Fast::Any { .. } => true,
            Fast::NonEmpty { .. } => !s.is_empty(),
            _ => self.re.captures_read(locs, s).is_some(),
        }
    }

    /// Go's `Regexp.Expand`: appends `template` to `out` with `$1`, `${1}`, `$name` and
    /// `${name}` replaced by the groups of the last [`Self::captures`] of `s`; `$$` is `$`.
    /// As in Go, a name is the longest run of letters, digits and `_`, so `$1x` is the group
    /// named `1x` (empty), and a malformed reference is copied as written.
    pub fn expand(&self, template: &[u8], s: &[u8], locs: &CaptureLocations, out: &mut Vec<u8>) {
        let group = |i: usize| -> Option<&[u8]> {
            match self.fast {
                Fast::Any { group1 } | Fast::NonEmpty { group1 } => {
                    (i == 0 || (i == 1 && group1)).then_some(s)
                }
                _ => locs.get(i).map(|(a, b)| &s[a..b]),
            }
        };
        let mut t = template;
        while let Some(at) = memchr::memchr(b'$', t) {
            out.extend_from_slice(&t[..at]);
            t = &t[at + 1..];
            if t.first() == Some(&b'$') {
                out.push(b'$');
                t = &t[1..];
                continue;
            }
            let Some((name, rest)) = template_name(t) else {
                out.push(b'$');
                continue;
            };
            t = rest;
            match group_number(name) {
                Some(n) => {
                    if let Some(g) = group(n) {
                        out.extend_from_slice(g);
                    }
                }
                None => {
                    if let Some(i) = self
                        .names
                        .iter()
                        .position(|n| n.as_deref().map(str::as_bytes) == Some(name))
                        && let Some(g) = group(i)
                    {
                        out.extend_from_slice(g);
                    }
                }
            }
        }
        out.extend_from_slice(t);
    }
}

/// The reference after a `$`: `name` or `{name}`, and what follows it.
fn template_name(t: &[u8]) -> Option<(&[u8], &[u8])> {
    let (brace, body) = match t.first() {
        Some(b'{') => (true, &t[1..]),
        _ => (false, t),
    };
    let text = std::str::from_utf8(body).unwrap_or_else(|e| {
        // Only the valid prefix can hold a name.
        std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or("")
    });
    let len: usize = text
        .chars()
        .take_while(|c| c.is_alphabetic() || c.is_numeric() || *c == '_')
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let name = &body[..len];
    if brace {
        if body.get(len) != Some(&b'}') {
            return None;
        }
        return Some((name, &body[len + 1..]));
    }
    Some((name, &body[len..]))
}

/// A group number as Go reads it: digits only, no leading zero, below 10^8.
fn group_number(name: &[u8]) -> Option<usize> {
    if name.len() > 1 && name[0] == b'0' {
        return None;
    }
    let mut n: usize = 0;
    for &c in name {
        if !c.is_ascii_digit() || n >= 100_000_000 {
            return None;
        }
        n = n * 10 + usize::from(c - b'0');
    }
    Some(n)
}

fn compile_error(source: &str, detail: &str) -> String {
    // The regex crate's message spans several lines with a caret; keep its last line.
    let detail = detail.lines().last().unwrap_or(detail).trim();
    format!("invalid regular expression {source:?}: {detail}")
}

/// Rewrites Go RE2 syntax into the `regex` crate's: the differences that change what a
/// pattern means or whether it compiles.
pub fn translate(src: &str) -> Result<String, String> {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let (class, len) = escape_at(src, i)?;
                match class {
                    Escape::Perl(set, negated) => {
                        out.push_str(if negated { "[^" } else { "[" });
                        out.push_str(set);
                        out.push(']');
                    }
                    Escape::Quoted(text) => out.push_str(&regex_syntax::escape(text)),
                    Escape::Other(text) if text == "\\b" || text == "\\B" => {
                        // Go's word boundary is ASCII.
                        out.push_str("(?-u:");
                        out.push_str(text);
                        out.push(')');
                    }
                    Escape::Other(text) => out.push_str(text),
                }
                i += len;
            }
            b'[' => {
                let (class, len) = translate_class(src, i)?;
                out.push_str(&class);
                i += len;
            }
            b'{' => match repetition_len(&b[i..]) {
                Some(len) => {
                    out.push_str(&src[i..i + len]);
                    i += len;
                }
                None => {
                    out.push_str("\\{");
                    i += 1;
                }
            },
            b'}' => {
                out.push_str("\\}");
                i += 1;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    Ok(out)
}

/// An escape sequence, as Go reads it.
enum Escape<'a> {
    /// `\d \w \s` and their negations, as ASCII sets.
    Perl(&'static str, bool),
    /// `\Q…\E`: literal text.
    Quoted(&'a str),
    /// Anything else, copied as written (the regex crate reads these the same way).
    Other(&'a str),
}

/// The escape at `src[i]` (a backslash) and its length.
fn escape_at(src: &str, i: usize) -> Result<(Escape<'_>, usize), String> {
    let b = src.as_bytes();
    let Some(&e) = b.get(i + 1) else {
        return Err(compile_error(
            src,
            "trailing backslash at end of expression",
        ));
    };
    let perl = match e {
        b'd' => Some(("0-9", false)),
        b'D' => Some(("0-9", true)),
        b'w' => Some(("0-9A-Za-z_", false)),
        b'W' => Some(("0-9A-Za-z_", true)),
        b's' => Some(("\\t\\n\\f\\r ", false)),
        b'S' => Some(("\\t\\n\\f\\r ", true)),
        _ => None,
    };
    if let Some((set, negated)) = perl {
        return Ok((Escape::Perl(set, negated), 2));
    }
    let rest = &src[i + 2..];
    Ok(match e {
        b'Q' => match rest.find("\\E") {
            Some(end) => (Escape::Quoted(&rest[..end]), 2 + end + 2),
            None => (Escape::Quoted(rest), src.len() - i),
        },
        // A stray `\E` means nothing in Go.
        b'E' => (Escape::Quoted(""), 2),
        b'p' | b'P' | b'x' if rest.starts_with('{') => {
            let len = rest.find('}').map_or(rest.len(), |e| e + 1);
            (Escape::Other(&src[i..i + 2 + len]), 2 + len)
        }
        b'p' | b'P' => {
            let len = rest.chars().next().map_or(0, char::len_utf8);
            (Escape::Other(&src[i..i + 2 + len]), 2 + len)
        }
        b'x' => {
            let len = rest.len().min(2);
            (Escape::Other(&src[i..i + 2 + len]), 2 + len)
        }
        _ => {
            let len = src[i + 1..].chars().next().map_or(1, char::len_utf8);
            (Escape::Other(&src[i..i + 1 + len]), 1 + len)
        }
    })
}

/// Translates the class starting at `src[start]` (`[`), returning it and its length. Go
/// classes do not nest and have no set operators, so `[`, `&`, `~` and `-` are escaped where
/// the regex crate would read them differently, and ranges are rebuilt item by item.
fn translate_class(src: &str, start: usize) -> Result<(String, usize), String> {
    let b = src.as_bytes();
    let mut out = String::from("[");
    let mut i = start + 1;
    if b.get(i) == Some(&b'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let Some(&c) = b.get(i) else {
            return Err(compile_error(src, "missing closing ]"));
        };
        if c == b']' && !first {
            out.push(']');
            return Ok((out, i + 1 - start));
        }
        first = false;
        if c == b'['
            && b.get(i + 1) == Some(&b':')
            && let Some(end) = src[i + 2..].find(":]")
        {
            // A POSIX class, `[:alpha:]`.
            out.push_str(&src[i..i + 2 + end + 2]);
            i += 2 + end + 2;
            continue;
        }
        // One item: a character (maybe escaped), then maybe `-` and the range's end.
        let (lo, len) = class_char(src, i)?;
        i += len;
        let lo = match lo {
            ClassItem::Set(text) => {
                out.push_str(&text);
                continue;
            }
            ClassItem::Char(text) => text,
        };
        if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|&n| n != b']') {
            let (hi, len) = class_char(src, i + 1)?;
            let ClassItem::Char(hi) = hi else {
                return Err(compile_error(src, "invalid character class range"));
            };
            i += 1 + len;
            out.push_str(&lo);
            out.push('-');
            out.push_str(&hi);
        } else {
            out.push_str(&lo);
        }
    }
}

enum ClassItem {
    /// One character, written so that the regex crate reads it as that character.
    Char(String),
    /// A set to merge into the class (`\d`, `\pL`, a quoted run).
    Set(String),
}

fn class_char(src: &str, i: usize) -> Result<(ClassItem, usize), String> {
    if src.as_bytes()[i] == b'\\' {
        let (e, len) = escape_at(src, i)?;
        let item = match e {
            Escape::Perl(set, false) => ClassItem::Set(set.to_string()),
            Escape::Perl(set, true) => ClassItem::Set(format!("[^{set}]")),
            Escape::Quoted(text) => ClassItem::Set(text.chars().map(class_escape).collect()),
            Escape::Other(text) if text.starts_with("\\p") || text.starts_with("\\P") => {
                ClassItem::Set(text.to_string())
            }
            Escape::Other(text) => ClassItem::Char(text.to_string()),
        };
        return Ok((item, len));
    }
    let ch = src[i..].chars().next().unwrap_or('\u{fffd}');
    Ok((ClassItem::Char(class_escape(ch)), ch.len_utf8()))
}

/// A class character written so the regex crate reads it as itself.
fn class_escape(ch: char) -> String {
    // `\<` and `\>` are word boundaries to the regex crate, even in a class.
    if ch.is_ascii_punctuation() && ch != '<' && ch != '>' {
        format!("\\{ch}")
    } else {
        ch.to_string()
    }
}

/// The length of `{n}`, `{n,}` or `{n,m}` at the start of `b` (otherwise Go reads `{` as a
/// literal).
fn repetition_len(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if b.get(i) == Some(&b',') {
        i += 1;
        digits(&mut i);
    }
    (b.get(i) == Some(&b'}')).then_some(i + 1)
}

fn is_any_char(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let r = c.ranges();
            r.len() == 1 && r[0].start() == '\0' && r[0].end() == '\u{10FFFF}'
        }
        HirKind::Class(Class::Bytes(c)) => {
            let r = c.ranges();
            r.len() == 1 && r[0].start() == 0 && r[0].end() == 255
        }
        _ => false,
    }
}

/// `.*` (min 0) or `.+` (min 1), greedy or not: the match is the whole string either way.
fn any_repetition(hir: &Hir) -> Option<u32> {
    match hir.kind() {
        HirKind::Repetition(r) if r.max.is_none() && r.min <= 1 && is_any_char(&r.sub) => {
            Some(r.min)
        }
        _ => None,
    }
}

fn literal(hir: &Hir) -> Option<Box<[u8]>> {
    match hir.kind() {
        HirKind::Literal(l) => Some(l.0.clone()),
        HirKind::Empty => Some(Box::default()),
        HirKind::Capture(c) => literal(&c.sub),
        HirKind::Class(Class::Unicode(c)) if c.ranges().len() == 1 => {
            let r = c.ranges()[0];
            (r.start() == r.end()).then(|| r.start().to_string().into_bytes().into_boxed_slice())
        }
        _ => None,
    }
}

fn literal_set(hir: &Hir, out: &mut Vec<Box<[u8]>>) -> bool {
    match hir.kind() {
        HirKind::Alternation(alts) => alts.iter().all(|a| literal_set(a, out)),
        HirKind::Capture(c) => literal_set(&c.sub, out),
        HirKind::Class(Class::Unicode(c)) if c.ranges().len() <= 16 => {
            let n: u32 = c
                .ranges()
                .iter()
                .map(|r| r.end() as u32 - r.start() as u32 + 1)
                .sum();
            if n > 64 {
                return false;
            }
            for r in c.ranges() {
                for ch in r.start()..=r.end() {
                    out.push(ch.to_string().into_bytes().into_boxed_slice());
                }
            }
            true
        }
        _ => match literal(hir) {
            Some(l) => {
                out.push(l);
                true
            }
            None => false,
        },
    }
}

fn fast_shape(hir: &Hir) -> Fast {
    // `.*` or `.+`, bare or as the only group.
    let (inner, group1) = match hir.kind() {
        HirKind::Capture(c) if hir.properties().explicit_captures_len() == 1 => (&*c.sub, true),
        _ => (hir, false),
    };
    if group1 || hir.properties().explicit_captures_len() == 0 {
        match any_repetition(inner) {
            Some(0) => return Fast::Any { group1 },
            Some(_) => return Fast::NonEmpty { group1 },
            None => {}
        }
    }
    if let HirKind::Concat(parts) = hir.kind()
        && parts.len() == 2
        && any_repetition(&parts[1]) == Some(0)
        && let Some(p) = literal(&parts[0])
    {
        return Fast::Prefix(p);
    }
    let mut set = Vec::new();
    if literal_set(hir, &mut set) {
        set.sort();
        set.dedup();
        return Fast::Literals(set);
    }
    Fast::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, s: &str) -> bool {
        let r = GoRegex::new(re).unwrap();
        let fast = r.is_match(s.as_bytes());
        // The fast path and the regex always agree.
        assert_eq!(fast, r.re.is_match(s.as_bytes()), "{re:?} on {s:?}");
        fast
    }

    #[test]
    fn anchored_with_dot_matching_newlines() {
        assert!(m("foo", "foo"));
        assert!(!m("foo", "foobar"));
        assert!(!m("foo", "xfoo"));
        assert!(m("a|b", "b"));
        assert!(!m("a|b", "ab"), "alternation stays inside the anchors");
        assert!(m(".*", "line\nbreak"));
        assert!(m("foo.*", "foo\nbar"));
        assert!(m(".+", "x"));
        assert!(!m(".+", ""));
        assert!(m("", ""));
        assert!(!m("", "a"));
    }

    #[test]
    fn perl_classes_are_ascii_as_in_go() {
        assert!(m(r"\d+", "0123456789"));
        assert!(!m(r"\d", "٣"), "Arabic-Indic digit is not \\d in Go");
        assert!(!m(r"\w", "é"));
        assert!(m(r"\W", "é"));
        assert!(!m(r"\s", "\u{a0}"));
        assert!(m(r"\s", "\t"));
        assert!(!m(r"\s", "\u{b}"), "Go's \\s has no vertical tab");
        assert!(m(r"[\d\s]+", "1 2"));
        assert!(m(r"[^\d]", "x"));
        assert!(!m(r"[^\d]", "5"));
        assert!(m(r"[\D]", "é"));
        assert!(m(r".*\bfoo\b.*", "a foo b"));
        // An ASCII word boundary: é is not a word character in Go.
        assert!(m(r".*\bfoo\b.*", "éfooé"));
        assert!(!m(r".*\bfoo\b.*", "_foo_"));
        // Unicode classes still work.
        assert!(m(r"\pL+", "héllo"));
        assert!(m(r"\p{Greek}", "α"));
    }

    #[test]
    fn go_literal_syntax() {
        assert!(m(r"\Qa.b*\E", "a.b*"));
        assert!(!m(r"\Qa.b\E", "axb"));
        assert!(m(r"[a[]+", "a[a"), "[ inside a class is a literal in Go");
        assert!(m(r"[]a]", "]"));
        assert!(m(r"[^]a]", "b"));
        assert!(m("a{", "a{"));
        assert!(m("a{,2}", "a{,2}"));
        assert!(m("a{2}", "aa"));
        assert!(m("a{1,}", "aaa"));
        assert!(m("x{1,3}", "xx"));
        assert!(m("[&&]+", "&&"));
        assert!(m("[--a]+", "-a="), "a range from - to a");
        assert!(m("[[:alpha:]]+", "abc"));
        assert!(m("[<>=_]+", "<=>_"));
        assert!(m(r"[\Q]-\E]+", "]-"));
        assert!(m(r"[\pL\d]+", "é5"));
        assert!(m(r"[\x41-\x{43}]+", "ABC"));
        assert!(m("a#b", "a#b"));
        assert!(m("(?i)foo", "FoO"));
        assert!(m("(?P<x>a)(?<y>b)", "ab"));
    }

    #[test]
    fn invalid_expressions_name_themselves() {
        let e = GoRegex::new("a(b").unwrap_err();
        assert!(e.starts_with("invalid regular expression \"a(b\""), "{e}");
        assert!(GoRegex::new("[abc").is_err());
        assert!(GoRegex::new("abc\\").is_err());
    }

    #[test]
    fn fast_shapes() {
        let shape = |s: &str| GoRegex::new(s).unwrap().fast;
        assert_eq!(shape("(.*)"), Fast::Any { group1: true });
        assert_eq!(shape(".*"), Fast::Any { group1: false });
        assert_eq!(shape("(?:.*)"), Fast::Any { group1: false });
        assert_eq!(shape("(.+)"), Fast::NonEmpty { group1: true });
        assert_eq!(shape("((.*))"), Fast::None);
        assert_eq!(shape("(a)(.*)"), Fast::None);
        assert_eq!(shape("go_.*"), Fast::Prefix((*b"go_").into()));
        assert!(matches!(shape("up|down|x"), Fast::Literals(v) if v.len() == 3));
        assert!(matches!(shape("a|b"), Fast::Literals(v) if v.len() == 2));
        assert!(matches!(shape("node_cpu_seconds_total"), Fast::Literals(v) if v.len() == 1));
        assert_eq!(shape("(?i)abc"), Fast::None);
        assert_eq!(shape("(?i)abc|d"), Fast::None);
    }

    fn expand(re: &str, template: &str, s: &str) -> String {
        let r = GoRegex::new(re).unwrap();
        let mut locs = r.locations();
        assert!(r.captures(&mut locs, s.as_bytes()), "{re:?} on {s:?}");
        let mut out = Vec::new();
        r.expand(template.as_bytes(), s.as_bytes(), &locs, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn expansion_follows_go() {
        assert_eq!(expand("f(.*)", "ch${1}-ch${1}", "foo"), "choo-choo");
        assert_eq!(expand("f(.*)", "ch$1-ch$1", "foo"), "choo-choo");
        assert_eq!(
            expand("(.*)", "$1x", "foo"),
            "",
            "$1x is the group named 1x"
        );
        assert_eq!(expand("(.*)", "${1}x", "foo"), "foox");
        assert_eq!(expand("(.*)", "$$1", "foo"), "$1");
        assert_eq!(expand("(.*)", "a$", "foo"), "a$");
        assert_eq!(expand("(.*)", "${1", "foo"), "${1");
        assert_eq!(expand("(.*)", "$-", "foo"), "$-");
        assert_eq!(
            expand("(.*)", "$01", "foo"),
            "",
            "leading zeros make a name"
        );
        assert_eq!(expand("(.*)", "$0", "foo"), "foo");
        assert_eq!(expand("(.*)", "$2", "foo"), "");
        assert_eq!(expand(".*", "[$0][$1]", "foo"), "[foo][]");
        assert_eq!(
            expand("(?P<host>[^:]+):(?P<port>\\d+)", "$port/${host}", "h:80"),
            "80/h"
        );
        assert_eq!(expand("(a)|(b)", "[$1][$2]", "b"), "[][b]");
        assert_eq!(expand("(.+)", "<$1>", "é"), "<é>");
    }
}
