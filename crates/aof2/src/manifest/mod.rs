//! ManifestLog: the per-log metadata write-ahead log. Edits (segment prepared, sealed, dropped,
//! quarantined; later tier moves) are checked against the replayed state, appended with a CRC and
//! synced before they take effect. When the WAL grows past a threshold it is compacted into a
//! snapshot (temp file + fsync + rename + fsync dir) and a new WAL generation starts.
//!
//! Opening never truncates history: a torn final record (a crash mid-append) is left in place and
//! the manifest moves on to a fresh generation through a compaction.

pub mod index;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::format::FormatError;
use crate::format::manifest::{
    Edit, SealedInfo, Tier1Info, Tier2Info, WAL_HEADER_BYTES, WalRead, decode_snapshot,
    decode_wal_header, decode_wal_record, encode_snapshot, encode_wal_header, encode_wal_record,
};
use crate::limits::MANIFEST_COMPACT_BYTES;
use crate::sys;

/// What the manifest knows of one live segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub capacity: u64,
    pub sealed: Option<SealedInfo>,
    pub quarantined: Option<String>,
    /// A compression into Tier 1 was started and has neither finished nor failed.
    pub compressing: bool,
    /// The Tier 1 copy, once complete.
    pub tier1: Option<Tier1Info>,
    /// Whether the Tier 0 (segment file) copy exists. False after `Tier0Evicted` until
    /// `Hydrated`.
    pub in_tier0: bool,
    /// The Tier 2 object, once its upload is acknowledged.
    pub tier2: Option<Tier2Info>,
}

impl SegmentEntry {
    fn new(capacity: u64) -> Self {
        SegmentEntry {
            capacity,
            sealed: None,
            quarantined: None,
            compressing: false,
            tier1: None,
            in_tier0: true,
            tier2: None,
        }
    }
}

/// The state the edits replay into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    pub log_id: u128,
    pub name: String,
    pub created_ms: u64,
    pub segments: BTreeMap<u64, SegmentEntry>,
    /// Smallest segment id never used.
    pub next_segment_id: u64,
    /// Epoch of the latest writable open.
    pub epoch: u32,
    /// Sequence the log's first live record has (or its first record will have): every record
    /// below it was retired, or left out by a restore. 0 for a log that lost nothing.
    pub retired_below: u64,
    /// Newest timestamp of the records below `retired_below` (0: none, or unknown). Later
    /// records are stamped no earlier.
    pub retired_last_timestamp_ms: u64,
    created: bool,
}

