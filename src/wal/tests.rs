use std::sync::atomic::AtomicU64;

use super::segment::{PAGE, SegmentReader, list_segments, pos_offset, pos_segment, segment_path};
use super::*;
use crate::entry::{LabelScratch, encode_series};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "spate-wal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One scrape's worth of entries: `n` series of a target, values from `seq`.
fn scrape(target: u64, n: u64, seq: u64, out: &mut Vec<u8>, ends: &mut Vec<u32>) {
    let mut l = LabelScratch::default();
    for i in 0..n {
        l.clear();
        l.push(b"__name__", format!("metric_{i}").as_bytes());
        l.push(b"instance", format!("host-{target}:9100").as_bytes());
        l.push(b"job", b"node");
        l.sort().unwrap();
        let value = if i % 3 == 0 {
            seq as f64
        } else {
            seq as f64 / 7.0
        };
        encode_series(out, &l, value, 1_700_000_000_000 + seq as i64 * 15_000);
        ends.push(out.len() as u32);
    }
}

fn small() -> WalOptions {
    WalOptions {
        segment_size: 4 * 1024,
        fsync_interval: Duration::from_secs(3600),
        ..WalOptions::default()
    }
}

/// Reads everything from `from` to the head: the entries as one byte string per entry, and
/// the reader (for its damage counts).
fn read_back(wal: &mut Wal, from: Pos) -> (Vec<Vec<u8>>, WalReader) {
    // As a shard does before it reads up to the head.
    wal.flush();
    let mut r = WalReader::new(wal.dir(), from);
    let (mut out, mut ends, mut hist) = (Vec::new(), Vec::new(), Vec::new());
    while r
        .next_record(
            wal.head(),
            wal.first_segment(),
            Accept {
                histograms: true,
                exemplars: true,
            },
            &mut out,
            &mut ends,
            &mut hist,
        )
        .unwrap()
        .is_some()
    {}
    (split(&out, &ends), r)
}

fn read_all(wal: &mut Wal, from: Pos) -> Vec<Vec<u8>> {
    read_back(wal, from).0
}

/// Asserts `got == want` and, when not, says where they part instead of printing both.
#[track_caller]
fn assert_entries(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    let same = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    if same < got.len().min(want.len()) {
        eprintln!("got  {:?}\nwant {:?}", got[same], want[same]);
    }
    assert!(
        same == want.len() && got.len() == want.len(),
        "{what}: got {} entries, want {}, equal up to {same}",
        got.len(),
        want.len()
    );
}

fn split(entries: &[u8], ends: &[u32]) -> Vec<Vec<u8>> {
    let mut start = 0;
    ends.iter()
        .map(|e| {
            let v = entries[start..*e as usize].to_vec();
            start = *e as usize;
            v
        })
        .collect()
}

#[test]
fn commits_read_back_byte_identical_across_segments_and_reopens() {
    let dir = TempDir::new("roundtrip");
    let mut want = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut positions = Vec::new();
    // One series cache per target, as scrape loops keep them; kept across reopens too, where
    // their entries are stale and must be harmless.
    let mut caches: Vec<SeriesCache> = (0..5).map(|_| SeriesCache::default()).collect();
    for round in 0..4 {
        let (mut wal, report) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
        assert_eq!(report.torn_bytes_cut, 0);
        // An endpoint that never acknowledges holds every segment.
        let saved = load_cursors(&dir.0);
        wal.add_endpoint("hold", &saved, Arc::default());
        for seq in 0..40 {
            let (mut e, mut ends) = (Vec::new(), Vec::new());
            let t = rng.below(5);
            scrape(t, 1 + rng.below(60), round * 100 + seq, &mut e, &mut ends);
            let p = wal.commit(&e, &ends, &mut caches[t as usize]).unwrap();
            positions.push((want.len() + ends.len(), p));
            want.extend(split(&e, &ends));
        }
        // Dropped without close: as a crash would leave it.
    }
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    let n = list_segments(&dir.0).unwrap().len();
    assert!(n > 5, "rotated: {n} segments");
    assert_entries(&read_all(&mut wal, 0), &want, "all");
    // From any commit's position, exactly the later entries.
    for (i, (count, p)) in positions.iter().enumerate().step_by(17) {
        assert_eq!(read_all(&mut wal, *p), want[*count..], "from commit {i}");
    }
}

