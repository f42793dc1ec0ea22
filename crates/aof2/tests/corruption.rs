//! Corruption handling with real files: damaged records, footers and tails, garbage files, and
//! roots written by a newer version. Layout (docs/format.md): segment files live at
//! `ROOT/logs/NAME/segments/<id:016x>.seg`; a 128-byte header, frames with 32-byte headers, and
//! for sealed segments 24-byte index entries and a 96-byte footer at the end.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use aof2::format::segment::{SegmentFooter, decode_frame};
use aof2::{
    Aof, AofManager, Durability, Error, ErrorKind, LogConfig, ManagerConfig, ReadVisibility,
    SegmentState,
};

use support::copy_dir;

mod support;

const NAME: &str = "events";
const SEGMENT_BYTES: u64 = 64 * 1024;
const HEADER: u64 = 128;
const FRAME: u64 = 32;
const FOOTER: u64 = 96;

fn config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
    }
}

/// Payload of record `seq` in generation `generation` (sizes vary, include 0 and odd lengths).
fn payload_gen(seq: u64, generation: u64) -> Vec<u8> {
    let len = match seq % 11 {
        0 => 0,
        1 => 1 + seq % 7,
        _ => (seq * 7919 + 13 * generation) % 2500,
    } as usize;
    (0..len)
        .map(|i| ((seq * 31 + i as u64 * 17 + generation * 101) % 255 + 1) as u8)
        .collect()
}

fn payload(seq: u64) -> Vec<u8> {
    payload_gen(seq, 0)
}

#[derive(Debug, Clone)]
struct Seg {
    id: u64,
    base: u64,
    end: u64,
    state: SegmentState,
    path: PathBuf,
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model: Vec<Vec<u8>>,
    segments: Vec<Seg>,
}

impl Fixture {
    fn sealed(&self) -> Vec<Seg> {
        self.segments
            .iter()
            .filter(|s| s.state == SegmentState::Sealed)
            .cloned()
            .collect()
    }

    fn active(&self) -> Seg {
        let a = self.segments.last().unwrap().clone();
        assert_eq!(a.state, SegmentState::Active);
        a
    }

    fn open(&self) -> (AofManager, Aof) {
        open(&self.root)
    }
}

fn open(root: &Path) -> (AofManager, Aof) {
    let m = AofManager::open(ManagerConfig::new(root)).expect("open root");
    let log = m.open_log(NAME, config()).expect("open log");
    (m, log)
}

/// A log with at least four sealed segments and an active segment with ~40 KB of frames, written
/// with single appends and batches of three. Closed when returned.
fn build() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log(NAME, config()).unwrap();
    let mut model: Vec<Vec<u8>> = Vec::new();
    loop {
        let seq = model.len() as u64;
        if seq % 5 == 3 {
            let batch: Vec<Vec<u8>> = (seq..seq + 3).map(payload).collect();
            assert_eq!(log.append_batch(&batch).unwrap(), seq);
            model.extend(batch);
        } else {
            assert_eq!(log.append(&payload(seq)).unwrap(), seq);
            model.push(payload(seq));
        }
        let info = m.log_info(&log);
        let rolled = info
            .segments
            .iter()
            .filter(|s| s.state != SegmentState::Active)
            .count();
        let active = info.segments.last().unwrap();
        if rolled >= 4 && active.state == SegmentState::Active && active.record_bytes >= 40_000 {
            break;
        }
    }
    log.close().unwrap();
    let info = m.log_info(&log);
    m.close().unwrap();
    drop(log);
    drop(m);
    // These tests damage Tier 0 copies: take away the Tier 1 copies the coordinator may have
    // made, so recovery has nothing to fall back on (tests/tiering.rs covers the fallback).
    let _ = fs::remove_dir_all(root.join("logs").join(NAME).join("tier1"));
    let segments = info
        .segments
        .iter()
        .map(|s| Seg {
            id: s.id,
            base: s.base_seq,
            end: s.end_seq,
            state: s.state,
            path: s.path.clone(),
        })
        .collect::<Vec<_>>();
    assert!(
        segments
            .iter()
            .filter(|s| s.state == SegmentState::Sealed)
            .count()
            >= 4,
        "{segments:?}"
    );
    assert_eq!(segments.last().unwrap().end, model.len() as u64);
    Fixture {
        _dir: dir,
        root,
        model,
        segments,
    }
}

/// A frame as docs/format.md describes it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: u64,
    seq: u64,
    len: u64,
    batch_remaining: u32,
}

impl Frame {
    fn end(&self) -> u64 {
        self.offset + FRAME + self.len
    }
}

/// The valid frames of a segment per the spec: from offset 128 up to `limit`, each with a good
/// CRC, the next sequence and an epoch not lower than the previous frame's; a trailing incomplete
/// batch is not part of the log. (Independent oracle for what recovery must keep.)
fn spec_frames(bytes: &[u8], base: u64, limit: u64) -> Vec<Frame> {
    let limit = limit.min(bytes.len() as u64);
    let mut frames = Vec::new();
    let mut offset = HEADER;
    let mut seq = base;
    let mut epoch = 0;
    while offset < limit {
        let Ok(h) = decode_frame(&bytes[offset as usize..limit as usize]) else {
            break;
        };
        if h.seq != seq || h.epoch < epoch {
            break;
        }
        epoch = h.epoch;
        frames.push(Frame {
            offset,
            seq,
            len: h.len as u64,
            batch_remaining: h.batch_remaining,
        });
        offset += FRAME + h.len as u64;
        seq += 1;
    }
    while frames.last().is_some_and(|f| f.batch_remaining > 0) {
        frames.pop();
    }
    frames
}

