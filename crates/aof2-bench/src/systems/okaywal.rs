//! okaywal 0.3 under test: `WriteAheadLog::recover(dir, manager)`, then per record
//! `begin_entry` / `write_chunk(payload)` / `commit` (commit returns after `sync_data`, shared by
//! the writers waiting at that moment: okaywal group-commits too). Default configuration.
//!
//! Contract: as [`super::System`]. okaywal is a write-ahead log in front of a store: its
//! `checkpoint_to` here is a no-op (the store is free), so segment files are recycled after every
//! 768 KiB and old entries become unreadable. Reads therefore work only with
//! `OpenOptions::track_positions` (the chunk positions are then kept in memory) and only until
//! the first checkpoint; the read-back workload leaves okaywal out. okaywal does not count its
//! syncs (`fsyncs` is `None`). `recovered_records` counts the entries replayed by the last
//! recovery (the un-checkpointed tail, not everything ever written).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ::okaywal::{Entry, EntryId, LogManager, LogPosition, SegmentReader, WriteAheadLog};

use super::{OpenOptions, Result, System, SystemKind, Writer, unsupported};

/// The log manager: replays (and counts) entries on recovery, checkpoints nothing.
#[derive(Debug)]
struct Checkpointer {
    recovered: Arc<AtomicU64>,
}

impl LogManager for Checkpointer {
    fn recover(&mut self, entry: &mut Entry<'_>) -> std::io::Result<()> {
        if entry.read_all_chunks()?.is_some() {
            self.recovered.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn checkpoint_to(
        &mut self,
        _last_checkpointed_id: EntryId,
        _checkpointed_entries: &mut SegmentReader,
        _wal: &WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

/// okaywal opened in one directory.
#[derive(Debug)]
pub struct OkaywalSystem {
    wal: WriteAheadLog,
    recovered: Arc<AtomicU64>,
    /// (id, position, length) of every chunk of writer 0, when tracking.
    positions: Option<Mutex<Vec<(u64, LogPosition, u32)>>>,
}

impl OkaywalSystem {
    /// Recover (or create) the log in `dir`.
    pub fn open(dir: &Path, options: &OpenOptions) -> Result<Self> {
        let recovered = Arc::new(AtomicU64::new(0));
        let wal = WriteAheadLog::recover(
            dir,
            Checkpointer {
                recovered: recovered.clone(),
            },
        )?;
        Ok(OkaywalSystem {
            wal,
            recovered,
            positions: options.track_positions.then(|| Mutex::new(Vec::new())),
        })
    }

    fn position(&self, id: u64) -> Result<(LogPosition, u32)> {
        let positions = self
            .positions
            .as_ref()
            .ok_or_else(|| unsupported(SystemKind::Okaywal, "reading without tracked positions"))?;
        let positions = positions.lock().map_err(|_| "poisoned")?;
        let index = positions
            .binary_search_by_key(&id, |p| p.0)
            .map_err(|_| format!("okaywal: no record with id {id}"))?;
        Ok((positions[index].1, positions[index].2))
    }

    fn read_chunk(&self, position: LogPosition, length: u32, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.reserve(length as usize);
        self.wal.read_at(position)?.read_to_end(buf)?;
        Ok(())
    }
}

struct OkaywalWriter<'a> {
    system: &'a OkaywalSystem,
    track: bool,
}

impl Writer for OkaywalWriter<'_> {
    fn append(&mut self, id: u64, payload: &[u8]) -> Result<()> {
        let mut entry = self.system.wal.begin_entry()?;
        let chunk = entry.write_chunk(payload)?;
        entry.commit()?;
        if self.track
            && let Some(positions) = &self.system.positions
        {
            positions
                .lock()
                .map_err(|_| "poisoned")?
                .push((id, chunk.position, chunk.length));
        }
        Ok(())
    }
}

impl System for OkaywalSystem {
    fn kind(&self) -> SystemKind {
        SystemKind::Okaywal
    }

    fn writer(&self, index: usize) -> Box<dyn Writer + '_> {
        Box::new(OkaywalWriter {
            system: self,
            track: index == 0,
        })
    }

    fn fsyncs(&self) -> Option<u64> {
        None
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn can_read(&self) -> bool {
        self.positions.is_some()
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let positions: Vec<_> = self
            .positions
            .as_ref()
            .ok_or_else(|| unsupported(SystemKind::Okaywal, "scanning without tracked positions"))?
            .lock()
            .map_err(|_| "poisoned")?
            .clone();
        let mut buf = Vec::new();
        for (_, position, length) in &positions {
            self.read_chunk(*position, *length, &mut buf)?;
            visit(&buf)?;
        }
        Ok(positions.len() as u64)
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let (position, length) = self.position(id)?;
        let mut buf = Vec::new();
        self.read_chunk(position, length, &mut buf)?;
        visit(&buf)
    }

    fn recovered_records(&self) -> Result<u64> {
        Ok(self.recovered.load(Ordering::Relaxed))
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(self.wal.shutdown()?)
    }
}
