//! A target's series cache: its series' keys, refs and last values in scrape order, and the
//! value epochs that decide when a value is stored whole.

use std::collections::HashMap;

use super::record::{self, ValueState};

/// A target's series refs, in the order of its last scrape. A series is known by a 128-bit
/// xxh3 of its encoded labels (wide enough to be its identity), and a target's next scrape
/// nearly always lists the same series in the same order, so each sample finds its ref by
/// comparing one key at its position in a sequential array: no core-wide map, no cache miss
/// per sample, 32 bytes per series. When the layout changes, an index of the previous
/// layout is built for that scrape only. Like Prometheus' scrape cache, one per target.
#[derive(Default)]
pub struct SeriesCache {
    pub(super) slots: Vec<CacheSlot>,
    /// The target's metric families: name hash → (metadata hash, segment written in).
    pub(super) families: HashMap<u64, (u64, u32)>,
    /// The `Wal` generation the refs belong to (refs restart when they run out).
    pub(super) generation: u32,
}

#[derive(Clone, Copy)]
pub(super) struct CacheSlot {
    pub(super) key: [u64; 2],
    pub(super) r: u32,
    /// The value epoch of the series' last write in the high 28 bits (0: none), and its
    /// value's scale in the low 4 (15: raw). A series written in an epoch of the open segment
    /// is declared in it.
    pub(super) tag: u32,
    /// The series' last value's `m` (see `record::put_value`).
    pub(super) m: i64,
}

const _: () = assert!(std::mem::size_of::<CacheSlot>() == 32);

impl SeriesCache {
    /// Whether the last add with this cache had a series with this key (xxh3-128 of its
    /// encoded labels, as two words).
    pub fn keys(&self) -> impl Iterator<Item = [u64; 2]> + '_ {
        self.slots.iter().map(|s| s.key)
    }
}

/// Epochs stay below this, to fit a slot's tag; reaching it starts a new generation.
pub(super) const EPOCH_LIMIT: u32 = 1 << 28;

impl CacheSlot {
    pub(super) fn new(key: [u64; 2], r: u32) -> CacheSlot {
        CacheSlot {
            key,
            r,
            tag: 0,
            m: 0,
        }
    }

    pub(super) fn epoch(&self) -> u32 {
        self.tag >> 4
    }

    pub(super) fn state(&self) -> ValueState {
        match (self.epoch(), self.tag & 15) {
            (0, _) => ValueState::default(),
            (epoch, 15) => ValueState {
                m: self.m,
                k: record::RAW,
                epoch,
            },
            (epoch, k) => ValueState {
                m: self.m,
                k: k as u8,
                epoch,
            },
        }
    }

    pub(super) fn set_state(&mut self, st: ValueState) {
        self.m = st.m;
        self.tag = (st.epoch << 4) | u32::from(st.k.min(15));
    }
}

/// A new value epoch starts after this many bytes of a segment (and with every segment):
/// what a damaged page can cost in values stored as changes is bounded by it, and so is the
/// price of storing each series' value whole once per epoch.
pub(super) const EPOCH_BYTES: u64 = 8 << 20;
