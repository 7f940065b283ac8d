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

/// Runs the agent until SIGTERM or SIGINT: each step below is one function.
pub fn run(opts: AgentOptions) -> Result<(), String> {
    let cfg =
        config::load_file(&opts.config_file).map_err(|e| format!("error loading config: {e}"))?;
    // Held until the process exits: two agents writing one WAL would corrupt it.
    let _lock = prepare_storage(&opts)?;
    // Signals are taken by sigwait on this thread; block them before any other thread starts
    // so every thread inherits the mask.
    let signals = crate::signals::block();

    for (flag, why) in &opts.ignored_flags {
        crate::log!(
            Level::Warn,
            "agent",
            "a Prometheus flag with no effect in spate",
            flag = format!("--{flag}"),
            reason = why
        );
    }
    let setup = opts.cluster.setup(crate::web::hostname)?;
    let mut cfg = cfg;
    let cluster = setup.as_ref().map(|c| {
        // A list the source can give now is read before the first targets are derived.
        let first = crate::discovery::members::first(&c.source);
        let m = match first {
            Some(members) => c.membership.with_members(members),
            None => c.membership.clone(),
        };
        cfg.add_external_labels(&c.ha_labels);
        crate::discovery::members::log_view(&m, "sharing targets");
        Arc::new(m)
    });
    let allowed = runtime::allowed_cpus();
    let cores = opts.cores.unwrap_or(allowed.len().max(1));
    let registry = Arc::new(Registry::new(cores));
    // The control plane's discovery manager derives the targets and queues each core's
    // before the cores start; later changes (discovery, reloads) reach them the same way.
    let inboxes: Vec<Arc<runtime::Mailbox<scrape::CoreMsg>>> =
        (0..cores).map(|_| Arc::new(Default::default())).collect();
    // Opened before anything scrapes; a file that cannot be opened stops the start, as in
    // Prometheus (a reload logs it and goes on).
    let failure_logs = Arc::new(scrape::FailureLogs::default());
    failure_logs
        .reopen(&cfg)
        .map_err(|e| format!("error loading config: {e}"))?;
    let mut manager = crate::discovery::Manager::new(
        opts.config_file.clone(),
        cfg.clone(),
        inboxes.clone(),
        registry.clone(),
        cluster.clone(),
    );
    manager.set_failure_logs(failure_logs.clone());
    manager.set_handover_floor(opts.cluster.refresh_interval);
    if let Some(c) = &setup {
        manager.set_cluster_labels(c.ha_labels.clone());
    }
    let commands = manager.sender();
    if let Some(c) = &setup {
        crate::discovery::members::follow(
            c.source.clone(),
            opts.cluster.refresh_interval,
            commands.clone(),
            registry.sd.clone(),
        )
        .map_err(|e| format!("cannot start following the cluster's members: {e}"))?;
    }
    let endpoints = endpoints(&cfg, cores);
    manager.set_endpoints(endpoints.clone());
    // The WAL's size bound: given, or a fifth of the filesystem holding it.
    let wal_max_size = opts
        .wal_max_size
        .unwrap_or_else(|| default_wal_max_size(&opts.storage_path));
    let web = start_web(&opts, wal_max_size, &registry, &manager)?;
    crate::log!(
        Level::Info,
        "agent",
        "starting spate",
        version = env!("CARGO_PKG_VERSION"),
        config = opts.config_file.display(),
        cores = cores,
        targets = manager.target_count(),
        endpoints = endpoints.len(),
        listen = web
    );
    let wals = open_wals(&opts, wal_max_size, cores, &registry, &endpoints)?;
    let shutdown = Event::new();
    let handles = start_cores(CoreSetup {
        opts: &opts,
        cfg: &cfg,
        allowed: &allowed,
        registry: &registry,
        endpoints: &endpoints,
        inboxes,
        wals,
        shutdown: &shutdown,
        failure_logs: &failure_logs,
        // In a cluster every member scrapes a target at the same phase (the cluster's seed),
        // so a target that moves keeps its timestamps.
        offset_seed: match &cluster {
            Some(c) => xxhash_rust::xxh3::xxh3_64(c.name.as_bytes()),
            None => scrape::offset_seed(&cfg.global.external_labels),
        },
        aligned_timestamps: cluster.is_some(),
        // Replicas for a deduplicating receiver (not HA-tracker groups, where one replica's
        // samples are taken whole).
        stale_on_failure: !cluster
            .as_ref()
            .is_some_and(|c| c.replication > 1 && !c.groups),
    })?;
    manager
        .spawn()
        .map_err(|e| format!("cannot start the discovery manager: {e}"))?;
    if opts.auto_reload {
        watch_config_file(
            opts.config_file.clone(),
            opts.auto_reload_interval,
            crate::discovery::ReloadHandle(commands.clone()),
        )
        .map_err(|e| format!("cannot start the configuration file's watcher: {e}"))?;
    }
    registry.ready.store(true, Relaxed);
    crate::log!(
        Level::Info,
        "agent",
        "Server is ready to receive web requests."
    );

    wait_for_stop(&signals, &commands);
    registry.stopping.store(true, Relaxed);
    if let Some(c) = setup.filter(|c| c.source != crate::cluster::Source::Fixed) {
        // The member list drops a stopping member (Kubernetes removes a terminating pod's
        // endpoints; DNS follows): its targets go on here until the others have seen that
        // and taken them over, so they have no gap.
        crate::log!(
            Level::Info,
            "cluster",
            "leaving the cluster: scraping on while the other members take the targets over",
            member = c.membership.me,
            for_seconds = opts.cluster.refresh_interval.as_secs_f64()
        );
        std::thread::sleep(opts.cluster.refresh_interval);
    }
    shutdown.set();
    for h in handles {
        let _ = h.join();
    }
    crate::log!(Level::Info, "agent", "See you next time!");
    Ok(())
}

