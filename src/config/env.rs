//! `${VAR}` and `$VAR` in external label values, expanded from the environment as Prometheus 3
//! always does (2.x behind `--enable-feature=expand-external-labels`): Go's `os.Expand`, with
//! `$$` standing for a literal `$` and an unset or empty variable expanding to nothing.

/// Expands `s` with `lookup`; `missing` learns each variable that expanded to nothing.
pub fn expand(
    s: &str,
    lookup: impl Fn(&str) -> Option<String>,
    mut missing: impl FnMut(&str),
) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0; // start of the text not yet copied
    let mut j = 0;
    while j < b.len() {
        if b[j] == b'$' && j + 1 < b.len() {
            out.push_str(&s[i..j]);
            let (name, width) = shell_name(&s[j + 1..]);
            match (name, width) {
                // Bad syntax (`${` or `${}`): the characters are eaten.
                ("", w) if w > 0 => {}
                // `$` not followed by a name stays.
                ("", _) => out.push('$'),
                ("$", _) => out.push('$'),
                (name, _) => match lookup(name).filter(|v| !v.is_empty()) {
                    Some(v) => out.push_str(&v),
                    None => missing(name),
                },
            }
            j += width;
            i = j + 1;
        }
        j += 1;
    }
    if i < s.len() {
        out.push_str(&s[i..]);
    }
    out
}

/// The variable name after a `$` and how many bytes it takes (Go's `getShellName`).
fn shell_name(s: &str) -> (&str, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && special(b[1]) && b[2] == b'}' {
            return (&s[1..2], 3);
        }
        for (k, c) in b.iter().enumerate().skip(1) {
            if *c == b'}' {
                if k == 1 {
                    return ("", 2);
                }
                return (&s[1..k], k + 1);
            }
        }
        return ("", 1);
    }
    if special(b[0]) {
        return (&s[0..1], 1);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (&s[..n], n)
}

fn special(c: u8) -> bool {
    matches!(c, b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-') || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TEST" => Some("TestValue".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn prometheus_external_labels_good_yml() {
        // Prometheus' config/testdata/external_labels.good.yml with TEST=TestValue.
        for (value, want) in [
            ("foo", "foo"),
            ("${TEST}", "TestValue"),
            ("foo${TEST}bar", "fooTestValuebar"),
            ("foo$${TEST}", "foo${TEST}"),
            ("foo$$bar", "foo$bar"),
        ] {
            assert_eq!(expand(value, env, |_| {}), want, "{value}");
        }
    }

    #[test]
    fn go_os_expand_edge_cases() {
        let mut missing = Vec::new();
        for (value, want) in [
            ("$TEST", "TestValue"),
            ("$TEST-x", "TestValue-x"),
            ("a$", "a$"),
            ("$ x", "$ x"),
            ("${}x", "x"),
            ("${TEST", "TEST"),
            ("$UNSET/", "/"),
            ("${EMPTY}", ""),
            ("$1", ""),
            ("ünï$TEST", "ünïTestValue"),
        ] {
            assert_eq!(
                expand(value, env, |n| missing.push(n.to_string())),
                want,
                "{value}"
            );
        }
        assert_eq!(missing, ["UNSET", "EMPTY", "1"]);
    }
}
