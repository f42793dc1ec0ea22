//! Tiering with real files: sealed segments compressed into Tier 1 (`logs/<name>/tier1/<id>.t1`),
//! the global Tier 0 budget and its eviction, backpressure before an append writes anything,
//! readers racing eviction, hydration of segments read repeatedly, damaged copies in either tier,
//! and the zstd level policy.
//!
//! Layout (docs/format.md): a `.t1` file is a 64-byte Tier 1 header, the 128-byte segment header
//! copy, zstd frames from byte 192, a frame index of 32-byte entries, the segment tail copy and a
//! 64-byte Tier 1 footer; a sealed `.seg` ends with a 96-byte footer.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use aof2::{
    Aof, AofManager, Compression, Durability, Error, ErrorKind, LogConfig, ManagerConfig, Record,
    SegmentInfo, SegmentState, Tier, TierLocation,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

use support::copy_dir;

mod support;

const NAME: &str = "events";
const SEGMENT_BYTES: u64 = 64 * 1024;
/// Where the first zstd frame of a Tier 1 file starts.
const T1_FRAMES_OFFSET: u64 = 192;
const T1_FOOTER: u64 = 64;
const T1_FRAME_ENTRY: u64 = 32;
const SEGMENT_FOOTER: u64 = 96;
/// Generous bound for background work (compression, hydration) in a loaded debug build.
const BACKGROUND: Duration = Duration::from_secs(30);

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
    }
}

fn manager_config(root: &Path) -> ManagerConfig {
    ManagerConfig {
        compress_threads: 2,
        ..ManagerConfig::new(root)
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Payload of `len` bytes for record `seq` of stream `salt`: the sequence first (when it fits),
/// then words picked at random (compressible like log lines, but different for every record), so
/// a record read from the wrong place, tier or frame cannot match.
fn payload_of(salt: u64, seq: u64, len: usize) -> Vec<u8> {
    const WORDS: [&[u8]; 16] = [
        b"request ",
        b"user=",
        b"GET ",
        b"/api/v1/",
        b"status=200 ",
        b"latency_ms=",
        b"ok ",
        b"orders ",
        b"id=",
        b"shard ",
        b"retry ",
        b"cache-hit ",
        b"POST ",
        b"region=eu ",
        b"trace=",
        b"\n",
    ];
    let mut x = splitmix(seq ^ salt.rotate_left(40));
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        x = splitmix(x);
        v.extend_from_slice(WORDS[(x & 15) as usize]);
        v.extend_from_slice(format!("{}", (x >> 8) % 1000).as_bytes());
    }
    v.truncate(len);
    let id = seq.to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&id[..n]);
    v
}

/// Record `seq` of the single-log tests: sizes 0, 1..=7 and up to 3000 bytes.
fn payload(seq: u64) -> Vec<u8> {
    let len = match seq % 13 {
        0 => 0,
        1 => 1 + (seq % 7) as usize,
        _ => (splitmix(seq) % 3000) as usize,
    };
    payload_of(0, seq, len)
}

/// Append `payload(seq)` records (every seventh operation a batch of three) until about `bytes`
/// of payload are written.
fn fill(log: &Aof, model: &mut Vec<Vec<u8>>, bytes: usize) {
    let mut written = 0;
    while written < bytes {
        let seq = model.len() as u64;
        if seq % 7 == 3 {
            let batch: Vec<Vec<u8>> = (seq..seq + 3).map(payload).collect();
            assert_eq!(log.append_batch(&batch).unwrap(), seq);
            written += batch.iter().map(Vec::len).sum::<usize>();
            model.extend(batch);
        } else {
            let p = payload(seq);
            assert_eq!(log.append(&p).unwrap(), seq);
            written += p.len();
            model.push(p);
        }
    }
}

/// Every record by `read(seq)` and by one `reader(0)` pass, byte for byte.
fn check_all(log: &Aof, model: &[Vec<u8>]) {
    for (seq, want) in model.iter().enumerate() {
        let r = log
            .read(seq as u64)
            .unwrap_or_else(|e| panic!("read {seq}: {e}"));
        assert!(
            r.payload() == want.as_slice(),
            "seq {seq}: {} bytes read, want {}",
            r.len(),
            want.len()
        );
    }
    let mut n = 0;
    for r in log.reader(0) {
        let r = r.unwrap_or_else(|e| panic!("reader at {n}: {e}"));
        assert_eq!(r.seq(), n as u64);
        assert!(r.payload() == model[n].as_slice(), "reader seq {n} differs");
        n += 1;
    }
    assert_eq!(n, model.len(), "reader(0) yields every record");
}

fn log_dir(root: &Path) -> PathBuf {
    root.join("logs").join(NAME)
}

fn t1_path(root: &Path, id: u64) -> PathBuf {
    log_dir(root).join("tier1").join(format!("{id:016x}.t1"))
}

fn sealed(m: &AofManager, log: &Aof) -> Vec<SegmentInfo> {
    m.log_info(log)
        .segments
        .into_iter()
        .filter(|s| s.state == SegmentState::Sealed)
        .collect()
}

fn segment(m: &AofManager, log: &Aof, id: u64) -> SegmentInfo {
    m.log_info(log)
        .segments
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("segment {id} not in log_info"))
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn open(root: &Path, config: ManagerConfig) -> (AofManager, Aof) {
    let m = AofManager::open(ManagerConfig {
        root: root.to_path_buf(),
        ..config
    })
    .expect("open root");
    let log = m.open_log(NAME, log_config()).expect("open log");
    (m, log)
}

fn close(m: AofManager, log: Aof) {
    m.close().expect("close");
    drop(log);
    drop(m);
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x41;
    fs::write(path, bytes).unwrap();
}

/// A log of ~`bytes` of records, every sealed segment compressed: (dir, root, manager, log,
/// model). `frame_bytes` is the Tier 1 frame target.
fn compressed_log(
    bytes: usize,
    frame_bytes: usize,
) -> (tempfile::TempDir, PathBuf, AofManager, Aof, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (m, log) = open(
        &root,
        ManagerConfig {
            tier1_frame_bytes: frame_bytes,
            ..manager_config(&root)
        },
    );
    let mut model = Vec::new();
    fill(&log, &mut model, bytes);
    assert!(
        m.wait_for_tier1(&log, BACKGROUND),
        "compression did not finish: {:?}",
        m.tier_stats()
    );
    (dir, root, m, log, model)
}

/// Append until the active segment is one prepared in a kept (evicted) file (header flag bit 0
/// of byte 12), within `max_rolls` rollovers. Returns that segment.
fn roll_into_a_reused_file(
    m: &AofManager,
    log: &Aof,
    model: &mut Vec<Vec<u8>>,
    max_rolls: usize,
) -> SegmentInfo {
    let mut active = m.log_info(log).segments.last().unwrap().clone();
    let mut rolls = 0;
    while fs::read(&active.path).unwrap()[12] & 1 == 0 {
        let before = active.id;
        while active.id == before {
            fill(log, model, 4 << 10);
            active = m.log_info(log).segments.last().unwrap().clone();
        }
        rolls += 1;
        assert!(
            rolls <= max_rolls,
            "no reused file became the active segment"
        );
    }
    active
}

// ------------------------------------------------------------------ 1. round trip

