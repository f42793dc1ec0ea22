//! Retention (`Aof::truncate_before`): whole sealed segments leave every tier from the front of
//! the log, reads below the new start are `NotFound`, the state survives a reopen, and freeing
//! Tier 1 lets a log whose Tier 1 was full accept appends again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aof2::{
    AofManager, Durability, Error, ErrorKind, LogConfig, ManagerConfig, Tier, TierLocation,
};

const NAME: &str = "kept";

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(64 * 1024)
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("record {seq:08} ")
        .repeat(1 + (seq % 7) as usize)
        .into_bytes()
}

fn files(dir: &Path, ext: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .count()
    })
}

#[test]
fn truncate_before_removes_whole_segments_from_every_tier() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    for seq in 0..6000 {
        assert_eq!(log.append(&payload(seq)).unwrap(), seq);
    }
    assert!(m.wait_for_tier1(&log, Duration::from_secs(30)));
    m.evict_tier0(&log).unwrap();
    let before = m.log_info(&log);
    let sealed: Vec<_> = before
        .segments
        .iter()
        .filter(|s| s.tier == TierLocation::Tier1)
        .cloned()
        .collect();
    assert!(sealed.len() >= 4, "{before:?}");
    let tier1_before = m.tier_stats().tier1_used_bytes;

    // A cut inside segment 2 keeps segment 2 (whole segments only).
    let cut = sealed[2].base_seq + 1;
    let first = log.truncate_before(cut).unwrap();
    assert_eq!(first, sealed[2].base_seq);
    assert_eq!(log.first_seq(), first);
    assert_eq!(log.stats().segments_retired, 2);
    let e = log.read(first - 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("retention"), "{e}");
    for seq in first..6000 {
        assert_eq!(log.read(seq).unwrap().payload(), payload(seq), "seq {seq}");
    }
    let seq0: Vec<u64> = log
        .reader(first)
        .take(3)
        .map(|r| r.unwrap().seq())
        .collect();
    assert_eq!(seq0, vec![first, first + 1, first + 2]);
    let log_dir = root.join("logs").join(NAME);
    for s in &sealed[..2] {
        assert!(!s.path.exists());
        let t1 = log_dir.join("tier1").join(format!("{:016x}.t1", s.id));
        assert!(!t1.exists(), "{}", t1.display());
    }
    assert!(m.tier_stats().tier1_used_bytes < tier1_before);
    // Retention never touches the active segment, even asked for everything.
    let first = log.truncate_before(u64::MAX).unwrap();
    let info = m.log_info(&log);
    assert_eq!(info.segments.len(), 1, "{info:?}");
    assert_eq!(first, info.segments[0].base_seq);
    assert_eq!(files(&log_dir.join("tier1"), "t1"), 0);
    let next = log.append(b"after retention").unwrap();
    assert_eq!(next, 6000);
    m.close().unwrap();
    drop(log);
    drop(m);

    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    assert_eq!(log.first_seq(), first);
    assert_eq!(log.next_seq(), 6001);
    for seq in first..6000 {
        assert_eq!(log.read(seq).unwrap().payload(), payload(seq));
    }
    assert!(m.verify_log(&log).is_clean());
    m.close().unwrap();
}

#[test]
fn retention_frees_a_full_tier1() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut config = ManagerConfig::new(&root);
    config.tier0_max_bytes = 4 * 64 * 1024;
    config.tier1_max_bytes = 256 * 1024;
    config.admission_timeout = Duration::from_millis(300);
    let m = AofManager::open(config).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    let mut seq = 0;
    let refused = loop {
        match log.append(&payload(seq)) {
            Ok(s) => {
                assert_eq!(s, seq);
                seq += 1;
            }
            Err(e) => break e,
        }
        assert!(seq < 1_000_000, "Tier 1 never filled");
    };
    assert!(
        matches!(
            refused,
            Error::Backpressure {
                tier: Tier::Tier1,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(log.next_seq(), seq, "nothing written by the refused append");

    // Drop the oldest half; compression resumes and appends are admitted again.
    let first = log.truncate_before(seq / 2).unwrap();
    assert!(first > 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match log.append(&payload(seq)) {
            Ok(s) => {
                assert_eq!(s, seq);
                break;
            }
            Err(e) if e.kind() == ErrorKind::Backpressure && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("append after retention: {e}"),
        }
    }
    for s in first..=seq {
        assert_eq!(log.read(s).unwrap().payload(), payload(s));
    }
    m.close().unwrap();
}

/// An `Always` log whose active segment is still empty (its header is written with its first
/// frames) and whose sealed segments were all retired: a reopen must continue the sequence, not
/// start again at 0 (the newest sealed segment is what carries the log's end; retention keeps
/// it until a later record is durable).
fn always_64k() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default().with_segment_bytes(64 * 1024)
    }
}

