//! The machine around the benchmark: where data and results go, memory warm-up, device counters.
//!
//! Contract:
//! - [`target_dir`]: `$CARGO_TARGET_DIR` if set, else the nearest ancestor of the running
//!   executable named `target`, else `<crate>/../../target`.
//! - [`default_data_dir`]: the system temporary directory when it is on a real disk (not tmpfs or
//!   ramfs), else `<target>/aof2-bench/data`.
//! - [`warm_memory`]: touches `bytes` of fresh anonymous memory once and frees it (first touch is
//!   slow on the VMs this runs on; afterwards the page cache fills at memory speed).
//! - [`DeviceFlushes`]: the "flush requests completed" and "writes completed" counters of
//!   `/proc/diskstats` for the block device holding a directory. They are device-wide (other
//!   processes count too) and include the filesystem's own journal I/O: estimates, reported as
//!   such.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Filesystem magic numbers of memory-backed filesystems (`statfs(2)`).
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Where build outputs live (see the module contract).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "target"))
    {
        return dir.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Whether `dir` is on a memory-backed filesystem.
pub fn is_memory_fs(dir: &Path) -> bool {
    rustix::fs::statfs(dir)
        .map(|s| {
            let magic = s.f_type as u64;
            magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
        })
        .unwrap_or(false)
}

/// The default parent of the benchmark's data directories (see the module contract).
pub fn default_data_dir(target: &Path) -> PathBuf {
    let tmp = std::env::temp_dir();
    if is_memory_fs(&tmp) {
        target.join("aof2-bench").join("data")
    } else {
        tmp
    }
}

/// Touch `bytes` of anonymous memory once and give it back.
pub fn warm_memory(bytes: u64) {
    let Ok(len) = usize::try_from(bytes) else {
        return;
    };
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(len).is_err() {
        return;
    }
    block.resize(len, 1);
    std::hint::black_box(&block);
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The flush and write counters of one block device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFlushes {
    major: u32,
    minor: u32,
}

impl DeviceFlushes {
    /// The device holding `dir`, if `/proc/diskstats` reports flushes for it.
    pub fn for_dir(dir: &Path) -> Option<Self> {
        let dev = std::fs::metadata(dir).ok()?.dev();
        let device = DeviceFlushes {
            major: rustix::fs::major(dev),
            minor: rustix::fs::minor(dev),
        };
        device.read().map(|_| device)
    }

    /// (flush requests, write requests) completed so far.
    pub fn read(&self) -> Option<(u64, u64)> {
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = fields.first()?.parse::<u32>().ok()? == self.major
                && fields.get(1)?.parse::<u32>().ok()? == self.minor;
            // major minor name, then 17 counters: writes completed is counter 5, flushes
            // completed counter 16.
            let counter = |n: usize| fields.get(2 + n)?.parse::<u64>().ok();
            ours.then(|| Some((counter(16)?, counter(5)?))).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_and_data_dirs() {
        let target = target_dir();
        assert!(target.ends_with("target") || std::env::var_os("CARGO_TARGET_DIR").is_some());
        let data = default_data_dir(&target);
        assert!(!is_memory_fs(&data) || data.starts_with(&target));
    }
}
