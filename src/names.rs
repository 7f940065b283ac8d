//! Metric and label names, as Prometheus 3 checks and escapes them. `utf8` validation (the
//! default) takes any non-empty UTF-8 name; `legacy` takes `[a-zA-Z_:][a-zA-Z0-9_:]*` for
//! metric names and `[a-zA-Z_][a-zA-Z0-9_]*` for label names. A scrape asks its target to
//! escape names its validation does not take (`escaping=` in `Accept`), with one of
//! Prometheus' escaping schemes; `escape_name` applies them (the bench targets serve names as
//! a client library does after that negotiation).

/// `metric_name_validation_scheme`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validation {
    #[default]
    Utf8,
    Legacy,
}

impl Validation {
    pub fn parse(s: &str) -> Option<Validation> {
        match s {
            "utf8" => Some(Validation::Utf8),
            "legacy" => Some(Validation::Legacy),
            _ => None,
        }
    }

    pub fn is_valid_label_name(self, name: &[u8]) -> bool {
        match self {
            Validation::Utf8 => !name.is_empty() && std::str::from_utf8(name).is_ok(),
            Validation::Legacy => is_legacy_label_name(name),
        }
    }

    pub fn is_valid_metric_name(self, name: &[u8]) -> bool {
        match self {
            Validation::Utf8 => !name.is_empty() && std::str::from_utf8(name).is_ok(),
            Validation::Legacy => is_legacy_metric_name(name),
        }
    }
}

/// `metric_name_escaping_scheme`: what a target is asked to do with names the validation
/// scheme does not take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Escaping {
    /// `allow-utf-8`: no escaping.
    #[default]
    AllowUtf8,
    /// `underscores`: each character a legacy name cannot hold becomes `_`.
    Underscores,
    /// `dots`: `.` becomes `_dot_`, `_` becomes `__`, others `__`.
    Dots,
    /// `values`: `U__` and each character a legacy name cannot hold as `_<hex code>_`.
    Values,
}

