//! Prometheus' command-line flags that are not spate's, and what spate does with each: no
//! Prometheus agent flag is ever "unknown".

/// What spate does with a Prometheus flag it has no entry for in `FLAGS`.
pub(super) enum Foreign {
    /// A server flag: Prometheus agent refuses it too, with this message.
    ServerOnly,
    /// Accepted without effect (`value`: it takes one), for the reason given.
    NoEffect { value: bool, why: &'static str },
    /// Refused, for the reason given.
    Refused(&'static str),
}

/// Prometheus' flags (2.x and 3.x) that are not spate's: never an "unknown flag".
pub(super) const PROMETHEUS_FLAGS: &[(&str, Foreign)] = {
    use Foreign::*;
    const GO: &str = "a Go runtime setting; spate is not a Go program";
    const NO_UI_FILES: &str = "spate's web UI is compiled in and serves no files from disk";
    &[
        ("storage.tsdb.path", ServerOnly),
        ("storage.tsdb.retention", ServerOnly),
        ("storage.tsdb.retention.time", ServerOnly),
        ("storage.tsdb.retention.size", ServerOnly),
        ("storage.tsdb.no-lockfile", ServerOnly),
        ("storage.tsdb.use-lockfile", ServerOnly),
        ("storage.tsdb.head-chunks-write-queue-size", ServerOnly),
        ("storage.tsdb.min-block-duration", ServerOnly),
        ("storage.tsdb.max-block-duration", ServerOnly),
        ("storage.tsdb.max-block-chunk-segment-size", ServerOnly),
        ("storage.tsdb.wal-segment-size", ServerOnly),
        ("storage.tsdb.wal-compression", ServerOnly),
        ("storage.tsdb.wal-compression-type", ServerOnly),
        ("storage.tsdb.samples-per-chunk", ServerOnly),
        ("storage.tsdb.allow-overlapping-blocks", ServerOnly),
        ("storage.remote.read-sample-limit", ServerOnly),
        ("storage.remote.read-concurrent-limit", ServerOnly),
        ("storage.remote.read-max-bytes-in-frame", ServerOnly),
        ("rules.alert.for-outage-tolerance", ServerOnly),
        ("rules.alert.for-grace-period", ServerOnly),
        ("rules.alert.resend-delay", ServerOnly),
        ("rules.max-concurrent-evals", ServerOnly),
        ("alertmanager.notification-queue-capacity", ServerOnly),
        (
            "alertmanager.drain-notification-queue-on-shutdown",
            ServerOnly,
        ),
        ("query.lookback-delta", ServerOnly),
        ("query.timeout", ServerOnly),
        ("query.max-concurrency", ServerOnly),
        ("query.max-samples", ServerOnly),
        (
            "auto-gomaxprocs",
            NoEffect {
                value: false,
                why: GO,
            },
        ),
        (
            "auto-gomemlimit",
            NoEffect {
                value: false,
                why: GO,
            },
        ),
        (
            "auto-gomemlimit.ratio",
            NoEffect {
                value: true,
                why: GO,
            },
        ),
        (
            "web.enable-admin-api",
            NoEffect {
                value: false,
                why: "an agent has no TSDB for the admin API to act on",
            },
        ),
        (
            "web.console.templates",
            NoEffect {
                value: true,
                why: "an agent serves no consoles",
            },
        ),
        (
            "web.console.libraries",
            NoEffect {
                value: true,
                why: "an agent serves no consoles",
            },
        ),
        (
            "web.max-notifications-subscribers",
            NoEffect {
                value: true,
                why: "spate's UI has no notifications stream",
            },
        ),
        (
            "scrape.discovery-reload-interval",
            NoEffect {
                value: true,
                why: "spate applies discovery changes within 200 ms",
            },
        ),
        (
            "storage.agent.wal-truncate-frequency",
            NoEffect {
                value: true,
                why: "spate deletes a WAL segment as soon as every endpoint has sent it",
            },
        ),
        (
            "storage.agent.retention.min-time",
            NoEffect {
                value: true,
                why: "spate keeps what an endpoint has not sent and deletes what all have sent",
            },
        ),
        ("web.local-assets", Refused(NO_UI_FILES)),
        ("web.user-assets", Refused(NO_UI_FILES)),
        (
            "web.enable-remote-write-receiver",
            Refused("spate sends remote write; it does not receive it"),
        ),
        (
            "web.remote-write-receiver.accepted-protobuf-messages",
            Refused("spate sends remote write; it does not receive it"),
        ),
        (
            "web.enable-otlp-receiver",
            Refused("spate does not receive OTLP"),
        ),
        (
            "scrape.name-escaping-scheme",
            NoEffect {
                value: true,
                why: "it escapes the names Prometheus serves (/federate, its own /metrics) to clients without UTF-8 support; an agent does not federate and spate's own metric names need no escaping (scrapes negotiate with metric_name_escaping_scheme)",
            },
        ),
        (
            "write-documentation",
            Refused("spate documents its flags in --help and README.md"),
        ),
    ]
};
