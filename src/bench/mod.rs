//! `spate bench`: tools to measure agents and receivers.
//!
//! - `targets`: a synthetic scrape fleet any agent can scrape (one port per target).
//! - `sink`: a Remote Write receiver that decodes, counts and checks everything it gets.
//! - `push`: load generation against a Remote Write receiver, to size it.

mod fleet;
mod push;
mod server;
pub mod sink;

use std::process::ExitCode;
use std::time::Duration;

pub const USAGE: &str = "\
usage: spate bench <tool> [<flags>]

Tools:
  targets   Serve a synthetic scrape fleet.
      --targets=N            number of targets (default 10)
      --series=M             series per target (default 1000)
      --listen=HOST:PORT     target i listens on PORT+i, at /metrics (default 127.0.0.1:20000)
      --churn=P              percent of series replaced per minute (default 0)
      --file-sd=FILE         also write the target list as a file_sd_configs JSON file
      --cores=N              serving threads (default 1)
  sink      Receive Remote Write, decode and check every request.
      --listen=HOST:PORT     listen address, path /api/v1/write (default 127.0.0.1:9201)
      --status=CODE          status for accepted requests (default 204)
      --fail-ratio=R         fraction of requests answered with --fail-status (default 0)
      --fail-status=CODE     status for failed requests (default 503)
      --latency=DURATION     delay before each answer (default 0s)
      --interval=DURATION    expected sample interval; a longer step in a series is a gap
      --name-prefix=P        also count samples whose metric name starts with P, per second
      --summary-interval=D   print a summary line this often (default 10s)
      --report=FILE          write the final counts as JSON on SIGTERM/SIGINT
  push      Send synthetic Remote Write load to a receiver.
      --url=URL              receiver URL (required)
      --series=M             distinct series (default 10000)
      --rate=R               samples per second (default 100000)
      --duration=D           how long to send (default 30s)
      --connections=C        concurrent connections (default 4)
      --batch=N              samples per request (default 2000)
";

pub fn main(args: &[String]) -> ExitCode {
    let Some(tool) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match tool.as_str() {
        "targets" => fleet::main(rest),
        "sink" => sink::main(rest),
        "push" => push::main(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown bench tool '{other}'")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spate bench {tool}: error: {e}, try 'spate bench --help'");
            ExitCode::from(2)
        }
    }
}

/// `--name=value` / `--name value` flags of a bench tool.
pub(crate) struct Flags {
    values: Vec<(String, String)>,
}

impl Flags {
    pub(crate) fn parse(args: &[String], known: &[&str]) -> Result<Flags, String> {
        let mut values = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            i += 1;
            let Some(flag) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'"));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), v.to_string()),
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("expected argument for flag '--{flag}'"))?;
                    i += 1;
                    (flag.to_string(), v.clone())
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(format!("unknown flag '--{name}'"));
            }
            values.push((name, value));
        }
        Ok(Flags { values })
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn string(&self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_string()
    }

    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_string)
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("invalid value '{v}' for flag '--{name}'")),
        }
    }

    pub(crate) fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        match self.raw(name) {
            None => Ok(default),
            Some(v) => crate::config::parse_duration(v)
                .map_err(|e| format!("invalid value '{v}' for flag '--{name}': {e}")),
        }
    }
}

/// Runs `main` on one core thread and returns when SIGTERM or SIGINT arrives.
pub(crate) fn run_until_signal<F, Fut>(cores: usize, main: F) -> Result<libc::c_int, String>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let signals = crate::signals::block();
    for id in 0..cores {
        let main = main.clone();
        crate::runtime::start_core(id, None, |_| {}, move || main(id))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
    }
    Ok(crate::signals::wait_for_termination(&signals))
}

/// Seconds since the Unix epoch, as a float.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
