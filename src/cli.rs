//! Command-line flags, named and defaulted as Prometheus agent's are, and subcommands.
//!
//! Flags take `--name=value` or `--name value`; booleans take `--name` or `--no-name`, as with
//! Prometheus' kingpin. An unknown flag or a bad value is an error that names it.

use std::path::PathBuf;
use std::time::Duration;

use crate::log::{Format, Level};

#[derive(Clone, Debug, PartialEq)]
pub struct AgentOptions {
    pub config_file: PathBuf,
    pub storage_path: PathBuf,
    pub listen_address: String,
    pub log_level: Level,
    pub log_format: Format,
    /// Data-plane cores; `None` means every CPU this process may run on.
    pub cores: Option<usize>,
    pub flush_deadline: Duration,
    pub wal_segment_size: u64,
    pub wal_compression: bool,
    /// `--storage.agent.wal-compression-type`: snappy or zstd, when compression is on.
    pub wal_compression_type: crate::wal::Compression,
    pub wal_fsync_interval: Duration,
    /// Bound on all WAL segments together; `None`: a fifth of the filesystem.
    pub wal_max_size: Option<u64>,
    /// `--storage.agent.retention.max-time`; zero: no age bound (Prometheus' default).
    pub wal_max_time: Duration,
    /// `--storage.agent.no-lockfile`: do not lock the storage directory.
    pub no_lockfile: bool,
    /// `--web.enable-lifecycle`: `POST /-/reload` reloads the configuration.
    pub enable_lifecycle: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            config_file: PathBuf::from("prometheus.yml"),
            storage_path: PathBuf::from("data-agent/"),
            listen_address: "0.0.0.0:9095".into(),
            log_level: Level::Info,
            log_format: Format::Logfmt,
            cores: None,
            flush_deadline: Duration::from_secs(60),
            wal_segment_size: 128 << 20,
            wal_compression: true,
            wal_compression_type: crate::wal::Compression::Snappy,
            wal_fsync_interval: Duration::from_secs(1),
            wal_max_size: None,
            wal_max_time: Duration::ZERO,
            no_lockfile: false,
            enable_lifecycle: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Run(AgentOptions),
    CheckConfig(Vec<PathBuf>),
    Version,
    Help,
}

pub const USAGE: &str = "\
usage: spate [<flags>] [<command> [<args> ...]]

spate: a thread-per-core, Prometheus-compatible metrics agent. It scrapes the targets of a
Prometheus configuration and forwards every sample by Remote Write.

Flags:
  -h, --help                     Show this help.
      --version                  Show the version.
      --config.file=\"prometheus.yml\"
                                 Prometheus configuration file path.
      --storage.agent.path=\"data-agent/\"
                                 Base path for agent data storage.
      --web.listen-address=\"0.0.0.0:9095\"
                                 Address for /metrics, /-/healthy, /-/ready and the API.
      --web.enable-lifecycle     Enable configuration reloads by POST /-/reload (SIGHUP
                                 always reloads).
      --enable-feature=...       Comma-separated feature names. 'agent' is accepted (spate
                                 always runs as an agent); other names are refused.
      --agent                    Accepted for Prometheus 3 command lines; spate is always an agent.
      --log.level=info           Only log messages at or above this level: debug, info, warn, error.
      --log.format=logfmt        Output format of log messages: logfmt, json.
      --cores=N                  Data-plane cores (pinned threads). Default: every CPU
                                 this process may run on.
      --storage.remote.flush-deadline=1m
                                 How long to keep sending queued samples on shutdown
                                 (what is left stays in the WAL and is sent after restart).
      --storage.agent.wal-segment-size=128MB
                                 Size of a WAL segment file.
      --storage.agent.wal-compression-type=snappy
                                 How WAL records are compressed: snappy or zstd (zstd takes
                                 more CPU and less disk).
      --[no-]storage.agent.wal-compression
                                 Compress WAL records with snappy (default on; also
                                 =snappy, =none).
      --storage.agent.wal-fsync-interval=1s
                                 Most time between fdatasync calls on the WAL (0s: every
                                 commit): what a power loss can take. Commits are written
                                 before they return, so a crash of spate loses none.
      --storage.agent.no-lockfile
                                 Do not lock the storage directory (it is locked by default
                                 so that two agents never share one WAL).
      --storage.agent.retention.max-time=0s
                                 Delete WAL segments last written longer ago than this,
                                 sent or not (0s: no age bound).
      --storage.agent.retention.max-size=SIZE
                                 Bound on the WAL's disk use (e.g. 10GB). Default: a fifth
                                 of the filesystem holding --storage.agent.path.

