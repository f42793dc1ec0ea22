//! Black-box tests of the library API: append, read, batches, durability modes, reopen.

use std::time::Duration;

use aof2::{AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, ReadVisibility};

fn small(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(256 * 1024)
    }
}

#[test]
fn append_read_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let payload = |i: u64| {
        format!("record-{i}-")
            .repeat((i % 37) as usize)
            .into_bytes()
    };
    {
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let log = m.open_log("events", small(Durability::Always)).unwrap();
        for i in 0..3000u64 {
            assert_eq!(log.append(&payload(i)).unwrap(), i);
        }
        assert_eq!(log.durable_watermark(), 3000);
        assert!(log.stats().segments_rolled >= 2, "{:?}", log.stats());
        for (i, r) in log.reader(0).enumerate() {
            let r = r.unwrap();
            assert_eq!(r.seq(), i as u64);
            assert_eq!(r.payload(), payload(i as u64));
        }
        assert_eq!(log.read(1234).unwrap().payload(), payload(1234));
        m.close().unwrap();
    }
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("events", small(Durability::Always)).unwrap();
    assert_eq!(log.next_seq(), 3000);
    let all: Vec<_> = log.reader(0).map(|r| r.unwrap()).collect();
    assert_eq!(all.len(), 3000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.payload(), payload(i as u64));
    }
    assert_eq!(log.append(b"after").unwrap(), 3000);
    let info = m.log_info(&log);
    assert!(
        info.segments
            .iter()
            .filter(|s| s.state == aof2::SegmentState::Sealed)
            .count()
            >= 2,
        "{info:?}"
    );
    let report = m.verify_log(&log);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 3001);
}

#[test]
fn batches_zero_length_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("b", small(Durability::Always)).unwrap();
    assert_eq!(log.append(b"").unwrap(), 0);
    let first = log.append_batch(&[b"a".as_slice(), b"", b"ccc"]).unwrap();
    assert_eq!(first, 1);
    assert_eq!(log.read(2).unwrap().len(), 0);
    assert_eq!(log.read(3).unwrap().payload(), b"ccc");
    let too_big = vec![0u8; 256 * 1024];
    let err = log.append(&too_big).unwrap_err();
    assert!(matches!(err, aof2::Error::RecordTooLarge { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(log.next_seq(), 4, "nothing written by a rejected append");
    assert!(matches!(
        m.open_log("../evil", LogConfig::default()),
        Err(aof2::Error::InvalidName { .. })
    ));
    assert_eq!(log.read(99).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn second_manager_on_same_root_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let err = AofManager::open(ManagerConfig::new(dir.path())).unwrap_err();
    assert!(matches!(err, aof2::Error::Locked { .. }), "{err}");
}

#[test]
fn interval_and_none_modes_and_follow() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m
        .open_log("i", small(Durability::Interval(Duration::from_millis(2))))
        .unwrap();
    let seq = log.append(b"x").unwrap();
    log.wait_durable(seq).unwrap();
    assert!(log.durable_watermark() > seq);
    let mut reader = log.reader(1);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            log.append(b"later").unwrap()
        })
    };
    let r = reader
        .next_timeout(Duration::from_secs(5))
        .unwrap()
        .expect("follower sees the record");
    assert_eq!(r.payload(), b"later");
    writer.join().unwrap();
    assert!(
        reader
            .next_timeout(Duration::from_millis(10))
            .unwrap()
            .is_none()
    );
    // Closed: the follower is told at once, rather than waiting out its timeout over and over.
    log.close().unwrap();
    let started = std::time::Instant::now();
    let err = reader.next_timeout(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let none = m.open_log("n", small(Durability::None)).unwrap();
    for i in 0..100u32 {
        none.append(&i.to_le_bytes()).unwrap();
    }
    assert_eq!(
        none.reader(0).count(),
        100,
        "None mode: written records are visible"
    );
    none.flush().unwrap();
    assert_eq!(none.durable_watermark(), 100);
}

