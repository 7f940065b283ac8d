//! One job's discovered target groups and the targets they derive to, kept per group so a
//! change costs the changed groups only: a group that changes is derived again (its relabeling
//! and checks), and only the targets it adds or loses start or stop. A target that several
//! groups derive to runs once, while any of them still has it.
//!
//! **Invariant:** `active` holds exactly the targets some current group derives to, each with
//! the number of groups that do; a target is started when that number leaves zero and stopped
//! (with staleness) when it returns to zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::TargetGroup;
use crate::config::ScrapeConfig;
use crate::log::Level;
use crate::scrape::{self, CoreMsg, Discovered, DroppedTarget, TargetStatus, TargetsView};

/// A group and what it derived to (`None` until derived).
struct Entry {
    group: Arc<TargetGroup>,
    derived: Option<GroupTargets>,
}

#[derive(Default)]
struct GroupTargets {
    /// Hashes of the targets it yields, in order.
    hashes: Vec<u64>,
    dropped: Vec<DroppedTarget>,
    dropped_count: usize,
    /// In a cluster: how many of its targets each member owns.
    owners: BTreeMap<String, usize>,
}

struct Active {
    status: Arc<TargetStatus>,
    /// How many groups derive to this target.
    refs: u32,
}

#[derive(Default)]
pub(super) struct JobTargets {
    /// By provider, then by source.
    groups: BTreeMap<u64, BTreeMap<String, Entry>>,
    active: HashMap<u64, Active>,
    /// What groups that changed or went used to yield, not yet released.
    released: Vec<u64>,
    /// Everything is derived again at the next sync (new job, reloaded configuration).
    full: bool,
    /// Targets running before a reload, kept until the first full sync decides.
    carried: HashMap<u64, Arc<TargetStatus>>,
    /// Targets that stopped here because another member owns them now: the manager stops
    /// them (without staleness) after the handover delay.
    handover: Vec<(u64, std::time::Duration)>,
}

impl JobTargets {
    pub fn new() -> JobTargets {
        JobTargets {
            full: true,
            ..Default::default()
        }
    }

    /// Whether `provider` has reported.
    pub fn has(&self, provider: u64) -> bool {
        self.groups.contains_key(&provider)
    }

    /// Takes a provider's complete group list: groups whose content changed, and the sources
    /// it no longer has, are updated.
    pub fn replace(&mut self, provider: u64, groups: Vec<TargetGroup>) {
        let mut next: BTreeMap<String, Arc<TargetGroup>> = BTreeMap::new();
        for g in groups {
            next.insert(g.source.clone(), Arc::new(g));
        }
        let old = self.groups.entry(provider).or_default();
        let removed: Vec<String> = old
            .keys()
            .filter(|s| !next.contains_key(*s))
            .cloned()
            .collect();
        let changed: Vec<Arc<TargetGroup>> = next
            .into_values()
            .filter(|g| old.get(&g.source).is_none_or(|e| *e.group != **g))
            .collect();
        self.apply(provider, changed, removed);
    }

    /// Takes changes from a provider: groups added or changed, and sources gone.
    pub fn apply(&mut self, provider: u64, changed: Vec<Arc<TargetGroup>>, removed: Vec<String>) {
        let groups = self.groups.entry(provider).or_default();
        for source in removed {
            if let Some(e) = groups.remove(&source) {
                self.released
                    .extend(e.derived.into_iter().flat_map(|d| d.hashes));
            }
        }
        for g in changed {
            let old = groups.insert(
                g.source.clone(),
                Entry {
                    group: g,
                    derived: None,
                },
            );
            if let Some(e) = old {
                self.released
                    .extend(e.derived.into_iter().flat_map(|d| d.hashes));
            }
        }
    }

    /// Carries the targets of the job's previous configuration (a reload): the next sync
    /// derives everything and keeps those it still yields running.
    pub fn carry(&mut self, previous: JobTargets) {
        self.carried = previous
            .active
            .into_iter()
            .map(|(h, a)| (h, a.status))
            .chain(previous.carried)
            .collect();
        self.full = true;
    }

    /// The cluster's member list changed: every target's owners are computed again.
    pub fn reshard(&mut self) {
        self.full = true;
    }

    /// Targets to hand over to their new owners, with their scrape intervals.
    pub fn take_handover(&mut self) -> Vec<(u64, std::time::Duration)> {
        std::mem::take(&mut self.handover)
    }