#[test]
fn torn_tail_is_cut_and_the_rest_survives() {
    let dir = TempDir::new("torn");
    let mut want = Vec::new();
    let (last, end);
    {
        let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
        for seq in 0..5 {
            let (mut e, mut ends) = (Vec::new(), Vec::new());
            scrape(1, 20, seq, &mut e, &mut ends);
            wal.commit(&e, &ends, &mut SeriesCache::default()).unwrap();
            want.extend(split(&e, &ends));
        }
        // The partial block in the segment too (as a reader catching up leaves it).
        wal.flush();
        last = pos_segment(wal.head());
        end = pos_offset(wal.head());
    }
    // A half-written record after the last one: garbage where zeros were.
    let path = segment_path(&dir.0, last);
    let len = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    let end = end as usize;
    bytes[end..end + 50].copy_from_slice(&[0x01, 0x00, 0x60, 1, 2, 3, 4].repeat(8)[..50]);
    std::fs::write(&path, &bytes).unwrap();
    let (mut wal, report) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    assert_eq!(report.torn_bytes_cut, len - end as u64);
    assert_entries(&read_all(&mut wal, 0), &want, "all");
}

#[test]
fn a_corrupt_page_loses_only_its_records() {
    let dir = TempDir::new("corrupt");
    let mut per_commit = Vec::new();
    {
        let opts = WalOptions {
            compression: Compression::None,
            segment_size: 1 << 30,
            ..small()
        };
        let (mut wal, _) = Wal::open(&dir.0, opts, Arc::default()).unwrap();
        for seq in 0..200 {
            let (mut e, mut ends) = (Vec::new(), Vec::new());
            scrape(2, 100, seq, &mut e, &mut ends);
            wal.commit(&e, &ends, &mut SeriesCache::default()).unwrap();
            per_commit.push(split(&e, &ends));
        }
    }
    let path = segment_path(&dir.0, 0);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * PAGE);
    bytes[PAGE + PAGE / 2] ^= 0x40; // inside the second page
    std::fs::write(&path, &bytes).unwrap();
    let (mut wal, report) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    assert_eq!(
        report.torn_bytes_cut, 0,
        "damage mid-segment is not a torn tail"
    );
    let (got, r) = read_back(&mut wal, 0);
    let all: Vec<Vec<u8>> = per_commit.concat();
    assert!(r.damaged_bytes > 0);
    assert!(got.len() < all.len(), "something was lost");
    assert!(got.len() > all.len() / 2, "only around one page was lost");
    // What survived is in order and unaltered: a subsequence of what was written.
    let mut it = all.iter();
    for g in &got {
        assert!(it.any(|w| w == g), "entry not found in order");
    }
}

