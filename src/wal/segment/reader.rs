//! Reading a segment's records page by page: fragments reassembled and checked, torn tails
//! and damaged pages skipped and reported.

use super::*;

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
