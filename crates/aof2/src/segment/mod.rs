//! One segment's life: prepared (preallocated, pre-faulted, header blank) -> active (frames are
//! appended through a shared mapping) -> rolled (full, no more writes) -> sealed (sparse index and
//! footer written, preallocated tail truncated, synced, recorded in the manifest).
//!
//! [`Segment`] is the shared, reader-facing handle; [`ActiveSegment`] is the writer's exclusive
//! view of the one active segment of a log.

pub mod mmap;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, IoContext, Result};
use crate::format::segment::{
    FrameError, IndexEntry, SegmentFooter, SegmentHeader, decode_frame, decode_index, encode_index,
    peek_frame,
};
use crate::format::{FormatError, crc32c};
use crate::limits::{
    FRAME_HEADER_BYTES, INDEX_INTERVAL_BYTES, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::tier2::Tier2Copy;
use crate::tiering::Tier1Segment;
use crate::tiering::budget::Lease;
use mmap::{ActiveRegion, Mapping};

/// File name of segment `id`.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

/// Name of the `k`-th kept file of an evicted segment (`LogShared::keep_for_reuse`).
pub fn recycled_file_name(k: usize) -> String {
    format!("recycled-{k}")
}

/// How frames reach the segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// memcpy into a shared writable mapping: the fastest buffered path, no system call per
    /// append. Used when appends are not synced one group at a time (`Durability::None` and
    /// `Interval`, whose periodic syncs amortise the cost described below).
    Mapped,
    /// Staged in memory and written with one `pwrite` per group commit
    /// ([`ActiveSegment::write_staged`]), with a read-only mapping for readers. Used for
    /// `Durability::Always`: syncing pages that are mapped writable makes the kernel write-protect them and shoot
    /// down TLB entries on every CPU running the process (an IPI per page in a VM), which made
    /// each group commit two to three times slower than the flush itself.
    Syscall,
}

impl WriteMode {
    /// The write path for a durability mode.
    pub fn for_durability(durability: crate::config::Durability) -> Self {
        match durability {
            crate::config::Durability::Always => WriteMode::Syscall,
            crate::config::Durability::None | crate::config::Durability::Interval(_) => {
                WriteMode::Mapped
            }
        }
    }
}

/// Bytes holding frames: a Tier 0 mapping, or one decompressed Tier 1 frame (whose offsets
/// start at 0).
#[derive(Clone, Debug)]
pub enum Backing {
    /// A segment file's mapping; offsets are file offsets.
    Mapped(Arc<Mapping>),
    /// One decompressed Tier 1 frame; offsets are relative to its first byte.
    Frame(Arc<Vec<u8>>),
}

impl Backing {
    #[inline]
    fn slice(&self, offset: u64, len: u64) -> Option<&[u8]> {
        match self {
            Backing::Mapped(m) => m.slice(offset, len),
            Backing::Frame(f) => {
                let end = offset.checked_add(len)?;
                f.get(offset as usize..usize::try_from(end).ok()?)
            }
        }
    }

    #[inline]
    fn tail(&self, offset: u64) -> &[u8] {
        match self {
            Backing::Mapped(m) => m.tail(offset),
            Backing::Frame(f) => f.get(offset as usize..).unwrap_or(&[]),
        }
    }
}

/// Where a reader stands: the bytes holding `seq`, the offset of its frame, and the first
/// sequence these bytes do not hold (`u64::MAX`: up to the segment's end).
#[derive(Clone, Debug)]
pub struct Position {
    pub backing: Backing,
    pub offset: u64,
    pub limit: u64,
}

/// A record read from a segment; the payload is borrowed zero-copy from the mapping (or the
/// decompressed Tier 1 frame), which the record keeps alive.
#[derive(Clone)]
pub struct Record {
    seq: u64,
    timestamp_ms: u64,
    backing: Backing,
    payload_offset: u64,
    len: u32,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("seq", &self.seq)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("len", &self.len)
            .finish()
    }
}

impl Record {
    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Append timestamp, ms since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }
    /// Payload bytes (zero-copy).
    pub fn payload(&self) -> &[u8] {
        self.backing
            .slice(self.payload_offset, self.len as u64)
            .expect("payload within its backing bytes")
    }
    /// Payload length.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for Record {
    fn as_ref(&self) -> &[u8] {
        self.payload()
    }
}

/// What a sealed segment's footer says, checked against the file.
#[derive(Debug, Clone)]
pub struct SealedMeta {
    pub footer: SegmentFooter,
    pub footer_crc: u32,
    pub file_len: u64,
}

/// Reader-facing handle of one segment.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub base_seq: u64,
    pub path: PathBuf,
    /// Sequence one past the last record, or `u64::MAX` while the segment is active.
    end_seq: AtomicU64,
    /// Byte offset just after the last frame (valid once `end_seq` is set).
    records_end: AtomicU64,
    tier0: Mutex<Tier0Slot>,
    /// The Tier 1 copy, once compressed.
    tier1: RwLock<Option<Arc<Tier1Segment>>>,
    /// The Tier 2 copy, once uploaded.
    tier2: RwLock<Option<Arc<Tier2Copy>>>,
    /// Coarse clock of the last read (least-recently-used eviction).
    last_access: AtomicU64,
    /// Retention removed it (reads of its range are `NotFound`, not damage).
    retired: std::sync::atomic::AtomicBool,
    /// Sparse index: grows while active; loaded from the footer for sealed segments.
    index: RwLock<Option<Vec<IndexEntry>>>,
    sealed: Mutex<Option<SealedMeta>>,
    quarantine: Option<String>,
    log_name: Arc<str>,
}

/// The Tier 0 copy of a segment: its file (present or evicted), its mapping (made on first
/// read), and the budget it holds while present.
#[derive(Debug, Default)]
struct Tier0Slot {
    present: bool,
    mapping: Option<Arc<Mapping>>,
    lease: Option<Lease>,
}

/// Why a Tier 0 copy was not evicted.
#[derive(Debug, PartialEq, Eq)]
pub enum EvictOutcome {
    /// Released this many bytes of the budget.
    Evicted(u64),
    /// A reader holds the mapping (or a record of it).
    InUse,
    /// Not in Tier 0, not sealed, or no Tier 1 copy.
    NotEligible,
}

static ACCESS_CLOCK: AtomicU64 = AtomicU64::new(1);

fn access_tick() -> u64 {
    ACCESS_CLOCK.fetch_add(1, Ordering::Relaxed)
}

impl Segment {
    /// A sealed segment known from the manifest; mapped lazily on first read. `tier0` is the
    /// budget held by its segment file, `None` when only Tier 1 holds it.
    pub fn sealed(
        log_name: Arc<str>,
        id: u64,
        path: PathBuf,
        meta: SealedMeta,
        tier0: Option<Lease>,
    ) -> Self {
        Segment {
            id,
            base_seq: meta.footer.base_seq,
            path,
            end_seq: AtomicU64::new(meta.footer.base_seq + meta.footer.record_count),
            records_end: AtomicU64::new(meta.footer.records_end),
            tier0: Mutex::new(Tier0Slot {
                present: tier0.is_some(),
                mapping: None,
                lease: tier0,
            }),
            tier1: RwLock::new(None),
            tier2: RwLock::new(None),
            last_access: AtomicU64::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            index: RwLock::new(None),
            sealed: Mutex::new(Some(meta)),
            quarantine: None,
            log_name,
        }
    }

