//! Service discovery and the target set: the control plane's manager thread.
//!
//! Providers (`static_configs`, `file_sd_configs`, `http_sd_configs`) produce target groups;
//! the manager derives each job's targets from them (relabeling included), compares them
//! with what runs, and tells the cores which targets to start and stop. A reload goes through
//! the same path: the new configuration's jobs are derived and compared like an update.
//!
//! **Invariant:** a provider that fails keeps its last good groups; a target leaves only
//! when its provider says so (or its job goes), and then gets staleness markers.

mod consul;
mod dns;
mod docker;
mod ec2;
mod file;
pub(crate) mod http;
mod job;
pub mod kubernetes;
pub mod members;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{self, Config, ScrapeConfig};
use crate::log::Level;
use crate::runtime::Mailbox;
use crate::scrape::{CoreMsg, Labels, TargetsView};
use crate::selfmetrics::Registry;

/// A group of targets sharing labels, known by its source (`file:index`, `url:index`).
#[derive(Clone, Debug, PartialEq)]
pub struct TargetGroup {
    pub source: String,
    /// Each target's own labels (`__address__` at least).
    pub targets: Vec<Labels>,
    pub labels: Labels,
}

/// What the manager thread is told.
pub enum Command {
    /// A provider's complete, current groups.
    Groups {
        job: String,
        provider: u64,
        groups: Vec<TargetGroup>,
    },
    /// A provider's groups that changed since it last reported, and the sources it no longer
    /// has (a provider that follows changes one object at a time).
    Changes {
        job: String,
        provider: u64,
        changed: Vec<Arc<TargetGroup>>,
        removed: Vec<String>,
    },
    /// The cluster's member list, as its source reports it now.
    Members(Vec<String>),
    /// Reload the configuration file; the outcome goes to `reply` when given.
    Reload {
        reply: Option<Sender<Result<(), String>>>,
    },
}

/// Updates arriving within this window are applied together.
const COALESCE: Duration = Duration::from_millis(200);

/// A running provider; dropping it tells its thread to stop.
struct Provider {
    id: u64,
    stop: Arc<AtomicBool>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Job {
    cfg: ScrapeConfig,
    /// The job's target relabeling, shared with the targets view (for the relabel debugger).
    relabel: Arc<crate::relabel::Rules>,
    providers: Vec<Provider>,
    /// Its groups and the targets they derive to.
    targets: job::JobTargets,
    dirty: bool,
    /// After a reload changed the job: providers that have not reported yet, and until when
    /// the job waits for them (so targets they found before are not stopped meanwhile).
    waiting: Vec<u64>,
    waiting_until: Option<std::time::Instant>,
}

/// How long a reloaded job waits for its asynchronous providers' first lists.
const RELOAD_GRACE: Duration = Duration::from_secs(5);

/// The core that runs a target: its hash modulo the core count, so a target stays on its core
/// while the count does not change.
pub fn core_for(hash: u64, cores: usize) -> usize {
    (hash % cores as u64) as usize
}

/// The manager: owns the jobs and the channel providers write to.
pub struct Manager {
    config_file: std::path::PathBuf,
    cfg: Config,
    jobs: Vec<Job>,
    cores: Vec<Arc<Mailbox<CoreMsg>>>,
    registry: Arc<Registry>,
    /// Every target, active and dropped, for `/api/v1/targets`.
    targets: Arc<Mutex<TargetsView>>,
    tx: Sender<Command>,
    rx: Receiver<Command>,
    next_provider: u64,
    /// The cluster this member shares targets with (`--cluster.*`).
    cluster: Option<Arc<crate::cluster::Membership>>,
    /// A target that moves to another member is kept this long at least (and one scrape
    /// interval at least): the members' views of the list may differ by this much.
    handover_floor: Duration,
    /// Targets handed to another member, stopped without staleness once due.
    handovers: Vec<(std::time::Instant, u64)>,
    /// External labels the command line adds to every loaded configuration.
    cluster_labels: Vec<(String, String)>,
    /// The jobs' `scrape_failure_log_file`s, reopened at each reload.
    failure_logs: Option<Arc<crate::scrape::FailureLogs>>,
    /// The remote-write endpoints the cores send to (a reload keeps the unchanged ones).
    endpoints: Vec<Arc<crate::remote::Endpoint>>,
}

impl Manager {
    /// The targets view this manager publishes (active and dropped targets).
    pub fn targets(&self) -> Arc<Mutex<TargetsView>> {
        self.targets.clone()
    }