#[test]
fn async_wait_durable_and_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("p", small(Durability::Always)).unwrap();
    let seqs: Vec<u64> = (0..500u32)
        .map(|i| log.append_nowait(&i.to_le_bytes()).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        log.wait_durable_async(*seqs.last().unwrap()).await.unwrap();
    });
    assert_eq!(log.durable_watermark(), 500);
}

#[test]
fn failed_sync_is_sticky() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    m.set_sync_fault(Some(std::sync::Arc::new(|| {
        Err(std::io::Error::from_raw_os_error(libc_eio()))
    })));
    let log = m.open_log("f", small(Durability::Always)).unwrap();
    let err = log.append(b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    let err = log.append(b"y").unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Closed,
        "appends refused after a failed sync: {err}"
    );
    assert_eq!(log.next_seq(), 1, "the second append wrote nothing");
    // A follower learns that nothing more will come, instead of waiting out every timeout.
    const WAIT: Duration = Duration::from_secs(10);
    let mut follower = log.reader_with(0, ReadVisibility::Written);
    assert_eq!(
        follower.next_timeout(WAIT).unwrap().unwrap().payload(),
        b"x"
    );
    let started = std::time::Instant::now();
    let err = follower.next_timeout(WAIT).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(
        started.elapsed() < WAIT,
        "the follower waited out its timeout"
    );
    // Reopening lets recovery decide what is on disk: the record written before the failed
    // sync is there (it reached the page cache), and the log takes appends again. The old
    // handle still refuses them.
    m.set_sync_fault(None);
    drop(log);
    let log = m.open_log("f", small(Durability::Always)).unwrap();
    assert_eq!(log.next_seq(), 1);
    assert_eq!(log.read(0).unwrap().payload(), b"x");
    assert_eq!(log.append(b"z").unwrap(), 1);
    assert_eq!(log.durable_watermark(), 2);
}

/// EINTR and EAGAIN from fdatasync are retried (with backoff) and are not failures: the append
/// succeeds and the log stays open. Any other error is sticky (above).
#[test]
fn interrupted_sync_is_retried() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    m.set_sync_fault(Some(std::sync::Arc::new(move || {
        match counted.fetch_add(1, Ordering::Relaxed) {
            0 => Err(std::io::Error::from(std::io::ErrorKind::Interrupted)),
            1 => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
            _ => Ok(()),
        }
    })));
    let log = m.open_log("eintr", small(Durability::Always)).unwrap();
    assert_eq!(log.append(b"x").unwrap(), 0);
    assert!(calls.load(Ordering::Relaxed) >= 3, "two retries");
    assert_eq!(log.append(b"y").unwrap(), 1);
    assert_eq!(log.durable_watermark(), 2);
}

fn libc_eio() -> i32 {
    5
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let config = LogConfig {
        segment_max_age: Some(Duration::from_millis(20)),
        ..small(Durability::Always)
    };
    let log = m.open_log("aged", config).unwrap();
    log.append(b"first").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.stats().segments_rolled == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        log.stats().segments_rolled >= 1,
        "an old segment with records is rolled: {:?}",
        log.stats()
    );
    let rolled = log.stats().segments_rolled;
    log.append(b"second").unwrap();
    assert_eq!(log.read(0).unwrap().payload(), b"first");
    assert_eq!(log.read(1).unwrap().payload(), b"second");
    // The segment "second" went into ages and rolls too (the timer looks again once it can be
    // old, not only at the first segment's age) ...
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.stats().segments_rolled == rolled && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(log.stats().segments_rolled, rolled + 1, "{:?}", log.stats());
    // ... and the empty segment after it is not rolled again and again.
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(
        log.stats().segments_rolled,
        rolled + 1,
        "an empty active segment is not rolled again and again"
    );
}

