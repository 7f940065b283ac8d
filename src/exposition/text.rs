//! The Prometheus text format (0.0.4) and the sample lines of OpenMetrics 1.0 text.

use std::fmt;

use super::Format;

/// A label as offsets into the scrape buffer. `escaped` says the value holds a backslash
/// escape and must go through [`unescape_label_value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelRef {
    pub name: (u32, u32),
    pub value: (u32, u32),
    pub escaped: bool,
    /// The name was quoted and holds a backslash escape (`{"a\"b"="v"}`).
    pub name_escaped: bool,
    /// `le` of a histogram or `quantile` of a summary: Prometheus 3 stores its value in
    /// canonical float form (`1` → `1.0`); see [`normalize_float_label`].
    pub float_value: bool,
}

impl LabelRef {
    pub fn name<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.name.0 as usize..self.name.1 as usize]
    }
    pub fn value<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.value.0 as usize..self.value.1 as usize]
    }
}

/// One sample. `name` borrows the buffer; `labels` borrows the parser's scratch.
#[derive(Debug)]
pub struct Sample<'a, 'p> {
    pub name: &'a [u8],
    pub name_escaped: bool,
    /// Appended to `name` (`_bucket`, `_sum`, `_count`): set by the protobuf parser, which
    /// derives classic series from one message. Empty for the text formats.
    pub name_suffix: &'static [u8],
    pub labels: &'p [LabelRef],
    /// A label whose value is a float to format canonically (`le` of a bucket, `quantile`):
    /// set by the protobuf parser.
    pub extra_label: Option<(&'static [u8], f64)>,
    /// A native histogram: the `io.prometheus.client.Histogram` message bytes in the buffer,
    /// and whether it is a gauge histogram. `value` is unused then.
    pub native: Option<(std::ops::Range<usize>, bool)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// The series' created timestamp in milliseconds: a protobuf counter's, summary's or
    /// histogram's `created_timestamp` (OpenMetrics carries it in `_created` samples instead).
    pub created_ms: Option<i64>,
    /// The sample's exemplar: OpenMetrics `# {…} value [timestamp]`, or a protobuf counter's or
    /// classic bucket's `exemplar` (a native histogram's stay inside its message).
    pub exemplar: Option<Exemplar<'p>>,
    /// The name of the histogram family the sample comes after (`# TYPE name histogram`, or a
    /// protobuf histogram's classic series), for the conversion to native histograms with
    /// custom buckets; `None` outside a histogram family.
    pub histogram_family: Option<&'a [u8]>,
}

/// An exemplar; its labels borrow the parser's scratch like the sample's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar<'p> {
    pub labels: &'p [LabelRef],
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
    pub excerpt: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Binary formats: a byte offset, no line.
            return write!(f, "byte {}: {}", self.column.saturating_sub(1), self.reason);
        }
        write!(
            f,
            "line {}, column {}: {} in {:?}",
            self.line, self.column, self.reason, self.excerpt
        )
    }
}

impl std::error::Error for ParseError {}

pub struct TextParser<'a, 's> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    format: Format,
    scratch: &'s mut Vec<LabelRef>,
    eof_seen: bool,
    done: bool,
    /// The type from the latest `# TYPE` line (Prometheus applies it to the lines that follow).
    mtype: MetricType,
    /// The name the last `# TYPE` line named.
    type_name: (u32, u32),
    /// The current line's exemplar: where its labels start in the scratch, value, timestamp.
    exemplar: Option<(usize, f64, Option<i64>)>,
    /// Where metadata lines go, when the caller wants them.
    pub(super) meta: Option<&'s mut Vec<super::FamilyMeta>>,
}

/// Metric types as `# TYPE` declares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Unknown,
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
}

impl MetricType {
    fn parse(s: &[u8], format: Format) -> Option<MetricType> {
        Some(match (s, format) {
            (b"counter", _) => MetricType::Counter,
            (b"gauge", _) => MetricType::Gauge,
            (b"histogram", _) => MetricType::Histogram,
            (b"summary", _) => MetricType::Summary,
            (b"untyped", Format::PromText) | (b"unknown", Format::OpenMetrics) => {
                MetricType::Unknown
            }
            (b"gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
            (b"info", Format::OpenMetrics) => MetricType::Info,
            (b"stateset", Format::OpenMetrics) => MetricType::StateSet,
            _ => return None,
        })
    }
}

impl<'a, 's> TextParser<'a, 's> {
    pub fn new(buf: &'a [u8], format: Format, scratch: &'s mut Vec<LabelRef>) -> Self {
        assert!(
            buf.len() < u32::MAX as usize,
            "scrape bodies are far below 4 GiB"
        );
        TextParser {
            buf,
            pos: 0,
            line: 0,
            format,
            scratch,
            eof_seen: false,
            done: false,
            mtype: MetricType::Unknown,
            type_name: (0, 0),
            exemplar: None,
            meta: None,
        }
    }

    /// Records a HELP (0), TYPE (1) or UNIT (2) line for the family at `name`.
    fn note(&mut self, kind: u8, name: std::ops::Range<usize>, text: std::ops::Range<usize>) {
        if kind == 1 {
            self.type_name = (name.start as u32, name.end as u32);
        }
        let (buf, mtype) = (self.buf, self.mtype);
        if let Some(sink) = self.meta.as_deref_mut() {
            super::note_metadata(sink, buf, name, |m| match kind {
                0 => m.help = Some(text),
                1 => m.mtype = Some(mtype),
                _ => m.unit = Some(text),
            });
        }
    }

