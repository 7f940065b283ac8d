//! The agent's start-up and shutdown: load the configuration, derive targets, partition them
//! over the data-plane cores, start the cores and the web thread, then wait for a signal.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::cli::AgentOptions;
use crate::config;
use crate::log::Level;
use crate::percore::CoreControl;
use crate::remote::metadata::Reported;
use crate::remote::{Endpoint, Shard};
use crate::runtime::{self, Event};
use crate::scrape::{self, CoreScrape};
use crate::selfmetrics::Registry;

/// Assigns a target to a core. Stable for a given core count: a target never moves between
/// cores unless the count changes.
pub fn run(opts: AgentOptions) -> Result<(), String> {
    let cfg =
        config::load_file(&opts.config_file).map_err(|e| format!("error loading config: {e}"))?;
    std::fs::create_dir_all(&opts.storage_path).map_err(|e| {
        format!(
            "cannot create --storage.agent.path {}: {e}",
            opts.storage_path.display()
        )
    })?;
    // Held until the process exits: two agents writing one WAL would corrupt it.
    let _lock = if opts.no_lockfile {
        None
    } else {
        Some(lock_storage(&opts.storage_path)?)
    };

    // Signals are taken by sigwait on this thread; block them before any other thread starts
    // so every thread inherits the mask.
    let signals = crate::signals::block();

    let allowed = runtime::allowed_cpus();
    let cores = opts.cores.unwrap_or(allowed.len().max(1));
    let registry = Arc::new(Registry::new(cores));
    // The control plane's discovery manager derives the targets and queues each core's
    // before the cores start; later changes (discovery, reloads) reach them the same way.
    let inboxes: Vec<Arc<runtime::Mailbox<scrape::CoreMsg>>> =
        (0..cores).map(|_| Arc::new(Default::default())).collect();
    let manager = crate::discovery::Manager::new(
        opts.config_file.clone(),
        cfg.clone(),
        inboxes.clone(),
        registry.clone(),
    );
    let target_count = manager.target_count();
    let commands = manager.sender();
    let endpoints: Vec<Arc<Endpoint>> = cfg
        .remote_write
        .iter()
        .cloned()
        .map(|c| Arc::new(Endpoint::new(c, cores)))
        .collect();
    if endpoints.is_empty() {
        crate::log!(
            Level::Warn,
            "remote",
            "no remote_write endpoints configured; scraped samples are not forwarded"
        );
    }

    let reload = opts
        .enable_lifecycle
        .then(|| crate::discovery::ReloadHandle(commands.clone()));
    let web = crate::web::start(
        &opts.listen_address,
        registry.clone(),
        manager.targets(),
        reload,
    )
    .map_err(|e| {
        format!(
            "cannot listen on --web.listen-address {}: {e}",
            opts.listen_address
        )
    })?;

    crate::log!(
        Level::Info,
        "agent",
        "starting spate",
        version = env!("CARGO_PKG_VERSION"),
        config = opts.config_file.display(),
        cores = cores,
        targets = target_count,
        endpoints = endpoints.len(),
        listen = web
    );

    // One WAL per core, opened here so that a storage problem stops the start.
    let max_size = opts
        .wal_max_size
        .unwrap_or_else(|| default_wal_max_size(&opts.storage_path));
    let wal_opts = crate::wal::WalOptions {
        segment_size: opts.wal_segment_size,
        compression: match (opts.wal_compression, opts.wal_compression_type) {
            (false, _) => crate::wal::Compression::None,
            (true, t) => t,
        },
        direct: true,
        fsync_interval: opts.wal_fsync_interval,
        max_size: (max_size / cores as u64).max(opts.wal_segment_size),
        max_age: (!opts.wal_max_time.is_zero()).then_some(opts.wal_max_time),
    };
    let wal_root = opts.storage_path.join("wal");
    let open_wal = |id: usize, stats| {
        let dir = wal_root.join(id.to_string());
        crate::wal::Wal::open(&dir, wal_opts.clone(), stats)
            .map(|(wal, report)| (wal, report, dir.clone()))
            .map_err(|e| format!("cannot open the WAL in {}: {e}", dir.display()))
    };
    // A changed core count moves targets between cores; backlogs from before go first (see
    // `Endpoint::hold_for_backlog`). The count is kept beside the WALs.
    let count_file = wal_root.join("cores");
    let previous = std::fs::read_to_string(&count_file)
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .or_else(|| crate::wal::core_ids(&wal_root).last().map(|id| id + 1))
        .unwrap_or(cores);
    let cores_changed = previous != cores;
    if cores_changed {
        crate::log!(
            Level::Info,
            "wal",
            "the core count changed; backlogs from the last run are sent before newer samples",
            previous = previous,
            cores = cores
        );
    }
    std::fs::create_dir_all(&wal_root)
        .and_then(|()| std::fs::write(&count_file, format!("{cores}\n")))
        .map_err(|e| format!("cannot write {}: {e}", count_file.display()))?;
    let mut wals = Vec::new();
    for id in 0..cores {
        let (wal, report, dir) = open_wal(id, registry.cores[id].wal.clone())?;
        if report.segments > 0 {
            crate::log!(
                Level::Info,
                "wal",
                "opened the WAL",
                dir = dir.display(),
                segments = report.segments,
                torn_bytes_cut = report.torn_bytes_cut
            );
        }
        wals.push(wal);
    }
    // WALs of cores an earlier run had and this one has not: core `id % cores` sends their
    // backlog to every endpoint, then deletes them.
    let mut drains: Vec<Vec<(usize, crate::wal::Wal)>> = (0..cores).map(|_| Vec::new()).collect();
    for id in crate::wal::core_ids(&wal_root)
        .into_iter()
        .filter(|id| *id >= cores)
    {
        let (wal, report, dir) = open_wal(id, Default::default())?;
        crate::log!(
            Level::Info,
            "wal",
            "found the WAL of a core this run does not have; its backlog is sent, then it is deleted",
            dir = dir.display(),
            segments = report.segments,
            by_core = id % cores
        );
        for ep in &endpoints {
            ep.hold_for_backlog();
        }
        drains[id % cores].push((id, wal));
    }

    let shutdown = Event::new();
    let mut handles = Vec::new();
    let offset_seed = scrape::offset_seed(&cfg.global.external_labels);
    for (((id, inbox), wal), drains) in inboxes.into_iter().enumerate().zip(wals).zip(drains) {
        let stats = registry.cores[id].clone();
        let driver_stats = stats.clone();
        let endpoints = endpoints.clone();
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        let external_labels = cfg.global.external_labels.clone();
        let flush_deadline = opts.flush_deadline;
        let fsync_interval = opts.wal_fsync_interval;
        // Pin only when each core gets a CPU of its own.
        let cpu = (cores <= allowed.len()).then(|| allowed[id]);
        let handle = runtime::start_core(
            id,
            cpu,
            move |driver| {
                driver_stats.driver.store(
                    if driver == runtime::Driver::IoUring {
                        1
                    } else {
                        2
                    },
                    Relaxed,
                );
                crate::log!(
                    Level::Info,
                    "runtime",
                    "core started",
                    core = id,
                    driver = driver.as_str()
                );
            },
            move || async move {
                let ctl = CoreControl::new(shutdown, flush_deadline, wal, cores_changed);
                let reported = Rc::new(Reported::default());
                let mut shards = Vec::new();
                for ep in &endpoints {
                    let stats = registry.shard(&ep.cfg.name, &ep.url);
                    let shard = Shard::new(ep.clone(), stats, &ctl, reported.clone());
                    shards.push(shard.clone());
                    runtime::spawn(shard.run());
                }
                // The WAL's timer: fdatasync when commits are sparse.
                let tick = fsync_interval.max(std::time::Duration::from_millis(1));
                let (timer_ctl, stop) = (ctl.clone(), ctl.shutdown.clone());
                runtime::spawn(async move {
                    while !runtime::sleep_or(tick, &stop).await {
                        timer_ctl.wal.borrow_mut().tick();
                    }
                });
                let core = Rc::new(CoreScrape {
                    offset_seed,
                    ctl: ctl.clone(),
                    shards,
                    reported,
                    stats,
                    external_labels,
                    appender: std::cell::RefCell::new(scrape::Appender::with_exemplars(
                        endpoints.iter().any(|e| e.cfg.send_exemplars),
                    )),
                    buffers: Default::default(),
                });
                runtime::spawn(scrape::manage_targets(inbox, core.clone()));
                let mut draining = Vec::new();
                for (old, wal) in drains {
                    let d = Rc::new(Drain {
                        old,
                        ctl: CoreControl::new_draining(ctl.shutdown.clone(), flush_deadline, wal),
                        finished: std::cell::Cell::new(false),
                    });
                    // Nothing scrapes into a drained WAL: it reports nothing.
                    let reported = Rc::new(Reported::default());
                    for ep in &endpoints {
                        let stats = registry.shard(&ep.cfg.name, &ep.url);
                        let shard = Shard::new(ep.clone(), stats, &d.ctl, reported.clone());
                        runtime::spawn(shard.run());
                    }
                    runtime::spawn(d.clone().finish());
                    draining.push(d);
                }
                // The core ends once every shard has flushed after shutdown.
                ctl.shutdown.wait().await;
                ctl.senders_finished().await;
                ctl.wal.borrow_mut().close();
                for d in draining {
                    d.finish().await;
                }
            },
        )
        .map_err(|e| format!("cannot start core {id}: {e}"))?;
        handles.push(handle);
    }
    manager
        .spawn()
        .map_err(|e| format!("cannot start the discovery manager: {e}"))?;
    registry.ready.store(true, Relaxed);
    crate::log!(
        Level::Info,
        "agent",
        "Server is ready to receive web requests."
    );

    loop {
        match crate::signals::wait(&signals) {
            libc::SIGHUP => {
                crate::log!(
                    Level::Info,
                    "agent",
                    "received SIGHUP, reloading the configuration"
                );
                let _ = commands.send(crate::discovery::Command::Reload { reply: None });
            }
            sig => {
                crate::log!(
                    Level::Info,
                    "agent",
                    "received signal, stopping scrapes and flushing queued samples",
                    signal = crate::signals::name(sig)
                );
                break;
            }
        }
    }
    registry.stopping.store(true, Relaxed);
    shutdown.set();
    for h in handles {
        let _ = h.join();
    }
    crate::log!(Level::Info, "agent", "See you next time!");
    Ok(())
}

