//! The lane-count policy: what the lanes saw in a window (requests, samples, latency,
//! failures, busy time, whether the endpoint was behind) and what was learnt before → how many
//! lanes to run next. A pure function, so the rules in docs/ARCHITECTURE.md ("Lanes") are
//! tested as a table below.

use std::time::Duration;

use crate::runtime::Instant;

/// How often the lane count is reconsidered.
pub(super) const ADAPT_EVERY: Duration = Duration::from_secs(2);

/// How long a lane count that did not send faster stays the most tried.
const CEILING_FOR: Duration = Duration::from_secs(60);

/// What the lanes saw since the shard last reconsidered its lane count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    pub started: Instant,
    /// Requests that succeeded, their samples and their summed latency.
    pub sent: u32,
    pub samples: u64,
    pub latency: Duration,
    /// Attempts that failed with a retryable error.
    pub failed: u32,
    /// Time lanes spent with a request in flight.
    pub busy: Duration,
    /// Seen behind: reading back from the WAL, or more queued than the lanes send at once.
    pub behind: bool,
}

impl Window {
    pub fn new() -> Window {
        Window {
            started: Instant::now(),
            sent: 0,
            samples: 0,
            latency: Duration::ZERO,
            failed: 0,
            busy: Duration::ZERO,
            behind: false,
        }
    }
}

/// What the policy remembers between windows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct History {
    /// The lowest latency per sample seen lately (seconds): the endpoint's when not loaded.
    pub latency_floor: Option<f64>,
    /// The lane count and send rate (samples/s) of the last window spent behind.
    pub last_behind: Option<(usize, f64)>,
    /// A lane count that did not send faster than one fewer, and until when it is the most
    /// lanes tried.
    pub ceiling: Option<(usize, Instant)>,
}

/// A window as the policy reads it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Observed {
    /// What the lanes saw; its `behind` is whether the shard was behind at any time of the
    /// window, or is now.
    pub window: Window,
    /// The lanes running during the window.
    pub lanes: usize,
    /// `min_shards` and `max_shards` for this core.
    pub bounds: (usize, usize),
    /// The window's length.
    pub span: Duration,
}