#[test]
fn interval_backpressure_flushes_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let config = LogConfig {
        flush_watermark_bytes: 64 * 1024,
        dirty_limit_bytes: 128 * 1024,
        ..small(Durability::Interval(Duration::from_secs(3600)))
    };
    let log = m.open_log("bp", config).unwrap();
    let payload = vec![3u8; 4096];
    for _ in 0..200 {
        log.append(&payload).unwrap();
        let unsynced = (log.next_seq() - log.durable_watermark()) * (4096 + 32);
        assert!(
            unsynced <= 128 * 1024 + 2 * (4096 + 32),
            "dirty bytes stay near the limit: {unsynced}"
        );
    }
    assert!(
        log.stats().flushes > 0,
        "the watermark or the limit triggered flushes"
    );
}

#[test]
fn many_logs_flush_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let logs: Vec<_> = (0..8)
        .map(|i| {
            m.open_log(&format!("log-{i}"), small(Durability::Always))
                .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for log in &logs {
            s.spawn(move || {
                for i in 0..200u32 {
                    assert_eq!(log.append(&i.to_le_bytes()).unwrap(), u64::from(i));
                }
            });
        }
    });
    for log in &logs {
        assert_eq!(log.durable_watermark(), 200);
        assert_eq!(log.reader(0).count(), 200);
    }
    assert_eq!(m.list_logs().unwrap().len(), 8);
}

#[test]
fn read_only_handles_change_nothing_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let log = m.open_log("ro", small(Durability::Always)).unwrap();
        for i in 0..2000u32 {
            log.append(&i.to_le_bytes().repeat(20)).unwrap();
        }
        m.close().unwrap();
    }
    let listing = |root: &std::path::Path| -> Vec<(String, u64)> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let meta = e.metadata().unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else if e.file_name() != "LOCK" {
                    let bytes = std::fs::read(e.path()).unwrap();
                    let sum = bytes
                        .iter()
                        .fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b));
                    files.push((e.path().display().to_string(), sum));
                }
            }
        }
        files.sort();
        files
    };
    let before = listing(dir.path());
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log_read_only("ro").unwrap();
    assert_eq!(log.next_seq(), 2000);
    assert_eq!(log.reader(0).count(), 2000);
    assert_eq!(
        log.read(1999).unwrap().payload(),
        1999u32.to_le_bytes().repeat(20)
    );
    assert!(m.verify_log(&log).is_clean());
    // The writer's prepared (blank) 256 KiB segment is neither used nor dropped, although this
    // open's default configuration has 64 MiB segments.
    let report = m.recovery_report("ro").unwrap();
    assert_eq!(report.dropped_segments, 0, "{report:?}");
    let err = log.append(b"no").unwrap_err();
    assert!(matches!(err, aof2::Error::ReadOnly { .. }), "{err}");
    assert!(matches!(m.open_log_read_only("missing"), Err(e) if e.kind() == ErrorKind::NotFound));
    m.close().unwrap();
    drop(m);
    assert_eq!(
        before,
        listing(dir.path()),
        "a read-only open wrote nothing"
    );

    // A writable open afterwards upgrades and appends continue the sequence.
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let ro = m.open_log_read_only("ro").unwrap();
    let rw = m.open_log("ro", small(Durability::Always)).unwrap();
    assert_eq!(rw.append(b"more").unwrap(), 2000);
    assert!(ro.append(b"x").is_err());
}