    /// The next sample, `None` at the end, or the first error (after which parsing stops).
    #[allow(clippy::should_implement_trait)] // lends from self: cannot be an Iterator
    pub fn next(&mut self) -> Option<Result<Sample<'a, '_>, ParseError>> {
        if self.done {
            return None;
        }
        loop {
            if self.pos >= self.buf.len() {
                self.done = true;
                if self.format == Format::OpenMetrics && !self.eof_seen {
                    return Some(Err(
                        self.error_at(self.buf.len(), "data does not end with # EOF")
                    ));
                }
                return None;
            }
            let start = self.pos;
            let end = match memchr::memchr(b'\n', &self.buf[start..]) {
                Some(i) => start + i,
                None => self.buf.len(),
            };
            self.pos = end + 1;
            self.line += 1;
            // Like Prometheus, no CRLF tolerance: a '\r' fails the value or timestamp.
            let line_end = end;
            if self.eof_seen {
                self.done = true;
                return Some(Err(self.error_at(start, "unexpected data after # EOF")));
            }
            let first = skip_blanks(self.buf, start, line_end);
            if first == line_end {
                if self.format == Format::OpenMetrics {
                    self.done = true;
                    return Some(Err(
                        self.error_at(start, "blank lines are not allowed in OpenMetrics")
                    ));
                }
                continue;
            }
            if self.buf[first] == b'#' {
                if self.format == Format::OpenMetrics && &self.buf[first..line_end] == b"# EOF" {
                    self.eof_seen = true;
                    if self.pos >= self.buf.len() {
                        self.done = true;
                        return None;
                    }
                    continue;
                }
                if let Err(e) = self.metadata(first, line_end) {
                    self.done = true;
                    return Some(Err(e));
                }
                continue;
            }
            return Some(match self.sample(first, line_end) {
                Ok((name, name_escaped, value, timestamp_ms)) => {
                    let (labels, exemplar) = match self.exemplar {
                        None => (self.scratch.as_slice(), None),
                        Some((at, value, timestamp_ms)) => {
                            let (labels, ex) = self.scratch.split_at(at);
                            let ex = Exemplar {
                                labels: ex,
                                value,
                                timestamp_ms,
                            };
                            (labels, Some(ex))
                        }
                    };
                    Ok(Sample {
                        name: &self.buf[name.0..name.1],
                        name_escaped,
                        name_suffix: b"",
                        labels,
                        extra_label: None,
                        native: None,
                        value,
                        timestamp_ms,
                        created_ms: None,
                        exemplar,
                        histogram_family: (self.mtype == MetricType::Histogram).then(|| {
                            &self.buf[self.type_name.0 as usize..self.type_name.1 as usize]
                        }),
                    })
                }
                Err(e) => {
                    self.done = true;
                    Err(e)
                }
            });
        }
    }

    /// A comment line. `# HELP name text` and `# TYPE name type` (with whitespace after `#`)
    /// are checked as Prometheus checks them; the type applies to the lines that follow.
    fn metadata(&mut self, start: usize, end: usize) -> Result<(), ParseError> {
        if self.format == Format::OpenMetrics {
            return self.openmetrics_metadata(start, end);
        }
        let buf = self.buf;
        let mut p = start + 1;
        if p >= end || !is_blank(buf[p]) {
            return Ok(()); // `#comment`: a plain comment
        }
        p = skip_blanks(buf, p, end);
        let keyword_end = buf[p..end]
            .iter()
            .position(|b| is_blank(*b))
            .map_or(end, |i| p + i);
        let keyword = &buf[p..keyword_end];
        let is_type = keyword == b"TYPE";
        if !(is_type
            || keyword == b"HELP"
            || (self.format == Format::OpenMetrics && keyword == b"UNIT"))
            || keyword_end == end
        {
            return Ok(()); // any other comment
        }
        p = skip_blanks(buf, keyword_end, end);
        let mut ns = p;
        if let Some((inner, after)) = quoted_name(buf, p, end) {
            // A UTF-8 name, quoted (text format 1.0.0): `# TYPE "my.metric" gauge`.
            (ns, p) = inner;
            if after < end && !is_blank(buf[after]) {
                return Err(self.error_at(after, "expected a space after the quoted metric name"));
            }
            let text_at = skip_blanks(buf, after, end).min(end);
            return self.text_metadata(is_type, ns..p, text_at, end);
        }
        p = scan_token(buf, p, end, NAME_FIRST, NAME_REST);
        if p == ns || (p < end && !is_blank(buf[p])) {
            return Err(self.error_at(ns, "expected metric name after HELP or TYPE"));
        }
        let text_at = skip_blanks(buf, p, end).min(end);
        self.text_metadata(is_type, ns..p, text_at, end)
    }

    /// The text of a text-format HELP or TYPE line for the name at `name`.
    fn text_metadata(
        &mut self,
        is_type: bool,
        name: std::ops::Range<usize>,
        text_at: usize,
        end: usize,
    ) -> Result<(), ParseError> {
        let buf = self.buf;
        let p = name.end;
        let text = &buf[text_at..end];
        if is_type {
            self.mtype = MetricType::parse(text, self.format).ok_or_else(|| {
                self.error_at(
                    p,
                    &format!("invalid metric type {:?}", String::from_utf8_lossy(text)),
                )
            })?;
        } else if !text.is_ascii() && std::str::from_utf8(text).is_err() {
            return Err(self.error_at(p, "help text is not valid UTF-8"));
        }
        self.note(u8::from(is_type), name, text_at..end);
        Ok(())
    }