fn sealed_frames(seg: &Seg) -> Vec<Frame> {
    let bytes = fs::read(&seg.path).unwrap();
    let footer = SegmentFooter::decode(&bytes[bytes.len() - FOOTER as usize..]).unwrap();
    let frames = spec_frames(&bytes, seg.base, footer.records_end);
    assert_eq!(frames.len() as u64, seg.end - seg.base);
    frames
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x41;
    fs::write(path, bytes).unwrap();
}

fn assert_reads(log: &Aof, model: &[Vec<u8>], range: std::ops::Range<u64>) {
    for seq in range {
        let r = log
            .read(seq)
            .unwrap_or_else(|e| panic!("read {seq} failed: {e}"));
        assert!(
            r.payload() == model[seq as usize].as_slice(),
            "seq {seq}: wrong payload ({} bytes, want {})",
            r.len(),
            model[seq as usize].len()
        );
    }
}

fn assert_corrupt(result: aof2::Result<aof2::Record>, what: &str) -> Error {
    match result {
        Ok(r) => panic!("{what}: read succeeded with {} bytes", r.len()),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corruption, "{what}: {e}");
            e
        }
    }
}

// ------------------------------------------------------------------ (a) record in a sealed segment

#[test]
fn flipped_byte_in_sealed_record_is_reported_and_isolated() {
    let fx = build();
    let seg = fx.sealed()[1].clone();
    let frames = sealed_frames(&seg);
    let bad = *frames[frames.len() / 2..]
        .iter()
        .find(|f| f.len >= 16)
        .expect("a record with a payload");
    flip(&seg.path, bad.offset + FRAME + bad.len / 2);
    // Where a scan of the segment stops: the bad frame, or the start of its batch.
    let mut batch_start = bad;
    for f in frames.iter().rev().skip_while(|f| f.seq >= bad.seq) {
        if f.batch_remaining == 0 {
            break;
        }
        batch_start = *f;
    }

    let (m, log) = fx.open();
    let report = m.recovery_report(NAME).unwrap();
    assert!(
        report.quarantined.is_empty(),
        "payload damage is not visible to the cheap open-time checks: {report:?}"
    );
    assert_eq!(log.next_seq(), fx.model.len() as u64);

    let verify = m.verify_log(&log);
    assert!(!verify.is_clean(), "verify must find the flipped byte");
    let file_name = seg.path.file_name().unwrap().to_str().unwrap();
    let problem = verify
        .problems
        .iter()
        .find(|p| p.segment_id == seg.id)
        .unwrap_or_else(|| panic!("no problem names segment {}: {verify:?}", seg.id));
    assert!(
        problem.location.contains(file_name)
            && (problem.location.contains(&format!("offset {}", bad.offset))
                || problem
                    .location
                    .contains(&format!("offset {}", batch_start.offset))),
        "location {:?} should name {file_name} at offset {} (or batch start {})",
        problem.location,
        bad.offset,
        batch_start.offset
    );
    assert_eq!(verify.problems.len(), 1, "{verify:?}");

    let e = assert_corrupt(log.read(bad.seq), "read of the damaged record");
    assert!(e.to_string().contains(file_name), "{e}");
    // Everything else still reads, in this segment and in every other one.
    assert_reads(&log, &fx.model, 0..bad.seq);
    assert_reads(&log, &fx.model, bad.seq + 1..fx.model.len() as u64);
    // A reader stops at the damaged record with Corruption.
    let mut reader = log.reader(seg.base);
    for seq in seg.base..bad.seq {
        assert_eq!(reader.next().unwrap().unwrap().seq(), seq);
    }
    assert_corrupt(reader.next().unwrap(), "reader at the damaged record");
    assert!(reader.next().is_none(), "a reader ends after its error");
    let after: Vec<_> = log.reader(bad.seq + 1).map(|r| r.unwrap().seq()).collect();
    assert_eq!(after.len() as u64, fx.model.len() as u64 - bad.seq - 1);

    // The log keeps working.
    let next = fx.model.len() as u64;
    assert_eq!(log.append(b"after damage").unwrap(), next);
    m.close().unwrap();
}

// ------------------------------------------------------------------ (b) footer of a sealed segment

