//! Many logs over time: opened, written, rolled, evicted, read back from Tier 1, retained, closed
//! and reopened in one manager. The Tier 0 and Tier 1 counters must come back to what the files on
//! disk hold, and nothing (threads, descriptors, mappings, files) may pile up.

use std::path::Path;
use std::time::Duration;

use aof2::{AofManager, Durability, LogConfig, ManagerConfig};

const SEGMENT_BYTES: u64 = 64 * 1024;
const BACKGROUND: Duration = Duration::from_secs(30);

fn log_config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
    }
}

fn manager_config(root: &Path) -> ManagerConfig {
    ManagerConfig {
        compress_threads: 2,
        hydrate_after_passes: 1,
        tier0_max_bytes: 64 * SEGMENT_BYTES,
        ..ManagerConfig::new(root)
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("record {seq} ")
        .repeat(1 + (seq % 40) as usize)
        .into_bytes()
}

/// Bytes of the files named `*.<ext>` under `dir` (recursively).
fn bytes_of(dir: &Path, ext: &str) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += bytes_of(&path, ext);
        } else if path.extension().is_some_and(|e| e == ext) {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn counters_return_to_zero_after_cycles_of_logs() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    let names = ["a", "b", "c"];
    let modes = [Durability::None, Durability::Always, Durability::None];
    let mut next = [0u64; 3];
    for cycle in 0..4 {
        let logs: Vec<_> = names
            .iter()
            .zip(modes)
            .map(|(n, m)| manager.open_log(n, log_config(m)).unwrap())
            .collect();
        for (i, log) in logs.iter().enumerate() {
            for _ in 0..400 {
                let seq = log.append(&payload(next[i])).unwrap();
                assert_eq!(seq, next[i]);
                next[i] += 1;
            }
            log.seal().unwrap();
        }
        for log in &logs {
            assert!(manager.wait_for_tier1(log, BACKGROUND));
            manager.evict_tier0(log).unwrap();
        }
        // Read every record back (Tier 1, hydrating segments).
        for (i, log) in logs.iter().enumerate() {
            for pass in 0..2 {
                for seq in log.first_seq()..next[i] {
                    let r = log.read(seq).unwrap();
                    assert_eq!(r.payload(), payload(seq), "cycle {cycle} pass {pass}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        for (i, log) in logs.iter().enumerate() {
            if cycle % 2 == 1 {
                log.truncate_before(next[i] / 2).unwrap();
            }
        }
        for log in &logs {
            log.close().unwrap();
        }
        let stats = manager.tier_stats();
        assert_eq!(
            (stats.tier0_used_bytes, stats.tier1_used_bytes),
            (0, 0),
            "cycle {cycle}: every log is closed"
        );
    }
    // Reopen: the counters match the files.
    let logs: Vec<_> = names
        .iter()
        .zip(modes)
        .map(|(n, m)| manager.open_log(n, log_config(m)).unwrap())
        .collect();
    let stats = manager.tier_stats();
    let t1 = bytes_of(&dir.path().join("logs"), "t1");
    assert_eq!(stats.tier1_used_bytes, t1);
    drop(logs);
    manager.close().unwrap();
}

#[test]
fn repeated_manager_and_log_cycles_leak_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut baseline = None;
    for cycle in 0..6 {
        {
            let manager = AofManager::open(manager_config(dir.path())).unwrap();
            for name in ["x", "y"] {
                let log = manager
                    .open_log(name, log_config(Durability::Always))
                    .unwrap();
                for i in 0..300 {
                    log.append(&payload(i)).unwrap();
                }
                for r in log.reader(log.first_seq()) {
                    r.unwrap();
                }
                log.close().unwrap();
                let log = manager
                    .open_log(name, log_config(Durability::Always))
                    .unwrap();
                log.append(b"again").unwrap();
                // Dropped without close: the manager closes it.
            }
            if cycle % 2 == 0 {
                manager.close().unwrap();
            }
        }
        let now = (
            count("/proc/self/task"),
            count("/proc/self/fd"),
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .count(),
        );
        if cycle == 1 {
            baseline = Some(now);
        } else if let Some(base) = baseline {
            assert!(
                now.0 <= base.0 && now.1 <= base.1 && now.2 <= base.2 + 4,
                "cycle {cycle}: threads/fds/maps {now:?} vs {base:?}"
            );
        }
    }
}

/// Descriptors and mappings of the process.
fn fds_and_maps() -> (usize, usize) {
    (
        count("/proc/self/fd"),
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count(),
    )
}

#[test]
fn closed_logs_hold_no_descriptors_or_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    // Warm up (threads, the first log's allocations).
    let warm = manager
        .open_log("warm", log_config(Durability::Always))
        .unwrap();
    warm.append(b"x").unwrap();
    warm.close().unwrap();
    drop(warm);
    let before = fds_and_maps();
    for i in 0..40 {
        let log = manager
            .open_log(&format!("log-{i}"), log_config(Durability::Always))
            .unwrap();
        for seq in 0..50 {
            log.append(&payload(seq)).unwrap();
        }
        assert_eq!(log.read(7).unwrap().payload(), payload(7));
        log.close().unwrap();
    }
    let after = fds_and_maps();
    assert!(
        after.0 <= before.0 + 4 && after.1 <= before.1 + 8,
        "40 logs opened and closed: descriptors and mappings went from {before:?} to {after:?}"
    );
    manager.close().unwrap();
}

/// Threads started together at a barrier, each running `f(i)`; their results in order.
fn race<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Opens of one name at the same time (writable, and a read-only one among them) recover its
/// directory once: every writable handle appends to the same instance, so the sequences they
/// get are distinct and dense. A read-only open either came first (the log did not exist yet)
/// or got the writable instance.
#[test]
fn concurrent_opens_of_one_name_share_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    for round in 0..150 {
        let name = format!("same-{round}");
        let outcomes = race(4, |i| {
            if i == 3 {
                match manager.open_log_read_only(&name) {
                    Ok(log) => {
                        assert!(log.next_seq() <= 3, "round {round}");
                        None
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), aof2::ErrorKind::NotFound, "round {round}: {e}");
                        None
                    }
                }
            } else {
                let log = manager
                    .open_log(&name, log_config(Durability::None))
                    .unwrap();
                Some(log.append(&payload(i as u64)).unwrap())
            }
        });
        let mut seqs: Vec<u64> = outcomes.into_iter().flatten().collect();
        seqs.sort();
        assert_eq!(
            seqs,
            vec![0, 1, 2],
            "round {round}: one instance took the appends"
        );
        let log = manager
            .open_log(&name, log_config(Durability::None))
            .unwrap();
        assert_eq!(log.next_seq(), 3, "round {round}");
        log.close().unwrap();
    }
    let stats = manager.tier_stats();
    assert_eq!(stats.tier0_used_bytes, 0, "every log is closed: {stats:?}");
    manager.close().unwrap();
    // Every log holds its three records after a reopen.
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    for round in 0..150 {
        let log = manager
            .open_log_read_only(&format!("same-{round}"))
            .unwrap();
        assert_eq!(log.next_seq(), 3, "round {round}");
    }
    manager.close().unwrap();
}