#[test]
fn round_trip_through_tier1_evict_and_reopen() {
    let (_dir, root, m, log, mut model) = compressed_log(3 << 20, 256 << 10);
    let info = m.log_info(&log);
    let sealed_before = sealed(&m, &log);
    assert!(sealed_before.len() >= 40, "{info:?}");
    for s in &sealed_before {
        assert_eq!(s.tier, TierLocation::Tier0And1, "segment {}: {s:?}", s.id);
        assert!(s.tier1_bytes > 0, "{s:?}");
        assert!(
            s.tier1_bytes < s.file_bytes,
            "compressible records: {} bytes in Tier 1 for {} in Tier 0",
            s.tier1_bytes,
            s.file_bytes
        );
        assert!(s.path.is_file() && t1_path(&root, s.id).is_file(), "{s:?}");
        assert!(s.compression_ratio().is_some_and(|r| r > 1.0), "{s:?}");
    }
    let active = info.segments.last().unwrap();
    assert_eq!(active.state, SegmentState::Active);
    assert_eq!(active.tier, TierLocation::Tier0);

    let before = m.tier_stats();
    let freed = m.evict_tier0(&log).unwrap();
    let file_bytes: u64 = sealed_before.iter().map(|s| s.file_bytes).sum();
    assert_eq!(freed, file_bytes, "every sealed segment is released");
    let after = m.tier_stats();
    assert!(
        after.tier0_used_bytes < before.tier0_used_bytes
            && after.tier0_used_bytes <= 3 * SEGMENT_BYTES,
        "only the active and the prepared segments remain: {before:?} -> {after:?}"
    );
    for s in sealed(&m, &log) {
        assert_eq!(s.tier, TierLocation::Tier1, "{s:?}");
        assert!(!s.path.exists(), "{} should be deleted", s.path.display());
        assert!(t1_path(&root, s.id).is_file());
    }
    assert_eq!(m.evict_tier0(&log).unwrap(), 0, "nothing left to evict");

    // Reads: every record from Tier 1, then the iteration crosses into the active segment.
    check_all(&log, &model);
    assert_eq!(m.tier_stats().compress_failures, 0);
    // Reading may hydrate segments back: release them again, and note where every segment is
    // once the manager has stopped (a hydration already queued may still have run).
    m.evict_tier0(&log).unwrap();
    m.close().unwrap();
    let at_close: Vec<(u64, TierLocation)> =
        sealed(&m, &log).iter().map(|s| (s.id, s.tier)).collect();
    drop((m, log));
    let tier1_only = at_close
        .iter()
        .filter(|(_, t)| *t == TierLocation::Tier1)
        .count();
    assert!(tier1_only >= sealed_before.len() / 2, "{at_close:?}");

    let (m, log) = open(&root, manager_config(&root));
    let report = m.recovery_report(NAME).unwrap();
    assert_eq!(report.tier1_segments, tier1_only, "{report:?}");
    assert_eq!(report.sealed_segments, sealed_before.len(), "{report:?}");
    assert!(
        report.quarantined.is_empty() && report.tier0_dropped.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.compressions_restarted, 0, "{report:?}");
    let reopened: Vec<(u64, TierLocation)> =
        sealed(&m, &log).iter().map(|s| (s.id, s.tier)).collect();
    assert_eq!(reopened, at_close, "every segment is where it was");
    assert_eq!(log.next_seq(), model.len() as u64);
    check_all(&log, &model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!(verify.records, model.len() as u64);
    // The log keeps growing after the reopen.
    fill(&log, &mut model, 200 << 10);
    check_all(&log, &model);
    close(m, log);
}

#[test]
fn evict_tier0_is_counted_in_tier_stats() {
    let (_dir, _root, m, log, _model) = compressed_log(1 << 20, 256 << 10);
    let before = m.tier_stats();
    let evicted = sealed(&m, &log).len() as u64;
    let freed = m.evict_tier0(&log).unwrap();
    assert!(freed > 0);
    let after = m.tier_stats();
    assert!(
        after.evictions >= before.evictions + evicted
            && after.evicted_bytes >= before.evicted_bytes + freed,
        "TierStats::evictions counts \"Tier 0 copies evicted since open\": {evicted} segments \
         ({freed} bytes) were evicted by AofManager::evict_tier0, stats went from {} ({} bytes) \
         to {} ({} bytes)",
        before.evictions,
        before.evicted_bytes,
        after.evictions,
        after.evicted_bytes
    );
    close(m, log);
}

// ------------------------------------------------------------------ 2. budget invariant

#[derive(Debug, Clone)]
enum Op {
    Append {
        log: usize,
        len: usize,
    },
    Batch {
        log: usize,
        sizes: Vec<usize>,
    },
    /// `n` records of 2..6 KiB: fills several segments at once.
    Burst {
        log: usize,
        n: usize,
    },
    Read {
        log: usize,
        k: u32,
    },
    Evict {
        log: usize,
    },
    Reopen,
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        2 => 1..8usize,
        6 => 0..8192usize,
        1 => Just(8191usize),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, size()).prop_map(|(log, len)| Op::Append { log, len }),
        4 => (0..3usize, vec(size(), 1..8)).prop_map(|(log, sizes)| Op::Batch { log, sizes }),
        4 => (0..3usize, 16..96usize).prop_map(|(log, n)| Op::Burst { log, n }),
        6 => (0..3usize, any::<u32>()).prop_map(|(log, k)| Op::Read { log, k }),
        1 => (0..3usize).prop_map(|log| Op::Evict { log }),
        1 => Just(Op::Reopen),
    ]
}

const BUDGET_SEGMENTS: u64 = 8;

fn budget_config(root: &Path) -> ManagerConfig {
    ManagerConfig {
        tier0_max_bytes: BUDGET_SEGMENTS * SEGMENT_BYTES,
        admission_timeout: Duration::from_millis(500),
        ..manager_config(root)
    }
}

fn err(e: Error) -> TestCaseError {
    TestCaseError::fail(format!("{e} ({:?})", e.kind()))
}

/// Append a batch; `Backpressure` (compression behind) must write nothing and is retried.
fn append_retrying(log: &Aof, payloads: &[Vec<u8>]) -> Result<u64, TestCaseError> {
    for _ in 0..60 {
        let before = log.next_seq();
        match log.append_batch(payloads) {
            Ok(first) => return Ok(first),
            Err(e) if e.kind() == ErrorKind::Backpressure => {
                prop_assert_eq!(
                    log.next_seq(),
                    before,
                    "Backpressure wrote something: {}",
                    e
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(e)),
        }
    }
    Err(TestCaseError::fail("Backpressure did not clear in ~30 s"))
}

fn check_model(m: &AofManager, log: &Aof, model: &[Vec<u8>]) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.next_seq(), model.len() as u64);
    let mut n = 0;
    for r in log.reader(0) {
        let r = r.map_err(|e| TestCaseError::fail(format!("{}: read {n}: {e}", log.name())))?;
        prop_assert!(
            r.payload() == model[n].as_slice(),
            "{} seq {}",
            log.name(),
            n
        );
        n += 1;
    }
    prop_assert_eq!(n, model.len());
    let verify = m.verify_log(log);
    prop_assert!(verify.is_clean(), "{:?}", verify);
    prop_assert_eq!(verify.records, model.len() as u64);
    Ok(())
}

/// What the cases of the budget property exercised, summed.
#[derive(Debug, Default)]
struct Exercised {
    evictions: AtomicU64,
    compressed: AtomicU64,
    tier1_reads_after_reopen: AtomicU64,
}

