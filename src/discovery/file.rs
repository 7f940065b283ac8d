//! `file_sd_configs`: target groups from JSON or YAML files, re-read when a file changes
//! (checked four times a second) and every `refresh_interval`. A file that fails to read or
//! parse keeps its last good groups; a deleted file's groups go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime};

use super::{Command, Outbox, TargetGroup, parse_groups, sleep_unless};
use crate::config::FileSdConfig;
use crate::log::Level;

/// How often files are checked for changes.
const POLL: Duration = Duration::from_millis(250);

/// What identifies a file's content without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

pub struct Watcher {
    cfg: FileSdConfig,
    stats: std::sync::Arc<crate::selfmetrics::SdStats>,
    /// Per file: its stamp when last read, and its groups (the last good ones).
    files: BTreeMap<PathBuf, (Option<Stamp>, Vec<TargetGroup>)>,
    refreshed: Instant,
}

impl Watcher {
    pub fn new(cfg: FileSdConfig, stats: std::sync::Arc<crate::selfmetrics::SdStats>) -> Watcher {
        Watcher {
            cfg,
            stats,
            files: BTreeMap::new(),
            refreshed: Instant::now(),
        }
    }

    /// Checks the files; returns every group when something changed (or `force`).
    pub fn poll(&mut self, force: bool) -> Option<Vec<TargetGroup>> {
        let force = force || self.refreshed.elapsed() >= self.cfg.refresh_interval;
        if force {
            self.refreshed = Instant::now();
        }
        let paths = expand(&self.cfg.files);
        let mut changed = false;
        // Files that are gone take their groups with them.
        let before = self.files.len();
        self.files.retain(|p, _| paths.contains(p));
        changed |= self.files.len() != before;
        for path in paths {
            let stamp = stamp(&path);
            let entry = self.files.entry(path.clone()).or_insert((None, Vec::new()));
            if !force && entry.0.is_some() && entry.0 == stamp {
                continue;
            }
            entry.0 = stamp;
            let name = path.display().to_string();
            let extra = vec![("__meta_filepath".to_string(), name.clone())];
            match std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| parse_groups(&text, &name, &extra))
            {
                Ok(groups) => {
                    changed |= groups != entry.1;
                    entry.1 = groups;
                }
                Err(e) => {
                    self.stats
                        .file_read_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::log!(
                        Level::Error,
                        "discovery",
                        "cannot read a file_sd file; its last good targets stay",
                        file = name,
                        err = e
                    )
                }
            }
        }
        (changed || force).then(|| self.files.values().flat_map(|f| f.1.clone()).collect())
    }

    /// Watches until `stop`, sending each change.
    pub fn run(&mut self, job: &str, provider: u64, tx: &Sender<Command>, stop: &AtomicBool) {
        let mut out = Outbox::new(job, provider, tx);
        while !sleep_unless(POLL, stop) {
            if let Some(groups) = self.poll(false)
                && !out.offer(groups)
            {
                return;
            }
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// The files the patterns name: a `*` or `?` may appear in the last path component; a path
/// without one is named whether it exists or not (its absence is reported when read).
fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in patterns {
        if crate::config::paths::is_pattern(p) {
            out.extend(crate::config::paths::expand(p));
        } else {
            out.push(PathBuf::from(p));
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_seen_and_bad_files_keep_their_targets() {
        let dir = std::env::temp_dir().join(format!("spate-file-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t1.json");
        std::fs::write(&f, r#"[{"targets": ["a:1"]}]"#).unwrap();
        let stats = std::sync::Arc::new(crate::selfmetrics::SdStats::default());
        let mut w = Watcher::new(
            FileSdConfig {
                files: vec![dir.join("*.json").display().to_string()],
                refresh_interval: Duration::from_secs(300),
            },
            stats.clone(),
        );
        let g = w.poll(true).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].labels[0].1, f.display().to_string(), "__meta_filepath");
        assert!(w.poll(false).is_none(), "nothing changed");
        // A broken file keeps its last good groups, and is counted.
        std::fs::write(&f, "[{not json").unwrap();
        assert!(w.poll(false).is_none());
        assert_eq!(
            stats
                .file_read_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // A new file matching the glob is found.
        std::fs::write(dir.join("t2.json"), r#"[{"targets": ["b:2", "c:3"]}]"#).unwrap();
        let g = w.poll(false).unwrap();
        let n: usize = g.iter().map(|g| g.targets.len()).sum();
        assert_eq!(n, 3);
        // Deleting a file removes its targets.
        std::fs::remove_file(&f).unwrap();
        let g = w.poll(false).unwrap();
        let n: usize = g.iter().map(|g| g.targets.len()).sum();
        assert_eq!(n, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