/// The WAL of a core an earlier run had, being sent and then deleted.
struct Drain {
    old: usize,
    ctl: Rc<CoreControl>,
    finished: std::cell::Cell<bool>,
}

impl Drain {
    /// Waits for its shards to end; then deletes the WAL if every endpoint got all of it, and
    /// otherwise (shutdown came first) closes it, to be drained after the next start.
    async fn finish(self: Rc<Self>) {
        self.ctl.senders_finished().await;
        if self.finished.replace(true) {
            return;
        }
        let dir = self.ctl.wal.borrow().dir().to_path_buf();
        // Before shutdown, a draining shard ends only once it has read to the head and its
        // receiver acknowledged (or refused for good) every batch.
        if !self.ctl.shutdown.is_set() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => crate::log!(
                    Level::Info,
                    "wal",
                    "sent the backlog of a removed core's WAL and deleted it",
                    dir = dir.display(),
                    core = self.old
                ),
                Err(e) => crate::log!(
                    Level::Warn,
                    "wal",
                    "sent a removed core's WAL but cannot delete it",
                    dir = dir.display(),
                    err = e
                ),
            }
        } else {
            self.ctl.wal.borrow_mut().close();
        }
    }
}

/// Takes an exclusive `flock` on `<storage>/lock`, as Prometheus locks its data directory.
fn lock_storage(dir: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(format!(
            "--storage.agent.path {} is in use by another process ({}); give each agent its own directory",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// The default WAL bound: a fifth of the filesystem holding the storage path (at least 1 GiB;
/// 16 GiB where the size cannot be read).
fn default_wal_max_size(path: &std::path::Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return 16 << 30;
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above: a valid path and a writable out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 16 << 30;
    }
    let total = (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
    (total / 5).max(1 << 30)
}