/// The lane count for the next window (see docs/ARCHITECTURE.md, "Lanes"), updating `h`.
pub(super) fn decide(observed: &Observed, h: &mut History, now: Instant) -> usize {
    let (min, max) = observed.bounds;
    let n = observed.lanes;
    let span = observed.span.max(Duration::from_millis(1)).as_secs_f64();
    let o = &observed.window;
    // Latency per sample, so that full batches (behind) and small ones (live) compare.
    let latency = (o.samples > 0).then(|| o.latency.as_secs_f64() / o.samples as f64);
    if let Some(l) = latency {
        // The floor forgets slowly (5% a window), so a lasting change is learnt.
        h.latency_floor = Some(h.latency_floor.map_or(l, |f| l.min(f * 1.05)));
    }
    let floor = h.latency_floor.unwrap_or(0.0);
    let rate = o.samples as f64 / span;
    let utilization = o.busy.as_secs_f64() / (span * n.max(1) as f64);
    if h.ceiling.is_some_and(|(_, until)| now >= until) {
        h.ceiling = None;
    }
    let ceiling = h.ceiling.map_or(max, |(c, _)| c.min(max));
    if o.failed > 0 && o.sent == 0 {
        // Nothing gets through: more or fewer lanes cannot help, and a new generation could
        // not start before the old one is sent.
        n
    } else if o.failed > 0 {
        // Errors or throttling under load: halve.
        (n / 2).max(min)
    } else if o.behind && o.sent == 0 {
        // Behind, but no request finished (held behind an older backlog, or one slow
        // request): nothing learnt.
        n
    } else if o.behind {
        match h.last_behind.replace((n, rate)) {
            // More lanes did not send 10% faster: go back, and stay at most there a while.
            Some((m, r)) if m < n && rate < r * 1.1 => {
                h.ceiling = Some((m, now + CEILING_FOR));
                m.max(min)
            }
            // Latency climbs under load: the receiver is saturated.
            _ if latency.is_some_and(|l| l > floor * 2.0) => (n - 1).max(min),
            _ => (n * 2).min(ceiling).max(min),
        }
    } else {
        h.last_behind = None;
        if utilization < 0.3 {
            (n - 1).max(min)
        } else {
            n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// A 2 s window of 4 lanes within 1..=16, behind, with nothing sent and nothing failed.
    fn window() -> Observed {
        Observed {
            window: Window {
                behind: true,
                ..Window::new()
            },
            lanes: 4,
            bounds: (1, 16),
            span: 2 * SEC,
        }
    }

    /// `sent` requests of 1,000 samples each taking `ms` milliseconds.
    fn sending(mut o: Observed, sent: u32, ms: u64) -> Observed {
        let w = &mut o.window;
        w.sent = sent;
        w.samples = u64::from(sent) * 1000;
        w.latency = Duration::from_millis(ms * u64::from(sent));
        w.busy = w.latency;
        o
    }

    /// `o` with `failed` retryable failures.
    fn failing(mut o: Observed, failed: u32) -> Observed {
        o.window.failed = failed;
        o
    }

    /// `o` keeping up (not behind).
    fn live(mut o: Observed) -> Observed {
        o.window.behind = false;
        o
    }

    #[test]
    fn rules_as_a_table() {
        let now = Instant::now();
        let floor = |s: f64| History {
            latency_floor: Some(s),
            ..History::default()
        };
        // (case, window, history before, lanes after)
        let cases: Vec<(&str, Observed, History, usize)> = vec![
            (
                "nothing gets through: unchanged",
                failing(window(), 5),
                History::default(),
                4,
            ),
            (
                "errors under load: halve",
                failing(sending(window(), 10, 10), 2),
                History::default(),
                2,
            ),
            (
                "errors under load: halve, not below min",
                Observed {
                    bounds: (3, 16),
                    ..failing(sending(window(), 10, 10), 2)
                },
                History::default(),
                3,
            ),
            (
                "behind, no request finished: unchanged",
                window(),
                History::default(),
                4,
            ),
            (
                "behind, first time: double",
                sending(window(), 10, 10),
                floor(10e-6),
                8,
            ),
            (
                "behind: double, not above max",
                Observed {
                    bounds: (1, 6),
                    ..sending(window(), 10, 10)
                },
                floor(10e-6),
                6,
            ),
            (
                "behind, the last doubling sent 10% faster: double again",
                sending(window(), 20, 10),
                History {
                    last_behind: Some((2, 5_000.0)),
                    ..floor(10e-6)
                },
                8,
            ),
            (
                "behind, the last doubling did not send 10% faster: back",
                sending(window(), 10, 10),
                History {
                    last_behind: Some((2, 4_800.0)),
                    ..floor(10e-6)
                },
                2,
            ),
            (
                "behind, latency per sample over twice the floor: one fewer",
                sending(window(), 10, 30),
                floor(10e-6),
                3,
            ),
            (
                "behind, under a ceiling: double only up to it",
                sending(window(), 10, 10),
                History {
                    ceiling: Some((5, now + 30 * SEC)),
                    ..floor(10e-6)
                },
                5,
            ),
            (
                "behind, an expired ceiling no longer holds",
                sending(window(), 10, 10),
                History {
                    ceiling: Some((5, now)),
                    ..floor(10e-6)
                },
                8,
            ),
            (
                "keeping up, lanes mostly idle: one fewer",
                live(sending(window(), 10, 10)),
                History::default(),
                3,
            ),
            (
                "keeping up, idle, at min: unchanged",
                Observed {
                    bounds: (4, 16),
                    ..live(sending(window(), 10, 10))
                },
                History::default(),
                4,
            ),
            (
                "keeping up, lanes busy: unchanged",
                live(sending(window(), 10, 300)),
                History::default(),
                4,
            ),
        ];
        for (case, o, mut h, want) in cases {
            assert_eq!(decide(&o, &mut h, now), want, "{case}");
        }
    }

    #[test]
    fn going_back_sets_a_ceiling_for_a_minute() {
        let now = Instant::now();
        let mut h = History {
            latency_floor: Some(10e-6),
            last_behind: Some((2, 4_800.0)),
            ceiling: None,
        };
        assert_eq!(decide(&sending(window(), 10, 10), &mut h, now), 2);
        assert_eq!(h.ceiling, Some((2, now + CEILING_FOR)));
        // At 2 lanes, still behind: doubling is capped by the ceiling.
        let o = Observed {
            lanes: 2,
            ..sending(window(), 10, 10)
        };
        assert_eq!(decide(&o, &mut h, now + SEC), 2);
        assert_eq!(
            decide(&o, &mut h, now + CEILING_FOR),
            4,
            "the ceiling expired"
        );
    }

    #[test]
    fn the_latency_floor_follows_the_lowest_and_forgets_slowly() {
        let now = Instant::now();
        let mut h = History::default();
        let live = |ms| live(sending(window(), 10, ms));
        decide(&live(20), &mut h, now);
        assert_eq!(h.latency_floor, Some(20e-6));
        decide(&live(10), &mut h, now);
        assert_eq!(h.latency_floor, Some(10e-6));
        decide(&live(40), &mut h, now);
        let f = h.latency_floor.unwrap();
        assert!((f - 10.5e-6).abs() < 1e-12, "5% a window: {f}");
        // Keeping up forgets the last window spent behind.
        h.last_behind = Some((4, 1.0));
        decide(&live(10), &mut h, now);
        assert_eq!(h.last_behind, None);
    }
}