    /// Builds the manager for `cfg` and derives the first targets (static ones, and what
    /// file_sd finds at once); they are queued for the cores before those start.
    pub fn new(
        config_file: std::path::PathBuf,
        cfg: Config,
        cores: Vec<Arc<Mailbox<CoreMsg>>>,
        registry: Arc<Registry>,
        cluster: Option<Arc<crate::cluster::Membership>>,
    ) -> Manager {
        let (tx, rx) = std::sync::mpsc::channel();
        publish_config(&config_file, &registry);
        let mut m = Manager {
            config_file,
            cfg: cfg.clone(),
            jobs: Vec::new(),
            cores,
            registry,
            targets: Default::default(),
            tx,
            rx,
            next_provider: 0,
            cluster,
            handover_floor: Duration::ZERO,
            handovers: Vec::new(),
            cluster_labels: Vec::new(),
            failure_logs: None,
            endpoints: Vec::new(),
        };
        for sc in &cfg.scrape_configs {
            let job = m.new_job(sc.clone());
            m.jobs.push(job);
        }
        m.sync();
        m
    }

    /// How long a target that moves to another member keeps running here, at least.
    pub fn set_handover_floor(&mut self, floor: Duration) {
        self.handover_floor = floor;
    }

    /// External labels the command line adds (a cluster's HA-tracker labels): a reloaded
    /// file gets them too.
    pub fn set_cluster_labels(&mut self, labels: Vec<(String, String)>) {
        self.cluster_labels = labels;
    }

    /// The remote-write endpoints the cores started with.
    pub fn set_endpoints(&mut self, endpoints: Vec<Arc<crate::remote::Endpoint>>) {
        self.endpoints = endpoints;
    }

    /// The failure log files the cores write, to reopen at each reload.
    pub fn set_failure_logs(&mut self, logs: Arc<crate::scrape::FailureLogs>) {
        self.failure_logs = Some(logs);
    }

    /// Where providers, the web thread and the signal handler send commands.
    pub fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }

    /// Active targets now.
    pub fn target_count(&self) -> usize {
        self.jobs.iter().map(|j| j.targets.active_len()).sum()
    }

