//! The tail file (the open segment's latest partial block, through the page cache) and the
//! repair of the last segment at start: the block put back, a torn tail cut.

use super::*;

/// The tail file: the latest partial block of the open segment, kept through the page cache
/// so that it survives a crash of the process without an `O_DIRECT` block write per commit.
/// Two 8 KiB slots are written in turn, each a 36-byte header (magic, sequence, segment,
/// block offset, length, CRC32C of the data, CRC32C of the header) and the block's bytes; a
/// slot torn by a crash mid-write fails its checksums and the other slot stands.
pub struct TailFile {
    pub(super) file: std::sync::Arc<File>,
    seq: u64,
}

pub const TAIL_FILE: &str = "tail";
pub(super) const TAIL_MAGIC: u32 = 0x5350_544c;
pub(super) const TAIL_SLOT: u64 = 8192;
pub(super) const TAIL_HEADER: usize = 36;

/// One slot's contents: (sequence, segment, block offset, data).
pub(super) type TailSlot = (u64, u32, u64, Vec<u8>);

impl TailFile {
    pub fn open(dir: &Path) -> io::Result<TailFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(TAIL_FILE))?;
        let seq = read_tail_slots(&file)?.first().map_or(0, |s| s.0 + 1);
        Ok(TailFile {
            file: std::sync::Arc::new(file),
            seq,
        })
    }

    /// The next slot's bytes and where they go, for `data` (the partial block at `offset` of
    /// `segment`). The slot is taken once [`Self::slot_written`] says so.
    pub(super) fn slot(&self, segment: u32, offset: u64, data: &[u8]) -> (Vec<u8>, u64) {
        let mut buf = Vec::with_capacity(TAIL_HEADER + data.len());
        buf.extend_from_slice(&TAIL_MAGIC.to_le_bytes());
        buf.extend_from_slice(&self.seq.to_le_bytes());
        buf.extend_from_slice(&segment.to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(&crc32c(data).to_le_bytes());
        let hcrc = crc32c(&buf);
        buf.extend_from_slice(&hcrc.to_le_bytes());
        buf.extend_from_slice(data);
        (buf, (self.seq & 1) * TAIL_SLOT)
    }

    /// The slot from [`Self::slot`] was written: the next write goes to the other one.
    pub(super) fn slot_written(&mut self) {
        self.seq += 1;
    }
}

/// The tail file's valid slots, newest first.
pub(super) fn read_tail_slots(file: &File) -> io::Result<Vec<TailSlot>> {
    let mut out = Vec::new();
    let len = file.metadata()?.len();
    for slot in 0..2u64 {
        let at = slot * TAIL_SLOT;
        if len < at + TAIL_HEADER as u64 {
            continue;
        }
        let mut h = [0u8; TAIL_HEADER];
        file.read_exact_at(&mut h, at)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let long = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[i..i + 8]);
            u64::from_le_bytes(b)
        };
        if word(0) != TAIL_MAGIC || crc32c(&h[..32]) != word(32) {
            continue;
        }
        let n = word(24) as usize;
        if n == 0 || n >= BLOCK || len < at + (TAIL_HEADER + n) as u64 {
            continue;
        }
        let mut data = vec![0u8; n];
        file.read_exact_at(&mut data, at + TAIL_HEADER as u64)?;
        if crc32c(&data) != word(28) {
            continue;
        }
        out.push((long(4), word(12), long(16), data));
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.0));
    Ok(out)
}

/// Puts the tail file's newest partial block back into segment `index` when it holds more
/// than the segment does (the process died before the block was written there). `end` is
/// where the segment's valid records end. Returns where they end now.
pub(super) fn recover_tail(dir: &Path, index: u32, end: u64) -> io::Result<u64> {
    let file = match File::open(dir.join(TAIL_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(end),
        Err(e) => return Err(e),
    };
    let Some((_, segment, offset, data)) = read_tail_slots(&file)?.into_iter().next() else {
        return Ok(end);
    };
    let file_len = std::fs::metadata(segment_path(dir, index))?.len();
    let tail_end = offset + data.len() as u64;
    // The block must follow the segment's written blocks and hold more than the segment: an
    // older tail (its block since written whole) or one past missing blocks is left alone.
    // (The last valid record may end before the block: its end is in the block.)
    if segment != index || file_len < offset || end >= tail_end {
        return Ok(end);
    }
    let f = OpenOptions::new()
        .write(true)
        .open(segment_path(dir, index))?;
    f.write_all_at(&data, offset)?;
    f.sync_data()?;
    valid_end(dir, index)
}

/// The offset just after the last valid record of segment `index`.
pub(super) fn valid_end(dir: &Path, index: u32) -> io::Result<u64> {
    let mut r = SegmentReader::open(dir, index, 0, None)?;
    let mut last_end = 0;
    while let Some((end, _)) = r.next()? {
        last_end = pos_offset(end);
    }
    Ok(last_end)
}

/// What [`repair_tail`] did to the last segment.
#[derive(Debug, Default)]
pub struct TailRepair {
    /// Bytes of records the tail file gave back.
    pub restored: u64,
    /// Bytes of a torn write cut off.
    pub cut: u64,
}

/// Makes the last segment whole after a stop of any kind: puts back the partial block the
/// tail file holds (see [`recover_tail`]), then cuts a torn tail off — everything after the
/// last valid record, when it is not all zero (padding). The segment is scanned once, or
/// twice when the tail file gave something back.
pub fn repair_tail(dir: &Path, index: u32) -> io::Result<TailRepair> {
    let path = segment_path(dir, index);
    let scanned = valid_end(dir, index)?;
    let last_end = recover_tail(dir, index, scanned)?;
    let restored = last_end.saturating_sub(scanned);
    let len = std::fs::metadata(&path)?.len();
    // Whatever follows the last valid record must be zeros; otherwise it is a torn write.
    let mut tail = Vec::new();
    if len > last_end {
        tail.resize((len - last_end) as usize, 0);
        File::open(&path)?.read_exact_at(&mut tail, last_end)?;
    }
    if tail.iter().all(|b| *b == 0) {
        return Ok(TailRepair { restored, cut: 0 });
    }
    let f = OpenOptions::new().write(true).open(&path)?;
    f.set_len(last_end)?;
    f.sync_all()?;
    Ok(TailRepair {
        restored,
        cut: len - last_end,
    })
}
