//! Exposition-format parsers. Each yields samples whose name and labels borrow the scrape
//! buffer; label values are unescaped only where an escape is present, by the consumer.
//!
//! **Invariant:** parsing never allocates per sample. The label scratch vector is owned by the
//! caller and reused across scrapes.

pub mod client_model;
mod proto;
mod text;

pub use proto::ProtoParser;
pub use text::{
    Exemplar, LabelRef, MetricType, NORMAL_NAN, ParseError, Sample, TextParser, format_go_float,
    normalize_float_label, parse_float, unescape_help, unescape_label_value,
};

/// The wire format of a scrape response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`
    PromText,
    /// `application/openmetrics-text`
    OpenMetrics,
    /// `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited`
    Protobuf,
}

/// A metric family's metadata, from `# TYPE`, `# HELP` and `# UNIT` lines (consecutive lines
/// for one name merge) or a protobuf `MetricFamily`: ranges into the scrape buffer. The help
/// text is as written (escaped, in the text formats).
#[derive(Clone, Debug, PartialEq)]
pub struct FamilyMeta {
    pub name: std::ops::Range<usize>,
    pub mtype: Option<MetricType>,
    pub help: Option<std::ops::Range<usize>>,
    pub unit: Option<std::ops::Range<usize>>,
}

/// Records a metadata line for family `name` in `sink`, merged into the last entry when that is
/// the same family.
pub(crate) fn note_metadata(
    sink: &mut Vec<FamilyMeta>,
    buf: &[u8],
    name: std::ops::Range<usize>,
    update: impl FnOnce(&mut FamilyMeta),
) {
    let same = sink
        .last()
        .is_some_and(|m| buf[m.name.clone()] == buf[name.clone()]);
    if !same {
        sink.push(FamilyMeta {
            name,
            mtype: None,
            help: None,
            unit: None,
        });
    }
    if let Some(m) = sink.last_mut() {
        update(m);
    }
}

/// A parser for any [`Format`]: yields borrowed samples until the end or the first error.
pub enum Parser<'a, 's> {
    Text(TextParser<'a, 's>),
    Proto(ProtoParser<'a, 's>),
}

impl<'a, 's> Parser<'a, 's> {
    pub fn new(buf: &'a [u8], format: Format, scratch: &'s mut Vec<LabelRef>) -> Self {
        Self::with_histograms(buf, format, scratch, false, false)
    }

    /// With native histograms ingested (`native`; protobuf only), and their classic series
    /// kept too (`keep_classic`).
    pub fn with_histograms(
        buf: &'a [u8],
        format: Format,
        scratch: &'s mut Vec<LabelRef>,
        native: bool,
        keep_classic: bool,
    ) -> Self {
        match format {
            Format::Protobuf => Parser::Proto(ProtoParser::with_options(
                buf,
                scratch,
                native,
                keep_classic,
            )),
            f => Parser::Text(TextParser::new(buf, f, scratch)),
        }
    }

    /// Collects each family's metadata into `sink` (cleared first) as parsing goes.
    pub fn with_metadata(mut self, sink: &'s mut Vec<FamilyMeta>) -> Self {
        sink.clear();
        match &mut self {
            Parser::Text(p) => p.meta = Some(sink),
            Parser::Proto(p) => p.meta = Some(sink),
        }
        self
    }

    #[allow(clippy::should_implement_trait)] // lends from self: cannot be an Iterator
    pub fn next(&mut self) -> Option<Result<Sample<'a, '_>, ParseError>> {
        match self {
            Parser::Text(p) => p.next(),
            Parser::Proto(p) => p.next(),
        }
    }
}

/// The scrape protocols of `scrape_protocols` and `fallback_scrape_protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeProtocol {
    PrometheusProto,
    PrometheusText0_0_4,
    PrometheusText1_0_0,
    OpenMetricsText0_0_1,
    OpenMetricsText1_0_0,
}

impl ScrapeProtocol {
    /// The default when native histograms are scraped: protobuf first.
    pub const PROTO_FIRST: [ScrapeProtocol; 5] = [
        ScrapeProtocol::PrometheusProto,
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];
    /// Prometheus' default order when `scrape_protocols` is not set.
    pub const DEFAULT: [ScrapeProtocol; 4] = [
        ScrapeProtocol::OpenMetricsText1_0_0,
        ScrapeProtocol::OpenMetricsText0_0_1,
        ScrapeProtocol::PrometheusText1_0_0,
        ScrapeProtocol::PrometheusText0_0_4,
    ];
    /// How many protocols exist: the first weight is `0.(ALL + 1)`.
    const ALL: usize = 5;

    pub fn parse(name: &str) -> Option<ScrapeProtocol> {
        Some(match name {
            "PrometheusProto" => ScrapeProtocol::PrometheusProto,
            "PrometheusText0.0.4" => ScrapeProtocol::PrometheusText0_0_4,
            "PrometheusText1.0.0" => ScrapeProtocol::PrometheusText1_0_0,
            "OpenMetricsText0.0.1" => ScrapeProtocol::OpenMetricsText0_0_1,
            "OpenMetricsText1.0.0" => ScrapeProtocol::OpenMetricsText1_0_0,
            _ => return None,
        })
    }