Commands:
  run (default)                  Run the agent.
  check-config <file>...         Check configuration files; exits non-zero at the first
                                 invalid one.
  bench <tool> [<flags>]         Benchmark tools: targets, sink, push ('spate bench --help').
  wal inspect <dir>              Show a WAL: segments, records, damage, cursors and backlogs.
";

#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spate: error: {}, try --help", self.0)
    }
}

pub fn parse(args: &[String]) -> Result<Command, CliError> {
    let mut opts = AgentOptions::default();
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            if arg.starts_with('-') && arg.len() > 1 {
                return Err(CliError(format!("unknown short flag '{arg}'")));
            }
            positional.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        // Boolean flags.
        match name {
            "version" => return Ok(Command::Version),
            "storage.agent.no-lockfile" if inline.is_none() => {
                opts.no_lockfile = true;
                continue;
            }
            "web.enable-lifecycle" if inline.is_none() => {
                opts.enable_lifecycle = true;
                continue;
            }
            "no-storage.agent.wal-compression" => {
                opts.wal_compression = false;
                continue;
            }
            "storage.agent.wal-compression" if inline.is_none() => {
                opts.wal_compression = true;
                continue;
            }
            "agent" => {
                if let Some(v) = inline {
                    return Err(CliError(format!(
                        "flag '--agent' is a switch and takes no value, got '{v}'"
                    )));
                }
                continue;
            }
            _ => {}
        }
        let mut value = || -> Result<String, CliError> {
            if let Some(v) = &inline {
                return Ok(v.clone());
            }
            let v = args
                .get(i)
                .ok_or_else(|| CliError(format!("expected argument for flag '--{name}'")))?;
            i += 1;
            Ok(v.clone())
        };
        match name {
            "config.file" => opts.config_file = PathBuf::from(value()?),
            "storage.agent.path" => opts.storage_path = PathBuf::from(value()?),
            "web.listen-address" => {
                let v = value()?;
                crate::http::split_host_port(&v, 0)
                    .ok()
                    .filter(|(_, port)| v.contains(':') && (*port > 0 || v.ends_with(":0")))
                    .ok_or_else(|| CliError(format!("invalid value '{v}' for flag '--web.listen-address': expected host:port")))?;
                opts.listen_address = v;
            }
            "enable-feature" => {
                let v = value()?;
                for feature in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if feature != "agent" {
                        return Err(CliError(format!(
                            "unknown or unsupported feature '{feature}' in flag '--enable-feature' (spate accepts: agent)"
                        )));
                    }
                }
            }
            "log.level" => {
                let v = value()?;
                opts.log_level = Level::parse(&v).ok_or_else(|| {
                    CliError(format!("invalid value '{v}' for flag '--log.level': expected one of debug, info, warn, error"))
                })?;
            }
            "log.format" => {
                let v = value()?;
                opts.log_format = match v.as_str() {
                    "logfmt" => Format::Logfmt,
                    "json" => Format::Json,
                    _ => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for flag '--log.format': expected logfmt or json"
                        )));
                    }
                };
            }
            "cores" => {
                let v = value()?;
                let n: usize = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    CliError(format!(
                        "invalid value '{v}' for flag '--cores': expected a positive integer"
                    ))
                })?;
                opts.cores = Some(n);
            }
            "storage.remote.flush-deadline" => {
                let v = value()?;
                opts.flush_deadline = crate::config::parse_duration(&v).map_err(|e| {
                    CliError(format!(
                        "invalid value '{v}' for flag '--storage.remote.flush-deadline': {e}"
                    ))
                })?;
            }
            "storage.agent.wal-compression" => {
                let v = value()?;
                match v.as_str() {
                    "true" => opts.wal_compression = true,
                    "false" | "none" => opts.wal_compression = false,
                    "snappy" | "zstd" => {
                        opts.wal_compression = true;
                        opts.wal_compression_type = compression_type(&v, name)?;
                    }
                    _ => {
                        return Err(CliError(format!(
                            "invalid value '{v}' for flag '--storage.agent.wal-compression': expected true, false, snappy, zstd or none"
                        )));
                    }
                }
            }
            "storage.agent.wal-compression-type" => {
                let v = value()?;
                opts.wal_compression_type = compression_type(&v, name)?;
            }
            "storage.agent.wal-segment-size" | "storage.agent.retention.max-size" => {
                let v = value()?;
                let bytes = parse_bytes(&v).filter(|b| *b >= 4096).ok_or_else(|| {
                    CliError(format!(
                        "invalid value '{v}' for flag '--{name}': expected a size of at least 4KB such as 128MB or 10GB"
                    ))
                })?;
                if name == "storage.agent.wal-segment-size" {
                    opts.wal_segment_size = bytes.min(u64::from(u32::MAX) / 2);
                } else {
                    opts.wal_max_size = Some(bytes);
                }
            }
            "storage.agent.retention.max-time" => {
                let v = value()?;
                opts.wal_max_time = crate::config::parse_duration(&v)
                    .or_else(|e| if v == "0" { Ok(Duration::ZERO) } else { Err(e) })
                    .map_err(|e| {
                        CliError(format!(
                            "invalid value '{v}' for flag '--storage.agent.retention.max-time': {e}"
                        ))
                    })?;
            }
            "storage.agent.wal-fsync-interval" => {
                let v = value()?;
                opts.wal_fsync_interval = crate::config::parse_duration(&v)
                    .or_else(|e| if v == "0" { Ok(Duration::ZERO) } else { Err(e) })
                    .map_err(|e| {
                        CliError(format!("invalid value '{v}' for flag '--{name}': {e}"))
                    })?;
            }
            _ => return Err(CliError(format!("unknown long flag '--{name}'"))),
        }
    }
    match positional.first().map(String::as_str) {
        None | Some("run") if positional.len() <= 1 => Ok(Command::Run(opts)),
        Some("check-config") => {
            let files: Vec<PathBuf> = positional[1..].iter().map(PathBuf::from).collect();
            if files.is_empty() {
                return Err(CliError(
                    "required argument 'config-files' not provided to check-config".into(),
                ));
            }
            Ok(Command::CheckConfig(files))
        }
        Some("run") => Err(CliError(format!("unexpected argument '{}'", positional[1]))),
        Some(other) => Err(CliError(format!("unknown command or argument '{other}'"))),
        None => unreachable!("handled by the first arm"),
    }
}