    /// A quarantined segment covering `[base_seq, end_seq)`: every read of it is `Corruption`.
    pub fn quarantined(
        log_name: Arc<str>,
        id: u64,
        path: PathBuf,
        base_seq: u64,
        end_seq: u64,
        reason: String,
    ) -> Self {
        Segment {
            id,
            base_seq,
            path,
            end_seq: AtomicU64::new(end_seq),
            records_end: AtomicU64::new(0),
            tier0: Mutex::new(Tier0Slot::default()),
            tier1: RwLock::new(None),
            tier2: RwLock::new(None),
            last_access: AtomicU64::new(0),
            retired: std::sync::atomic::AtomicBool::new(false),
            index: RwLock::new(Some(Vec::new())),
            sealed: Mutex::new(None),
            quarantine: Some(reason),
            log_name,
        }
    }

    fn active(
        log_name: Arc<str>,
        id: u64,
        base_seq: u64,
        path: PathBuf,
        mapping: Arc<Mapping>,
        index: Vec<IndexEntry>,
        lease: Option<Lease>,
    ) -> Self {
        Segment {
            id,
            base_seq,
            path,
            end_seq: AtomicU64::new(u64::MAX),
            records_end: AtomicU64::new(0),
            tier0: Mutex::new(Tier0Slot {
                present: true,
                mapping: Some(mapping),
                lease,
            }),
            tier1: RwLock::new(None),
            tier2: RwLock::new(None),
            last_access: AtomicU64::new(access_tick()),
            retired: std::sync::atomic::AtomicBool::new(false),
            index: RwLock::new(Some(index)),
            sealed: Mutex::new(None),
            quarantine: None,
            log_name,
        }
    }

    /// One past the last sequence, `None` while active.
    pub fn end_seq(&self) -> Option<u64> {
        match self.end_seq.load(Ordering::Acquire) {
            u64::MAX => None,
            end => Some(end),
        }
    }

    pub fn sealed_meta(&self) -> Option<SealedMeta> {
        self.sealed.lock().clone()
    }

    pub fn quarantine_reason(&self) -> Option<&str> {
        self.quarantine.as_deref()
    }

    pub fn records_end(&self) -> u64 {
        self.records_end.load(Ordering::Acquire)
    }

    fn location(&self, offset: Option<u64>) -> String {
        match offset {
            Some(o) => format!(
                "log {:?} segment {} ({}) offset {}",
                self.log_name,
                self.id,
                self.path.display(),
                o
            ),
            None => format!(
                "log {:?} segment {} ({})",
                self.log_name,
                self.id,
                self.path.display()
            ),
        }
    }

    fn corruption(&self, offset: Option<u64>, detail: impl Into<String>) -> Error {
        Error::corruption(self.location(offset), detail)
    }

    /// The Tier 0 mapping, mapping a sealed file read-only on first use; `None` when the
    /// segment is only in Tier 1.
    pub fn tier0_mapping(&self) -> Result<Option<Arc<Mapping>>> {
        if let Some(reason) = &self.quarantine {
            return Err(self.corruption(None, format!("segment is quarantined: {reason}")));
        }
        let mut slot = self.tier0.lock();
        if let Some(m) = slot.mapping.as_ref() {
            return Ok(Some(m.clone()));
        }
        if !slot.present {
            return Ok(None);
        }
        let meta = self
            .sealed
            .lock()
            .clone()
            .ok_or_else(|| self.corruption(None, "segment has no mapping"))?;
        let file = File::open(&self.path).context(|| format!("open {}", self.path.display()))?;
        let len = file
            .metadata()
            .context(|| format!("stat {}", self.path.display()))?
            .len();
        if len != meta.file_len {
            return Err(self.corruption(
                None,
                format!("file is {len} bytes, manifest says {}", meta.file_len),
            ));
        }
        let m = Arc::new(
            Mapping::map_read(&file, &self.path, len)
                .context(|| format!("mmap {}", self.path.display()))?,
        );
        slot.mapping = Some(m.clone());
        Ok(Some(m))
    }

    /// Whether the segment file is in Tier 0.
    pub fn in_tier0(&self) -> bool {
        self.tier0.lock().present
    }

    /// The Tier 1 copy, if compressed.
    pub fn tier1(&self) -> Option<Arc<Tier1Segment>> {
        self.tier1.read().clone()
    }

    /// Whether `tier1` is still this segment's Tier 1 copy.
    pub fn tier1_is(&self, tier1: &Arc<Tier1Segment>) -> bool {
        self.tier1
            .read()
            .as_ref()
            .is_some_and(|t| Arc::ptr_eq(t, tier1))
    }

    pub fn set_tier1(&self, tier1: Arc<Tier1Segment>) {
        *self.tier1.write() = Some(tier1);
    }

    /// Forget the local Tier 1 copy (released because Tier 2 holds the segment). Readers that
    /// hold it keep reading it until they let go.
    pub fn take_tier1(&self) -> Option<Arc<Tier1Segment>> {
        self.tier1.write().take()
    }

    /// The Tier 2 copy, if uploaded.
    pub fn tier2(&self) -> Option<Arc<Tier2Copy>> {
        self.tier2.read().clone()
    }

    pub fn set_tier2(&self, tier2: Arc<Tier2Copy>) {
        *self.tier2.write() = Some(tier2);
    }

    /// Whether a copy outside Tier 0 (Tier 1 or Tier 2) holds the segment.
    pub fn has_cold_copy(&self) -> bool {
        self.tier1.read().is_some() || self.tier2.read().is_some()
    }

    /// Coarse time of the last read, for least-recently-used eviction.
    pub fn last_access(&self) -> u64 {
        self.last_access.load(Ordering::Relaxed)
    }

