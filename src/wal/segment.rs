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

use super::crc::crc32c;

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

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; BLOCK]);

/// A growable byte buffer whose start is 4096-aligned, as `O_DIRECT` requires.
struct AlignedBuf {
    blocks: Vec<Block>,
}

impl AlignedBuf {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `Block` is plain bytes with no padding; the slice covers exactly the blocks.
        unsafe {
            std::slice::from_raw_parts(self.blocks.as_ptr().cast(), self.blocks.len() * BLOCK)
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the borrow is unique.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.blocks.as_mut_ptr().cast(),
                self.blocks.len() * BLOCK,
            )
        }
    }

    /// Makes at least `len` bytes addressable; new bytes are zero.
    fn ensure(&mut self, len: usize) {
        let want = len.div_ceil(BLOCK);
        if want > self.blocks.len() {
            self.blocks.resize(want, Block([0; BLOCK]));
        }
    }
}

/// Appends framed records to one segment file.
pub struct SegmentWriter {
    file: File,
    index: u32,
    direct: bool,
    /// The file from `base` (page-aligned) onward: the current page and any the last commit
    /// filled. Bytes past `len` are zero.
    buf: AlignedBuf,
    base: u64,
    len: usize,
    /// Bytes of `buf` already written to the file.
    written: usize,
    compressor: snap::raw::Encoder,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    compressed: Vec<u8>,
    /// Where partial blocks go between commits (with `O_DIRECT` only).
    tail: Option<TailFile>,
}

