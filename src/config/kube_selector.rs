//! Kubernetes label and field selector syntax, checked when the configuration loads (as
//! Prometheus checks it with apimachinery's parsers) so a typo fails the load rather than
//! every list request. The selectors are sent to the API server as written.

/// Checks `text` as a label selector (`field` false) or a field selector (`field` true).
pub fn check(text: &str, field: bool) -> Result<(), String> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let what = if field { "field" } else { "label" };
    for req in split_requirements(text)? {
        let req = req.trim();
        if req.is_empty() {
            return Err(format!("{what} selector {text:?}: empty requirement"));
        }
        let bad = |why: &str| format!("{what} selector {text:?}: {req:?} {why}");
        if field {
            let (key, value) = split_operator(req).ok_or_else(|| {
                bad("is not a requirement: use key=value, key==value or key!=value")
            })?;
            if key.is_empty() {
                return Err(bad("has no field name"));
            }
            let _ = value;
            continue;
        }
        if let Some(key) = req.strip_prefix('!') {
            label_key(key.trim()).map_err(|e| bad(&e))?;
            continue;
        }
        if let Some((key, rest)) = set_operator(req) {
            label_key(key).map_err(|e| bad(&e))?;
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad("needs a parenthesized list of values"))?;
            for v in inner.split(',') {
                label_value(v.trim()).map_err(|e| bad(&e))?;
            }
            continue;
        }
        match split_operator(req) {
            Some((key, value)) => {
                label_key(key).map_err(|e| bad(&e))?;
                label_value(value).map_err(|e| bad(&e))?;
            }
            None => label_key(req).map_err(|e| bad(&e))?,
        }
    }
    Ok(())
}

/// Splits at commas outside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("selector {text:?}: unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(format!("selector {text:?}: unbalanced parentheses"));
    }
    out.push(&text[start..]);
    Ok(out)
}

/// `key op value` for `=`, `==` and `!=` (and, for labels, never `in`/`notin`).
fn split_operator(req: &str) -> Option<(&str, &str)> {
    for op in ["!=", "==", "="] {
        if let Some(i) = req.find(op) {
            return Some((req[..i].trim(), req[i + op.len()..].trim()));
        }
    }
    None
}

/// `key in (…)` or `key notin (…)`.
fn set_operator(req: &str) -> Option<(&str, &str)> {
    let mut words = req.splitn(2, char::is_whitespace);
    let key = words.next()?;
    let rest = words.next()?.trim_start();
    for op in ["notin", "in"] {
        if let Some(r) = rest.strip_prefix(op)
            && r.trim_start().starts_with('(')
        {
            return Some((key, r));
        }
    }
    None
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn label_key(key: &str) -> Result<(), String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err("has an invalid key prefix".into());
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("has no key".into());
    }
    label_value(name).map_err(|_| "has an invalid key".to_string())
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// starting and ending alphanumeric.
fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Ok(());
    }
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!("has an invalid value {v:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn label_selectors_as_kubernetes_parses_them() {
        for ok in [
            "",
            "app=web",
            "app==web,tier!=db",
            "environment in (production, qa)",
            "tier notin (frontend,backend)",
            "partition",
            "!partition",
            "app.kubernetes.io/name=prometheus",
            "k=",
        ] {
            assert!(check(ok, false).is_ok(), "{ok:?}: {:?}", check(ok, false));
        }
        for bad in [
            "app=we b",
            "=web",
            "app in production",
            "app in (a",
            "-app=web",
            "a,,b",
        ] {
            assert!(check(bad, false).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn field_selectors_as_kubernetes_parses_them() {
        for ok in [
            "spec.nodeName=node-1",
            "metadata.name!=x,status.phase==Running",
        ] {
            assert!(check(ok, true).is_ok(), "{ok:?}");
        }
        for bad in ["spec.nodeName", "=x", "a=b,,c=d"] {
            assert!(check(bad, true).is_err(), "{bad:?} accepted");
        }
    }
}