fn run_budget(logs: usize, ops: Vec<Op>, exercised: &Exercised) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let names: Vec<String> = (0..logs).map(|i| format!("log{i}")).collect();
    let open_all = || -> Result<(AofManager, Vec<Aof>), TestCaseError> {
        let m = AofManager::open(budget_config(root)).map_err(err)?;
        let handles = names
            .iter()
            .map(|n| m.open_log(n, log_config()).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((m, handles))
    };
    let max = BUDGET_SEGMENTS * SEGMENT_BYTES;
    let (mut m, mut handles) = open_all()?;
    let mut models: Vec<Vec<Vec<u8>>> = vec![Vec::new(); logs];
    for op in ops {
        match op {
            Op::Append { log, len } => {
                let i = log % logs;
                let p = payload_of(i as u64, models[i].len() as u64, len);
                let seq = append_retrying(&handles[i], std::slice::from_ref(&p))?;
                prop_assert_eq!(seq, models[i].len() as u64);
                models[i].push(p);
            }
            Op::Batch { log, sizes } => {
                let i = log % logs;
                let base = models[i].len() as u64;
                let ps: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &len)| payload_of(i as u64, base + k as u64, len))
                    .collect();
                prop_assert_eq!(append_retrying(&handles[i], &ps)?, base);
                models[i].extend(ps);
            }
            Op::Burst { log, n } => {
                let i = log % logs;
                for _ in 0..n {
                    let seq = models[i].len() as u64;
                    let len = 2048 + (splitmix(seq) % 4096) as usize;
                    let p = payload_of(i as u64, seq, len);
                    prop_assert_eq!(append_retrying(&handles[i], std::slice::from_ref(&p))?, seq);
                    models[i].push(p);
                    let used = m.tier_stats().tier0_used_bytes;
                    prop_assert!(used <= max + SEGMENT_BYTES, "Tier 0 at {} of {}", used, max);
                }
            }
            Op::Read { log, k } => {
                let i = log % logs;
                if !models[i].is_empty() {
                    let seq = k as usize % models[i].len();
                    let r = handles[i].read(seq as u64).map_err(err)?;
                    prop_assert!(r.payload() == models[i][seq].as_slice(), "read {}", seq);
                }
            }
            Op::Evict { log } => {
                m.evict_tier0(&handles[log % logs]).map_err(err)?;
            }
            Op::Reopen => {
                exercised
                    .evictions
                    .fetch_add(m.tier_stats().evictions, Ordering::Relaxed);
                exercised
                    .compressed
                    .fetch_add(m.tier_stats().segments_compressed, Ordering::Relaxed);
                m.close().map_err(err)?;
                drop(handles);
                drop(m);
                (m, handles) = open_all()?;
                for (log, model) in handles.iter().zip(&models) {
                    prop_assert_eq!(log.next_seq(), model.len() as u64);
                }
            }
        }
        let stats = m.tier_stats();
        prop_assert!(
            stats.tier0_used_bytes <= max + SEGMENT_BYTES,
            "Tier 0 at {} of {} after {:?}",
            stats.tier0_used_bytes,
            max,
            stats
        );
    }
    let stats = m.tier_stats();
    prop_assert!(
        stats.tier0_peak_bytes <= max + SEGMENT_BYTES,
        "Tier 0 peaked at {} of {}",
        stats.tier0_peak_bytes,
        max
    );
    exercised
        .evictions
        .fetch_add(stats.evictions, Ordering::Relaxed);
    exercised
        .compressed
        .fetch_add(stats.segments_compressed, Ordering::Relaxed);
    for (log, model) in handles.iter().zip(&models) {
        check_model(&m, log, model)?;
    }
    m.close().map_err(err)?;
    drop(handles);
    drop(m);
    let (m, handles) = open_all()?;
    for (log, model) in handles.iter().zip(&models) {
        let in_tier1 = m
            .log_info(log)
            .segments
            .iter()
            .filter(|s| s.tier == TierLocation::Tier1)
            .count();
        exercised
            .tier1_reads_after_reopen
            .fetch_add(in_tier1 as u64, Ordering::Relaxed);
        check_model(&m, log, model)?;
    }
    let peak = m.tier_stats().tier0_peak_bytes;
    prop_assert!(peak <= max + SEGMENT_BYTES, "peak {} after reopen", peak);
    m.close().map_err(err)?;
    Ok(())
}

#[test]
fn tier0_budget_holds_across_logs_and_reopens() {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        max_shrink_iters: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let exercised = Exercised::default();
    runner
        .run(&(1..=3usize, vec(op(), 8..48)), |(logs, ops)| {
            run_budget(logs, ops, &exercised)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // The property is only worth something if the budget was actually under pressure.
    println!("{exercised:?}");
    assert!(
        exercised.evictions.load(Ordering::Relaxed) > 0
            && exercised.compressed.load(Ordering::Relaxed) > 0
            && exercised.tier1_reads_after_reopen.load(Ordering::Relaxed) > 0,
        "{exercised:?}"
    );
}

// ------------------------------------------------------------------ 3. backpressure

/// Append `payload(seq)` records until one fails; returns the error and how many succeeded.
fn append_until_refused(log: &Aof, limit: u64) -> (Error, u64) {
    let mut acked = 0;
    loop {
        match log.append(&payload(acked)) {
            Ok(seq) => {
                assert_eq!(seq, acked);
                acked += 1;
            }
            Err(e) => return (e, acked),
        }
        assert!(acked < limit, "no backpressure after {acked} records");
    }
}

#[test]
fn full_tier1_refuses_appends_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let config = ManagerConfig {
        tier0_max_bytes: 3 * SEGMENT_BYTES,
        tier1_max_bytes: 1,
        admission_timeout: Duration::from_millis(200),
        ..manager_config(&root)
    };
    let (m, log) = open(&root, config.clone());
    let (e, acked) = append_until_refused(&log, 2_000);
    assert_eq!(e.kind(), ErrorKind::Backpressure, "{e}");
    assert!(
        matches!(
            e,
            Error::Backpressure {
                tier: Tier::Tier1,
                ..
            }
        ),
        "Tier 1 is what is full: {e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("Tier 1 is full") && text.contains("nothing was written"),
        "{text}"
    );
    assert_eq!(log.next_seq(), acked, "the refused append wrote nothing");
    // A batch is refused as a whole, and again nothing moves.
    let batch: Vec<Vec<u8>> = (acked..acked + 3).map(payload).collect();
    let e = log.append_batch(&batch).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backpressure {
                tier: Tier::Tier1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(log.next_seq(), acked);
    let stats = m.tier_stats();
    assert!(stats.tier1_full, "{stats:?}");
    assert!(stats.admission_timeouts >= 2, "{stats:?}");
    assert_eq!(stats.segments_compressed, 0, "{stats:?}");
    assert!(stats.tier0_peak_bytes <= 3 * SEGMENT_BYTES, "{stats:?}");
    close(m, log);

    // What was acknowledged is exactly what is on disk: no partial record of a refused append.
    let (m, log) = open(&root, config);
    assert_eq!(log.next_seq(), acked);
    let model: Vec<Vec<u8>> = (0..acked).map(payload).collect();
    check_all(&log, &model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!(verify.records, acked);
    close(m, log);
}

#[test]
fn readers_pinning_tier0_refuse_appends_until_they_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (m, log) = open(
        &root,
        ManagerConfig {
            tier0_max_bytes: 4 * SEGMENT_BYTES,
            admission_timeout: Duration::from_millis(300),
            ..manager_config(&root)
        },
    );
    // Hold a record of every segment as soon as it is written to: none can be evicted.
    let mut pins: Vec<Record> = Vec::new();
    let mut acked = 0;
    let e = loop {
        match log.append(&payload(acked)) {
            Ok(seq) => {
                assert_eq!(seq, acked);
                acked += 1;
                pins.push(log.read(seq).unwrap());
            }
            Err(e) => break e,
        }
        assert!(acked < 2_000, "no backpressure after {acked} records");
    };
    assert_eq!(e.kind(), ErrorKind::Backpressure, "{e}");
    assert!(
        matches!(
            e,
            Error::Backpressure {
                tier: Tier::Tier0,
                ..
            }
        ),
        "Tier 0 is what is full: {e:?}"
    );
    assert!(e.to_string().contains("no Tier 0 room"), "{e}");
    assert_eq!(log.next_seq(), acked, "the refused append wrote nothing");
    assert!(m.wait_for_tier1(&log, BACKGROUND));
    assert!(!m.tier_stats().tier1_full);
    assert!(sealed(&m, &log).len() >= 2);
    assert_eq!(m.evict_tier0(&log).unwrap(), 0, "every segment is pinned");
    let e = log.append(&payload(acked)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Backpressure {
                tier: Tier::Tier0,
                ..
            }
        ),
        "{e:?}"
    );
    // The error says what holds the budget: the readers (not compression, which is done).
    let text = e.to_string();
    assert!(
        text.contains("by segments that readers hold") && !text.contains("without a Tier 1 copy"),
        "{text}"
    );
    assert_eq!(log.next_seq(), acked);
    for (seq, r) in pins.iter().enumerate() {
        assert_eq!(r.payload(), payload(seq as u64), "pinned record {seq}");
    }

    drop(pins);
    assert_eq!(
        log.append(&payload(acked)).unwrap(),
        acked,
        "dense after refusal"
    );
    acked += 1;
    let mut model: Vec<Vec<u8>> = (0..acked).map(payload).collect();
    fill(&log, &mut model, 300 << 10);
    check_all(&log, &model);
    let stats = m.tier_stats();
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.tier0_peak_bytes <= 4 * SEGMENT_BYTES, "{stats:?}");
    close(m, log);
}

