//! Thin, safe wrappers over the few system calls aof2 needs beyond `std`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{IoContext, Result};
use crate::limits::TRANSIENT_IO_RETRIES;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lower the calling thread's CPU priority (nice +`by`): background tiering work yields to
/// appends and reads. Best effort (a failure only logs).
pub fn lower_thread_priority(by: i32) {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), by) {
        tracing::debug!(error = %e, "could not lower a background thread's priority");
    }
}

/// 128 random bits from the kernel.
pub fn random_u128() -> u128 {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                // Fall back to time and address entropy; identities only need to be unique.
                let t = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                return t ^ ((&buf as *const _ as usize as u128) << 64);
            }
        }
    }
    u128::from_le_bytes(buf)
}

/// fsync a directory so creates, renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).context(|| format!("open directory {}", dir.display()))?;
    retry_transient(|| f.sync_all()).context(|| format!("fsync directory {}", dir.display()))
}

/// Run `op`, retrying EINTR/EAGAIN with exponential backoff and jitter. Any other error is
/// returned at once (a failed fdatasync must never be retried).
pub fn retry_transient<T>(mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match op() {
            Err(e)
                if attempt < TRANSIENT_IO_RETRIES
                    && matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
            {
                let base_us = 50u64 << attempt;
                let jitter = (random_u128() as u64) % base_us.max(1);
                std::thread::sleep(Duration::from_micros(base_us / 2 + jitter / 2));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The temporary name a file written atomically goes by until its rename: `<name>.tmp` (the
/// whole name: a Tier 1 file `<id>.t1` uses `<id>.t1.tmp`, which recovery knows to remove).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Write a whole file atomically: temp file, fsync, rename, fsync directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut f = File::create(&tmp).context(|| format!("create {}", tmp.display()))?;
    f.write_all(bytes)
        .context(|| format!("write {}", tmp.display()))?;
    commit_tmp(&f, &tmp, path)
}

/// Make the temporary file `tmp` (written whole through `file`) the file at `path`: fsync,
/// rename, fsync directory.
pub fn commit_tmp(file: &File, tmp: &Path, path: &Path) -> Result<()> {
    retry_transient(|| file.sync_all()).context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(tmp, path)
        .context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    sync_dir(path.parent().expect("path has a parent"))
}