    /// Release the Tier 0 copy if it is sealed, has a Tier 1 copy and no reader holds its
    /// mapping. `record` (the manifest edit) runs under the slot lock before anything changes,
    /// so readers either got the mapping before (and the segment was skipped as in use) or see
    /// the segment in Tier 1 only; it returns false if the segment is gone from the manifest
    /// (retention removed it and is about to retire it here), and nothing is evicted.
    /// `keep` may take the file away for reuse (it is unlinked otherwise).
    pub fn evict_tier0(
        &self,
        record: impl FnOnce() -> Result<bool>,
        keep: impl FnOnce(&Path) -> bool,
    ) -> Result<EvictOutcome> {
        if !self.has_cold_copy() || self.sealed.lock().is_none() {
            return Ok(EvictOutcome::NotEligible);
        }
        let mut slot = self.tier0.lock();
        if !slot.present {
            return Ok(EvictOutcome::NotEligible);
        }
        if slot
            .mapping
            .as_ref()
            .is_some_and(|m| Arc::strong_count(m) > 1)
        {
            return Ok(EvictOutcome::InUse);
        }
        if !record()? {
            return Ok(EvictOutcome::NotEligible);
        }
        slot.present = false;
        slot.mapping = None;
        let released = slot.lease.take().map_or(0, |l| l.bytes());
        // The manifest already says the file is gone: a crash before the unlink leaves an
        // orphan that recovery removes. Moved away or unlinked under the slot lock, so a
        // hydration cannot install a new file in between.
        if keep(&self.path) {
            drop(slot);
            return Ok(EvictOutcome::Evicted(released));
        }
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "removing an evicted segment file failed")
            }
        }
        drop(slot);
        Ok(EvictOutcome::Evicted(released))
    }

    /// Tier 0 budget this segment holds, and whether a reader holds its mapping (or a record
    /// of it), which keeps eviction away.
    pub fn tier0_held(&self) -> (u64, bool) {
        let slot = self.tier0.lock();
        let bytes = slot.lease.as_ref().map_or(0, Lease::bytes);
        let pinned = slot
            .mapping
            .as_ref()
            .is_some_and(|m| Arc::strong_count(m) > 1);
        (bytes, pinned)
    }

    /// Stop counting this segment in the Tier 0 budget (its log closed).
    pub fn release_lease(&self) {
        self.tier0.lock().lease = None;
    }

    /// Whether retention removed it.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Retention removed this segment: release its budget and forget its Tier 1 copy (readers
    /// that hold its bytes keep them until they let go). The caller deletes the files.
    pub fn retire(&self) {
        let mut slot = self.tier0.lock();
        // Set under the slot lock: a hydration installing its file checks it there.
        self.retired.store(true, Ordering::Release);
        slot.present = false;
        slot.mapping = None;
        slot.lease = None;
        drop(slot);
        *self.tier1.write() = None;
        *self.tier2.write() = None;
    }

    /// Put a rebuilt segment file back into Tier 0 (hydration) holding `lease`. Refused (false,
    /// and the lease is given back) once retention retired the segment: its `Hydrated` edit may
    /// have been recorded just before the retirement, which then released nothing, and a
    /// retired segment is in no log's index, so no close would ever release the lease either.
    pub fn install_tier0(&self, lease: Lease) -> bool {
        let mut slot = self.tier0.lock();
        if self.retired.load(Ordering::Acquire) {
            return false;
        }
        slot.present = true;
        slot.mapping = None;
        slot.lease = Some(lease);
        true
    }

    fn ensure_index(&self, mapping: &Mapping) -> Result<()> {
        if self.index.read().is_some() {
            return Ok(());
        }
        let meta = self
            .sealed
            .lock()
            .clone()
            .ok_or_else(|| self.corruption(None, "no index"))?;
        let n = meta.footer.index_entries as u64;
        let bytes = mapping
            .slice(
                meta.footer.records_end,
                n * crate::limits::INDEX_ENTRY_BYTES,
            )
            .ok_or_else(|| self.corruption(None, "index beyond end of file"))?;
        if crc32c(bytes) != meta.footer.index_crc {
            return Err(self.corruption(
                Some(meta.footer.records_end),
                "sparse index checksum mismatch",
            ));
        }
        let entries = decode_index(bytes)
            .map_err(|e| self.corruption(Some(meta.footer.records_end), e.to_string()))?;
        *self.index.write() = Some(entries);
        Ok(())
    }

    /// Offset of the indexed frame at or before `seq`.
    fn index_floor(&self, seq: u64) -> (u64, u64) {
        let guard = self.index.read();
        let entries = guard.as_deref().unwrap_or(&[]);
        let i = entries.partition_point(|e| e.seq <= seq);
        if i == 0 {
            (self.base_seq, SEGMENT_HEADER_BYTES)
        } else {
            (entries[i - 1].seq, entries[i - 1].offset)
        }
    }

    /// Locate the frame of `seq` (which the caller knows is written and visible), in Tier 0 if
    /// the segment is there, else in its Tier 1 copy.
    pub fn locate(&self, seq: u64) -> Result<Position> {
        self.last_access.store(access_tick(), Ordering::Relaxed);
        if let Some(mapping) = self.tier0_mapping()? {
            self.ensure_index(&mapping)?;
            let (at_seq, offset) = self.index_floor(seq);
            let backing = Backing::Mapped(mapping);
            let offset = self.step_to(&backing, at_seq, offset, seq)?;
            return Ok(Position {
                backing,
                offset,
                limit: u64::MAX,
            });
        }
        self.locate_tier1(seq)
    }

    /// Locate the frame of `seq` in the Tier 1 copy (also the fallback when the Tier 0 copy
    /// fails a checksum). A local Tier 1 frame that fails its checks is read from the Tier 2
    /// copy, if there is one (the open checks only a Tier 1 file's header, footer and index).
    pub fn locate_tier1(&self, seq: u64) -> Result<Position> {
        let mut retried = false;
        let mut local_damaged = false;
        let (tier1, frame, base, count, bytes) = loop {
            let local = if local_damaged { None } else { self.tier1() };
            let tier1 = match (&local, self.tier2()) {
                (Some(t1), _) => t1.clone(),
                (None, Some(t2)) => t2.segment()?,
                (None, None) if self.retired.load(Ordering::Acquire) => {
                    return Err(Error::NotFound(format!(
                        "seq {seq}: segment {} was removed by retention",
                        self.id
                    )));
                }
                (None, None) => {
                    return Err(self.corruption(None, "segment is in neither Tier 0, 1 nor 2"));
                }
            };
            let (frame, base, count) = tier1.frame_for_seq(seq).ok_or_else(|| {
                self.corruption(None, format!("Tier 1 copy has no frame for seq {seq}"))
            })?;
            match tier1.frame(frame) {
                Ok(bytes) => break (tier1, frame, base, count, bytes),
                // The local copy was released (Tier 2 holds it) after it was looked up, and its
                // file is gone: read the copy that replaced it.
                Err(e)
                    if !retried
                        && e.kind() == crate::ErrorKind::NotFound
                        && local.as_ref().is_some_and(|t1| !self.tier1_is(t1)) =>
                {
                    retried = true;
                }
                Err(e)
                    if e.kind() == crate::ErrorKind::Corruption
                        && local.is_some()
                        && self.tier2().is_some() =>
                {
                    tracing::error!(segment = self.id, seq, error = %e, "Tier 1 copy is damaged; reading from Tier 2");
                    local_damaged = true;
                }
                Err(e) => return Err(e),
            }
        };
        let backing = Backing::Frame(bytes);
        tier1.read_ahead(frame);
        let offset = self.step_to(&backing, base, 0, seq)?;
        Ok(Position {
            backing,
            offset,
            limit: base + count,
        })
    }

    /// Walk frame headers from (`at_seq`, `offset`) to the frame of `seq`.
    fn step_to(
        &self,
        backing: &Backing,
        mut at_seq: u64,
        mut offset: u64,
        seq: u64,
    ) -> Result<u64> {
        while at_seq < seq {
            let bytes = backing.tail(offset);
            if bytes.len() < FRAME_HEADER_BYTES as usize {
                return Err(self.corruption(
                    Some(offset),
                    format!("frame of seq {at_seq} runs past the end"),
                ));
            }
            let header = peek_frame(bytes);
            if header.seq != at_seq {
                return Err(self.corruption(
                    Some(offset),
                    format!("expected seq {at_seq}, found {}", header.seq),
                ));
            }
            offset += FRAME_HEADER_BYTES + header.len as u64;
            at_seq += 1;
        }
        Ok(offset)
    }

    /// Decode and verify the frame at `offset`, which must hold `seq`.
    pub fn read_at(&self, backing: &Backing, offset: u64, seq: u64) -> Result<(Record, u64)> {
        let bytes = backing.tail(offset);
        let header = decode_frame(bytes).map_err(|e| {
            self.corruption(
                Some(offset),
                match e {
                    FrameError::Truncated => format!("frame of seq {seq} is truncated"),
                    FrameError::Checksum => format!("frame of seq {seq} fails its checksum"),
                },
            )
        })?;
        if header.seq != seq {
            return Err(self.corruption(
                Some(offset),
                format!("expected seq {seq}, found {}", header.seq),
            ));
        }
        let record = Record {
            seq,
            timestamp_ms: header.timestamp_ms,
            backing: backing.clone(),
            payload_offset: offset + FRAME_HEADER_BYTES,
            len: header.len,
        };
        Ok((record, offset + FRAME_HEADER_BYTES + header.len as u64))
    }

    /// Mark the segment full: no more frames will be written to it.
    fn mark_rolled(&self, end_seq: u64, records_end: u64) {
        self.records_end.store(records_end, Ordering::Release);
        self.end_seq.store(end_seq, Ordering::Release);
    }

    fn set_sealed(&self, meta: SealedMeta) {
        if let Some(lease) = self.tier0.lock().lease.as_mut() {
            // The preallocated tail is gone: hold only what the file keeps.
            lease.shrink_to(meta.file_len);
        }
        *self.sealed.lock() = Some(meta);
    }
}

