//! The systems under test, behind one small interface.
//!
//! Contract:
//! - [`SystemKind::open`] opens a system on a directory it owns: empty (created) or holding what
//!   an earlier instance of the same kind left there (that is how reopen is measured).
//! - Each appending thread takes its own [`Writer`] from [`System::writer`] (`index` = the
//!   thread's number, `0..writers`). [`Writer::append`] returns when the system acknowledges the
//!   record; [`SystemKind::durable`] is true iff that acknowledgement waits for an `fdatasync`
//!   covering the record.
//! - Reads ([`System::scan`], [`System::read`]) address the records writer 0 appended with ids
//!   `0, 1, 2, …` in that order into a fresh system (the layout the read-back workload and the
//!   tests use). A system that cannot read returns an error saying so; [`System::can_read`] tells
//!   in advance.
//! - [`System::fsyncs`] is the system's own count of fdatasync rounds since open, or `None` when
//!   the system does not expose one (the workloads then report device flushes, marked as such).

pub mod aof2;
pub mod commitlog;
pub mod okaywal;
pub mod raft_engine;
pub mod raw;

use std::path::Path;

/// Any error a system or workload can raise.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`BoxError`].
pub type Result<T> = std::result::Result<T, BoxError>;

/// The error for an operation a system does not offer.
pub fn unsupported(system: SystemKind, what: &str) -> BoxError {
    format!("{}: {what} is not supported", system.name()).into()
}

/// One thread's append handle.
pub trait Writer {
    /// Append one record (`id` is unique per system instance; see the module contract) and return
    /// once the system acknowledges it.
    fn append(&mut self, id: u64, payload: &[u8]) -> Result<()>;
}

/// A system under test, opened on one directory.
pub trait System: Send + Sync {
    /// Which system this is.
    fn kind(&self) -> SystemKind;
    /// The append handle of thread `index`.
    fn writer(&self, index: usize) -> Box<dyn Writer + '_>;
    /// fdatasync rounds since open, when the system counts them.
    fn fsyncs(&self) -> Option<u64>;
    /// Wait for background preparation started by earlier appends (called after the warm-up).
    fn settle(&self) {}
    /// Make every acknowledged record durable and visible to reads.
    fn sync(&self) -> Result<()>;
    /// Whether [`System::scan`] and [`System::read`] work.
    fn can_read(&self) -> bool;
    /// Visit every record of writer 0 in id order; returns how many were visited.
    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64>;
    /// Visit the record of writer 0 with id `id`.
    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
    /// How many records the system holds after (re)opening, as its own metadata says.
    fn recovered_records(&self) -> Result<u64>;
    /// Close cleanly (sync where the system does so on close).
    fn close(self: Box<Self>) -> Result<()>;
}

/// Options every system is opened with.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Payload size of every record, bytes.
    pub record_size: usize,
    /// How many bytes the run may append at most (sizes preallocated files and buffers).
    pub capacity_bytes: u64,
    /// Keep what reads need even where the system does not (okaywal chunk positions).
    pub track_positions: bool,
}

/// The systems and modes the suite knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum SystemKind {
    /// aof2, `Durability::Always`.
    Aof2Always,
    /// aof2, `Durability::Interval(10 ms)`.
    Aof2Interval,
    /// aof2, `Durability::None`.
    Aof2None,
    /// okaywal 0.3: `begin_entry` / `write_chunk` / `commit` (commit syncs).
    Okaywal,
    /// raft-engine 0.4: `LogBatch::put` + `Engine::write(batch, true)`.
    RaftEngineSync,
    /// raft-engine 0.4: `LogBatch::put` + `Engine::write(batch, false)`.
    RaftEngineNosync,
    /// commitlog 0.2: `append_msg` (its `flush` does not fsync).
    Commitlog,
    /// One `pwrite` + `fdatasync` per record under a mutex, zero-filled file.
    RawFdatasync,
    /// The least a group commit does: one `pwrite` per record under a mutex; a waiter that finds
    /// no sync running syncs everything written so far, the others sleep until one covers them.
    RawGroupCommit,
    /// One `pwrite` per record under a mutex, preallocated file.
    RawWrite,
    /// `memcpy` into a pre-touched buffer: the physical limit of a buffered append.
    Memcpy,
}

impl SystemKind {
    /// Every kind, in table order.
    pub const ALL: [SystemKind; 11] = [
        SystemKind::Aof2Always,
        SystemKind::Aof2Interval,
        SystemKind::Aof2None,
        SystemKind::Okaywal,
        SystemKind::RaftEngineSync,
        SystemKind::RaftEngineNosync,
        SystemKind::Commitlog,
        SystemKind::RawFdatasync,
        SystemKind::RawGroupCommit,
        SystemKind::RawWrite,
        SystemKind::Memcpy,
    ];