#[test]
fn sequences_continue_after_retiring_every_sealed_segment_with_an_empty_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let reopen = |m: AofManager| {
        m.close().unwrap();
        drop(m);
        let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
        let log = m.open_log("l", always_64k()).unwrap();
        (m, log)
    };
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log("l", always_64k()).unwrap();
    for i in 0..100u64 {
        assert_eq!(log.append(format!("record {i}").as_bytes()).unwrap(), i);
    }
    // Seal the active segment: appends continue in a new, still empty segment.
    assert!(log.seal().unwrap());
    assert!(m.wait_for_tier1(&log, Duration::from_secs(30)));
    // Everything is below the floor, but the newest sealed segment stays while nothing after it
    // is on disk.
    assert_eq!(log.truncate_before(u64::MAX).unwrap(), 0);
    assert_eq!(log.next_seq(), 100);
    drop(log);
    let (m, log) = reopen(m);
    assert_eq!((log.first_seq(), log.next_seq()), (0, 100));
    assert_eq!(log.append(b"after").unwrap(), 100);
    // Now a later record is durable: the segment goes.
    assert_eq!(log.truncate_before(100).unwrap(), 100);
    drop(log);
    let (m, log) = reopen(m);
    let (first, next) = (log.first_seq(), log.next_seq());
    let appended = log.append(b"again").unwrap();
    assert_eq!(
        (first, next, appended),
        (100, 101, 101),
        "(first_seq, next_seq, seq of the next append) after reopen: sequence numbers went back"
    );
    assert_eq!(log.read(100).unwrap().payload(), b"after");
    m.close().unwrap();
}