/// `Always` appends stage their frames until a group commit (or a full staging buffer, or a
/// rollover) writes them: a `Written` reader following the log must only ever see whole records,
/// in order, and every record must reach its sealed segment intact.
#[test]
fn staged_durable_appends_are_read_whole_across_rollovers() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("staged", small(Durability::Always)).unwrap();
    let payload = |i: u64| {
        format!("{i:06}-")
            .repeat(1 + (i % 150) as usize)
            .into_bytes()
    };
    const N: u64 = 3_000;
    let follower = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut reader = log.reader_with(0, aof2::ReadVisibility::Written);
            for seq in 0..N {
                let r = reader
                    .next_timeout(Duration::from_secs(20))
                    .unwrap()
                    .unwrap_or_else(|| panic!("record {seq} never became visible"));
                assert_eq!(r.seq(), seq);
                assert_eq!(r.payload(), payload(seq).as_slice(), "record {seq}");
            }
        })
    };
    // Pipelined appends (staged until a sync writes them) mixed with acknowledged ones; about
    // 1.6 MB in 256 KiB segments, so several rollovers happen with frames staged.
    let mut last = 0;
    for i in 0..N {
        last = if i % 7 == 0 {
            log.append(&payload(i)).unwrap()
        } else {
            log.append_nowait(&payload(i)).unwrap()
        };
        assert_eq!(last, i);
    }
    log.wait_durable(last).unwrap();
    assert_eq!(log.durable_watermark(), N);
    follower.join().unwrap();
    assert!(log.stats().segments_rolled >= 4, "{:?}", log.stats());
    log.close().unwrap();
    m.close().unwrap();

    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("staged", small(Durability::Always)).unwrap();
    assert_eq!(log.next_seq(), N);
    for (seq, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(seq as u64).as_slice());
    }
    assert!(m.verify_log(&log).is_clean());
}

/// Logs that hold a few records do not prepare segments ahead, so their Tier 0 budget stays free
/// for the log that is busy: twelve idle logs and one writing twenty segments fit a budget of
/// fifteen segments (before, every log that was appended to prepared two segments at once and
/// the busy log failed with `Backpressure`).
#[test]
fn idle_logs_leave_the_tier0_budget_to_a_busy_one() {
    let dir = tempfile::tempdir().unwrap();
    let segment = 256 * 1024;
    let m = AofManager::open(ManagerConfig {
        tier0_max_bytes: 15 * segment,
        admission_timeout: std::time::Duration::from_secs(2),
        ..ManagerConfig::new(dir.path())
    })
    .unwrap();
    let config = LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(segment)
    };
    let idle: Vec<_> = (0..12)
        .map(|i| {
            let log = m.open_log(&format!("idle-{i}"), config.clone()).unwrap();
            log.append(b"one record").unwrap();
            log
        })
        .collect();
    let busy = m.open_log("busy", config).unwrap();
    let payload = vec![7u8; 1000];
    let records = 20 * segment / 1000;
    for i in 0..records {
        assert_eq!(busy.append(&payload).unwrap(), i);
    }
    assert!(busy.stats().segments_rolled >= 19, "{:?}", busy.stats());
    for log in &idle {
        let stats = log.stats();
        assert_eq!(stats.prepared_ready, 0, "{stats:?}");
        assert_eq!(log.reader(0).count(), 1);
    }
    assert_eq!(busy.reader(0).count() as u64, records);
}

/// A new log's first segment is created without written zeros, so that opening stays quick, and
/// an `Always` log's group commits into such space cost about two syncs each. Once it has written
/// an eighth of that segment (at most 1 MiB) it asks for a zero-filled one and rolls over to it as
/// soon as it is ready. A log written through its mapping keeps its first segment.
#[test]
fn a_new_durable_log_leaves_its_unzeroed_first_segment_early() {
    for durability in [Durability::Always, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let config = LogConfig {
            durability,
            ..LogConfig::default().with_segment_bytes(1 << 20)
        };
        let log = m.open_log("log", config.clone()).unwrap();
        let payload = vec![3u8; 1000];
        for _ in 0..200 {
            log.append(&payload).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while log.stats().prepared_ready == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        log.append(&payload).unwrap();
        let rolled = log.stats().segments_rolled;
        match durability {
            Durability::Always => assert_eq!(rolled, 1, "{durability:?}: {:?}", log.stats()),
            _ => assert_eq!(rolled, 0, "{durability:?}: {:?}", log.stats()),
        }
        assert_eq!(log.reader(0).count(), 201);
        log.close().unwrap();
        drop(log);
        m.close().unwrap();
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let log = m.open_log("log", config).unwrap();
        assert_eq!(
            log.reader(0)
                .map(|r| r.unwrap().payload().len())
                .sum::<usize>(),
            201_000
        );
    }
}

/// Pseudo-random, moderately compressible payload of record `i` (so that Tier 1 compression at a
/// high level takes a while).
fn race_payload(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..1000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 16) as u8
        })
        .collect()
}