/// A preallocated, pre-faulted segment file whose header is still blank.
#[derive(Debug)]
pub struct PreparedSegment {
    pub id: u64,
    pub path: PathBuf,
    pub capacity: u64,
    file: File,
    mapping: Arc<Mapping>,
    mode: WriteMode,
    /// Tier 0 budget held for `capacity` bytes.
    lease: Option<Lease>,
    /// The file held an older segment of this log: bytes after the frames written here may be
    /// its left-over frames (the header says so once activated).
    recycled: bool,
    /// See [`ActiveSegment::unzeroed`].
    unzeroed: bool,
}

/// Write zero bytes over `at..len` and make them durable, syncing every `ZERO_FILL_SYNC_BYTES`
/// so group commits of active logs queue behind at most that much.
fn write_zeros(file: &File, mut at: u64, len: u64) -> io::Result<()> {
    // Page-sized writes: large writes make the page cache use large folios, and every later
    // small `pwrite` into a large folio walks all of its block buffers (measured: 2.3 us per
    // 64-byte append instead of 0.8 us).
    const CHUNK: usize = 4096;
    let zeros = vec![0u8; CHUNK];
    while at < len {
        let n = (len - at).min(CHUNK as u64) as usize;
        crate::sys::retry_transient(|| file.write_all_at(&zeros[..n], at))?;
        at += n as u64;
        if at.is_multiple_of(crate::limits::ZERO_FILL_SYNC_BYTES) || at == len {
            crate::sys::retry_transient(|| file.sync_data())?;
        }
    }
    Ok(())
}

fn fallocate(file: &File, len: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len)
        .map_err(io::Error::from)
    {
        Ok(()) => Ok(()),
        // Filesystems without fallocate: fall back to a sparse file.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => file.set_len(len),
        Err(e) => Err(e),
    }
}

impl PreparedSegment {
    /// Create, preallocate and pre-fault segment `id` in `dir` (page cache pages allocated off
    /// the append path; see [`WriteMode`] for how they are mapped).
    pub fn create(
        dir: &Path,
        id: u64,
        capacity: u64,
        mode: WriteMode,
        zero_fill: bool,
    ) -> Result<Self> {
        let path = dir.join(segment_file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .context(|| format!("create segment {}", path.display()))?;
        fallocate(&file, capacity)
            .context(|| format!("preallocate {} bytes for {}", capacity, path.display()))?;
        let prepared =
            Self::map_and_prefault(id, path, capacity, file, mode, zero_fill.then_some(0))?;
        crate::sys::sync_dir(dir)?;
        Ok(prepared)
    }

    /// Turn `from`, the file of an older segment of the same log that Tier 0 evicted, into
    /// prepared segment `id`: its page cache pages are reused instead of faulting in fresh
    /// memory (measured on the 2-vCPU VMs: pre-faulting 64 MiB takes ~6 ms instead of 40-90 ms),
    /// and a durable log's blocks are already written, so only the tail the seal truncated away
    /// needs zeros.
    ///
    /// The first page is zeroed and made durable before the rename, so a crash leaves either a
    /// file that reads as prepared (blank header, no frame at offset 128) or the file under its
    /// old name. Left-over frames further in have sequence numbers below any this segment will
    /// hold, so recovery never takes them for records of it (`docs/format.md`).
    pub fn recycle(
        dir: &Path,
        id: u64,
        capacity: u64,
        mode: WriteMode,
        zero_fill: bool,
        from: &Path,
    ) -> Result<Self> {
        let path = dir.join(segment_file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(from)
            .context(|| format!("open {}", from.display()))?;
        let blank = [0u8; 4096];
        // RWF_DSYNC syncs this one page (and flushes the device cache), not the whole file,
        // whose other pages may still be dirty.
        crate::sys::retry_transient(|| {
            rustix::io::pwritev2(
                &file,
                &[io::IoSlice::new(&blank)],
                0,
                rustix::io::ReadWriteFlags::DSYNC,
            )
            .map_err(io::Error::from)
            .and_then(|n| {
                if n == blank.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(io::ErrorKind::WriteZero, "short write"))
                }
            })
        })
        .context(|| format!("blank the header of {}", from.display()))?;
        std::fs::rename(from, &path)
            .context(|| format!("rename {} to {}", from.display(), path.display()))?;
        let len = file
            .metadata()
            .context(|| format!("stat {}", path.display()))?
            .len();
        if len > capacity {
            file.set_len(capacity)
                .context(|| format!("truncate {}", path.display()))?;
        } else if len < capacity {
            fallocate(&file, capacity)
                .context(|| format!("preallocate {} bytes for {}", capacity, path.display()))?;
        }
        // Whole pages below `len` hold written blocks already.
        let zero_from = zero_fill.then_some(len.min(capacity) / 4096 * 4096);
        let mut prepared = Self::map_and_prefault(id, path, capacity, file, mode, zero_from)?;
        crate::sys::sync_dir(dir)?;
        prepared.recycled = true;
        Ok(prepared)
    }

    /// Map a preallocated file (writable only in `WriteMode::Mapped`) and fault every page in.
    /// `zero_fill`: make the bytes from this offset on written zeros on disk (see below).
    fn map_and_prefault(
        id: u64,
        path: PathBuf,
        capacity: u64,
        file: File,
        mode: WriteMode,
        zero_fill: Option<u64>,
    ) -> Result<Self> {
        if let (WriteMode::Syscall, Some(from)) = (mode, zero_fill) {
            // Write the zeros once, here, and sync them: the extents become "written", so a group
            // commit later syncs only its data. Otherwise every fdatasync also converts the range
            // it covers from unwritten to written and writes the inode (measured: 3.4 device
            // writes per group commit instead of 2, at ~40 us each). It also fills the page cache.
            write_zeros(&file, from, capacity)
                .context(|| format!("zero-fill {}", path.display()))?;
        }
        let mapping = match mode {
            WriteMode::Mapped => Mapping::map_write(&file, &path, capacity),
            WriteMode::Syscall => Mapping::map_read(&file, &path, capacity),
        };
        let mapping = Arc::new(mapping.context(|| format!("mmap {}", path.display()))?);
        match mode {
            WriteMode::Mapped => mapping.prefault_write(),
            WriteMode::Syscall => mapping.prefault_read(),
        }
        if mode == WriteMode::Mapped && zero_fill.is_some() {
            // Pre-faulting for write dirties every page: write those zeros back now, or the first
            // sync of the active segment would (measured: ~80 ms p99 append-to-visible with
            // `Interval(10 ms)`).
            crate::sys::retry_transient(|| file.sync_data())
                .context(|| format!("fdatasync {}", path.display()))?;
        }
        Ok(PreparedSegment {
            id,
            path,
            capacity,
            file,
            mapping,
            mode,
            lease: None,
            recycled: false,
            unzeroed: mode == WriteMode::Syscall && zero_fill.is_none(),
        })
    }