/// `Aof::close` and an open of the same log at the same time: the open returns either the old
/// instance (closed right after, so its appends fail with `Closed`) or a new one that continues
/// the sequence. No record is lost and the close reports no error.
#[test]
fn open_racing_close_of_the_same_log_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    let config = log_config(Durability::Always);
    let mut log = manager.open_log("raced", config.clone()).unwrap();
    let mut next = 0u64;
    for round in 0..200 {
        assert_eq!(log.append(&payload(next)).unwrap(), next, "round {round}");
        next += 1;
        let old = log.clone();
        let mut outcomes = race(2, |i| {
            if i == 0 {
                old.close().map(|()| None)
            } else {
                manager.open_log("raced", config.clone()).map(Some)
            }
        });
        let opened = outcomes.pop().unwrap().unwrap().unwrap();
        assert!(outcomes.pop().unwrap().unwrap().is_none(), "round {round}");
        log = match opened.append(&payload(next)) {
            Ok(seq) => {
                assert_eq!(seq, next, "round {round}");
                next += 1;
                opened
            }
            Err(e) => {
                assert_eq!(e.kind(), aof2::ErrorKind::Closed, "round {round}: {e}");
                let reopened = manager.open_log("raced", config.clone()).unwrap();
                assert_eq!(reopened.next_seq(), next, "round {round}");
                reopened
            }
        };
    }
    log.close().unwrap();
    assert_eq!(manager.tier_stats().tier0_used_bytes, 0);
    let log = manager.open_log("raced", config).unwrap();
    assert_eq!(log.next_seq(), next);
    for seq in 0..next {
        assert_eq!(
            log.read(seq).unwrap().payload(),
            payload(seq),
            "record {seq}"
        );
    }
    manager.close().unwrap();
}