/// `Aof::close` on one thread while `open_log` of the same name runs on another: the reopen
/// must wait for the old instance's background work (they share the manifest; it used to be
/// left unopenable: "segment 0 failed a compression that was not started"), and no record may
/// be lost. `None` logs seal by compressing; `Always` logs seal, then compress.
fn reopen_while_close_is_running(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let manager_config = || ManagerConfig {
        compression: aof2::Compression::Fixed(19),
        ..ManagerConfig::new(dir.path())
    };
    let config = LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(4 << 20)
    };
    let m = AofManager::open(manager_config()).unwrap();
    let log = m.open_log("race", config.clone()).unwrap();
    const N: u64 = 16_000; // ~16 MB: four segments to seal and compress
    for i in 0..N {
        assert_eq!(log.append_nowait(&race_payload(i)).unwrap(), i);
    }
    log.wait_durable(N - 1).unwrap();
    let closer = {
        let log = log.clone();
        std::thread::spawn(move || log.close())
    };
    std::thread::sleep(Duration::from_millis(50));
    let reopened = m.open_log("race", config.clone()).unwrap();
    let old_still_closing = !closer.is_finished();
    for i in N..N + 2000 {
        assert_eq!(reopened.append(&race_payload(i)).unwrap(), i);
    }
    let closed_old = closer.join().unwrap();
    let closed_new = reopened.close();
    let closed_manager = m.close();
    drop(m);
    let m = AofManager::open(manager_config()).unwrap();
    let reopened_again = m.open_log("race", config.clone());
    let outcome = format!(
        "{durability:?}: old close: {closed_old:?}; new close: {closed_new:?}; manager close: \
         {closed_manager:?}; reopen: {:?}",
        reopened_again.as_ref().map(|l| l.next_seq())
    );
    let log = reopened_again.expect(&outcome);
    assert_eq!(log.next_seq(), N + 2000, "{outcome}");
    for i in 0..N + 2000 {
        assert_eq!(
            log.read(i).unwrap().payload(),
            race_payload(i),
            "record {i}"
        );
    }
    let report = m.verify_log(&log);
    assert!(report.is_clean(), "{report:?}");
    assert!(
        !old_still_closing,
        "{outcome}: open_log returned a new instance while the old one's close was still \
         waiting for its background work (both share the manifest)"
    );
}

#[test]
fn reopen_while_close_is_running_waits_for_the_old_instance() {
    reopen_while_close_is_running(Durability::None);
}

#[test]
fn reopen_while_close_is_running_waits_for_the_old_instance_always() {
    reopen_while_close_is_running(Durability::Always);
}

/// A manager whose group-commit syncs fail (EIO) and an `Interval` log that acknowledged record
/// 0: the interval timer's sync (within 2 ms) fails and fails the log, as the returned log's
/// follower saw before this returns.
fn interval_log_with_a_failed_sync(root: &std::path::Path) -> (AofManager, aof2::Aof) {
    let m = AofManager::open(ManagerConfig::new(root)).unwrap();
    m.set_sync_fault(Some(std::sync::Arc::new(|| {
        Err(std::io::Error::from_raw_os_error(libc_eio()))
    })));
    let log = m
        .open_log("iv", small(Durability::Interval(Duration::from_millis(2))))
        .unwrap();
    assert_eq!(log.append(b"acknowledged").unwrap(), 0);
    let mut follower = log.reader_with(1, ReadVisibility::Written);
    let err = follower.next_timeout(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    (m, log)
}

/// An `Interval` log whose background sync failed after it acknowledged a record: the record
/// never became durable, and the appender saw only `Ok`. Closing it (the log's or the manager's
/// `close`, both documented as syncing) must not report success.
#[test]
fn close_after_a_failed_background_interval_sync_reports_the_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = interval_log_with_a_failed_sync(dir.path());
    assert_eq!(
        log.durable_watermark(),
        0,
        "the record never became durable"
    );
    let closed = log.close();
    let manager_closed = m.close();
    assert!(
        closed.is_err() && manager_closed.is_err(),
        "close reports success for a log whose acknowledged record never became durable: \
         Aof::close = {closed:?}, AofManager::close = {manager_closed:?}"
    );
}

