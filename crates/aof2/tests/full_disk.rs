//! A full disk, for real: the root lives on a small tmpfs mounted for the test (which needs
//! root, as CI has; elsewhere the test says why it did not run). Appends fill it until one fails
//! with the device's "no space" error. Every acknowledged record must survive, byte for byte;
//! the log must take appends again once space is freed, without a reopen; and a reopen must find
//! everything, compress what could not be compressed, and verify clean.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aof2::{AofManager, Durability, Error, ErrorKind, LogConfig, ManagerConfig};

const NAME: &str = "events";
/// Size of the file system; the ballast takes part of it and is deleted to free space.
const FS_BYTES: u64 = 24 << 20;
const BALLAST_BYTES: usize = 6 << 20;
const SEGMENT_BYTES: u64 = 1 << 20;

/// A tmpfs mounted at a temporary directory for the guard's life.
struct SmallFs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallFs {
    /// `None` (with the reason printed) where this process may not mount.
    fn mount(bytes: u64) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        fs::create_dir(&path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs { _dir: dir, path }),
            Ok(o) => {
                println!(
                    "SKIPPED: cannot mount a small tmpfs here ({}): {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let len = (seq * 7919 % 3000) as usize;
    (0..len)
        .map(|i| (seq as usize * 31 + i * 17) as u8)
        .collect()
}

fn is_no_space(e: &Error) -> bool {
    let mut e = e;
    loop {
        match e {
            Error::Io { source, .. } => return source.kind() == io::ErrorKind::StorageFull,
            Error::LogFailed { cause, .. } => e = cause,
            _ => return false,
        }
    }
}

fn manager(root: &Path) -> AofManager {
    AofManager::open(ManagerConfig::new(root)).expect("open root")
}

fn log_config(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
    }
}

fn fill_free_and_reopen(durability: Durability) {
    let Some(fs) = SmallFs::mount(FS_BYTES) else {
        return;
    };
    let ballast = fs.path.join("ballast");
    fs::write(&ballast, vec![7u8; BALLAST_BYTES]).unwrap();
    let root = fs.path.join("root");
    let m = manager(&root);
    let log = m.open_log(NAME, log_config(durability)).unwrap();

    // Fill the disk. Appends that fail for lack of space are retried a few times (the next one
    // may find space that a seal's truncation or a compression gave back) before we call the
    // disk full.
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut failures = 0;
    let first_error = loop {
        let seq = acked.len() as u64;
        match log.append(&payload(seq)) {
            Ok(s) => {
                assert_eq!(s, seq, "{durability:?}");
                acked.push(payload(seq));
            }
            Err(e) => {
                assert!(
                    is_no_space(&e),
                    "{durability:?}: a full disk must read as one, got {e} ({:?})",
                    e.kind()
                );
                assert_eq!(e.kind(), ErrorKind::Io, "{durability:?}: {e}");
                failures += 1;
                if failures == 3 {
                    break e;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            acked.len() < 200_000,
            "{durability:?}: the disk never filled"
        );
    };
    println!(
        "{durability:?}: {} records acknowledged before the disk was full: {first_error}; \
         compressions failed so far: {}",
        acked.len(),
        m.tier_stats().compress_failures
    );
    if durability != Durability::Always {
        log.flush().expect("a flush needs no new space");
    }
    assert_eq!(
        log.durable_watermark(),
        acked.len() as u64,
        "{durability:?}"
    );
    for (seq, want) in acked.iter().enumerate() {
        let got = log.read(seq as u64).unwrap();
        assert_eq!(got.payload(), want.as_slice(), "{durability:?} seq {seq}");
    }

    // Free space: the same handle takes appends again.
    fs::remove_file(&ballast).unwrap();
    let mut tries = 0;
    loop {
        let seq = acked.len() as u64;
        match log.append(&payload(seq)) {
            Ok(s) => {
                assert_eq!(s, seq, "{durability:?}");
                acked.push(payload(seq));
                break;
            }
            Err(e) if is_no_space(&e) && tries < 500 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{durability:?}: append after space was freed: {e}"),
        }
    }
    // A whole segment more, so a rollover needs a new segment file after the full disk.
    let target = acked.len() + (SEGMENT_BYTES / 1000) as usize;
    while acked.len() < target {
        let seq = acked.len() as u64;
        assert_eq!(log.append(&payload(seq)).unwrap(), seq, "{durability:?}");
        acked.push(payload(seq));
    }
    log.flush().unwrap();
    log.close().unwrap();
    m.close().unwrap();
    drop((log, m));

    let m = manager(&root);
    let log = m.open_log(NAME, log_config(durability)).unwrap();
    assert_eq!(log.next_seq(), acked.len() as u64, "{durability:?}");
    for (seq, want) in acked.iter().enumerate() {
        let got = log.read(seq as u64).unwrap();
        assert_eq!(got.payload(), want.as_slice(), "{durability:?} seq {seq}");
    }
    // Compressions that failed for lack of space are done again once there is room.
    assert!(
        m.wait_for_tier1(&log, Duration::from_secs(60)),
        "{durability:?}: sealed segments still lack a Tier 1 copy: {:?}",
        m.tier_stats()
    );
    let report = m.verify_log(&log);
    assert!(report.problems.is_empty(), "{durability:?}: {report:?}");
    assert_eq!(report.records, acked.len() as u64, "{durability:?}");
    m.close().unwrap();
}

#[test]
fn always_log_on_a_full_disk_loses_nothing_and_resumes() {
    fill_free_and_reopen(Durability::Always);
}

#[test]
fn none_log_on_a_full_disk_loses_nothing_and_resumes() {
    fill_free_and_reopen(Durability::None);
}