    /// Every running target (the job goes away).
    pub fn into_running(self) -> impl Iterator<Item = u64> {
        self.active.into_keys().chain(self.carried.into_keys())
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// Targets discovered (before relabeling).
    pub fn discovered_len(&self) -> usize {
        self.groups
            .values()
            .flat_map(|g| g.values())
            .map(|e| e.group.targets.len())
            .sum()
    }

    /// Derives the groups that changed (all of them after a reload, or when `target_limit`
    /// applies to the job as a whole) and returns what the cores must start and stop.
    pub fn sync(
        &mut self,
        cfg: &ScrapeConfig,
        cluster: Option<&crate::cluster::Membership>,
    ) -> Vec<(u64, CoreMsg)> {
        let mut msgs = Vec::new();
        let limit = cfg.limits.target_limit;
        let full = self.full || limit > 0;
        let mut previous: HashMap<u64, Arc<TargetStatus>> = HashMap::new();
        if full {
            // Everything again: current targets are kept if still yielded, the rest stop.
            self.full = false;
            previous = std::mem::take(&mut self.carried);
            previous.extend(self.active.drain().map(|(h, a)| (h, a.status)));
            self.released.clear();
            for e in self.groups.values_mut().flat_map(|g| g.values_mut()) {
                e.derived = None;
            }
        }
        let mut fresh = Vec::new();
        let cluster = cluster.filter(|c| c.shards(&cfg.job_name));
        // Targets this member derives but another owns: they move, they do not vanish.
        let mut moved: HashSet<u64> = HashSet::new();
        for e in self.groups.values_mut().flat_map(|g| g.values_mut()) {
            if e.derived.is_some() {
                continue;
            }
            let mut derived = scrape::derive(cfg, &discovered(&e.group));
            log_errors(&derived.errors);
            let mut owner_counts: BTreeMap<String, usize> = BTreeMap::new();
            if let Some(c) = cluster {
                // Targets another member owns are dropped here, as relabeling drops.
                let mut mine = Vec::new();
                let keep = cfg.limits.keep_dropped_targets;
                for t in derived.targets {
                    let owners = c.owners(&c.key(&t.pool, &t.url(), &t.all_labels));
                    for o in &owners {
                        match owner_counts.get_mut(*o) {
                            Some(n) => *n += 1,
                            None => {
                                owner_counts.insert(o.to_string(), 1);
                            }
                        }
                    }
                    if owners.contains(&c.me.as_str()) {
                        mine.push(t);
                        continue;
                    }
                    moved.insert(t.hash);
                    derived.dropped_count += 1;
                    if keep == 0 || (derived.dropped.len() as u64) < keep {
                        derived.dropped.push(DroppedTarget {
                            job: cfg.job_name.clone(),
                            discovered: t.discovered,
                            reason: Some(format!("sharding: owned by {}", owners.join(", "))),
                        });
                    }
                }
                derived.targets = mine;
            }
            e.derived = Some(GroupTargets {
                hashes: derived.targets.iter().map(|t| t.hash).collect(),
                dropped: derived.dropped,
                dropped_count: derived.dropped_count,
                owners: owner_counts,
            });
            fresh.extend(derived.targets);
        }
        if full && limit > 0 {
            // As Prometheus: past the limit every target of the job fails, so it shows.
            let n = fresh.iter().map(|t| t.hash).collect::<HashSet<_>>().len();
            for t in &mut fresh {
                t.forced_error = (n as u64 > limit).then(|| {
                    format!("target_limit exceeded (number of targets: {n}, limit: {limit})")
                });
            }
        }
        for t in fresh {
            add_to(&mut self.active, t, &mut previous, &mut msgs);
        }
        for hash in std::mem::take(&mut self.released) {
            if let Some(a) = self.active.get_mut(&hash) {
                a.refs -= 1;
                if a.refs == 0 {
                    let a = self.active.remove(&hash);
                    if moved.contains(&hash) {
                        let interval = a.map(|a| a.status.target.interval).unwrap_or_default();
                        self.handover.push((hash, interval));
                    } else {
                        msgs.push((hash, CoreMsg::Stop { hash, stale: true }));
                    }
                }
            }
        }
        for (hash, status) in previous {
            if moved.contains(&hash) {
                self.handover.push((hash, status.target.interval));
            } else {
                msgs.push((hash, CoreMsg::Stop { hash, stale: true }));
            }
        }
        msgs
    }

    /// Adds how many of this job's targets each member owns to `shares`; returns how many
    /// targets the job has.
    pub fn count_owners(&self, shares: &mut BTreeMap<String, usize>) -> usize {
        let mut total = 0;
        for d in self
            .groups
            .values()
            .flat_map(|g| g.values())
            .flat_map(|e| &e.derived)
        {
            total += d.hashes.len() + d.dropped_count;
            for (m, n) in &d.owners {
                *shares.entry(m.clone()).or_insert(0) += n;
            }
        }
        total
    }

    /// Adds this job's targets, dropped targets and counts to the targets view.
    pub fn publish(&self, cfg: &ScrapeConfig, view: &mut TargetsView) {
        let mut seen = HashSet::new();
        let keep = cfg.limits.keep_dropped_targets;
        let mut dropped = 0usize;
        let mut kept = 0u64;
        for groups in self.groups.values() {
            for e in groups.values() {
                let Some(d) = &e.derived else { continue };
                for h in &d.hashes {
                    if seen.insert(*h)
                        && let Some(a) = self.active.get(h)
                    {
                        view.active.push(a.status.clone());
                    }
                }
                dropped += d.dropped_count;
                for t in &d.dropped {
                    if keep == 0 || kept < keep {
                        view.dropped.push(t.clone());
                        kept += 1;
                    }
                }
            }
        }
        view.dropped_counts.push((cfg.job_name.clone(), dropped));
    }
}

/// Starts `t`, or counts one more group for it if it runs; a target of the previous
/// configuration (`previous`) is kept when it is the same, or replaced with its health.
fn add_to(
    active: &mut HashMap<u64, Active>,
    t: scrape::Target,
    previous: &mut HashMap<u64, Arc<TargetStatus>>,
    msgs: &mut Vec<(u64, CoreMsg)>,
) {
    let hash = t.hash;
    if let Some(a) = active.get_mut(&hash) {
        a.refs += 1;
        if a.status.target != t {
            // The same target from changed discovery (its labels before relabeling): the
            // core replaces the loop without staleness, health carried over.
            a.status = Arc::new(TargetStatus::succeeding(t, &a.status));
            msgs.push((hash, CoreMsg::Start(a.status.clone())));
        }
        return;
    }
    let status = match previous.remove(&hash) {
        Some(old) if old.target == t => old,
        old => {
            // New, or changed: the core replaces a running loop without staleness; health
            // carries over for a changed one.
            let status = Arc::new(match old {
                Some(old) => TargetStatus::succeeding(t, &old),
                None => TargetStatus::new(t),
            });
            msgs.push((hash, CoreMsg::Start(status.clone())));
            status
        }
    };
    active.insert(hash, Active { status, refs: 1 });
}

/// A group's targets with its labels, as derivation takes them.
fn discovered(g: &TargetGroup) -> Vec<Discovered> {
    g.targets
        .iter()
        .map(|t| (t.clone(), g.labels.clone()))
        .collect()
}

fn log_errors(errors: &[scrape::TargetError]) {
    for e in errors {
        crate::log!(
            Level::Error,
            "scrape",
            "dropping target",
            job = e.job,
            target = e.address,
            err = e.reason
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> ScrapeConfig {
        let text = format!("scrape_configs:\n  - job_name: j\n{extra}");
        crate::config::load_str(&text, "t.yml")
            .unwrap()
            .scrape_configs
            .remove(0)
    }

    fn group(source: &str, addrs: &[&str], labels: &[(&str, &str)]) -> TargetGroup {
        TargetGroup {
            source: source.into(),
            targets: addrs
                .iter()
                .map(|a| vec![("__address__".to_string(), a.to_string())])
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// (starts, stops) in `msgs`.
    fn counts(msgs: &[(u64, CoreMsg)]) -> (usize, usize) {
        let starts = msgs
            .iter()
            .filter(|(_, m)| matches!(m, CoreMsg::Start(..)))
            .count();
        (starts, msgs.len() - starts)
    }

    #[test]
    fn only_what_a_changed_group_adds_or_loses_starts_or_stops() {
        let c = cfg("");
        let mut j = JobTargets::new();
        j.replace(
            1,
            vec![group("a", &["x:1", "y:1"], &[]), group("b", &["z:1"], &[])],
        );
        assert_eq!(counts(&j.sync(&c, None)), (3, 0));
        // Group a loses y and gains w; b is untouched.
        j.replace(
            1,
            vec![group("a", &["x:1", "w:1"], &[]), group("b", &["z:1"], &[])],
        );
        assert_eq!(counts(&j.sync(&c, None)), (1, 1));
        assert_eq!(j.active_len(), 3);
        // A target in two groups runs once, and stops only when both lose it.
        j.apply(2, vec![Arc::new(group("c", &["z:1"], &[]))], vec![]);
        assert_eq!(counts(&j.sync(&c, None)), (0, 0));
        j.replace(1, vec![group("a", &["x:1", "w:1"], &[])]);
        assert_eq!(counts(&j.sync(&c, None)), (0, 0));
        j.apply(2, vec![], vec!["c".into()]);
        assert_eq!(counts(&j.sync(&c, None)), (0, 1));
        assert_eq!(j.active_len(), 2);
        assert_eq!(j.discovered_len(), 2);
    }

    #[test]
    fn changed_discovery_restarts_a_target_without_staleness() {
        let c = cfg("    relabel_configs:\n      - {regex: __meta_x, action: labeldrop}\n");
        let mut j = JobTargets::new();
        j.replace(1, vec![group("a", &["x:1"], &[("__meta_x", "1")])]);
        assert_eq!(counts(&j.sync(&c, None)), (1, 0));
        // Same final labels (same hash), other discovered labels: replaced, not stopped.
        j.replace(1, vec![group("a", &["x:1"], &[("__meta_x", "2")])]);
        assert_eq!(counts(&j.sync(&c, None)), (1, 0));
        let mut view = TargetsView::default();
        j.publish(&c, &mut view);
        assert_eq!(view.active.len(), 1);
        assert!(
            view.active[0]
                .target
                .discovered
                .contains(&("__meta_x".into(), "2".into()))
        );
    }

    #[test]
    fn a_reload_keeps_targets_still_yielded_and_stops_the_rest() {
        let c = cfg("");
        let mut old = JobTargets::new();
        old.replace(1, vec![group("a", &["x:1", "y:1"], &[])]);
        old.sync(&c, None);
        let mut j = JobTargets::new();
        j.carry(old);
        j.replace(7, vec![group("a", &["x:1"], &[])]);
        assert_eq!(counts(&j.sync(&c, None)), (0, 1));
    }

    #[test]
    fn target_limit_counts_the_whole_job() {
        let c = cfg("    target_limit: 2\n");
        let mut j = JobTargets::new();
        j.replace(1, vec![group("a", &["x:1", "y:1"], &[])]);
        j.sync(&c, None);
        j.apply(2, vec![Arc::new(group("b", &["z:1"], &[]))], vec![]);
        let msgs = j.sync(&c, None);
        let errors: Vec<_> = msgs
            .iter()
            .filter_map(|(_, m)| match m {
                CoreMsg::Start(s) => s.target.forced_error.clone(),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("number of targets: 3, limit: 2"));
    }

    #[test]
    fn targets_another_member_takes_are_handed_over_without_staleness() {
        use crate::cluster::Membership;
        let c = cfg("");
        let addrs: Vec<String> = (0..60).map(|i| format!("10.0.0.{i}:9100")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let mut j = JobTargets::new();
        j.replace(1, vec![group("a", &refs, &[])]);
        let alone = Membership::new("a".into(), vec!["a".into()], 1, "c").unwrap();
        assert_eq!(counts(&j.sync(&c, Some(&alone))), (60, 0));
        // A second member joins: about half the targets move to it, with no stop now and
        // no staleness; they are handed over.
        let two = alone.with_members(vec!["a".into(), "b".into()]);
        j.reshard();
        let msgs = j.sync(&c, Some(&two));
        assert_eq!(counts(&msgs), (0, 0), "kept targets run on untouched");
        let handed = j.take_handover();
        assert!((15..45).contains(&handed.len()), "{}", handed.len());
        assert_eq!(j.active_len() + handed.len(), 60);
        assert!(handed.iter().all(|(_, i)| *i == c.scrape_interval));
        // A target that leaves discovery still goes stale.
        let fewer: Vec<&str> = refs[1..].to_vec();
        j.replace(1, vec![group("a", &fewer, &[])]);
        let msgs = j.sync(&c, Some(&two));
        let owned_first = two.owns(&two.key("j", &format!("http://{}/metrics", refs[0]), &[]));
        let stale = msgs
            .iter()
            .filter(|(_, m)| matches!(m, CoreMsg::Stop { stale: true, .. }))
            .count();
        assert_eq!(stale, usize::from(owned_first));
        assert!(j.take_handover().is_empty());
        // A job every member scrapes ignores the cluster.
        let mut all = two.clone();
        all.unsharded_jobs = vec!["j".into()];
        j.reshard();
        j.sync(&c, Some(&all));
        assert!(j.take_handover().is_empty());
        assert_eq!(j.active_len(), 59);
    }
}