#[test]
fn flipped_byte_in_sealed_footer_quarantines_the_segment() {
    let fx = build();
    let seg = fx.sealed()[1].clone();
    let len = fs::metadata(&seg.path).unwrap().len();
    flip(&seg.path, len - FOOTER + 64); // sealed timestamp, covered by the footer CRC

    let (m, log) = fx.open();
    let report = m.recovery_report(NAME).unwrap();
    assert!(
        report.quarantined.iter().any(|(id, _)| *id == seg.id),
        "segment {} should be quarantined: {report:?}",
        seg.id
    );
    assert_eq!(report.quarantined.len(), 1, "{report:?}");
    let file_name = seg.path.file_name().unwrap();
    let moved = fx.root.join("quarantine").join(NAME).join(file_name);
    assert!(moved.is_file(), "{} should exist", moved.display());
    assert!(!seg.path.exists(), "{} should be gone", seg.path.display());
    let info = m.log_info(&log);
    let state = info.segments.iter().find(|s| s.id == seg.id).unwrap().state;
    assert_eq!(state, SegmentState::Quarantined);

    assert_eq!(log.next_seq(), fx.model.len() as u64, "no records are lost");
    for seq in seg.base..seg.end {
        assert_corrupt(
            log.read(seq),
            &format!("read {seq} of the quarantined segment"),
        );
    }
    assert_corrupt(
        log.reader(seg.base).next().unwrap(),
        "reader in the quarantined segment",
    );
    assert_reads(&log, &fx.model, 0..seg.base);
    assert_reads(&log, &fx.model, seg.end..fx.model.len() as u64);
    let verify = m.verify_log(&log);
    assert!(
        verify.problems.iter().any(|p| p.segment_id == seg.id),
        "{verify:?}"
    );

    let next = fx.model.len() as u64;
    assert_eq!(log.append(b"still appendable").unwrap(), next);
    log.flush().unwrap();
    m.close().unwrap();
    drop((m, log));

    // Still quarantined after another reopen; the new record survived.
    let (m, log) = fx.open();
    assert_eq!(log.next_seq(), next + 1);
    assert_eq!(log.read(next).unwrap().payload(), b"still appendable");
    assert_corrupt(log.read(seg.base), "quarantined after reopen");
    assert_reads(&log, &fx.model, seg.end..next);
    m.close().unwrap();
}

// ------------------------------------------------------------------ (c) zeroed page in the tail

fn append_generation(log: &Aof, model: &mut Vec<Vec<u8>>, count: u64, generation: u64) {
    for _ in 0..count {
        let seq = model.len() as u64;
        let p = payload_gen(seq, generation);
        assert_eq!(log.append(&p).unwrap(), seq);
        model.push(p);
    }
}

fn check_log(log: &Aof, m: &AofManager, model: &[Vec<u8>]) {
    assert_eq!(log.next_seq(), model.len() as u64);
    assert_reads(log, model, 0..model.len() as u64);
    let mut n = 0;
    for r in log.reader_with(0, ReadVisibility::Written) {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, model.len());
    let verify = m.verify_log(log);
    assert!(verify.is_clean(), "{verify:?}");
}

#[test]
fn zeroed_page_in_active_segment_cuts_the_tail_there() {
    let fx = build();
    let active = fx.active();
    let original = fs::read(&active.path).unwrap();
    let all = spec_frames(&original, active.base, original.len() as u64);
    assert_eq!(all.len() as u64, active.end - active.base);
    let records_end = all.last().unwrap().end();
    let page = ((HEADER + records_end) / 2) & !4095;
    assert!(page >= 4096 && page + 4096 <= records_end, "page {page}");
    let mut damaged = original.clone();
    damaged[page as usize..page as usize + 4096].fill(0);
    fs::write(&active.path, &damaged).unwrap();
    let intact = spec_frames(&damaged, active.base, damaged.len() as u64);
    assert!(intact.len() < all.len());
    assert!(
        intact.last().unwrap().end() <= page + 4096,
        "nothing after the page survives"
    );
    let expected_next = active.base + intact.len() as u64;

    let mut model = fx.model[..expected_next as usize].to_vec();
    let (m, log) = fx.open();
    assert_eq!(
        log.next_seq(),
        expected_next,
        "recovery cuts at the first bad frame"
    );
    let report = m.recovery_report(NAME).unwrap();
    assert!(report.quarantined.is_empty(), "{report:?}");
    // The frames after the zeroed page are not a torn tail: the report says which were lost,
    // and the bytes dropped are kept in quarantine.
    let survivors: Vec<&Frame> = all.iter().filter(|f| f.offset >= page + 4096).collect();
    assert!(!survivors.is_empty());
    assert_eq!(report.damaged_tails.len(), 1, "{report:?}");
    let damaged_tail = &report.damaged_tails[0];
    let cut = intact.last().unwrap().end();
    assert_eq!(damaged_tail.cut_offset, cut, "{damaged_tail}");
    assert_eq!(damaged_tail.later.frames, survivors.len() as u64);
    assert_eq!(damaged_tail.later.first_seq, survivors[0].seq);
    assert_eq!(damaged_tail.later.last_seq, active.end - 1);
    assert_eq!(damaged_tail.later.first_offset, survivors[0].offset);
    let saved = fs::read(damaged_tail.saved_to.as_ref().expect("kept")).unwrap();
    assert_eq!(
        saved,
        &damaged[cut as usize..damaged_tail.later.end_offset as usize]
    );
    assert_reads(&log, &model, 0..expected_next);
    let verify = m.verify_log(&log);
    assert_eq!(verify.problems.len(), 1, "{verify:?}");
    assert!(
        verify.problems[0].detail.contains("later frames"),
        "{verify:?}"
    );
    assert!(log.read(expected_next).is_err());

    // New appends work and survive reopening (twice: recovery must be stable).
    append_generation(&log, &mut model, 25, 1);
    m.close().unwrap();
    drop((m, log));
    for _ in 0..2 {
        let (m, log) = fx.open();
        check_log(&log, &m, &model);
        m.close().unwrap();
    }
}