// ------------------------------------------------------------------ 4. readers vs eviction

#[test]
fn readers_race_eviction_and_see_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (m, log) = open(
        &root,
        ManagerConfig {
            tier0_max_bytes: 8 * SEGMENT_BYTES,
            tier1_frame_bytes: 16 << 10,
            ..manager_config(&root)
        },
    );
    let mut model = Vec::new();
    fill(&log, &mut model, 1 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let manual_evictions = Arc::new(AtomicU64::new(0));
    let check = |r: &Record, seq: u64| {
        assert_eq!(r.seq(), seq);
        assert!(r.payload() == payload(seq).as_slice(), "seq {seq} differs");
    };
    std::thread::scope(|s| {
        // Writer.
        s.spawn(|| {
            let mut seq = log.next_seq();
            while !stop.load(Ordering::Relaxed) {
                match log.append(&payload(seq)) {
                    Ok(got) => {
                        assert_eq!(got, seq);
                        seq += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::Backpressure => {
                        assert_eq!(log.next_seq(), seq, "{e}");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("append {seq}: {e}"),
                }
            }
        });
        // Point readers with short scans.
        for t in 0..2u64 {
            let (log, stop, reads) = (&log, &stop, &reads);
            s.spawn(move || {
                let mut x = splitmix(t + 1);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = splitmix(x);
                    let seq = x % log.next_seq();
                    let r = log.read(seq).unwrap_or_else(|e| panic!("read {seq}: {e}"));
                    check(&r, seq);
                    i += 1;
                    if i.is_multiple_of(64) {
                        for (k, r) in log.reader(seq).take(300).enumerate() {
                            let r = r.unwrap_or_else(|e| panic!("scan from {seq}: {e}"));
                            check(&r, seq + k as u64);
                        }
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Full passes from the start, across Tier 1 and into the active segment.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let end = log.next_seq();
                let mut n = 0;
                for r in log.reader(0).take(end as usize) {
                    let r = r.unwrap_or_else(|e| panic!("full pass at {n}: {e}"));
                    check(&r, n);
                    n += 1;
                }
                assert_eq!(n, end);
            }
        });
        // Evictor.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if m.evict_tier0(&log).unwrap() > 0 {
                    manual_evictions.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
    });
    let stats = m.tier_stats();
    let manual = manual_evictions.load(Ordering::Relaxed);
    println!(
        "{} records, {} point reads, {manual} evict_tier0 calls that evicted, {stats:?}",
        log.next_seq(),
        reads.load(Ordering::Relaxed)
    );
    assert!(manual > 0 && stats.evictions > 0, "{stats:?}");
    assert!(reads.load(Ordering::Relaxed) > 100);
    assert_eq!(stats.compress_failures, 0, "{stats:?}");
    let end = log.next_seq();
    let model: Vec<Vec<u8>> = (0..end).map(payload).collect();
    check_all(&log, &model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!(verify.records, end);
    close(m, log);
}

// ------------------------------------------------------------------ 5. hydration

/// Read every record of `seg` in order, `passes` times, checking the bytes.
fn read_passes(log: &Aof, model: &[Vec<u8>], seg: &SegmentInfo, passes: usize) {
    for _ in 0..passes {
        for seq in seg.base_seq..seg.end_seq {
            let r = log.read(seq).unwrap_or_else(|e| panic!("read {seq}: {e}"));
            assert!(r.payload() == model[seq as usize].as_slice(), "seq {seq}");
        }
    }
}

/// Read `hot` in full `passes` times, with a pass over each of `others` in between (as other
/// readers would), so that no small cache of decompressed frames serves every pass of `hot`.
fn read_repeatedly(
    log: &Aof,
    model: &[Vec<u8>],
    hot: &SegmentInfo,
    others: &[SegmentInfo],
    passes: usize,
) {
    for _ in 0..passes {
        read_passes(log, model, hot, 1);
        for other in others {
            read_passes(log, model, other, 1);
        }
    }
}

#[test]
fn segment_read_repeatedly_is_hydrated_and_concurrent_cold_reads_agree() {
    let (_dir, root, m, log, model) = compressed_log(1 << 20, 16 << 10);
    let sealed_before = sealed(&m, &log);
    m.evict_tier0(&log).unwrap();
    let segs = sealed(&m, &log);
    assert!(segs.len() >= 14, "{segs:?}");
    assert!(segs.iter().all(|s| s.tier == TierLocation::Tier1));

    // Many threads read the same cold frame at once: one decompresses, all get the bytes.
    let cold = segs[5].clone();
    let barrier = Barrier::new(8);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (log, model, cold, barrier) = (&log, &model, &cold, &barrier);
            s.spawn(move || {
                barrier.wait();
                let seq = cold.base_seq + t % 3;
                let r = log.read(seq).unwrap_or_else(|e| panic!("read {seq}: {e}"));
                assert!(r.payload() == model[seq as usize].as_slice(), "seq {seq}");
                for (k, r) in log.reader(cold.base_seq).take(40).enumerate() {
                    let seq = cold.base_seq + k as u64;
                    assert!(r.unwrap().payload() == model[seq as usize].as_slice());
                }
            });
        }
    });

    let hot = segs[2].clone();
    let hot_len = sealed_before[2].file_bytes;
    assert!(t1_path(&root, hot.id).is_file());
    read_repeatedly(&log, &model, &hot, &segs[8..], 3);
    let hydrated = wait_until(Duration::from_secs(10), || {
        segment(&m, &log, hot.id).tier == TierLocation::Tier0And1
    });
    let stats = m.tier_stats();
    assert!(
        hydrated && stats.hydrations >= 1,
        "segment {} read 3 times over is still {:?}: {stats:?}",
        hot.id,
        segment(&m, &log, hot.id).tier
    );
    assert!(hot.path.is_file(), "{} rebuilt", hot.path.display());
    assert_eq!(segment(&m, &log, hot.id).file_bytes, hot_len);
    read_passes(&log, &model, &hot, 1);
    check_all(&log, &model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    close(m, log);

    // The hydration is durable in the manifest: the segment is in both tiers after a reopen.
    let (m, log) = open(&root, manager_config(&root));
    assert_eq!(segment(&m, &log, hot.id).tier, TierLocation::Tier0And1);
    let report = m.recovery_report(NAME).unwrap();
    assert!(report.tier0_dropped.is_empty(), "{report:?}");
    check_all(&log, &model);
    close(m, log);
}

/// 64 KiB segments with the default 256 KiB frame target are one Tier 1 frame each.
#[test]
fn single_frame_segment_read_repeatedly_is_hydrated() {
    let (_dir, _root, m, log, model) = compressed_log(1 << 20, 256 << 10);
    m.evict_tier0(&log).unwrap();
    let segs = sealed(&m, &log);
    let hot = segs[2].clone();
    assert_eq!(hot.tier, TierLocation::Tier1);
    read_repeatedly(&log, &model, &hot, &segs[8..], 3);
    let hydrated = wait_until(Duration::from_secs(5), || {
        segment(&m, &log, hot.id).tier == TierLocation::Tier0And1
    });
    assert!(
        hydrated,
        "segment {} read 3 times over is still {:?}: {:?}",
        hot.id,
        segment(&m, &log, hot.id).tier,
        m.tier_stats()
    );
    close(m, log);
}

// ------------------------------------------------------------------ 6. damaged copies

/// (compressed offset, compressed length, base seq, record count) of every frame of a `.t1` file,
/// decoded from the bytes as docs/format.md describes them.
fn t1_frames(path: &Path) -> Vec<(u64, u64, u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as u64;
    let le64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let footer = bytes.len() - T1_FOOTER as usize;
    assert_eq!(&bytes[footer..footer + 8], b"AOF2T1FT");
    let count = le32(footer + 12);
    let tail = le64(footer + 16);
    let index = tail - count * T1_FRAME_ENTRY;
    let frames: Vec<_> = (0..count)
        .map(|i| {
            let e = (index + i * T1_FRAME_ENTRY) as usize;
            (le64(e + 8), le32(e + 20), le64(e), le32(e + 16))
        })
        .collect();
    assert_eq!(frames[0].0, T1_FRAMES_OFFSET);
    frames
}

#[test]
fn damaged_tier1_frame_is_reported_and_isolated() {
    let (_dir, root, m, log, model) = compressed_log(1 << 20, 16 << 10);
    m.evict_tier0(&log).unwrap();
    let seg = sealed(&m, &log)[3].clone();
    close(m, log);

    let path = t1_path(&root, seg.id);
    let frames = t1_frames(&path);
    assert!(frames.len() >= 3, "{frames:?}");
    let (offset, len, base, count) = frames[0];
    assert_eq!(base, seg.base_seq);
    flip(&path, offset + len / 2);

    let (m, log) = open(&root, manager_config(&root));
    let report = m.recovery_report(NAME).unwrap();
    assert!(
        report.quarantined.is_empty(),
        "frames are not read at open: {report:?}"
    );
    let file_name = path.file_name().unwrap().to_str().unwrap();
    for seq in base..base + count {
        let e = log.read(seq).map(|r| r.len()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "read {seq}: {e}");
        assert!(e.to_string().contains(file_name), "{e}");
    }
    let e = log.reader(base).next().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption);
    // The other frames of the segment and every other segment still read.
    for (i, want) in model.iter().enumerate() {
        let seq = i as u64;
        if (base..base + count).contains(&seq) {
            continue;
        }
        let r = log.read(seq).unwrap_or_else(|e| panic!("read {seq}: {e}"));
        assert!(r.payload() == want.as_slice(), "seq {seq}");
    }
    assert_eq!(
        log.reader(base + count).count() as u64,
        model.len() as u64 - base - count
    );
    let verify = m.verify_log(&log);
    assert_eq!(verify.problems.len(), 1, "{verify:?}");
    let problem = &verify.problems[0];
    assert_eq!(problem.segment_id, seg.id, "{problem:?}");
    assert!(
        problem.location.contains(file_name),
        "{problem:?} names {file_name}"
    );
    assert_eq!(
        verify.records,
        model.len() as u64 - (seg.end_seq - seg.base_seq),
        "every other record verifies"
    );
    close(m, log);
}

#[test]
fn damaged_tier0_copy_falls_back_to_tier1() {
    let (_dir, root, m, log, model) = compressed_log(1 << 20, 256 << 10);
    let seg = sealed(&m, &log)[2].clone();
    assert_eq!(seg.tier, TierLocation::Tier0And1);
    close(m, log);
    let len = fs::metadata(&seg.path).unwrap().len();
    flip(&seg.path, len - SEGMENT_FOOTER + 40);

    let (m, log) = open(&root, manager_config(&root));
    let report = m.recovery_report(NAME).unwrap();
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.tier0_dropped.len(), 1, "{report:?}");
    assert_eq!(report.tier0_dropped[0].0, seg.id, "{report:?}");
    let info = segment(&m, &log, seg.id);
    assert_eq!(info.state, SegmentState::Sealed);
    assert_eq!(info.tier, TierLocation::Tier1);
    assert!(!seg.path.exists(), "the damaged copy is removed");
    check_all(&log, &model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!(verify.records, model.len() as u64);
    close(m, log);

    // Settled: another reopen drops nothing (the reads above may have hydrated the segment
    // from Tier 1, which rebuilds an intact Tier 0 copy).
    let (m, log) = open(&root, manager_config(&root));
    let report = m.recovery_report(NAME).unwrap();
    assert!(
        report.tier0_dropped.is_empty() && report.quarantined.is_empty(),
        "{report:?}"
    );
    let tier = segment(&m, &log, seg.id).tier;
    assert!(
        matches!(tier, TierLocation::Tier1 | TierLocation::Tier0And1),
        "{tier:?}"
    );
    check_all(&log, &model);
    close(m, log);
}

#[test]
fn damaged_or_missing_tier1_copy_is_dropped_and_made_again() {
    let (_dir, root, m, log, model) = compressed_log(1 << 20, 256 << 10);
    let segs = sealed(&m, &log);
    let (missing, damaged) = (segs[1].clone(), segs[3].clone());
    close(m, log);
    fs::remove_file(t1_path(&root, missing.id)).unwrap();
    let len = fs::metadata(t1_path(&root, damaged.id)).unwrap().len();
    flip(&t1_path(&root, damaged.id), len - T1_FOOTER + 20);

    let (m, log) = open(&root, manager_config(&root));
    let report = m.recovery_report(NAME).unwrap();
    assert!(report.quarantined.is_empty(), "{report:?}");
    let dropped: BTreeSet<u64> = report.tier1_dropped.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        dropped,
        BTreeSet::from([missing.id, damaged.id]),
        "{report:?}"
    );
    check_all(&log, &model);
    assert!(m.wait_for_tier1(&log, BACKGROUND), "{:?}", m.tier_stats());
    for s in [&missing, &damaged] {
        let info = segment(&m, &log, s.id);
        assert_eq!(info.tier, TierLocation::Tier0And1, "{info:?}");
        assert!(info.tier1_bytes > 0);
        assert!(t1_path(&root, s.id).is_file());
    }
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    // The new copies serve reads once Tier 0 lets go.
    m.evict_tier0(&log).unwrap();
    assert_eq!(segment(&m, &log, damaged.id).tier, TierLocation::Tier1);
    check_all(&log, &model);
    close(m, log);
}