#[test]
fn cursors_persist_truncation_follows_them_and_size_bound_counts_losses() {
    let dir = TempDir::new("cursors");
    let opts = WalOptions {
        max_size: 16 * 1024,
        ..small()
    };
    let (mut wal, _) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
    let saved = HashMap::new();
    let fast = wal.add_endpoint("fast", &saved, Arc::default());
    let slow = wal.add_endpoint("slow", &saved, Arc::default());
    wal.reading_back(slow, wal.cursor(slow).acked());
    let mut total = 0u64;
    for seq in 0..400 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(3, 50, seq, &mut e, &mut ends);
        let p = wal.commit(&e, &ends, &mut SeriesCache::default()).unwrap();
        total += ends.len() as u64;
        wal.ack(fast, p);
        let size = wal.stats.size_bytes.load(Relaxed);
        assert!(
            size <= 16 * 1024 + 2 * 4 * 1024,
            "bound + one segment: {size}"
        );
    }
    let lost = wal.cursor(slow).lost.load(Relaxed);
    assert!(lost > 0, "the bound forced unsent data out");
    // What is still there for `slow`, plus what was lost, is everything.
    let acked = wal.cursor(slow).acked;
    let left = read_all(&mut wal, acked).len() as u64;
    assert_eq!(left + lost, total);
    wal.close();
    let loaded = load_cursors(&dir.0);
    assert_eq!(loaded.get("fast"), Some(&wal.cursor(fast).acked));
    assert_eq!(loaded.get("slow"), Some(&wal.cursor(slow).acked));
    drop(wal);
    // A restart resumes each endpoint from its saved cursor; a new one starts at the head.
    let (mut wal, _) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
    let s = wal.add_endpoint("slow", &loaded, Arc::default());
    let n = wal.add_endpoint("new", &loaded, Arc::default());
    assert_eq!(wal.cursor(s).acked, loaded["slow"]);
    assert!(wal.cursor(s).replaying);
    assert_eq!(wal.cursor(n).acked, wal.head());
    assert!(!wal.cursor(n).replaying);
    // Each endpoint reads the file as it registers: registering one keeps the others'
    // positions in it until every endpoint has registered.
    let fast_saved = load_cursors(&dir.0).get("fast").copied();
    assert_eq!(
        fast_saved,
        Some(loaded["fast"]),
        "fast's position survives slow's"
    );
    let f = wal.add_endpoint("fast", &load_cursors(&dir.0), Arc::default());
    assert_eq!(wal.cursor(f).acked, loaded["fast"]);
    // A run without an endpoint forgets its position once all have registered.
    wal.endpoints_registered();
    wal.close();
    let after = load_cursors(&dir.0);
    assert_eq!(after.len(), 3, "{after:?}");
    drop(wal);
    let (mut wal, _) = Wal::open(&dir.0, opts, Arc::default()).unwrap();
    wal.add_endpoint("fast", &load_cursors(&dir.0), Arc::default());
    wal.endpoints_registered();
    wal.close();
    assert_eq!(
        load_cursors(&dir.0).keys().collect::<Vec<_>>(),
        vec!["fast"]
    );
}

/// A reload's endpoint changes: a changed endpoint keeps its slot and position, a removed
/// one stops holding the WAL and leaves the cursors file, one added again starts at the head.
#[test]
fn reloaded_endpoints_keep_move_or_drop_their_positions() {
    let dir = TempDir::new("reload-cursors");
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    let saved = HashMap::new();
    let kept = wal.add_endpoint("kept", &saved, Arc::default());
    let gone = wal.add_endpoint("gone", &saved, Arc::default());
    wal.endpoints_registered();
    let mut firsts = Vec::new();
    for seq in 0..200 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(3, 50, seq, &mut e, &mut ends);
        let p = wal.commit(&e, &ends, &mut SeriesCache::default()).unwrap();
        if seq == 10 {
            wal.ack(kept, p);
        }
        firsts.push(p);
    }
    // `gone` acknowledged nothing: it holds every segment.
    let segments_held = wal.closed.len();
    assert!(segments_held > 2);
    // Changed: the same slot, the same position, reading back.
    let again = wal.add_endpoint("kept", &load_cursors(&dir.0), Arc::default());
    assert_eq!(again, kept);
    assert_eq!(wal.cursor(kept).acked(), firsts[10]);
    assert!(wal.cursor(kept).replaying());
    // Removed: it no longer holds segments (only `kept`'s position does) and leaves the file.
    wal.remove_endpoint(gone);
    assert!(
        wal.closed.len() < segments_held,
        "segments only `gone` held are deleted"
    );
    wal.save_cursors();
    assert_eq!(
        load_cursors(&dir.0).keys().collect::<Vec<_>>(),
        vec!["kept"]
    );
    // Added again later: at the head, in its old slot.
    let back = wal.add_endpoint("gone", &load_cursors(&dir.0), Arc::default());
    assert_eq!(back, gone);
    assert_eq!(wal.cursor(back).acked(), wal.head());
    assert!(!wal.cursor(back).replaying());
}