impl SegmentWriter {
    /// Creates segment `index` in `dir`. Tries `O_DIRECT` unless `direct` is false (see
    /// [`Self::direct`] for whether it took). With `O_DIRECT`, partial blocks go to `tail`
    /// (opened in `dir` when `None`); buffered writers write them to the segment.
    pub fn create(
        dir: &Path,
        index: u32,
        direct: bool,
        tail: Option<TailFile>,
    ) -> io::Result<SegmentWriter> {
        let path = segment_path(dir, index);
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(&path)
        };
        let (file, direct) = if direct {
            match open(libc::O_DIRECT) {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (open(0)?, false),
                Err(e) => return Err(e),
            }
        } else {
            (open(0)?, false)
        };
        let tail = match (direct, tail) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(TailFile::open(dir)?),
        };
        let mut buf = AlignedBuf { blocks: Vec::new() };
        buf.ensure(PAGE);
        Ok(SegmentWriter {
            file,
            index,
            direct,
            buf,
            base: 0,
            len: 0,
            written: 0,
            compressor: snap::raw::Encoder::new(),
            zstd: None,
            compressed: Vec::new(),
            tail,
        })
    }

    /// Hands the tail file on to the next segment's writer.
    pub fn take_tail(&mut self) -> Option<TailFile> {
        self.tail.take()
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn direct(&self) -> bool {
        self.direct
    }

    /// Bytes of the segment in use: where the next record starts.
    pub fn offset(&self) -> u64 {
        self.base + self.len as u64
    }

    /// Frames `records` (each compressed with snappy when `compress` and it helps) and writes
    /// them. On error nothing of them counts: the buffer is as before and the caller may retry.
    /// Returns each record's end position.
    ///
    /// Complete 4 KiB blocks are written to the segment; the last, partial block to the tail
    /// file (buffered writers: to the segment). Once this returns, a crash of the process
    /// loses none of `records`.
    pub fn append(
        &mut self,
        records: &[&[u8]],
        compression: Compression,
        ends: &mut Vec<Pos>,
    ) -> io::Result<()> {
        let start_len = self.len;
        let first_ends = ends.len();
        for rec in records {
            let (bytes, flag) = match self.compress(rec, compression) {
                Some((n, flag)) => (&self.compressed[..n], flag),
                None => (*rec, 0),
            };
            let mut rest = bytes;
            let mut first = true;
            loop {
                let in_page = self.len % PAGE;
                let left = PAGE - in_page;
                if left <= HEADER {
                    self.len += left; // zero padding
                    continue;
                }
                let take = rest.len().min(left - HEADER);
                let last = take == rest.len();
                let kind = match (first, last) {
                    (true, true) => FULL,
                    (true, false) => FIRST,
                    (false, false) => MIDDLE,
                    (false, true) => LAST,
                };
                self.buf.ensure(self.len + HEADER + take);
                let out = &mut self.buf.bytes_mut()[self.len..self.len + HEADER + take];
                out[0] = kind | flag;
                out[1..3].copy_from_slice(&(take as u16).to_be_bytes());
                out[3..7].copy_from_slice(&crc32c(&rest[..take]).to_be_bytes());
                out[HEADER..].copy_from_slice(&rest[..take]);
                self.len += HEADER + take;
                rest = &rest[take..];
                first = false;
                if last {
                    break;
                }
            }
            ends.push(pos(self.index, self.offset()));
        }
        if let Err(e) = self.write_commit() {
            // Undo: zero what this call laid out so padding stays zero.
            let end = self.len.min(self.buf.bytes().len());
            self.buf.bytes_mut()[start_len..end].fill(0);
            self.len = start_len;
            ends.truncate(first_ends);
            return Err(e);
        }
        Ok(())
    }

    /// Compresses `rec` into `self.compressed`: its length and fragment flag, or `None` when
    /// it is stored as it is (too small, not smaller, or compression off).
    fn compress(&mut self, rec: &[u8], how: Compression) -> Option<(usize, u8)> {
        if rec.len() <= 64 {
            return None;
        }
        let (n, flag) = match how {
            Compression::None => return None,
            Compression::Snappy => {
                let need = snap::raw::max_compress_len(rec.len());
                if self.compressed.len() < need {
                    self.compressed.resize(need, 0);
                }
                (
                    self.compressor.compress(rec, &mut self.compressed).ok()?,
                    SNAPPY,
                )
            }
            Compression::Zstd => {
                let need = zstd::zstd_safe::compress_bound(rec.len());
                if self.compressed.len() < need {
                    self.compressed.resize(need, 0);
                }
                if self.zstd.is_none() {
                    self.zstd = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).ok()?);
                }
                let z = self.zstd.as_mut()?;
                (
                    z.compress_to_buffer(rec, &mut self.compressed[..]).ok()?,
                    ZSTD,
                )
            }
        };
        (n < rec.len()).then_some((n, flag))
    }

    /// Writes what a commit laid out: complete blocks to the segment, the partial one to the
    /// tail file, or to the segment when there is no tail file or it cannot be written.
    fn write_commit(&mut self) -> io::Result<()> {
        if self.tail.is_none() {
            return self.write_dirty(true);
        }
        self.write_dirty(false)?;
        let block = self.len / BLOCK * BLOCK;
        if block == self.len {
            return Ok(());
        }
        let (index, offset) = (self.index, self.base + block as u64);
        let data = &self.buf.bytes()[block..self.len];
        match self.tail.as_mut().map(|t| t.write(index, offset, data)) {
            Some(Ok(())) => Ok(()),
            _ => self.write_dirty(true),
        }
    }

    /// Writes the partial last block to the segment, if it holds data not yet written there
    /// (readers of the open segment and rotation call this).
    pub fn flush_tail(&mut self) -> io::Result<()> {
        if self.written < self.len {
            self.write_dirty(true)?;
        }
        Ok(())
    }

    /// Writes the blocks from the first not yet written one up to the last complete block (or
    /// the end of the data with `tail`), then drops fully written pages from the buffer.
    fn write_dirty(&mut self, tail: bool) -> io::Result<()> {
        let from = self.written / BLOCK * BLOCK;
        let to = if tail {
            self.len.div_ceil(BLOCK) * BLOCK
        } else {
            self.len / BLOCK * BLOCK
        };
        self.buf.ensure(to.max(PAGE));
        if to > from {
            self.file
                .write_all_at(&self.buf.bytes()[from..to], self.base + from as u64)?;
            self.written = if tail { self.len } else { to };
        }
        let keep = self.written / PAGE * PAGE;
        if keep > 0 {
            let end = self.buf.blocks.len() * BLOCK;
            let bytes = self.buf.bytes_mut();
            bytes.copy_within(keep..end, 0);
            bytes[end - keep..].fill(0);
            let blocks = ((end - keep) / BLOCK).max(PAGE / BLOCK);
            self.buf.blocks.truncate(blocks);
            self.base += keep as u64;
            self.len -= keep;
            self.written -= keep;
        }
        Ok(())
    }

    /// Handles of the segment and the tail file, for an `fdatasync` issued elsewhere (the
    /// core's ring) while this writer goes on.
    pub fn sync_handles(&self) -> io::Result<Vec<File>> {
        let mut files = vec![self.file.try_clone()?];
        if let Some(t) = &self.tail {
            files.push(t.file.try_clone()?);
        }
        Ok(files)
    }

    /// Forces written data, the tail file's included, to stable storage.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        match &self.tail {
            Some(t) => t.file.sync_data(),
            None => Ok(()),
        }
    }
}

