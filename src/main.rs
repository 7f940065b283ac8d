use std::process::ExitCode;

use spate::cli::{self, Command};

// mimalloc: per-thread free lists suit the thread-per-core design (each core allocates and
// frees its own buffers), and it beats glibc malloc on the small, short-lived allocations of
// configuration and control work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("bench") {
        return spate::bench::main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some("wal") {
        return wal_command(&args[1..]);
    }
    let command = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", cli::usage());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("spate, version {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::CheckConfig(files) => check_config(&files),
        Command::Run(opts) => {
            spate::log::init(opts.log_level, opts.log_format);
            match spate::agent::run(*opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    spate::log!(spate::log::Level::Error, "agent", "cannot start", err = e);
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Validates configuration files as `promtool check config` does; stops at the first invalid one.
fn check_config(files: &[std::path::PathBuf]) -> ExitCode {
    for f in files {
        println!("Checking {}", f.display());
        match spate::config::load_file(f) {
            Ok(cfg) => println!(
                "  SUCCESS: {} is valid: {} scrape configs, {} remote_write endpoints",
                f.display(),
                cfg.scrape_configs.len(),
                cfg.remote_write.len()
            ),
            Err(e) => {
                println!("  FAILED: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// `spate wal inspect <dir>`.
fn wal_command(args: &[String]) -> ExitCode {
    match args {
        [cmd, dir] if cmd == "inspect" => match spate::wal::inspect::inspect(dir.as_ref()) {
            Ok(report) => {
                print!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("spate wal inspect: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: spate wal inspect <dir>\n\nShows a WAL's segments (sizes, records by type, damage) and each remote-write\nendpoint's cursor and backlog. <dir> is --storage.agent.path, its wal/, or wal/<core>/."
            );
            ExitCode::from(2)
        }
    }
}