/// `--config.auto-reload`: every `interval`, the configuration's checksum (the file and its
/// `scrape_config_files`); when it differs
/// from the last one loaded, a reload (retried at the next check if it fails, as Prometheus
/// does).
fn watch_config_file(
    path: std::path::PathBuf,
    interval: std::time::Duration,
    reload: crate::discovery::ReloadHandle,
) -> std::io::Result<()> {
    let checksum = config::checksum;
    let mut loaded = checksum(&path);
    std::thread::Builder::new()
        .name("spate-config-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                let now = checksum(&path);
                if now.is_none() || now == loaded {
                    continue;
                }
                crate::log!(
                    Level::Info,
                    "config",
                    "the configuration file changed; reloading",
                    filename = path.display()
                );
                // The outcome is logged and counted by the manager.
                if reload.reload().is_ok() {
                    loaded = now;
                }
            }
        })?;
    Ok(())
}

/// Creates the storage directory and locks it (unless `--storage.agent.no-lockfile`).
fn prepare_storage(opts: &AgentOptions) -> Result<Option<std::fs::File>, String> {
    std::fs::create_dir_all(&opts.storage_path).map_err(|e| {
        format!(
            "cannot create --storage.agent.path {}: {e}",
            opts.storage_path.display()
        )
    })?;
    if opts.no_lockfile {
        Ok(None)
    } else {
        lock_storage(&opts.storage_path).map(Some)
    }
}

/// One shared [`Endpoint`] per `remote_write` entry.
fn endpoints(cfg: &config::Config, cores: usize) -> Vec<Arc<Endpoint>> {
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
    endpoints
}

/// Binds the web listener (a bad address or web configuration stops the start) and serves it
/// on its own thread.
fn start_web(
    opts: &AgentOptions,
    wal_max_size: u64,
    registry: &Arc<Registry>,
    manager: &crate::discovery::Manager,
) -> Result<std::net::SocketAddr, String> {
    let reload = opts
        .enable_lifecycle
        .then(|| crate::discovery::ReloadHandle(manager.sender()));
    let external_url = opts.external_url.clone().unwrap_or_else(|| {
        let port = opts.listen_address.rsplit(':').next().unwrap_or("9095");
        let host = crate::web::hostname().unwrap_or_else(|| "localhost".into());
        format!("http://{host}:{port}/")
    });
    let route_prefix = match &opts.route_prefix {
        Some(p) => p.trim_end_matches('/').to_string(),
        None => crate::web::url_path(&external_url),
    };
    let route_prefix = match route_prefix.as_str() {
        "" => String::new(),
        p if p.starts_with('/') => p.to_string(),
        p => format!("/{p}"),
    };
    let web_opts = crate::web::Options {
        listen_address: opts.listen_address.clone(),
        config_file: opts.web_config_file.clone(),
        external_url,
        route_prefix,
        max_connections: opts.max_connections,
        read_timeout: opts.read_timeout,
        cors_origin: regex::Regex::new(&format!("^(?:{})$", opts.cors_origin))
            .map_err(|e| format!("invalid --web.cors.origin: {e}"))?,
        page_title: opts.page_title.clone(),
        target_scrape_proxy: opts.target_scrape_proxy,
    };
    let sources = crate::web::Sources {
        registry: registry.clone(),
        targets: manager.targets(),
        reload,
        flags: crate::cli::flag_values(opts),
        storage: crate::web::Storage {
            path: opts.storage_path.clone(),
            max_size: wal_max_size,
            max_time: opts.wal_max_time,
        },
    };
    crate::web::start(web_opts, sources)
}