#[test]
fn a_changed_layout_keeps_refs_and_declares_nothing_again() {
    let dir = TempDir::new("relayout");
    let (mut wal, _) = Wal::open(&dir.0, WalOptions::default(), Arc::default()).unwrap();
    let mut cache = SeriesCache::default();
    let (mut e, mut ends) = (Vec::new(), Vec::new());
    scrape(7, 40, 1, &mut e, &mut ends);
    let mut want = split(&e, &ends);
    wal.commit(&e, &ends, &mut cache).unwrap();
    assert_eq!(wal.stats.records.load(Relaxed), 2, "series + samples");
    // The same series in another order, one dropped and one new.
    let mut entries = split(&e, &ends);
    entries.reverse();
    entries.remove(3);
    let (mut extra, mut extra_ends) = (Vec::new(), Vec::new());
    scrape(8, 1, 1, &mut extra, &mut extra_ends);
    entries.insert(10, extra);
    let (mut e2, mut ends2) = (Vec::new(), Vec::new());
    for x in &entries {
        e2.extend_from_slice(x);
        ends2.push(e2.len() as u32);
    }
    wal.commit(&e2, &ends2, &mut cache).unwrap();
    assert_eq!(
        wal.stats.records.load(Relaxed),
        4,
        "only the new series is declared: series + samples again"
    );
    // And the same layout again: samples only.
    wal.commit(&e2, &ends2, &mut cache).unwrap();
    assert_eq!(wal.stats.records.load(Relaxed), 5);
    want.extend(entries.iter().cloned());
    want.extend(entries);
    assert_entries(&read_all(&mut wal, 0), &want, "all");
}

#[test]
fn the_age_bound_deletes_old_segments_and_counts_unsent_samples() {
    let dir = TempDir::new("age");
    let opts = WalOptions {
        max_age: Some(Duration::from_millis(300)),
        ..small()
    };
    let (mut wal, _) = Wal::open(&dir.0, opts, Arc::default()).unwrap();
    let reader = wal.add_endpoint("reader", &HashMap::new(), Arc::default());
    wal.reading_back(reader, wal.cursor(reader).acked());
    let mut cache = SeriesCache::default();
    let mut total = 0u64;
    for seq in 0..400 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(4, 50, seq, &mut e, &mut ends);
        wal.commit(&e, &ends, &mut cache).unwrap();
        total += ends.len() as u64;
    }
    let segments = list_segments(&dir.0).unwrap().len();
    assert!(segments > 3, "{segments} segments");
    // Nothing is old yet.
    wal.truncate();
    assert_eq!(list_segments(&dir.0).unwrap().len(), segments);
    std::thread::sleep(Duration::from_millis(400));
    wal.truncate();
    // Only the open segment is left; every sample of the closed ones was counted as lost.
    assert_eq!(list_segments(&dir.0).unwrap().len(), 1);
    let lost = wal.cursor(reader).lost.load(Relaxed);
    let acked = wal.cursor(reader).acked;
    let left = read_all(&mut wal, acked).len() as u64;
    assert!(lost > 0);
    assert_eq!(lost + left, total);
}