/// Two threads closing the manager at once (a shutdown hook and the main thread, say), with a
/// log whose background sync failed after it acknowledged a record: both must report the
/// failure, and so must a close after them. The caller that came second used to get `Ok` at
/// once, while the first was still closing the logs, and even though that close failed.
#[test]
fn concurrent_manager_closes_each_report_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _log) = interval_log_with_a_failed_sync(dir.path());
    let barrier = std::sync::Barrier::new(2);
    let outcomes: Vec<aof2::Result<()>> = std::thread::scope(|s| {
        let closers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    m.close()
                })
            })
            .collect();
        closers.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(
        outcomes.iter().all(|o| o.is_err()),
        "a manager close reported success for a log whose acknowledged record never became \
         durable: {outcomes:?}"
    );
    assert!(m.close().is_err(), "a later close reports it too");
}

/// A slow log must not delay other logs' background flushes. The flush job used to clear its
/// "scheduled" flag when it started, so each `append_nowait` on a log whose sync was slow queued
/// another job, which waited for that sync on another worker: the slow log took every worker,
/// and an `Interval` log's timer flush waited behind it.
#[test]
fn a_slow_log_does_not_take_every_flush_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::new(dir.path().join("root"));
    config.flush_threads = 2;
    let m = AofManager::open(config).unwrap();

    // Log "slow": every group-commit sync takes 3 s while `slow` is set.
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = slow.clone();
    m.set_sync_fault(Some(std::sync::Arc::new(move || {
        if s.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_secs(3));
        }
        Ok(())
    })));
    let slow_log = m
        .open_log(
            "slow",
            LogConfig {
                durability: Durability::Always,
                ..LogConfig::default().with_segment_bytes(1 << 20)
            },
        )
        .unwrap();
    m.set_sync_fault(None);
    let fast = m
        .open_log(
            "fast",
            LogConfig {
                durability: Durability::Interval(Duration::from_millis(20)),
                ..LogConfig::default().with_segment_bytes(1 << 20)
            },
        )
        .unwrap();

    slow.store(true, std::sync::atomic::Ordering::Release);
    // Pipelined durable appends on the slow log: each asks for a background group commit.
    for _ in 0..20 {
        slow_log.append_nowait(b"slow record").unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }

    // The fast log's record must be synced within its interval (plus scheduling slack), not
    // after the slow log's syncs.
    let seq = fast.append(b"fast record").unwrap();
    let start = std::time::Instant::now();
    while fast.durable_watermark() <= seq {
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "Interval(20ms) log not synced after {:?}: the slow log holds every flush worker",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    slow.store(false, std::sync::atomic::Ordering::Release);
    drop(fast);
    drop(slow_log);
    m.close().unwrap();
}