impl Escaping {
    pub fn parse(s: &str) -> Option<Escaping> {
        match s {
            "allow-utf-8" => Some(Escaping::AllowUtf8),
            "underscores" => Some(Escaping::Underscores),
            "dots" => Some(Escaping::Dots),
            "values" => Some(Escaping::Values),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Escaping::AllowUtf8 => "allow-utf-8",
            Escaping::Underscores => "underscores",
            Escaping::Dots => "dots",
            Escaping::Values => "values",
        }
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_legacy_label_name(name: &[u8]) -> bool {
    !name.is_empty()
        && (name[0].is_ascii_alphabetic() || name[0] == b'_')
        && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_legacy_metric_name(name: &[u8]) -> bool {
    !name.is_empty()
        && (name[0].is_ascii_alphabetic() || name[0] == b'_' || name[0] == b':')
        && name
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
}

/// Whether a character at byte offset `i` may stand in a legacy metric name.
fn legacy_char(c: char, i: usize) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (c.is_ascii_digit() && i > 0)
}

/// `name` escaped with `scheme`, as Prometheus' `model.EscapeName` escapes it.
pub fn escape_name(name: &str, scheme: Escaping) -> String {
    if name.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(name.len() + 8);
    match scheme {
        Escaping::AllowUtf8 => return name.to_string(),
        Escaping::Underscores => {
            if is_legacy_metric_name(name.as_bytes()) {
                return name.to_string();
            }
            for (i, c) in name.char_indices() {
                out.push(if legacy_char(c, i) { c } else { '_' });
            }
        }
        Escaping::Dots => {
            // Legacy names too: their underscores are doubled.
            for (i, c) in name.char_indices() {
                match c {
                    '_' => out.push_str("__"),
                    '.' => out.push_str("_dot_"),
                    c if legacy_char(c, i) => out.push(c),
                    _ => out.push_str("__"),
                }
            }
        }
        Escaping::Values => {
            if is_legacy_metric_name(name.as_bytes()) {
                return name.to_string();
            }
            out.push_str("U__");
            for (i, c) in name.char_indices() {
                match c {
                    '_' => out.push_str("__"),
                    c if legacy_char(c, i) => out.push(c),
                    c => {
                        out.push('_');
                        out.push_str(&format!("{:x}", c as u32));
                        out.push('_');
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `TestEscapeName` of prometheus/common's `model`: each input escaped with each scheme.
    #[test]
    fn escaping_matches_prometheus_common() {
        let cases = [
            ("", "", "", ""),
            (
                "no:escaping_required",
                "no:escaping_required",
                "no:escaping__required",
                "no:escaping_required",
            ),
            (
                "mysystem.prod.west.cpu.load",
                "mysystem_prod_west_cpu_load",
                "mysystem_dot_prod_dot_west_dot_cpu_dot_load",
                "U__mysystem_2e_prod_2e_west_2e_cpu_2e_load",
            ),
            (
                "mysystem.prod.west.cpu.load_total",
                "mysystem_prod_west_cpu_load_total",
                "mysystem_dot_prod_dot_west_dot_cpu_dot_load__total",
                "U__mysystem_2e_prod_2e_west_2e_cpu_2e_load__total",
            ),
            (
                "http.status:sum",
                "http_status:sum",
                "http_dot_status:sum",
                "U__http_2e_status:sum",
            ),
            (
                "label with 😱",
                "label_with__",
                "label__with____",
                "U__label_20_with_20__1f631_",
            ),
            ("花火", "__", "____", "U___82b1__706b_"),
            (
                "label with \u{0100}",
                "label_with__",
                "label__with____",
                "U__label_20_with_20__100_",
            ),
        ];
        for (input, underscores, dots, values) in cases {
            assert_eq!(
                escape_name(input, Escaping::Underscores),
                underscores,
                "{input}"
            );
            assert_eq!(escape_name(input, Escaping::Dots), dots, "{input}");
            assert_eq!(escape_name(input, Escaping::Values), values, "{input}");
            assert_eq!(escape_name(input, Escaping::AllowUtf8), input);
        }
        // `TestEscapeMetricFamily`'s names.
        assert_eq!(
            escape_name("my.metric", Escaping::Values),
            "U__my_2e_metric"
        );
        assert_eq!(
            escape_name("some?label", Escaping::Values),
            "U__some_3f_label"
        );
        assert_eq!(
            escape_name("unicode.and.dots.花火", Escaping::Dots),
            "unicode_dot_and_dot_dots_dot_____"
        );
    }

    /// `TestMetricNameIsValidLegacy` / `TestLabelNameIsValid` of prometheus/common, both
    /// schemes.
    #[test]
    fn validation_matches_prometheus_common() {
        // (name, legacy metric name, legacy label name, utf8)
        let cases = [
            ("Avalid_23name", true, true, true),
            ("_Avalid_23name", true, true, true),
            ("1valid_23name", false, false, true),
            ("avalid_23name", true, true, true),
            ("Ava:lid_23name", true, false, true),
            ("a lid_23name", false, false, true),
            (":leading_colon", true, false, true),
            ("colon:in:the:middle", true, false, true),
            ("", false, false, false),
            ("a\u{00ff}b", false, false, true),
            ("foo.bar", false, false, true),
        ];
        for (name, metric, label, utf8) in cases {
            let n = name.as_bytes();
            assert_eq!(Validation::Legacy.is_valid_metric_name(n), metric, "{name}");
            assert_eq!(Validation::Legacy.is_valid_label_name(n), label, "{name}");
            assert_eq!(Validation::Utf8.is_valid_metric_name(n), utf8, "{name}");
            assert_eq!(Validation::Utf8.is_valid_label_name(n), utf8, "{name}");
        }
        assert!(!Validation::Utf8.is_valid_label_name(b"\xff"));
        assert_eq!(Validation::parse("utf8"), Some(Validation::Utf8));
        assert_eq!(Validation::parse("UTF8"), None);
        for s in ["allow-utf-8", "underscores", "dots", "values"] {
            assert_eq!(Escaping::parse(s).unwrap().as_str(), s);
        }
    }
}