impl ManifestState {
    /// Check `edit` against the invariants; `Err` leaves the state untouched.
    pub fn check(&self, edit: &Edit) -> std::result::Result<(), String> {
        match edit {
            Edit::LogCreated { .. } if self.created => Err("log already created".into()),
            Edit::LogCreated { .. } => Ok(()),
            _ if !self.created => Err("edit before LogCreated".into()),
            Edit::SegmentPrepared { segment_id, .. } if *segment_id < self.next_segment_id => {
                Err(format!(
                    "segment {segment_id} reuses an id (next is {})",
                    self.next_segment_id
                ))
            }
            Edit::SegmentPrepared { segment_id, .. } if *segment_id == u64::MAX => {
                Err("segment ids exhausted".into())
            }
            Edit::SegmentPrepared { .. } => Ok(()),
            Edit::SegmentSealed(info) if info.base_seq.checked_add(info.record_count).is_none() => {
                Err(format!(
                    "segment {} holds {} records from seq {}: past the sequence space",
                    info.segment_id, info.record_count, info.base_seq
                ))
            }
            Edit::SegmentSealed(info) => {
                let entry = self
                    .segments
                    .get(&info.segment_id)
                    .ok_or(format!("sealing unknown segment {}", info.segment_id))?;
                if entry.sealed.is_some() {
                    return Err(format!("segment {} sealed twice", info.segment_id));
                }
                let previous = self.segments.range(..info.segment_id).next_back();
                if let Some((id, SegmentEntry { sealed: None, .. })) = previous {
                    // Recovery trusts sealed segments only after sealed ones: seals are
                    // recorded in segment order.
                    return Err(format!(
                        "segment {} sealed before segment {id}",
                        info.segment_id
                    ));
                }
                if previous.is_none() && info.base_seq != self.retired_below {
                    return Err(format!(
                        "segment {} starts at seq {}, but the log's first record is {}",
                        info.segment_id, info.base_seq, self.retired_below
                    ));
                }
                if let Some((
                    id,
                    SegmentEntry {
                        sealed: Some(prev), ..
                    },
                )) = previous
                    && prev.base_seq + prev.record_count != info.base_seq
                {
                    return Err(format!(
                        "segment {} starts at seq {} but segment {id} ends at {}",
                        info.segment_id,
                        info.base_seq,
                        prev.base_seq + prev.record_count
                    ));
                }
                Ok(())
            }
            Edit::SegmentDropped { segment_id } => match self.segments.get(segment_id) {
                None => Err(format!("dropping unknown segment {segment_id}")),
                Some(e) if e.sealed.is_some() => {
                    Err(format!("refusing to drop sealed segment {segment_id}"))
                }
                Some(_) => Ok(()),
            },
            Edit::LogOpened { epoch } if *epoch <= self.epoch => {
                Err(format!("epoch {epoch} does not follow {}", self.epoch))
            }
            Edit::LogOpened { .. } => Ok(()),
            Edit::SegmentQuarantined { segment_id, .. } => match self.segments.get(segment_id) {
                Some(SegmentEntry {
                    sealed: Some(_), ..
                }) => Ok(()),
                _ => Err(format!(
                    "quarantining segment {segment_id} that is not sealed"
                )),
            },
            Edit::CompressStarted { segment_id, .. } => {
                // A segment may be compressed while it is being sealed (a `None` log seals by
                // compressing); `CompressDone` needs the seal recorded first.
                let e = self
                    .segments
                    .get(segment_id)
                    .ok_or(format!("compressing unknown segment {segment_id}"))?;
                if e.tier1.is_some() {
                    return Err(format!("segment {segment_id} is already in Tier 1"));
                }
                if e.quarantined.is_some() || !e.in_tier0 {
                    return Err(format!(
                        "segment {segment_id} has no Tier 0 copy to compress"
                    ));
                }
                Ok(())
            }
            Edit::CompressDone(info) => {
                let e = self.sealed_entry(info.segment_id)?;
                if !e.compressing || e.tier1.is_some() {
                    return Err(format!(
                        "segment {} finished a compression that was not started",
                        info.segment_id
                    ));
                }
                Ok(())
            }
            Edit::CompressFailed { segment_id, .. } => {
                let e = self
                    .segments
                    .get(segment_id)
                    .ok_or(format!("unknown segment {segment_id}"))?;
                if !e.compressing {
                    return Err(format!(
                        "segment {segment_id} failed a compression that was not started"
                    ));
                }
                Ok(())
            }
            Edit::Tier0Evicted { segment_id } => {
                let e = self.sealed_entry(*segment_id)?;
                if (e.tier1.is_none() && e.tier2.is_none()) || !e.in_tier0 {
                    return Err(format!(
                        "evicting segment {segment_id} from Tier 0 without a Tier 1 or Tier 2 copy"
                    ));
                }
                Ok(())
            }
            Edit::Tier2Uploaded(info) => {
                let id = info.tier1.segment_id;
                let e = self.sealed_entry(id)?;
                if e.tier2.is_some() {
                    return Err(format!("segment {id} is already in Tier 2"));
                }
                if e.quarantined.is_some() {
                    return Err(format!("segment {id} is quarantined"));
                }
                Ok(())
            }
            Edit::Tier1Evicted { segment_id } => {
                let e = self.sealed_entry(*segment_id)?;
                if e.tier1.is_none() || e.tier2.is_none() {
                    return Err(format!(
                        "evicting the Tier 1 copy of segment {segment_id} before Tier 2 holds it"
                    ));
                }
                Ok(())
            }
            Edit::Tier1Fetched { segment_id } => {
                let e = self.sealed_entry(*segment_id)?;
                if e.tier1.is_some() || e.tier2.is_none() || e.compressing {
                    return Err(format!(
                        "fetching segment {segment_id} from Tier 2 into an occupied Tier 1 slot"
                    ));
                }
                Ok(())
            }
            Edit::Tier1Dropped { segment_id } => self.sealed_entry_for_drop(*segment_id),
            Edit::SegmentRetired { segment_id } => {
                self.sealed_entry(*segment_id)?;
                if self.segments.keys().next() != Some(segment_id) {
                    return Err(format!(
                        "retiring segment {segment_id}, which is not the oldest: a log loses \
                         only a prefix"
                    ));
                }
                Ok(())
            }
            Edit::Hydrated { segment_id } => {
                let e = self.sealed_entry(*segment_id)?;
                if (e.tier1.is_none() && e.tier2.is_none()) || e.in_tier0 {
                    return Err(format!(
                        "hydrating segment {segment_id} that is not only in Tier 1"
                    ));
                }
                Ok(())
            }
            Edit::RetiredBelow { .. } if !self.segments.is_empty() => {
                Err("the start of a log recorded after its segments".into())
            }
            Edit::RetiredBelow { seq, .. } if *seq < self.retired_below => Err(format!(
                "the log's first record moves back from {} to {seq}",
                self.retired_below
            )),
            Edit::RetiredBelow { .. } => Ok(()),
        }
    }