    /// Runs the manager on its own thread until the process ends.
    pub fn spawn(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("spate-discovery".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn run(&mut self) {
        loop {
            // Wake at least once a second, for jobs waiting on their providers, and when the
            // next handover is due.
            let now = std::time::Instant::now();
            let wait = self
                .handovers
                .iter()
                .map(|(due, _)| due.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.handle(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    if self.jobs.iter().any(|j| j.dirty) {
                        self.sync();
                    }
                    self.hand_over_due();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Take what else arrives in the window, then apply it all at once.
            let until = std::time::Instant::now() + COALESCE;
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(cmd) => self.handle(cmd),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.sync();
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Groups {
                job,
                provider,
                groups,
            } => {
                if let Some(j) = self.job_of(&job, provider) {
                    j.targets.replace(provider, groups);
                    j.waiting.retain(|p| *p != provider);
                    j.dirty = true;
                }
            }
            Command::Changes {
                job,
                provider,
                changed,
                removed,
            } => {
                if let Some(j) = self.job_of(&job, provider) {
                    j.targets.apply(provider, changed, removed);
                    j.waiting.retain(|p| *p != provider);
                    j.dirty = true;
                }
            }
            Command::Members(members) => self.set_members(members),
            Command::Reload { reply } => {
                let r = self.reload();
                self.registry
                    .reload_successful
                    .store(r.is_ok(), Ordering::Relaxed);
                match &r {
                    Ok(()) => {
                        self.registry
                            .reload_success_time
                            .store(crate::log::unix_seconds().to_bits(), Ordering::Relaxed);
                        crate::log!(
                            Level::Info,
                            "config",
                            "Completed loading of configuration file",
                            filename = self.config_file.display()
                        );
                    }
                    Err(e) => crate::log!(
                        Level::Error,
                        "config",
                        "Error reloading config; the running configuration stays",
                        filename = self.config_file.display(),
                        err = e
                    ),
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        }
    }

    /// Takes a new member list: every shared job's owners are computed again at the next
    /// sync.
    fn set_members(&mut self, members: Vec<String>) {
        let Some(current) = &self.cluster else { return };
        let next = current.with_members(members);
        if next == **current {
            return;
        }
        self.registry
            .sd
            .membership_changes
            .fetch_add(1, Ordering::Relaxed);
        members::log_view(&next, "the cluster's member list changed");
        self.cluster = Some(Arc::new(next));
        for j in &mut self.jobs {
            j.targets.reshard();
            j.dirty = true;
        }
    }

    /// Stops the handed-over targets whose time is up (their new owners scrape them).
    fn hand_over_due(&mut self) {
        let now = std::time::Instant::now();
        let mut due = Vec::new();
        self.handovers.retain(|(at, hash)| {
            let ready = *at <= now;
            if ready {
                due.push(*hash);
            }
            !ready
        });
        for hash in due {
            self.registry.sd.handovers.fetch_add(1, Ordering::Relaxed);
            self.send_to_core(hash, CoreMsg::Stop { hash, stale: false });
        }
    }

    /// The job `name` if `provider` is one of its current providers (updates from providers of
    /// a job's earlier configuration are ignored).
    fn job_of(&mut self, name: &str, provider: u64) -> Option<&mut Job> {
        self.jobs
            .iter_mut()
            .find(|j| j.cfg.job_name == name && j.providers.iter().any(|p| p.id == provider))
    }

    /// Loads the file again and moves to it: unchanged jobs keep running untouched, changed
    /// ones are derived again (targets that stay keep scraping without staleness), removed
    /// ones stop with staleness markers.
    fn reload(&mut self) -> Result<(), String> {
        let mut new = config::load_file(&self.config_file).map_err(|e| e.to_string())?;
        new.add_external_labels(&self.cluster_labels);
        publish_config(&self.config_file, &self.registry);
        self.apply_remote(&new);
        let mut old: Vec<Job> = std::mem::take(&mut self.jobs);
        for sc in &new.scrape_configs {
            match old.iter().position(|j| j.cfg.job_name == sc.job_name) {
                Some(i) if old[i].cfg == *sc => self.jobs.push(old.remove(i)),
                Some(i) => {
                    let prev = old.remove(i);
                    let mut job = self.new_job(sc.clone());
                    // The running targets move to the new job: sync compares against them,
                    // once the job's HTTP and DNS providers have reported (or after a grace
                    // period), so what they found is not stopped and started again.
                    job.targets.carry(prev.targets);
                    job.waiting = job
                        .providers
                        .iter()
                        .map(|p| p.id)
                        .filter(|id| !job.targets.has(*id))
                        .collect();
                    job.waiting_until = Some(std::time::Instant::now() + RELOAD_GRACE);
                    self.jobs.push(job);
                }
                None => {
                    let job = self.new_job(sc.clone());
                    self.jobs.push(job);
                }
            }
        }
        // Jobs that are gone: their targets stop and go stale.
        for job in old {
            for hash in job.targets.into_running() {
                self.send_to_core(hash, CoreMsg::Stop { hash, stale: true });
            }
        }
        // Reopened whatever changed, as Prometheus promises (a rotated file is let go); a
        // file that cannot be opened fails the reload, the rest of it applied.
        let logs = match &self.failure_logs {
            Some(logs) => logs.reopen(&new),
            None => Ok(()),
        };
        self.cfg = new;
        self.sync();
        logs
    }

    /// Applies a reload's `remote_write` and `external_labels`: the cores keep the endpoints
    /// whose settings are unchanged (same `Arc`), retire the others and start the new ones;
    /// samples scraped after this carry the new external labels.
    fn apply_remote(&mut self, new: &Config) {
        let cores = self.cores.len();
        let endpoints: Vec<Arc<crate::remote::Endpoint>> = new
            .remote_write
            .iter()
            .map(|c| {
                self.endpoints
                    .iter()
                    .find(|e| e.cfg == *c)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(crate::remote::Endpoint::new(c.clone(), cores)))
            })
            .collect();
        let same_endpoints = endpoints.len() == self.endpoints.len()
            && endpoints
                .iter()
                .zip(&self.endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let labels = &new.global.external_labels;
        if same_endpoints && *labels == self.cfg.global.external_labels {
            return;
        }
        crate::log!(
            Level::Info,
            "config",
            "applying remote_write and external_labels",
            endpoints = endpoints.len(),
            unchanged = endpoints
                .iter()
                .filter(|e| self.endpoints.iter().any(|o| Arc::ptr_eq(o, e)))
                .count(),
            external_labels_changed = *labels != self.cfg.global.external_labels
        );
        for core in &self.cores {
            core.send(CoreMsg::Remote {
                endpoints: endpoints.clone(),
                external_labels: labels.clone(),
            });
        }
        self.endpoints = endpoints;
    }

    fn new_job(&mut self, cfg: ScrapeConfig) -> Job {
        let mut job = Job {
            relabel: Arc::new(cfg.relabel_configs.clone()),
            cfg,
            providers: Vec::new(),
            targets: job::JobTargets::new(),
            dirty: true,
            waiting: Vec::new(),
            waiting_until: None,
        };
        // Static groups: one provider that never changes.
        let id = self.provider_id();
        let statics: Vec<TargetGroup> = job
            .cfg
            .static_configs
            .iter()
            .enumerate()
            .map(|(i, g)| TargetGroup {
                source: i.to_string(),
                targets: g
                    .targets
                    .iter()
                    .map(|t| vec![("__address__".to_string(), t.clone())])
                    .collect(),
                labels: g.labels.clone(),
            })
            .collect();
        job.targets.replace(id, statics);
        job.providers.push(Provider {
            id,
            stop: Arc::new(AtomicBool::new(false)),
        });
        for f in job.cfg.file_sd_configs.clone() {
            // The first read is synchronous, so start-up has the file's targets at once.
            let mut watcher = file::Watcher::new(f, self.registry.sd.clone());
            let first = watcher.poll(true).unwrap_or_default();
            let id = self.start_provider(&mut job, "file", move |name, id, tx, stop, _| {
                watcher.run(name, id, tx, stop)
            });
            job.targets.replace(id, first);
        }
        for d in job.cfg.dns_sd_configs.clone() {
            self.start_provider(&mut job, "dns", move |name, id, tx, stop, sd| {
                dns::run(&d, name, id, tx, stop, sd)
            });
        }
        for h in job.cfg.http_sd_configs.clone() {
            self.start_provider(&mut job, "http", move |name, id, tx, stop, sd| {
                http::run(&h, name, id, tx, stop, sd)
            });
        }
        for c in job.cfg.consul_sd_configs.clone() {
            self.start_provider(&mut job, "consul", move |name, id, tx, stop, sd| {
                consul::run(&c, name, id, tx, stop, sd)
            });
        }
        for d in job.cfg.docker_sd_configs.clone() {
            self.start_provider(&mut job, "docker", move |name, id, tx, stop, sd| {
                docker::run(&d, name, id, tx, stop, sd)
            });
        }
        for e in job.cfg.ec2_sd_configs.clone() {
            self.start_provider(&mut job, "ec2", move |name, id, tx, stop, sd| {
                ec2::run(&e, name, id, tx, stop, sd)
            });
        }
        for k in job.cfg.kubernetes_sd_configs.clone() {
            self.start_provider(&mut job, "k8s", move |name, id, tx, stop, sd| {
                kubernetes::run(&k, name, id, tx, stop, sd)
            });
        }
        job
    }

    /// Runs a provider of `job` on a thread of its own; returns its id.
    fn start_provider<F>(&mut self, job: &mut Job, kind: &str, run: F) -> u64
    where
        F: FnOnce(&str, u64, &Sender<Command>, &AtomicBool, &Arc<crate::selfmetrics::SdStats>)
            + Send
            + 'static,
    {
        let id = self.provider_id();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, name, flag, sd) = (
            self.tx.clone(),
            job.cfg.job_name.clone(),
            stop.clone(),
            self.registry.sd.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name(format!("spate-{kind}-sd"))
            .spawn(move || run(&name, id, &tx, &flag, &sd));
        if let Err(e) = spawned {
            crate::log!(
                Level::Error,
                "discovery",
                "cannot start a discovery thread",
                job = job.cfg.job_name,
                kind = kind,
                err = e
            );
        }
        job.providers.push(Provider { id, stop });
        id
    }

    fn provider_id(&mut self) -> u64 {
        self.next_provider += 1;
        self.next_provider
    }

    fn send_to_core(&self, hash: u64, msg: CoreMsg) {
        let core = core_for(hash, self.cores.len());
        self.cores[core].send(msg);
    }

    /// Derives every changed job's targets and tells the cores what to start and stop; then
    /// publishes the target set to the targets API.
    fn sync(&mut self) {
        let now = std::time::Instant::now();
        for i in 0..self.jobs.len() {
            if !self.jobs[i].dirty {
                continue;
            }
            let job = &self.jobs[i];
            if !job.waiting.is_empty() && job.waiting_until.is_some_and(|t| now < t) {
                continue;
            }
            let job = &mut self.jobs[i];
            job.dirty = false;
            let msgs = job.targets.sync(&job.cfg, self.cluster.as_deref());
            let due = now + self.handover_floor;
            let handed = job.targets.take_handover();
            if !self.handovers.is_empty() {
                // Owned again before its handover was due: it just keeps running.
                let started: std::collections::HashSet<u64> = msgs
                    .iter()
                    .filter(|(_, m)| matches!(m, CoreMsg::Start(_)))
                    .map(|(h, _)| *h)
                    .collect();
                self.handovers.retain(|(_, h)| !started.contains(h));
            }
            for (hash, msg) in msgs {
                self.send_to_core(hash, msg);
            }
            for (hash, interval) in handed {
                self.handovers.push((due.max(now + interval), hash));
            }
        }
        self.hand_over_due();
        let discovered: Vec<(String, usize)> = self
            .jobs
            .iter()
            .map(|j| (j.cfg.job_name.clone(), j.targets.discovered_len()))
            .collect();
        *self
            .registry
            .sd
            .discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = discovered;
        let active = self
            .jobs
            .iter()
            .map(|j| (j.cfg.job_name.clone(), j.targets.active_len()))
            .collect();
        *self
            .registry
            .sd
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = active;
        let mut view = TargetsView::default();
        for job in &self.jobs {
            job.targets.publish(&job.cfg, &mut view);
            view.pools
                .push((job.cfg.job_name.clone(), job.relabel.clone()));
        }
        if let Some(c) = &self.cluster {
            let mut shares: BTreeMap<String, usize> =
                c.members.iter().map(|m| (m.clone(), 0)).collect();
            let mut shared_targets = 0;
            for job in self.jobs.iter().filter(|j| c.shards(&j.cfg.job_name)) {
                shared_targets += job.targets.count_owners(&mut shares);
            }
            *self
                .registry
                .cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(crate::selfmetrics::ClusterView {
                membership: c.clone(),
                shares,
                shared_targets,
            });
        }
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

/// Shows the configuration file's content, secrets redacted, in `/api/v1/status/config`.
pub fn publish_config(path: &std::path::Path, registry: &Registry) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let yaml = config::redact::redacted(&text).unwrap_or_default();
    *registry
        .config_yaml
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = yaml;
}

/// Parses the target group list file_sd and http_sd share:
/// `[{"targets": ["host:port", ...], "labels": {"name": "value", ...}}, ...]` (JSON or YAML).
/// Each group gets `extra` (`__meta_filepath`, `__meta_url`) and the source `prefix:index`.
pub fn parse_groups(text: &str, prefix: &str, extra: &Labels) -> Result<Vec<TargetGroup>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Raw {
        #[serde(default)]
        targets: Vec<String>,
        #[serde(default)]
        labels: Option<BTreeMap<String, String>>,
    }
    let raw: Option<Vec<Option<Raw>>> = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        msg.lines().next().unwrap_or(&msg).to_string()
    })?;
    let mut out = Vec::new();
    for (i, g) in raw.unwrap_or_default().into_iter().enumerate() {
        let g = g.ok_or_else(|| format!("target group {i} is null"))?;
        let mut labels: Labels = Vec::new();
        for (k, v) in g.labels.unwrap_or_default() {
            if !crate::names::Validation::Utf8.is_valid_label_name(k.as_bytes()) {
                return Err(format!("{k:?} is not a valid label name (group {i})"));
            }
            labels.push((k, v));
        }
        for (k, v) in extra {
            labels.retain(|(n, _)| n != k);
            labels.push((k.clone(), v.clone()));
        }
        labels.sort();
        let mut targets = Vec::new();
        for t in g.targets {
            if t.is_empty() || t.contains('/') {
                return Err(format!("{t:?} is not a valid target address (group {i})"));
            }
            targets.push(vec![("__address__".to_string(), t)]);
        }
        out.push(TargetGroup {
            source: format!("{prefix}:{i}"),
            targets,
            labels,
        });
    }
    Ok(out)
}

/// A provider's link to the manager: sends its groups when they differ from the last sent.
pub(crate) struct Outbox<'a> {
    pub job: &'a str,
    pub provider: u64,
    pub tx: &'a Sender<Command>,
    last: Option<Vec<TargetGroup>>,
}

impl<'a> Outbox<'a> {
    pub fn new(job: &'a str, provider: u64, tx: &'a Sender<Command>) -> Outbox<'a> {
        Outbox {
            job,
            provider,
            tx,
            last: None,
        }
    }

    /// Sends `groups` unless they are what was sent last; false once the manager is gone.
    pub fn offer(&mut self, groups: Vec<TargetGroup>) -> bool {
        if self.last.as_ref() == Some(&groups) {
            return true;
        }
        self.last = Some(groups.clone());
        self.tx
            .send(Command::Groups {
                job: self.job.to_string(),
                provider: self.provider,
                groups,
            })
            .is_ok()
    }
}

/// A provider that lists its targets every `interval` (http_sd, Docker, EC2): each list that
/// differs from the last sent goes to the manager; a failure keeps the last list, is counted
/// in `failures` and logged as `what` failing. Returns at `stop` or once the manager is gone.
pub(crate) struct Poll<'a> {
    pub job: &'a str,
    pub provider: u64,
    pub tx: &'a Sender<Command>,
    pub stop: &'a AtomicBool,
    pub interval: Duration,
    pub failures: &'a std::sync::atomic::AtomicU64,
    pub what: &'a str,
}

impl Poll<'_> {
    pub fn run(&self, mut refresh: impl FnMut() -> Result<Vec<TargetGroup>, String>) {
        let mut out = Outbox::new(self.job, self.provider, self.tx);
        loop {
            match refresh() {
                Ok(groups) => {
                    if !out.offer(groups) {
                        return;
                    }
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    crate::log!(
                        Level::Error,
                        "discovery",
                        "service discovery failed; its last targets stay",
                        job = self.job,
                        mechanism = self.what,
                        err = e
                    );
                }
            }
            if sleep_unless(self.interval, self.stop) {
                return;
            }
        }
    }
}