    /// OpenMetrics allows only `# HELP name text`, `# TYPE name type`, `# UNIT name unit` (and
    /// `# EOF`), with single spaces; a unit must end the metric name after a `_`.
    fn openmetrics_metadata(&mut self, start: usize, end: usize) -> Result<(), ParseError> {
        let buf = self.buf;
        let line = &buf[start..end];
        let (kind, rest) = if let Some(r) = line.strip_prefix(b"# HELP ") {
            (0, r)
        } else if let Some(r) = line.strip_prefix(b"# TYPE ") {
            (1, r)
        } else if let Some(r) = line.strip_prefix(b"# UNIT ") {
            (2, r)
        } else {
            return Err(self.error_at(start, "expected a valid start token (OpenMetrics allows only HELP, TYPE, UNIT and EOF comments)"));
        };
        let mut name_start = end - rest.len();
        let (name_len, after) = match quoted_name(buf, name_start, end) {
            // A UTF-8 name, quoted: `# TYPE "my.metric" gauge`.
            Some(((s, e), after)) => {
                name_start = s;
                (e - s, after)
            }
            None => {
                let n = rest.iter().take_while(|b| is_name_char(**b, false)).count();
                if n == 0 || !is_name_char(rest[0], true) {
                    return Err(
                        self.error_at(name_start, "expected metric name after HELP, TYPE or UNIT")
                    );
                }
                (n, name_start + n)
            }
        };
        let name = &buf[name_start..name_start + name_len];
        let Some(text) = buf[after..end].strip_prefix(b" ") else {
            return Err(self.error_at(after, "expected text after the metric name"));
        };
        match kind {
            0 if !text.is_ascii() && std::str::from_utf8(text).is_err() => {
                return Err(self.error_at(name_start, "help text is not valid UTF-8"));
            }
            1 => {
                self.mtype = MetricType::parse(text, self.format).ok_or_else(|| {
                    self.error_at(
                        name_start,
                        &format!("invalid metric type {:?}", String::from_utf8_lossy(text)),
                    )
                })?;
            }
            2 if !text.is_empty() && !unit_suffix(name, text) => {
                return Err(self.error_at(
                    name_start,
                    &format!(
                        "unit {:?} not a suffix of metric {:?}",
                        String::from_utf8_lossy(text),
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            _ => {}
        }
        let text_at = end - text.len();
        self.note(kind, name_start..name_start + name_len, text_at..end);
        Ok(())
    }

    fn error_at(&self, at: usize, reason: &str) -> ParseError {
        let line_start = self.buf[..at.min(self.buf.len())]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line_end = self.buf[line_start..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(self.buf.len(), |i| line_start + i);
        let excerpt_end = line_end.min(line_start + 120);
        ParseError {
            line: self.line.max(1),
            column: at.saturating_sub(line_start) + 1,
            reason: reason.to_string(),
            excerpt: String::from_utf8_lossy(&self.buf[line_start..excerpt_end]).into_owned(),
        }
    }

    /// Parses one sample line into the label scratch; returns the name's range, whether the
    /// name had escapes, the value and the timestamp.
    #[allow(clippy::type_complexity)]
    fn sample(
        &mut self,
        start: usize,
        end: usize,
    ) -> Result<((usize, usize), bool, f64, Option<i64>), ParseError> {
        let buf = self.buf;
        self.scratch.clear();
        self.exemplar = None;
        let mut p = start;
        let (name, name_escaped);
        if buf[p] == b'{' {
            // Quoted UTF-8 metric name inside the braces: {"my.metric", a="b"}.
            let (n, esc, after) = self.labels_at(p, end, true)?;
            let Some((ns, ne)) = n else {
                return Err(self.error_at(p, "metric name is missing"));
            };
            name = (ns, ne);
            name_escaped = esc;
            p = after;
        } else {
            let ns = p;
            p = scan_token(buf, p, end, NAME_FIRST, NAME_REST);
            if p == ns {
                return Err(self.error_at(p, "invalid metric name"));
            }
            name = (ns, p);
            name_escaped = false;
            // The text format allows blanks between the name and the label set; OpenMetrics not.
            let brace = self.blanks(p, end);
            if brace < end && buf[brace] == b'{' {
                p = brace;
                let (n, _, after) = self.labels_at(p, end, false)?;
                debug_assert!(n.is_none());
                p = after;
            }
        }
        if self.format == Format::OpenMetrics {
            let (value, timestamp_ms) = self.openmetrics_suffix(p, end)?;
            return Ok((name, name_escaped, value, timestamp_ms));
        }
        // Value.
        if p >= end || !is_blank(buf[p]) {
            return Err(self.error_at(p, "expected a space before the value"));
        }
        p = skip_blanks(buf, p, end);
        let vs = p;
        while p < end && !is_blank(buf[p]) {
            p += 1;
        }
        let value =
            parse_float(&buf[vs..p]).ok_or_else(|| self.error_at(vs, "invalid sample value"))?;
        p = skip_blanks(buf, p, end);
        let mut timestamp_ms = None;
        if p < end {
            let ts_start = p;
            while p < end && !is_blank(buf[p]) {
                p += 1;
            }
            let raw = &buf[ts_start..p];
            timestamp_ms =
                Some(parse_int(raw).ok_or_else(|| self.error_at(ts_start, "invalid timestamp"))?);
            p = skip_blanks(buf, p, end);
        }
        if p < end {
            return Err(self.error_at(p, "unexpected data after the sample"));
        }
        debug_assert_eq!(p, end);
        Ok((name, name_escaped, value, timestamp_ms))
    }

    /// Parses `{…}` starting at `p` (the brace). With `allow_name`, a bare quoted string is the
    /// metric name. Returns the name's range, whether it had escapes, and the offset after `}`.
    #[allow(clippy::type_complexity)]
    fn parse_labels<const STRICT: bool>(
        &mut self,
        mut p: usize,
        end: usize,
        allow_name: bool,
    ) -> Result<(Option<(usize, usize)>, bool, usize), ParseError> {
        let buf = self.buf;
        p += 1;
        let mut metric_name = None;
        let mut name_escaped = false;
        loop {
            p = Self::blanks_if::<STRICT>(buf, p, end);
            if p >= end {
                return Err(self.error_at(p, "unterminated label set"));
            }
            if buf[p] == b'}' {
                return Ok((metric_name, name_escaped, p + 1));
            }
            // Label name: bare or quoted.
            let (ns, ne, quoted, n_esc);
            if buf[p] == b'"' {
                let (s, e, esc, _, after) = self.quoted(p, end)?;
                (ns, ne, quoted, n_esc) = (s, e, true, esc);
                p = after;
            } else {
                ns = p;
                p = scan_token(buf, p, end, LABEL_FIRST, LABEL_REST);
                if p == ns {
                    return Err(self.error_at(p, "invalid label name"));
                }
                (ne, quoted, n_esc) = (p, false, false);
            }
            p = Self::blanks_if::<STRICT>(buf, p, end);
            if quoted
                && allow_name
                && metric_name.is_none()
                && self.scratch.is_empty()
                && p < end
                && (buf[p] == b',' || buf[p] == b'}')
            {
                metric_name = Some((ns, ne));
                name_escaped = n_esc;
            } else {
                if p >= end || buf[p] != b'=' {
                    return Err(self.error_at(p, "expected '=' after label name"));
                }
                p = Self::blanks_if::<STRICT>(buf, p + 1, end);
                if p >= end || buf[p] != b'"' {
                    return Err(self.error_at(p, "expected '\"' to start the label value"));
                }
                let (vs, ve, esc, non_ascii, after) = self.quoted(p, end)?;
                if non_ascii && std::str::from_utf8(&buf[vs..ve]).is_err() {
                    return Err(self.error_at(vs, "invalid UTF-8 label value"));
                }
                let label_name = &buf[ns..ne];
                // Prometheus 3 normalizes histograms' `le` only, not gauge histograms'.
                let float_value = (label_name == b"le" && self.mtype == MetricType::Histogram)
                    || (label_name == b"quantile" && self.mtype == MetricType::Summary);
                self.scratch.push(LabelRef {
                    name: (ns as u32, ne as u32),
                    value: (vs as u32, ve as u32),
                    escaped: esc,
                    name_escaped: n_esc,
                    float_value,
                });
                p = Self::blanks_if::<STRICT>(buf, after, end);
            }
            if p < end && buf[p] == b',' {
                p += 1;
            } else if p < end && buf[p] == b'}' {
                continue;
            } else {
                return Err(self.error_at(p, "expected ',' or '}' in label set"));
            }
        }
    }

    /// `blanks` with the format known at compile time (the label-set loop is hot).
    #[inline(always)]
    fn blanks_if<const STRICT: bool>(buf: &[u8], p: usize, end: usize) -> usize {
        if STRICT { p } else { skip_blanks(buf, p, end) }
    }

    /// Labels in the text format (blanks allowed) or OpenMetrics (none).
    #[allow(clippy::type_complexity)]
    fn labels_at(
        &mut self,
        p: usize,
        end: usize,
        allow_name: bool,
    ) -> Result<(Option<(usize, usize)>, bool, usize), ParseError> {
        match self.format {
            Format::OpenMetrics => self.parse_labels::<true>(p, end, allow_name),
            _ => self.parse_labels::<false>(p, end, allow_name),
        }
    }

    /// Skips blanks in the text format; OpenMetrics allows none inside a line's tokens.
    fn blanks(&self, p: usize, end: usize) -> usize {
        match self.format {
            Format::OpenMetrics => p,
            _ => skip_blanks(self.buf, p, end),
        }
    }

    /// After an OpenMetrics sample's name and labels: ` value[ timestamp][ # exemplar]`, each
    /// separated by exactly one space. Timestamps are float seconds, truncated to milliseconds.
    fn openmetrics_suffix(
        &mut self,
        mut p: usize,
        end: usize,
    ) -> Result<(f64, Option<i64>), ParseError> {
        let buf = self.buf;
        let token = |from: usize| {
            buf[from..end]
                .iter()
                .position(|b| *b == b' ')
                .map_or(end, |i| from + i)
        };
        if p >= end || buf[p] != b' ' {
            return Err(self.error_at(p, "expected a space before the value"));
        }
        p += 1;
        let value_end = token(p);
        let value = parse_float(&buf[p..value_end])
            .ok_or_else(|| self.error_at(p, "invalid sample value"))?;
        p = value_end;
        if p == end {
            return Ok((value, None));
        }
        p += 1;
        if buf[p..end].starts_with(b"# ") {
            self.exemplar(p + 2, end)?;
            return Ok((value, None));
        }
        let ts_end = token(p);
        let secs = parse_float(&buf[p..ts_end])
            .filter(|f| f.is_finite())
            .ok_or_else(|| self.error_at(p, "invalid timestamp"))?;
        p = ts_end;
        if p < end {
            if !buf[p..end].starts_with(b" # ") {
                return Err(self.error_at(p, "expected next entry after timestamp"));
            }
            self.exemplar(p + 3, end)?;
        }
        Ok((value, Some((secs * 1000.0) as i64)))
    }

    /// An exemplar `{labels} value[ timestamp]`: its labels go to the scratch after the
    /// sample's, the rest to `self.exemplar`.
    fn exemplar(&mut self, p: usize, end: usize) -> Result<(), ParseError> {
        let buf = self.buf;
        if p >= end || buf[p] != b'{' {
            return Err(self.error_at(p, "expected exemplar labels"));
        }
        let at = self.scratch.len();
        let (_, _, mut q) = self.parse_labels::<true>(p, end, false)?;
        if q >= end || buf[q] != b' ' {
            return Err(self.error_at(q, "expected value after exemplar labels"));
        }
        q += 1;
        let value_end = buf[q..end]
            .iter()
            .position(|b| *b == b' ')
            .map_or(end, |i| q + i);
        let value = parse_float(&buf[q..value_end])
            .ok_or_else(|| self.error_at(q, "invalid exemplar value"))?;
        let mut timestamp_ms = None;
        if value_end < end {
            let ts = &buf[value_end + 1..end];
            let Some(secs) = parse_float(ts).filter(|f| f.is_finite()) else {
                return Err(self.error_at(value_end + 1, "invalid exemplar timestamp"));
            };
            timestamp_ms = Some((secs * 1000.0) as i64);
        }
        self.exemplar = Some((at, value, timestamp_ms));
        Ok(())
    }

    /// A double-quoted string at `p`: returns its content range, whether it has escapes,
    /// whether it holds non-ASCII bytes, and the offset after the closing quote.
    fn quoted(
        &self,
        p: usize,
        end: usize,
    ) -> Result<(usize, usize, bool, bool, usize), ParseError> {
        let buf = self.buf;
        let s = p + 1;
        let mut i = s;
        let mut escaped = false;
        let mut non_ascii = false;
        while i < end {
            // Eight bytes at a time up to the first quote, backslash or non-ASCII byte.
            while i + 8 <= end {
                let stop = special_bytes(word_at(buf, i));
                if stop != 0 {
                    i += (stop.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            if i >= end {
                break;
            }
            match buf[i] {
                b'\\' => {
                    // The escaped byte is skipped, but counts towards the UTF-8 check.
                    escaped = true;
                    non_ascii |= buf.get(i + 1).is_some_and(|c| *c >= 0x80);
                    i += 2;
                }
                b'"' => return Ok((s, i, escaped, non_ascii, i + 1)),
                c => {
                    non_ascii |= c >= 0x80;
                    i += 1;
                }
            }
        }
        Err(self.error_at(p, "unterminated quoted string"))
    }
}

/// The eight bytes at `i`, little-endian (the caller checks `i + 8 <= buf.len()`).
#[inline(always)]
fn word_at(buf: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&buf[i..i + 8]);
    u64::from_le_bytes(w)
}

/// A mask whose lowest set bit is the high bit of the first byte of `w` that is `"`, `\\` or
/// non-ASCII (bits above the first hit may be false positives; only the lowest is used).
#[inline(always)]
fn special_bytes(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\'))) | (w & HIGH)
}

/// The end of a token starting at `p` whose first byte is in class `first` and the rest in
/// `rest` (`NAME_REST` or `LABEL_REST`); `p` itself when the first byte does not fit.
#[inline(always)]
fn scan_token(buf: &[u8], mut p: usize, end: usize, first: u8, rest: u8) -> usize {
    if p >= end || CLASS[buf[p] as usize] & first == 0 {
        return p;
    }
    p += 1;
    #[cfg(target_arch = "x86_64")]
    while p + 16 <= end {
        let run = simd::name_run(&buf[p..p + 16], rest == NAME_REST);
        p += run;
        if run < 16 {
            return p;
        }
    }
    while p < end && CLASS[buf[p] as usize] & rest != 0 {
        p += 1;
    }
    p
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// How many leading bytes of `chunk` (16 bytes) are `[a-zA-Z0-9_]`, or with `colon` also
    /// `:`. SSE2 is part of the x86-64 baseline.
    #[inline(always)]
    pub(super) fn name_run(chunk: &[u8], colon: bool) -> usize {
        assert!(chunk.len() == 16);
        // SAFETY: SSE2 is part of the x86-64 baseline, so these intrinsics are always
        // available; `chunk` holds 16 readable bytes and the load needs no alignment.
        unsafe {
            let c = _mm_loadu_si128(chunk.as_ptr().cast());
            let splat = |b: u8| _mm_set1_epi8(b as i8);
            // Signed compares: bytes >= 0x80 are negative and fall outside every range.
            let lower = _mm_or_si128(c, splat(0x20));
            let alpha = _mm_and_si128(
                _mm_cmpgt_epi8(lower, splat(b'a' - 1)),
                _mm_cmplt_epi8(lower, splat(b'z' + 1)),
            );
            let digit = _mm_and_si128(
                _mm_cmpgt_epi8(c, splat(b'0' - 1)),
                _mm_cmplt_epi8(c, splat(b'9' + 1)),
            );
            let mut ok = _mm_or_si128(_mm_or_si128(alpha, digit), _mm_cmpeq_epi8(c, splat(b'_')));
            if colon {
                ok = _mm_or_si128(ok, _mm_cmpeq_epi8(c, splat(b':')));
            }
            let mask = _mm_movemask_epi8(ok) as u32;
            (!mask & 0xffff).trailing_zeros().min(16) as usize
        }
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A quoted name at `p` (`"my.metric"`, backslash escapes allowed): the range inside the
/// quotes and the position after the closing one; `None` when there is no quote at `p`, or
/// it is not closed on the line.
fn quoted_name(buf: &[u8], p: usize, end: usize) -> Option<((usize, usize), usize)> {
    if p >= end || buf[p] != b'"' {
        return None;
    }
    let mut q = p + 1;
    while q < end {
        match buf[q] {
            b'\\' => q += 2,
            b'"' => return (q > p + 1).then_some(((p + 1, q), q + 1)),
            _ => q += 1,
        }
    }
    None
}

fn skip_blanks(buf: &[u8], mut p: usize, end: usize) -> usize {
    while p < end && is_blank(buf[p]) {
        p += 1;
    }
    p
}

/// Whether `unit` ends `name` after a `_` (OpenMetrics' rule for UNIT).
fn unit_suffix(name: &[u8], unit: &[u8]) -> bool {
    name.len() > unit.len() && name.ends_with(unit) && name[name.len() - unit.len() - 1] == b'_'
}

/// Character classes as bit flags, one table lookup per byte.
const NAME_FIRST: u8 = 1; // [a-zA-Z_:]
const NAME_REST: u8 = 2; // [a-zA-Z0-9_:]
const LABEL_FIRST: u8 = 4; // [a-zA-Z_]
const LABEL_REST: u8 = 8; // [a-zA-Z0-9_]

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let alpha = c.is_ascii_alphabetic() || c == b'_';
        let digit = c.is_ascii_digit();
        let mut f = 0;
        if alpha || c == b':' {
            f |= NAME_FIRST | NAME_REST;
        }
        if digit {
            f |= NAME_REST | LABEL_REST;
        }
        if alpha {
            f |= LABEL_FIRST | LABEL_REST;
        }
        t[i] = f;
        i += 1;
    }
    t
};

fn is_name_char(b: u8, first: bool) -> bool {
    CLASS[b as usize] & if first { NAME_FIRST } else { NAME_REST } != 0
}

/// Parses a float as Go's `strconv.ParseFloat` does for the forms exposition formats use:
/// decimals, exponents, `±Inf`, `NaN` (any case).
pub fn parse_float(b: &[u8]) -> Option<f64> {
    if b.is_empty() || !b.is_ascii() {
        return None;
    }
    // Fast path: plain integers up to 15 digits (counters, bucket counts) are exact in f64.
    if b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        let mut v: u64 = 0;
        for d in b {
            v = v * 10 + u64::from(d - b'0');
        }
        return Some(v as f64);
    }
    // SAFETY-free: ASCII is valid UTF-8.
    // Prometheus keeps to pre-Go 1.13 forms (no hex floats, no underscores), and Go takes no
    // sign on NaN.
    if b.iter().any(|c| matches!(c, b'p' | b'P' | b'_'))
        || (matches!(b[0], b'+' | b'-') && b.len() > 1 && matches!(b[1], b'n' | b'N'))
    {
        return None;
    }
    let s = std::str::from_utf8(b).ok()?;
    let v = s.parse::<f64>().ok()?;
    // Go's math.NaN() has these bits, and Prometheus forwards them; receivers may tell NaNs
    // apart (the stale marker is another NaN), so every parsed NaN gets exactly these bits.
    Some(if v.is_nan() {
        f64::from_bits(NORMAL_NAN)
    } else {
        v
    })
}

/// The bits of a NaN as Prometheus (Go) produces it when parsing `NaN`.
pub const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

/// A timestamp: digits only, as Prometheus' lexer takes them (no sign).
fn parse_int(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Appends a `le` or `quantile` value in the canonical form Prometheus 3 stores: the float
/// formatted as Go's `%g` with the shortest representation, plus `.0` when that has neither a
/// point nor an exponent (`1` → `1.0`, `1e6` → `1e+06`, `+Inf` stays). A value that is not a
/// float is kept as written.
pub fn normalize_float_label(raw: &[u8], out: &mut Vec<u8>) {
    if let Some(integer) = canonical_as_written(raw) {
        // Most bucket bounds and quantiles (`0.005`, `10`, `+Inf`): no float round trip.
        out.extend_from_slice(raw);
        if integer {
            out.extend_from_slice(b".0");
        }
        return;
    }
    match parse_float(raw) {
        Some(f) => format_go_float(f, out),
        None => out.extend_from_slice(raw),
    }
}

/// Whether [`format_go_float`] writes `raw`'s value back as `raw` is written (`Some(false)`),
/// or with `.0` after it (`Some(true)`, an integer): `+Inf`, or a decimal with no sign, no
/// exponent, no leading zero before the point (but `0`), no trailing zero after it, at most
/// 15 significant digits (which round-trip through a float unchanged) and a value in
/// [1e-4, 1e6), where Go's `%g` uses no exponent. `None`: format it.
fn canonical_as_written(raw: &[u8]) -> Option<bool> {
    if raw == b"+Inf" {
        return Some(false);
    }
    let (int, frac) = match memchr::memchr(b'.', raw) {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    if int.is_empty()
        || int.len() > 6
        || !int.iter().all(u8::is_ascii_digit)
        || (int.len() > 1 && int[0] == b'0')
    {
        return None;
    }
    let Some(frac) = frac else {
        return Some(true);
    };
    if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) || frac.ends_with(b"0") {
        return None;
    }
    let significant = if int == b"0" {
        let zeros = frac.iter().take_while(|c| **c == b'0').count();
        if zeros > 3 {
            return None; // below 1e-4: Go writes an exponent
        }
        frac.len() - zeros
    } else {
        int.len() + frac.len()
    };
    (significant <= 15).then_some(false)
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, with `.0` added as OpenMetrics formats it.
pub fn format_go_float(f: f64, out: &mut Vec<u8>) {
    use std::io::Write as _;
    if f.is_nan() {
        return out.extend_from_slice(b"NaN");
    }
    if f.is_infinite() {
        return out.extend_from_slice(if f > 0.0 { b"+Inf" } else { b"-Inf" });
    }
    // Shortest round-trip digits and decimal exponent, from Rust's `{:e}` (e.g. `-1.25e-7`).
    let mut tmp = [0u8; 40];
    let mut cursor = std::io::Cursor::new(&mut tmp[..]);
    let _ = write!(cursor, "{f:e}");
    let len = cursor.position() as usize;
    let sci = &tmp[..len];
    let (neg, sci) = match sci.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, sci),
    };
    let e_pos = sci.iter().position(|c| *c == b'e').unwrap_or(sci.len());
    let mut digits = [0u8; 24];
    let mut nd = 0;
    for c in &sci[..e_pos] {
        if c.is_ascii_digit() && nd < digits.len() {
            digits[nd] = *c;
            nd += 1;
        }
    }
    let exp: i32 = std::str::from_utf8(&sci[(e_pos + 1).min(sci.len())..])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let digits = &digits[..nd];
    let start = out.len();
    if neg {
        out.push(b'-');
    }
    if !(-4..6).contains(&exp) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
        out.extend_from_slice(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', int_len - digits.len()));
        } else {
            out.extend_from_slice(&digits[..int_len]);
            out.push(b'.');
            out.extend_from_slice(&digits[int_len..]);
        }
    }
    if !out[start..].iter().any(|c| *c == b'.' || *c == b'e') {
        out.extend_from_slice(b".0");
    }
}

/// Appends a label value with the text format's escapes (`\\`, `\"`, `\n`) resolved; any other
/// backslash sequence is kept as written, as Prometheus does.
pub fn unescape_label_value(raw: &[u8], out: &mut Vec<u8>) {
    unescape(raw, true, out)
}

/// A HELP text, unescaped as `format` escapes it: `\\` and `\n`, and `\"` in OpenMetrics
/// only; any other backslash stays as written, as Prometheus reads it. Protobuf help is not
/// escaped.
pub fn unescape_help(raw: &[u8], format: super::Format, out: &mut Vec<u8>) {
    if format == super::Format::Protobuf || memchr::memchr(b'\\', raw).is_none() {
        out.extend_from_slice(raw);
    } else {
        unescape(raw, format == super::Format::OpenMetrics, out)
    }
}

fn unescape(raw: &[u8], quote: bool, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\\' && i + 1 < raw.len() {
            match raw[i + 1] {
                b'\\' => out.push(b'\\'),
                b'"' if quote => out.push(b'"'),
                b'n' => out.push(b'\n'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(b);
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector name scan and the word-at-a-time quoted scan agree with byte-by-byte
    /// reference loops for every byte value at every position of tokens of every length.
    #[test]
    fn fast_scans_match_byte_loops() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        for len in 1..40 {
            for pos in 0..len {
                for &b in &bytes {
                    let mut tok = vec![b'a'; len];
                    tok[pos] = b;
                    tok.push(b'=');
                    for (first, rest) in [(NAME_FIRST, NAME_REST), (LABEL_FIRST, LABEL_REST)] {
                        let mut want = 0;
                        if CLASS[tok[0] as usize] & first != 0 {
                            want = 1;
                            while CLASS[tok[want] as usize] & rest != 0 {
                                want += 1;
                            }
                        }
                        assert_eq!(scan_token(&tok, 0, tok.len(), first, rest), want, "{tok:?}");
                    }
                    let mut q = vec![b'"'];
                    q.extend(std::iter::repeat_n(b'x', len));
                    q[1 + pos] = b;
                    q.push(b'"');
                    let mut scratch = Vec::new();
                    let parser = TextParser::new(&q, Format::PromText, &mut scratch);
                    let mut i = 1;
                    let (mut esc, mut non_ascii) = (false, false);
                    let want = loop {
                        match q.get(i) {
                            None => break None,
                            Some(b'\\') => {
                                let next = q.get(i + 1).copied().unwrap_or(0);
                                (esc, non_ascii, i) = (true, non_ascii || next >= 0x80, i + 2)
                            }
                            Some(b'"') => break Some((1, i, esc, non_ascii, i + 1)),
                            Some(c) => (non_ascii, i) = (non_ascii || *c >= 0x80, i + 1),
                        }
                    };
                    assert_eq!(parser.quoted(0, q.len()).ok(), want, "{q:?}");
                }
            }
        }
    }

    /// Parses everything into owned `(name, [(label, value)], value, ts)` tuples.
    #[allow(clippy::type_complexity)]
    fn parse_all(
        input: &str,
        format: Format,
    ) -> Result<Vec<(String, Vec<(String, String)>, f64, Option<i64>)>, ParseError> {
        let mut scratch = Vec::new();
        let mut p = TextParser::new(input.as_bytes(), format, &mut scratch);
        let mut out = Vec::new();
        while let Some(s) = p.next() {
            let s = s?;
            let buf = input.as_bytes();
            let labels = s
                .labels
                .iter()
                .map(|l| {
                    let mut v = Vec::new();
                    if l.escaped {
                        unescape_label_value(l.value(buf), &mut v);
                    } else {
                        v.extend_from_slice(l.value(buf));
                    }
                    (
                        String::from_utf8_lossy(l.name(buf)).into_owned(),
                        String::from_utf8(v).unwrap(),
                    )
                })
                .collect();
            out.push((
                String::from_utf8_lossy(s.name).into_owned(),
                labels,
                s.value,
                s.timestamp_ms,
            ));
        }
        Ok(out)
    }

    fn one(input: &str) -> (String, Vec<(String, String)>, f64, Option<i64>) {
        let mut v = parse_all(input, Format::PromText).unwrap();
        assert_eq!(v.len(), 1, "{input}");
        v.remove(0)
    }

    fn err(input: &str, format: Format) -> ParseError {
        parse_all(input, format).expect_err(input)
    }

    #[test]
    fn parses_node_exporter_style_text() {
        let input = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n\
# TYPE node_cpu_seconds_total counter\n\
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 1.23456789e+06\n\
node_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 42\n\
\n\
# HELP go_info Information about the Go environment.\n\
go_info{version=\"go1.19.8\"} 1\n\
node_load1 0.5\n";
        let got = parse_all(input, Format::PromText).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].0, "node_cpu_seconds_total");
        assert_eq!(
            got[0].1,
            vec![("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
        );
        assert_eq!(got[0].2, 1_234_567.89);
        assert_eq!(got[3], ("node_load1".into(), vec![], 0.5, None));
    }

    #[test]
    fn values_timestamps_and_special_floats() {
        assert_eq!(one("a 1 1700000000000").3, Some(1_700_000_000_000));
        assert_eq!(one("a +Inf").2, f64::INFINITY);
        assert_eq!(one("a -Inf").2, f64::NEG_INFINITY);
        assert_eq!(one("a NaN").2.to_bits(), NORMAL_NAN, "Prometheus' NaN bits");
        assert_eq!(one("a nan").2.to_bits(), NORMAL_NAN);
        assert_eq!(one("a 1e-3").2, 0.001);
        assert_eq!(one("a\t2").2, 2.0);
        assert_eq!(one("a{} 3").2, 3.0, "empty label set");
        assert_eq!(one("a{b=\"c\",} 3").1.len(), 1, "trailing comma");
        assert_eq!(
            one("a {b=\"c\"} 4").1.len(),
            1,
            "blanks before the label set"
        );
        assert_eq!(
            one("   a 5").2,
            5.0,
            "leading blanks (Prometheus 3 skips them)"
        );
        assert_eq!(one("a 1").2, 1.0, "no final newline");
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "a 1\r\n",    // no CRLF tolerance
            "a 1 12\r\n", // not after a timestamp either
            "a 1 -1000",  // timestamps are digits only
            "a 1 +1000",
            "a 0x1p-2",             // no hex floats
            "a 1_000",              // no underscores
            "a +NaN",               // no sign on NaN
            "# TYPE a gauges\na 1", // invalid metric type
            "# TYPE 1a gauge\n",    // invalid metric name in metadata
        ] {
            assert!(
                parse_all(bad, Format::PromText).is_err(),
                "{bad:?} must be rejected"
            );
        }
        // Comments that are not metadata are free text.
        assert_eq!(
            parse_all("#TYPE a gauges\n# anything at all\na 1\n", Format::PromText)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn openmetrics_rules() {
        let ok = [
            "a_total 1 1520879607.789 # {trace_id=\"x\"} 0.67 1520879607.5\n# EOF\n",
            "# TYPE a_seconds gauge\n# UNIT a_seconds seconds\n# HELP a_seconds Help.\na_seconds 1\n# EOF\n",
            "a{b=\"c\",} 1\n# EOF",
            "a 1 # {} 2\n# EOF\n",
        ];
        for input in ok {
            assert!(
                parse_all(input, Format::OpenMetrics).is_ok(),
                "{input:?} is valid OpenMetrics"
            );
        }
        let timestamps = parse_all(ok[0], Format::OpenMetrics).unwrap();
        assert_eq!(
            timestamps[0].3,
            Some(1_520_879_607_789),
            "float seconds, truncated to ms"
        );
        let bad = [
            "a  1\n# EOF\n",                                  // two spaces
            "a {b=\"c\"} 1\n# EOF\n",                         // space before the label set
            "a{b=\"c\", d=\"e\"} 1\n# EOF\n",                 // space inside the label set
            "# free comment\na 1\n# EOF\n",                   // only HELP, TYPE, UNIT, EOF
            "# TYPE a gauge\n# UNIT a seconds\na 1\n# EOF\n", // unit not a suffix
            "a 1 # {b=\"c\"} x\n# EOF\n",                     // bad exemplar value
            "a 1 # b 2\n# EOF\n",                             // exemplar without labels
            "a 1 NaN\n# EOF\n",                               // timestamps must be finite
            "a 1 2 3\n# EOF\n",
            "a 1\n",                          // no # EOF
            "# TYPE a untyped\na 1\n# EOF\n", // untyped is the text format's word
        ];
        for input in bad {
            assert!(
                parse_all(input, Format::OpenMetrics).is_err(),
                "{input:?} must be rejected"
            );
        }
    }

    #[test]
    fn le_and_quantile_are_marked_for_normalization_by_type() {
        let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\n# TYPE s summary\ns{quantile=\"1\",le=\"1\"} 1\n# TYPE g gauge\ng{le=\"1\"} 1\n";
        let mut scratch = Vec::new();
        let mut p = TextParser::new(input.as_bytes(), Format::PromText, &mut scratch);
        let mut flags = Vec::new();
        while let Some(s) = p.next() {
            flags.push(
                s.unwrap()
                    .labels
                    .iter()
                    .map(|l| l.float_value)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(flags, vec![vec![true], vec![true, false], vec![false]]);
    }

    #[test]
    fn normalizes_floats_like_go() {
        // (written, what Prometheus 3 stores): Go's %g shortest, plus ".0" where needed.
        let cases = [
            ("1", "1.0"),
            ("0.5", "0.5"),
            ("0.25", "0.25"),
            ("10", "10.0"),
            ("100000", "100000.0"),
            ("1e6", "1e+06"),
            ("1234567", "1.234567e+06"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1.5e-7", "1.5e-07"),
            ("-2", "-2.0"),
            ("0", "0.0"),
            ("+Inf", "+Inf"),
            ("-inf", "-Inf"),
            ("2.5e+21", "2.5e+21"),
            ("0.005", "0.005"),
            ("not a float", "not a float"),
        ];
        for (raw, want) in cases {
            let mut out = Vec::new();
            normalize_float_label(raw.as_bytes(), &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn label_escapes() {
        let (_, labels, _, _) = one(r#"a{path="C:\\dir",q="say \"hi\"",nl="x\ny",other="\t"} 1"#);
        assert_eq!(labels[0].1, "C:\\dir");
        assert_eq!(labels[1].1, "say \"hi\"");
        assert_eq!(labels[2].1, "x\ny");
        assert_eq!(labels[3].1, "\\t", "unknown escapes are kept as written");
    }

    #[test]
    fn quoted_label_names_with_escapes() {
        let input = r#"{"m","a\"b"="v","c\\d"="w"} 1"#;
        let mut scratch = Vec::new();
        let mut p = TextParser::new(input.as_bytes(), Format::PromText, &mut scratch);
        let s = p.next().unwrap().unwrap();
        let names: Vec<String> = s
            .labels
            .iter()
            .map(|l| {
                assert!(l.name_escaped);
                let mut out = Vec::new();
                unescape_label_value(l.name(input.as_bytes()), &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect();
        assert_eq!(names, vec!["a\"b".to_string(), "c\\d".to_string()]);
    }

    #[test]
    fn quoted_utf8_names() {
        let (name, labels, v, _) = one(r#"{"my.metric","a.b"="v", c="d"} 7"#);
        assert_eq!(name, "my.metric");
        assert_eq!(
            labels,
            vec![("a.b".into(), "v".into()), ("c".into(), "d".into())]
        );
        assert_eq!(v, 7.0);
    }

    /// Text format 1.0.0 quotes a UTF-8 name in HELP and TYPE lines too.
    #[test]
    fn quoted_names_in_help_and_type_lines() {
        for format in [Format::PromText, Format::OpenMetrics] {
            let body = "# HELP \"http.server.duration\" Latency.\n# TYPE \"http.server.duration\" histogram\n{\"http.server.duration_bucket\",le=\"1\"} 2\n{\"http.server.duration_count\"} 2\n";
            let body = if format == Format::OpenMetrics {
                format!("{body}# EOF\n")
            } else {
                body.to_string()
            };
            let v = parse_all(&body, format).unwrap();
            assert_eq!(v[0].0, "http.server.duration_bucket");
            assert_eq!(
                v[0].1,
                vec![("le".to_string(), "1".to_string())],
                "{format:?}"
            );
            assert_eq!(v[1].0, "http.server.duration_count");
        }
        assert!(
            err("# TYPE \"a.b\"gauge\n", Format::PromText)
                .reason
                .contains("expected a space after the quoted metric name")
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = err("ok 1\nbad{a=\"b\" 1\n", Format::PromText);
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("expected ','"), "{e}");
        let e = err("a 1 2 3", Format::PromText);
        assert!(e.reason.contains("unexpected data"), "{e}");
        assert_eq!((e.line, e.column), (1, 7));
        assert!(
            err("a abc", Format::PromText)
                .reason
                .contains("invalid sample value")
        );
        assert!(
            err("0a 1", Format::PromText)
                .reason
                .contains("invalid metric name")
        );
        assert!(
            err("a{1=\"x\"} 1", Format::PromText)
                .reason
                .contains("invalid label name")
        );
        assert!(
            err("a{b=\"x} 1", Format::PromText)
                .reason
                .contains("unterminated")
        );
        assert!(
            err("a 1 12.5", Format::PromText)
                .reason
                .contains("invalid timestamp")
        );
        assert!(
            err("a", Format::PromText)
                .reason
                .contains("space before the value")
        );
    }

    #[test]
    fn openmetrics_basics() {
        let input = "# TYPE foo counter\nfoo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\nfoo_created 1520430000.123\n# EOF\n";
        let got = parse_all(input, Format::OpenMetrics).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].3, Some(1_520_879_607_789));
        assert!(err("a 1\n", Format::OpenMetrics).reason.contains("# EOF"));
        assert!(
            err("a 1\n# EOF\nb 2\n", Format::OpenMetrics)
                .reason
                .contains("after # EOF")
        );
    }

    #[test]
    fn openmetrics_exemplars_are_kept_apart_from_the_labels() {
        let input = "# TYPE foo histogram\nfoo_bucket{le=\"0.5\",path=\"/\"} 3 # {trace_id=\"KOO5S4vxi0o\",span=\"s\\\"1\"} 0.45 1520879607.789\nfoo_bucket{le=\"+Inf\",path=\"/\"} 4 # {} 2\nfoo_count{path=\"/\"} 4\n# EOF\n";
        let buf = input.as_bytes();
        let mut scratch = Vec::new();
        let mut p = TextParser::new(buf, Format::OpenMetrics, &mut scratch);
        let names = |ls: &[LabelRef]| -> Vec<String> {
            ls.iter()
                .map(|l| String::from_utf8_lossy(l.name(buf)).into_owned())
                .collect()
        };
        let s = p.next().unwrap().unwrap();
        assert_eq!(names(s.labels), ["le", "path"]);
        let ex = s.exemplar.expect("first bucket has an exemplar");
        assert_eq!(names(ex.labels), ["trace_id", "span"]);
        assert!(ex.labels[1].escaped);
        assert_eq!(ex.labels[0].value(buf), b"KOO5S4vxi0o");
        assert_eq!((ex.value, ex.timestamp_ms), (0.45, Some(1_520_879_607_789)));
        let s = p.next().unwrap().unwrap();
        assert_eq!(names(s.labels), ["le", "path"]);
        let ex = s.exemplar.expect("empty label set is still an exemplar");
        assert!(ex.labels.is_empty());
        assert_eq!((ex.value, ex.timestamp_ms), (2.0, None));
        let s = p.next().unwrap().unwrap();
        assert_eq!(names(s.labels), ["path"]);
        assert!(s.exemplar.is_none());
        assert!(p.next().is_none());
    }

    #[test]
    fn bounds_written_canonically_skip_the_float_round_trip_with_the_same_result() {
        let slow = |raw: &str| {
            let mut out = Vec::new();
            match parse_float(raw.as_bytes()) {
                Some(f) => format_go_float(f, &mut out),
                None => out.extend_from_slice(raw.as_bytes()),
            }
            String::from_utf8(out).unwrap()
        };
        let fast = |raw: &str| {
            let mut out = Vec::new();
            normalize_float_label(raw.as_bytes(), &mut out);
            String::from_utf8(out).unwrap()
        };
        let mut raws: Vec<String> = [
            "0",
            "1",
            "10",
            "0.005",
            "0.0001",
            "0.00001",
            "2.5",
            "1.50",
            "+Inf",
            "-Inf",
            "-1",
            "999999",
            "1000000",
            "123456.5",
            "0.1234567890123456",
            "1.000000000000001",
            "00.5",
            ".5",
            "1.",
            "1e3",
            "NaN",
            "abc",
            "0.30000000000000004",
            "12345.678901234",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut rng = crate::testrng::Rng::new(0x1234_5678_9abc_def1);
        for _ in 0..20000 {
            let r = rng.next();
            let digits = format!("{}", r % 10_000_000_000_000_000);
            let point = (r >> 60) as usize % (digits.len() + 2);
            raws.push(if point == 0 || point > digits.len() {
                digits
            } else {
                // A point inside the digits (after the first, before the last where it can).
                let at = point.min(digits.len() - 1).max(1);
                format!("{}.{}", &digits[..at], &digits[at..])
            });
            raws.push(format!(
                "0.{:0>w$}",
                r % 100_000,
                w = (r >> 56) as usize % 8
            ));
        }
        for raw in &raws {
            assert_eq!(fast(raw), slow(raw), "{raw}");
        }
        // And it is taken where it should be.
        assert_eq!(canonical_as_written(b"0.005"), Some(false));
        assert_eq!(canonical_as_written(b"10"), Some(true));
        assert_eq!(canonical_as_written(b"1e3"), None);
    }
}