    fn sealed_entry_for_drop(&self, segment_id: u64) -> std::result::Result<(), String> {
        let e = self.sealed_entry(segment_id)?;
        if e.tier1.is_none() || !e.in_tier0 {
            return Err(format!(
                "dropping the Tier 1 copy of segment {segment_id}, which is its only copy"
            ));
        }
        Ok(())
    }

    fn sealed_entry(&self, segment_id: u64) -> std::result::Result<&SegmentEntry, String> {
        match self.segments.get(&segment_id) {
            Some(e) if e.sealed.is_some() => Ok(e),
            Some(_) => Err(format!("segment {segment_id} is not sealed")),
            None => Err(format!("unknown segment {segment_id}")),
        }
    }

    /// Apply a checked edit.
    pub fn apply(&mut self, edit: &Edit) {
        match edit {
            Edit::LogCreated {
                log_id,
                created_ms,
                name,
            } => {
                self.log_id = *log_id;
                self.created_ms = *created_ms;
                self.name = name.clone();
                self.created = true;
            }
            Edit::SegmentPrepared {
                segment_id,
                capacity,
            } => {
                self.segments
                    .insert(*segment_id, SegmentEntry::new(*capacity));
                self.next_segment_id = segment_id + 1;
            }
            Edit::SegmentSealed(info) => {
                if let Some(e) = self.segments.get_mut(&info.segment_id) {
                    e.sealed = Some(*info);
                }
            }
            Edit::SegmentDropped { segment_id } => {
                self.segments.remove(segment_id);
            }
            Edit::SegmentQuarantined { segment_id, reason } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.quarantined = Some(reason.clone());
                }
            }
            Edit::LogOpened { epoch } => self.epoch = *epoch,
            Edit::CompressStarted { segment_id, .. } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.compressing = true;
                }
            }
            Edit::CompressDone(info) => {
                if let Some(e) = self.segments.get_mut(&info.segment_id) {
                    e.compressing = false;
                    e.tier1 = Some(*info);
                }
            }
            Edit::CompressFailed { segment_id, .. } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.compressing = false;
                }
            }
            Edit::Tier0Evicted { segment_id } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.in_tier0 = false;
                }
            }
            Edit::Hydrated { segment_id } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.in_tier0 = true;
                }
            }
            Edit::Tier1Dropped { segment_id } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.tier1 = None;
                    e.compressing = false;
                }
            }
            Edit::SegmentRetired { segment_id } => {
                if let Some(info) = self.segments.remove(segment_id).and_then(|e| e.sealed) {
                    self.retired_below = info.base_seq + info.record_count;
                    self.retired_last_timestamp_ms =
                        self.retired_last_timestamp_ms.max(info.last_timestamp_ms);
                }
            }
            Edit::Tier2Uploaded(info) => {
                if let Some(e) = self.segments.get_mut(&info.tier1.segment_id) {
                    e.tier2 = Some(*info);
                }
            }
            Edit::Tier1Evicted { segment_id } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.tier1 = None;
                }
            }
            Edit::Tier1Fetched { segment_id } => {
                if let Some(e) = self.segments.get_mut(segment_id) {
                    e.tier1 = e.tier2.map(|t| t.tier1);
                }
            }
            Edit::RetiredBelow {
                seq,
                last_timestamp_ms,
            } => {
                self.retired_below = *seq;
                self.retired_last_timestamp_ms = *last_timestamp_ms;
            }
        }
    }

    /// Edits that recreate this state (the snapshot body).
    fn to_edits(&self) -> Vec<Edit> {
        let mut edits = vec![Edit::LogCreated {
            log_id: self.log_id,
            created_ms: self.created_ms,
            name: self.name.clone(),
        }];
        if self.epoch > 0 {
            edits.push(Edit::LogOpened { epoch: self.epoch });
        }
        // Before the segments: the first one starts there.
        if self.retired_below > 0 || self.retired_last_timestamp_ms > 0 {
            edits.push(Edit::RetiredBelow {
                seq: self.retired_below,
                last_timestamp_ms: self.retired_last_timestamp_ms,
            });
        }
        // Keep the id counter even if the newest segments were dropped.
        let mut last_prepared = None;
        for (&segment_id, entry) in &self.segments {
            edits.push(Edit::SegmentPrepared {
                segment_id,
                capacity: entry.capacity,
            });
            last_prepared = Some(segment_id);
            if let Some(info) = entry.sealed {
                edits.push(Edit::SegmentSealed(info));
            }
            if entry.compressing || entry.tier1.is_some() {
                edits.push(Edit::CompressStarted {
                    segment_id,
                    level: entry.tier1.map_or(0, |t| t.level),
                });
            }
            if let Some(info) = entry.tier1 {
                edits.push(Edit::CompressDone(info));
            }
            if let Some(info) = entry.tier2 {
                edits.push(Edit::Tier2Uploaded(info));
            }
            if !entry.in_tier0 && (entry.tier1.is_some() || entry.tier2.is_some()) {
                edits.push(Edit::Tier0Evicted { segment_id });
            }
            if let Some(reason) = &entry.quarantined {
                edits.push(Edit::SegmentQuarantined {
                    segment_id,
                    reason: reason.clone(),
                });
            }
        }
        if self.next_segment_id > 0 && last_prepared.is_none_or(|id| id + 1 < self.next_segment_id)
        {
            // Encode the counter with a prepared-then-dropped placeholder.
            let id = self.next_segment_id - 1;
            edits.push(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 0,
            });
            edits.push(Edit::SegmentDropped { segment_id: id });
        }
        edits
    }
}

