//! Sharing targets among the members of a cluster of agents, with no coordinator: every
//! member computes, from the same member list, the same owners for each target by rendezvous
//! (highest-random-weight) hashing of a key every member derives identically — the scrape
//! pool and the scrape URL (and labels the user names), never per-member labels. When the
//! list changes, only the targets whose owners change move: about R/N of them.
//!
//! The list comes from a source the discovery layer follows (flags, a file, DNS or
//! Kubernetes); this module only decides, for one view of the list, who owns what.
//!
//! In HA-tracker form (Cortex/Mimir), members form groups of R replicas by the number their
//! names end in (`spate-4` with R=2 is replica 0 of group 2): targets are hashed over the
//! groups, and every replica of the owning group scrapes them.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// This member's view of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// This member's name.
    pub me: String,
    /// Every member's name, sorted, this one included when it is listed.
    pub members: Vec<String>,
    /// How many members scrape each target (replicas per group in HA-tracker form).
    pub replication: usize,
    /// The cluster's name: seeds the scrape phase, so every member scrapes a target at the
    /// same offset and moved targets keep their timestamps.
    pub name: String,
    /// Members form groups of `replication` by the number their names end in.
    pub groups: bool,
    /// Target labels added to the key (after relabeling), as the user chose.
    pub key_labels: Vec<String>,
    /// Jobs every member scrapes (not shared).
    pub unsharded_jobs: Vec<String>,
}

impl Membership {
    /// vmagent's form: `count` members named `0`..`count-1`; `num` is this member's number,
    /// or a name ending in it (`spate-2`, as a StatefulSet pod is named).
    pub fn numbered(
        count: usize,
        num: &str,
        replication: usize,
        name: &str,
    ) -> Result<Membership, String> {
        let n = ordinal(num).ok_or_else(|| {
            format!("--cluster.member-num {num:?} is not a number or a name ending in -<number>")
        })?;
        if n >= count {
            return Err(format!(
                "--cluster.member-num {n} is not below --cluster.members-count {count}"
            ));
        }
        Membership::new(
            n.to_string(),
            (0..count).map(|i| i.to_string()).collect(),
            replication,
            name,
        )
    }

    pub fn new(
        me: String,
        members: Vec<String>,
        replication: usize,
        name: &str,
    ) -> Result<Membership, String> {
        if replication == 0 {
            return Err("--cluster.replication-factor must be at least 1".into());
        }
        Ok(Membership {
            me,
            members: Vec::new(),
            replication,
            name: name.to_string(),
            groups: false,
            key_labels: Vec::new(),
            unsharded_jobs: Vec::new(),
        }
        .with_members(members))
    }

    /// The same cluster with another member list (what a membership source reported).
    pub fn with_members(&self, members: Vec<String>) -> Membership {
        let mut members = members;
        members.sort();
        members.dedup();
        Membership {
            members,
            ..self.clone()
        }
    }

    /// Whether this member is in its own list (a member that is not scrapes nothing).
    pub fn listed(&self) -> bool {
        self.members.contains(&self.me)
    }

    /// Whether `job`'s targets are shared (not scraped by every member).
    pub fn shards(&self, job: &str) -> bool {
        !self.unsharded_jobs.iter().any(|j| j == job)
    }

    /// This member's group in HA-tracker form.
    pub fn group(&self) -> Option<usize> {
        self.group_of(&self.me)
    }

    fn group_of(&self, member: &str) -> Option<usize> {
        ordinal(member).map(|n| n / self.replication)
    }

    /// The members that own `key`: the `replication` highest scores, best first; in
    /// HA-tracker form, the replicas of the highest-scoring group.
    pub fn owners(&self, key: &str) -> Vec<&str> {
        if self.groups {
            let groups: std::collections::BTreeSet<usize> = self
                .members
                .iter()
                .filter_map(|m| self.group_of(m))
                .collect();
            let best = groups
                .into_iter()
                .max_by_key(|g| (score(&format!("group-{g}"), key), std::cmp::Reverse(*g)));
            return match best {
                Some(g) => self
                    .members
                    .iter()
                    .filter(|m| self.group_of(m) == Some(g))
                    .map(String::as_str)
                    .collect(),
                None => Vec::new(),
            };
        }
        let mut scored: Vec<(u64, &str)> = self
            .members
            .iter()
            .map(|m| (score(m, key), m.as_str()))
            .collect();
        // Highest score first; ties (never in practice) by name, so all members agree.
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        scored
            .into_iter()
            .take(self.replication)
            .map(|(_, m)| m)
            .collect()
    }

