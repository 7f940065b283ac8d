//! Segment files: numbered files of 32 KiB pages holding framed records, as Prometheus' WAL
//! lays them out. A record is split into fragments that never cross a page; each fragment has
//! a 7-byte header: flags (`1` full, `2` first, `3` middle, `4` last; `0x08` snappy, `0x10`
//! zstd), length
//! (u16, big-endian) and the CRC32C of its bytes (u32, big-endian). Space too small for a
//! header at the end of a page is zero padding, and a zero flags byte means "rest of the page
//! is padding".
//!
//! Writes are block-aligned: the writer keeps the file's tail (the current page and any pages
//! a commit fills) in a 4096-aligned buffer and writes whole 4 KiB blocks from the first dirty
//! one, with `O_DIRECT` where the filesystem takes it (buffered writes otherwise).
//!
//! The last, partial block of a commit is not written to the segment with `O_DIRECT` (that
//! would rewrite the same block at every commit). It goes to the WAL directory's tail file
//! ([`TailFile`]) through the page cache instead, which outlives the process: a crash of the
//! process loses nothing committed, and the kernel writes the tail file's few pages back at
//! its own pace. On start, [`recover_tail`] puts that block back into the segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) use super::crc::crc32c;

mod reader;
mod tail;
mod writer;

pub use reader::{ReadDamage, SegmentReader};
pub use tail::{TAIL_FILE, TailFile, TailRepair, repair_tail};
pub use writer::{Laid, Progress, SegmentWriter, WriteJob};

pub const PAGE: usize = 32 * 1024;
const BLOCK: usize = 4096;
pub const HEADER: usize = 7;

const FULL: u8 = 1;
const FIRST: u8 = 2;
const MIDDLE: u8 = 3;
const LAST: u8 = 4;
const SNAPPY: u8 = 0x08;
const ZSTD: u8 = 0x10;
/// zstd's level for WAL records: its fastest, which still compresses better than snappy.
const ZSTD_LEVEL: i32 = 1;

/// How records are compressed (each only when that makes it smaller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Snappy,
    Zstd,
}

/// A WAL position: segment index in the high 32 bits, byte offset in the low 32.
pub type Pos = u64;

pub fn pos(segment: u32, offset: u64) -> Pos {
    (u64::from(segment) << 32) | (offset & 0xffff_ffff)
}

pub fn pos_segment(p: Pos) -> u32 {
    (p >> 32) as u32
}

pub fn pos_offset(p: Pos) -> u64 {
    p & 0xffff_ffff
}

pub fn segment_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("{index:08}"))
}

/// The segment indexes present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        if let Some(i) = name.to_str().and_then(|n| {
            (n.len() == 8 && n.bytes().all(|b| b.is_ascii_digit()))
                .then(|| n.parse::<u32>().ok())
                .flatten()
        }) {
            out.push(i);
        }
    }
    out.sort_unstable();
    Ok(out)
}