/// The metadata WAL of one log.
#[derive(Debug)]
pub struct ManifestLog {
    dir: PathBuf,
    /// The WAL to append to; `None` for a read-only manifest, whose edits change only the
    /// in-memory state.
    wal: Option<File>,
    generation: u64,
    wal_len: u64,
    state: ManifestState,
    /// A failed append may have left part or all of its record in the WAL: the next append
    /// starts a new generation first, as an open does after a torn tail, so no record is ever
    /// written after those bytes (replay would take them for corruption, or apply an edit that
    /// was reported as failed).
    tail_dirty: bool,
    /// Set when the log instance that owns it has closed: a later instance may own the same
    /// files now, so any edit a stray task of the old one still tries is refused.
    closed: bool,
    /// Test seam: the next append writes only this many bytes of its record, then fails.
    #[cfg(test)]
    fail_next_append_after: Option<usize>,
}

fn wal_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("wal-{generation:016x}"))
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot")
}

fn format_error(path: &Path, offset: u64, e: FormatError) -> Error {
    crate::error::format_error(path, offset, "manifest file", "manifest", e)
}

impl ManifestLog {
    /// Create the manifest of a new log.
    pub fn create(dir: &Path, created: Edit) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        let mut state = ManifestState::default();
        state
            .check(&created)
            .map_err(|why| Error::corruption(dir.display().to_string(), why))?;
        // Header and LogCreated appear together (temp file + rename): a crash can never leave a
        // manifest without its LogCreated edit.
        let mut bytes = encode_wal_header(0).to_vec();
        bytes.extend_from_slice(&encode_wal_record(&created));
        let path = wal_path(dir, 0);
        sys::write_atomic(&path, &bytes)?;
        state.apply(&created);
        let wal = OpenOptions::new()
            .append(true)
            .open(&path)
            .context(|| format!("open {}", path.display()))?;
        Ok(ManifestLog {
            dir: dir.to_path_buf(),
            wal: Some(wal),
            generation: 0,
            wal_len: bytes.len() as u64,
            state,
            tail_dirty: false,
            #[cfg(test)]
            fail_next_append_after: None,
            closed: false,
        })
    }

    /// Whether `dir` holds a manifest.
    pub fn exists(dir: &Path) -> bool {
        snapshot_path(dir).exists() || list_wals(dir).is_ok_and(|w| !w.is_empty())
    }

    /// Open and replay an existing manifest.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_mode(dir, false)
    }

    /// Open and replay an existing manifest without writing anything: later edits change only
    /// the in-memory state (for read-only log handles).
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        Self::open_mode(dir, true)
    }

    fn open_mode(dir: &Path, read_only: bool) -> Result<Self> {
        let mut state = ManifestState::default();
        let mut first_generation = 0;
        let snap = snapshot_path(dir);
        match std::fs::read(&snap) {
            Ok(bytes) => {
                let (next, edits) =
                    decode_snapshot(&bytes).map_err(|e| format_error(&snap, 0, e))?;
                for edit in &edits {
                    state
                        .check(edit)
                        .map_err(|why| Error::corruption(snap.display().to_string(), why))?;
                    state.apply(edit);
                }
                first_generation = next;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("read {}", snap.display()), e)),
        }
        let wals: Vec<u64> = list_wals(dir)?
            .into_iter()
            .filter(|&g| g >= first_generation)
            .collect();
        if wals.is_empty() && !state.created {
            return Err(Error::NotFound(format!("no manifest in {}", dir.display())));
        }
        let mut torn = false;
        let mut generation = first_generation;
        let mut wal_len = WAL_HEADER_BYTES as u64;
        for (i, &g) in wals.iter().enumerate() {
            let path = wal_path(dir, g);
            let bytes = std::fs::read(&path).context(|| format!("read {}", path.display()))?;
            if bytes.len() < WAL_HEADER_BYTES && i + 1 == wals.len() {
                // Crash while creating this generation: its header never made it.
                torn = true;
                break;
            }
            let header_gen = decode_wal_header(&bytes).map_err(|e| format_error(&path, 0, e))?;
            if header_gen != g {
                return Err(Error::corruption(
                    path.display().to_string(),
                    format!("WAL header says generation {header_gen}"),
                ));
            }
            let mut pos = WAL_HEADER_BYTES;
            loop {
                match decode_wal_record(&bytes[pos..])
                    .map_err(|e| format_error(&path, pos as u64, e))?
                {
                    WalRead::Edit(edit, n) => {
                        state.check(&edit).map_err(|why| {
                            Error::corruption(format!("{} offset {pos}", path.display()), why)
                        })?;
                        state.apply(&edit);
                        pos += n;
                    }
                    WalRead::End => break,
                    WalRead::Torn => {
                        // A later generation holding no records yet is what an open that was
                        // interrupted while moving past this torn tail leaves behind.
                        let later_empty = wals[i + 1..].iter().all(|&later| {
                            std::fs::metadata(wal_path(dir, later))
                                .is_ok_and(|m| m.len() <= WAL_HEADER_BYTES as u64)
                        });
                        if !later_empty {
                            return Err(Error::corruption(
                                format!("{} offset {pos}", path.display()),
                                "torn record before the last WAL generation",
                            ));
                        }
                        torn = true;
                        break;
                    }
                }
            }
            generation = g;
            wal_len = pos as u64;
        }
        if !state.created {
            if state == ManifestState::default() && wal_len == WAL_HEADER_BYTES as u64 {
                // Only a WAL header: the log's creation was interrupted before LogCreated.
                return Err(Error::NotFound(format!(
                    "manifest in {} was never completed",
                    dir.display()
                )));
            }
            return Err(Error::corruption(
                dir.display().to_string(),
                "manifest has no LogCreated edit",
            ));
        }
        let path = wal_path(dir, generation);
        if read_only {
            return Ok(ManifestLog {
                dir: dir.to_path_buf(),
                wal: None,
                generation,
                wal_len,
                state,
                tail_dirty: false,
                #[cfg(test)]
                fail_next_append_after: None,
                closed: false,
            });
        }
        let wal = if torn || wals.is_empty() {
            // Never append after torn bytes: move to a fresh generation via a compaction.
            let mut m = ManifestLog {
                dir: dir.to_path_buf(),
                wal: Some(new_wal(dir, generation + 1)?),
                generation: generation + 1,
                wal_len: WAL_HEADER_BYTES as u64,
                state,
                tail_dirty: false,
                #[cfg(test)]
                fail_next_append_after: None,
                closed: false,
            };
            m.write_snapshot()?;
            return Ok(m);
        } else {
            OpenOptions::new()
                .append(true)
                .open(&path)
                .context(|| format!("open {}", path.display()))?
        };
        Ok(ManifestLog {
            dir: dir.to_path_buf(),
            wal: Some(wal),
            generation,
            wal_len,
            state,
            tail_dirty: false,
            #[cfg(test)]
            fail_next_append_after: None,
            closed: false,
        })
    }

    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Check, append, sync and apply an edit.
    pub fn append(&mut self, edit: Edit) -> Result<()> {
        if self.closed {
            return Err(Error::Closed(format!(
                "manifest {} (its log was closed)",
                self.dir.display()
            )));
        }
        self.state.check(&edit).map_err(|why| {
            Error::corruption(
                self.dir.display().to_string(),
                format!("refused manifest edit {edit:?}: {why}"),
            )
        })?;
        if self.wal.is_none() {
            self.state.apply(&edit);
            return Ok(());
        }
        if self.tail_dirty {
            self.compact()?;
            self.tail_dirty = false;
        }
        let record = encode_wal_record(&edit);
        let path = wal_path(&self.dir, self.generation);
        #[cfg(test)]
        let limit = self.fail_next_append_after.take();
        #[cfg(not(test))]
        let limit: Option<usize> = None;
        let wal = self.wal.as_mut().expect("a writable manifest has a WAL");
        let written = match limit {
            Some(n) => wal
                .write_all(&record[..n.min(record.len())])
                .and_then(|()| Err(io::Error::other("injected write failure"))),
            None => wal.write_all(&record),
        }
        .context(|| format!("append to {}", path.display()))
        .and_then(|()| {
            sys::retry_transient(|| wal.sync_data())
                .context(|| format!("fdatasync {}", path.display()))
        });
        if let Err(e) = written {
            self.tail_dirty = true;
            return Err(e);
        }
        self.wal_len += record.len() as u64;
        self.state.apply(&edit);
        if self.wal_len > MANIFEST_COMPACT_BYTES
            && let Err(e) = self.compact()
        {
            // The edit is durable and applied, so the append succeeded. What is on disk replays
            // to this state (the last WAL generation may be new and empty); the next edit
            // compacts first, and fails if that still cannot be done.
            tracing::warn!(dir = %self.dir.display(), error = %e, "manifest compaction failed; retried before the next edit");
            self.tail_dirty = true;
        }
        Ok(())
    }

    /// Refuse every later edit (the owning log instance closed).
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Write a snapshot of the state and start a new WAL generation.
    pub fn compact(&mut self) -> Result<()> {
        let next = self.generation + 1;
        self.wal = Some(new_wal(&self.dir, next)?);
        self.generation = next;
        self.wal_len = WAL_HEADER_BYTES as u64;
        self.write_snapshot()
    }

    fn write_snapshot(&mut self) -> Result<()> {
        let bytes = encode_snapshot(self.generation, &self.state.to_edits());
        sys::write_atomic(&snapshot_path(&self.dir), &bytes)?;
        for g in list_wals(&self.dir)? {
            if g < self.generation {
                let p = wal_path(&self.dir, g);
                std::fs::remove_file(&p).context(|| format!("remove {}", p.display()))?;
            }
        }
        sys::sync_dir(&self.dir)
    }
}

