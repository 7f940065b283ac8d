//! The `--cluster.*` flags: what they say, and the cluster they describe (this member's first
//! view, where the member list comes from, and the HA-tracker labels).

use std::path::PathBuf;
use std::time::Duration;

/// The `--cluster.*` flags as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    pub name: String,
    /// This member's name (default: the host name).
    pub member: Option<String>,
    pub members: Vec<String>,
    pub members_count: usize,
    pub member_num: Option<String>,
    pub members_file: Option<PathBuf>,
    pub members_dns: Option<String>,
    /// `SRV`, `A` or `AAAA`.
    pub members_dns_type: String,
    /// `[namespace/]service`.
    pub members_kubernetes: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub refresh_interval: Duration,
    pub replication_factor: usize,
    /// Cortex/Mimir HA-tracker groups, and the labels naming a member's group and itself.
    pub ha_tracker: bool,
    pub ha_cluster_label: String,
    pub ha_replica_label: String,
    pub key_labels: Vec<String>,
    pub unsharded_jobs: Vec<String>,
}

/// A cluster as the flags describe it: this member's first view, and where the list comes
/// from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSetup {
    pub membership: crate::cluster::Membership,
    pub source: crate::cluster::Source,
    /// The external labels HA-tracker form adds: (cluster label, `<name>-<group>`) and
    /// (replica label, this member).
    pub ha_labels: Vec<(String, String)>,
}

impl ClusterOptions {
    /// The cluster these flags describe (`hostname` names this member by default); `None`
    /// without a cluster.
    pub fn setup(
        &self,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Option<ClusterSetup>, String> {
        use crate::cluster::{DnsKind, Membership, Source};
        let r = self.replication_factor;
        let sources = [
            !self.members.is_empty(),
            self.members_count > 0,
            self.members_file.is_some(),
            self.members_dns.is_some(),
            self.members_kubernetes.is_some(),
        ];
        let me = || match &self.member {
            Some(m) => Ok(m.clone()),
            None => hostname().ok_or("cannot read the host name: set --cluster.member"),
        };
        match sources.iter().filter(|s| **s).count() {
            0 if self.member_num.is_some() || self.member.is_some() => {
                return Err("--cluster.member and --cluster.member-num need a member list: --cluster.members, --cluster.members-count, --cluster.members-file, --cluster.members-dns or --cluster.members-kubernetes".into());
            }
            0 => return Ok(None),
            1 => {}
            _ => return Err("give one member list: --cluster.members, --cluster.members-count, --cluster.members-file, --cluster.members-dns or --cluster.members-kubernetes".into()),
        }
        let first = || -> Result<(Membership, Source), String> {
            if self.members_count > 0 {
                let num = self
                    .member_num
                    .clone()
                    .ok_or("--cluster.members-count needs --cluster.member-num")?;
                return Ok((
                    Membership::numbered(self.members_count, &num, r, &self.name)?,
                    Source::Fixed,
                ));
            }
            let source = if let Some(path) = &self.members_file {
                Source::File(path.clone())
            } else if let Some(name) = &self.members_dns {
                let kind = match self.members_dns_type.to_ascii_uppercase().as_str() {
                    "SRV" => DnsKind::Srv,
                    "A" => DnsKind::A,
                    "AAAA" => DnsKind::Aaaa,
                    other => {
                        return Err(format!(
                            "--cluster.members-dns-type {other:?} is not SRV, A or AAAA"
                        ));
                    }
                };
                Source::Dns {
                    name: name.clone(),
                    kind,
                }
            } else if let Some(svc) = &self.members_kubernetes {
                let (namespace, service) = match svc.split_once('/') {
                    Some((ns, s)) => (Some(ns.to_string()), s.to_string()),
                    None => (None, svc.clone()),
                };
                if service.is_empty() || namespace.as_deref() == Some("") {
                    return Err(format!(
                        "--cluster.members-kubernetes {svc:?} is not [namespace/]service"
                    ));
                }
                Source::Kubernetes {
                    namespace,
                    service,
                    kubeconfig: self.kubeconfig.clone(),
                }
            } else {
                Source::Fixed
            };
            Ok((
                Membership::new(me()?, self.members.clone(), r, &self.name)?,
                source,
            ))
        };
        let (mut membership, source) = first()?;
        membership.groups = self.ha_tracker;
        membership.key_labels = self.key_labels.clone();
        membership.unsharded_jobs = self.unsharded_jobs.clone();
        let ha_labels = if self.ha_tracker {
            let group = membership.group().ok_or_else(|| {
                format!(
                    "--cluster.ha-tracker needs member names ending in a number (as StatefulSet pods are named); {:?} does not",
                    membership.me
                )
            })?;
            vec![
                (
                    self.ha_cluster_label.clone(),
                    format!("{}-{group}", self.name),
                ),
                (self.ha_replica_label.clone(), membership.me.clone()),
            ]
        } else {
            Vec::new()
        };
        Ok(Some(ClusterSetup {
            membership,
            source,
            ha_labels,
        }))
    }
}