// ------------------------------------------------------------------ 7. zstd level

#[test]
fn adaptive_level_stays_in_bounds_and_fixed_level_is_used() {
    for compression in [
        Compression::Adaptive { min: -3, max: 9 },
        Compression::Fixed(5),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let (m, log) = open(
            &root,
            ManagerConfig {
                compression,
                tier0_max_bytes: 8 * SEGMENT_BYTES,
                ..manager_config(&root)
            },
        );
        let (min, max) = compression.bounds();
        let mut model = Vec::new();
        let mut levels = BTreeSet::new();
        for _ in 0..20 {
            fill(&log, &mut model, 100 << 10);
            let level = m.tier_stats().compression_level;
            assert!((min..=max).contains(&level) && level != 0, "{level}");
            levels.insert(level);
        }
        assert!(m.wait_for_tier1(&log, BACKGROUND));
        for s in sealed(&m, &log) {
            let level = s.tier1_level.expect("compressed");
            match compression {
                Compression::Fixed(l) => assert_eq!(level, l, "{s:?}"),
                Compression::Adaptive { .. } => {
                    assert!((min..=max).contains(&level) && level != 0, "{s:?}")
                }
            }
        }
        if let Compression::Fixed(l) = compression {
            assert_eq!(levels, BTreeSet::from([l]));
        }
        check_all(&log, &model);
        close(m, log);
    }
}