    /// Name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::Aof2Always => "aof2 always",
            SystemKind::Aof2Interval => "aof2 interval:10ms",
            SystemKind::Aof2None => "aof2 none",
            SystemKind::Okaywal => "okaywal",
            SystemKind::RaftEngineSync => "raft-engine sync",
            SystemKind::RaftEngineNosync => "raft-engine nosync",
            SystemKind::Commitlog => "commitlog",
            SystemKind::RawFdatasync => "raw write+fdatasync",
            SystemKind::RawGroupCommit => "raw group commit",
            SystemKind::RawWrite => "raw write",
            SystemKind::Memcpy => "memcpy",
        }
    }

    /// Whether an acknowledged append has been covered by an fdatasync.
    pub fn durable(self) -> bool {
        matches!(
            self,
            SystemKind::Aof2Always
                | SystemKind::Okaywal
                | SystemKind::RaftEngineSync
                | SystemKind::RawFdatasync
                | SystemKind::RawGroupCommit
        )
    }

    /// One of aof2's modes.
    pub fn is_aof2(self) -> bool {
        matches!(
            self,
            SystemKind::Aof2Always | SystemKind::Aof2Interval | SystemKind::Aof2None
        )
    }

    /// A physical baseline rather than a log (raw file, memcpy).
    pub fn is_baseline(self) -> bool {
        matches!(
            self,
            SystemKind::RawFdatasync
                | SystemKind::RawGroupCommit
                | SystemKind::RawWrite
                | SystemKind::Memcpy
        )
    }

    /// A peer log (neither aof2 nor a baseline).
    pub fn is_peer(self) -> bool {
        !self.is_aof2() && !self.is_baseline()
    }

    /// What an acknowledgement means and other facts a reader of the table needs.
    pub fn notes(self) -> &'static str {
        match self {
            SystemKind::Aof2Always => "ack after fdatasync (group commit)",
            SystemKind::Aof2Interval => "ack after write; fdatasync every 10 ms",
            SystemKind::Aof2None => "ack after write to page cache",
            SystemKind::Okaywal => "commit() fdatasyncs (group commit); no-op checkpointer",
            SystemKind::RaftEngineSync => "put + write(sync=true): fdatasync per write group",
            SystemKind::RaftEngineNosync => "put + write(sync=false)",
            SystemKind::Commitlog => "append_msg; flush() does not fsync",
            SystemKind::RawFdatasync => "pwrite+fdatasync per record under a mutex",
            SystemKind::RawGroupCommit => {
                "pwrite per record under a mutex; first waiter fdatasyncs for all, futex wake-all"
            }
            SystemKind::RawWrite => "pwrite per record under a mutex",
            SystemKind::Memcpy => "memcpy into pre-touched memory under a mutex",
        }
    }

    /// Open (creating or recovering) this system in `dir`.
    pub fn open(self, dir: &Path, options: &OpenOptions) -> Result<Box<dyn System>> {
        Ok(match self {
            SystemKind::Aof2Always | SystemKind::Aof2Interval | SystemKind::Aof2None => {
                Box::new(aof2::Aof2System::open(self, dir)?)
            }
            SystemKind::Okaywal => Box::new(okaywal::OkaywalSystem::open(dir, options)?),
            SystemKind::RaftEngineSync | SystemKind::RaftEngineNosync => {
                Box::new(raft_engine::RaftEngineSystem::open(self, dir)?)
            }
            SystemKind::Commitlog => Box::new(commitlog::CommitlogSystem::open(dir, options)?),
            SystemKind::RawFdatasync | SystemKind::RawGroupCommit | SystemKind::RawWrite => {
                Box::new(raw::RawFile::open(self, dir, options)?)
            }
            SystemKind::Memcpy => Box::new(raw::Memcpy::open(options)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{PayloadBuilder, PayloadKind};

    /// Every adapter appends 100 records and reads them back, by scan and by id.
    #[test]
    fn every_system_round_trips() {
        for kind in SystemKind::ALL {
            for size in [64usize, 1024] {
                let dir = tempfile::tempdir().expect("temp dir");
                let options = OpenOptions {
                    record_size: size,
                    capacity_bytes: 1 << 20,
                    track_positions: true,
                };
                let system = kind.open(dir.path(), &options).expect("open");
                assert_eq!(system.kind(), kind);
                let mut builder = PayloadBuilder::new(size, PayloadKind::Text);
                {
                    let mut writer = system.writer(0);
                    for id in 0..100 {
                        writer.append(id, builder.build(id)).expect("append");
                    }
                }
                system.sync().expect("sync");
                assert!(system.can_read(), "{kind:?}");
                let mut expected = 0;
                let count = system
                    .scan(&mut |payload| {
                        let id = builder.check(payload)?;
                        assert_eq!(id, expected, "{kind:?}");
                        expected += 1;
                        Ok(())
                    })
                    .expect("scan");
                assert_eq!(count, 100, "{kind:?} {size}");
                for id in [0, 57, 99] {
                    let mut seen = None;
                    system
                        .read(id, &mut |payload| {
                            seen = Some(builder.check(payload)?);
                            Ok(())
                        })
                        .expect("read");
                    assert_eq!(seen, Some(id), "{kind:?}");
                }
                if let Ok(n) = system.recovered_records()
                    && kind != SystemKind::Okaywal
                {
                    assert_eq!(n, 100, "{kind:?}");
                }
                system.close().expect("close");
                // Reopening finds the records (okaywal: replays the un-checkpointed entries).
                let reopened = kind.open(dir.path(), &options).expect("reopen");
                if let Ok(n) = reopened.recovered_records() {
                    assert_eq!(n, 100, "{kind:?} reopened");
                }
                reopened.close().expect("close again");
            }
        }
    }
}
