//! Aof: one log's façade (append, read, reader, flush, close) and the shared state behind it.
//!
//! Write path: an append takes the log's write lock, writes its frames into the page cache of the
//! active segment (memcpy into the mapping; durable logs stage them in memory, and the group-commit
//! leader writes every staged frame with one `pwrite` before its fdatasync; see
//! `segment::WriteMode`), publishes the new written watermark and releases the lock. Durability is a
//! separate step ([`LogShared::sync_to`]): group commit with one fdatasync per group. Rollover
//! swaps in a segment prepared in the background and hands the full one to the sealer.
//!
//! Invariants:
//! - `durable <= written`; a record is durable only once every segment holding records before it
//!   has been synced.
//! - A failed sync is sticky: the log refuses appends until reopened (see `docs/durability.md`).
//! - Frames below the written watermark are immutable (readers map them zero-copy).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use tokio::sync::watch;

use crate::config::{Durability, LogConfig, ReadVisibility};
use crate::error::{Error, Result};
use crate::flush::{FlushManager, Job};
use crate::format::manifest::{Edit, SealedInfo};
use crate::limits::{self, FRAME_HEADER_BYTES};
use crate::manifest::ManifestLog;
use crate::manifest::index::SegmentIndex;
use crate::read::Reader;
use crate::segment::{
    ActiveSegment, PreparedSegment, Record, RolledSegment, WriteMode, recycled_file_name,
};
use crate::stats::{LogCounters, LogStats};
use crate::sys;
use crate::tiering::{SealOutcome, Tiering};