// ------------------------------------------------------------------ recycled segment files

fn recycled_files(root: &Path) -> Vec<PathBuf> {
    (0..aof2::limits::RECYCLED_SEGMENTS_KEPT)
        .map(|k| log_dir(root).join("segments").join(format!("recycled-{k}")))
        .collect()
}

/// Reopen `root` and check that it holds exactly `model`, that recovery found nothing to cut
/// (left-over frames of a reused file are not a torn tail), and that appends continue.
fn reopen_and_check(root: &Path, model: &mut Vec<Vec<u8>>) {
    let (m, log) = open(root, manager_config(root));
    let report = m.recovery_report(NAME).unwrap();
    assert!(
        report.cut_tails.is_empty() && report.dropped_incomplete_frames == 0,
        "{report:?}"
    );
    assert_eq!(log.next_seq(), model.len() as u64, "{report:?}");
    check_all(&log, model);
    let verify = m.verify_log(&log);
    assert!(verify.is_clean(), "{verify:?}");
    fill(&log, model, SEGMENT_BYTES as usize * 3);
    check_all(&log, model);
    close(m, log);
}

/// Tier 0 eviction keeps evicted files to prepare later segments in, so appends write over an
/// older segment's frames. Whatever is left of those after the last record must never read as a
/// record: not after a clean reopen, and not from a crash image of the open log.
#[test]
fn evicted_segment_files_are_reused_and_leftovers_never_read_as_records() {
    let (dir, root, m, log, mut model) = compressed_log(2 << 20, 64 << 10);
    m.evict_tier0(&log).unwrap();
    for kept in recycled_files(&root) {
        assert!(
            kept.is_file(),
            "eviction keeps {} for reuse",
            kept.display()
        );
    }
    // The segments prepared ahead are used first, then the kept files.
    let active = roll_into_a_reused_file(&m, &log, &mut model, 4);
    assert!(log.stats().segments_recycled >= 1, "{:?}", log.stats());
    // The reused file still holds frames of its earlier segment after the new records.
    let bytes = fs::read(&active.path).unwrap();
    let end = 128 + active.record_bytes as usize + 32 * (active.end_seq - active.base_seq) as usize;
    assert!(end < 16 << 10, "{active:?}");
    assert!(
        bytes[32 << 10..48 << 10].iter().any(|&b| b != 0),
        "the reused file has left-over frames"
    );

    // A crash image: every file as the page cache holds it, taken while nothing runs.
    assert!(m.wait_for_tier1(&log, BACKGROUND));
    let deadline = Instant::now() + BACKGROUND;
    while log.stats().prepared_ready < aof2::limits::PREPARED_SEGMENTS_AHEAD as u64 {
        assert!(Instant::now() < deadline, "{:?}", log.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    let image = dir.path().join("image");
    copy_dir(&root, &image);
    let mut image_model = model.clone();
    reopen_and_check(&image, &mut image_model);
    reopen_and_check(&image, &mut image_model);

    close(m, log);
    for kept in recycled_files(&root) {
        assert!(!kept.exists(), "close deletes {}", kept.display());
    }
    reopen_and_check(&root, &mut model);
}

/// A log that stops rolling segments does not hold page cache in kept files for long.
#[test]
fn kept_files_of_an_idle_log_are_deleted() {
    let (_dir, root, m, log, mut model) = compressed_log(1 << 20, 64 << 10);
    m.evict_tier0(&log).unwrap();
    let kept = recycled_files(&root);
    assert!(kept.iter().all(|p| p.is_file()), "eviction keeps files");
    let started = Instant::now();
    while kept.iter().any(|p| p.exists()) {
        assert!(
            started.elapsed() < aof2::limits::RECYCLED_SEGMENT_KEEP + BACKGROUND,
            "kept files still there after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() + Duration::from_secs(1) >= aof2::limits::RECYCLED_SEGMENT_KEEP,
        "deleted after {:?}, before they were idle for long",
        started.elapsed()
    );
    fill(&log, &mut model, 4 * SEGMENT_BYTES as usize);
    check_all(&log, &model);
    close(m, log);
}

// ------------------------------------------------------------------ read-only handles

/// A read-only handle of one log can evict nothing of it, so its files do not count in the
/// Tier 0 budget: they used to fill it past the limit, and a writer of another log got
/// `Backpressure` on every new segment for as long as the handle was open.
#[test]
fn a_read_only_handle_does_not_starve_writers_of_other_logs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    {
        let m = AofManager::open(manager_config(&root)).unwrap();
        let big = m.open_log("big", log_config()).unwrap();
        let mut model = Vec::new();
        fill(&big, &mut model, 12 * SEGMENT_BYTES as usize);
        assert!(m.wait_for_tier1(&big, BACKGROUND));
        close(m, big);
    }
    let config = ManagerConfig {
        tier0_max_bytes: 8 * SEGMENT_BYTES,
        admission_timeout: Duration::from_secs(2),
        ..manager_config(&root)
    };
    let m = AofManager::open(config).unwrap();
    let ro = m.open_log_read_only("big").unwrap();
    let w = m.open_log("writer", log_config()).unwrap();
    let mut model = Vec::new();
    for seq in 0..(4 * SEGMENT_BYTES / 2000) {
        let p = payload_of(1, seq, 2000);
        w.append(&p).unwrap_or_else(|e| {
            panic!(
                "a read-only handle of another log makes the writer fail at {seq}: {e}; {:?}",
                m.tier_stats()
            )
        });
        model.push(p);
    }
    // The read-only handle still reads every record of its log.
    let big_records = ro.next_seq();
    assert!(big_records > 0);
    for seq in (0..big_records).step_by(97) {
        ro.read(seq).unwrap();
    }
    drop(ro);
    close(m, w);
}

// ------------------------------------------------------------------ mappings and reused files

/// Appends `bytes` of 60 kB records (precomputed, so appends are fast).
fn append_60k(log: &Aof, payloads: &[Vec<u8>], bytes: u64) {
    let mut n = 0;
    let mut i = 0;
    while n < bytes {
        log.append(&payloads[i % payloads.len()]).unwrap();
        i += 1;
        n += 60_000;
    }
}

fn none_log(segment_bytes: u64) -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(segment_bytes)
    }
}

fn payloads_60k() -> Vec<Vec<u8>> {
    (0..16).map(|i| payload_of(7, i, 60_000)).collect()
}

/// A `None` log of `big`-byte segments with two of them sealed and compressed.
fn two_big_segments(root: &Path, payloads: &[Vec<u8>], big: u64) -> (AofManager, Aof) {
    let m = AofManager::open(manager_config(root)).unwrap();
    let log = m.open_log(NAME, none_log(big)).unwrap();
    append_60k(&log, payloads, 2 * big - (1 << 20));
    log.seal().unwrap();
    assert!(m.wait_for_tier1(&log, BACKGROUND));
    (m, log)
}

/// Open the log with 1 MiB segments and roll past the segments prepared under the old size.
fn reopen_with_small_segments(m: &AofManager) -> Aof {
    let log = m.open_log(NAME, none_log(1 << 20)).unwrap();
    for _ in 0..4 {
        log.append(b"small").unwrap();
        log.seal().unwrap();
    }
    log
}

