//! What one attempt at sending a batch came to, and the rules that decide it from a response,
//! as Prometheus decides (2xx sent; 5xx, and 429 with `retry_on_http_429`, retried; other
//! statuses dropped; Remote Write 2.0's written counts and its fallback to 1.0).

use std::fmt;
use std::time::Duration;

use crate::remote::v2::Counts;

/// Why an attempt is retried.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection could be made (nothing listens there, or it cannot be reached).
    Connect(String),
    /// No response within `remote_timeout`.
    Timeout(Duration),
    /// A status the receiver means to be retried (5xx, or 429 with `retry_on_http_429`).
    Status { status: u16, excerpt: String },
    /// Anything else before a response: credentials, TLS, a broken connection, redirects.
    Other(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout(t) => write!(f, "request timed out after {t:?}"),
            Failure::Status { status, excerpt } => {
                write!(f, "server returned HTTP status {status}: {excerpt}")
            }
            Failure::Other(e) => f.write_str(e),
        }
    }
}

impl Failure {
    /// What to tell a user the first time an endpoint fails this way.
    pub fn hint(&self) -> &'static str {
        match self {
            Failure::Connect(_) => {
                "is a receiver listening there? Prometheus accepts remote write only with --web.enable-remote-write-receiver"
            }
            _ => "samples stay queued and are sent when the endpoint answers",
        }
    }
}

impl From<crate::http::Error> for Failure {
    fn from(e: crate::http::Error) -> Failure {
        match e {
            crate::http::Error::Connect(e) => Failure::Connect(e.to_string()),
            e => Failure::Other(e.to_string()),
        }
    }
}

/// What became of one attempt.
#[derive(Debug)]
pub(super) enum Outcome {
    Sent,
    Retry {
        cause: Failure,
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
    },
    /// Refused for good: the batch is dropped and counted, as Prometheus drops it.
    Drop {
        reason: String,
    },
    /// The receiver does not take Remote Write 2.0: send 1.0 from now on, this batch first.
    Downgrade {
        reason: String,
    },
}

impl Outcome {
    pub fn retry(cause: Failure) -> Outcome {
        Outcome::Retry { cause, after: None }
    }
}

/// A response as [`classify`] reads it.
pub(super) struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
    pub retry_after: Option<&'a str>,
    /// `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written`.
    pub written: [Option<u64>; 3],
}

/// What the endpoint has shown and allows.
pub(super) struct Rules {
    /// `queue_config.retry_on_http_429`.
    pub retry_on_429: bool,
    /// A 2.0 request was once acknowledged with written counts.
    pub v2_confirmed: bool,
    /// Unix seconds now, for an HTTP-date `Retry-After`.
    pub now_secs: u64,
}

/// The decision for a response; for a 2.0 request (`sent`: what it held), also the samples the
/// receiver accepted but did not write (counted as failed, not retried) and whether it showed
/// it speaks 2.0.
pub(super) fn classify(a: &Answer, sent: Option<Counts>, rules: &Rules) -> Decision {
    let ok = (200..300).contains(&a.status);
    if let Some(sent) = sent {
        if ok {
            if a.written.iter().all(Option::is_none) {
                if sent == Counts::default() {
                    return Decision::of(Outcome::Sent);
                }
                // A 1.0 receiver that ignored the content type (the spec: treat as 415).
                return Decision::of(Outcome::Downgrade {
                    reason: format!(
                        "HTTP status {} without X-Prometheus-Remote-Write-*-Written headers",
                        a.status
                    ),
                });
            }
            let [s, h, e] = a.written.map(|w| w.unwrap_or(0));
            return Decision {
                outcome: Outcome::Sent,
                unwritten: Counts {
                    samples: sent.samples.saturating_sub(s),
                    histograms: sent.histograms.saturating_sub(h),
                    exemplars: sent.exemplars.saturating_sub(e),
                },
                confirms_v2: true,
            };
        }
        // 415 is the spec's refusal; a receiver from before 2.0 answers 400 (it cannot decode
        // the body) until a 2.0 request has once been accepted.
        if a.status == 415 || (a.status == 400 && !rules.v2_confirmed) {
            return Decision::of(Outcome::Downgrade {
                reason: format!(
                    "server returned HTTP status {}: {}",
                    a.status,
                    excerpt(a.body, 256)
                ),
            });
        }
    }
    if ok {
        return Decision::of(Outcome::Sent);
    }
    let excerpt = excerpt(a.body, 1024);
    if a.status >= 500 || (a.status == 429 && rules.retry_on_429) {
        let after = a
            .retry_after
            .and_then(|v| super::super::parse_retry_after(v, rules.now_secs));
        Decision::of(Outcome::Retry {
            cause: Failure::Status {
                status: a.status,
                excerpt,
            },
            after,
        })
    } else {
        Decision::of(Outcome::Drop {
            reason: format!("server returned HTTP status {}: {excerpt}", a.status),
        })
    }
}

