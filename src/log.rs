//! Structured logging in Prometheus' look: `ts=… level=info component=scrape msg="…" key=value`,
//! or one JSON object per line with `--log.format=json`.
//!
//! A logger crate would add a dependency for what is forty lines here; the format must match
//! Prometheus' logfmt exactly so existing log pipelines keep parsing it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 0,
    Info = 1,
    Warn = 2,
    Error = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Logfmt,
    Json,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(0);

pub fn init(level: Level, format: Format) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    FORMAT.store(format as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Writes one log line. `fields` are extra key/value pairs, already formatted.
pub fn emit(level: Level, component: &str, msg: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(128);
    let ts = rfc3339_millis(SystemTime::now());
    let json = FORMAT.load(Ordering::Relaxed) == Format::Json as u8;
    let mut pairs: Vec<(&str, String)> = Vec::with_capacity(fields.len() + 4);
    pairs.push(("ts", ts));
    pairs.push(("level", level.as_str().to_string()));
    pairs.push(("component", component.to_string()));
    pairs.push(("msg", msg.to_string()));
    for (k, v) in fields {
        pairs.push((k, v.to_string()));
    }
    if json {
        line.push('{');
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            quoted(&mut line, k);
            line.push(':');
            quoted(&mut line, v);
        }
        line.push('}');
    } else {
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(k);
            line.push('=');
            logfmt_value(&mut line, v);
        }
    }
    line.push('\n');
    // One write per line so lines from different threads never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn logfmt_value(out: &mut String, v: &str) {
    let needs_quotes = v.is_empty()
        || v.bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'=' || b >= 0x7f);
    if needs_quotes {
        quoted(out, v);
    } else {
        out.push_str(v);
    }
}

/// A double-quoted string with `"`, `\` and control characters escaped; the escapes are the
/// same in logfmt and JSON.
pub fn quoted(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Formats a wall-clock time as RFC 3339 UTC with milliseconds, e.g. `2026-11-26T10:51:02.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `log!(Level::Info, "scrape", "msg", key = value, ...)`.
#[macro_export]
macro_rules! log {
    ($lvl:expr, $comp:expr, $msg:expr $(, $k:ident = $v:expr)* $(,)?) => {
        if $crate::log::enabled($lvl) {
            $crate::log::emit($lvl, $comp, &$msg, &[$((stringify!($k), &$v as &dyn std::fmt::Display)),*]);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_154_262_123);
        assert_eq!(rfc3339_millis(t), "2025-11-26T10:51:02.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // Leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn logfmt_quotes_only_when_needed() {
        let mut s = String::new();
        logfmt_value(&mut s, "plain");
        assert_eq!(s, "plain");
        let mut s = String::new();
        logfmt_value(&mut s, "two words \"q\"");
        assert_eq!(s, "\"two words \\\"q\\\"\"");
        let mut s = String::new();
        logfmt_value(&mut s, "");
        assert_eq!(s, "\"\"");
    }
}