/// `AofManager::log_info` held the segment index while it asked for the write state, and a roll
/// takes them the other way round: a `seal` (or an append that fills a segment) beside a
/// `log_info` deadlocked the log, then the whole manager (found by a stress test).
#[test]
fn log_info_while_segments_roll_does_not_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path().join("root"))).unwrap();
    let log = m
        .open_log(
            "a",
            LogConfig {
                durability: Durability::None,
                ..LogConfig::default().with_segment_bytes(64 * 1024)
            },
        )
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = std::sync::Arc::new([
        std::sync::atomic::AtomicU64::new(0),
        std::sync::atomic::AtomicU64::new(0),
    ]);
    let writer = {
        let (log, stop, progress) = (log.clone(), stop.clone(), progress.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                log.append(&[7u8; 100]).unwrap();
                log.seal().unwrap(); // roll: write-state mutex, then segment index write lock
                progress[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let info = {
        let (m, log, stop, progress) = (m.clone(), log.clone(), stop.clone(), progress.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // segment index read lock, then write-state mutex (active segment)
                let _ = m.log_info(&log);
                progress[1].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let mut last = [0, 0];
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        let now = [
            progress[0].load(std::sync::atomic::Ordering::Relaxed),
            progress[1].load(std::sync::atomic::Ordering::Relaxed),
        ];
        if now == last {
            eprintln!(
                "DEADLOCK: seal loop at {} iterations, log_info loop at {}; neither moved for 500 ms",
                now[0], now[1]
            );
            std::process::abort();
        }
        last = now;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    info.join().unwrap();
    eprintln!("no deadlock: {} seals, {} log_info calls", last[0], last[1]);
}

/// Writes a log as aof2 0.1 would leave it after a run whose clock was an hour ahead of the
/// machine's clock now (a clock stepped back between two runs, as NTP does): one sealed segment
/// holding `records` records stamped `stamped_ms`, and no active segment (it was sealed, or its
/// header never reached the disk). Built from the public format encoders (`docs/format.md`).
fn write_log_stamped(root: &std::path::Path, name: &str, records: u64, stamped_ms: u64) {
    use aof2::format::manifest::{Edit, SealedInfo, encode_wal_header, encode_wal_record};
    use aof2::format::segment::{
        FrameHeader, IndexEntry, SegmentFooter, SegmentHeader, encode_frame, encode_index,
    };
    let log_id = 0x5eed;
    let capacity = 256 * 1024;
    let header = SegmentHeader {
        log_id,
        segment_id: 0,
        base_seq: 0,
        created_ms: stamped_ms,
        capacity,
        recycled: false,
    };
    let mut seg = header.encode().to_vec();
    let index = vec![IndexEntry {
        seq: 0,
        offset: seg.len() as u64,
        timestamp_ms: stamped_ms,
    }];
    for seq in 0..records {
        let payload = format!("old-{seq}").into_bytes();
        let at = seg.len();
        seg.resize(at + 32 + payload.len(), 0);
        let frame = FrameHeader {
            len: payload.len() as u32,
            seq,
            timestamp_ms: stamped_ms,
            batch_remaining: 0,
            epoch: 1,
        };
        encode_frame(&mut seg[at..], &frame, &payload);
    }
    let index_bytes = encode_index(&index);
    let footer = SegmentFooter {
        index_entries: 1,
        log_id,
        segment_id: 0,
        base_seq: 0,
        record_count: records,
        records_end: seg.len() as u64,
        first_timestamp_ms: stamped_ms,
        last_timestamp_ms: stamped_ms,
        sealed_ms: stamped_ms,
        index_crc: aof2::format::crc32c(&index_bytes),
    };
    let encoded = footer.encode();
    seg.extend_from_slice(&index_bytes);
    seg.extend_from_slice(&encoded);
    let dir = root.join("logs").join(name);
    std::fs::create_dir_all(dir.join("segments")).unwrap();
    std::fs::create_dir_all(dir.join("manifest")).unwrap();
    std::fs::write(dir.join("segments").join(format!("{:016x}.seg", 0)), &seg).unwrap();
    let mut wal = encode_wal_header(0).to_vec();
    for edit in [
        Edit::LogCreated {
            log_id,
            created_ms: stamped_ms,
            name: name.to_string(),
        },
        Edit::LogOpened { epoch: 1 },
        Edit::SegmentPrepared {
            segment_id: 0,
            capacity,
        },
        Edit::SegmentSealed(SealedInfo {
            segment_id: 0,
            base_seq: 0,
            record_count: records,
            file_len: seg.len() as u64,
            first_timestamp_ms: stamped_ms,
            last_timestamp_ms: stamped_ms,
            footer_crc: SegmentFooter::stored_crc(&encoded),
        }),
    ] {
        wal.extend_from_slice(&encode_wal_record(&edit));
    }
    std::fs::write(dir.join("manifest").join(format!("wal-{:016x}", 0)), wal).unwrap();
}

/// Append timestamps never decrease within a log (`docs/format.md`), also across a reopen whose
/// active segment is new (the previous one was sealed): the log's last timestamp comes from its
/// sealed segments then. The reopen used to start again from the clock, so a clock stepped back
/// between two runs stamped new records earlier than old ones.
#[test]
fn timestamps_do_not_go_back_across_a_reopen_into_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let ahead_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    write_log_stamped(dir.path(), "events", 3, ahead_ms);
    for durability in [Durability::Always, Durability::None] {
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let log = m.open_log("events", small(durability)).unwrap();
        let last = log.read(log.next_seq() - 1).unwrap().timestamp_ms();
        let seq = log.append(b"new").unwrap();
        let stamped = log.read(seq).unwrap().timestamp_ms();
        assert!(
            stamped >= last,
            "{durability:?}: record {seq} stamped {stamped} ms, before record {} ({last} ms)",
            seq - 1
        );
        log.seal().unwrap();
        m.close().unwrap();
    }
}

/// A crash during a log's first open can leave its directories without a manifest (it is
/// written last, atomically). No record was ever appended there: that is not a log, for listing,
/// for `log_exists`, for readers, and the next writable open creates it afresh.
#[test]
fn a_log_directory_without_its_manifest_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        m.open_log("good", small(Durability::Always))
            .unwrap()
            .append(b"x")
            .unwrap();
        m.close().unwrap();
    }
    let ghost = dir.path().join("logs").join("ghost");
    std::fs::create_dir_all(ghost.join("segments")).unwrap();
    std::fs::create_dir_all(ghost.join("manifest")).unwrap();
    // The manifest's temporary file, written but not yet renamed.
    std::fs::write(
        ghost.join("manifest").join("wal-0000000000000000.tmp"),
        b"partial",
    )
    .unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    assert_eq!(m.list_logs().unwrap(), vec!["good".to_string()]);
    assert!(m.log_exists("good"));
    assert!(!m.log_exists("ghost"));
    let err = m.open_log_read_only("ghost").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let log = m.open_log("ghost", small(Durability::Always)).unwrap();
    assert_eq!(log.append(b"first").unwrap(), 0);
    assert!(m.log_exists("ghost"));
    assert_eq!(m.list_logs().unwrap(), vec!["ghost", "good"]);

    // Segment files without a manifest are a damaged log, not a missing one.
    let lost = dir.path().join("logs").join("lost");
    std::fs::create_dir_all(lost.join("segments")).unwrap();
    std::fs::write(
        lost.join("segments").join("0000000000000000.seg"),
        b"frames",
    )
    .unwrap();
    assert!(m.log_exists("lost"));
    assert_eq!(m.list_logs().unwrap(), vec!["ghost", "good", "lost"]);
    let err = m.open_log_read_only("lost").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    // So are Tier 1 files alone (every sealed segment had left Tier 0): never taken for left-overs
    // of a first open, which a restore may delete.
    let cold = dir.path().join("logs").join("cold");
    std::fs::create_dir_all(cold.join("segments")).unwrap();
    std::fs::create_dir_all(cold.join("tier1")).unwrap();
    std::fs::write(cold.join("tier1").join("0000000000000000.t1"), b"zstd").unwrap();
    assert!(m.log_exists("cold"));
    for err in [
        m.open_log_read_only("cold").unwrap_err(),
        m.open_log("cold", small(Durability::Always)).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}