/// Each core's WAL, and the WALs of cores an earlier run had and this one has not.
struct Wals {
    own: Vec<crate::wal::Wal>,
    /// Per core: `(old core id, WAL)` of the removed cores' WALs it sends and deletes.
    drains: Vec<Vec<(usize, crate::wal::Wal)>>,
    /// The core count differs from the last run's.
    cores_changed: bool,
}

/// Opens one WAL per core (a storage problem stops the start), notes the core count beside
/// them, and hands each removed core's WAL to core `id % cores`.
fn open_wals(
    opts: &AgentOptions,
    max_size: u64,
    cores: usize,
    registry: &Registry,
    endpoints: &[Arc<Endpoint>],
) -> Result<Wals, String> {
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
    let mut own = Vec::new();
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
        own.push(wal);
    }
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
        for ep in endpoints {
            ep.hold_for_backlog();
        }
        drains[id % cores].push((id, wal));
    }
    Ok(Wals {
        own,
        drains,
        cores_changed,
    })
}

/// What [`start_cores`] needs.
struct CoreSetup<'a> {
    opts: &'a AgentOptions,
    cfg: &'a config::Config,
    allowed: &'a [usize],
    registry: &'a Arc<Registry>,
    endpoints: &'a [Arc<Endpoint>],
    inboxes: Vec<Arc<runtime::Mailbox<scrape::CoreMsg>>>,
    wals: Wals,
    shutdown: &'a Event,
    failure_logs: &'a Arc<scrape::FailureLogs>,
    offset_seed: u64,
    aligned_timestamps: bool,
    stale_on_failure: bool,
}