/// A byte size as Prometheus' flags take it: a number and a base-2 unit (`B`, `KB`, `MB`,
/// `GB`, `TB`, also written `KiB`…).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let shift = match &s[digits..] {
        "" | "B" => 0,
        "KB" | "KiB" => 10,
        "MB" | "MiB" => 20,
        "GB" | "GiB" => 30,
        "TB" | "TiB" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn compression_type(v: &str, flag: &str) -> Result<crate::wal::Compression, CliError> {
    match v {
        "snappy" => Ok(crate::wal::Compression::Snappy),
        "zstd" => Ok(crate::wal::Compression::Zstd),
        _ => Err(CliError(format!(
            "invalid value '{v}' for flag '--{flag}': expected snappy or zstd"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_flags() {
        let o = run(&[]);
        assert_eq!(o.wal_segment_size, 128 << 20);
        assert!(o.wal_compression);
        assert_eq!(o.wal_max_size, None);
        let o = run(&[
            "--storage.agent.wal-segment-size=64MB",
            "--no-storage.agent.wal-compression",
            "--storage.agent.retention.max-size",
            "2GB",
            "--storage.agent.wal-fsync-interval=0",
        ]);
        assert_eq!(o.wal_segment_size, 64 << 20);
        assert!(!o.wal_compression);
        assert_eq!(o.wal_max_size, Some(2 << 30));
        assert_eq!(o.wal_fsync_interval, Duration::ZERO);
        assert!(run(&["--storage.agent.wal-compression=snappy"]).wal_compression);
        let z = run(&["--storage.agent.wal-compression-type=zstd"]);
        assert!(z.wal_compression && z.wal_compression_type == crate::wal::Compression::Zstd);
        let z = run(&["--storage.agent.wal-compression=zstd"]);
        assert!(z.wal_compression && z.wal_compression_type == crate::wal::Compression::Zstd);
        assert!(run(&["--storage.agent.no-lockfile"]).no_lockfile);
        assert!(run(&["--web.enable-lifecycle"]).enable_lifecycle);
        assert!(!run(&[]).enable_lifecycle);
        assert!(!run(&[]).no_lockfile);
        for (args, want) in [
            (
                &["--storage.agent.wal-segment-size=12XB"][..],
                "flag '--storage.agent.wal-segment-size'",
            ),
            (
                &["--storage.agent.retention.max-size=1KB"][..],
                "at least 4KB",
            ),
            (
                &["--storage.agent.wal-compression-type=lz4"][..],
                "expected snappy or zstd",
            ),
        ] {
            let e = p(args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    fn p(args: &[&str]) -> Result<Command, CliError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> AgentOptions {
        match p(args) {
            Ok(Command::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn defaults_match_prometheus_agent() {
        let o = run(&[]);
        assert_eq!(o.config_file, PathBuf::from("prometheus.yml"));
        assert_eq!(o.storage_path, PathBuf::from("data-agent/"));
        assert_eq!(o.listen_address, "0.0.0.0:9095");
        assert_eq!(o.log_level, Level::Info);
        assert_eq!(o.log_format, Format::Logfmt);
        assert_eq!(o.cores, None);
        assert_eq!(o.flush_deadline, Duration::from_secs(60));
    }

    #[test]
    fn accepts_both_value_styles_and_agent_flags() {
        let o = run(&[
            "--config.file=/etc/p.yml",
            "--storage.agent.path",
            "/var/lib/spate",
            "--enable-feature=agent",
            "--agent",
            "--web.listen-address=127.0.0.1:0",
            "--log.level=debug",
            "--log.format",
            "json",
            "--cores=2",
            "--storage.remote.flush-deadline=5s",
        ]);
        assert_eq!(o.config_file, PathBuf::from("/etc/p.yml"));
        assert_eq!(o.storage_path, PathBuf::from("/var/lib/spate"));
        assert_eq!(o.listen_address, "127.0.0.1:0");
        assert_eq!(o.log_level, Level::Debug);
        assert_eq!(o.log_format, Format::Json);
        assert_eq!(o.cores, Some(2));
        assert_eq!(o.flush_deadline, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--nope"], "unknown long flag '--nope'"),
            (&["-x"], "unknown short flag '-x'"),
            (
                &["--log.level=loud"],
                "invalid value 'loud' for flag '--log.level'",
            ),
            (
                &["--log.format=xml"],
                "invalid value 'xml' for flag '--log.format'",
            ),
            (&["--cores=0"], "invalid value '0' for flag '--cores'"),
            (&["--cores=two"], "invalid value 'two' for flag '--cores'"),
            (
                &["--web.listen-address=nohost"],
                "invalid value 'nohost' for flag '--web.listen-address'",
            ),
            (
                &["--enable-feature=agent,exemplar-storage"],
                "unsupported feature 'exemplar-storage'",
            ),
            (
                &["--config.file"],
                "expected argument for flag '--config.file'",
            ),
            (
                &["--storage.remote.flush-deadline=1"],
                "flag '--storage.remote.flush-deadline'",
            ),
            (&["check-config"], "required argument"),
            (&["frobnicate"], "unknown command or argument 'frobnicate'"),
        ];
        for (args, want) in cases {
            let err = p(args).expect_err(&format!("{args:?}"));
            assert!(err.to_string().contains(want), "{args:?}: got {err}");
            assert!(err.to_string().starts_with("spate: error: "));
        }
    }

    #[test]
    fn subcommands() {
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["-h"]), Ok(Command::Help));
        assert_eq!(
            p(&["check-config", "a.yml", "b.yml"]),
            Ok(Command::CheckConfig(vec![
                PathBuf::from("a.yml"),
                PathBuf::from("b.yml")
            ]))
        );
        assert!(matches!(p(&["run", "--cores=1"]), Ok(Command::Run(_))));
    }
}