/// A zero-copy `Record` read before the log is closed keeps mapping its segment file. After
/// a reopen, eviction keeps that file for reuse and a later segment is prepared in it: the held
/// record's payload must not change.
#[test]
fn a_record_held_across_a_reopen_is_not_overwritten_by_a_reused_file() {
    let (_dir, _root, m, log, mut model) = compressed_log(2 << 20, 64 << 10);
    // Records 1..=12 of segment 0, read from Tier 0 (zero-copy).
    let held: Vec<Record> = (1..=12).map(|seq| log.read(seq).unwrap()).collect();
    for r in &held {
        assert_eq!(r.payload(), model[r.seq() as usize].as_slice());
    }
    log.close().unwrap();
    drop(log);
    let log = m.open_log(NAME, log_config()).unwrap();
    m.evict_tier0(&log).unwrap();
    roll_into_a_reused_file(&m, &log, &mut model, 8);
    fill(&log, &mut model, 16 << 10);
    let changed: Vec<u64> = held
        .iter()
        .filter(|r| r.payload() != model[r.seq() as usize].as_slice())
        .map(|r| r.seq())
        .collect();
    assert!(
        changed.is_empty(),
        "records read before the reopen changed under their holder: {changed:?}"
    );
    close(m, log);
}

/// Same, reopened with smaller segments: the reused file used to be truncated under the held
/// record (SIGBUS on the next read). Mapped files are now unlinked, never reused.
#[test]
fn a_record_held_across_a_reopen_with_smaller_segments_stays_readable() {
    let payloads = payloads_60k();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (m, log) = two_big_segments(&root, &payloads, 8 << 20);
    // The last record of segment 1, near the end of its file.
    let last = m.log_info(&log).segments[1].end_seq - 1;
    let held = log.read(last).unwrap();
    let want = held.payload().to_vec();
    log.close().unwrap();
    drop(log);
    let log = reopen_with_small_segments(&m);
    m.evict_tier0(&log).unwrap();
    append_60k(&log, &payloads, 6 << 20);
    assert_eq!(
        held.payload(),
        want.as_slice(),
        "held record {last} changed"
    );
}

/// `verify_log` used to map each sealed segment file on its own, unseen by eviction, which kept
/// the file for reuse while verify read it; preparing a later segment in it (of a smaller
/// configured size: the file is truncated) pulled the pages from under verify (SIGBUS). It now
/// reads through the segment's own mapping, which pins the segment.
#[test]
fn verify_while_an_evicted_file_is_reused() {
    let payloads = payloads_60k();
    for round in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let (m, log) = two_big_segments(&root, &payloads, 64 << 20);
        close(m, log);
        let m = AofManager::open(manager_config(&root)).unwrap();
        let log = reopen_with_small_segments(&m);
        assert!(m.wait_for_tier1(&log, BACKGROUND));
        let report = std::thread::scope(|s| {
            let verifier = s.spawn(|| m.verify_log(&log));
            std::thread::sleep(Duration::from_millis(2));
            m.evict_tier0(&log).unwrap();
            append_60k(&log, &payloads, 6 << 20);
            verifier.join().unwrap()
        });
        assert!(report.is_clean(), "round {round}: {:?}", report.problems);
        close(m, log);
    }
}

/// Logs that were busy once keep segments prepared ahead; once they go idle, another log must
/// still get room for its next segment: it used to get `Backpressure` for as long as they stayed
/// open, while most of the budget held their blank prepared segments.
#[test]
fn segments_idle_logs_prepared_ahead_give_way_to_a_busy_log() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = AofManager::open(ManagerConfig {
        // Ten segments: not tight, so each log prepares two ahead.
        tier0_max_bytes: 10 * SEGMENT_BYTES,
        admission_timeout: Duration::from_secs(2),
        ..manager_config(&root)
    })
    .unwrap();
    let idle: Vec<Aof> = ["idle-a", "idle-b", "idle-c"]
        .iter()
        .map(|name| m.open_log(name, log_config()).unwrap())
        .collect();
    for log in &idle {
        // A quarter of a segment: past the mark where a log starts preparing ahead.
        let mut seq = 0;
        while log.stats().bytes_appended < SEGMENT_BYTES / 4 {
            assert_eq!(log.append(&payload(seq)).unwrap(), seq);
            seq += 1;
        }
        let deadline = Instant::now() + BACKGROUND;
        while log.stats().prepared_ready < aof2::limits::PREPARED_SEGMENTS_AHEAD as u64 {
            assert!(Instant::now() < deadline, "{:?}", log.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Nine of the ten segments are the idle logs' active and prepared ones.
    assert_eq!(m.tier_stats().tier0_used_bytes, 9 * SEGMENT_BYTES);
    let busy = m.open_log("busy", log_config()).unwrap();
    let mut model = Vec::new();
    fill(&busy, &mut model, 6 * SEGMENT_BYTES as usize);
    check_all(&busy, &model);
    // The idle logs take appends again, in segments prepared anew.
    for log in &idle {
        let next = log.next_seq();
        let mut seq = next;
        while log.stats().bytes_appended < 2 * SEGMENT_BYTES {
            assert_eq!(log.append(&payload(seq)).unwrap(), seq);
            seq += 1;
        }
        for s in 0..seq {
            assert_eq!(log.read(s).unwrap().payload(), payload(s));
        }
    }
    busy.close().unwrap();
    for log in idle {
        log.close().unwrap();
    }
    assert_eq!(m.tier_stats().tier0_used_bytes, 0);
    m.close().unwrap();
}

// ------------------------------------------------------------------ the Tier 1 budget

/// Incompressible payload of `len` bytes for record `seq` of stream `salt`: a Tier 1 copy of
/// such records is as large as its segment (a little larger), so every compression's room
/// counts in full.
fn random_payload(salt: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut x = splitmix(seq ^ salt.rotate_left(32));
    let mut v: Vec<u8> = (0..len.div_ceil(8))
        .flat_map(|_| {
            x = splitmix(x);
            x.to_le_bytes()
        })
        .collect();
    v.truncate(len);
    v
}

/// Bytes of every file under the `tier1/` directories of the logs of `root` (files being
/// written included).
fn tier1_bytes_on_disk(root: &Path) -> u64 {
    let Ok(logs) = fs::read_dir(root.join("logs")) else {
        return 0;
    };
    let mut total = 0;
    for log in logs.flatten() {
        let Ok(files) = fs::read_dir(log.path().join("tier1")) else {
            continue;
        };
        for file in files.flatten() {
            // A file can go (evicted, renamed) between the listing and the look.
            total += file.metadata().map_or(0, |m| m.len());
        }
    }
    total
}

/// Logs of `Durability::None` (sealed by compressing, on the workers) and `Interval` (sealed on
/// the sealer, then compressed on the workers), alternating.
fn budget_log_config(i: usize, segment_bytes: u64) -> LogConfig {
    LogConfig {
        durability: if i.is_multiple_of(2) {
            Durability::None
        } else {
            Durability::Interval(Duration::from_millis(5))
        },
        ..LogConfig::default().with_segment_bytes(segment_bytes)
    }
}

/// Append `random_payload(i, seq, 2000)` records to `log` a segment's worth per round, every
/// log's round starting together (so their segments roll and compress at once), until an
/// append is refused with `Backpressure`. Every thread takes part in every round (a refused
/// log appends nothing more) until all are refused. Returns the records acknowledged.
fn append_in_rounds(
    log: &Aof,
    i: usize,
    segment_bytes: u64,
    rounds: &Barrier,
    refused_logs: &AtomicU64,
    logs: u64,
) -> Vec<Vec<u8>> {
    let per_round = (segment_bytes / 2000) as usize;
    let mut acked = Vec::new();
    let mut refused = false;
    loop {
        rounds.wait();
        for _ in 0..per_round {
            if refused {
                break;
            }
            let p = random_payload(i as u64, acked.len() as u64, 2000);
            match log.append(&p) {
                Ok(seq) => {
                    assert_eq!(seq, acked.len() as u64);
                    acked.push(p);
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Backpressure, "{e}");
                    refused = true;
                    refused_logs.fetch_add(1, Ordering::AcqRel);
                }
            }
            assert!(acked.len() < 100_000, "no backpressure");
        }
        // Everyone's count is in before anyone reads it.
        rounds.wait();
        if refused_logs.load(Ordering::Acquire) == logs {
            return acked;
        }
    }
}

/// Several logs seal at once, so several compressions (as many as workers) run in parallel
/// under a Tier 1 budget with room for two segments' copies and no Tier 2 to move them to. Each
/// compression reserves its room before it starts: neither the files (counted or found on
/// disk) nor files and reservations together ever exceed the budget. Before reservations, each
/// compression checked for room before it started and counted its file when written, so
/// compressions running at once all saw the same free room and together overran it (by up to a
/// segment each). Appends are then refused (Tier 0 fills with segments Tier 1 has no room for)
/// and every acknowledged record reads back, before and after a reopen.
#[test]
fn parallel_compressions_stay_within_the_tier1_budget() {
    const LOGS: usize = 4;
    const SEGMENT: u64 = 256 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tier1_max = 5 * SEGMENT / 2;
    let config = ManagerConfig {
        compress_threads: LOGS,
        tier0_max_bytes: 24 * SEGMENT,
        tier1_max_bytes: tier1_max,
        admission_timeout: Duration::from_millis(300),
        ..ManagerConfig::new(&root)
    };
    let m = AofManager::open(config.clone()).unwrap();
    let logs: Vec<Aof> = (0..LOGS)
        .map(|i| {
            m.open_log(&format!("log{i}"), budget_log_config(i, SEGMENT))
                .unwrap()
        })
        .collect();

    let done = AtomicBool::new(false);
    let rounds = Barrier::new(LOGS);
    let refused = AtomicU64::new(0);
    let (models, sampled) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut max = 0;
            while !done.load(Ordering::Acquire) {
                max = max.max(tier1_bytes_on_disk(&root));
                std::thread::sleep(Duration::from_millis(1));
            }
            max
        });
        let writers: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                let (rounds, refused) = (&rounds, &refused);
                s.spawn(move || append_in_rounds(log, i, SEGMENT, rounds, refused, LOGS as u64))
            })
            .collect();
        let models: Vec<Vec<Vec<u8>>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        (models, sampler.join().unwrap())
    });

    let stats = m.tier_stats();
    println!("{stats:?}, {sampled} bytes of Tier 1 files seen on disk at most");
    assert!(
        stats.segments_compressed >= 2,
        "the budget was filled: {stats:?}"
    );
    assert!(stats.tier1_full, "{stats:?}");
    assert!(
        stats.tier1_peak_bytes <= tier1_max,
        "Tier 1 files and reservations reached {} bytes, over the budget of {tier1_max}: {stats:?}",
        stats.tier1_peak_bytes
    );
    assert!(stats.tier1_used_bytes <= tier1_max, "{stats:?}");
    assert!(
        sampled <= tier1_max,
        "{sampled} bytes of Tier 1 files on disk, over the budget of {tier1_max}"
    );
    assert!(tier1_bytes_on_disk(&root) <= tier1_max);
    for (log, model) in logs.iter().zip(&models) {
        assert!(!model.is_empty());
        check_all(log, model);
    }
    m.close().unwrap();
    drop((logs, m));

    // Reopen: every record reads back. (Tier 1 use is not checked here: a closed log's files
    // leave the budget, so a parked compression of a log closing later may take their room.)
    let m = AofManager::open(config).unwrap();
    let logs: Vec<Aof> = (0..LOGS)
        .map(|i| {
            m.open_log(&format!("log{i}"), budget_log_config(i, SEGMENT))
                .unwrap()
        })
        .collect();
    for (log, model) in logs.iter().zip(&models) {
        assert_eq!(log.next_seq(), model.len() as u64);
        check_all(log, model);
        let verify = m.verify_log(log);
        assert!(verify.is_clean(), "{verify:?}");
    }
    m.close().unwrap();
}