    /// Map and pre-fault a segment file that was prepared by an earlier run but never activated.
    pub fn reopen_blank(
        dir: &Path,
        id: u64,
        capacity: u64,
        mode: WriteMode,
        zero_fill: bool,
    ) -> Result<Self> {
        let path = dir.join(segment_file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .context(|| format!("open segment {}", path.display()))?;
        if file
            .metadata()
            .context(|| format!("stat {}", path.display()))?
            .len()
            != capacity
        {
            fallocate(&file, capacity)
                .context(|| format!("preallocate {} bytes for {}", capacity, path.display()))?;
        }
        // A recycled file has left-over frames after its blanked first page (unless the zeros
        // written below replace them).
        let mut probe = [0u8; FRAME_HEADER_BYTES as usize];
        let recycled = !zero_fill
            && file
                .read_exact_at(&mut probe, 4096)
                .is_ok_and(|()| probe.iter().any(|&b| b != 0));
        let mut prepared =
            Self::map_and_prefault(id, path, capacity, file, mode, zero_fill.then_some(0))?;
        prepared.recycled = recycled;
        // The preparer that made it wrote its zeros (a durable log's segments).
        prepared.unzeroed = false;
        Ok(prepared)
    }

    /// Bytes of the Tier 0 budget this segment holds.
    pub fn lease_bytes(&self) -> u64 {
        self.lease.as_ref().map_or(0, Lease::bytes)
    }

    /// Attach the Tier 0 budget lease that pays for this segment.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Write the header and turn this into the active segment starting at `base_seq`.
    pub fn activate(
        self,
        log_name: Arc<str>,
        log_id: u128,
        base_seq: u64,
        now_ms: u64,
        epoch: u32,
    ) -> ActiveSegment {
        let header = SegmentHeader {
            log_id,
            segment_id: self.id,
            base_seq,
            created_ms: now_ms,
            capacity: self.capacity,
            recycled: self.recycled,
        };
        let region = match self.mode {
            WriteMode::Mapped => {
                let mut region = ActiveRegion::new(self.mapping.clone());
                region
                    .region_mut(0, SEGMENT_HEADER_BYTES)
                    .copy_from_slice(&header.encode());
                Some(region)
            }
            WriteMode::Syscall => None,
        };
        let pending_header = match self.mode {
            WriteMode::Mapped => None,
            WriteMode::Syscall => Some(header.encode()),
        };
        let segment = Arc::new(Segment::active(
            log_name,
            self.id,
            base_seq,
            self.path,
            self.mapping,
            Vec::new(),
            self.lease,
        ));
        ActiveSegment {
            segment,
            log_id,
            file: Arc::new(self.file),
            region,
            pending_header,
            staged: Vec::new(),
            capacity: self.capacity,
            offset: SEGMENT_HEADER_BYTES,
            next_seq: base_seq,
            in_file_seq: base_seq,
            last_index_offset: None,
            index_entries: 0,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            created_ms: now_ms,
            epoch,
            unzeroed: self.unzeroed,
        }
    }
}

/// The writer's exclusive view of the active segment.
#[derive(Debug)]
pub struct ActiveSegment {
    pub segment: Arc<Segment>,
    /// The log's identity, written into the header and, at the seal, the footer.
    log_id: u128,
    pub file: Arc<File>,
    /// Write access to the mapping (`WriteMode::Mapped`), or `None` when frames are written
    /// with `pwrite` (`WriteMode::Syscall`).
    region: Option<ActiveRegion>,
    /// Syscall mode: the header is written together with the first frames.
    pending_header: Option<[u8; SEGMENT_HEADER_BYTES as usize]>,
    /// Syscall mode: frames appended but not yet written to the file; they end at `offset`. The
    /// next group commit writes them all with one `pwrite` ([`ActiveSegment::write_staged`]), so
    /// an append costs a memcpy under the write lock instead of a system call.
    staged: Vec<u8>,
    pub capacity: u64,
    /// Next write offset (= records end so far, staged frames included).
    pub offset: u64,
    pub next_seq: u64,
    /// Records whose frames are in the file (page cache): `next_seq` minus the staged ones.
    in_file_seq: u64,
    last_index_offset: Option<u64>,
    index_entries: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub created_ms: u64,
    /// Epoch written into every frame (the log's current open epoch).
    epoch: u32,
    /// Written with `pwrite` into space that was allocated but never written (a new log's
    /// first segment, created without zeros so that opening stays quick): every group commit
    /// also converts the extents it covers on disk, about twice the cost of a sync into
    /// written zeros. The log rolls over to a zero-filled segment as soon as one is prepared.
    pub unzeroed: bool,
}

impl ActiveSegment {
    /// Reopen an active segment found by recovery: `scan` describes its valid frames.
    #[allow(clippy::too_many_arguments)]
    pub fn reopen(
        log_name: Arc<str>,
        path: PathBuf,
        file: File,
        header: &SegmentHeader,
        scan: &ScanResult,
        epoch: u32,
        mode: WriteMode,
        lease: Option<Lease>,
    ) -> Result<Self> {
        let mapping = match mode {
            WriteMode::Mapped => Mapping::map_write(&file, &path, header.capacity),
            WriteMode::Syscall => Mapping::map_read(&file, &path, header.capacity),
        };
        let mapping = Arc::new(mapping.context(|| format!("mmap {}", path.display()))?);

        let segment = Arc::new(Segment::active(
            log_name,
            header.segment_id,
            header.base_seq,
            path,
            mapping.clone(),
            scan.index.clone(),
            lease,
        ));
        Ok(ActiveSegment {
            segment,
            log_id: header.log_id,
            file: Arc::new(file),
            region: (mode == WriteMode::Mapped).then(|| ActiveRegion::new(mapping)),
            pending_header: None,
            staged: Vec::new(),
            capacity: header.capacity,
            offset: scan.records_end,
            next_seq: header.base_seq + scan.record_count,
            in_file_seq: header.base_seq + scan.record_count,
            last_index_offset: scan.index.last().map(|e| e.offset),
            index_entries: scan.index.len() as u64,
            first_timestamp_ms: scan.first_timestamp_ms,
            last_timestamp_ms: scan.last_timestamp_ms,
            created_ms: header.created_ms,
            epoch,
            // Not known after a restart (page cache hides unwritten extents from SEEK_HOLE);
            // a recovered segment is written on as it is.
            unzeroed: false,
        })
    }

