//! Exposition-format parsers. Each yields samples whose name and labels borrow the scrape
//! buffer; label values are unescaped only where an escape is present, by the consumer.
//!
//! **Invariant:** parsing never allocates per sample. The label scratch vector is owned by the
//! caller and reused across scrapes.

mod text;

pub use text::{
    LabelRef, MetricType, NORMAL_NAN, ParseError, Parser, Sample, normalize_float_label,
    unescape_label_value,
};

/// The wire format of a scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    PromText,
    /// `application/openmetrics-text`
    OpenMetrics,
}

/// The `Accept` header Prometheus 3 sends by default (OpenMetrics and text, UTF-8 names allowed).
pub const DEFAULT_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Picks the parser from a response `Content-Type`. Like Prometheus 3 without a
/// `fallback_scrape_protocol`, a missing or unknown type is an error, never a guess.
pub fn format_for_content_type(content_type: &str) -> Result<Format, String> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.is_empty() {
        return Err("non-compliant scrape target sending blank Content-Type and no fallback_scrape_protocol specified for target".into());
    }
    if media.eq_ignore_ascii_case("text/plain") {
        Ok(Format::PromText)
    } else if media.eq_ignore_ascii_case("application/openmetrics-text") {
        Ok(Format::OpenMetrics)
    } else {
        Err(format!(
            "received unsupported Content-Type {content_type:?} and no fallback_scrape_protocol specified for target"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_parser_from_content_type() {
        assert_eq!(
            format_for_content_type("text/plain; version=0.0.4; charset=utf-8"),
            Ok(Format::PromText)
        );
        assert_eq!(
            format_for_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Ok(Format::OpenMetrics)
        );
        assert!(
            format_for_content_type("")
                .unwrap_err()
                .contains("blank Content-Type")
        );
        assert!(
            format_for_content_type("application/json")
                .unwrap_err()
                .contains("unsupported Content-Type")
        );
    }
}