/// No Tier 1 room and nothing to evict (no Tier 2): a budget smaller than one segment's copy
/// (a log whose segments can never fit) beside a log whose segments fit until Tier 1 is full,
/// with compressions running in parallel. Nothing waits for Tier 1 room: the segments without a
/// copy stay in Tier 0, appends are refused with `Backpressure` once Tier 0 is full, the close
/// finishes, and every acknowledged record reads back, before and after a reopen.
#[test]
fn without_tier1_room_segments_stay_in_tier0_and_nothing_is_lost() {
    const SMALL: u64 = 64 * 1024;
    const BIG: u64 = 512 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // Room for three copies of a small segment; a big one never fits.
    let tier1_max = 3 * SMALL + SMALL / 2;
    let config = ManagerConfig {
        compress_threads: 3,
        tier0_max_bytes: 12 * BIG,
        tier1_max_bytes: tier1_max,
        admission_timeout: Duration::from_millis(300),
        ..ManagerConfig::new(&root)
    };
    let sizes = [SMALL, BIG, SMALL, BIG];
    let open_logs = |m: &AofManager| -> Vec<Aof> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                m.open_log(&format!("log{i}"), budget_log_config(i, size))
                    .unwrap()
            })
            .collect()
    };
    let m = AofManager::open(config.clone()).unwrap();
    let logs = open_logs(&m);
    let models: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
        let writers: Vec<_> = logs
            .iter()
            .enumerate()
            .map(|(i, log)| {
                s.spawn(move || {
                    let mut acked = Vec::new();
                    loop {
                        let p = random_payload(i as u64, acked.len() as u64, 1500);
                        match log.append(&p) {
                            Ok(seq) => {
                                assert_eq!(seq, acked.len() as u64);
                                acked.push(p);
                            }
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::Backpressure, "{e}");
                                return acked;
                            }
                        }
                        assert!(acked.len() < 100_000, "no backpressure");
                    }
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let stats = m.tier_stats();
    println!("{stats:?}");
    assert!(stats.tier1_full, "{stats:?}");
    assert!(stats.tier1_peak_bytes <= tier1_max, "{stats:?}");
    assert!(stats.tier1_used_bytes <= tier1_max, "{stats:?}");
    // The small logs' segments went to Tier 1 until it was full; the big ones never did.
    assert!(stats.segments_compressed >= 1, "{stats:?}");
    for (i, log) in logs.iter().enumerate() {
        let info = m.log_info(log);
        let sealed: Vec<&SegmentInfo> = info
            .segments
            .iter()
            .filter(|s| s.state == SegmentState::Sealed)
            .collect();
        assert!(!sealed.is_empty(), "log{i} sealed nothing");
        if sizes[i] == BIG {
            assert!(
                sealed
                    .iter()
                    .all(|s| s.tier1_bytes == 0 && s.tier == TierLocation::Tier0),
                "log{i}: {sealed:?}"
            );
        }
        check_all(log, &models[i]);
    }
    m.close().unwrap();
    drop((logs, m));

    let m = AofManager::open(config).unwrap();
    let logs = open_logs(&m);
    for (log, model) in logs.iter().zip(&models) {
        assert_eq!(log.next_seq(), model.len() as u64);
        check_all(log, model);
        let verify = m.verify_log(log);
        assert!(verify.is_clean(), "{verify:?}");
    }
    m.close().unwrap();
}