    /// Whether this member scrapes `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.owners(key).contains(&self.me.as_str())
    }

    /// The key of a target of `pool` scraped at `url`, with `labels` (the target's labels
    /// after relabeling) giving the values of the key labels.
    pub fn key(&self, pool: &str, url: &str, labels: &[(String, String)]) -> String {
        let mut key = target_key(pool, url);
        for name in &self.key_labels {
            key.push('\u{0}');
            if let Some((_, v)) = labels.iter().find(|(n, _)| n == name) {
                key.push_str(v);
            }
        }
        key
    }
}

/// Where the member list comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Given once (`--cluster.members`, `--cluster.members-count`).
    Fixed,
    /// A file of names (one per line or comma-separated, `#` comments), read again every
    /// refresh interval.
    File(std::path::PathBuf),
    /// The records of a DNS name (a headless service), looked up every refresh interval:
    /// SRV records name members by their target's first label (`spate-0` of
    /// `spate-0.spate.ns.svc.cluster.local`), A and AAAA records by address.
    Dns { name: String, kind: DnsKind },
    /// The ready pods behind a Kubernetes service (its EndpointSlices), watched; members are
    /// named by pod name. `namespace` is the pod's own when not given.
    Kubernetes {
        namespace: Option<String>,
        service: String,
        kubeconfig: Option<std::path::PathBuf>,
    },
}

/// The DNS records a member list is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsKind {
    Srv,
    A,
    Aaaa,
}

/// Member names in a members file: one per line or comma-separated, `#` starting a comment.
pub fn parse_member_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(String::from)
        .collect()
}

/// The number a member's name ends in: `7`, `spate-7`, `spate-7.spate.ns.svc`.
pub fn ordinal(name: &str) -> Option<usize> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let host = name.split('.').next().unwrap_or(name);
    host.rsplit('-').next().and_then(|d| d.parse().ok())
}

/// The key a target is assigned by: its scrape pool and its scrape URL.
pub fn target_key(pool: &str, url: &str) -> String {
    format!("{pool}\u{0}{url}")
}

