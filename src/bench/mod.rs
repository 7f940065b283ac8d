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

/// One flag of a bench tool: parsing, defaults and `spate bench --help` all read it.
pub(crate) struct BenchFlag {
    pub name: &'static str,
    /// How the value is shown in the help (`=N`, `=HOST:PORT`).
    pub shown: &'static str,
    /// The value when the flag is not given (`None`: absent, or required).
    pub default: Option<&'static str>,
    pub help: &'static str,
}

/// A [`BenchFlag`], as the tools' tables write them.
pub(crate) const fn flag(
    name: &'static str,
    shown: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> BenchFlag {
    BenchFlag {
        name,
        shown,
        default,
        help,
    }
}

/// A bench tool: its name, what it does, and its flags.
pub(crate) struct Tool {
    pub name: &'static str,
    pub help: &'static str,
    pub flags: &'static [BenchFlag],
}

/// Every bench tool, in `--help` order.
const TOOLS: [&Tool; 3] = [&fleet::TOOL, &sink::TOOL, &push::TOOL];

/// `spate bench --help`, from [`TOOLS`].
pub fn usage() -> String {
    let mut out = String::from("usage: spate bench <tool> [<flags>]\n\nTools:\n");
    for t in TOOLS {
        out.push_str(&format!("  {:<9} {}\n", t.name, t.help));
        for f in t.flags {
            let flag = format!("--{}{}", f.name, f.shown);
            let default = f
                .default
                .map_or(String::new(), |d| format!(" (default {d})"));
            out.push_str(&format!("      {flag:<22} {}{default}\n", f.help));
        }
    }
    out
}

pub fn main(args: &[String]) -> ExitCode {
    let Some(tool) = args.first() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match tool.as_str() {
        "targets" => fleet::main(rest),
        "sink" => sink::main(rest),
        "push" => push::main(rest),
        "-h" | "--help" | "help" => {
            print!("{}", usage());
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

/// `--name=value` / `--name value` flags of a bench tool, checked against its table.
pub(crate) struct Flags {
    table: &'static [BenchFlag],
    values: Vec<(String, String)>,
}

impl Flags {
    pub(crate) fn parse(args: &[String], table: &'static [BenchFlag]) -> Result<Flags, String> {
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
            if !table.iter().any(|f| f.name == name) {
                return Err(format!("unknown flag '--{name}'"));
            }
            values.push((name, value));
        }
        Ok(Flags { table, values })
    }

    /// The flag's value as given (the last one), else its default.
    fn raw(&self, name: &str) -> Option<&str> {
        let given = self.values.iter().rev().find(|(n, _)| n == name);
        match given {
            Some((_, v)) => Some(v.as_str()),
            None => self.table.iter().find(|f| f.name == name)?.default,
        }
    }

    /// The value, or `None` when the flag was not given and has no default.
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_string)
    }

    /// The value parsed as a number (or an address).
    pub(crate) fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T, String> {
        let v = self
            .raw(name)
            .ok_or_else(|| format!("flag '--{name}' is required"))?;
        v.parse()
            .map_err(|_| format!("invalid value '{v}' for flag '--{name}'"))
    }

    /// The value parsed as a duration (`500ms`, `1m`).
    pub(crate) fn duration(&self, name: &str) -> Result<Duration, String> {
        let v = self
            .raw(name)
            .ok_or_else(|| format!("flag '--{name}' is required"))?;
        crate::config::parse_duration(v)
            .map_err(|e| format!("invalid value '{v}' for flag '--{name}': {e}"))
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