    pub fn record_count(&self) -> u64 {
        self.next_seq - self.segment.base_seq
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Fault the whole mapping in (recovered tail segments, so appends do not fault).
    pub fn prefault(&self) {
        match &self.region {
            Some(region) => region.mapping().prefault_write(),
            None => self
                .segment
                .tier0
                .lock()
                .mapping
                .as_ref()
                .map_or((), |m| m.prefault_read()),
        }
    }

    /// Whether frames totalling `frame_bytes` (`frames` of them) fit, keeping room for the
    /// index and footer.
    #[inline]
    pub fn fits(&self, frame_bytes: u64) -> bool {
        // Worst case every frame of the batch adds an index entry is far too pessimistic; a batch
        // adds at most frame_bytes / INTERVAL + 1 entries.
        let entries = self.index_entries + frame_bytes / INDEX_INTERVAL_BYTES + 1;
        self.offset + frame_bytes + crate::limits::seal_reserve_bytes(entries) <= self.capacity
    }

    /// Records whose frames are in the file: readers of the mapping may see them.
    pub fn in_file_seq(&self) -> u64 {
        self.in_file_seq
    }

    /// Write the staged frames (and the header of a fresh segment) with one `pwrite`. After it,
    /// every appended frame is complete in the page cache.
    pub fn write_staged(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if let Some(header) = self.pending_header {
            crate::sys::retry_transient(|| self.file.write_all_at(&header, 0))?;
            self.pending_header = None;
        }
        let at = self.offset - self.staged.len() as u64;
        crate::sys::retry_transient(|| self.file.write_all_at(&self.staged, at))?;
        self.staged.clear();
        // A huge batch does not keep its buffer for the life of the segment (a buffer that
        // grew past the write threshold once, as pipelined appends make it, is kept).
        let keep = 4 * crate::limits::STAGED_WRITE_BYTES as usize;
        if self.staged.capacity() > keep {
            self.staged.shrink_to(keep);
        }
        self.in_file_seq = self.next_seq;
        Ok(())
    }

    /// Append a batch of frames sharing one timestamp; the caller checked `fits`. Mapped mode:
    /// the frames are complete in the page cache when this returns. Syscall mode: they are
    /// staged until [`ActiveSegment::write_staged`], which this calls itself once
    /// `STAGED_WRITE_BYTES` are staged. Returns the frame bytes appended.
    pub fn append_batch<P: AsRef<[u8]>>(
        &mut self,
        payloads: &[P],
        timestamp_ms: u64,
    ) -> io::Result<u64> {
        use crate::format::segment::{FrameHeader, encode_frame};
        let start = self.offset;
        let mut offset = start;
        let count = payloads.len();
        for (i, payload) in payloads.iter().enumerate() {
            let payload = payload.as_ref();
            let n = FRAME_HEADER_BYTES + payload.len() as u64;
            let header = FrameHeader {
                len: payload.len() as u32,
                seq: self.next_seq + i as u64,
                timestamp_ms,
                batch_remaining: (count - 1 - i) as u32,
                epoch: self.epoch,
            };
            match &mut self.region {
                Some(region) => encode_frame(region.region_mut(offset, n), &header, payload),
                None => {
                    let at = self.staged.len();
                    self.staged.resize(at + n as usize, 0);
                    encode_frame(&mut self.staged[at..], &header, payload);
                }
            }
            offset += n;
        }
        // Index and bookkeeping once the bytes are in place (staged frames become readable only
        // when written, and readers never look past `in_file_seq`).
        let mut frame_offset = start;
        for (i, payload) in payloads.iter().enumerate() {
            let seq = self.next_seq + i as u64;
            if self
                .last_index_offset
                .is_none_or(|last| frame_offset - last >= INDEX_INTERVAL_BYTES)
            {
                self.segment
                    .index
                    .write()
                    .get_or_insert_with(Vec::new)
                    .push(IndexEntry {
                        seq,
                        offset: frame_offset,
                        timestamp_ms,
                    });
                self.last_index_offset = Some(frame_offset);
                self.index_entries += 1;
            }
            frame_offset += FRAME_HEADER_BYTES + payload.as_ref().len() as u64;
        }
        if self.next_seq == self.segment.base_seq {
            self.first_timestamp_ms = timestamp_ms;
        }
        self.last_timestamp_ms = timestamp_ms;
        self.next_seq += count as u64;
        self.offset = offset;
        if self.region.is_some() {
            self.in_file_seq = self.next_seq;
        } else if self.staged.len() as u64 >= crate::limits::STAGED_WRITE_BYTES {
            self.write_staged()?;
        }
        Ok(offset - start)
    }

    /// Stop writing: readers learn the final extent. Returns what the sealer needs. The caller
    /// wrote the staged frames first.
    pub fn roll(self) -> RolledSegment {
        debug_assert!(self.staged.is_empty(), "rolled with staged frames");
        self.segment.mark_rolled(self.next_seq, self.offset);
        let record_count = self.record_count();
        RolledSegment {
            segment: self.segment,
            log_id: self.log_id,
            file: self.file,
            capacity: self.capacity,
            records_end: self.offset,
            record_count,
            first_timestamp_ms: self.first_timestamp_ms,
            last_timestamp_ms: self.last_timestamp_ms,
        }
    }
}

/// A full segment waiting for its footer.
#[derive(Debug)]
pub struct RolledSegment {
    pub segment: Arc<Segment>,
    log_id: u128,
    pub file: Arc<File>,
    capacity: u64,
    pub records_end: u64,
    pub record_count: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
}

impl RolledSegment {
    /// Open the segment file again, for the sealer: Linux reports a writeback error to one
    /// `fdatasync` per open file description (the kernel marks the pages clean either way), and
    /// group commits sync [`RolledSegment::file`] until the seal is recorded. Through a
    /// description of its own, a failed writeback fails both the seal and the group commit,
    /// whichever syncs first; through a shared one, the second sync would succeed and
    /// acknowledge records whose pages were dropped.
    pub fn open_for_seal(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.segment.path)
            .context(|| format!("open {} to seal it", self.segment.path.display()))
    }

    /// Write the sparse index and footer through `file` (from [`RolledSegment::open_for_seal`]),
    /// sync, truncate the preallocated tail and sync again. With `sync == false` nothing is
    /// synced: the caller makes the segment durable another way (its Tier 1 copy) or syncs
    /// `file` itself before recording the seal.
    pub fn seal(self, file: &File, now_ms: u64, sync: bool) -> Result<(Arc<Segment>, SealedMeta)> {
        let seg = self.segment.clone();
        let entries = seg.index.read().clone().unwrap_or_default();
        let index_bytes = encode_index(&entries);
        let footer = SegmentFooter {
            index_entries: entries.len() as u32,
            log_id: self.log_id,
            segment_id: seg.id,
            base_seq: seg.base_seq,
            record_count: self.record_count,
            records_end: self.records_end,
            first_timestamp_ms: self.first_timestamp_ms,
            last_timestamp_ms: self.last_timestamp_ms,
            sealed_ms: now_ms,
            index_crc: crc32c(&index_bytes),
        };
        let encoded = footer.encode();
        let file_len = footer.file_len();
        if file_len > self.capacity {
            return Err(seg.corruption(None, "index and footer do not fit the segment (bug)"));
        }
        let path = seg.path.display().to_string();
        let mut tail = index_bytes;
        tail.extend_from_slice(&encoded);
        crate::sys::retry_transient(|| file.write_all_at(&tail, self.records_end))
            .context(|| format!("write index and footer of {path}"))?;
        if sync {
            crate::sys::retry_transient(|| file.sync_data())
                .context(|| format!("fdatasync {path}"))?;
        }
        file.set_len(file_len)
            .context(|| format!("truncate {path}"))?;
        if sync {
            crate::sys::retry_transient(|| file.sync_all()).context(|| format!("fsync {path}"))?;
        }
        let meta = SealedMeta {
            footer,
            footer_crc: SegmentFooter::stored_crc(&encoded),
            file_len,
        };
        seg.set_sealed(meta.clone());
        Ok((seg, meta))
    }
}

/// Valid frames found by scanning a segment from its first frame.
#[derive(Debug, Clone, Default)]
pub struct ScanResult {
    pub record_count: u64,
    /// Offset just after the last frame kept.
    pub records_end: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub index: Vec<IndexEntry>,
    /// Why the scan stopped before `limit` (None: clean end: zeros or exactly at `limit`).
    pub stop: Option<String>,
    /// Frames that were valid but dropped because their batch was incomplete.
    pub dropped_incomplete_batch: u64,
    /// Valid frames of this segment found after the point where the scan stopped: records
    /// written after a damaged range, which recovery drops with the tail. `None` for an
    /// ordinary end.
    pub later: Option<LaterFrames>,
}

/// Valid frames found past the end of a segment's readable frames (`scan_frames`): frames with
/// a valid checksum, a sequence number at or after the first missing one, and an epoch not below
/// that of the last readable frame. A crash (`kill -9`) never leaves any: the end of the frames
/// is then torn at most. Damage in the middle of the frames (a zeroed page, flipped bits) does.
/// A power loss can too, but only for frames that were never synced, so never acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaterFrames {
    /// Offset of the first one.
    pub first_offset: u64,
    /// How many were found.
    pub frames: u64,
    /// Lowest and highest sequence number among them.
    pub first_seq: u64,
    pub last_seq: u64,
    /// Offset just after the last one.
    pub end_offset: u64,
}

