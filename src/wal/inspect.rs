//! `spate wal inspect <dir>`: what is in a WAL, read-only, for an operator at 3 a.m.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::record::{self, EXEMPLARS, HISTOGRAMS, METADATA, SAMPLES, SERIES};
use super::segment::{Pos, SegmentReader, list_segments, pos_offset, pos_segment, segment_path};

/// The core directories under `dir`: `dir` itself when it holds segments, else its numbered
/// subdirectories, else those of `dir/wal` (so the storage path works too).
fn core_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let segs = list_segments(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !segs.is_empty() || dir.join("cursors").exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    for base in [dir.to_path_buf(), dir.join("wal")] {
        let Ok(rd) = std::fs::read_dir(&base) else {
            continue;
        };
        let mut cores: Vec<(u32, PathBuf)> = rd
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
            .collect();
        cores.sort();
        if !cores.is_empty() {
            return Ok(cores.into_iter().map(|c| c.1).collect());
        }
    }
    Err(format!(
        "{} holds no WAL: give --storage.agent.path, its wal/ directory, or one core's wal/<n>/",
        dir.display()
    ))
}

#[derive(Default)]
struct SegmentSummary {
    bytes: u64,
    records: [u64; 6],
    samples: u64,
    histograms: u64,
    exemplars: u64,
    metadata: u64,
    series: u64,
    damaged_bytes: u64,
    first_damage: String,
}

fn summarize(dir: &Path, index: u32) -> std::io::Result<SegmentSummary> {
    let mut s = SegmentSummary {
        bytes: std::fs::metadata(segment_path(dir, index))?.len(),
        ..Default::default()
    };
    let mut r = SegmentReader::open(dir, index, 0, None)?;
    let mut values = record::Values::default();
    while let Some((_, rec)) = r.next()? {
        let Some((&kind, body)) = rec.split_first() else {
            continue;
        };
        s.records[usize::from(kind).min(5)] += 1;
        let n = record::decode(kind, body, &mut values, |_| {}).unwrap_or(0) as u64;
        match kind {
            SERIES => s.series += n,
            SAMPLES => s.samples += n,
            HISTOGRAMS => s.histograms += n,
            EXEMPLARS => s.exemplars += n,
            METADATA => s.metadata += n,
            _ => {}
        }
    }
    s.damaged_bytes = r.damage.skipped_bytes;
    if let Some(at) = r.damage.first_at {
        s.first_damage = format!("{} at offset {}", r.damage.reason, pos_offset(at));
    }
    Ok(s)
}

/// The report for `dir`.
pub fn inspect(dir: &Path) -> Result<String, String> {
    let mut out = String::new();
    for core in core_dirs(dir)? {
        let segments =
            list_segments(&core).map_err(|e| format!("cannot read {}: {e}", core.display()))?;
        let _ = writeln!(out, "WAL {}", core.display());
        let _ = writeln!(
            out,
            "  {:<10} {:>12} {:>8} {:>9} {:>11} {:>10} {:>10}  damage",
            "segment", "bytes", "records", "series", "samples", "histograms", "exemplars"
        );
        let mut total = SegmentSummary::default();
        let mut per: Vec<(u32, SegmentSummary)> = Vec::new();
        for i in &segments {
            let s = summarize(&core, *i).map_err(|e| {
                format!(
                    "cannot read segment {}: {e}",
                    segment_path(&core, *i).display()
                )
            })?;
            let _ = writeln!(
                out,
                "  {:<10} {:>12} {:>8} {:>9} {:>11} {:>10} {:>10}  {}",
                format!("{i:08}"),
                s.bytes,
                s.records.iter().sum::<u64>(),
                s.series,
                s.samples,
                s.histograms,
                s.exemplars,
                if s.damaged_bytes > 0 {
                    format!("{} bytes skipped ({})", s.damaged_bytes, s.first_damage)
                } else {
                    "-".into()
                }
            );
            total.bytes += s.bytes;
            total.samples += s.samples;
            total.histograms += s.histograms;
            total.exemplars += s.exemplars;
            total.metadata += s.metadata;
            total.damaged_bytes += s.damaged_bytes;
            per.push((*i, s));
        }
        let _ = writeln!(
            out,
            "  total: {} segments, {} bytes, {} samples, {} histograms, {} exemplars, {} family metadata, {} bytes damaged",
            segments.len(),
            total.bytes,
            total.samples,
            total.histograms,
            total.exemplars,
            total.metadata,
            total.damaged_bytes
        );
        let cursors = super::load_cursors(&core);
        if cursors.is_empty() {
            let _ = writeln!(out, "  cursors: none saved");
        } else {
            let _ = writeln!(out, "  cursors (acknowledged up to; backlog after it):");
            let mut names: Vec<(&String, &Pos)> = cursors.iter().collect();
            names.sort();
            for (name, p) in names {
                let (seg, off) = (pos_segment(*p), pos_offset(*p));
                let mut bytes = 0;
                let mut samples = 0;
                for (i, s) in &per {
                    if *i > seg {
                        bytes += s.bytes;
                        samples += s.samples + s.histograms;
                    } else if *i == seg {
                        bytes += s.bytes.saturating_sub(off);
                        samples += super::count_samples(&core, *i, off).unwrap_or(0);
                    }
                }
                let _ = writeln!(
                    out,
                    "    {name}: segment {seg:08} offset {off}; backlog {bytes} bytes, {samples} samples"
                );
            }
        }
    }
    Ok(out)
}