/// Fault injection seam for tests: called before each segment fdatasync of a group commit (and
/// before each retry of one); an error it returns is that fdatasync's result.
pub type SyncFault = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Time seam for tests: the clock `Durability::Interval` deadlines are measured on (default
/// `Instant::now`). A test moves it forward to make a deadline pass without waiting for it.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

pub(crate) struct WriteState {
    pub(crate) active: Option<ActiveSegment>,
    /// Files of rolled segments whose frames are not yet covered by a sync.
    unsynced: Vec<Arc<std::fs::File>>,
    /// Frame bytes written since open (compared with `durable_bytes` for backpressure).
    written_bytes: u64,
    last_timestamp_ms: u64,
}

#[derive(Default)]
struct PrepareSlot {
    ready: std::collections::BTreeMap<u64, PreparedSegment>,
    /// Jobs queued or running.
    in_progress: usize,
    /// Ids allocated by running jobs.
    in_progress_ids: std::collections::BTreeSet<u64>,
    /// Blank segments left by an earlier run, reused before new ones are created.
    reuse: std::collections::VecDeque<(u64, u64)>,
    /// Files of evicted segments kept to be prepared again ([`LogShared::keep_for_reuse`]),
    /// with when each was kept.
    recycled: Vec<(PathBuf, Instant)>,
    /// Names of kept files a preparation is renaming away: not free for another file yet.
    recycling: Vec<PathBuf>,
    error: Option<Error>,
}

impl PrepareSlot {
    /// Whether the next segment to activate is ready: segments are activated in the order of
    /// their ids (recovery walks them that way), so not while a lower id is being prepared or
    /// waits to be prepared again (given back by [`LogShared::release_prepared`] while a higher
    /// one was being prepared).
    fn has_next(&self) -> bool {
        let oldest_busy = self.in_progress_ids.iter().next().copied();
        let oldest_waiting = self.reuse.iter().map(|&(id, _)| id).min();
        let lowest_pending = match (oldest_busy, oldest_waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.ready
            .first_key_value()
            .is_some_and(|(id, _)| lowest_pending.is_none_or(|pending| *id < pending))
    }
}

/// State shared by every handle of one log and by the background workers.
pub(crate) struct LogShared {
    pub(crate) name: Arc<str>,
    pub(crate) log_id: u128,
    pub(crate) segment_dir: PathBuf,
    pub(crate) config: LogConfig,
    write: Mutex<WriteState>,
    /// Records appended (their sequences are taken), staged ones included.
    written: AtomicU64,
    /// Records whose frames are in the file, where readers of the mapping can see them:
    /// `written` minus the frames a durable log has staged for the next group commit.
    in_file: AtomicU64,
    durable: AtomicU64,
    /// `WriteState::written_bytes` covered by the latest successful sync.
    durable_bytes: AtomicU64,
    syncs_in_flight: AtomicU32,
    /// Highest written watermark a started sync covers.
    sync_started_target: AtomicU64,
    sync_epoch: AtomicU32,
    /// Records the next group commit expects ([`LogShared::group_ready`]).
    next_group: AtomicU64,
    durable_watch: watch::Sender<(u64, bool)>,
    failed: AtomicBool,
    failure: Mutex<Option<Error>>,
    closed: AtomicBool,
    /// Held by the first `close` until it is done; later callers wait on it and get its outcome
    /// (`None`: closed cleanly), so no caller returns while the log is still closing.
    closing: Mutex<Option<Option<Error>>>,
    pub(crate) segments: RwLock<SegmentIndex>,
    pub(crate) manifest: Mutex<ManifestLog>,
    prepare: Mutex<PrepareSlot>,
    prepared: Condvar,
    pending_seals: Mutex<usize>,
    seals_done: Condvar,
    /// Background tasks (preparation, compression, eviction, hydration) running on this log;
    /// `close` waits for them, so a reopened log never shares its manifest with a late task.
    background: Mutex<usize>,
    background_done: Condvar,
    flush_scheduled: AtomicBool,
    /// A flush was asked for while one was queued or running (see `background_flush`).
    flush_again: AtomicBool,
    prepare_started: AtomicBool,
    /// Followers waiting in [`LogShared::wait_visible`] for `in_file` (written visibility, and
    /// every follower of a `None` log) and for `durable`; each kind has its condition variable
    /// (both used under `visible`), so appends wake only the followers they concern.
    file_followers: AtomicUsize,
    durable_followers: AtomicUsize,
    visible: Mutex<()>,
    file_changed: Condvar,
    durable_changed: Condvar,
    avg_sync_ns: AtomicU64,
    /// `Interval` logs: when the oldest record that no started sync covers was appended, in ns
    /// since `opened_at` on `clock`; `u64::MAX` while every record is covered. Set by the append
    /// that follows a covered state and cleared by the sync that starts, both under the write
    /// lock; the timer starts a sync once it is due ([`LogShared::on_tick`]).
    uncovered_since_ns: AtomicU64,
    /// `segment_max_age`: wall-clock ms before which the active segment cannot be too old, so
    /// the timer need not take the write lock (appenders hold it) on every tick to look.
    age_check_after_ms: AtomicU64,
    clock: Option<Clock>,
    opened_at: Instant,
    pub(crate) counters: LogCounters,
    workers: Arc<FlushManager>,
    pub(crate) tiering: Arc<Tiering>,
    sync_fault: Option<SyncFault>,
    me: std::sync::Weak<LogShared>,
    /// Open epoch written into every frame.
    epoch: u32,
    /// Opened read-only: appends are refused and nothing on disk changes.
    read_only: bool,
    /// Tier 2 writer claim; a fenced claim refuses appends.
    claim: std::sync::OnceLock<Arc<crate::tier2::LogClaim>>,
    /// The TieredCoordinator counted this log's Tier 1 files (`Tiering::register`): its close
    /// takes them off again. An open refused before that (a Tier 2 claim) counted nothing.
    pub(crate) tier1_counted: AtomicBool,
    /// The manager's open logs, which this log leaves once closed ([`LogShared::forget`]).
    open_logs: std::sync::Weak<crate::manager::OpenLogs>,
}

impl std::fmt::Debug for LogShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogShared")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What recovery hands to a new `LogShared`.
pub(crate) struct Recovered {
    pub name: Arc<str>,
    pub log_id: u128,
    pub segment_dir: PathBuf,
    pub manifest: ManifestLog,
    pub index: SegmentIndex,
    /// The segment appends continue in; `None` only for a read-only handle of a log without one.
    pub active: Option<ActiveSegment>,
    /// Records in the log.
    pub next_seq: u64,
    /// Whether the handle refuses appends (nothing on disk may change).
    pub read_only: bool,
    /// Segments prepared by an earlier run and never activated: (id, capacity), oldest first.
    pub blank_segments: Vec<(u64, u64)>,
    /// Full segments an interrupted run left unsealed, in order, for the background sealer
    /// (`Durability::None` logs: the open does not wait for their writeback).
    pub unsealed: Vec<RolledSegment>,
    /// Files of segments found sealed on disk whose writeback a `None` open did not wait for:
    /// group commits sync them (the durable watermark stays below them until then).
    pub unsynced_files: Vec<Arc<std::fs::File>>,
    /// Records known to be on disk: `next_seq`, or the first record of `unsealed` or
    /// `unsynced_files` (left unsynced).
    pub durable_seq: u64,
    /// Timestamp of the newest record of the log (0 without records): appends never stamp
    /// earlier ones.
    pub last_timestamp_ms: u64,
}

impl LogShared {
    pub(crate) fn new(
        rec: Recovered,
        config: LogConfig,
        workers: Arc<FlushManager>,
        tiering: Arc<Tiering>,
        sync_fault: Option<SyncFault>,
        clock: Option<Clock>,
        open_logs: std::sync::Weak<crate::manager::OpenLogs>,
    ) -> Arc<Self> {
        let next = rec.next_seq;
        let durable = rec.durable_seq.min(next);
        let epoch = rec.active.as_ref().map_or(0, ActiveSegment::epoch);
        let reuse = rec.blank_segments.into_iter().collect();
        let last_ts = rec
            .active
            .as_ref()
            .map_or(0, |a| a.last_timestamp_ms)
            .max(rec.last_timestamp_ms);
        let read_only = rec.read_only;
        let opened_at = clock.as_ref().map_or_else(Instant::now, |c| c());
        Arc::new_cyclic(|me| LogShared {
            me: me.clone(),
            name: rec.name,
            log_id: rec.log_id,
            segment_dir: rec.segment_dir,
            config,
            read_only,
            write: Mutex::new(WriteState {
                active: rec.active,
                unsynced: rec.unsynced_files,
                written_bytes: 0,
                last_timestamp_ms: last_ts,
            }),
            written: AtomicU64::new(next),
            in_file: AtomicU64::new(next),
            durable: AtomicU64::new(durable),
            durable_bytes: AtomicU64::new(0),
            syncs_in_flight: AtomicU32::new(0),
            sync_started_target: AtomicU64::new(durable),
            sync_epoch: AtomicU32::new(0),
            next_group: AtomicU64::new(1),
            durable_watch: watch::Sender::new((durable, false)),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            closed: AtomicBool::new(false),
            closing: Mutex::new(None),
            segments: RwLock::new(rec.index),
            manifest: Mutex::new(rec.manifest),
            prepare: Mutex::new(PrepareSlot {
                reuse,
                ..PrepareSlot::default()
            }),
            epoch,
            prepared: Condvar::new(),
            pending_seals: Mutex::new(0),
            seals_done: Condvar::new(),
            background: Mutex::new(0),
            background_done: Condvar::new(),
            flush_scheduled: AtomicBool::new(false),
            flush_again: AtomicBool::new(false),
            prepare_started: AtomicBool::new(false),
            file_followers: AtomicUsize::new(0),
            durable_followers: AtomicUsize::new(0),
            visible: Mutex::new(()),
            file_changed: Condvar::new(),
            durable_changed: Condvar::new(),
            avg_sync_ns: AtomicU64::new(150_000),
            // Records recovery left unsynced (a `None` open) count as appended now.
            uncovered_since_ns: AtomicU64::new(if durable < next { 0 } else { u64::MAX }),
            age_check_after_ms: AtomicU64::new(0),
            clock,
            opened_at,
            counters: LogCounters::default(),
            workers,
            tiering,
            sync_fault,
            claim: std::sync::OnceLock::new(),
            tier1_counted: AtomicBool::new(false),
            open_logs,
        })
    }

    // ---------------------------------------------------------------- append

    fn check_open(&self) -> Result<()> {
        self.check_followable()?;
        if let Some(claim) = self.claim.get() {
            claim.check()?;
        }
        Ok(())
    }

    /// Whether records may still arrive for a follower: not once the log failed or closed.
    pub(crate) fn check_followable(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(self.failure_error());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed(format!("log {:?}", self.name)));
        }
        Ok(())
    }

    fn failure_error(&self) -> Error {
        let cause = self
            .failure
            .lock()
            .clone()
            .unwrap_or_else(|| Error::Closed("log".into()));
        Error::LogFailed {
            log: self.name.to_string(),
            cause: Arc::new(cause),
        }
    }

    /// Mark the log failed (sticky) and wake everyone who waits on it.
    pub(crate) fn fail(&self, error: Error) {
        tracing::error!(log = %self.name, %error, "log failed; reopen required");
        {
            let mut f = self.failure.lock();
            if f.is_none() {
                *f = Some(error);
            }
        }
        self.failed.store(true, Ordering::Release);
        self.sync_epoch.fetch_add(1, Ordering::AcqRel);
        atomic_wait::wake_all(&self.sync_epoch);
        self.durable_watch.send_modify(|v| v.1 = true);
        self.notify_visible();
    }

    /// Write a batch of records; returns the first sequence. Does not wait for durability.
    pub(crate) fn write_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<u64> {
        let max = self.config.max_record_bytes;
        let mut frame_bytes = 0u64;
        for p in payloads {
            let len = p.as_ref().len() as u64;
            if len > max {
                return Err(Error::RecordTooLarge { len, max });
            }
            frame_bytes += FRAME_HEADER_BYTES + len;
        }
        if self.read_only {
            return Err(Error::ReadOnly {
                log: self.name.to_string(),
            });
        }
        if payloads.is_empty() {
            return Err(Error::InvalidBatch(
                "a batch needs at least one record".into(),
            ));
        }
        if payloads.len() > limits::MAX_BATCH_RECORDS {
            return Err(Error::InvalidBatch(format!(
                "{} records exceed the maximum of {} per batch",
                payloads.len(),
                limits::MAX_BATCH_RECORDS
            )));
        }
        let batch_limit = self.config.segment_payload_limit() + FRAME_HEADER_BYTES;
        if frame_bytes > batch_limit {
            return Err(Error::InvalidBatch(format!(
                "{frame_bytes} bytes of frames exceed the {batch_limit} bytes one segment holds \
                 (a batch never spans segments)"
            )));
        }
        self.check_open()?;
        let mut w = self.write.lock();
        if matches!(self.config.durability, Durability::Interval(_))
            && w.written_bytes - self.durable_bytes.load(Ordering::Acquire)
                >= self.config.dirty_limit_bytes
        {
            // Backpressure: too much is not yet durable; sync before writing more.
            drop(w);
            self.counters
                .backpressure_waits
                .fetch_add(1, Ordering::Relaxed);
            self.sync_to(self.written())?;
            w = self.write.lock();
        }
        self.check_open()?;
        let active = w.active.as_ref().expect("active segment");
        if active.unzeroed
            && active.record_count() > 0
            && self.prepare_started.load(Ordering::Relaxed)
            && self.prepared_is_ready()
        {
            // Leave a segment whose group commits cost about two syncs for a zero-filled one
            // as soon as one is ready (it was requested below, once this log proved busy).
            self.roll(&mut w)?;
        }
        let mut deadline = None;
        while !w.active.as_ref().expect("active segment").fits(frame_bytes) {
            if self.roll(&mut w)? {
                if !w.active.as_ref().expect("active segment").fits(frame_bytes) {
                    // Only possible with a segment prepared under a smaller configuration.
                    return Err(Error::RecordTooLarge {
                        len: frame_bytes,
                        max: batch_limit,
                    });
                }
                break;
            }
            // No segment is ready: wait without the write lock (group commits of what is
            // already written must not wait for Tier 0 room), then look again.
            drop(w);
            let until =
                *deadline.get_or_insert_with(|| Instant::now() + self.tiering.admission_timeout);
            self.wait_prepared(until)?;
            w = self.write.lock();
            self.check_open()?;
        }
        let now = sys::now_ms().max(w.last_timestamp_ms);
        w.last_timestamp_ms = now;
        let active = w.active.as_mut().expect("active segment");
        let first = active.next_seq;
        if matches!(self.config.durability, Durability::Interval(_))
            && self.sync_started_target.load(Ordering::Acquire) >= first
        {
            // Every earlier record is covered by a started sync: this batch starts the interval
            // (one clock read per sync, not per append).
            self.uncovered_since_ns
                .store(self.clock_ns(), Ordering::Release);
        }
        let n = payloads.len();
        if let Err(e) = active.append_batch(payloads, now) {
            // Nothing of the batch is acknowledged, but the page cache may hold part of it:
            // only recovery can say what is on disk.
            let error = Error::io(format!("write to log {:?}", self.name), e);
            drop(w);
            self.fail(error);
            return Err(self.failure_error());
        }
        let next = active.next_seq;
        let in_file = active.in_file_seq();
        let moved_in_file = in_file > self.in_file.load(Ordering::Relaxed);
        // Prepare ahead once the log has written an eighth of its active segment since it
        // opened: a log that holds a few records (or is only read) never holds the Tier 0
        // budget of prepared segments, and a busy one starts preparing after a few MiB.
        let mut prepare_after = active.capacity / limits::PREPARE_AHEAD_AFTER_FILL_DIVISOR;
        if active.unzeroed {
            prepare_after = prepare_after.min(limits::UNZEROED_PREPARE_AFTER_BYTES);
        }
        let prepare_now =
            !self.prepare_started.load(Ordering::Relaxed) && active.offset >= prepare_after;
        w.written_bytes += frame_bytes;
        let dirty = w.written_bytes - self.durable_bytes.load(Ordering::Acquire);
        self.in_file.store(in_file, Ordering::Release);
        self.written.store(next, Ordering::Release);
        drop(w);
        if prepare_now && !self.prepare_started.swap(true, Ordering::Relaxed) {
            self.request_prepare();
        }

        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters
            .records_appended
            .fetch_add(n as u64, Ordering::Relaxed);
        self.counters.bytes_appended.fetch_add(
            frame_bytes - n as u64 * FRAME_HEADER_BYTES,
            Ordering::Relaxed,
        );
        if moved_in_file {
            self.notify_written();
        }
        if matches!(self.config.durability, Durability::Interval(_))
            && dirty >= self.config.flush_watermark_bytes
        {
            self.request_flush();
        }
        Ok(first)
    }

    /// Seal the active segment now (if it holds records), as a full one would be: it is then
    /// compressed, and uploaded when Tier 2 is configured. Appends continue in a new segment.
    /// Waits for Tier 0 room like a rollover. Returns whether a segment was sealed.
    pub(crate) fn seal_active(&self) -> Result<bool> {
        if self.read_only {
            return Err(Error::ReadOnly {
                log: self.name.to_string(),
            });
        }
        self.check_open()?;
        let deadline = Instant::now() + self.tiering.admission_timeout;
        loop {
            let mut w = self.write.lock();
            self.check_open()?;
            let Some(active) = w.active.as_ref() else {
                return Ok(false);
            };
            if active.record_count() == 0 {
                return Ok(false);
            }
            if self.roll(&mut w)? {
                return Ok(true);
            }
            drop(w);
            self.wait_prepared(deadline)?;
        }
    }

    /// Hand the full segments recovery left unsealed to the sealer, oldest first, as if they had
    /// just rolled; until a seal or a group commit syncs them, the durable watermark stays below
    /// them.
    pub(crate) fn resume_seals(&self, unsealed: Vec<RolledSegment>) {
        for rolled in unsealed {
            self.write.lock().unsynced.push(rolled.file.clone());
            *self.pending_seals.lock() += 1;
            self.submit_seal(rolled);
        }
    }

    fn submit_seal(&self, rolled: RolledSegment) {
        if self.config.durability == Durability::None && self.tiering.seals_by_compressing() {
            self.tiering.submit_seal(self.self_arc(), rolled);
        } else {
            self.workers.submit(Job::Seal(self.self_arc(), rolled));
        }
    }

    /// Wait until every rolled segment of this log is sealed.
    pub(crate) fn wait_seals(&self) {
        let mut pending = self.pending_seals.lock();
        while *pending > 0 {
            self.seals_done.wait(&mut pending);
        }
    }

    /// Swap in the prepared segment and hand the full one to the sealer. Called with the write
    /// lock held; no frame of the batch has been written yet. `Ok(false)`: no segment is ready.
    fn roll(&self, w: &mut WriteState) -> Result<bool> {
        // The sealer reads the file: every frame of the full segment must be in it.
        self.write_staged(w)?;
        let Some(prepared) = self.try_take_prepared()? else {
            return Ok(false);
        };
        let old = w.active.take().expect("active segment");
        let base = old.next_seq;
        let new = prepared.activate(
            self.name.clone(),
            self.log_id,
            base,
            sys::now_ms(),
            self.epoch,
        );
        self.segments.write().insert(new.segment.clone());
        let rolled = old.roll();
        w.unsynced.push(rolled.file.clone());
        w.active = Some(new);
        self.counters
            .segments_rolled
            .fetch_add(1, Ordering::Relaxed);
        *self.pending_seals.lock() += 1;
        self.submit_seal(rolled);
        self.prepare_started.store(true, Ordering::Relaxed);
        self.request_prepare();
        Ok(true)
    }

    /// Write the active segment's staged frames into the file (called with the write lock
    /// held). A failure fails the log: the page cache may hold part of them.
    fn write_staged(&self, w: &mut WriteState) -> Result<()> {
        let Some(active) = w.active.as_mut() else {
            return Ok(());
        };
        match active.write_staged() {
            Ok(()) => {
                self.in_file.store(active.in_file_seq(), Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let error = Error::io(format!("write to log {:?}", self.name), e);
                self.fail(error);
                Err(self.failure_error())
            }
        }
    }

    fn self_arc(&self) -> Arc<LogShared> {
        self.me.upgrade().expect("log alive")
    }

    /// This log's `Arc`, unless it is being dropped.
    pub(crate) fn me_arc(&self) -> Option<Arc<LogShared>> {
        self.me.upgrade()
    }

    /// The log's Tier 2 writer claim (writable logs of a manager with Tier 2).
    pub(crate) fn claim(&self) -> Option<&Arc<crate::tier2::LogClaim>> {
        self.claim.get()
    }

    pub(crate) fn set_claim(&self, claim: Arc<crate::tier2::LogClaim>) {
        let _ = self.claim.set(claim);
    }

    /// Whether [`LogShared::try_take_prepared`] would find a segment.
    fn prepared_is_ready(&self) -> bool {
        self.prepare.lock().has_next()
    }

    /// The next prepared segment, in id order (segments must be activated in the order of their
    /// ids, because recovery walks them that way), if one is ready.
    fn try_take_prepared(&self) -> Result<Option<PreparedSegment>> {
        let mut slot = self.prepare.lock();
        if slot.has_next() {
            let (_, prepared) = slot.ready.pop_first().expect("a ready segment");
            drop(slot);
            self.request_prepare();
            return Ok(Some(prepared));
        }
        if let Some(e) = slot.error.take() {
            return Err(e);
        }
        Ok(None)
    }

    /// Wait until a prepared segment can be taken, re-requesting preparation while none is in
    /// progress (a preparer gives up quickly when Tier 0 has no room). Past `deadline` the append
    /// fails with `Backpressure` naming the tier that is full; nothing has been written.
    fn wait_prepared(&self, deadline: Instant) -> Result<()> {
        self.counters.rollover_waits.fetch_add(1, Ordering::Relaxed);
        let mut slot = self.prepare.lock();
        loop {
            if slot.has_next() || slot.error.is_some() {
                return Ok(());
            }
            self.check_open()?;
            if slot.in_progress == 0 {
                slot.in_progress += 1;
                self.workers.submit(Job::Prepare(self.self_arc()));
            }
            let now = Instant::now();
            if now >= deadline {
                // Without the slot: the error looks at every log, this one included.
                drop(slot);
                return Err(self.tiering.admission_error(&self.name));
            }
            self.prepared
                .wait_for(&mut slot, (deadline - now).min(Duration::from_millis(5)));
        }
    }

    /// Keep `PREPARED_SEGMENTS_AHEAD` segments prepared or in preparation, or one when the
    /// Tier 0 budget is tight (prepared segments hold budget that sealed segments waiting for
    /// compression would otherwise use).
    fn request_prepare(&self) {
        let ahead = if self.tiering.budget.max() / self.config.segment_bytes
            >= limits::TIGHT_BUDGET_SEGMENTS
        {
            limits::PREPARED_SEGMENTS_AHEAD
        } else {
            1
        };
        let mut slot = self.prepare.lock();
        while slot.ready.len() + slot.in_progress < ahead {
            slot.in_progress += 1;
            self.workers.submit(Job::Prepare(self.self_arc()));
        }
    }

    /// Background: create the next segment.
    pub(crate) fn prepare_next_segment(&self) {
        let guard = self.enter_background();
        if guard.is_none() || self.failed.load(Ordering::Acquire) {
            self.prepare.lock().in_progress -= 1;
            self.prepared.notify_all();
            return;
        }
        let mode = WriteMode::for_durability(self.config.durability);
        // Logs that sync get segments whose preallocated bytes are already on disk.
        let durable_mode = self.config.durability != Durability::None;
        // Tier 0 room first: the budget counts a segment before its pages exist. Give up quickly
        // (the appender that needs this segment asks again) so a full budget never parks a
        // preparer that other logs need.
        let capacity = self.config.segment_bytes;
        let Some(lease) = self
            .tiering
            .acquire_tier0(self, capacity, limits::PREPARE_BUDGET_WAIT)
        else {
            self.counters.budget_waits.fetch_add(1, Ordering::Relaxed);
            self.prepare.lock().in_progress -= 1;
            self.prepared.notify_all();
            return;
        };
        let reused = {
            let mut slot = self.prepare.lock();
            let next = slot.reuse.pop_front();
            if let Some((id, _)) = next {
                slot.in_progress_ids.insert(id);
            }
            next
        };
        let (id, result) = match reused {
            Some((id, capacity)) => (
                Ok(id),
                PreparedSegment::reopen_blank(&self.segment_dir, id, capacity, mode, durable_mode),
            ),
            None => {
                let id = {
                    let mut m = self.manifest.lock();
                    let id = m.state().next_segment_id;
                    m.append(Edit::SegmentPrepared {
                        segment_id: id,
                        capacity,
                    })
                    .map(|()| {
                        self.prepare.lock().in_progress_ids.insert(id);
                        id
                    })
                };
                let from = {
                    let mut slot = self.prepare.lock();
                    let from = slot.recycled.pop().map(|(path, _)| path);
                    slot.recycling.extend(from.clone());
                    from
                };
                let result = id.clone().and_then(|id| match &from {
                    Some(from) => self.recycle(id, capacity, mode, durable_mode, from),
                    None => {
                        PreparedSegment::create(&self.segment_dir, id, capacity, mode, durable_mode)
                    }
                });
                if let Some(from) = from {
                    self.prepare.lock().recycling.retain(|p| *p != from);
                }
                (id, result)
            }
        };
        let mut slot = self.prepare.lock();
        slot.in_progress -= 1;
        match result {
            Ok(p) => {
                slot.in_progress_ids.remove(&p.id);
                slot.ready.insert(p.id, p.with_lease(lease));
            }
            Err(e) => {
                tracing::warn!(log = %self.name, error = %e, "preparing the next segment failed");
                if let Ok(id) = id {
                    slot.in_progress_ids.remove(&id);
                    // Forget the id: a later segment must not be sealed ahead of an unsealed
                    // one (recovery requires seals in segment order).
                    let path = self.segment_dir.join(crate::segment::segment_file_name(id));
                    let _ = std::fs::remove_file(&path);
                    if let Err(dropped) = self
                        .manifest
                        .lock()
                        .append(Edit::SegmentDropped { segment_id: id })
                    {
                        tracing::error!(log = %self.name, error = %dropped, "recording a failed preparation failed");
                    }
                }
                slot.error = Some(e);
            }
        }
        drop(slot);
        self.prepared.notify_all();
    }

    /// Give back the Tier 0 budget of this log's prepared segments, newest first, until `need`
    /// bytes are released (another log needs room for its next segment, and nothing else can
    /// go). Their files stay on disk as blank prepared segments, prepared (mapped and counted)
    /// again when this log needs them, before any new one. Returns the bytes released.
    pub(crate) fn release_prepared(&self, need: u64) -> u64 {
        let mut slot = self.prepare.lock();
        let mut released = 0;
        while released < need {
            let Some((id, prepared)) = slot.ready.pop_last() else {
                break;
            };
            released += prepared.lease_bytes();
            let at = slot.reuse.partition_point(|(reused, _)| *reused < id);
            slot.reuse.insert(at, (id, prepared.capacity));
            // Unmapped and closed; the lease goes back to the budget.
            drop(prepared);
        }
        released
    }

    /// Prepare segment `id` in the kept file `from`; if that fails, in a new file.
    fn recycle(
        &self,
        id: u64,
        capacity: u64,
        mode: WriteMode,
        zero_fill: bool,
        from: &Path,
    ) -> Result<PreparedSegment> {
        match PreparedSegment::recycle(&self.segment_dir, id, capacity, mode, zero_fill, from) {
            Ok(p) => {
                self.counters
                    .segments_recycled
                    .fetch_add(1, Ordering::Relaxed);
                Ok(p)
            }
            Err(e) => {
                tracing::warn!(log = %self.name, file = %from.display(), error = %e, "reusing an evicted segment file failed; creating a new one");
                let _ = std::fs::remove_file(from);
                PreparedSegment::create(&self.segment_dir, id, capacity, mode, zero_fill)
            }
        }
    }

    /// Tier 0 eviction hands over the file of an evicted segment of this log (its manifest edit
    /// already recorded): keep it, under a name of its own, to prepare a later segment in.
    /// Returns false (the caller deletes the file) when enough are kept or the log is closing.
    /// Only files of this log are kept: their left-over frames carry sequence numbers below any
    /// later segment's, which is what makes them harmless (`docs/format.md`).
    pub(crate) fn keep_for_reuse(&self, path: &Path) -> bool {
        if self.read_only
            || self.closed.load(Ordering::Acquire)
            || self.failed.load(Ordering::Acquire)
        {
            return false;
        }
        let mut slot = self.prepare.lock();
        let Some(to) = (0..limits::RECYCLED_SEGMENTS_KEPT)
            .map(|k| self.segment_dir.join(recycled_file_name(k)))
            .find(|p| !slot.recycled.iter().any(|(k, _)| k == p) && !slot.recycling.contains(p))
        else {
            return false;
        };
        // A file some mapping still shows (a `Record` of an earlier handle of this log, a deep
        // verify) must not be rewritten: it is unlinked instead, which leaves mappings intact.
        match crate::segment::mmap::rename_if_unmapped(path, &to) {
            Ok(true) => {
                slot.recycled.push((to, Instant::now()));
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(log = %self.name, file = %path.display(), error = %e, "keeping an evicted segment file for reuse failed");
                false
            }
        }
    }

    /// Delete the kept files that waited `older_than` or longer (all of them when the log
    /// closes): a log that stopped rolling segments does not need them.
    fn drop_recycled(&self, older_than: Duration) {
        // Deleted under the lock: once a name leaves the list, eviction may reuse it.
        self.prepare.lock().recycled.retain(|(path, at)| {
            let keep = at.elapsed() < older_than;
            if !keep {
                let _ = std::fs::remove_file(path);
            }
            keep
        });
    }

    /// Background: seal a rolled segment and record it in the manifest. With `compressor` (a
    /// `None` log with Tier 1, run by the TieredCoordinator) the segment is not synced: its
    /// Tier 1 copy, written and synced by this job, is what makes it durable, so the uncompressed
    /// bytes never have to reach the disk. If that fails, the segment is synced as usual.
    pub(crate) fn seal_segment(
        &self,
        rolled: RolledSegment,
        compressor: Option<&mut zstd::bulk::Compressor<'static>>,
    ) {
        let file = rolled.file.clone();
        if self.failed.load(Ordering::Acquire) {
            // A failed log seals nothing more: recovery seals what is on disk, in order.
            drop((rolled, file));
            let mut pending = self.pending_seals.lock();
            *pending -= 1;
            self.seals_done.notify_all();
            return;
        }
        let result = (|| {
            let file = rolled.open_for_seal()?;
            let (segment, meta) = rolled.seal(&file, sys::now_ms(), compressor.is_none())?;
            let seal_edit = Edit::SegmentSealed(SealedInfo {
                segment_id: segment.id,
                base_seq: segment.base_seq,
                record_count: meta.footer.record_count,
                file_len: meta.file_len,
                first_timestamp_ms: meta.footer.first_timestamp_ms,
                last_timestamp_ms: meta.footer.last_timestamp_ms,
                footer_crc: meta.footer_crc,
            });
            let Some(compressor) = compressor else {
                self.manifest.lock().append(seal_edit)?;
                return Ok((segment, true));
            };
            let outcome = self
                .tiering
                .compress_while_sealing(self, &segment, &meta, compressor, &seal_edit);
            if outcome != SealOutcome::Compressed {
                let path = segment.path.display().to_string();
                sys::retry_transient(|| file.sync_data())
                    .map_err(|e| Error::io(format!("fdatasync {path}"), e))?;
                sys::retry_transient(|| file.sync_all())
                    .map_err(|e| Error::io(format!("fsync {path}"), e))?;
            }
            if outcome == SealOutcome::NotCompressed {
                self.manifest.lock().append(seal_edit)?;
            }
            Ok((segment, outcome != SealOutcome::Compressed))
        })();
        match result {
            Ok((segment, needs_tier1)) => {
                // Sealing synced the file (or its Tier 1 copy): group commits need not sync it
                // again (and the list must not keep the file open for logs that never sync).
                self.write
                    .lock()
                    .unsynced
                    .retain(|f| !Arc::ptr_eq(f, &file));
                self.counters
                    .segments_sealed
                    .fetch_add(1, Ordering::Relaxed);
                if needs_tier1 {
                    self.tiering.submit_compress(&self.self_arc(), segment);
                }
            }
            Err(e) => self.fail(e),
        }
        drop(file);
        let mut pending = self.pending_seals.lock();
        *pending -= 1;
        self.seals_done.notify_all();
    }

    // ---------------------------------------------------------------- durability

    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records a reader may see under `visibility`.
    pub(crate) fn visible(&self, visibility: ReadVisibility) -> u64 {
        if self.follows_file(visibility) {
            self.in_file.load(Ordering::Acquire)
        } else {
            self.durable()
        }
    }

    /// Block until every record below `target` is durable, starting a group commit if no sync
    /// in flight will cover it.
    ///
    /// Up to `MAX_SYNCS_IN_FLIGHT` group commits may overlap: the device serves concurrent
    /// flushes in parallel, and a completed `fdatasync` makes durable everything written before it
    /// was called, so the durable watermark is the maximum target of the completed syncs.
    ///
    /// A group starts once it has re-formed ([`LogShared::group_ready`]): the appender whose
    /// record completes it starts the sync itself, with no hand-off to a waiting leader.
    ///
    /// Waiters sleep on a futex over `sync_epoch`, which every finishing syncer bumps, so all of
    /// them wake at once (no lock hand-off chain), and a wake-up is never lost: the epoch is read
    /// before the state it guards. A waiter that no started sync covers never sleeps: it starts
    /// the next group itself when the gather window has passed.
    pub(crate) fn sync_to(&self, target: u64) -> Result<()> {
        let mut uncovered_since = None;
        loop {
            let epoch = self.sync_epoch.load(Ordering::Acquire);
            if self.durable.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(self.failure_error());
            }
            let started = self.sync_started_target.load(Ordering::Acquire);
            let in_flight = self.syncs_in_flight.load(Ordering::Acquire);
            if started >= target || in_flight >= limits::MAX_SYNCS_IN_FLIGHT {
                // A running sync covers us, or must end before ours may start.
                uncovered_since = None;
                self.wait_for_sync(epoch);
                continue;
            }
            let since = *uncovered_since.get_or_insert_with(Instant::now);
            if !self.group_ready(started, since) {
                std::thread::yield_now();
                continue;
            }
            if self
                .syncs_in_flight
                .compare_exchange(
                    in_flight,
                    in_flight + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                continue;
            }
            match self.sync_round() {
                Ok(covered) => {
                    // Every record outstanding now, read before the watermark moves: the writers
                    // this sync releases come back, and those that appended while it ran wait.
                    let next = self.written().saturating_sub(self.durable());
                    self.next_group.store(next.max(1), Ordering::Relaxed);
                    if !self.failed.load(Ordering::Acquire) {
                        self.durable.fetch_max(covered, Ordering::AcqRel);
                    }
                }
                Err(e) => self.fail(e),
            }
            self.syncs_in_flight.fetch_sub(1, Ordering::AcqRel);
            self.sync_epoch.fetch_add(1, Ordering::AcqRel);
            atomic_wait::wake_all(&self.sync_epoch);
            self.durable_watch
                .send_modify(|v| v.0 = self.durable.load(Ordering::Acquire));
            // Durable followers, and written ones of an `Always` log (its staged frames went
            // into the file).
            self.notify_visible();
        }
    }

    /// Whether a group commit should start now. Closed-loop writers released by the previous
    /// sync come back within microseconds: give them a brief chance to join this group instead of
    /// paying a whole extra sync each. The group is ready when as many records wait as were
    /// outstanding when the previous sync ended (the records it covered plus those appended while
    /// it ran), or when a waiter has waited one average sync (at most `MAX_GATHER_WINDOW_NS`),
    /// which bounds what a lone writer pays when the group shrinks.
    ///
    /// Expecting only the records the previous sync covered let the group shrink for good: a
    /// writer late for one group waits during the next sync, so that group is one short, the
    /// next starts one short again and leaves the last writer behind, and so on. 16 writers, ten
    /// alternating runs each: 13–14 records per sync became 14–15, 89.4k/s became 92.5k/s on
    /// average, and the median p99 fell from ~450 to ~380 µs.
    fn group_ready(&self, started: u64, waiting_since: Instant) -> bool {
        let expected_group = self.next_group.load(Ordering::Relaxed);
        if expected_group <= 1 || self.config.durability != Durability::Always {
            return true;
        }
        let pending = self.written().saturating_sub(started.max(self.durable()));
        if pending >= expected_group {
            return true;
        }
        // Waiting up to one average sync for the group to re-form measured best (16 writers:
        // 64k/s vs 57k/s with a third of a sync, 55k/s with a sixth).
        let window = self
            .avg_sync_ns
            .load(Ordering::Relaxed)
            .min(limits::MAX_GATHER_WINDOW_NS);
        waiting_since.elapsed().as_nanos() as u64 >= window
    }

    /// Wait until the sync epoch moves past `epoch`: first by yielding the CPU in a loop for up
    /// to `SYNC_WAIT_SPIN_NS`, then asleep on the futex. On the 2-vCPU VMs this was measured
    /// on, waking a thread whose vCPU has gone idle costs ~22 us (futex ping-pong across vCPUs:
    /// 44 us round trip, 6 us on one), and a group commit pays that for every writer it
    /// releases; a writer that is still yielding sees the new epoch at once and keeps its vCPU
    /// awake. `Always`, 1 KiB, side by side: 16 writers 71-83k/s (p99 ~400 us) against
    /// 59-64k/s (p99 ~650 us) sleeping at once; 64 writers 144-160k/s against 100-119k/s. The
    /// loop only runs when nothing else is runnable, so it costs idle time, not throughput.
    fn wait_for_sync(&self, epoch: u32) {
        let start = Instant::now();
        while self.sync_epoch.load(Ordering::Acquire) == epoch {
            if start.elapsed() >= Duration::from_nanos(limits::SYNC_WAIT_SPIN_NS) {
                atomic_wait::wait(&self.sync_epoch, epoch);
                return;
            }
            std::thread::yield_now();
        }
    }

    /// One group commit: sync every file holding unsynced frames. Returns the new durable
    /// watermark.
    fn sync_round(&self) -> Result<u64> {
        let (target, target_bytes, files) = {
            let mut w = self.write.lock();
            self.write_staged(&mut w)?;
            // Rolled files stay listed until a sync of them succeeds, so an overlapping syncer
            // that publishes a later target has synced them too.
            let mut files: Vec<Arc<std::fs::File>> = w.unsynced.clone();
            if let Some(a) = &w.active {
                files.push(a.file.clone());
            }
            let target = self.written();
            self.sync_started_target.fetch_max(target, Ordering::AcqRel);
            self.uncovered_since_ns.store(u64::MAX, Ordering::Release);
            (target, w.written_bytes, files)
        };
        let start = Instant::now();
        for file in &files {
            // The fault seam stands in for the call itself, so an injected EINTR is retried
            // like a real one.
            sys::retry_transient(|| match &self.sync_fault {
                Some(fault) => fault().and_then(|()| file.sync_data()),
                None => file.sync_data(),
            })
            .map_err(|e| Error::io(format!("fdatasync segment of log {:?}", self.name), e))?;
        }
        let ns = start.elapsed().as_nanos() as u64;
        self.counters.record_fsync(ns);
        let avg = self.avg_sync_ns.load(Ordering::Relaxed);
        self.avg_sync_ns
            .store((avg * 7 + ns) / 8, Ordering::Relaxed);
        let rolled = files.len() - 1;
        if rolled > 0 {
            let mut w = self.write.lock();
            w.unsynced
                .retain(|f| !files[..rolled].iter().any(|s| Arc::ptr_eq(f, s)));
        }
        self.durable_bytes.fetch_max(target_bytes, Ordering::AcqRel);
        Ok(target)
    }

    /// Ask the flush pool for a sync of this log. At most one job per log is queued or running
    /// at a time, so a log whose syncs are slow occupies one worker, never all of them; a
    /// request made meanwhile is remembered and queued again when that job ends.
    pub(crate) fn request_flush(&self) {
        if self.flush_scheduled.swap(true, Ordering::AcqRel) {
            self.flush_again.store(true, Ordering::Release);
        } else {
            self.workers.submit(Job::Flush(self.self_arc()));
        }
    }

    /// Background flush job.
    pub(crate) fn background_flush(&self) {
        // Requests made until now are covered by this sync (it reads the written watermark).
        self.flush_again.store(false, Ordering::Release);
        if !self.failed.load(Ordering::Acquire) {
            let _ = self.sync_to(self.written());
        }
        self.flush_scheduled.store(false, Ordering::Release);
        // Requests made while the sync ran go to the back of the queue, behind other logs.
        if self.flush_again.swap(false, Ordering::AcqRel)
            && !self.failed.load(Ordering::Acquire)
            && !self.closed.load(Ordering::Acquire)
        {
            self.request_flush();
        }
    }

    /// Timer tick: interval flushes and age-based rollover.
    pub(crate) fn on_tick(&self) {
        if self.read_only
            || self.closed.load(Ordering::Acquire)
            || self.failed.load(Ordering::Acquire)
        {
            return;
        }
        self.drop_recycled(limits::RECYCLED_SEGMENT_KEEP);
        if let Durability::Interval(every) = self.config.durability
            && self.interval_sync_due(every)
        {
            self.request_flush();
        }
        if let Some(age) = self.config.segment_max_age {
            let now_ms = sys::now_ms();
            if now_ms < self.age_check_after_ms.load(Ordering::Relaxed) {
                return;
            }
            let age_ms = age.as_millis() as u64;
            let ready = !self.prepare.lock().ready.is_empty();
            let mut w = self.write.lock();
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let Some(active) = w.active.as_ref() else {
                return;
            };
            let old = now_ms.saturating_sub(active.created_ms) >= age_ms;
            if !old {
                // Not before then (a segment activated later is younger still).
                self.age_check_after_ms
                    .store(active.created_ms.saturating_add(age_ms), Ordering::Relaxed);
            }
            if old && active.record_count() > 0 {
                if !ready {
                    // A log that never filled an eighth of its segment prepares nothing ahead
                    // (`PREPARE_AHEAD_AFTER_FILL_DIVISOR`): prepare the next one now.
                    drop(w);
                    self.prepare_started.store(true, Ordering::Relaxed);
                    self.request_prepare();
                } else if let Err(e) = self.roll(&mut w) {
                    tracing::warn!(log = %self.name, error = %e, "age rollover failed");
                }
            }
        }
    }

    /// Nanoseconds since the log was opened, on its clock.
    fn clock_ns(&self) -> u64 {
        let now = self.clock.as_ref().map_or_else(Instant::now, |c| c());
        now.saturating_duration_since(self.opened_at).as_nanos() as u64
    }

    /// `Interval(every)`: whether the sync covering the oldest uncovered record must start now,
    /// so that it ends about `every` after that record was appended. The interval runs from the
    /// record's append, not from the previous sync: measured from the end of the previous sync,
    /// a record appended while a sync ran waited for that sync, then `every`, then its own sync.
    fn interval_sync_due(&self, every: Duration) -> bool {
        let since = self.uncovered_since_ns.load(Ordering::Acquire);
        if since == u64::MAX {
            return false;
        }
        let every_ns = every.as_nanos().min(u64::MAX as u128) as u64;
        let lead = self.avg_sync_ns.load(Ordering::Relaxed).min(every_ns);
        self.clock_ns() >= since.saturating_add(every_ns - lead)
    }

    // ---------------------------------------------------------------- visibility for followers

    /// Wake every follower after a sync, a failure or a close (their `in_file`, `durable`,
    /// `failed` and `closed` stores come first).
    pub(crate) fn notify_visible(&self) {
        // Pairs with the fence in `wait_visible`: either the follower's look sees what was
        // stored before this fence, or this sees the follower counted (no wake-up is lost).
        fence(Ordering::SeqCst);
        let file = self.file_followers.load(Ordering::Relaxed) > 0;
        let durable = self.durable_followers.load(Ordering::Relaxed) > 0;
        if file || durable {
            let _g = self.visible.lock();
            if file {
                self.file_changed.notify_all();
            }
            if durable {
                self.durable_changed.notify_all();
            }
        }
    }

    /// Wake followers of the file after an append moved `in_file`; called once the append
    /// released the write lock. No fence on the append path: a follower counts itself, then
    /// takes and releases the write lock before it looks (`wait_visible`), so either its look
    /// sees this append's records or this load sees it counted. Costs one load when nobody
    /// follows.
    fn notify_written(&self) {
        if self.file_followers.load(Ordering::Acquire) > 0 {
            let _g = self.visible.lock();
            self.file_changed.notify_all();
        }
    }

    /// Whether followers under `visibility` wait for `in_file` (else for `durable`).
    fn follows_file(&self, visibility: ReadVisibility) -> bool {
        matches!(
            (visibility, self.config.durability),
            (ReadVisibility::Written, _) | (ReadVisibility::Durable, Durability::None)
        )
    }

    /// Wait until more than `seq` records are visible, the log fails/closes, or `deadline`
    /// (`None`: no deadline). Woken by what it waits for (an append, a sync, a failure, a
    /// close), never by polling.
    pub(crate) fn wait_visible(
        &self,
        seq: u64,
        visibility: ReadVisibility,
        deadline: Option<Instant>,
    ) -> bool {
        let of_file = self.follows_file(visibility);
        let (followers, changed) = if of_file {
            (&self.file_followers, &self.file_changed)
        } else {
            (&self.durable_followers, &self.durable_changed)
        };
        // Count this follower before looking, so that whatever moves after the look wakes it:
        // see `notify_visible` (fence) and `notify_written` (write lock).
        followers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if of_file {
            drop(self.write.lock());
        }
        let mut g = self.visible.lock();
        let ok = loop {
            if self.visible(visibility) > seq {
                break true;
            }
            if self.failed.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
                break false;
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => break false,
                Some(deadline) => {
                    changed.wait_until(&mut g, deadline);
                }
                None => changed.wait(&mut g),
            }
            self.counters.follow_wakeups.fetch_add(1, Ordering::Relaxed);
        };
        drop(g);
        followers.fetch_sub(1, Ordering::AcqRel);
        ok
    }

    // ---------------------------------------------------------------- lifecycle

    pub(crate) fn close(&self) -> Result<()> {
        // Every caller waits for the first one to finish: a reopen closes the old instance
        // first and must never run beside its background work (they share the manifest).
        let mut closing = self.closing.lock();
        if let Some(outcome) = closing.as_ref() {
            return outcome.clone().map_or(Ok(()), Err);
        }
        self.closed.store(true, Ordering::Release);
        // Appends and age rollovers check `closed` under the write lock: once this lock was
        // taken, none of them can roll a segment (and queue a seal this close would not wait
        // for) any more.
        drop(self.write.lock());
        let result = if self.read_only {
            Ok(())
        } else if self.failed.load(Ordering::Acquire) {
            // A failed sync may have dropped acknowledged `Interval`/`None` records: the close
            // must not report that everything is durable.
            Err(self.failure_error())
        } else {
            self.sync_to(self.written())
        };
        let mut pending = self.pending_seals.lock();
        while *pending > 0 {
            self.seals_done.wait(&mut pending);
        }
        drop(pending);
        let mut background = self.background.lock();
        while *background > 0 {
            self.background_done.wait(&mut background);
        }
        drop(background);
        self.drop_recycled(Duration::ZERO);
        // Give the budget back: a closed log keeps no segment in memory for anyone (a reopen
        // counts its files again).
        self.prepare.lock().ready.clear();
        let mut tier1_bytes = 0;
        for segment in self.segments.read().iter() {
            segment.release_lease();
            if let Some(t1) = segment.tier1() {
                tier1_bytes += t1.info().file_len;
            }
        }
        if let Some(active) = self.write.lock().active.as_ref() {
            active.segment.release_lease();
        }
        if self.tier1_counted.load(Ordering::Acquire) {
            self.tiering.forget_tier1(tier1_bytes);
        }
        // Every task of this instance has finished; a reopen may own these files next.
        self.manifest.lock().close();
        self.notify_visible();
        *closing = Some(result.clone().err());
        result
    }

    /// Leave the manager's open logs (after a clean [`LogShared::close`]), unless a reopen
    /// already put a new instance or its reservation there: the manager no longer keeps this
    /// instance, its segment files and mappings alive. The map's lock is never held while a log
    /// is opened or closed, so taking it here waits for no log.
    fn forget(&self) {
        if let Some(open_logs) = self.open_logs.upgrade() {
            open_logs.remove_instance(self);
        }
    }

    /// Whether a close has finished, without an error (a close still running holds `closing`).
    pub(crate) fn closed_cleanly(&self) -> bool {
        matches!(self.closing.try_lock().as_deref(), Some(Some(None)))
    }

    /// Register a background task on this log; `None` once the log is closing.
    pub(crate) fn enter_background(&self) -> Option<BackgroundGuard<'_>> {
        let mut n = self.background.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        *n += 1;
        Some(BackgroundGuard { log: self })
    }

    /// Retention: remove every sealed segment whose records all lie below `seq`, from every
    /// tier. Whole segments only, oldest first; a segment still being sealed or compressed is
    /// kept (and so is everything after it). Returns the log's first remaining sequence.
    pub(crate) fn truncate_before(&self, seq: u64) -> Result<u64> {
        if self.read_only {
            return Err(Error::ReadOnly {
                log: self.name.to_string(),
            });
        }
        self.check_open()?;
        // Registered like a background task: a close waits for it, and it never runs on once a
        // reopen may own the files it would delete.
        let Some(_running) = self.enter_background() else {
            return Err(Error::Closed(format!("log {:?}", self.name)));
        };
        let mut retired_objects = Vec::new();
        loop {
            let Some(segment) = self.segments.read().first().cloned() else {
                break;
            };
            let Some(end) = segment.end_seq().filter(|&end| end <= seq) else {
                break;
            };
            // The newest sealed segment is what tells a reopen where the log ends while the
            // active segment holds nothing recovery can read back (an `Always` segment's header
            // is written with its first frames): keep it until a later record is on disk.
            let newest_sealed = self
                .segments
                .read()
                .iter()
                .nth(1)
                .is_none_or(|next| next.end_seq().is_none());
            let later_on_disk = match self.config.durability {
                Durability::None => self.in_file.load(Ordering::Acquire) > end,
                _ => self.durable() > end,
            };
            if newest_sealed && !later_on_disk {
                break;
            }
            let tier1_bytes = {
                let mut manifest = self.manifest.lock();
                let entry = manifest.state().segments.get(&segment.id);
                let done = entry.is_some_and(|e| e.sealed.is_some() && !e.compressing);
                if !done {
                    break;
                }
                let tier1_bytes = entry.and_then(|e| e.tier1).map_or(0, |t| t.file_len);
                manifest.append(Edit::SegmentRetired {
                    segment_id: segment.id,
                })?;
                tier1_bytes
            };
            self.segments.write().pop_first();
            if let Some(copy) = segment.tier2() {
                retired_objects.push(copy.key.clone());
            }
            segment.retire();
            // The manifest no longer knows these files; a crash before the unlinks leaves them
            // behind, never read, until the next open's `sweep_retired_files`.
            for path in [
                segment.path.clone(),
                self.tier1_dir()
                    .join(crate::tier1::tier1_file_name(segment.id)),
            ] {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "removing a retired segment file failed")
                    }
                }
            }
            self.tiering.forget_tier1(tier1_bytes);
            self.counters
                .segments_retired
                .fetch_add(1, Ordering::Relaxed);
        }
        // Tier 2 objects go after the catalog stops listing them (on the upload workers).
        self.tiering
            .submit_retired(&self.self_arc(), retired_objects);
        Ok(self.first_seq())
    }

    /// Append `edit` about segment `id` unless retention removed the segment from the manifest
    /// (it retires the `Segment` after its edit, so tiering can still meet it in between).
    /// Returns whether the edit was recorded.
    pub(crate) fn record_if_live(&self, id: u64, edit: Edit) -> Result<bool> {
        let mut manifest = self.manifest.lock();
        if !manifest.state().segments.contains_key(&id) {
            return Ok(false);
        }
        manifest.append(edit)?;
        Ok(true)
    }

    /// Id of the oldest segment the manifest holds (the next id if none): every segment below it
    /// was retired.
    pub(crate) fn oldest_live_segment_id(&self) -> u64 {
        let manifest = self.manifest.lock();
        let state = manifest.state();
        state
            .segments
            .keys()
            .next()
            .copied()
            .unwrap_or(state.next_segment_id)
    }

    /// Delete the local files of segments retention retired in an earlier run that stopped
    /// between the manifest edit and the unlinks (`truncate_before`): segment and Tier 1 files
    /// of ids below the oldest segment the manifest holds, and the temporary files of a
    /// compression, fetch or hydration of such a segment that a crash cut off (recovery undoes
    /// those only for segments the manifest still lists). Retention removes only a prefix and
    /// ids only grow, so nothing below that id is live. Runs in the background after a writable
    /// open (listing the Tier 1 directory grows with history; the open must not).
    pub(crate) fn sweep_retired_files(&self) {
        let Some(_running) = self.enter_background() else {
            return;
        };
        let first_live = self.oldest_live_segment_id();
        let mut removed = 0u64;
        for dir in [self.segment_dir.clone(), self.tier1_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                // `<id:016x>.seg`, `.t1` and their `.tmp` files (not `recycled-<k>`).
                let id = name
                    .to_str()
                    .and_then(|n| n.split_once('.'))
                    .filter(|(hex, ext)| {
                        hex.len() == 16 && matches!(ext.split('.').next(), Some("seg" | "t1"))
                    })
                    .and_then(|(hex, _)| u64::from_str_radix(hex, 16).ok());
                if id.is_some_and(|id| id < first_live) {
                    match std::fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => tracing::warn!(path = %entry.path().display(), error = %e,
                            "removing a retired segment file failed"),
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(log = %self.name, removed, "deleted files of segments retired before a restart");
        }
    }

    /// The first sequence still in the log (retention removes whole segments from the front).
    pub(crate) fn first_seq(&self) -> u64 {
        self.segments
            .read()
            .first()
            .map_or(self.written(), |s| s.base_seq)
    }

    /// Rolled segments whose seal has not finished.
    pub(crate) fn pending_seals(&self) -> usize {
        *self.pending_seals.lock()
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn active_records_end(&self) -> u64 {
        self.write.lock().active.as_ref().map_or(0, |a| a.offset)
    }

    pub(crate) fn stats(&self) -> LogStats {
        let mut s = self.counters.snapshot();
        s.next_seq = self.written();
        s.durable_seq = self.durable();
        s.segments = self.segments.read().len() as u64;
        s.prepared_ready = self.prepare.lock().ready.len() as u64;
        s
    }

    pub(crate) fn read(&self, seq: u64, visibility: ReadVisibility) -> Result<Record> {
        if seq >= self.visible(visibility) {
            return Err(Error::NotFound(format!(
                "log {:?} has no visible record {seq}",
                self.name
            )));
        }
        // The index is released before the error asks for the first sequence: taking its read
        // lock twice deadlocks with a roll waiting for the write lock in between.
        let found = self.segments.read().find(seq).cloned();
        let segment = found.ok_or_else(|| {
            Error::NotFound(format!(
                "log {:?} has no record {seq}: retention removed records below {}",
                self.name,
                self.first_seq()
            ))
        })?;
        let tier0 = segment
            .locate(seq)
            .and_then(|p| Ok((segment.read_at(&p.backing, p.offset, seq)?.0, p.limit)));
        match tier0 {
            Ok((record, limit)) => {
                if limit != u64::MAX {
                    self.tiering.note_tier1_read(&self.self_arc(), &segment);
                }
                Ok(record)
            }
            Err(e) if e.kind() == crate::ErrorKind::Corruption && segment.has_cold_copy() => {
                // The Tier 0 copy is damaged but Tier 1 holds a verified one.
                tracing::error!(log = %self.name, segment = segment.id, seq, error = %e, "Tier 0 copy is damaged; reading from Tier 1 or Tier 2");
                let p = segment.locate_tier1(seq)?;
                Ok(segment.read_at(&p.backing, p.offset, seq)?.0)
            }
            Err(e) => Err(e),
        }
    }

    /// Directory of this log's Tier 1 files.
    pub(crate) fn tier1_dir(&self) -> PathBuf {
        self.segment_dir.with_file_name("tier1")
    }
}

/// A background task in progress on a log (see [`LogShared::enter_background`]).
pub(crate) struct BackgroundGuard<'a> {
    log: &'a LogShared,
}

