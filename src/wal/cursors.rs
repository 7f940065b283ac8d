//! Endpoint cursors: each endpoint's acknowledged position in this WAL, what retention took
//! from it, and the `cursors` file that keeps the positions across restarts (written
//! atomically, at most once a second, at start-up and at shutdown).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::Wal;
use super::segment::{Pos, pos};
use crate::log::Level;
use std::time::{Duration, Instant};

/// One endpoint's acknowledged position and what retention took from it. Its state changes
/// only through the WAL's methods ([`Wal::ack`], [`Wal::reading_back`], [`Wal::caught_up`],
/// [`Wal::take_moved`]), which retention's accounting of what an endpoint lost relies on.
pub struct Cursor {
    pub(super) id: String,
    pub(super) acked: Pos,
    /// Set when a retention bound deleted data past `acked`; the reader restarts from `acked`.
    pub(super) moved: bool,
    pub(super) lost: Arc<AtomicU64>,
    /// Whether this endpoint's unsent data is only in the WAL (it is reading back from it).
    pub(super) replaying: bool,
    /// Where its read-back started: data before it was handed out already (in flight).
    pub(super) replay_from: Pos,
    /// The endpoint left the configuration: its slot stays (slots are positions), but it
    /// holds no data and is not saved.
    pub(super) removed: bool,
}

impl Cursor {
    /// The end of the last record whose samples the receiver acknowledged.
    pub fn acked(&self) -> Pos {
        self.acked
    }

    /// The endpoint's unsent data is only in the WAL (it reads it back).
    pub fn replaying(&self) -> bool {
        self.replaying
    }

    /// Samples a retention bound deleted before this endpoint sent them.
    pub fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Wal {
    /// Registers an endpoint; returns its slot. Its position comes from the `cursors` file
    /// when it was there (clamped to what is still on disk), else the head: a new endpoint
    /// starts at the tail. An endpoint registered already (its settings changed on a reload)
    /// keeps its slot and goes on from its position; one removed earlier starts at the head.
    pub fn add_endpoint(
        &mut self,
        id: &str,
        saved: &HashMap<String, Pos>,
        lost: Arc<AtomicU64>,
    ) -> usize {
        let head = self.head();
        if let Some(slot) = self.cursors.iter().position(|c| c.id == id) {
            let c = &mut self.cursors[slot];
            if c.removed {
                *c = Cursor {
                    id: id.to_string(),
                    acked: head,
                    moved: false,
                    lost,
                    replaying: false,
                    replay_from: head,
                    removed: false,
                };
            } else {
                c.lost = lost;
                c.replaying = c.acked < head;
                c.replay_from = c.acked;
            }
            self.cursors_dirty = true;
            self.save_cursors();
            return slot;
        }
        let first = pos(self.first_segment(), 0);
        for (other, p) in saved {
            if !self.cursors.iter().any(|c| c.id == *other) {
                self.unclaimed.insert(other.clone(), *p);
            }
        }
        self.unclaimed.remove(id);
        let acked = match saved.get(id) {
            Some(p) => (*p).clamp(first, head),
            None => head,
        };
        self.cursors.push(Cursor {
            id: id.to_string(),
            acked,
            moved: false,
            lost,
            replaying: acked < head,
            replay_from: acked,
            removed: false,
        });
        self.cursors_dirty = true;
        // Saved at once: after a crash, this endpoint resumes here rather than counting as
        // new (and starting at the tail).
        self.save_cursors();
        self.cursors.len() - 1
    }

    /// Every endpoint of this run has registered: positions saved for endpoints it no longer
    /// has are forgotten (their data is not kept for them).
    pub fn endpoints_registered(&mut self) {
        if !self.unclaimed.is_empty() {
            self.unclaimed.clear();
            self.cursors_dirty = true;
        }
    }

    /// The endpoint left the configuration: its position is deleted (the WAL is no longer
    /// kept for it, and the `cursors` file forgets it).
    pub fn remove_endpoint(&mut self, slot: usize) {
        let head = self.head();
        let c = &mut self.cursors[slot];
        c.removed = true;
        c.acked = head;
        c.replaying = false;
        self.cursors_dirty = true;
        self.save_cursors();
        self.truncate();
    }

    pub fn cursor(&self, slot: usize) -> &Cursor {
        &self.cursors[slot]
    }

    /// From `from` on, the endpoint reads its data back from the WAL (what is before it was
    /// handed out already).
    pub fn reading_back(&mut self, slot: usize, from: Pos) {
        let c = &mut self.cursors[slot];
        c.replaying = true;
        c.replay_from = from;
    }

    /// The endpoint's reader reached the head: it takes scrapes live again.
    pub fn caught_up(&mut self, slot: usize) {
        self.cursors[slot].replaying = false;
    }

    /// When a retention bound deleted data under the endpoint's reader since the last call:
    /// the position to go on from (its acknowledged one).
    pub fn take_moved(&mut self, slot: usize) -> Option<Pos> {
        let c = &mut self.cursors[slot];
        std::mem::replace(&mut c.moved, false).then_some(c.acked)
    }

    /// Records that an endpoint's receiver acknowledged everything up to `p`.
    pub fn ack(&mut self, slot: usize, p: Pos) {
        let c = &mut self.cursors[slot];
        if p > c.acked {
            c.acked = p;
            self.cursors_dirty = true;
        }
        if self.truncated.elapsed() >= Duration::from_secs(1) {
            self.truncated = Instant::now();
            self.truncate();
        }
    }

    /// The `cursors` file's text when it is due (changed, and a second since the last save),
    /// for a [`super::SyncJob`]; counted as saved from here on ([`Self::cursors_written`]
    /// says otherwise on failure).
    pub(super) fn cursors_due(&mut self) -> Option<String> {
        if !self.cursors_dirty || self.cursors_saved.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.cursors_saved = Instant::now();
        self.cursors_dirty = false;
        Some(self.cursors_text())
    }

    /// What became of a save handed out by [`Self::cursors_due`].
    pub(super) fn cursors_written(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.cursors_dirty = true;
            crate::log!(
                Level::Warn,
                "wal",
                "could not save remote-write cursors; retrying",
                dir = self.dir.display(),
                err = e
            );
        }
    }