/// After a cut, append records with exactly the sizes of the lost ones, so that stale frames
/// beyond the cut line up with the new frames and carry the next expected sequence numbers. They
/// must not come back after a reopen (docs/format.md: epochs fence stale frames).
#[test]
fn stale_frames_after_a_cut_do_not_come_back() {
    let fx = build();
    let active = fx.active();
    let original = fs::read(&active.path).unwrap();
    let all = spec_frames(&original, active.base, original.len() as u64);
    // Break the CRC of one frame in the middle of the active segment.
    let victim = all[all.len() / 2];
    let mut damaged = original.clone();
    damaged[victim.offset as usize + 1] ^= 0xff;
    fs::write(&active.path, &damaged).unwrap();
    let intact = spec_frames(&damaged, active.base, damaged.len() as u64);
    let cut = intact.len();
    let expected_next = active.base + cut as u64;

    let (m, log) = fx.open();
    assert_eq!(log.next_seq(), expected_next);
    let mut model = fx.model[..expected_next as usize].to_vec();
    // Rewrite the lost records (one per frame, same sizes, different bytes) up to and including
    // the damaged frame; the original frames after it still sit in the file, aligned.
    for f in &all[cut..=all.iter().position(|f| f.seq == victim.seq).unwrap()] {
        let mut p = fx.model[f.seq as usize].clone();
        for b in &mut p {
            *b = b.wrapping_add(1);
        }
        assert_eq!(p.len() as u64, f.len);
        assert_eq!(log.append(&p).unwrap(), f.seq);
        model.push(p);
    }
    m.close().unwrap();
    drop((m, log));

    let (m, log) = fx.open();
    assert_eq!(
        log.next_seq(),
        model.len() as u64,
        "stale frames after the rewritten ones were resurrected"
    );
    check_log(&log, &m, &model);
    m.close().unwrap();
}

// ------------------------------------------------------------------ (d) truncated tail

#[test]
fn truncated_active_segment_recovers_the_prefix() {
    let fx = build();
    let active = fx.active();
    let original = fs::read(&active.path).unwrap();
    let all = spec_frames(&original, active.base, original.len() as u64);
    let victim = *all[all.len() * 2 / 3..]
        .iter()
        .find(|f| f.len >= 2)
        .unwrap();
    let cut_at = victim.offset + FRAME + victim.len / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&active.path)
        .unwrap()
        .set_len(cut_at)
        .unwrap();
    let intact = spec_frames(&original[..cut_at as usize], active.base, cut_at);
    assert!(intact.len() < all.len());
    let expected_next = active.base + intact.len() as u64;

    let (m, log) = fx.open();
    assert_eq!(log.next_seq(), expected_next);
    let mut model = fx.model[..expected_next as usize].to_vec();
    check_log(&log, &m, &model);
    append_generation(&log, &mut model, 30, 2);
    m.close().unwrap();
    drop((m, log));
    for _ in 0..2 {
        let (m, log) = fx.open();
        check_log(&log, &m, &model);
        m.close().unwrap();
    }
}

// ------------------------------------------------------------------ (e) garbage files

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn sealed_segment_replaced_by_garbage_is_quarantined() {
    for (i, garbage_len) in [None, Some(0u64), Some(1000), Some(200_000)]
        .into_iter()
        .enumerate()
    {
        let fx = build();
        let seg = fx.sealed()[2].clone();
        let len = garbage_len.unwrap_or_else(|| fs::metadata(&seg.path).unwrap().len());
        fs::write(&seg.path, Rng(0x1234 + i as u64).bytes(len as usize)).unwrap();
        let (m, log) = fx.open();
        let report = m.recovery_report(NAME).unwrap();
        assert!(
            report.quarantined.iter().any(|(id, _)| *id == seg.id),
            "garbage of {len} bytes: {report:?}"
        );
        assert_corrupt(log.read(seg.base), "garbage segment");
        assert_reads(&log, &fx.model, 0..seg.base);
        assert_reads(&log, &fx.model, seg.end..fx.model.len() as u64);
        assert_eq!(log.append(b"x").unwrap(), fx.model.len() as u64);
        m.close().unwrap();
    }
}

#[test]
fn active_segment_replaced_by_garbage_fails_or_recovers_cleanly() {
    for (i, garbage_len) in [SEGMENT_BYTES, 0, 100, 5000].into_iter().enumerate() {
        let fx = build();
        let active = fx.active();
        fs::write(
            &active.path,
            Rng(0x9876 + i as u64).bytes(garbage_len as usize),
        )
        .unwrap();
        let outcome = open_and_check(&fx.root, &fx.model);
        println!("active segment replaced by {garbage_len} garbage bytes: {outcome}");
    }
}