/// The manager closed while logs are being opened: every open either fails with `Closed` or
/// returns a handle the close closed; nothing is left open (the Tier 0 budget is back to zero)
/// and every record is there after a reopen.
#[test]
fn manager_close_racing_opens_leaves_nothing_open() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..40u64 {
        let manager = AofManager::open(manager_config(dir.path())).unwrap();
        let outcomes = race(3, |i| {
            if i == 0 {
                manager.close().map(|()| None)
            } else {
                let name = format!("log-{i}");
                manager
                    .open_log(&name, log_config(Durability::Always))
                    .map(Some)
            }
        });
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(Some(log)) => {
                    let e = log.append(b"late").unwrap_err();
                    assert_eq!(
                        e.kind(),
                        aof2::ErrorKind::Closed,
                        "round {round} log {i}: {e}"
                    );
                }
                Ok(None) => {}
                Err(e) => assert_eq!(e.kind(), aof2::ErrorKind::Closed, "round {round}: {e}"),
            }
        }
        let stats = manager.tier_stats();
        assert_eq!(stats.tier0_used_bytes, 0, "round {round}: {stats:?}");
        drop(manager);
        // The root is free again, and each log takes its next record.
        let manager = AofManager::open(manager_config(dir.path())).unwrap();
        for i in 1..3 {
            let log = manager
                .open_log(&format!("log-{i}"), log_config(Durability::Always))
                .unwrap();
            assert_eq!(log.append(&payload(round)).unwrap(), round, "round {round}");
        }
        manager.close().unwrap();
    }
}

/// An open that fails (a log directory whose segment files lost their manifest) leaves nothing
/// reserved behind, also when several fail at once: once the directory is fixed, the next open
/// works.
#[test]
fn failed_opens_leave_the_name_free() {
    let dir = tempfile::tempdir().unwrap();
    let manager = AofManager::open(manager_config(dir.path())).unwrap();
    let segments = dir.path().join("logs/broken/segments");
    std::fs::create_dir_all(&segments).unwrap();
    let stray = segments.join("0000000000000000.seg");
    std::fs::write(&stray, b"left without a manifest").unwrap();
    for round in 0..50 {
        let outcomes = race(3, |_| {
            manager
                .open_log("broken", log_config(Durability::Always))
                .map(|_| ())
        });
        for outcome in outcomes {
            let e = outcome.unwrap_err();
            assert_eq!(e.kind(), aof2::ErrorKind::Corruption, "round {round}: {e}");
        }
    }
    std::fs::remove_file(&stray).unwrap();
    let log = manager
        .open_log("broken", log_config(Durability::Always))
        .unwrap();
    assert_eq!(log.append(b"fixed").unwrap(), 0);
    manager.close().unwrap();
}
