//! Prometheus' duration syntax (`1y2w3d4h5m6s7ms`), as `model.ParseDuration` accepts it: units in
//! that order, each at most once, integers only; `0` alone is allowed.

use std::fmt;
use std::time::Duration;

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// A duration written in Prometheus syntax. Kept in milliseconds, as Prometheus does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(pub Duration);

impl PromDuration {
    pub const fn from_secs(s: u64) -> PromDuration {
        PromDuration(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> PromDuration {
        PromDuration(Duration::from_millis(ms))
    }
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration string".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut next_unit = 0; // index into UNITS of the smallest unit still allowed
    let mut total: u64 = 0;
    let bad = || format!("not a valid duration string: {s:?}");
    while pos < bytes.len() {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == start {
            return Err(bad());
        }
        let n: u64 = s[start..pos].parse().map_err(|_| bad())?;
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &s[unit_start..pos];
        let idx = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .map(|i| i + next_unit)
            .ok_or_else(bad)?;
        next_unit = idx + 1;
        let ms = n
            .checked_mul(UNITS[idx].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration out of range: {s:?}"))?;
        // Go's time.Duration is int64 nanoseconds.
        if ms > (i64::MAX as u64) / 1_000_000 {
            return Err(format!("duration out of range: {s:?}"));
        }
        total = ms;
    }
    Ok(Duration::from_millis(total))
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (i, (unit, mult)) in UNITS.iter().enumerate() {
            // Years and weeks only when exact: "90d" reads better than "12w6d".
            if i < 2 && !ms.is_multiple_of(*mult) {
                continue;
            }
            let v = ms / mult;
            if v > 0 {
                write!(f, "{v}{unit}")?;
                ms -= v * mult;
            }
        }
        Ok(())
    }
}

impl<'de> serde::Deserialize<'de> for PromDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(PromDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Result<u64, String> {
        parse_duration(s).map(|d| d.as_millis() as u64)
    }

    #[test]
    fn parses_prometheus_durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("0s", 0),
            ("100ms", 100),
            ("1s", 1000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
            ("2d", 172_800_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            (
                "1y2w3d4h5m6s7ms",
                31_536_000_000 + 1_209_600_000 + 259_200_000 + 14_400_000 + 300_000 + 6000 + 7,
            ),
            ("90m", 5_400_000),
        ];
        for (s, want) in cases {
            assert_eq!(ms(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_durations() {
        for s in [
            "", "1", "s", "1.5s", "1s1m", "1m1m", "-1s", "1 s", "1S", "1sec", "10", "5mms", "ms",
        ] {
            assert!(ms(s).is_err(), "{s:?} should be rejected");
        }
        assert!(ms("300000y").is_err(), "overflow must be rejected");
    }

    #[test]
    fn formats_like_prometheus() {
        let cases: &[(u64, &str)] = &[
            (0, "0s"),
            (100, "100ms"),
            (90_000, "1m30s"),
            (604_800_000, "1w"),
            (691_200_000, "8d"),
            (31_536_000_000, "1y"),
            (3_600_000 + 1, "1h1ms"),
        ];
        for (v, want) in cases {
            assert_eq!(PromDuration::from_millis(*v).to_string(), *want);
            assert_eq!(ms(want), Ok(*v), "round trip of {want}");
        }
    }
}