#[test]
fn partial_blocks_survive_crashes_through_the_tail_file() {
    let dir = TempDir::new("tail");
    let opts = WalOptions {
        segment_size: 256 * 1024,
        ..small()
    };
    let (mut wal, _) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
    let mut rng = Rng(77);
    let mut want = Vec::new();
    let mut caches: Vec<SeriesCache> = (0..3).map(|_| SeriesCache::default()).collect();
    let mut restored = 0;
    for seq in 0..400 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        let t = rng.below(3);
        scrape(t, 1 + rng.below(80), seq, &mut e, &mut ends);
        wal.commit(&e, &ends, &mut caches[t as usize]).unwrap();
        want.extend(split(&e, &ends));
        match rng.below(20) {
            // A reader catching up writes the partial block to the segment.
            0 => {
                wal.flush();
                assert_entries(&read_all(&mut wal, 0), &want, &format!("flush at {seq}"));
            }
            // A crash: no flush, no close. The reopened WAL has every commit.
            1 => {
                drop(wal);
                let report;
                (wal, report) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
                assert_eq!(report.torn_bytes_cut, 0);
                restored += report.tail_bytes_restored;
                assert_entries(&read_all(&mut wal, 0), &want, &format!("crash at {seq}"));
            }
            _ => {}
        }
    }
    assert!(restored > 0, "no crash left a partial block to restore");

    // A slot torn by a crash mid-write: the other slot stands, and only the commit that was
    // being written (which never returned) can be missing.
    let (mut e, mut ends) = (Vec::new(), Vec::new());
    scrape(0, 10, 1000, &mut e, &mut ends);
    wal.commit(&e, &ends, &mut caches[0]).unwrap();
    let before = want.len();
    want.extend(split(&e, &ends));
    drop(wal);
    let path = dir.0.join(segment::TAIL_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    // The newest slot is the one whose sequence (bytes 4..12) is larger.
    let seq_at = |at: usize| u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
    let newest = if bytes.len() > 8192 && seq_at(8192) > seq_at(0) {
        8192
    } else {
        0
    };
    bytes[newest + 40] ^= 0xff; // in the data
    std::fs::write(&path, &bytes).unwrap();
    let (mut wal, _) = Wal::open(&dir.0, opts, Arc::default()).unwrap();
    let got = read_all(&mut wal, 0);
    assert!(got.len() >= before && got[..] == want[..got.len()]);
}

