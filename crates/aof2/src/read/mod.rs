//! Readers: an iterator over a log from any sequence, across sealed and active segments, with a
//! follow mode that waits for the next record.
//!
//! Visibility rule: by default a reader sees only records that are durable under the log's
//! durability mode (`Always`/`Interval`: covered by a completed fdatasync; `None`: written, since
//! that mode promises nothing more). So a reader never observes a record that a crash could take
//! back. `ReadVisibility::Written` shows every written record instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aof::LogShared;
use crate::config::ReadVisibility;
use crate::error::{Error, Result};
use crate::segment::{Position, Record, Segment};

/// Iterator over records of one log.
pub struct Reader {
    log: Arc<LogShared>,
    visibility: ReadVisibility,
    next_seq: u64,
    position: Option<(Arc<Segment>, Position)>,
    failed: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(log: Arc<LogShared>, seq: u64, visibility: ReadVisibility) -> Self {
        Reader {
            log,
            visibility,
            next_seq: seq,
            position: None,
            failed: false,
        }
    }

    /// Sequence of the record the next call returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next record if one is visible now.
    pub fn try_next(&mut self) -> Result<Option<Record>> {
        if self.next_seq >= self.log.visible(self.visibility) {
            return Ok(None);
        }
        let seq = self.next_seq;
        let need_seek = match &self.position {
            Some((segment, position)) => {
                seq >= position.limit || segment.end_seq().is_some_and(|end| seq >= end)
            }
            None => true,
        };
        if need_seek {
            // Drop the old position first: a reader pins only the bytes it is reading.
            self.position = None;
            let segment = self.log.segments.read().find(seq).cloned().ok_or_else(|| {
                Error::NotFound(format!("log {:?} has no record {seq}", self.log.name))
            })?;
            let position = match segment.locate(seq) {
                Err(e) if e.kind() == crate::ErrorKind::Corruption && segment.has_cold_copy() => {
                    tracing::error!(log = %self.log.name, segment = segment.id, seq, error = %e, "Tier 0 copy is damaged; reading from Tier 1 or Tier 2");
                    segment.locate_tier1(seq)?
                }
                located => located?,
            };
            if position.limit != u64::MAX {
                self.log.tiering.note_tier1_read(&self.log, &segment);
            }
            self.position = Some((segment, position));
        }
        let (segment, position) = self.position.as_mut().expect("positioned");
        let (record, next_offset) = match segment.read_at(&position.backing, position.offset, seq) {
            Ok(read) => read,
            Err(e)
                if e.kind() == crate::ErrorKind::Corruption
                    && position.limit == u64::MAX
                    && segment.has_cold_copy() =>
            {
                // The Tier 0 copy is damaged but Tier 1 holds a verified one: continue there.
                tracing::error!(log = %self.log.name, segment = segment.id, seq, error = %e, "Tier 0 copy is damaged; reading from Tier 1 or Tier 2");
                *position = segment.locate_tier1(seq)?;
                segment.read_at(&position.backing, position.offset, seq)?
            }
            Err(e) => return Err(e),
        };
        position.offset = next_offset;
        self.next_seq += 1;
        Ok(Some(record))
    }

    /// Follow mode: wait up to `timeout` for the next record to become visible.
    /// `Ok(None)` means nothing arrived in time. Once every visible record has been returned, a
    /// log that failed (a failed sync) gives its `LogFailed` error, and a closed log `Closed`:
    /// nothing more will arrive through this handle, and a follower must not spin on `None`.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<Record>> {
        if let Some(r) = self.try_next()? {
            return Ok(Some(r));
        }
        // A timeout too long for the clock (`Duration::MAX`) means no deadline.
        let deadline = Instant::now().checked_add(timeout);
        if self
            .log
            .wait_visible(self.next_seq, self.visibility, deadline)
        {
            return self.try_next();
        }
        if let Some(r) = self.try_next()? {
            // Made visible as the log failed or closed.
            return Ok(Some(r));
        }
        self.log.check_followable()?;
        Ok(None)
    }
}

impl Iterator for Reader {
    type Item = Result<Record>;

    /// Visible records until the current end of the log; an error ends the iteration after it is
    /// returned once.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.try_next() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
