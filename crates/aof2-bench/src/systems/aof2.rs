//! aof2 under test: one manager per directory, one log named `bench`, in one of three durability
//! modes (`Always`, `Interval(10 ms)`, `None`); every other setting is the library default.
//!
//! Contract: as [`super::System`]. Appends call `Aof::append` (for `Always` it returns after a
//! group-commit fdatasync covers the record). Reads use `Aof::reader` / `Aof::read` under the
//! default visibility (durable records; `sync` flushes first). `fsyncs` is `LogStats::flushes`.
//! [`Aof2System::log`] exposes the log for aof2-only workloads (pipelining, follow-mode tail).
//! With `AOF2_BENCH_STATS` set in the environment, closing prints the log's `LogStats` (group
//! commits, fsync mean, rollover waits, segments prepared in evicted files) on stderr.

use std::path::Path;
use std::time::{Duration, Instant};

use ::aof2::{Aof, AofManager, Durability, LogConfig, ManagerConfig};

use super::{Result, System, SystemKind, Writer};

/// Name of the log every aof2 system appends to.
pub const LOG_NAME: &str = "bench";

/// aof2 opened in one directory.
#[derive(Debug)]
pub struct Aof2System {
    kind: SystemKind,
    manager: AofManager,
    log: Aof,
}

/// The durability mode of an aof2 kind.
pub fn durability(kind: SystemKind) -> Durability {
    match kind {
        SystemKind::Aof2Always => Durability::Always,
        SystemKind::Aof2Interval => Durability::Interval(Duration::from_millis(10)),
        _ => Durability::None,
    }
}

impl Aof2System {
    /// Open (or recover) the manager in `dir` and its log [`LOG_NAME`].
    pub fn open(kind: SystemKind, dir: &Path) -> Result<Self> {
        let manager = AofManager::open(ManagerConfig::new(dir))?;
        let log = manager.open_log(
            LOG_NAME,
            LogConfig {
                durability: durability(kind),
                ..LogConfig::default()
            },
        )?;
        Ok(Aof2System { kind, manager, log })
    }

    /// The log, for workloads only aof2 supports.
    pub fn log(&self) -> &Aof {
        &self.log
    }
}

struct Aof2Writer<'a> {
    log: &'a Aof,
}

impl Writer for Aof2Writer<'_> {
    fn append(&mut self, _id: u64, payload: &[u8]) -> Result<()> {
        self.log.append(payload)?;
        Ok(())
    }
}

impl System for Aof2System {
    fn kind(&self) -> SystemKind {
        self.kind
    }

    fn writer(&self, _index: usize) -> Box<dyn Writer + '_> {
        Box::new(Aof2Writer { log: &self.log })
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(self.log.stats().flushes)
    }

    /// Wait (at most 5 s) until the segments the log keeps prepared ahead are ready, as
    /// `aof2 bench` does after its warm-up.
    fn settle(&self) {
        let started = Instant::now();
        while self.log.stats().prepared_ready < ::aof2::limits::PREPARED_SEGMENTS_AHEAD as u64
            && started.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn sync(&self) -> Result<()> {
        Ok(self.log.flush()?)
    }

    fn can_read(&self) -> bool {
        true
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let mut count = 0;
        for record in self.log.reader(0) {
            visit(record?.payload())?;
            count += 1;
        }
        Ok(count)
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        visit(self.log.read(id)?.payload())
    }

    fn recovered_records(&self) -> Result<u64> {
        Ok(self.log.next_seq())
    }

    fn close(self: Box<Self>) -> Result<()> {
        if std::env::var_os("AOF2_BENCH_STATS").is_some() {
            eprintln!("{:?}", self.log.stats());
        }
        self.log.close()?;
        self.manager.close()?;
        Ok(())
    }
}