/// [`classify`]'s answer.
#[derive(Debug)]
pub(super) struct Decision {
    pub outcome: Outcome,
    /// Accepted by a 2.0 receiver but not written: failed, not retried.
    pub unwritten: Counts,
    /// The receiver answered with written counts: it speaks 2.0.
    pub confirms_v2: bool,
}

impl Decision {
    fn of(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            unwritten: Counts::default(),
            confirms_v2: false,
        }
    }
}

/// The start of a response body, for a log line.
fn excerpt(body: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&body[..body.len().min(max)])
        .trim()
        .to_string()
}

/// A backoff with jitter, as Prometheus spreads retries: uniformly within ±25% of `d`.
pub(super) fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // A random seed per call from the standard library's hasher keys; no RNG crate needed.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let r = (h.finish() % 1_000) as f64 / 1_000.0; // [0, 1)
    d.mul_f64(0.75 + 0.5 * r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> Answer<'static> {
        Answer {
            status,
            body: b" refused \n",
            retry_after: None,
            written: [None; 3],
        }
    }

    fn rules(retry_on_429: bool, v2_confirmed: bool) -> Rules {
        Rules {
            retry_on_429,
            v2_confirmed,
            now_secs: 1_000,
        }
    }

    fn sent(samples: u64) -> Option<Counts> {
        Some(Counts {
            samples,
            ..Counts::default()
        })
    }

    /// The outcome's shape: "sent", "retry", "drop" or "downgrade".
    fn kind(d: &Decision) -> &'static str {
        match d.outcome {
            Outcome::Sent => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Drop { .. } => "drop",
            Outcome::Downgrade { .. } => "downgrade",
        }
    }

    #[test]
    fn statuses_as_prometheus_decides() {
        // (status, retry_on_http_429, 2.0 body, 2.0 confirmed, written samples, outcome)
        let cases = [
            (200, false, false, false, None, "sent"),
            (204, false, false, false, None, "sent"),
            (500, false, false, false, None, "retry"),
            (503, false, false, false, None, "retry"),
            (429, false, false, false, None, "drop"),
            (429, true, false, false, None, "retry"),
            (400, false, false, false, None, "drop"),
            (404, false, false, false, None, "drop"),
            (415, false, false, false, None, "drop"),
            // Remote Write 2.0.
            (204, false, true, false, Some(10), "sent"),
            (204, false, true, false, None, "downgrade"),
            (415, false, true, true, None, "downgrade"),
            (400, false, true, false, None, "downgrade"),
            (400, false, true, true, None, "drop"),
            (500, false, true, true, None, "retry"),
        ];
        for (status, r429, v2, confirmed, written, want) in cases {
            let a = Answer {
                written: [written, None, None],
                ..answer(status)
            };
            let d = classify(&a, v2.then(|| sent(10)).flatten(), &rules(r429, confirmed));
            assert_eq!(kind(&d), want, "status {status} 429-retry {r429} v2 {v2}");
        }
    }

    #[test]
    fn an_empty_2_0_request_needs_no_written_counts() {
        let d = classify(&answer(204), Some(Counts::default()), &rules(false, false));
        assert_eq!(kind(&d), "sent");
        assert!(!d.confirms_v2);
    }

    #[test]
    fn a_partial_2_0_write_counts_the_rest_as_unwritten() {
        let a = Answer {
            written: [Some(7), Some(0), None],
            ..answer(200)
        };
        let d = classify(&a, sent(10), &rules(false, false));
        assert_eq!(
            (kind(&d), d.unwritten.total(), d.confirms_v2),
            ("sent", 3, true)
        );
    }

    #[test]
    fn retry_after_is_honoured_in_seconds_and_as_a_date() {
        let r = rules(true, false);
        for (value, want) in [
            ("2", Some(Duration::from_secs(2))),
            (
                "Thu, 01 Jan 1970 00:17:00 GMT",
                Some(Duration::from_secs(20)),
            ),
            ("soon", None),
        ] {
            let a = Answer {
                retry_after: Some(value),
                ..answer(429)
            };
            match classify(&a, None, &r).outcome {
                Outcome::Retry { after, .. } => assert_eq!(after, want, "{value}"),
                o => panic!("{value}: {o:?}"),
            }
        }
    }

    #[test]
    fn failures_say_what_happened_and_hint_at_a_fix() {
        let refused = Failure::from(crate::http::Error::Connect(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(refused, Failure::Connect(_)));
        assert!(refused.to_string().starts_with("connect: "));
        assert!(
            refused
                .hint()
                .contains("--web.enable-remote-write-receiver")
        );
        let status = Failure::Status {
            status: 503,
            excerpt: "busy".into(),
        };
        assert_eq!(status.to_string(), "server returned HTTP status 503: busy");
        assert!(status.hint().contains("stay queued"));
        let d = classify(&answer(500), None, &rules(false, false));
        match d.outcome {
            Outcome::Retry { cause, .. } => {
                assert_eq!(
                    cause.to_string(),
                    "server returned HTTP status 500: refused"
                )
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(4));
            assert!(
                j >= Duration::from_secs(3) && j < Duration::from_secs(5),
                "{j:?}"
            );
        }
    }
}
