//! Reading an endpoint's backlog back from the WAL as remote-write entries, record by record,
//! from its cursor up to the head.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use super::record::{self, HISTOGRAMS};
use super::segment::{Pos, SegmentReader, pos, pos_offset, pos_segment};
use crate::log::Level;

/// Which entries beyond samples an endpoint takes (`send_native_histograms`, `send_exemplars`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Accept {
    pub histograms: bool,
    pub exemplars: bool,
}

/// Reads an endpoint's backlog back from the WAL as remote-write entries, record by record,
/// from its cursor up to the head.
pub struct WalReader {
    dir: PathBuf,
    reader: Option<SegmentReader>,
    /// Labels sections of the current segment's series, by ref.
    series: HashMap<u32, Vec<u8>>,
    /// The current segment's series values, for values stored as changes.
    values: record::Values,
    /// The segment reader's damage count when the last record was read.
    damage_seen: u64,
    /// Records ending at or before this offset of the first segment read were sent already:
    /// only their series declarations are needed.
    skip_until: u64,
    /// End of the last record consumed: everything before it has been handed out.
    pub position: Pos,
    pub damaged_bytes: u64,
    pub missing_series: u64,
    /// Samples stored as a change from a value lost to damage.
    pub lost_values: u64,
}

impl WalReader {
    pub fn new(dir: &Path, from: Pos) -> WalReader {
        WalReader {
            dir: dir.to_path_buf(),
            reader: None,
            series: HashMap::new(),
            values: record::Values::default(),
            damage_seen: 0,
            skip_until: 0,
            position: from,
            damaged_bytes: 0,
            missing_series: 0,
            lost_values: 0,
        }
    }

    /// Appends the next record's samples to `out` as entries (`ends`, `kinds` as the appender
    /// fills them; native histograms and exemplars only as `accept` says). Returns the record's
    /// end position and newest timestamp, or `None` once `head` is reached.
    pub fn next_record(
        &mut self,
        head: Pos,
        first_segment: u32,
        accept: Accept,
        out: &mut Vec<u8>,
        ends: &mut Vec<u32>,
        kinds: &mut Vec<u8>,
    ) -> io::Result<Option<(Pos, i64)>> {
        use crate::entry::{
            KIND_EXEMPLAR, KIND_HISTOGRAM, KIND_SAMPLE, encode_exemplar_raw, encode_histogram_raw,
            encode_series_raw,
        };
        loop {
            if self.position >= head {
                return Ok(None);
            }
            if pos_segment(self.position) < first_segment {
                self.position = pos(first_segment, 0);
                self.reader = None;
            }
            let seg = pos_segment(self.position);
            let limit = (seg == pos_segment(head)).then(|| pos_offset(head));
            match &mut self.reader {
                Some(r) if r.index() == seg => r.set_limit(limit)?,
                _ => {
                    self.reader = Some(SegmentReader::open(&self.dir, seg, 0, limit)?);
                    self.skip_until = pos_offset(self.position);
                    self.series.clear();
                    self.values.clear();
                    self.damage_seen = 0;
                }
            }
            let Some(r) = &mut self.reader else {
                unreachable!("opened above")
            };
            let Some(end) = r.advance()? else {
                self.damaged_bytes += std::mem::take(&mut r.damage.skipped_bytes);
                if seg < pos_segment(head) {
                    self.position = pos(seg + 1, 0);
                    self.reader = None;
                    continue;
                }
                return Ok(None);
            };
            let rec = r.current();
            if r.damage.skipped_bytes != self.damage_seen {
                // Records were lost before this one: values stored as changes from theirs
                // cannot be trusted until each series' value is stored whole again.
                self.damage_seen = r.damage.skipped_bytes;
                self.values.clear();
            }
            let Some((&kind, body)) = rec.split_first() else {
                continue;
            };
            let sent = pos_offset(end) <= self.skip_until;
            let mut newest = i64::MIN;
            let series = &mut self.series;
            let missing = &mut self.missing_series;
            let lost = &mut self.lost_values;
            let decoded = record::decode(kind, body, &mut self.values, |item| match item {
                record::Item::Series { r, labels } => {
                    series.insert(r, labels.to_vec());
                }
                _ if sent => {}
                record::Item::Unknown { .. } => *lost += 1,
                // Checked by decoding; remote write does not send metadata from the WAL.
                record::Item::Metadata { .. } => {}
                record::Item::Sample { r, ts, value } => match series.get(&r) {
                    Some(l) => {
                        encode_series_raw(out, l, value, ts);
                        ends.push(out.len() as u32);
                        kinds.push(KIND_SAMPLE);
                        newest = newest.max(ts);
                    }
                    None => *missing += 1,
                },
                record::Item::Histogram { r, body } | record::Item::Exemplar { r, body } => {
                    let histogram = matches!(kind, HISTOGRAMS);
                    if !(if histogram {
                        accept.histograms
                    } else {
                        accept.exemplars
                    }) {
                        return;
                    }
                    match series.get(&r) {
                        Some(l) if histogram => {
                            encode_histogram_raw(out, l, body);
                            ends.push(out.len() as u32);
                            kinds.push(KIND_HISTOGRAM);
                        }
                        Some(l) => {
                            encode_exemplar_raw(out, l, body);
                            ends.push(out.len() as u32);
                            kinds.push(KIND_EXEMPLAR);
                        }
                        None => *missing += 1,
                    }
                }
            });
            if let Err(e) = decoded {
                // A record whose frame checked out but whose body does not decode: skip it.
                self.damaged_bytes += body.len() as u64;
                self.values.clear();
                crate::log!(
                    Level::Warn,
                    "wal",
                    "skipped an undecodable WAL record",
                    dir = self.dir.display(),
                    err = e.0
                );
            }
            if !sent {
                self.position = end;
                return Ok(Some((end, newest)));
            }
        }
    }
}
