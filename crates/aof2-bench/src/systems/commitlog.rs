//! commitlog 0.2 under test: `CommitLog::new(LogOptions::new(dir))` (defaults, except the
//! largest message, raised to fit the record size), `append_msg(payload)` under a mutex (it needs
//! `&mut self`).
//!
//! Contract: as [`super::System`]. Never durable: `CommitLog::flush` only flushes the `File`
//! handle (a no-op) and msyncs the index, it does not fsync the segment, so `sync` calls it for
//! completeness and nothing it acknowledges is covered by an fdatasync. Record ids are the
//! commitlog offsets. No sync count (`fsyncs` is `None`).

use std::path::Path;
use std::sync::Mutex;

use ::commitlog::message::MessageSet;
use ::commitlog::{CommitLog, LogOptions, ReadLimit};

use super::{OpenOptions, Result, System, SystemKind, Writer};

/// Bytes asked for per read while scanning.
const SCAN_READ_BYTES: usize = 1 << 20;
/// Upper bound of commitlog's per-message overhead (header + metadata) used for point reads.
const MESSAGE_OVERHEAD: usize = 64;

/// commitlog opened in one directory.
pub struct CommitlogSystem {
    log: Mutex<CommitLog>,
    record_size: usize,
}

impl std::fmt::Debug for CommitlogSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitlogSystem").finish_non_exhaustive()
    }
}

impl CommitlogSystem {
    /// Open (or recover) the log in `dir`.
    pub fn open(dir: &Path, options: &OpenOptions) -> Result<Self> {
        let mut log_options = LogOptions::new(dir);
        log_options.message_max_bytes(options.record_size.max(1 << 20));
        Ok(CommitlogSystem {
            log: Mutex::new(CommitLog::new(log_options)?),
            record_size: options.record_size,
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, CommitLog>> {
        self.log
            .lock()
            .map_err(|_| "commitlog mutex poisoned".into())
    }
}

struct CommitlogWriter<'a> {
    log: &'a Mutex<CommitLog>,
}

impl Writer for CommitlogWriter<'_> {
    fn append(&mut self, _id: u64, payload: &[u8]) -> Result<()> {
        self.log
            .lock()
            .map_err(|_| "commitlog mutex poisoned")?
            .append_msg(payload)
            .map_err(|e| format!("commitlog append: {e}"))?;
        Ok(())
    }
}

impl System for CommitlogSystem {
    fn kind(&self) -> SystemKind {
        SystemKind::Commitlog
    }

    fn writer(&self, _index: usize) -> Box<dyn Writer + '_> {
        Box::new(CommitlogWriter { log: &self.log })
    }

    fn fsyncs(&self) -> Option<u64> {
        None
    }

    fn sync(&self) -> Result<()> {
        Ok(self.lock()?.flush()?)
    }

    fn can_read(&self) -> bool {
        true
    }

    fn scan(&self, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<u64> {
        let log = self.lock()?;
        let end = log.next_offset();
        let mut offset = 0;
        let mut count = 0;
        while offset < end {
            let buf = log
                .read(offset, ReadLimit::max_bytes(SCAN_READ_BYTES))
                .map_err(|e| format!("commitlog read at {offset}: {e}"))?;
            let before = offset;
            for message in buf.iter() {
                visit(message.payload())?;
                offset = message.offset() + 1;
                count += 1;
            }
            if offset == before {
                return Err(format!("commitlog: no progress reading at offset {offset}").into());
            }
        }
        Ok(count)
    }

    fn read(&self, id: u64, visit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let buf = self
            .lock()?
            .read(
                id,
                ReadLimit::max_bytes(self.record_size + MESSAGE_OVERHEAD),
            )
            .map_err(|e| format!("commitlog read at {id}: {e}"))?;
        let message = buf
            .iter()
            .next()
            .filter(|m| m.offset() == id)
            .ok_or_else(|| format!("commitlog: no record at offset {id}"))?;
        visit(message.payload())
    }

    fn recovered_records(&self) -> Result<u64> {
        Ok(self.lock()?.next_offset())
    }

    fn close(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