/// The tail file: the latest partial block of the open segment, kept through the page cache
/// so that it survives a crash of the process without an `O_DIRECT` block write per commit.
/// Two 8 KiB slots are written in turn, each a 36-byte header (magic, sequence, segment,
/// block offset, length, CRC32C of the data, CRC32C of the header) and the block's bytes; a
/// slot torn by a crash mid-write fails its checksums and the other slot stands.
pub struct TailFile {
    file: File,
    seq: u64,
    buf: Vec<u8>,
}

pub const TAIL_FILE: &str = "tail";
const TAIL_MAGIC: u32 = 0x5350_544c;
const TAIL_SLOT: u64 = 8192;
const TAIL_HEADER: usize = 36;

/// One slot's contents: (sequence, segment, block offset, data).
type TailSlot = (u64, u32, u64, Vec<u8>);

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
            file,
            seq,
            buf: Vec::with_capacity(TAIL_HEADER + BLOCK),
        })
    }

    fn write(&mut self, segment: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&TAIL_MAGIC.to_le_bytes());
        self.buf.extend_from_slice(&self.seq.to_le_bytes());
        self.buf.extend_from_slice(&segment.to_le_bytes());
        self.buf.extend_from_slice(&offset.to_le_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(&crc32c(data).to_le_bytes());
        let hcrc = crc32c(&self.buf);
        self.buf.extend_from_slice(&hcrc.to_le_bytes());
        self.buf.extend_from_slice(data);
        self.file
            .write_all_at(&self.buf, (self.seq & 1) * TAIL_SLOT)?;
        self.seq += 1;
        Ok(())
    }
}