/// Retention retiring segments (held only in Tier 1) while other threads read them and verify
/// the log: a read of a retired segment used to fail with `Corruption`, and verify reported the
/// retired segments as "in neither Tier 0, Tier 1 nor Tier 2" (found by a stress test).
#[test]
fn retention_racing_reads_and_verify_reports_nothing_false() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let cfg = LogConfig {
        durability: Durability::Always,
        ..LogConfig::default().with_segment_bytes(64 * 1024)
    };
    let mcfg = || ManagerConfig {
        compress_threads: 1,
        ..ManagerConfig::new(&root)
    };
    let m = AofManager::open(mcfg()).unwrap();
    let log = m.open_log("a", cfg.clone()).unwrap();
    let payload = vec![b'x'; 2000];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let problems = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers = Vec::new();
    for t in 0..2u64 {
        let (log, m, stop, problems) = (log.clone(), m.clone(), stop.clone(), problems.clone());
        readers.push(std::thread::spawn(move || {
            let mut x = t;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (first, next) = (log.first_seq(), log.durable_watermark());
                if next <= first {
                    continue;
                }
                let seq = first + (x >> 33) % (next - first);
                if t == 1 && x % 16 == 0 {
                    let r = m.verify_log(&log);
                    if !r.is_clean() {
                        eprintln!("verify_log: {:?}", r.problems);
                        problems.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                match log.read(seq) {
                    Ok(_) => {}
                    Err(aof2::Error::NotFound(_)) if seq < log.first_seq() => {}
                    Err(e) => {
                        eprintln!("read({seq}) with first_seq {first}: {e}");
                        problems.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for round in 0..4 {
        for _ in 0..20 {
            for _ in 0..30 {
                log.append_nowait(&payload).unwrap();
            }
            log.seal().unwrap();
        }
        log.flush().unwrap();
        assert!(m.wait_for_tier1(&log, Duration::from_secs(30)));
        m.evict_tier0(&log).unwrap();
        // retire one segment at a time while the readers read them
        let (first, next) = (log.first_seq(), log.next_seq());
        let mut at = first;
        while at + 30 < next {
            at += 30;
            log.truncate_before(at).unwrap();
        }
        eprintln!(
            "round {round}: first_seq {} next_seq {}, problems {}",
            log.first_seq(),
            log.next_seq(),
            problems.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (first, next) = (log.first_seq(), log.next_seq());
    m.close().unwrap();
    drop(log);
    drop(m);
    let m = AofManager::open(mcfg()).unwrap();
    let log = m
        .open_log("a", cfg)
        .expect("reopen after truncation raced readers");
    assert_eq!((log.first_seq(), log.next_seq()), (first, next));
    assert_eq!(
        problems.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "reads/verify failed while truncating"
    );
    m.close().unwrap();
}

/// A process stopped between retention's manifest edit and its unlinks leaves the retired
/// segments' files behind (and the temporary files of a compression or hydration of them that
/// the crash cut off); the next writable open deletes them in the background, and nothing live.
#[test]
fn files_of_segments_retired_before_a_crash_are_deleted_after_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let log_dir = root.join("logs").join(NAME);
    let stash = dir.path().join("stash");
    std::fs::create_dir_all(&stash).unwrap();
    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    for seq in 0..6000 {
        log.append(&payload(seq)).unwrap();
    }
    assert!(m.wait_for_tier1(&log, Duration::from_secs(30)));
    let sealed: Vec<_> = m
        .log_info(&log)
        .segments
        .into_iter()
        .filter(|s| s.state == aof2::SegmentState::Sealed)
        .collect();
    assert!(sealed.len() >= 4, "{sealed:?}");
    // Copies of the files of the two segments retention is about to retire.
    let mut left_behind = Vec::new();
    for s in &sealed[..2] {
        for path in [
            s.path.clone(),
            log_dir.join("tier1").join(format!("{:016x}.t1", s.id)),
        ] {
            let copy = stash.join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            left_behind.push((copy, path));
        }
    }
    let first = log.truncate_before(sealed[2].base_seq).unwrap();
    assert_eq!(first, sealed[2].base_seq);
    m.close().unwrap();
    drop(m);
    // As if the unlinks never ran.
    for (copy, path) in &left_behind {
        assert!(!path.exists(), "{}", path.display());
        std::fs::rename(copy, path).unwrap();
    }
    // And as if a compression and a hydration of them were cut off by the crash: recovery
    // undoes those only for segments the manifest still lists.
    for s in &sealed[..2] {
        for path in [
            log_dir.join("tier1").join(format!("{:016x}.t1.tmp", s.id)),
            log_dir
                .join("segments")
                .join(format!("{:016x}.seg.tmp", s.id)),
        ] {
            std::fs::write(&path, b"partial").unwrap();
            left_behind.push((PathBuf::new(), path));
        }
    }

    let m = AofManager::open(ManagerConfig::new(&root)).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while left_behind.iter().any(|(_, path)| path.exists()) {
        assert!(
            Instant::now() < deadline,
            "files of retired segments are still there"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Every live file is still there, and every record above the cut reads back.
    for s in &sealed[2..] {
        let t1 = log_dir.join("tier1").join(format!("{:016x}.t1", s.id));
        assert!(
            s.path.exists() || t1.exists(),
            "segment {} lost its files",
            s.id
        );
    }
    assert_eq!(log.first_seq(), first);
    for seq in first..6000 {
        assert_eq!(log.read(seq).unwrap().payload(), payload(seq), "seq {seq}");
    }
    assert!(m.verify_log(&log).problems.is_empty());
    m.close().unwrap();
}

/// A read of a retired record while the log rolls segments: `read` looked up the segment under
/// the segment index's read lock and, finding none, asked for the log's first sequence (the same
/// read lock again) to word its `NotFound`. A roll waiting for the write lock in between blocks
/// new readers, so the reader waited for the roll and the roll for the reader: the reader, the
/// appender and every later append hung (seen as a hang of
/// `retention_racing_reads_and_verify_reports_nothing_false`).
#[test]
fn reads_of_retired_records_racing_rollover_do_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log(NAME, log_config()).unwrap();
    for seq in 0..100 {
        log.append(&payload(seq)).unwrap();
    }
    log.seal().unwrap();
    log.append(&payload(100)).unwrap();
    assert!(m.wait_for_tier1(&log, Duration::from_secs(30)));
    assert_eq!(log.truncate_before(100).unwrap(), 100);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let err = log.read(7).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
                }
            })
        })
        .collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for seq in 101..400 {
                log.append(&payload(seq)).unwrap();
                log.seal().unwrap();
            }
            done_tx.send(()).unwrap();
        })
    };
    // A hang detector, not a time limit on the work: 300 appends and seals take well under a
    // second when nothing deadlocks.
    if done_rx.recv_timeout(Duration::from_secs(120)).is_err() {
        // Closing the deadlocked log would hang too.
        std::mem::forget((m, log));
        panic!(
            "appends and seals hung while readers read a retired record (reader and roll \
             deadlocked on the segment index)"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    m.close().unwrap();
}