    fn media(self) -> &'static str {
        match self {
            ScrapeProtocol::PrometheusProto => {
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
            }
            ScrapeProtocol::PrometheusText0_0_4 => "text/plain;version=0.0.4",
            ScrapeProtocol::PrometheusText1_0_0 => "text/plain;version=1.0.0",
            ScrapeProtocol::OpenMetricsText0_0_1 => "application/openmetrics-text;version=0.0.1",
            ScrapeProtocol::OpenMetricsText1_0_0 => "application/openmetrics-text;version=1.0.0",
        }
    }

    /// The parser for a response in this protocol.
    pub fn format(self) -> Option<Format> {
        match self {
            ScrapeProtocol::PrometheusProto => Some(Format::Protobuf),
            ScrapeProtocol::PrometheusText0_0_4 | ScrapeProtocol::PrometheusText1_0_0 => {
                Some(Format::PromText)
            }
            ScrapeProtocol::OpenMetricsText0_0_1 | ScrapeProtocol::OpenMetricsText1_0_0 => {
                Some(Format::OpenMetrics)
            }
        }
    }
}

/// The `Accept` header for `protocols`, as Prometheus builds it: weights from `0.6` down by
/// `0.1`, the name escaping asked for (`metric_name_escaping_scheme`) on the formats that
/// carry it (the 1.0.0 text formats), then `*/*`.
pub fn accept_header(protocols: &[ScrapeProtocol], escaping: crate::names::Escaping) -> String {
    let mut out = String::new();
    let mut weight = ScrapeProtocol::ALL + 1;
    for p in protocols {
        out.push_str(p.media());
        if matches!(
            p,
            ScrapeProtocol::PrometheusText1_0_0 | ScrapeProtocol::OpenMetricsText1_0_0
        ) {
            out.push_str(";escaping=");
            out.push_str(escaping.as_str());
        }
        out.push_str(&format!(";q=0.{weight},"));
        weight = weight.saturating_sub(1);
    }
    out.push_str(&format!("*/*;q=0.{weight}"));
    out
}

/// The `Accept` header Prometheus 3 sends by default (OpenMetrics and text, UTF-8 names allowed).
pub const DEFAULT_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Picks the parser from a response `Content-Type`. A missing or unknown type uses `fallback`;
/// without one it is an error, never a guess (Prometheus 3).
pub fn format_for_content_type(
    content_type: &str,
    fallback: Option<Format>,
) -> Result<Format, String> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("text/plain") {
        return Ok(Format::PromText);
    }
    if media.eq_ignore_ascii_case("application/openmetrics-text") {
        return Ok(Format::OpenMetrics);
    }
    if media.eq_ignore_ascii_case("application/vnd.google.protobuf") {
        return Ok(Format::Protobuf);
    }
    if let Some(f) = fallback {
        return Ok(f);
    }
    if media.is_empty() {
        return Err("non-compliant scrape target sending blank Content-Type and no fallback_scrape_protocol specified for target".into());
    }
    Err(format!(
        "received unsupported Content-Type {content_type:?} and no fallback_scrape_protocol specified for target"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_parser_from_content_type() {
        let text = "text/plain; version=0.0.4; charset=utf-8";
        assert_eq!(format_for_content_type(text, None), Ok(Format::PromText));
        let om = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        assert_eq!(format_for_content_type(om, None), Ok(Format::OpenMetrics));
        assert!(
            format_for_content_type("", None)
                .unwrap_err()
                .contains("blank Content-Type")
        );
        let json = format_for_content_type("application/json", None).unwrap_err();
        assert!(json.contains("unsupported Content-Type"), "{json}");
        // The fallback covers missing and unknown types, not known ones.
        assert_eq!(
            format_for_content_type("", Some(Format::OpenMetrics)),
            Ok(Format::OpenMetrics)
        );
        assert_eq!(
            format_for_content_type("application/json", Some(Format::PromText)),
            Ok(Format::PromText)
        );
        assert_eq!(
            format_for_content_type("text/plain", Some(Format::OpenMetrics)),
            Ok(Format::PromText)
        );
    }

    #[test]
    fn accept_header_matches_prometheus() {
        use crate::names::Escaping;
        assert_eq!(
            accept_header(&ScrapeProtocol::DEFAULT, Escaping::AllowUtf8),
            DEFAULT_ACCEPT
        );
        assert_eq!(
            accept_header(&[ScrapeProtocol::PrometheusText0_0_4], Escaping::AllowUtf8),
            "text/plain;version=0.0.4;q=0.6,*/*;q=0.5"
        );
        assert_eq!(
            accept_header(&ScrapeProtocol::DEFAULT, Escaping::Underscores),
            "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=underscores;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        );
        assert_eq!(
            accept_header(
                &[
                    ScrapeProtocol::PrometheusProto,
                    ScrapeProtocol::OpenMetricsText1_0_0
                ],
                Escaping::AllowUtf8
            ),
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,*/*;q=0.4"
        );
    }
}
