//! Physical baselines: what the machine does with no log format at all.
//!
//! Contract: as [`super::System`], with fixed-size records and no framing, so there is no
//! recovery (`recovered_records` is unsupported) and records are found by `id * record_size`.
//! - [`RawFile`], kind `RawFdatasync`: one `pwrite` and one `fdatasync` per record, both under one
//!   mutex (no group commit), into a ring of at most [`RAW_RING_BYTES`] that is zero-filled and
//!   synced when opened, so the timed syncs flush data only, never block allocation. `fsyncs`
//!   counts the fdatasync calls.
//! - [`RawFile`], kind `RawGroupCommit`: the same ring, one `pwrite` per record under the mutex,
//!   then the least a group commit does: a writer that finds no sync running syncs everything
//!   written so far (no gathering window), the others sleep on a futex until a sync covers them,
//!   and each sync wakes every sleeper. What thread-per-writer group commit costs on this machine
//!   with nothing else in the way. `fsyncs` counts the fdatasync calls.
//! - [`RawFile`], kind `RawWrite`: one `pwrite` per record under a mutex into a file preallocated
//!   (`fallocate`) to `capacity_bytes`; appending past it fails.
//! - [`Memcpy`]: `copy_from_slice` into a pre-touched buffer of at most [`MEMCPY_RING_BYTES`]
//!   under a mutex (the ceiling of any buffered append).
//!
//! Reads see the first lap only: after a ring wrapped, ids below the overwritten ones are gone.

use std::fs::{File, OpenOptions as FsOpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{OpenOptions, Result, System, SystemKind, Writer, unsupported};

/// Largest ring of the durable raw file.
pub const RAW_RING_BYTES: u64 = 32 << 20;
/// Largest memcpy ring.
pub const MEMCPY_RING_BYTES: u64 = 64 << 20;
/// Bytes per read while scanning a raw file.
const SCAN_READ_BYTES: usize = 1 << 20;

/// Ring or file size: `capacity` capped at `cap` and rounded down to whole records (at least one).
fn ring_bytes(capacity: u64, cap: u64, record_size: usize) -> u64 {
    let size = record_size.max(1) as u64;
    (capacity.min(cap) / size).max(1) * size
}

/// A raw file written with one `pwrite` per record.
#[derive(Debug)]
pub struct RawFile {
    kind: SystemKind,
    file: File,
    record_size: usize,
    /// Bytes of the file that may be written (a ring for `RawFdatasync`).
    len: u64,
    /// Next write offset, and how many records were appended.
    state: Mutex<(u64, u64)>,
    fsyncs: AtomicU64,
    /// `RawGroupCommit`: records written (published under `state`'s lock) and covered by a sync.
    written: AtomicU64,
    durable: AtomicU64,
    syncing: AtomicBool,
    /// Bumped after every sync; sleepers wait on it.
    sync_epoch: AtomicU32,
}

impl RawFile {
    /// Create (or reuse) `raw.dat` in `dir`, zero-filled (`RawFdatasync`) or preallocated
    /// (`RawWrite`) to its full length.
    pub fn open(kind: SystemKind, dir: &Path, options: &OpenOptions) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("raw.dat"))?;
        let len = if kind != SystemKind::RawWrite {
            let len = ring_bytes(options.capacity_bytes, RAW_RING_BYTES, options.record_size);
            let zeros = vec![0u8; SCAN_READ_BYTES];
            let mut at = 0;
            while at < len {
                let n = (len - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            len
        } else {
            let len = ring_bytes(options.capacity_bytes, u64::MAX, options.record_size);
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len)?;
            len
        };
        Ok(RawFile {
            kind,
            file,
            record_size: options.record_size,
            len,
            state: Mutex::new((0, 0)),
            fsyncs: AtomicU64::new(0),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            syncing: AtomicBool::new(false),
            sync_epoch: AtomicU32::new(0),
        })
    }

    /// `RawGroupCommit`: return once a sync covers the first `records` records.
    fn sync_to(&self, records: u64) -> Result<()> {
        loop {
            let epoch = self.sync_epoch.load(Ordering::Acquire);
            if self.durable.load(Ordering::Acquire) >= records {
                return Ok(());
            }
            if self.syncing.swap(true, Ordering::AcqRel) {
                atomic_wait::wait(&self.sync_epoch, epoch);
                continue;
            }
            let target = self.written.load(Ordering::Acquire);
            let synced = self.file.sync_data();
            if synced.is_ok() {
                self.durable.fetch_max(target, Ordering::AcqRel);
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            self.syncing.store(false, Ordering::Release);
            self.sync_epoch.fetch_add(1, Ordering::AcqRel);
            atomic_wait::wake_all(&self.sync_epoch);
            synced?;
        }
    }

    fn readable_records(&self) -> Result<u64> {
        let appended = self.state.lock().map_err(|_| "raw mutex poisoned")?.1;
        Ok(appended.min(self.len / self.record_size.max(1) as u64))
    }
}

struct RawWriter<'a> {
    raw: &'a RawFile,
}