/// How far past the end of the readable frames [`scan_frames`] looks for later frames: behind
/// the usual end (zeros, a left-over frame), far enough to step over a zeroed page or two and
/// cheap enough for every open (~1 ms); behind garbage, further, but still bounded: a busy
/// buffered writer killed in the middle of a frame leaves garbage, and its reopen must not read
/// through 64 MiB of a reused file's left-over frames (~1.5 ns a byte).
const LATER_FRAMES_WINDOW_BYTES: u64 = 1 << 20;
const LATER_FRAMES_GARBAGE_WINDOW_BYTES: u64 = 4 << 20;

/// Look for valid frames in `bytes[from..limit]` (see [`LaterFrames`]): every byte offset is a
/// candidate, since frames are not aligned.
fn find_later_frames(
    bytes: &[u8],
    from: u64,
    limit: u64,
    next_seq: u64,
    min_epoch: u32,
) -> Option<LaterFrames> {
    let limit = limit.min(bytes.len() as u64) as usize;
    let mut found: Option<LaterFrames> = None;
    let mut at = from as usize;
    while at + FRAME_HEADER_BYTES as usize <= limit {
        // A frame's first four bytes (its CRC) are not all zero: skip zero runs 64 bytes at a
        // time, up to where the next non-zero byte could end such a CRC.
        if let Some(block) = bytes.get(at..at + 64)
            && block.iter().all(|&b| b == 0)
        {
            at += 61;
            continue;
        }
        let candidate = &bytes[at..limit];
        let seq = u64::from_le_bytes(candidate[8..16].try_into().expect("8 bytes"));
        // Cheap filters before any checksum: the stored CRC is not zero, and the sequence is one
        // the lost frames can have here: every frame between `from` and `at` takes at least a
        // header's bytes. (A looser bound let the offsets of a sparse index through, each a
        // checksum over whatever length followed: 20-37 ms for a 190 KiB seal reserve.)
        let most = (at - from as usize) as u64 / FRAME_HEADER_BYTES + 1;
        if candidate[..4] == [0; 4] || seq.wrapping_sub(next_seq) > most {
            at += 1;
            continue;
        }
        let Ok(header) = decode_frame(candidate) else {
            at += 1;
            continue;
        };
        if header.epoch < min_epoch {
            at += 1;
            continue;
        }
        let f = found.get_or_insert(LaterFrames {
            first_offset: at as u64,
            frames: 0,
            first_seq: header.seq,
            last_seq: header.seq,
            end_offset: 0,
        });
        f.frames += 1;
        f.first_seq = f.first_seq.min(header.seq);
        f.last_seq = f.last_seq.max(header.seq);
        at += FRAME_HEADER_BYTES as usize + header.len as usize;
        f.end_offset = at as u64;
    }
    found
}

/// Scan frames from the first one, validating checksums and sequence continuity, stopping at the
/// first invalid frame or at `limit` (the end of the records area). A trailing incomplete batch
/// is not counted.
pub fn scan_frames(bytes: &[u8], base_seq: u64, limit: u64) -> ScanResult {
    let limit = limit.min(bytes.len() as u64);
    let mut result = ScanResult {
        records_end: SEGMENT_HEADER_BYTES,
        ..Default::default()
    };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut seq = base_seq;
    let mut last_index: Option<u64> = None;
    // Frames of the batch in progress (not yet complete).
    let mut pending: Vec<IndexEntry> = Vec::new();
    let mut pending_first_ts = 0;
    let mut pending_count = 0u64;
    let mut epoch = 0u32;
    // The scan ended the usual way (zeros, a left-over frame of an older segment or an older
    // epoch), not at garbage.
    let mut usual_end = false;
    while offset < limit {
        let frame_bytes = &bytes[offset as usize..limit as usize];
        let header = match decode_frame(frame_bytes) {
            Ok(h) => h,
            Err(e) => {
                let zeros = frame_bytes
                    .iter()
                    .take(FRAME_HEADER_BYTES as usize)
                    .all(|&b| b == 0);
                if zeros {
                    usual_end = true;
                } else {
                    result.stop = Some(format!("{e} at offset {offset}"));
                }
                break;
            }
        };
        if header.seq != seq {
            usual_end = header.seq < seq;
            result.stop = Some(format!(
                "expected seq {seq}, found {} at offset {offset}",
                header.seq
            ));
            break;
        }
        if header.epoch < epoch {
            usual_end = true;
            // Left over from before a crash: a later open wrote over the frames before it.
            result.stop = Some(format!(
                "stale frame of epoch {} after epoch {epoch} at offset {offset}",
                header.epoch
            ));
            break;
        }
        // A frame at u64::MAX would leave no sequence for the next one: only a damaged header
        // can claim it, so the records end before it.
        let Some(next_seq) = seq.checked_add(1) else {
            result.stop = Some(format!("sequence space exhausted at offset {offset}"));
            break;
        };
        epoch = header.epoch;
        if pending_count == 0 {
            pending_first_ts = header.timestamp_ms;
        }
        if last_index.is_none_or(|last| offset - last >= INDEX_INTERVAL_BYTES) {
            pending.push(IndexEntry {
                seq,
                offset,
                timestamp_ms: header.timestamp_ms,
            });
            last_index = Some(offset);
        }
        pending_count += 1;
        offset += FRAME_HEADER_BYTES + header.len as u64;
        seq = next_seq;
        if header.batch_remaining == 0 {
            if result.record_count == 0 {
                result.first_timestamp_ms = pending_first_ts;
            }
            result.record_count += pending_count;
            result.records_end = offset;
            result.last_timestamp_ms = header.timestamp_ms;
            result.index.append(&mut pending);
            pending_count = 0;
        }
    }
    result.dropped_incomplete_batch = pending_count;
    if pending_count > 0 && result.stop.is_none() {
        result.stop = Some(format!(
            "incomplete batch of {pending_count} frames at the end"
        ));
    }
    if offset < limit {
        // Stopped before the end: were frames written after this point?
        let window = if usual_end {
            LATER_FRAMES_WINDOW_BYTES
        } else {
            LATER_FRAMES_GARBAGE_WINDOW_BYTES
        };
        let search_end = limit.min(offset.saturating_add(window));
        result.later = find_later_frames(bytes, offset, search_end, seq, epoch);
    }
    result
}

/// Read and check the header, and (if the file is sealed) the footer and index of a segment file.
pub fn read_header(file: &File, path: &Path) -> Result<Option<SegmentHeader>> {
    let mut buf = [0u8; SEGMENT_HEADER_BYTES as usize];
    let n =
        read_full_at(file, &mut buf, 0).context(|| format!("read header of {}", path.display()))?;
    if n < buf.len() || SegmentHeader::is_blank(&buf) {
        return Ok(None);
    }
    SegmentHeader::decode(&buf).map(Some).map_err(|e| match e {
        FormatError::UnsupportedVersion(v) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: v,
            supported: crate::format::FORMAT_VERSION,
        },
        other => Error::corruption(
            format!("{} offset 0", path.display()),
            format!("segment header: {other}"),
        ),
    })
}