fn new_wal(dir: &Path, generation: u64) -> Result<File> {
    let path = wal_path(dir, generation);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .context(|| format!("create {}", path.display()))?;
    f.write_all(&encode_wal_header(generation))
        .context(|| format!("write {}", path.display()))?;
    sys::retry_transient(|| f.sync_all()).context(|| format!("fsync {}", path.display()))?;
    sys::sync_dir(dir)?;
    drop(f);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .context(|| format!("open {}", path.display()))
}

fn list_wals(dir: &Path) -> Result<Vec<u64>> {
    let mut gens = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(gens),
        Err(e) => return Err(Error::io(format!("list {}", dir.display()), e)),
    };
    for entry in entries {
        let entry = entry.context(|| format!("list {}", dir.display()))?;
        if let Some(hex) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("wal-"))
            && let Ok(g) = u64::from_str_radix(hex, 16)
        {
            gens.push(g);
        }
    }
    gens.sort_unstable();
    Ok(gens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created() -> Edit {
        Edit::LogCreated {
            log_id: 1,
            created_ms: 2,
            name: "t".into(),
        }
    }

    fn sealed(id: u64, base: u64, count: u64) -> Edit {
        Edit::SegmentSealed(SealedInfo {
            segment_id: id,
            base_seq: base,
            record_count: count,
            file_len: 1,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            footer_crc: 0,
        })
    }

    /// A failed append (here: part of its record written, then an error, as on a full disk)
    /// leaves bytes in the WAL. The edit is not applied, the next append goes to a new
    /// generation, and the manifest opens with exactly the edits that succeeded. Without the
    /// new generation, the retried edit lands after the torn bytes and the next open fails
    /// with a checksum mismatch.
    #[test]
    fn failed_append_moves_to_a_new_generation() {
        for cut in [0, 1, 9, usize::MAX] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path().join("m");
            let mut m = ManifestLog::create(&d, created()).unwrap();
            let prepared = |segment_id| Edit::SegmentPrepared {
                segment_id,
                capacity: 100,
            };
            m.append(prepared(0)).unwrap();
            m.fail_next_append_after = Some(cut);
            assert!(m.append(prepared(1)).is_err(), "cut {cut}");
            assert_eq!(m.state().next_segment_id, 1, "cut {cut}: not applied");
            // The caller tries again (the preparer allocates the same id).
            m.append(prepared(1)).unwrap();
            m.append(prepared(2)).unwrap();
            assert_eq!(m.generation, 1, "cut {cut}");
            drop(m);
            let reopened = ManifestLog::open(&d).unwrap();
            assert_eq!(reopened.state().next_segment_id, 3, "cut {cut}");
            assert_eq!(list_wals(&d).unwrap(), vec![1], "cut {cut}");
        }
    }

    /// Found by fuzzing (`fuzz/`): edits with valid checksums whose ids or sequence ranges run
    /// past `u64::MAX` are refused, not applied with an overflow.
    #[test]
    fn edits_past_the_id_or_sequence_space_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        assert!(
            m.append(Edit::SegmentPrepared {
                segment_id: u64::MAX,
                capacity: 100,
            })
            .is_err()
        );
        m.append(Edit::SegmentPrepared {
            segment_id: 0,
            capacity: 100,
        })
        .unwrap();
        assert!(m.append(sealed(0, u64::MAX, 1)).is_err());
        m.append(sealed(0, 0, 10)).unwrap();
    }

    /// Where the log starts survives retiring every segment and a compaction: a snapshot holds
    /// no retired segment, so it carries the start in a `RetiredBelow` edit.
    #[test]
    fn the_start_of_a_log_survives_retirement_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        for id in 0..2 {
            m.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 100,
            })
            .unwrap();
        }
        m.append(Edit::SegmentSealed(SealedInfo {
            last_timestamp_ms: 77,
            ..match sealed(0, 0, 10) {
                Edit::SegmentSealed(info) => info,
                _ => unreachable!(),
            }
        }))
        .unwrap();
        m.append(Edit::SegmentRetired { segment_id: 0 }).unwrap();
        assert!(
            m.append(Edit::RetiredBelow {
                seq: 10,
                last_timestamp_ms: 77
            })
            .is_err(),
            "only before any segment"
        );
        // The next segment starts where the retired one ended, nowhere else.
        assert!(m.append(sealed(1, 0, 5)).is_err());
        m.compact().unwrap();
        drop(m);
        let m = ManifestLog::open(&d).unwrap();
        let state = m.state();
        assert_eq!(
            (state.retired_below, state.retired_last_timestamp_ms),
            (10, 77)
        );
        assert!(state.check(&sealed(1, 10, 5)).is_ok());
        // A restore's start, written into a new manifest, never moves back.
        let mut fresh = ManifestState::default();
        fresh.apply(&created());
        let start = Edit::RetiredBelow {
            seq: 500,
            last_timestamp_ms: 9,
        };
        assert!(fresh.check(&start).is_ok());
        fresh.apply(&start);
        assert!(
            fresh
                .check(&Edit::RetiredBelow {
                    seq: 499,
                    last_timestamp_ms: 9
                })
                .is_err()
        );
    }

    #[test]
    fn replay_compact_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        for id in 0..3 {
            m.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 100,
            })
            .unwrap();
        }
        m.append(sealed(0, 0, 10)).unwrap();
        assert!(m.append(sealed(1, 11, 5)).is_err(), "gap refused");
        assert!(
            m.append(Edit::SegmentDropped { segment_id: 0 }).is_err(),
            "sealed never dropped"
        );
        m.append(sealed(1, 10, 5)).unwrap();
        m.append(Edit::SegmentDropped { segment_id: 2 }).unwrap();
        let want = m.state().clone();
        drop(m);
        let m = ManifestLog::open(&d).unwrap();
        assert_eq!(m.state(), &want);
        assert_eq!(m.state().next_segment_id, 3);
        drop(m);

        // Torn tail: append half a record.
        let wal = wal_path(&d, 0);
        let rec = encode_wal_record(&Edit::SegmentPrepared {
            segment_id: 3,
            capacity: 1,
        });
        let mut f = OpenOptions::new().append(true).open(&wal).unwrap();
        f.write_all(&rec[..rec.len() / 2]).unwrap();
        drop(f);
        let mut m = ManifestLog::open(&d).unwrap();
        assert_eq!(m.state(), &want);
        m.append(Edit::SegmentPrepared {
            segment_id: 3,
            capacity: 1,
        })
        .unwrap();
        m.compact().unwrap();
        let state = m.state().clone();
        drop(m);
        assert_eq!(ManifestLog::open(&d).unwrap().state(), &state);
    }

    #[test]
    fn corrupt_middle_record_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        m.append(Edit::SegmentPrepared {
            segment_id: 0,
            capacity: 100,
        })
        .unwrap();
        m.append(Edit::SegmentPrepared {
            segment_id: 1,
            capacity: 100,
        })
        .unwrap();
        drop(m);
        let wal = wal_path(&d, 0);
        let mut bytes = std::fs::read(&wal).unwrap();
        bytes[WAL_HEADER_BYTES + 12] ^= 0xff;
        std::fs::write(&wal, bytes).unwrap();
        let err = ManifestLog::open(&d).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption, "{err}");
    }

    /// A damaged length field in the middle of the WAL (one flipped bit, found by flipping bytes
    /// of a real log's WAL and running `aof2 verify`) claims a record running past the end of
    /// the file. That is what a torn final record looks like, but later records follow it:
    /// corruption, not a torn tail. Taken for a torn tail, every later edit (the seals of all
    /// later segments) was silently dropped, and a writable open compacted that loss in.
    #[test]
    fn damaged_length_in_front_of_later_records_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        for id in 0..4 {
            m.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 100,
            })
            .unwrap();
            m.append(sealed(id, id * 10, 10)).unwrap();
        }
        drop(m);
        let wal = wal_path(&d, 0);
        let clean = std::fs::read(&wal).unwrap();
        // The length field of the record after LogCreated.
        let second = WAL_HEADER_BYTES + encode_wal_record(&created()).len();
        for (byte, flip) in [(1, 0x5a), (2, 0x01), (0, 0xff)] {
            let mut bytes = clean.clone();
            bytes[second + 4 + byte] ^= flip;
            std::fs::write(&wal, &bytes).unwrap();
            for read_only in [true, false] {
                match ManifestLog::open_mode(&d, read_only) {
                    Err(e) => assert_eq!(e.kind(), crate::ErrorKind::Corruption, "{e}"),
                    Ok(m) => panic!(
                        "length byte {byte} ^ {flip:#x}: opened with {} of 4 segments",
                        m.state().segments.len()
                    ),
                }
            }
        }
        // A record really cut short at the end is still a torn tail.
        std::fs::write(&wal, &clean[..clean.len() - 3]).unwrap();
        assert_eq!(
            ManifestLog::open_read_only(&d)
                .unwrap()
                .state()
                .segments
                .len(),
            4
        );
    }

    #[test]
    fn tier2_edits_keep_a_copy_and_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        for id in 0..3 {
            m.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 100,
            })
            .unwrap();
            m.append(sealed(id, id * 10, 10)).unwrap();
        }
        let t1 = |id| Tier1Info {
            segment_id: id,
            file_len: 50,
            footer_crc: 7,
            frames: 1,
            uncompressed_bytes: 90,
            level: 3,
        };
        let t2 = |id| Tier2Info {
            tier1: t1(id),
            object_crc: 9,
            segment_footer: [id as u8; 96],
        };
        for id in 0..2 {
            m.append(Edit::CompressStarted {
                segment_id: id,
                level: 3,
            })
            .unwrap();
            m.append(Edit::CompressDone(t1(id))).unwrap();
        }
        assert!(
            m.append(Edit::Tier1Evicted { segment_id: 0 }).is_err(),
            "Tier 1 copy released before Tier 2 holds it"
        );
        m.append(Edit::Tier2Uploaded(t2(0))).unwrap();
        assert!(
            m.append(Edit::Tier2Uploaded(t2(0))).is_err(),
            "uploaded twice"
        );
        m.append(Edit::Tier0Evicted { segment_id: 0 }).unwrap();
        m.append(Edit::Tier1Evicted { segment_id: 0 }).unwrap();
        assert!(
            m.append(Edit::Tier1Evicted { segment_id: 0 }).is_err(),
            "no Tier 1 copy left"
        );
        // Segment 2 went to Tier 2 from Tier 0 (its Tier 1 copy was never made or was dropped).
        m.append(Edit::Tier2Uploaded(t2(2))).unwrap();
        m.append(Edit::Tier0Evicted { segment_id: 2 }).unwrap();
        m.append(Edit::Tier1Fetched { segment_id: 2 }).unwrap();
        assert!(m.append(Edit::Tier1Fetched { segment_id: 2 }).is_err());
        let want = m.state().clone();
        let e0 = &want.segments[&0];
        assert!(e0.tier1.is_none() && !e0.in_tier0 && e0.tier2.is_some());
        assert_eq!(want.segments[&2].tier1, Some(t1(2)));
        m.compact().unwrap();
        drop(m);
        assert_eq!(ManifestLog::open(&d).unwrap().state(), &want);
    }
    // Paste inside `mod tests` of crates/aof2/src/manifest/mod.rs (uses its `created()` helper).
    /// An edit written and synced, then a failed compaction (here the snapshot's temp name is
    /// taken by a directory, as a full disk would fail it): the append succeeds (the edit is
    /// applied and durable, callers may act on it), and the next append, which compacts first,
    /// fails without applying its edit. It used to be the other way round.
    #[test]
    fn a_failed_compaction_does_not_fail_the_edit_it_follows() {
        // tmpfs if there is one: the WAL must grow past the compaction size by synced appends.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap();
        let d = dir.path().join("m");
        let mut m = ManifestLog::create(&d, created()).unwrap();
        std::fs::create_dir(d.join("snapshot.tmp")).unwrap();
        let mut id = 0;
        let failed = loop {
            match m.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: 100,
            }) {
                Ok(()) => id += 1,
                Err(e) => break e,
            }
            assert!(id < 1_000_000, "compaction never ran");
        };
        // The edit that "failed" ...
        let applied = m.state().next_segment_id;
        drop(m);
        let reopened = ManifestLog::open_read_only(&d)
            .unwrap()
            .state()
            .next_segment_id;
        assert_eq!(
            (applied, reopened),
            (id, id),
            "append of segment {id} returned Err ({failed}) but the edit is applied in memory \
             and replayed after reopen"
        );
    }
}