#[test]
fn manifest_wal_with_garbage_in_the_middle_fails_or_recovers_cleanly() {
    for (i, garbage) in [8usize, 61, 4096].into_iter().enumerate() {
        let fx = build();
        let wal = manifest_wal(&fx.root);
        let mut bytes = fs::read(&wal).unwrap();
        let at = bytes.len() / 2;
        let junk = Rng(0x5151 + i as u64).bytes(garbage);
        bytes.splice(at..at, junk);
        fs::write(&wal, &bytes).unwrap();
        let outcome = open_and_check(&fx.root, &fx.model);
        println!("{garbage} garbage bytes inserted in the manifest WAL: {outcome}");
    }
}

fn manifest_wal(root: &Path) -> PathBuf {
    let dir = root.join("logs").join(NAME).join("manifest");
    let mut wals: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .collect();
    wals.sort();
    wals.pop().expect("a manifest WAL")
}

/// Open a damaged root. Opening may fail; if it succeeds, the log must never hand out a wrong
/// record, must reopen to the same state (recovery is stable: a second open without appends in
/// between sees exactly the same records), and must accept an append that survives a reopen.
/// Panics (test failure) on any inconsistency; returns a one-line description otherwise.
fn open_and_check(root: &Path, model: &[Vec<u8>]) -> String {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let m = match AofManager::open(ManagerConfig::new(root)) {
            Ok(m) => m,
            Err(e) => return format!("manager refused: {e}"),
        };
        let log = match m.open_log(NAME, config()) {
            Ok(l) => l,
            Err(e) => return format!("open_log refused ({:?}): {e}", e.kind()),
        };
        let next = log.next_seq();
        assert!(
            next <= model.len() as u64,
            "the log claims {next} records, only {} were written",
            model.len()
        );
        let mut read_back: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for seq in 0..next {
            if let Ok(r) = log.read(seq) {
                assert!(
                    r.payload() == model[seq as usize].as_slice(),
                    "seq {seq} reads back wrong data"
                );
                read_back.insert(seq, r.payload().to_vec());
            }
        }
        let readable = read_back.len();
        let _ = m.verify_log(&log);
        if let Err(e) = m.close() {
            return format!("recovered {next} records, close failed: {e}");
        }
        drop((m, log));

        // Stable: a second open sees exactly the same log.
        let (m, log) = open(root);
        assert_eq!(
            log.next_seq(),
            next,
            "a second open (no appends in between) disagrees with the first"
        );
        for (seq, bytes) in &read_back {
            let r = log
                .read(*seq)
                .unwrap_or_else(|e| panic!("seq {seq} readable in the first open, now: {e}"));
            assert!(r.payload() == bytes.as_slice(), "seq {seq} changed");
        }
        // Appends continue the log and survive a reopen.
        let appended = log.append(b"after garbage");
        if let Ok(seq) = appended {
            assert_eq!(seq, next, "append after recovery continues the log");
        }
        let closed = m.close();
        drop((m, log));
        if let Err(e) = closed {
            return format!("recovered {next} records, close after append failed: {e}");
        }
        let (m, log) = open(root);
        let expected = next + u64::from(appended.is_ok());
        assert_eq!(log.next_seq(), expected, "after append ({appended:?})");
        if appended.is_ok() {
            assert_eq!(log.read(next).unwrap().payload(), b"after garbage");
        }
        for (seq, bytes) in &read_back {
            assert!(log.read(*seq).unwrap().payload() == bytes.as_slice());
        }
        m.close().unwrap();
        format!(
            "recovered {next} records ({readable} readable), append {}",
            if appended.is_ok() { "ok" } else { "refused" }
        )
    }));
    match result {
        Ok(s) => s,
        Err(p) => panic!("{}", panic_message(&p)),
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else if entry.file_name() != "LOCK" {
            out.push(entry.path());
        }
    }
}

/// Every file of a root, damaged in many ways, one at a time: opening never panics, and a log
/// that opens never returns wrong data and reopens to the same state.
#[test]
fn random_damage_to_any_file_never_panics_or_lies() {
    let fx = build();
    let mut files = Vec::new();
    files_under(&fx.root, &mut files);
    files.sort();
    let seed = 0xC0FF_EE00_D15E_A5E5;
    let mut rng = Rng(seed);
    let scratch = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut failures = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&fx.root).unwrap().to_path_buf();
        for kind in 0..10 {
            n += 1;
            let root = scratch.path().join(format!("r{n}"));
            copy_dir(&fx.root, &root);
            let target = root.join(&rel);
            let mut bytes = fs::read(&target).unwrap();
            let len = bytes.len() as u64;
            let what = match kind {
                0 => {
                    let at = rng.below(len);
                    if len > 0 {
                        bytes[at as usize] ^= 1 << rng.below(8);
                    }
                    format!("flip a bit at {at}")
                }
                1 => {
                    for _ in 0..8 {
                        let at = rng.below(len) as usize;
                        if len > 0 {
                            bytes[at] = rng.next() as u8;
                        }
                    }
                    "scribble 8 bytes".to_string()
                }
                2 => {
                    let page = rng.below(len.div_ceil(4096)) * 4096;
                    let end = (page + 4096).min(len);
                    bytes[page as usize..end as usize].fill(0);
                    format!("zero page at {page}")
                }
                3 => {
                    let to = rng.below(len);
                    bytes.truncate(to as usize);
                    format!("truncate to {to}")
                }
                4 => {
                    bytes.clear();
                    "truncate to 0".to_string()
                }
                5 => {
                    bytes = rng.bytes(len as usize);
                    "replace with garbage of the same length".to_string()
                }
                6 => {
                    let at = rng.below(len + 1) as usize;
                    let junk = rng.bytes(64);
                    bytes.splice(at..at, junk);
                    format!("insert 64 garbage bytes at {at}")
                }
                7 => {
                    bytes.extend(rng.bytes(100));
                    "append 100 garbage bytes".to_string()
                }
                8 => {
                    let at = rng.below(len.saturating_sub(8)) as usize;
                    if len >= 8 {
                        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
                    }
                    format!("write u64::MAX at {at}")
                }
                _ => {
                    fs::remove_file(&target).unwrap();
                    "delete".to_string()
                }
            };
            if kind != 9 {
                fs::write(&target, &bytes).unwrap();
            }
            let label = format!("{} ({len} bytes): {what}", rel.display());
            match catch_unwind(AssertUnwindSafe(|| open_and_check(&root, &fx.model))) {
                Ok(outcome) => println!("{label}: {outcome}"),
                Err(p) => failures.push(format!("{label}: {}", panic_message(&p))),
            }
            let _ = fs::remove_dir_all(&root);
        }
    }
    println!("{n} damaged roots opened, {} failures", failures.len());
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}