/// Read the footer at the end of a file of `file_len` bytes.
pub fn read_footer(file: &File, path: &Path, file_len: u64) -> Result<SegmentFooter> {
    if file_len < SEGMENT_HEADER_BYTES + SEGMENT_FOOTER_BYTES {
        return Err(Error::corruption(
            path.display().to_string(),
            format!("file of {file_len} bytes is too short"),
        ));
    }
    let mut buf = [0u8; SEGMENT_FOOTER_BYTES as usize];
    let at = file_len - SEGMENT_FOOTER_BYTES;
    read_full_at(file, &mut buf, at).context(|| format!("read footer of {}", path.display()))?;
    let footer = SegmentFooter::decode(&buf).map_err(|e| {
        Error::corruption(
            format!("{} offset {at}", path.display()),
            format!("segment footer: {e}"),
        )
    })?;
    if footer.file_len() != file_len {
        return Err(Error::corruption(
            format!("{} offset {at}", path.display()),
            format!(
                "footer describes a {}-byte file, file is {file_len} bytes",
                footer.file_len()
            ),
        ));
    }
    Ok(footer)
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Check a sealed segment file against what the manifest recorded: header, footer, and that they
/// agree. Cheap (two small reads), so open time does not grow with the data in the segment.
pub fn check_sealed(
    path: &Path,
    expected_footer_crc: u32,
    expected_len: u64,
) -> Result<SealedMeta> {
    let file = File::open(path).context(|| format!("open {}", path.display()))?;
    let len = file
        .metadata()
        .context(|| format!("stat {}", path.display()))?
        .len();
    if len != expected_len {
        return Err(Error::corruption(
            path.display().to_string(),
            format!("file is {len} bytes, manifest says {expected_len}"),
        ));
    }
    let header = read_header(&file, path)?.ok_or_else(|| {
        Error::corruption(
            format!("{} offset 0", path.display()),
            "segment header is blank",
        )
    })?;
    let footer = read_footer(&file, path, len)?;
    let mut raw = [0u8; SEGMENT_FOOTER_BYTES as usize];
    read_full_at(&file, &mut raw, len - SEGMENT_FOOTER_BYTES)
        .context(|| format!("read {}", path.display()))?;
    let crc = SegmentFooter::stored_crc(&raw);
    if crc != expected_footer_crc
        || header.log_id != footer.log_id
        || header.segment_id != footer.segment_id
        || header.base_seq != footer.base_seq
    {
        return Err(Error::corruption(
            path.display().to_string(),
            "header, footer and manifest disagree",
        ));
    }
    Ok(SealedMeta {
        footer,
        footer_crc: crc,
        file_len: len,
    })
}

/// Deep check of a sealed segment file: every frame's checksum and sequence, and the index.
pub fn verify_sealed(path: &Path, meta: &SealedMeta) -> Result<u64> {
    let file = File::open(path).context(|| format!("open {}", path.display()))?;
    let len = file
        .metadata()
        .context(|| format!("stat {}", path.display()))?
        .len();
    // Never map past the end of the file (a read there is SIGBUS).
    if len != meta.file_len {
        return Err(Error::corruption(
            path.display().to_string(),
            format!("file is {len} bytes, its footer says {}", meta.file_len),
        ));
    }
    let mapping =
        Mapping::map_read(&file, path, len).context(|| format!("mmap {}", path.display()))?;
    verify_sealed_bytes(mapping.tail(0), path, meta)
}

/// [`verify_sealed`] of a mapping already held (`path` names it in errors).
pub fn verify_sealed_bytes(bytes: &[u8], path: &Path, meta: &SealedMeta) -> Result<u64> {
    let scan = scan_frames(bytes, meta.footer.base_seq, meta.footer.records_end);
    let location = |offset: u64| format!("{} offset {offset}", path.display());
    if scan.record_count != meta.footer.record_count || scan.records_end != meta.footer.records_end
    {
        return Err(Error::corruption(
            location(scan.records_end),
            format!(
                "{} of {} records verify: {}",
                scan.record_count,
                meta.footer.record_count,
                scan.stop.unwrap_or_else(|| "frames end early".into())
            ),
        ));
    }
    let index = bytes
        .get(meta.footer.records_end as usize..(meta.file_len - SEGMENT_FOOTER_BYTES) as usize)
        .unwrap_or(&[]);
    if crc32c(index) != meta.footer.index_crc {
        return Err(Error::corruption(
            location(meta.footer.records_end),
            "sparse index checksum mismatch",
        ));
    }
    Ok(scan.record_count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::segment::{FrameHeader, encode_frame};
    use crate::tiering::budget::Tier0Budget;

    /// A hydration records `Hydrated`, then installs its file; retention may retire the segment
    /// in between (its edit comes after `Hydrated`). The retired segment is in no index any more,
    /// so nothing would release a lease installed into it: the install must refuse it.
    #[test]
    fn a_retired_segment_takes_no_tier0_lease() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Tier0Budget::new(1 << 20);
        let capacity = crate::limits::MIN_SEGMENT_BYTES;
        let prepared =
            PreparedSegment::create(dir.path(), 0, capacity, WriteMode::Syscall, false).unwrap();
        let mut active = prepared
            .with_lease(budget.try_acquire(capacity).unwrap())
            .activate(Arc::from("log"), 1, 0, 1, 1);
        active.append_batch(&[b"record"], 1).unwrap();
        active.write_staged().unwrap();
        let rolled = active.roll();
        let file = rolled.open_for_seal().unwrap();
        let (segment, meta) = rolled.seal(&file, 2, false).unwrap();
        assert_eq!(budget.used(), meta.file_len);
        segment.retire();
        assert_eq!(budget.used(), 0, "retirement releases the segment's lease");
        let hydrated = budget.try_acquire(meta.file_len).unwrap();
        assert!(
            !segment.install_tier0(hydrated),
            "a retired segment is not installed"
        );
        assert_eq!(budget.used(), 0, "the hydration's lease is given back");
        assert!(!segment.in_tier0());
    }

    /// A frame at any offset after a zero run is found (the zero run is skipped in blocks), and
    /// frames of an older epoch or with an earlier sequence are not.
    #[test]
    fn later_frames_are_found_at_any_offset_behind_zeros() {
        let payload = b"later";
        let frame = |seq: u64, epoch: u32| {
            let header = FrameHeader {
                len: payload.len() as u32,
                seq,
                timestamp_ms: 1,
                batch_remaining: 0,
                epoch,
            };
            let mut buf = vec![0u8; FRAME_HEADER_BYTES as usize + payload.len()];
            encode_frame(&mut buf, &header, payload);
            buf
        };
        for at in 0..200usize {
            let mut bytes = vec![0u8; at];
            bytes.extend(frame(10, 3));
            bytes.extend(vec![0u8; 100]);
            let found = find_later_frames(&bytes, 0, bytes.len() as u64, 10, 3).unwrap();
            assert_eq!(found.first_offset, at as u64);
            assert_eq!((found.frames, found.first_seq, found.last_seq), (1, 10, 10));
            assert_eq!(
                find_later_frames(&bytes, 0, bytes.len() as u64, 10, 4),
                None
            );
            assert_eq!(
                find_later_frames(&bytes, 0, bytes.len() as u64, 11, 3),
                None
            );
        }
    }
}