/// Sleeps up to `d` in short steps; returns early (true) when `stop` is set.
fn sleep_unless(d: Duration, stop: &AtomicBool) -> bool {
    let step = Duration::from_millis(100);
    let until = std::time::Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep(step.min(until - now));
    }
}

/// The manager's handle for the web thread: reloads on request, waiting for the outcome.
#[derive(Clone)]
pub struct ReloadHandle(pub Sender<Command>);

impl ReloadHandle {
    pub fn reload(&self) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Command::Reload { reply: Some(tx) }).is_err() {
            return Err("the discovery manager is not running".into());
        }
        rx.recv_timeout(Duration::from_secs(60))
            .map_err(|_| "the reload did not finish in 60s".to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_assignment_is_stable_and_spread() {
        assert_eq!(core_for(10, 4), 2);
        assert_eq!(core_for(u64::MAX, 1), 0);
        // Hashes of real target label sets spread over cores.
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let addr = format!("10.0.{}.{}:9100", i / 250, i % 250);
            let h = crate::hash::label_set_hash([("__address__", addr.as_str()), ("job", "node")]);
            counts[core_for(h, 4)] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn target_groups_from_json_and_yaml() {
        let extra = vec![("__meta_filepath".to_string(), "/x.json".to_string())];
        let json = r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": []}]"#;
        let g = parse_groups(json, "/x.json", &extra).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].source, "/x.json:0");
        assert_eq!(g[0].targets[1], vec![("__address__".into(), "b:2".into())]);
        assert_eq!(
            g[0].labels,
            vec![
                ("__meta_filepath".to_string(), "/x.json".to_string()),
                ("env".to_string(), "prod".to_string())
            ]
        );
        let yaml = "- targets: ['c:3']\n  labels:\n    team: a\n";
        let g = parse_groups(yaml, "f", &vec![]).unwrap();
        assert_eq!(g[0].targets[0][0].1, "c:3");
        assert!(parse_groups("[]", "f", &vec![]).unwrap().is_empty());
        assert!(parse_groups("", "f", &vec![]).unwrap().is_empty());
        assert!(parse_groups("[null]", "f", &vec![]).is_err());
        assert!(parse_groups(r#"[{"targets": ["a/b"]}]"#, "f", &vec![]).is_err());
        // Label names are Prometheus 3's UTF-8 ones: any but the empty name.
        let g = parse_groups(
            r#"[{"targets": ["a:1"], "labels": {"0x": "v", "k8s.pod": "p"}}]"#,
            "f",
            &vec![],
        )
        .unwrap();
        assert!(g[0].labels.iter().any(|(k, _)| k == "k8s.pod"));
        assert!(
            parse_groups(
                r#"[{"targets": ["a:1"], "labels": {"": "v"}}]"#,
                "f",
                &vec![]
            )
            .is_err()
        );
        assert!(parse_groups(r#"[{"targets": ["a:1"], "extra": 1}]"#, "f", &vec![]).is_err());
        assert!(parse_groups("{not a list", "f", &vec![]).is_err());
    }
}
