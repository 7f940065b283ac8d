//! Appending framed records to a segment: the 4096-aligned buffer of the file's tail, block
//! writes (`O_DIRECT` where taken), compression, and the commit's partial block handed to the
//! tail file.

use super::*;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub(super) struct Block([u8; BLOCK]);

/// A growable byte buffer whose start is 4096-aligned, as `O_DIRECT` requires.
pub(super) struct AlignedBuf {
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
    /// Shared with the writes a [`WriteJob`] runs away from the writer.
    file: std::sync::Arc<File>,
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
            file: std::sync::Arc::new(file),
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

    /// Frames `records` into the buffer after what is there (nothing written yet) and pushes
    /// each record's end position; [`Self::write_job`] says what to write for them.
    pub fn lay_out(
        &mut self,
        records: &[&[u8]],
        compression: Compression,
        ends: &mut Vec<Pos>,
    ) -> Laid {
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
        // The partial block is written whole (zero padded) when it goes to the segment.
        self.buf.ensure(self.len.div_ceil(BLOCK) * BLOCK);
        Laid {
            start_len,
            first_ends,
        }
    }

    /// The writes that make what is laid out durable against a crash of the process, as
    /// copies that can run away from the writer ([`WriteJob::run`] on the core's ring):
    /// complete blocks to the segment, the partial one to the tail file — or to the segment
    /// when there is no tail file or its write fails.
    pub fn write_job(&self) -> WriteJob {
        let from = self.written / BLOCK * BLOCK;
        let block = self.len / BLOCK * BLOCK;
        let end = self.len.div_ceil(BLOCK) * BLOCK;
        let copy = |a: usize, b: usize| BlockBytes(self.buf.blocks[a / BLOCK..b / BLOCK].to_vec());
        let at = |a: usize| self.base + a as u64;
        let Some(tail) = &self.tail else {
            return WriteJob {
                segment: self.file.clone(),
                blocks: (end > from).then(|| (copy(from, end), at(from))),
                after_blocks: self.len,
                tail: None,
                fallback: None,
            };
        };
        let partial = (block < self.len).then(|| {
            let (slot, slot_at) =
                tail.slot(self.index, at(block), &self.buf.bytes()[block..self.len]);
            (tail.file.clone(), slot, slot_at)
        });
        WriteJob {
            segment: self.file.clone(),
            blocks: (block > from).then(|| (copy(from, block), at(from))),
            after_blocks: block.max(self.written),
            fallback: partial
                .is_some()
                .then(|| (copy(block, end), at(block), self.len)),
            tail: partial,
        }
    }

    /// Takes what a [`WriteJob`] did: what is now in the segment, the tail slot used, and on
    /// failure undoes the layout of `laid` (the records are not in the WAL; their ends are
    /// taken back from `ends`).
    pub fn write_done(&mut self, laid: Laid, ends: &mut Vec<Pos>, p: Progress) -> io::Result<()> {
        if let Some(w) = p.written {
            self.written = self.written.max(w);
        }
        if p.tail_slot
            && let Some(t) = &mut self.tail
        {
            t.slot_written();
        }
        if let Err(e) = p.result {
            // Undo: zero what this commit laid out so padding stays zero.
            let end = self.len.min(self.buf.bytes().len());
            self.buf.bytes_mut()[laid.start_len..end].fill(0);
            self.len = laid.start_len;
            self.written = self.written.min(self.len);
            ends.truncate(laid.first_ends);
            return Err(e);
        }
        self.compact();
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
        self.compact();
        Ok(())
    }

    /// Drops fully written pages from the front of the buffer.
    fn compact(&mut self) {
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

/// Whole blocks, owned: what a [`WriteJob`] writes to the segment (4096-aligned for
/// `O_DIRECT`).
pub struct BlockBytes(Vec<Block>);

impl AsRef<[u8]> for BlockBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `Block` is plain bytes with no padding; the slice covers exactly the blocks.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * BLOCK) }
    }
}

/// What [`SegmentWriter::lay_out`] added, for undoing it.
pub struct Laid {
    start_len: usize,
    first_ends: usize,
}

/// The writes of one commit (see [`SegmentWriter::write_job`]).
pub struct WriteJob {
    segment: std::sync::Arc<File>,
    /// Blocks for the segment and their file offset.
    blocks: Option<(BlockBytes, u64)>,
    /// How much of the buffer is in the segment once they are written.
    after_blocks: usize,
    /// The tail file, the slot's bytes and the slot's offset.
    tail: Option<(std::sync::Arc<File>, Vec<u8>, u64)>,
    /// When the tail write fails: the partial block's bytes for the segment, its offset, and
    /// how much is in the segment after it.
    fallback: Option<(BlockBytes, u64, usize)>,
}

/// What a [`WriteJob`] did.
pub struct Progress {
    /// How much of the buffer is in the segment now (`None`: nothing more).
    written: Option<usize>,
    /// The tail slot was written.
    tail_slot: bool,
    result: io::Result<()>,
}

impl WriteJob {
    /// Runs the writes through the core's driver (io_uring: ring operations, the core goes on
    /// meanwhile; epoll: the system calls). Nothing here borrows the writer.
    pub async fn run(self) -> Progress {
        use crate::runtime::write_all_at;
        let mut p = Progress::default();
        if let Some((bytes, at)) = self.blocks
            && let Err(e) = write_all_at(&self.segment, bytes, at).await
        {
            p.result = Err(e);
            return p;
        }
        p.written = Some(self.after_blocks);
        let Some((tail, slot, slot_at)) = self.tail else {
            return p;
        };
        if write_all_at(&tail, slot, slot_at).await.is_ok() {
            p.tail_slot = true;
        } else if let Some((bytes, at, after)) = self.fallback {
            match write_all_at(&self.segment, bytes, at).await {
                Ok(()) => p.written = Some(after),
                Err(e) => p.result = Err(e),
            }
        }
        p
    }

    /// [`Self::run`] with plain system calls, where there is no executor.
    pub fn run_blocking(self) -> Progress {
        let mut p = Progress::default();
        if let Some((bytes, at)) = &self.blocks
            && let Err(e) = self.segment.write_all_at(bytes.as_ref(), *at)
        {
            p.result = Err(e);
            return p;
        }
        p.written = Some(self.after_blocks);
        let Some((tail, slot, slot_at)) = &self.tail else {
            return p;
        };
        if tail.write_all_at(slot, *slot_at).is_ok() {
            p.tail_slot = true;
        } else if let Some((bytes, at, after)) = &self.fallback {
            match self.segment.write_all_at(bytes.as_ref(), *at) {
                Ok(()) => p.written = Some(*after),
                Err(e) => p.result = Err(e),
            }
        }
        p
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            written: None,
            tail_slot: false,
            result: Ok(()),
        }
    }
}