/// The tail file's valid slots, newest first.
fn read_tail_slots(file: &File) -> io::Result<Vec<TailSlot>> {
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
fn recover_tail(dir: &Path, index: u32, end: u64) -> io::Result<u64> {
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
fn valid_end(dir: &Path, index: u32) -> io::Result<u64> {
    let mut r = SegmentReader::open(dir, index, 0, None)?;
    let mut last_end = 0;
    while let Some((end, _)) = r.next()? {
        last_end = pos_offset(end);
    }
    Ok(last_end)
}

/// Why reading stopped early or skipped data.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadDamage {
    /// Bytes skipped over because they did not frame valid records.
    pub skipped_bytes: u64,
    /// Where the first damage was found.
    pub first_at: Option<Pos>,
    pub reason: String,
}

/// Reads the records of one segment, page by page, from an offset up to an optional limit
/// (the writer's position, for the segment being written).
pub struct SegmentReader {
    file: File,
    index: u32,
    file_len: u64,
    page: Vec<u8>,
    page_base: u64,
    page_len: usize,
    /// Offset of the next fragment.
    at: u64,
    limit: u64,
    /// The limit as asked for (`limit` is also capped by the file's length).
    requested: u64,
    record: Vec<u8>,
    decompressed: Vec<u8>,
    decoder: snap::raw::Decoder,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    /// The compression flag of the record being assembled.
    flag: u8,
    pub damage: ReadDamage,
}

impl SegmentReader {
    pub fn open(dir: &Path, index: u32, from: u64, limit: Option<u64>) -> io::Result<Self> {
        let file = File::open(segment_path(dir, index))?;
        let file_len = file.metadata()?.len();
        Ok(SegmentReader {
            file,
            index,
            file_len,
            page: vec![0; PAGE],
            page_base: u64::MAX,
            page_len: 0,
            at: from,
            limit: limit.unwrap_or(u64::MAX).min(file_len),
            requested: limit.unwrap_or(u64::MAX),
            record: Vec::new(),
            decompressed: Vec::new(),
            decoder: snap::raw::Decoder::new(),
            zstd: None,
            flag: 0,
            damage: ReadDamage::default(),
        })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    /// Moves the read limit (the writer's position grew); drops the cached page, which may
    /// have been read before the writer filled it.
    pub fn set_limit(&mut self, limit: Option<u64>) -> io::Result<()> {
        let want = limit.unwrap_or(u64::MAX);
        if want != self.requested {
            self.requested = want;
            self.file_len = self.file.metadata()?.len();
            self.limit = want.min(self.file_len);
            self.page_base = u64::MAX;
        }
        Ok(())
    }

    /// Offset after the last record returned (or the start offset).
    pub fn offset(&self) -> u64 {
        self.at
    }

    fn load_page(&mut self, base: u64) -> io::Result<()> {
        if self.page_base == base {
            return Ok(());
        }
        let n = (self.file_len.saturating_sub(base)).min(PAGE as u64) as usize;
        self.file.read_exact_at(&mut self.page[..n], base)?;
        self.page[n..].fill(0);
        self.page_base = base;
        self.page_len = n;
        Ok(())
    }

    fn note_damage(&mut self, at: u64, bytes: u64, reason: &str) {
        if self.damage.first_at.is_none() {
            self.damage.first_at = Some(pos(self.index, at));
            self.damage.reason = reason.to_string();
        }
        self.damage.skipped_bytes += bytes;
    }

    /// A fragment header that cannot be trusted: skip the rest of the page.
    fn damaged(&mut self, at: u64, reason: &str) {
        let next = (at / PAGE as u64 + 1) * PAGE as u64;
        self.note_damage(at, next.min(self.limit).saturating_sub(at), reason);
        self.at = next;
        self.record.clear();
    }

    /// Puts `rec`, decompressed as its flag says, in `self.decompressed`; false when it does
    /// not decompress.
    fn decompress(&mut self, rec: &[u8]) -> bool {
        match self.flag {
            SNAPPY => match snap::raw::decompress_len(rec) {
                Ok(n) => {
                    self.decompressed.resize(n, 0);
                    self.decoder.decompress(rec, &mut self.decompressed).is_ok()
                }
                Err(_) => false,
            },
            ZSTD => {
                // A record is at most a few MiB; the frame says how large.
                let n = match zstd::zstd_safe::get_frame_content_size(rec) {
                    Ok(Some(n)) if n <= 1 << 30 => n as usize,
                    _ => return false,
                };
                if self.zstd.is_none() {
                    match zstd::bulk::Decompressor::new() {
                        Ok(d) => self.zstd = Some(d),
                        Err(_) => return false,
                    }
                }
                self.decompressed.clear();
                self.decompressed.reserve(n);
                match self.zstd.as_mut() {
                    Some(d) => d
                        .decompress_to_buffer(rec, &mut self.decompressed)
                        .is_ok_and(|got| got == n),
                    None => false,
                }
            }
            _ => {
                self.decompressed.clear();
                self.decompressed.extend_from_slice(rec);
                true
            }
        }
    }

    /// The next record: its end position and bytes (decompressed). `None` at the end.
    #[allow(clippy::should_implement_trait)] // lends from self: cannot be an Iterator
    pub fn next(&mut self) -> io::Result<Option<(Pos, &[u8])>> {
        Ok(self.advance()?.map(|end| (end, &self.decompressed[..])))
    }

    /// The record the last [`Self::advance`] moved to (decompressed).
    pub fn current(&self) -> &[u8] {
        &self.decompressed
    }

    /// Moves to the next record ([`Self::current`]) and returns its end position; `None` at the
    /// end.
    pub fn advance(&mut self) -> io::Result<Option<Pos>> {
        let mut rec_start = self.at;
        loop {
            if self.at >= self.limit {
                // A record cut by the end is a torn tail, not damage here: the caller decides.
                self.at = rec_start;
                self.record.clear();
                return Ok(None);
            }
            let page_base = self.at / PAGE as u64 * PAGE as u64;
            self.load_page(page_base)?;
            let in_page = (self.at - page_base) as usize;
            if PAGE - in_page <= HEADER {
                self.at = page_base + PAGE as u64;
                continue;
            }
            let h = &self.page[in_page..in_page + HEADER];
            let flags = h[0];
            if flags == 0 {
                // The end of the data: stop here, so that a reader of the open segment picks
                // up from this point once the writer has written more.
                if page_base + PAGE as u64 >= self.limit {
                    self.at = rec_start;
                    self.record.clear();
                    return Ok(None);
                }
                // Zeros with data after them: treat as padding to the end of the page.
                if !self.record.is_empty() {
                    let at = self.at;
                    self.damaged(at, "record cut by padding");
                    rec_start = self.at;
                    continue;
                }
                self.at = page_base + PAGE as u64;
                rec_start = self.at;
                continue;
            }
            let kind = flags & 0x07;
            let len = usize::from(u16::from_be_bytes([h[1], h[2]]));
            let crc = u32::from_be_bytes([h[3], h[4], h[5], h[6]]);
            let data_start = in_page + HEADER;
            let valid_kind = (1..=4).contains(&kind) && flags & !0x1f == 0 && flags & 0x18 != 0x18;
            if !valid_kind || data_start + len > PAGE {
                let at = self.at;
                self.damaged(at, "invalid fragment header");
                rec_start = self.at;
                continue;
            }
            if self.at + (HEADER + len) as u64 > self.limit {
                self.at = rec_start;
                self.record.clear();
                return Ok(None);
            }
            if crc32c(&self.page[data_start..data_start + len]) != crc {
                let at = self.at;
                self.damaged(at, "checksum mismatch");
                rec_start = self.at;
                continue;
            }
            let continuation = matches!(kind, MIDDLE | LAST);
            if continuation && self.record.is_empty() {
                // The rest of a record whose start was lost: skip just this fragment.
                let at = self.at;
                self.note_damage(at, (HEADER + len) as u64, "fragment without its start");
                self.at += (HEADER + len) as u64;
                rec_start = self.at;
                continue;
            }
            if !continuation && !self.record.is_empty() {
                // A new record while one was open: the open one lost its end.
                let lost = self.at - rec_start;
                self.note_damage(rec_start, lost, "record without its end");
                self.record.clear();
                rec_start = self.at;
            }
            if self.record.is_empty() {
                self.flag = flags & (SNAPPY | ZSTD);
            }
            self.record
                .extend_from_slice(&self.page[data_start..data_start + len]);
            self.at += (HEADER + len) as u64;
            if matches!(kind, FULL | LAST) {
                let end = pos(self.index, self.at);
                let rec = std::mem::take(&mut self.record);
                let out = self.decompress(&rec);
                self.record = rec;
                self.record.clear();
                if !out {
                    let lost = self.at - rec_start;
                    self.note_damage(rec_start, lost, "undecodable compressed record");
                    rec_start = self.at;
                    continue;
                }
                return Ok(Some(end));
            }
        }
    }
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