/// The active segment's header is damaged (zeroed). Recovery takes the segment for a blank
/// prepared one and reuses it as the new active segment at the same base sequence, reporting the
/// log as ending at the previous segment. Whatever it decides, two opens in a row must agree: the
/// old frames (still in the file, with an older epoch, starting right after the new header) must
/// not reappear when the next open scans the segment.
#[test]
fn zeroed_header_of_active_segment_recovers_stably() {
    let fx = build();
    let active = fx.active();
    let mut bytes = fs::read(&active.path).unwrap();
    bytes[..HEADER as usize].fill(0);
    fs::write(&active.path, &bytes).unwrap();
    let outcome = open_and_check(&fx.root, &fx.model);
    println!("zeroed active header: {outcome}");
}

// ------------------------------------------------------------------ (f) versions and foreign roots

fn write_root_field(root: &Path, at: usize, value: &[u8]) {
    let path = root.join("aof2.root");
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 64);
    bytes[at..at + value.len()].copy_from_slice(value);
    let crc = aof2::format::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    fs::write(&path, bytes).unwrap();
}

fn fresh_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    m.close().unwrap();
    drop(m);
    (dir, root)
}

#[test]
fn root_from_a_newer_version_is_refused() {
    let (_dir, root) = fresh_root();
    write_root_field(&root, 8, &99u16.to_le_bytes());
    match AofManager::open(ManagerConfig::new(&root)) {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => {
            assert_eq!(found, 99);
            assert_eq!(supported, aof2::format::FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn foreign_directory_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"not an aof2 root").unwrap();
    match AofManager::open(ManagerConfig::new(dir.path())) {
        Err(e @ Error::NotAof2File { .. }) => assert_eq!(e.kind(), ErrorKind::Corruption),
        other => panic!("expected NotAof2File, got {other:?}"),
    }
    assert!(
        !dir.path().join("aof2.root").exists() && !dir.path().join("LOCK").exists(),
        "nothing was written into the foreign directory"
    );
}

#[test]
fn damaged_root_files_are_refused() {
    // Wrong magic (with a valid CRC): not an aof2 root.
    let (_d1, root) = fresh_root();
    write_root_field(&root, 0, b"NOTAROOT");
    assert!(matches!(
        AofManager::open(ManagerConfig::new(&root)),
        Err(Error::NotAof2File { .. })
    ));
    // Wrong size.
    let (_d2, root) = fresh_root();
    fs::write(root.join("aof2.root"), [0u8; 10]).unwrap();
    assert!(matches!(
        AofManager::open(ManagerConfig::new(&root)),
        Err(Error::NotAof2File { .. })
    ));
    // Bad CRC: corruption.
    let (_d3, root) = fresh_root();
    flip(&root.join("aof2.root"), 20);
    let e = AofManager::open(ManagerConfig::new(&root)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
}

fn set_version_fixed(path: &Path, struct_len: usize, from_end: bool, version: u16) {
    let mut bytes = fs::read(path).unwrap();
    let start = if from_end {
        bytes.len() - struct_len
    } else {
        0
    };
    let s = &mut bytes[start..start + struct_len];
    s[8..10].copy_from_slice(&version.to_le_bytes());
    let crc = aof2::format::crc32c(&s[..struct_len - 4]);
    s[struct_len - 4..].copy_from_slice(&crc.to_le_bytes());
    fs::write(path, bytes).unwrap();
}

#[test]
fn segments_and_manifest_from_a_newer_version_are_refused() {
    // Header of a sealed segment.
    let fx = build();
    set_version_fixed(&fx.sealed()[0].path, 128, false, 7);
    let m = AofManager::open(ManagerConfig::new(&fx.root)).unwrap();
    match m.open_log(NAME, config()) {
        Err(Error::UnsupportedVersion { found: 7, .. }) => {}
        other => panic!("sealed segment of version 7: {other:?}"),
    }
    drop(m);
    // Header of the active segment.
    let fx = build();
    set_version_fixed(&fx.active().path, 128, false, 7);
    let m = AofManager::open(ManagerConfig::new(&fx.root)).unwrap();
    match m.open_log(NAME, config()) {
        Err(Error::UnsupportedVersion { found: 7, .. }) => {}
        other => panic!("active segment of version 7: {other:?}"),
    }
    drop(m);
    // Manifest WAL header.
    let fx = build();
    set_version_fixed(&manifest_wal(&fx.root), 32, false, 7);
    let m = AofManager::open(ManagerConfig::new(&fx.root)).unwrap();
    match m.open_log(NAME, config()) {
        Err(Error::UnsupportedVersion { found: 7, .. }) => {}
        other => panic!("manifest WAL of version 7: {other:?}"),
    }
}

/// The manifest of a log is gone but its segment files are still there. Opening the log must not
/// silently create a new, empty log over them (and it must never truncate an existing segment
/// file): refusing to open, or recovering the records, are both acceptable.
#[test]
fn missing_manifest_never_destroys_existing_segments() {
    let fx = build();
    let manifest = fx.root.join("logs").join(NAME).join("manifest");
    fs::remove_dir_all(&manifest).unwrap();
    let sizes: Vec<(PathBuf, u64)> = fx
        .sealed()
        .iter()
        .map(|s| (s.path.clone(), fs::metadata(&s.path).unwrap().len()))
        .collect();
    let m = AofManager::open(ManagerConfig::new(&fx.root)).unwrap();
    let outcome = m.open_log(NAME, config());
    for (path, len) in &sizes {
        let now = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert_eq!(
            now,
            *len,
            "opening the log ({:?}) rewrote {}",
            outcome.as_ref().map(|l| l.next_seq()),
            path.display()
        );
    }
    if let Ok(log) = outcome {
        assert!(
            log.next_seq() > 0,
            "a log with {} records on disk was silently recreated empty",
            fx.model.len()
        );
    }
}

// ------------------------------------------------------------------ crash windows in the manifest

/// `ManifestLog::create` writes the WAL header (synced) and only then appends `LogCreated`. A
/// crash between the two (kill -9 or power loss during the very first `open_log` of a name)
/// leaves `wal-0000000000000000` holding just its 32-byte header. The log never existed, so
/// opening it again must simply create it; instead recovery refuses it forever ("manifest has no
/// LogCreated edit").
#[test]
fn crash_after_manifest_header_before_log_created_leaves_log_creatable() {
    let (_dir, root) = fresh_root();
    let log_dir = root.join("logs").join(NAME);
    fs::create_dir_all(log_dir.join("segments")).unwrap();
    fs::create_dir_all(log_dir.join("manifest")).unwrap();
    fs::write(
        log_dir.join("manifest").join("wal-0000000000000000"),
        aof2::format::manifest::encode_wal_header(0),
    )
    .unwrap();
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m
        .open_log(NAME, config())
        .expect("a log whose creation was interrupted can be created");
    assert_eq!(log.next_seq(), 0);
    assert_eq!(log.append(b"first").unwrap(), 0);
    m.close().unwrap();
}

/// A torn final WAL record (crash mid-append) makes the next open move to a fresh generation:
/// `ManifestLog::open` creates `wal-<g+1>` first and only then writes the snapshot that makes the
/// torn `wal-<g>` obsolete. A crash between the two leaves a torn record in a WAL that is no
/// longer the last one, which the next open rejects as corruption ("torn record before the last
/// WAL generation"): the log can never be opened again.
#[test]
fn crash_while_recovering_a_torn_manifest_wal_leaves_log_openable() {
    let fx = build();
    let manifest_dir = fx.root.join("logs").join(NAME).join("manifest");
    let wal = manifest_wal(&fx.root);
    let generation = u64::from_str_radix(
        wal.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_prefix("wal-")
            .unwrap(),
        16,
    )
    .unwrap();
    // The torn append: half of a record.
    let record =
        aof2::format::manifest::encode_wal_record(&aof2::format::manifest::Edit::SegmentDropped {
            segment_id: 1 << 40,
        });
    let mut bytes = fs::read(&wal).unwrap();
    bytes.extend_from_slice(&record[..record.len() / 2]);
    fs::write(&wal, &bytes).unwrap();
    // The interrupted open: the next generation exists (header only), no new snapshot yet.
    fs::write(
        manifest_dir.join(format!("wal-{:016x}", generation + 1)),
        aof2::format::manifest::encode_wal_header(generation + 1),
    )
    .unwrap();

    let (m, log) = fx.open();
    assert_eq!(log.next_seq(), fx.model.len() as u64);
    assert_reads(&log, &fx.model, 0..fx.model.len() as u64);
    m.close().unwrap();
}

// ------------------------------------------------------------------ a seal the manifest missed

/// Every edit of the log's manifest, in order (snapshot, then each WAL generation).
fn manifest_edits(dir: &Path) -> Vec<aof2::format::manifest::Edit> {
    use aof2::format::manifest::{WAL_HEADER_BYTES, WalRead, decode_snapshot, decode_wal_record};
    let mut edits = Vec::new();
    if let Ok(bytes) = fs::read(dir.join("snapshot")) {
        edits.extend(decode_snapshot(&bytes).unwrap().1);
    }
    let mut wals: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .collect();
    wals.sort();
    for wal in wals {
        let bytes = fs::read(&wal).unwrap();
        let mut at = WAL_HEADER_BYTES;
        while let WalRead::Edit(edit, used) = decode_wal_record(&bytes[at..]).unwrap() {
            edits.push(edit);
            at += used;
        }
    }
    edits
}

/// A kill between a seal's footer (written, file truncated) and its `SegmentSealed` edit leaves
/// a segment that is sealed on disk but not in the manifest, its frames maybe only in the page
/// cache (a `None` log seals without syncing). Recovery records the seal. An `Always` open syncs
/// the file first, so its durable watermark covers the segment; a `None` open does not wait for
/// that writeback (`seal_syncs_deferred`), its watermark stays below the segment until a flush,
/// and the flush syncs it. Either way every record reads back and a later open finds the seal
/// recorded.
#[test]
fn a_seal_the_manifest_missed_is_synced_before_the_watermark_covers_it() {
    use aof2::format::manifest::{Edit, encode_wal_header, encode_wal_record};
    for durability in [Durability::None, Durability::Always] {
        let (_dir, root) = fresh_root();
        let manager_config = || ManagerConfig {
            tier1_enabled: false,
            ..ManagerConfig::new(&root)
        };
        let log_config = LogConfig {
            durability,
            ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
        };
        let m = AofManager::open(manager_config()).unwrap();
        let log = m.open_log(NAME, log_config.clone()).unwrap();
        let mut model = Vec::new();
        let sealed = loop {
            let seq = model.len() as u64;
            assert_eq!(log.append(&payload(seq)).unwrap(), seq);
            model.push(payload(seq));
            let sealed: Vec<_> = m
                .log_info(&log)
                .segments
                .into_iter()
                .filter(|s| s.state == SegmentState::Sealed)
                .collect();
            if sealed.len() >= 2 {
                break sealed;
            }
        };
        log.close().unwrap();
        m.close().unwrap();
        drop((log, m));

        // The manifest as the kill left it: the last seal's edit never made it.
        // (The last seal recorded: one more may have finished since `sealed` was listed.)
        let manifest = root.join("logs").join(NAME).join("manifest");
        let all = manifest_edits(&manifest);
        let missed = all
            .iter()
            .filter_map(|e| match e {
                Edit::SegmentSealed(s) => Some(*s),
                _ => None,
            })
            .next_back()
            .unwrap();
        assert!(missed.segment_id >= sealed.last().unwrap().id);
        let missed_id = missed.segment_id;
        let edits: Vec<Edit> = all
            .into_iter()
            .filter(|e| !matches!(e, Edit::SegmentSealed(s) if s.segment_id == missed_id))
            .collect();
        fs::remove_dir_all(&manifest).unwrap();
        fs::create_dir_all(&manifest).unwrap();
        let mut wal = encode_wal_header(0).to_vec();
        for edit in &edits {
            wal.extend(encode_wal_record(edit));
        }
        fs::write(manifest.join("wal-0000000000000000"), wal).unwrap();

        let m = AofManager::open(manager_config()).unwrap();
        let log = m.open_log(NAME, log_config.clone()).unwrap();
        let report = m.recovery_report(NAME).unwrap();
        let next = model.len() as u64;
        assert_eq!(log.next_seq(), next, "{durability:?}: {report:?}");
        assert!(
            report.sealed_segments >= 2,
            "{durability:?}: the seal found on disk is trusted: {report:?}"
        );
        assert_eq!(
            report.scanned_segments, 1,
            "{durability:?}: only the active segment is scanned: {report:?}"
        );
        if durability == Durability::None {
            assert_eq!(report.seal_syncs_deferred, 1, "{report:?}");
            assert!(
                log.durable_watermark() <= missed.base_seq,
                "the watermark ({}) covers a segment nobody synced (from {}): {report:?}",
                log.durable_watermark(),
                missed.base_seq
            );
            log.flush().unwrap();
        } else {
            assert_eq!(report.seal_syncs_deferred, 0, "{report:?}");
        }
        assert_eq!(log.durable_watermark(), next, "{durability:?}: {report:?}");
        assert_reads(&log, &model, 0..next);
        let info = m.log_info(&log);
        assert_eq!(
            info.segments
                .iter()
                .find(|s| s.id == missed_id)
                .map(|s| s.state),
            Some(SegmentState::Sealed),
            "{durability:?}"
        );
        log.close().unwrap();
        m.close().unwrap();
        drop((log, m));

        let m = AofManager::open(manager_config()).unwrap();
        let log = m.open_log(NAME, log_config).unwrap();
        let report = m.recovery_report(NAME).unwrap();
        assert_eq!(report.seal_syncs_deferred, 0, "{durability:?}: {report:?}");
        assert_eq!(log.durable_watermark(), next, "{durability:?}: {report:?}");
        assert_reads(&log, &model, 0..next);
        m.close().unwrap();
    }
}