/// Starts one data-plane thread per core, pinned when each core gets a CPU of its own.
fn start_cores(s: CoreSetup) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let cores = s.inboxes.len();
    let offset_seed = s.offset_seed;
    let cores_changed = s.wals.cores_changed;
    let mut handles = Vec::new();
    let each = s.inboxes.into_iter().zip(s.wals.own).zip(s.wals.drains);
    for (id, ((inbox, wal), drains)) in each.enumerate() {
        let stats = s.registry.cores[id].clone();
        let driver_stats = stats.clone();
        let core = CoreStart {
            inbox,
            wal,
            drains,
            cores_changed,
            stats,
            offset_seed,
            aligned_timestamps: s.aligned_timestamps,
            timestamp_tolerance: s.opts.timestamp_tolerance,
            stale_on_failure: s.stale_on_failure,
            endpoints: s.endpoints.to_vec(),
            registry: s.registry.clone(),
            shutdown: s.shutdown.clone(),
            failure_logs: s.failure_logs.clone(),
            external_labels: s.cfg.global.external_labels.clone(),
            flush_deadline: s.opts.flush_deadline,
            fsync_interval: s.opts.wal_fsync_interval,
        };
        let cpu = (cores <= s.allowed.len()).then(|| s.allowed[id]);
        let handle = runtime::start_core(
            id,
            cpu,
            move |driver| {
                let code = if driver == runtime::Driver::IoUring {
                    1
                } else {
                    2
                };
                driver_stats.driver.store(code, Relaxed);
                // SAFETY: gettid has no preconditions.
                driver_stats.tid.store(unsafe { libc::gettid() }, Relaxed);
                crate::log!(
                    Level::Info,
                    "runtime",
                    "core started",
                    core = id,
                    driver = driver.as_str()
                );
            },
            move || core.run(),
        )
        .map_err(|e| format!("cannot start core {id}: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Everything one core starts with.
struct CoreStart {
    inbox: Arc<runtime::Mailbox<scrape::CoreMsg>>,
    wal: crate::wal::Wal,
    drains: Vec<(usize, crate::wal::Wal)>,
    cores_changed: bool,
    stats: Arc<crate::selfmetrics::CoreStats>,
    offset_seed: u64,
    aligned_timestamps: bool,
    timestamp_tolerance: Option<std::time::Duration>,
    stale_on_failure: bool,
    endpoints: Vec<Arc<Endpoint>>,
    registry: Arc<Registry>,
    shutdown: Event,
    failure_logs: Arc<scrape::FailureLogs>,
    external_labels: Vec<(String, String)>,
    flush_deadline: std::time::Duration,
    fsync_interval: std::time::Duration,
}

impl CoreStart {
    /// The core's main task: its shards, the WAL's sync timer, the scrape loops' manager and
    /// the drains of removed cores' WALs; it ends once every shard has flushed after shutdown.
    async fn run(self) {
        let ctl = CoreControl::new(
            self.shutdown,
            self.flush_deadline,
            self.wal,
            self.cores_changed,
        );
        let reported = Rc::new(Reported::default());
        let shards = Self::shards_for(&self.endpoints, &self.registry, &ctl, &reported);
        ctl.wal.borrow_mut().endpoints_registered();
        // The WAL's sync timer: fdatasync every `fsync_interval` when something was written,
        // on the core's ring, without holding the WAL (commits go on meanwhile).
        // Also saves the cursors file about once a second.
        let tick = self.fsync_interval.clamp(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_secs(1),
        );
        let (timer_ctl, stop) = (ctl.clone(), ctl.shutdown.clone());
        runtime::spawn(async move {
            while !runtime::sleep_or(tick, &stop).await {
                let job = timer_ctl.wal.borrow_mut().sync_job();
                if let Some(job) = job {
                    let done = job.run().await;
                    timer_ctl.wal.borrow_mut().sync_done(done);
                }
            }
        });
        let core = Rc::new(CoreScrape {
            offset_seed: self.offset_seed,
            aligned_timestamps: self.aligned_timestamps,
            timestamp_tolerance: self.timestamp_tolerance,
            stale_on_failure: self.stale_on_failure,
            ctl: ctl.clone(),
            senders: Self::senders(shards, &self.registry, &ctl, &reported),
            reported,
            stats: self.stats,
            external_labels: self.external_labels.into(),
            appender: std::cell::RefCell::new(scrape::Appender::with_exemplars(
                self.endpoints.iter().any(|e| e.cfg.send_exemplars),
            )),
            buffers: Default::default(),
            failure_logs: self.failure_logs,
        });
        runtime::spawn(scrape::manage_targets(self.inbox, core));
        let mut draining = Vec::new();
        for (old, wal) in self.drains {
            let d = Rc::new(Drain {
                old,
                ctl: CoreControl::new_draining(ctl.shutdown.clone(), self.flush_deadline, wal),
                finished: std::cell::Cell::new(false),
            });
            // Nothing scrapes into a drained WAL: it reports nothing.
            Self::shards_for(
                &self.endpoints,
                &self.registry,
                &d.ctl,
                &Rc::new(Reported::default()),
            );
            d.ctl.wal.borrow_mut().endpoints_registered();
            runtime::spawn(d.clone().finish());
            draining.push(d);
        }
        ctl.shutdown.wait().await;
        ctl.senders_finished().await;
        let _commit = ctl.commit_lock().await;
        ctl.wal.borrow_mut().close();
        for d in draining {
            d.finish().await;
        }
    }

    /// The core's shards, as reloads will change them: a new shard is registered with the
    /// registry (or takes over the counters it is given) and started; a shard gone for good
    /// leaves the registry.
    fn senders(
        shards: Vec<Rc<Shard>>,
        registry: &Arc<Registry>,
        ctl: &Rc<CoreControl>,
        reported: &Rc<Reported>,
    ) -> Rc<crate::remote::Senders> {
        let (r, c, rep) = (registry.clone(), ctl.clone(), reported.clone());
        let make = move |ep: Arc<Endpoint>, stats: Option<Arc<crate::selfmetrics::ShardStats>>| {
            let stats = stats.unwrap_or_else(|| r.shard(&ep.cfg.name, &ep.url));
            let shard = Shard::new(ep, stats, &c, rep.clone());
            runtime::spawn(shard.clone().run());
            shard
        };
        let r = registry.clone();
        let forget = move |shard: &Shard| {
            let ep = shard.endpoint();
            r.forget_shard(&ep.cfg.name, &ep.url, shard.stats());
        };
        crate::remote::Senders::new(shards, ctl.clone(), Box::new(make), Box::new(forget))
    }

    /// Starts one shard per endpoint on the WAL of `ctl`.
    fn shards_for(
        endpoints: &[Arc<Endpoint>],
        registry: &Registry,
        ctl: &Rc<CoreControl>,
        reported: &Rc<Reported>,
    ) -> Vec<Rc<Shard>> {
        endpoints
            .iter()
            .map(|ep| {
                let stats = registry.shard(&ep.cfg.name, &ep.url);
                let shard = Shard::new(ep.clone(), stats, ctl, reported.clone());
                runtime::spawn(shard.clone().run());
                shard
            })
            .collect()
    }
}

/// Waits on this thread for a signal: SIGHUP reloads the configuration, SIGTERM and SIGINT
/// return (the agent stops).
fn wait_for_stop(
    signals: &crate::signals::SignalSet,
    commands: &std::sync::mpsc::Sender<crate::discovery::Command>,
) {
    loop {
        match crate::signals::wait(signals) {
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
                return;
            }
        }
    }
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
