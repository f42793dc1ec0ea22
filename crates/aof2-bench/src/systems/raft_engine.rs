//! raft-engine 0.4 under test (built without default features): `Engine::open(Config { dir,
//! ..Default::default() })`; per record `LogBatch::put(region, key, payload)` +
//! `Engine::write(&mut batch, sync)`, with region = writer index + 1 and key = the record id
//! (big endian, so keys sort in id order). raft-engine forms write groups: one fdatasync covers
//! every writer of the group when `sync` is true.
//!
//! Contract: as [`super::System`]. Key-values written with `put` live in the engine's memtable
//! (memory) as well as in its log files, so reads (`get`, `scan_raw_messages`) are memory reads
//! and reopening replays every file. `Engine::sync` is a no-op for an empty batch, so `sync` here
//! does nothing more. raft-engine does not expose a sync count (`fsyncs` is `None`).

use std::path::Path;

use ::raft_engine::{Config, Engine, LogBatch};

use super::{Result, System, SystemKind, Writer};

/// raft-engine opened in one directory.
pub struct RaftEngineSystem {
    kind: SystemKind,
    engine: Engine,
}

impl std::fmt::Debug for RaftEngineSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftEngineSystem")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Region of writer `index`.
fn region(index: usize) -> u64 {
    index as u64 + 1
}

impl RaftEngineSystem {
    /// Open (or recover) the engine in `dir` with the default configuration.
    pub fn open(kind: SystemKind, dir: &Path) -> Result<Self> {
        let config = Config {
            dir: dir
                .to_str()
                .ok_or("raft-engine needs a UTF-8 directory")?
                .to_owned(),
            ..Config::default()
        };
        Ok(RaftEngineSystem {
            kind,
            engine: Engine::open(config)?,
        })
    }
}

struct RaftWriter<'a> {
    engine: &'a Engine,
    region: u64,
    sync: bool,
    batch: LogBatch,
}

impl Writer for RaftWriter<'_> {
    fn append(&mut self, id: u64, payload: &[u8]) -> Result<()> {
        self.batch
            .put(self.region, id.to_be_bytes().to_vec(), payload.to_vec())?;
        self.engine.write(&mut self.batch, self.sync)?;
        Ok(())
    }
}

impl System for RaftEngineSystem {
    fn kind(&self) -> SystemKind {
        self.kind
    }

    fn writer(&self, index: usize) -> Box<dyn Writer + '_> {
        Box::new(RaftWriter {
            engine: &self.engine,
            region: region(index),
            sync: self.kind == SystemKind::RaftEngineSync,
            batch: LogBatch::default(),
        })
    }

    fn fsyncs(&self) -> Option<u64> {
        None
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn can_read(&self) -> bool {
        true
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut count = 0;
        let mut failure = None;
        self.engine
            .scan_raw_messages(region(0), None, None, false, |_, value| {
                match visit(value) {
                    Ok(()) => count += 1,
                    Err(e) => failure = Some(e),
                }
                failure.is_none()
            })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let value = self
            .engine
            .get(region(0), &id.to_be_bytes())
            .ok_or_else(|| format!("raft-engine: no record with id {id}"))?;
        visit(&value)
    }

    /// Every key of every region (a full count over the memtables).
    fn recovered_records(&self) -> Result<u64> {
        let mut count = 0;
        for region in self.engine.raft_groups() {
            self.engine
                .scan_raw_messages(region, None, None, false, |_, _| {
                    count += 1;
                    true
                })?;
        }
        Ok(count)
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