impl Drop for BackgroundGuard<'_> {
    fn drop(&mut self) {
        *self.log.background.lock() -= 1;
        self.log.background_done.notify_all();
    }
}

/// A handle to one log. Cheap to clone; every clone shares the same log and may be used from
/// many threads at once.
#[derive(Clone, Debug)]
pub struct Aof {
    pub(crate) shared: Arc<LogShared>,
}

impl Aof {
    /// The log's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The log's persistent 128-bit identity.
    pub fn log_id(&self) -> u128 {
        self.shared.log_id
    }

    /// The durability mode this log was opened with.
    pub fn durability(&self) -> Durability {
        self.shared.config.durability
    }

    /// Append one record and return its sequence number once it is acknowledged under the log's
    /// durability mode (for `Always`: after its bytes are fdatasync'ed).
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        let seq = self.shared.write_batch(&[payload])?;
        if self.shared.config.durability == Durability::Always {
            self.shared.sync_to(seq + 1)?;
        }
        Ok(seq)
    }

    /// Append a batch atomically (after a crash, all or none of it is present). Returns the first
    /// sequence; the batch occupies `first .. first + len`.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<u64> {
        let first = self.shared.write_batch(payloads)?;
        if self.shared.config.durability == Durability::Always {
            self.shared.sync_to(first + payloads.len() as u64)?;
        }
        Ok(first)
    }

    /// Append without waiting for durability, whatever the mode; pair with [`Aof::wait_durable`]
    /// to pipeline many durable appends from one thread. In `Always` mode a background group
    /// commit is started.
    pub fn append_nowait(&self, payload: &[u8]) -> Result<u64> {
        let seq = self.shared.write_batch(&[payload])?;
        if self.shared.config.durability == Durability::Always {
            self.shared.request_flush();
        }
        Ok(seq)
    }

    /// Block until record `seq` (and every record before it) is durable.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        self.check_seq(seq)?;
        self.shared.sync_to(seq + 1)
    }

    /// Async form of [`Aof::wait_durable`]; works on any executor.
    pub async fn wait_durable_async(&self, seq: u64) -> Result<()> {
        self.check_seq(seq)?;
        if self.shared.durable() > seq {
            return Ok(());
        }
        self.shared.request_flush();
        let mut rx = self.shared.durable_watch.subscribe();
        let result = rx
            .wait_for(|&(durable, failed)| durable > seq || failed)
            .await
            .map(|v| *v);
        match result {
            Ok((durable, _)) if durable > seq => Ok(()),
            _ => Err(self.shared.failure_error()),
        }
    }

    fn check_seq(&self, seq: u64) -> Result<()> {
        if seq >= self.shared.written() {
            return Err(Error::NotFound(format!(
                "log {:?} has not written seq {seq}",
                self.shared.name
            )));
        }
        Ok(())
    }

    /// Seal the active segment now, if it holds any record, instead of waiting for it to fill
    /// (or for `segment_max_age`); appends continue in a new segment. Returns once the seal is
    /// recorded, with whether there was anything to seal. The sealed segment then moves through
    /// the tiers like any other (with Tier 2: uploaded and listed in the catalog, so a restore or
    /// a `RemoteReader` sees every record appended before this call).
    pub fn seal(&self) -> Result<bool> {
        let sealed = self.shared.seal_active()?;
        self.shared.wait_seals();
        Ok(sealed)
    }

    /// Sync everything written so far (any durability mode).
    pub fn flush(&self) -> Result<()> {
        self.shared.check_open()?;
        self.shared.sync_to(self.shared.written())
    }

    /// Retention: delete every sealed segment whose records all lie below `seq`, from every tier
    /// (whole segments, oldest first; a segment still being sealed or compressed stays, and so
    /// does everything after it; the newest sealed segment stays until a record after it is
    /// durable, since it is what tells a reopen where the log ends). Returns the first sequence
    /// the log still holds. Reads below it return `NotFound`. This is how Tier 1 space is
    /// reclaimed when there is no Tier 2.
    pub fn truncate_before(&self, seq: u64) -> Result<u64> {
        self.shared.truncate_before(seq)
    }

    /// The first sequence the log still holds (0 until retention removes segments).
    pub fn first_seq(&self) -> u64 {
        self.shared.first_seq()
    }

    /// Sequence the next append will get (= records written).
    pub fn next_seq(&self) -> u64 {
        self.shared.written()
    }

    /// Durable watermark: every record with a sequence below it is durable.
    pub fn durable_watermark(&self) -> u64 {
        self.shared.durable()
    }

    /// Read one record by sequence, under the log's configured visibility.
    pub fn read(&self, seq: u64) -> Result<Record> {
        self.shared.read(seq, self.shared.config.read_visibility)
    }

    /// An iterator over records from `seq`, under the log's configured visibility.
    pub fn reader(&self, seq: u64) -> Reader {
        Reader::new(self.shared.clone(), seq, self.shared.config.read_visibility)
    }

    /// An iterator with an explicit visibility rule.
    pub fn reader_with(&self, seq: u64, visibility: ReadVisibility) -> Reader {
        Reader::new(self.shared.clone(), seq, visibility)
    }

    /// Statistics.
    pub fn stats(&self) -> LogStats {
        self.shared.stats()
    }

    /// Sync, wait for background sealing, and refuse further appends on every handle. Returns
    /// an error if the final sync fails or the log had failed (a background sync of an
    /// `Interval` or `None` log may have failed after acknowledging records). A call while
    /// another thread is closing the log waits for it and returns its outcome.
    pub fn close(&self) -> Result<()> {
        let result = self.shared.close();
        if result.is_ok() {
            // A log closed with an error stays known, so that the manager's close reports it too.
            self.shared.forget();
        }
        result
    }
}