/// A member's weight for `key`: the hash of both, finished with a 64-bit mixer (splitmix64's)
/// so that members' weights for one key are independent.
fn score(member: &str, key: &str) -> u64 {
    let mut x = xxh3_64_with_seed(key.as_bytes(), 0) ^ xxh3_64_with_seed(member.as_bytes(), 1);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("spate-{i}")).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                target_key(
                    "node",
                    &format!("http://10.0.{}.{}:9100/metrics", i / 250, i % 250),
                )
            })
            .collect()
    }

    #[test]
    fn every_member_computes_the_same_owners() {
        let a = Membership::new("spate-0".into(), members(5), 2, "c").unwrap();
        let mut shuffled = members(5);
        shuffled.reverse();
        let b = Membership::new("spate-3".into(), shuffled, 2, "c").unwrap();
        for k in keys(200) {
            assert_eq!(a.owners(&k), b.owners(&k));
            assert_eq!(a.owners(&k).len(), 2);
        }
    }

    #[test]
    fn assignment_is_balanced() {
        let m = Membership::new("spate-0".into(), members(10), 1, "c").unwrap();
        // 1,000 targets of each of several jobs: no member owns more than 1.25× the mean.
        for job in ["node", "kubelet", "cadvisor", "app", "blackbox", "db"] {
            let mut count = std::collections::HashMap::new();
            for i in 0..1000 {
                let k = target_key(
                    job,
                    &format!("http://10.1.{}.{}:9100/metrics", i / 250, i % 250),
                );
                *count.entry(m.owners(&k)[0].to_string()).or_insert(0usize) += 1;
            }
            let max = count.values().max().copied().unwrap_or(0);
            assert_eq!(count.len(), 10);
            assert!(max as f64 <= 1.25 * 100.0, "{job}: {count:?}");
        }
    }

    #[test]
    fn a_resize_moves_about_one_target_in_n() {
        let ks = keys(2000);
        let owner = |n: usize, k: &str| {
            Membership::new("x".into(), members(n), 1, "c")
                .unwrap()
                .owners(k)[0]
                .to_string()
        };
        for (from, to) in [(3, 5), (5, 2), (10, 11)] {
            let moved = ks.iter().filter(|k| owner(from, k) != owner(to, k)).count();
            let share = moved as f64 / ks.len() as f64;
            // Growing from N to M moves (M-N)/M; shrinking moves (N-M)/N.
            let ideal = (from as f64 - to as f64).abs() / from.max(to) as f64;
            assert!(
                share <= ideal + 0.05,
                "{from}→{to}: {share} moved, ideal {ideal}"
            );
            // Modulo hashing moves most targets.
            let modulo = ks
                .iter()
                .filter(|k| {
                    let h = xxh3_64_with_seed(k.as_bytes(), 0);
                    h % from as u64 != h % to as u64
                })
                .count() as f64
                / ks.len() as f64;
            assert!(
                modulo > share,
                "{from}→{to}: modulo {modulo}, rendezvous {share}"
            );
        }
    }

    #[test]
    fn vmagent_form_and_pod_names() {
        let m = Membership::numbered(3, "spate-2", 1, "c").unwrap();
        assert_eq!(m.me, "2");
        assert_eq!(m.members, vec!["0", "1", "2"]);
        assert!(m.listed());
        assert!(Membership::numbered(3, "3", 1, "c").is_err());
        assert!(Membership::numbered(3, "spate", 1, "c").is_err());
        assert!(Membership::new("a".into(), vec![], 0, "c").is_err());
        let lonely = Membership::new("z".into(), members(3), 1, "c").unwrap();
        assert!(!lonely.listed());
        assert!(keys(50).iter().all(|k| !lonely.owns(k)));
    }

    #[test]
    fn ha_groups_share_targets_by_group() {
        // Six members, R=2: groups 0 (spate-0, spate-1), 1 (2, 3) and 2 (4, 5).
        let mut m = Membership::new("spate-3".into(), members(6), 2, "c").unwrap();
        m.groups = true;
        assert_eq!(m.group(), Some(1));
        let mut per_group = [0usize; 3];
        for k in keys(600) {
            let owners = m.owners(&k);
            assert_eq!(owners.len(), 2, "{owners:?}");
            let g = ordinal(owners[0]).unwrap() / 2;
            assert_eq!(ordinal(owners[1]).unwrap() / 2, g, "one group's replicas");
            per_group[g] += 1;
        }
        assert!(per_group.iter().all(|n| *n > 150), "{per_group:?}");
        // A replica that goes leaves its group's targets to the other replica alone.
        let fewer = m.with_members(members(6).into_iter().filter(|x| x != "spate-2").collect());
        for k in keys(100) {
            let before = m.owners(&k);
            let after = fewer.owners(&k);
            let kept: Vec<&str> = before.into_iter().filter(|o| *o != "spate-2").collect();
            assert_eq!(after, kept);
        }
    }

    #[test]
    fn key_labels_and_unsharded_jobs() {
        let mut m = Membership::new("a".into(), vec!["a".into(), "b".into()], 1, "c").unwrap();
        m.key_labels = vec!["tenant".into()];
        m.unsharded_jobs = vec!["self".into()];
        let labels = vec![("tenant".to_string(), "t1".to_string())];
        assert_ne!(
            m.key("j", "http://x/metrics", &labels),
            m.key("j", "http://x/metrics", &[])
        );
        assert!(m.shards("j"));
        assert!(!m.shards("self"));
        assert_eq!(ordinal("spate-12.spate.ns.svc"), Some(12));
        assert_eq!(ordinal("10.0.0.1"), None);
    }
}
