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