    fn cursors_text(&self) -> String {
        let mut text = String::new();
        for c in self.cursors.iter().filter(|c| !c.removed) {
            text.push_str(&format!("{} {}\n", c.id, c.acked));
        }
        for (id, p) in &self.unclaimed {
            text.push_str(&format!("{id} {p}\n"));
        }
        text
    }

    /// Writes the `cursors` file (atomically: a temporary file renamed over it).
    pub fn save_cursors(&mut self) {
        self.cursors_saved = Instant::now();
        if !self.cursors_dirty {
            return;
        }
        match CursorsFile::new(&self.dir, self.cursors_text()).save() {
            Ok(()) => self.cursors_dirty = false,
            Err(e) => crate::log!(
                Level::Warn,
                "wal",
                "could not save remote-write cursors; retrying",
                dir = self.dir.display(),
                err = e
            ),
        }
    }
}

/// A save of the `cursors` file: its text is written to a temporary file, synced, and renamed
/// over the old one, so a crash leaves the old or the new positions, never a torn file.
pub(super) struct CursorsFile {
    text: String,
    tmp: std::path::PathBuf,
    path: std::path::PathBuf,
}

impl CursorsFile {
    pub(super) fn new(dir: &Path, text: String) -> CursorsFile {
        CursorsFile {
            text,
            tmp: dir.join("cursors.tmp"),
            path: dir.join("cursors"),
        }
    }

    /// The save with plain system calls.
    pub(super) fn save(self) -> std::io::Result<()> {
        std::fs::write(&self.tmp, self.text)?;
        std::fs::File::open(&self.tmp)?.sync_all()?;
        std::fs::rename(&self.tmp, self.path)
    }

    /// The save with its sync through the core's driver (the small write and the rename are
    /// system calls).
    pub(super) async fn save_on_ring(self) -> std::io::Result<()> {
        std::fs::write(&self.tmp, self.text)?;
        crate::runtime::sync_data(std::fs::File::open(&self.tmp)?).await?;
        std::fs::rename(&self.tmp, self.path)
    }
}

/// Reads the `cursors` file of a core's WAL directory (missing: none).
pub fn load_cursors(dir: &Path) -> HashMap<String, Pos> {
    let Ok(text) = std::fs::read_to_string(dir.join("cursors")) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (id, p) = l.rsplit_once(' ')?;
            Some((id.to_string(), p.parse().ok()?))
        })
        .collect()
}