/// A scrape whose series are a random selection of a target's 40 (in random order, some
/// listed twice), with values of every kind the value column distinguishes.
fn random_scrape(rng: &mut Rng, target: u64, seq: u64, out: &mut Vec<u8>, ends: &mut Vec<u32>) {
    let mut l = LabelScratch::default();
    let mut ids: Vec<u64> = (0..40).filter(|_| rng.below(4) != 0).collect();
    for i in (1..ids.len()).rev() {
        if rng.below(5) == 0 {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    if rng.below(6) == 0
        && let Some(&d) = ids.first()
    {
        ids.push(d);
    }
    for id in ids {
        l.clear();
        l.push(b"__name__", format!("m_{id}").as_bytes());
        l.push(b"instance", format!("t{target}").as_bytes());
        l.sort().unwrap();
        let value = match (id + seq) % 7 {
            0 => (seq * (id + 1)) as f64,
            1 => seq as f64 / 10.0 + id as f64,
            2 => f64::from_bits(rng.next()),
            3 => f64::from_bits(0x7ff0_0000_0000_0002),
            4 => -(seq as f64) * 0.25,
            5 => rng.below(1 << 40) as f64 / 1e6,
            _ => 1.0 / (seq as f64 + 3.0),
        };
        encode_series(out, &l, value, 1_700_000_000_000 + seq as i64 * 1000);
        ends.push(out.len() as u32);
    }
}

/// The entries of the commits (end position, entries) that end after `from`.
fn committed_after(log: &[(Pos, Vec<Vec<u8>>)], from: Pos) -> Vec<Vec<u8>> {
    log.iter()
        .filter(|c| c.0 > from)
        .flat_map(|c| c.1.iter().cloned())
        .collect()
}

#[test]
fn random_commits_crashes_acks_and_truncation_keep_every_unacknowledged_entry() {
    for seed in 1..=6u64 {
        let dir = TempDir::new("prop");
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let opts = WalOptions {
            segment_size: 8 * 1024 + rng.below(24 * 1024),
            compression: [Compression::None, Compression::Snappy, Compression::Zstd]
                [rng.below(3) as usize],
            ..small()
        };
        let (mut wal, _) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
        let mut ep = wal.add_endpoint("ep", &HashMap::new(), Arc::default());
        // Every commit: where it ends, and its entries.
        let mut log: Vec<(Pos, Vec<Vec<u8>>)> = Vec::new();
        let mut caches: Vec<SeriesCache> = (0..4).map(|_| SeriesCache::default()).collect();
        for seq in 0..400 {
            match rng.below(12) {
                0 => {
                    // Acknowledge up to a random later commit and let truncation follow.
                    let acked = wal.cursor(ep).acked;
                    let later: Vec<Pos> = log.iter().map(|c| c.0).filter(|p| *p > acked).collect();
                    if !later.is_empty() {
                        wal.ack(ep, later[rng.below(later.len() as u64) as usize]);
                        wal.truncate();
                    }
                }
                1 => {
                    // A crash, with or without the cursor saved; caches outlive it as
                    // scrape loops' do not, but must be harmless.
                    if rng.below(2) == 0 {
                        wal.save_cursors();
                    }
                    drop(wal);
                    let report;
                    (wal, report) = Wal::open(&dir.0, opts.clone(), Arc::default()).unwrap();
                    assert_eq!(report.torn_bytes_cut, 0, "seed {seed} step {seq}");
                    ep = wal.add_endpoint("ep", &load_cursors(&dir.0), Arc::default());
                }
                2 => {
                    // Read back from the cursor: exactly what was committed after it.
                    let from = wal.cursor(ep).acked;
                    let want = committed_after(&log, from);
                    let (got, r) = read_back(&mut wal, from);
                    assert_eq!(
                        (r.damaged_bytes, r.lost_values, r.missing_series),
                        (0, 0, 0)
                    );
                    assert_entries(&got, &want, &format!("seed {seed} step {seq}"));
                }
                _ => {
                    let (mut e, mut ends) = (Vec::new(), Vec::new());
                    let t = rng.below(4);
                    random_scrape(&mut rng, t, seq, &mut e, &mut ends);
                    let p = wal.commit(&e, &ends, &mut caches[t as usize]).unwrap();
                    log.push((p, split(&e, &ends)));
                }
            }
        }
        let from = wal.cursor(ep).acked;
        let want = committed_after(&log, from);
        assert_entries(
            &read_all(&mut wal, from),
            &want,
            &format!("seed {seed} end"),
        );
    }
}

#[test]
fn every_compression_reads_back_the_same_and_zstd_is_smallest() {
    let mut sizes = Vec::new();
    let mut first: Option<Vec<Vec<u8>>> = None;
    for compression in [Compression::None, Compression::Snappy, Compression::Zstd] {
        let dir = TempDir::new("compression");
        let opts = WalOptions {
            compression,
            segment_size: 1 << 30,
            ..small()
        };
        let (mut wal, _) = Wal::open(&dir.0, opts, Arc::default()).unwrap();
        let mut rng = Rng(5);
        let mut caches: Vec<SeriesCache> = (0..3).map(|_| SeriesCache::default()).collect();
        let mut want = Vec::new();
        for seq in 0..200 {
            let (mut e, mut ends) = (Vec::new(), Vec::new());
            let t = rng.below(3);
            random_scrape(&mut rng, t, seq, &mut e, &mut ends);
            wal.commit(&e, &ends, &mut caches[t as usize]).unwrap();
            want.extend(split(&e, &ends));
        }
        let got = read_all(&mut wal, 0);
        assert_entries(&got, &want, &format!("{compression:?}"));
        if let Some(f) = &first {
            assert_entries(&got, f, "the same entries whatever the compression");
        }
        first = Some(got);
        sizes.push(pos_offset(wal.head()));
    }
    assert!(sizes[2] < sizes[1] && sizes[1] < sizes[0], "{sizes:?}");
}

#[test]
fn exemplars_share_their_series_ref_and_read_back_after_the_samples() {
    use crate::entry::encode_exemplar_series;
    let dir = TempDir::new("exemplars");
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    let mut cache = SeriesCache::default();
    let mut want_all = Vec::new();
    let mut want_samples = Vec::new();
    let mut ex = LabelScratch::default();
    for seq in 0..30u64 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        let (mut samples, mut exemplars) = (Vec::new(), Vec::new());
        let mut l = LabelScratch::default();
        for i in 0..5u64 {
            l.clear();
            l.push(b"__name__", format!("m_{i}").as_bytes());
            l.sort().unwrap();
            encode_series(&mut e, &l, (seq * i) as f64, 1_000 * seq as i64);
            ends.push(e.len() as u32);
            samples.push(e[*ends.iter().rev().nth(1).unwrap_or(&0) as usize..].to_vec());
            // An exemplar now and then, after its sample (as the appender makes them); one
            // for a series that has no sample before it.
            if (seq + i) % 3 == 0 || i == 4 {
                if i == 4 {
                    l.clear();
                    l.push(b"__name__", b"lonely");
                    l.sort().unwrap();
                }
                ex.clear();
                ex.push(b"trace_id", format!("t{seq}.{i}").as_bytes());
                ex.sort().unwrap();
                let start = e.len();
                encode_exemplar_series(&mut e, &l, &ex, 0.5, 1_000 * seq as i64 + 1);
                ends.push(e.len() as u32);
                exemplars.push(e[start..].to_vec());
            }
        }
        wal.commit(&e, &ends, &mut cache).unwrap();
        want_all.extend(samples.iter().cloned());
        want_all.extend(exemplars);
        want_samples.extend(samples);
    }
    // The cache holds the samples' series only: exemplars take no slot.
    assert_eq!(cache.slots.len(), 5);
    assert_entries(&read_all(&mut wal, 0), &want_all, "all kinds");
    // An endpoint without send_exemplars reads the samples only.
    wal.flush();
    let mut r = WalReader::new(wal.dir(), 0);
    let (mut out, mut ends, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
    while r
        .next_record(
            wal.head(),
            wal.first_segment(),
            Accept::default(),
            &mut out,
            &mut ends,
            &mut kinds,
        )
        .unwrap()
        .is_some()
    {}
    assert_entries(&split(&out, &ends), &want_samples, "samples only");
}

#[test]
fn family_metadata_is_written_once_per_segment_and_when_it_changes() {
    use crate::exposition::MetricType;
    let dir = TempDir::new("metadata");
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    // An endpoint that never acknowledges holds every segment.
    wal.add_endpoint("hold", &HashMap::new(), Arc::default());
    let mut cache = SeriesCache::default();
    let meta = |help: &str| {
        let mut m = Vec::new();
        record::put_metadata(
            &mut m,
            MetricType::Counter,
            b"m_total",
            b"",
            help.as_bytes(),
        );
        record::put_metadata(&mut m, MetricType::Gauge, b"g", b"bytes", b"A gauge.");
        m
    };
    let mut helps = Vec::new();
    for seq in 0..300u64 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(1, 20, seq, &mut e, &mut ends);
        let help = if seq < 150 { "Old help." } else { "New help." };
        helps.push(help);
        wal.commit_with_metadata(&e, &ends, &meta(help), &mut cache)
            .unwrap();
    }
    wal.flush();
    // Per segment: each family once, and m_total again where its help changed.
    let segments = list_segments(&dir.0).unwrap();
    assert!(segments.len() > 3, "{} segments", segments.len());
    let mut changed_in = None;
    for i in &segments {
        let mut r = SegmentReader::open(&dir.0, *i, 0, None).unwrap();
        let mut seen: Vec<(String, String)> = Vec::new();
        while let Some((_, rec)) = r.next().unwrap() {
            let (&kind, body) = rec.split_first().unwrap();
            record::decode(kind, body, &mut record::Values::default(), |it| {
                if let record::Item::Metadata { name, help, .. } = it {
                    seen.push((
                        String::from_utf8_lossy(name).into(),
                        String::from_utf8_lossy(help).into(),
                    ));
                }
            })
            .unwrap();
        }
        if seen.is_empty() {
            continue; // the open segment, nothing committed to it yet
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        if seen.len() == 3 {
            assert_eq!(names, ["m_total", "g", "m_total"], "segment {i}");
            assert_eq!(seen[2].1, "New help.");
            changed_in = Some(*i);
        } else {
            assert_eq!(names, ["m_total", "g"], "segment {i}");
        }
    }
    assert!(changed_in.is_some(), "the change was written");
}

#[test]
fn epochs_running_out_start_a_new_generation_and_lose_nothing() {
    let dir = TempDir::new("epochs");
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    wal.add_endpoint("hold", &HashMap::new(), Arc::default());
    wal.epoch = EPOCH_LIMIT - 2;
    let generation = wal.generation;
    let mut cache = SeriesCache::default();
    let mut want = Vec::new();
    for seq in 0..200 {
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(1, 30, seq, &mut e, &mut ends);
        wal.commit(&e, &ends, &mut cache).unwrap();
        want.extend(split(&e, &ends));
        assert!(wal.epoch < EPOCH_LIMIT);
    }
    assert!(list_segments(&dir.0).unwrap().len() > 2, "segments rotated");
    assert_ne!(wal.generation, generation, "the epochs ran out");
    let (got, r) = read_back(&mut wal, 0);
    assert_eq!((r.lost_values, r.missing_series), (0, 0));
    assert_entries(&got, &want, "across the new generation");
}

#[test]
fn syncs_are_handed_out_off_the_commit_path_and_counted_once_each() {
    let dir = TempDir::new("syncjob");
    let opts = WalOptions {
        fsync_interval: Duration::from_millis(1),
        ..small()
    };
    let stats: Arc<WalStats> = Arc::default();
    let (mut wal, _) = Wal::open(&dir.0, opts, stats.clone()).unwrap();
    let mut cache = SeriesCache::default();
    let (mut e, mut ends) = (Vec::new(), Vec::new());
    scrape(1, 3, 0, &mut e, &mut ends);
    wal.commit(&e, &ends, &mut cache).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    wal.commit(&e, &ends, &mut cache).unwrap();
    // With an interval, a commit does not sync: the timer's job does.
    assert_eq!(stats.fsyncs.load(Relaxed), 0);
    let job = wal.sync_job().expect("written and due");
    assert!(wal.sync_job().is_none(), "handed out once");
    let done = crate::runtime::block_on(job.run()).unwrap();
    wal.sync_done(done);
    let synced = stats.fsyncs.load(Relaxed);
    assert!(synced >= 1, "each call counted");
    assert_eq!(stats.fsync_failures.load(Relaxed), 0);
    // A segment closed by rotation waits for the next job, whether or not more was written.
    for seq in 1..200 {
        e.clear();
        ends.clear();
        scrape(1, 3, seq, &mut e, &mut ends);
        wal.commit(&e, &ends, &mut cache).unwrap();
    }
    assert!(stats.segments_created.load(Relaxed) >= 1, "rotated");
    assert_eq!(
        stats.fsyncs.load(Relaxed),
        synced,
        "still nothing synced inline"
    );
    wal.tick();
    assert!(stats.fsyncs.load(Relaxed) > synced);
    assert!(stats.fsync_duration.count() > 0);
}

#[test]
fn commits_written_on_the_ring_read_back_as_blocking_ones_do() {
    let dir = TempDir::new("ringcommit");
    let (mut wal, _) = Wal::open(&dir.0, small(), Arc::default()).unwrap();
    // An endpoint that acknowledges nothing keeps every segment.
    wal.add_endpoint("reader", &Default::default(), Arc::default());
    let mut caches: Vec<SeriesCache> = (0..3).map(|_| SeriesCache::default()).collect();
    let mut want = Vec::new();
    let start = wal.head();
    for seq in 0..120u64 {
        let t = (seq % 3) as usize;
        let (mut e, mut ends) = (Vec::new(), Vec::new());
        scrape(t as u64, 5, seq, &mut e, &mut ends);
        want.extend(split(&e, &ends));
        wal.begin(e.len(), ends.len());
        wal.add(&e, &ends, 0..ends.len(), &mut caches[t]);
        if seq % 2 == 0 {
            // Every other commit the way a scrape does it: the writes on the ring, the WAL not
            // borrowed meanwhile.
            let finishing = wal.finish_start(&e, &[], &mut caches[t]);
            let r = match finishing {
                Finishing::Done(r) => r,
                Finishing::Writing(job, commit) => {
                    let progress = crate::runtime::block_on(job.run()).unwrap();
                    wal.finish_end(commit, progress, &mut caches[t])
                }
            };
            r.unwrap();
        } else {
            wal.finish(&e, &[], &mut caches[t]).unwrap();
        }
    }
    assert!(
        wal.first_segment() < pos_segment(wal.head()),
        "spans segments"
    );
    assert_entries(
        &read_all(&mut wal, start),
        &want,
        "ring and blocking commits",
    );
}
