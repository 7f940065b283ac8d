//! Remote Write: the per-core sending shards (`shard`), Remote Write 2.0 conversion (`v2`),
//! metadata and created timestamps (`metadata`), and request decoding (`decode`, for the bench
//! sink and tests). The entries themselves are `crate::entry`'s.
//!
//! **Invariant:** each core sends its own series through its own shard per endpoint, one
//! request in flight per shard, retried until it succeeds or is dropped: per-series order holds
//! with no cross-core coordination.

pub mod decode;
pub mod metadata;
mod senders;
mod shard;
pub mod v2;

pub use senders::{ForgetShard, MakeShard, Senders};
pub use shard::{Endpoint, Shard};

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate). Returns the delay
/// from `now_unix_secs`, or `None` when absent, malformed or already past.
pub fn parse_retry_after(v: &str, now_unix_secs: u64) -> Option<std::time::Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    (at > now_unix_secs).then(|| std::time::Duration::from_secs(at - now_unix_secs))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to Unix seconds.
fn parse_http_date(s: &str) -> Option<u64> {
    let rest = s.split_once(", ")?.1;
    let mut it = rest.split(' ');
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, m, sec): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", 784_111_777),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            None,
            "past dates fall back to backoff"
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