impl Writer for RawWriter<'_> {
    fn append(&mut self, _id: u64, payload: &[u8]) -> Result<()> {
        let raw = self.raw;
        let mut state = raw.state.lock().map_err(|_| "raw mutex poisoned")?;
        let mut offset = state.0;
        if offset + payload.len() as u64 > raw.len {
            if raw.kind == SystemKind::RawWrite {
                return Err(format!("raw file of {} bytes is full", raw.len).into());
            }
            offset = 0;
        }
        raw.file.write_all_at(payload, offset)?;
        if raw.kind == SystemKind::RawFdatasync {
            raw.file.sync_data()?;
            raw.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        *state = (offset + payload.len() as u64, state.1 + 1);
        if raw.kind == SystemKind::RawGroupCommit {
            let mine = state.1;
            raw.written.store(mine, Ordering::Release);
            drop(state);
            raw.sync_to(mine)?;
        }
        Ok(())
    }
}

impl System for RawFile {
    fn kind(&self) -> SystemKind {
        self.kind
    }

    fn writer(&self, _index: usize) -> Box<dyn Writer + '_> {
        Box::new(RawWriter { raw: self })
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(self.fsyncs.load(Ordering::Relaxed))
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data()?;
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn can_read(&self) -> bool {
        true
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let size = self.record_size.max(1);
        let records = self.readable_records()?;
        let per_read = (SCAN_READ_BYTES / size).max(1);
        let mut buf = vec![0u8; per_read * size];
        let mut done = 0;
        while done < records {
            let n = (records - done).min(per_read as u64) as usize;
            let chunk = &mut buf[..n * size];
            self.file.read_exact_at(chunk, done * size as u64)?;
            for record in chunk.chunks_exact(size) {
                visit(record)?;
            }
            done += n as u64;
        }
        Ok(records)
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if id >= self.readable_records()? {
            return Err(format!("raw: no record with id {id}").into());
        }
        let mut buf = vec![0u8; self.record_size];
        self.file
            .read_exact_at(&mut buf, id * self.record_size as u64)?;
        visit(&buf)
    }

    fn recovered_records(&self) -> Result<u64> {
        Err(unsupported(self.kind, "recovery (no framing)"))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

/// `memcpy` into a pre-touched ring.
#[derive(Debug)]
pub struct Memcpy {
    record_size: usize,
    /// The ring, the next offset, and how many records were appended.
    state: Mutex<(Vec<u8>, usize, u64)>,
}

impl Memcpy {
    /// A ring of `min(capacity_bytes, MEMCPY_RING_BYTES)`, every page written once.
    pub fn open(options: &OpenOptions) -> Result<Self> {
        let len = ring_bytes(
            options.capacity_bytes,
            MEMCPY_RING_BYTES,
            options.record_size,
        );
        let ring = vec![1u8; usize::try_from(len)?];
        Ok(Memcpy {
            record_size: options.record_size,
            state: Mutex::new((ring, 0, 0)),
        })
    }
}

struct MemcpyWriter<'a> {
    memcpy: &'a Memcpy,
}

impl Writer for MemcpyWriter<'_> {
    fn append(&mut self, _id: u64, payload: &[u8]) -> Result<()> {
        let mut state = self
            .memcpy
            .state
            .lock()
            .map_err(|_| "memcpy mutex poisoned")?;
        let (ring, offset, appended) = &mut *state;
        if *offset + payload.len() > ring.len() {
            *offset = 0;
        }
        ring[*offset..*offset + payload.len()].copy_from_slice(payload);
        *offset += payload.len();
        *appended += 1;
        Ok(())
    }
}

impl System for Memcpy {
    fn kind(&self) -> SystemKind {
        SystemKind::Memcpy
    }

    fn writer(&self, _index: usize) -> Box<dyn Writer + '_> {
        Box::new(MemcpyWriter { memcpy: self })
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(0)
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn can_read(&self) -> bool {
        true
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let state = self.state.lock().map_err(|_| "memcpy mutex poisoned")?;
        let size = self.record_size.max(1);
        let records = state.2.min((state.0.len() / size) as u64);
        for record in state.0.chunks_exact(size).take(records as usize) {
            visit(record)?;
        }
        Ok(records)
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let state = self.state.lock().map_err(|_| "memcpy mutex poisoned")?;
        let size = self.record_size.max(1);
        let start = usize::try_from(id)? * size;
        if id >= state.2 || start + size > state.0.len() {
            return Err(format!("memcpy: no record with id {id}").into());
        }
        visit(&state.0[start..start + size])
    }

    fn recovered_records(&self) -> Result<u64> {
        Err(unsupported(SystemKind::Memcpy, "recovery (memory only)"))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
