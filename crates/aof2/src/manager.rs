//! AofManager: owns a data root (exclusively, through a directory lock), the background threads
//! (FlushManager: flush pool, segment preparer, sealer, timer) and every open log.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::aof::{Aof, Clock, LogShared, SyncFault};
use crate::config::{LogConfig, ManagerConfig, validate_log_name};
use crate::error::{Error, IoContext, Result};
use crate::flush::FlushManager;
use crate::format::FormatError;
use crate::format::root::{ROOT_FILE_BYTES, RootFile};
use crate::recovery::verify::{VerifyOptions, VerifyReport};
use crate::recovery::{RecoveryReport, recover_log};
use crate::sys;
use crate::tiering::{TierStats, Tiering};

/// The file that makes a directory an aof2 root (`docs/format.md`).
pub const ROOT_FILE: &str = "aof2.root";
const LOCK_FILE: &str = "LOCK";

/// State of one segment, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Receiving appends.
    Active,
    /// Full, footer being written.
    Sealing,
    /// Footer written and recorded; immutable.
    Sealed,
    /// Failed verification at open; reads of its range return `Corruption`.
    Quarantined,
}

/// Where a segment's bytes live, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierLocation {
    /// Only the segment file (Tier 0).
    Tier0,
    /// The segment file and its compressed copy.
    Tier0And1,
    /// Only the compressed copy (Tier 1).
    Tier1,
    /// Neither (a quarantined segment).
    None,
}

impl TierLocation {
    /// Short name: `0`, `0+1`, `1`, `-`.
    pub fn name(&self) -> &'static str {
        match self {
            TierLocation::Tier0 => "0",
            TierLocation::Tier0And1 => "0+1",
            TierLocation::Tier1 => "1",
            TierLocation::None => "-",
        }
    }
}

impl SegmentState {
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            SegmentState::Active => "active",
            SegmentState::Sealing => "sealing",
            SegmentState::Sealed => "sealed",
            SegmentState::Quarantined => "quarantined",
        }
    }
}

/// One segment, for `inspect`.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Segment id.
    pub id: u64,
    /// State.
    pub state: SegmentState,
    /// First sequence.
    pub base_seq: u64,
    /// One past the last sequence (for the active segment: the log's written watermark).
    pub end_seq: u64,
    /// Size of the file on disk, bytes.
    pub file_bytes: u64,
    /// Bytes of frames in it.
    pub record_bytes: u64,
    /// File path.
    pub path: PathBuf,
    /// Which tiers hold it.
    pub tier: TierLocation,
    /// Size of the Tier 1 file, bytes (0 without one).
    pub tier1_bytes: u64,
    /// zstd level of the Tier 1 file.
    pub tier1_level: Option<i32>,
    /// Whether Tier 2 holds the segment (its upload was acknowledged).
    pub in_tier2: bool,
}

impl SegmentInfo {
    /// Every tier holding the segment: `0`, `0+1`, `1+2`, `2`, ... or `-` (quarantined).
    pub fn tiers(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if matches!(self.tier, TierLocation::Tier0 | TierLocation::Tier0And1) {
            parts.push("0");
        }
        if matches!(self.tier, TierLocation::Tier1 | TierLocation::Tier0And1) {
            parts.push("1");
        }
        if self.in_tier2 && self.state != SegmentState::Quarantined {
            parts.push("2");
        }
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join("+")
        }
    }

    /// Uncompressed frame bytes ÷ Tier 1 file bytes (`None` without a Tier 1 copy).
    pub fn compression_ratio(&self) -> Option<f64> {
        (self.tier1_bytes > 0).then(|| self.record_bytes as f64 / self.tier1_bytes as f64)
    }
}

/// One log, for `inspect`.
#[derive(Debug, Clone)]
pub struct LogInfo {
    /// Name.
    pub name: String,
    /// Persistent identity.
    pub log_id: u128,
    /// Records written.
    pub next_seq: u64,
    /// Durable watermark.
    pub durable_seq: u64,
    /// Segments, oldest first.
    pub segments: Vec<SegmentInfo>,
}

struct ManagerInner {
    config: ManagerConfig,
    root_id: u128,
    _lock: File,
    workers: Arc<FlushManager>,
    tiering: Arc<Tiering>,
    logs: Arc<OpenLogs>,
    reports: Mutex<HashMap<String, RecoveryReport>>,
    sync_fault: Mutex<Option<SyncFault>>,
    clock: Mutex<Option<Clock>>,
    closed: std::sync::atomic::AtomicBool,
    /// Held by the first [`AofManager::close`] until it is done; later callers wait on it and
    /// get its outcome (`None`: closed cleanly), as for [`LogShared::close`].
    close_outcome: Mutex<Option<Option<Error>>>,
}

/// The open logs of a manager, by name. A log leaves it when [`Aof::close`] closes it cleanly
/// (or with the manager): a closed log keeps no descriptor or mapping alive for a manager that
/// runs on while other logs come and go. A log closed with an error stays, so that the
/// manager's close reports the error too.
///
/// The map's lock is only held to look a name up, reserve it and publish the result: recovery
/// and the Tier 2 writer claim of one log (seconds with a slow store) run outside it, so they
/// hold up no other log's open or close. A reserved name ([`Slot::Opening`]) makes later opens
/// of that name wait (`settled`) and then look again, so two opens never recover the same
/// directory at once.
pub(crate) struct OpenLogs {
    map: Mutex<HashMap<String, Slot>>,
    /// Notified whenever a reservation ends (the open was published or gave up).
    settled: Condvar,
}

/// One name in [`OpenLogs`].
enum Slot {
    Open(Arc<LogShared>),
    /// An open (or upgrade, or reopen) of this name runs outside the map's lock.
    Opening,
}

impl OpenLogs {
    fn new() -> Self {
        OpenLogs {
            map: Mutex::new(HashMap::new()),
            settled: Condvar::new(),
        }
    }

    /// Take `log` out, unless another instance (a reopen's) or a reservation stands there now.
    pub(crate) fn remove_instance(&self, log: &LogShared) {
        let mut map = self.map.lock();
        if let Some(Slot::Open(l)) = map.get(&*log.name)
            && std::ptr::eq(Arc::as_ptr(l), log)
        {
            map.remove(&*log.name);
        }
    }

    /// Wait until no open is in progress, then take every log out. Only called once the
    /// manager is marked closed, so no new reservation can start meanwhile.
    fn drain_when_settled(&self) -> Vec<Arc<LogShared>> {
        let mut map = self.map.lock();
        while map.values().any(|s| matches!(s, Slot::Opening)) {
            self.settled.wait(&mut map);
        }
        map.drain()
            .filter_map(|(_, slot)| match slot {
                Slot::Open(log) => Some(log),
                Slot::Opening => None,
            })
            .collect()
    }
}

/// A name reserved in [`OpenLogs`] while its open runs without the map's lock. Dropped without
/// [`Reservation::publish`] (an error, a panic), it puts back the instance it replaced (a log
/// closed with an error stays known, see [`OpenLogs`]) or frees the name, and wakes the waiters:
/// a failed open leaves nothing behind, and a retry opens afresh.
pub(crate) struct Reservation<'a> {
    logs: &'a OpenLogs,
    name: String,
    /// The instance the open replaces (closed, failed, or read-only and being upgraded).
    previous: Option<Arc<LogShared>>,
    published: bool,
}

impl Reservation<'_> {
    /// Make `shared` the open instance of the name.
    fn publish(mut self, shared: Arc<LogShared>) {
        let mut map = self.logs.map.lock();
        map.insert(self.name.clone(), Slot::Open(shared));
        self.published = true;
        drop(map);
        self.logs.settled.notify_all();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        let mut map = self.logs.map.lock();
        match self.previous.take() {
            Some(previous) => map.insert(self.name.clone(), Slot::Open(previous)),
            None => map.remove(&self.name),
        };
        drop(map);
        self.logs.settled.notify_all();
    }
}

/// How long opening a log waits for its Tier 2 writer claim.
const CLAIM_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Owns a data root and the logs in it.
#[derive(Clone)]
pub struct AofManager {
    inner: Arc<ManagerInner>,
}

impl std::fmt::Debug for AofManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AofManager")
            .field("root", &self.inner.config.root)
            .finish_non_exhaustive()
    }
}

impl AofManager {
    /// Open (creating if needed) the root in `config`. Fails with [`Error::Locked`] if another
    /// process (or another manager in this process) holds it, and with
    /// [`Error::Tier2Misconfigured`] if the Tier 2 store refuses aof2 (its bucket does not exist,
    /// it rejects the credentials); a Tier 2 store that is down or does not answer within a
    /// couple of seconds does not fail the open.
    pub fn open(config: ManagerConfig) -> Result<Self> {
        config.validate()?;
        let root = config.root.clone();
        std::fs::create_dir_all(&root).context(|| format!("create root {}", root.display()))?;
        if !root.join(ROOT_FILE).exists() {
            // Checked again under the lock; checked here too so that a directory that is not
            // ours is not left with a lock file in it.
            refuse_foreign(&root)?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))
            .context(|| format!("open lock file in {}", root.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { root }),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("lock {}", root.display()), e));
            }
        }
        let root_id = open_root_file(&root)?;
        let logs_dir = root.join("logs");
        std::fs::create_dir_all(&logs_dir).context(|| format!("create {}", logs_dir.display()))?;
        let tier2 = match &config.tier2 {
            Some(t2) => {
                let tier2 = crate::tier2::Tier2::open(t2)?;
                // A missing bucket or rejected credentials fail the open here, with what to fix;
                // a store that is down does not (Tier 2 catches up once it is back).
                tier2.check_access(crate::tier2::ACCESS_CHECK_WAIT)?;
                Some(tier2)
            }
            None => None,
        };
        let workers = FlushManager::start(config.flush_threads, config.timer_tick);
        let tiering = Tiering::start(&config, root_id, tier2);
        Ok(AofManager {
            inner: Arc::new(ManagerInner {
                config,
                root_id,
                _lock: lock,
                workers,
                tiering,
                logs: Arc::new(OpenLogs::new()),
                reports: Mutex::new(HashMap::new()),
                sync_fault: Mutex::new(None),
                clock: Mutex::new(None),
                closed: std::sync::atomic::AtomicBool::new(false),
                close_outcome: Mutex::new(None),
            }),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.inner.config.root
    }

    /// The manager's configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    pub(crate) fn tier2(&self) -> Option<&Arc<crate::tier2::Tier2>> {
        self.inner.tiering.tier2.as_ref()
    }

    /// The Tier 1 budget the manager's logs share.
    pub(crate) fn tier1_budget(&self) -> &Arc<crate::tiering::budget::Tier1Budget> {
        &self.inner.tiering.tier1
    }

    /// The root's random identity.
    pub fn root_id(&self) -> u128 {
        self.inner.root_id
    }

    /// Open (creating if needed) a log. Opening a log that is already open returns another handle
    /// to it (the first configuration stays in force).
    pub fn open_log(&self, name: &str, config: LogConfig) -> Result<Aof> {
        self.open_log_mode(name, config, false)
    }

    /// Open an existing log for reading only: nothing on disk changes (no new epoch, no sealing
    /// of interrupted segments, no quarantine moves; what recovery would do is only reported),
    /// and appends fail with [`Error::ReadOnly`]. If the log is already open for writing in this
    /// manager, that handle is returned.
    pub fn open_log_read_only(&self, name: &str) -> Result<Aof> {
        self.open_log_mode(name, LogConfig::default(), true)
    }

    fn open_log_mode(&self, name: &str, config: LogConfig, read_only: bool) -> Result<Aof> {
        validate_log_name(name)?;
        config.validate()?;
        if !read_only && config.segment_bytes.saturating_mul(2) > self.inner.config.tier0_max_bytes
        {
            return Err(Error::InvalidConfig(format!(
                "segment_bytes {} does not fit the Tier 0 budget of {} bytes twice (an active \
                 segment and the next one)",
                config.segment_bytes, self.inner.config.tier0_max_bytes
            )));
        }
        let logs = &*self.inner.logs;
        let mut map = logs.map.lock();
        let previous = loop {
            // Under the lock `close` drains the logs with: a log opened after that drain would
            // outlive the manager's threads.
            if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::Closed("manager".into()));
            }
            // Logs closed cleanly that are here again: an open that replaced one of them failed
            // and put it back (see `Reservation`).
            map.retain(|_, slot| !matches!(slot, Slot::Open(l) if l.closed_cleanly()));
            match map.get(name) {
                // Another open of this name is running: wait for it, then look again (its
                // instance, or its failure left nothing and this open tries afresh).
                Some(Slot::Opening) => logs.settled.wait(&mut map),
                Some(Slot::Open(shared))
                    if !shared.is_closed() && (read_only || !shared.is_read_only()) =>
                {
                    return Ok(Aof {
                        shared: shared.clone(),
                    });
                }
                // Nothing open, a closed or failed instance, or a read-only one a writable
                // open replaces: reserve the name.
                _ => {
                    break match map.insert(name.to_string(), Slot::Opening) {
                        Some(Slot::Open(previous)) => Some(previous),
                        _ => None,
                    };
                }
            }
        };
        drop(map);
        let reservation = Reservation {
            logs,
            name: name.to_string(),
            previous,
            published: false,
        };
        if let Some(previous) = &reservation.previous {
            if previous.is_closed() {
                // A closed or failed instance finishes its background work before a new one
                // shares its manifest.
                let _ = previous.close();
            } else {
                // Upgrade: a read-only handle gives way to a writable one.
                previous.close()?;
            }
        }
        let (shared, report) = self.open_instance(name, config, read_only)?;
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            // The manager's close waits for this reservation before it stops the threads, so
            // the new instance is closed with them still running; it is never published.
            let _ = shared.close();
            return Err(Error::Closed("manager".into()));
        }
        self.inner.reports.lock().insert(name.to_string(), report);
        reservation.publish(shared.clone());
        Ok(Aof { shared })
    }

    /// Reserve `name` for work that replaces its directory (a restore): opens of the name wait
    /// until the returned guard is dropped, and then find what the work left. Refused
    /// (`InvalidConfig`) while the log is open in this manager.
    pub(crate) fn reserve_name(&self, name: &str) -> Result<Reservation<'_>> {
        let logs = &*self.inner.logs;
        let mut map = logs.map.lock();
        loop {
            if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::Closed("manager".into()));
            }
            match map.get(name) {
                Some(Slot::Opening) => logs.settled.wait(&mut map),
                Some(Slot::Open(shared)) if !shared.is_closed() => {
                    return Err(Error::InvalidConfig(format!(
                        "log {name:?} is open in this manager"
                    )));
                }
                _ => break,
            }
        }
        let previous = match map.insert(name.to_string(), Slot::Opening) {
            Some(Slot::Open(previous)) => Some(previous),
            _ => None,
        };
        Ok(Reservation {
            logs,
            name: name.to_string(),
            previous,
            published: false,
        })
    }

    /// Recover the log and start its instance: the part of an open that runs outside the map's
    /// lock, under the name's reservation.
    fn open_instance(
        &self,
        name: &str,
        config: LogConfig,
        read_only: bool,
    ) -> Result<(Arc<LogShared>, RecoveryReport)> {
        let (mut recovered, report) = recover_log(
            self.root(),
            name,
            &config,
            read_only,
            &self.inner.tiering.budget,
            &self.inner.tiering.frame_cache,
            self.inner.tiering.tier2.as_ref(),
        )?;
        let unsealed = std::mem::take(&mut recovered.unsealed);
        let shared = LogShared::new(
            recovered,
            config,
            self.inner.workers.clone(),
            self.inner.tiering.clone(),
            self.inner.sync_fault.lock().clone(),
            self.inner.clock.lock().clone(),
            Arc::downgrade(&self.inner.logs),
        );
        if let Some(tier2) = &self.inner.tiering.tier2
            && !read_only
        {
            self.claim_tier2(tier2, &shared)?;
        }
        self.inner.workers.register(&shared);
        self.inner.tiering.register(&shared);
        shared.resume_seals(unsealed);
        if !read_only {
            self.inner
                .workers
                .submit(crate::flush::Job::Sweep(shared.clone()));
        }
        Ok((shared, report))
    }

    /// Claim the log's writer epoch in Tier 2 and publish its catalog. A claim held by another
    /// root fails the open with `Error::Fenced`, a store that holds none although the log has
    /// segments in Tier 2 with `InvalidConfig` (another store or prefix), a store that refuses
    /// aof2 with `Tier2Misconfigured`, a damaged claim object with `Corruption`; an unreachable
    /// store does not (local tiers keep serving; the uploader
    /// claims before its first upload, and fences the log if it lost).
    fn claim_tier2(&self, tier2: &Arc<crate::tier2::Tier2>, shared: &Arc<LogShared>) -> Result<()> {
        let local = {
            let manifest = shared.manifest.lock();
            let state = manifest.state();
            crate::tier2::LocalCopy {
                retired_below: state.retired_below,
                segments: state
                    .segments
                    .values()
                    .filter_map(|e| match (e.sealed, e.tier2) {
                        (Some(sealed), Some(tier2)) => {
                            Some(crate::format::catalog::CatalogSegment { sealed, tier2 })
                        }
                        _ => None,
                    })
                    .collect(),
            }
        };
        let claim = Arc::new(crate::tier2::LogClaim::new(
            &shared.name,
            shared.log_id,
            local,
        ));
        shared.set_claim(claim.clone());
        // The claim runs on its own thread; the open waits for it a bounded time, so a hung
        // store delays an open by at most `CLAIM_WAIT` (the claim finishes in the background and
        // fences the log if it is refused).
        let (tx, rx) = std::sync::mpsc::channel();
        let root_id = self.inner.root_id;
        let take_over = tier2.config().take_over;
        let (t2, c) = (tier2.clone(), claim.clone());
        std::thread::Builder::new()
            .name("aof2-claim".into())
            .spawn(move || {
                let result = t2.claim(&c, root_id, take_over);
                if let Err(e) = &result
                    && e.kind() == crate::ErrorKind::Fenced
                {
                    c.fence(e.to_string());
                }
                let _ = tx.send(result);
            })
            .map_err(|e| Error::io("spawn the Tier 2 claim thread", e))?;
        match rx.recv_timeout(CLAIM_WAIT) {
            Ok(Ok(_)) => {
                if let Err(e) = self.inner.tiering.publish(tier2, shared, &claim) {
                    tracing::warn!(log = %shared.name, error = %e, "publishing the catalog failed");
                }
                Ok(())
            }
            // Only an unreachable store defers the claim; any definite refusal (fenced, another
            // store, a damaged claim object, no such bucket, rejected credentials) fails the
            // open, or the log would never upload.
            Ok(Err(e)) if e.kind() != crate::ErrorKind::Unavailable => {
                let _ = shared.close();
                Err(e)
            }
            Ok(Err(e)) => {
                tracing::warn!(log = %shared.name, error = %e, "Tier 2 writer claim deferred: the store is unavailable");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(log = %shared.name, "Tier 2 writer claim still running; the log opens meanwhile");
                Ok(())
            }
        }
    }

    /// Whether a log exists in this root: it has a manifest (or segment or Tier 1 files without
    /// one, which opening it reports as corruption). A crash during a log's first open can leave its
    /// directories without either: nothing was ever appended there, so that is no log, and the
    /// next writable open creates it afresh.
    pub fn log_exists(&self, name: &str) -> bool {
        validate_log_name(name).is_ok() && crate::recovery::log_exists(self.root(), name)
    }

    /// Names of the logs in this root (those [`AofManager::log_exists`] finds), sorted.
    pub fn list_logs(&self) -> Result<Vec<String>> {
        let dir = self.root().join("logs");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).context(|| format!("list {}", dir.display()))? {
            let entry = entry.context(|| format!("list {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str()
                && self.log_exists(name)
            {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// What recovery did when `name` was opened by this manager.
    pub fn recovery_report(&self, name: &str) -> Option<RecoveryReport> {
        self.inner.reports.lock().get(name).cloned()
    }

    /// Segments and watermarks of an open log.
    pub fn log_info(&self, log: &Aof) -> LogInfo {
        let shared = &log.shared;
        let written = shared.written();
        // Taken before, and the index released before the rest: a roll holds the write state
        // and then takes the index, so holding the index while asking for the write state
        // deadlocked with it.
        let active_end = shared.active_records_end();
        let listed: Vec<Arc<crate::segment::Segment>> =
            shared.segments.read().iter().cloned().collect();
        let segments = listed
            .iter()
            .map(|s| {
                let file_bytes = std::fs::metadata(&s.path).map(|m| m.len()).unwrap_or(0);
                let (state, end, record_bytes) = if s.quarantine_reason().is_some() {
                    (
                        SegmentState::Quarantined,
                        s.end_seq().unwrap_or(s.base_seq),
                        0,
                    )
                } else if let Some(meta) = s.sealed_meta() {
                    (
                        SegmentState::Sealed,
                        s.end_seq().unwrap_or(s.base_seq),
                        meta.footer.records_end - crate::limits::SEGMENT_HEADER_BYTES,
                    )
                } else if let Some(end) = s.end_seq() {
                    (
                        SegmentState::Sealing,
                        end,
                        s.records_end() - crate::limits::SEGMENT_HEADER_BYTES,
                    )
                } else {
                    let bytes = active_end.saturating_sub(crate::limits::SEGMENT_HEADER_BYTES);
                    (SegmentState::Active, written, bytes)
                };
                let tier1 = s.tier1();
                let tier = match (s.in_tier0(), &tier1) {
                    _ if state == SegmentState::Quarantined => TierLocation::None,
                    (true, None) => TierLocation::Tier0,
                    (true, Some(_)) => TierLocation::Tier0And1,
                    (false, Some(_)) => TierLocation::Tier1,
                    (false, None) => TierLocation::None,
                };
                SegmentInfo {
                    id: s.id,
                    state,
                    base_seq: s.base_seq,
                    end_seq: end,
                    file_bytes,
                    record_bytes,
                    path: s.path.clone(),
                    tier,
                    tier1_bytes: tier1.as_ref().map_or(0, |t| t.info().file_len),
                    tier1_level: tier1.as_ref().map(|t| t.info().level),
                    in_tier2: s.tier2().is_some(),
                }
            })
            .collect();
        LogInfo {
            name: shared.name.to_string(),
            log_id: shared.log_id,
            next_seq: written,
            durable_seq: shared.durable(),
            segments,
        }
    }

    /// Check every record checksum of an open log (sealed segments in parallel): every local
    /// copy, and a Tier 2 copy where it is the only one.
    pub fn verify_log(&self, log: &Aof) -> VerifyReport {
        self.verify_log_with(log, VerifyOptions::default())
    }

    /// [`AofManager::verify_log`], with `options` saying what else to check (the Tier 2 copies
    /// of segments still held locally).
    pub fn verify_log_with(&self, log: &Aof, options: VerifyOptions) -> VerifyReport {
        let mut report = crate::recovery::verify::verify(&log.shared, options);
        // Frames recovery found past a damaged range were dropped with the tail: the records
        // that remain verify, but the log lost some.
        if let Some(recovery) = self.recovery_report(log.name()) {
            for damaged in &recovery.damaged_tails {
                let path = log
                    .shared
                    .segment_dir
                    .join(crate::segment::segment_file_name(damaged.segment_id));
                report.problems.push(crate::recovery::verify::Problem {
                    segment_id: damaged.segment_id,
                    location: format!("{} offset {}", path.display(), damaged.cut_offset),
                    detail: damaged.to_string(),
                });
            }
        }
        report
    }

    /// Wait until every sealed segment of `log` (quarantined ones aside) has its Tier 1 copy,
    /// or `timeout` passes. Returns whether it did.
    pub fn wait_for_tier1(&self, log: &Aof, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        self.inner.tiering.wait_progress(deadline, || {
            let pending = log.shared.segments.read().iter().any(|s| {
                s.sealed_meta().is_some() && s.quarantine_reason().is_none() && !s.has_cold_copy()
            });
            !pending && log.shared.pending_seals() == 0
        })
    }

    /// Wait until every sealed segment of `log` (quarantined ones aside) is uploaded to Tier 2
    /// and the log's catalog lists them, or `timeout` passes. Returns whether it did (always
    /// false without Tier 2).
    pub fn wait_for_tier2(&self, log: &Aof, timeout: std::time::Duration) -> bool {
        if self.tier2().is_none() {
            return false;
        }
        let deadline = std::time::Instant::now() + timeout;
        self.inner.tiering.wait_progress(deadline, || {
            let pending = log.shared.segments.read().iter().any(|s| {
                s.sealed_meta().is_some() && s.quarantine_reason().is_none() && s.tier2().is_none()
            });
            !pending
                && log.shared.pending_seals() == 0
                && log.shared.claim().is_some_and(|c| c.is_published())
        })
    }

    /// Release every local Tier 1 copy of `log` that Tier 2 holds (as the coordinator does when
    /// Tier 1 fills). Returns the bytes released.
    pub fn evict_tier1(&self, log: &Aof) -> Result<u64> {
        if log.shared.is_read_only() {
            return Err(Error::ReadOnly {
                log: log.name().to_string(),
            });
        }
        Ok(self.inner.tiering.evict_tier1_log(&log.shared))
    }

    /// Release every Tier 0 copy of `log` that Tier 1 holds and no reader is using (as the
    /// coordinator does under memory pressure). Returns the bytes of budget released.
    pub fn evict_tier0(&self, log: &Aof) -> Result<u64> {
        if log.shared.is_read_only() {
            return Err(Error::ReadOnly {
                log: log.name().to_string(),
            });
        }
        self.inner.tiering.evict_log(&log.shared)
    }

    /// Tier 0 budget use, Tier 1 use, compression and eviction statistics of this manager.
    pub fn tier_stats(&self) -> TierStats {
        self.inner.tiering.stats()
    }

    /// Test seam: fail group-commit syncs of logs opened after this call.
    #[doc(hidden)]
    pub fn set_sync_fault(&self, fault: Option<SyncFault>) {
        *self.inner.sync_fault.lock() = fault;
    }

    /// Test seam: the clock `Durability::Interval` deadlines of logs opened after this call are
    /// measured on (`None`: `Instant::now`).
    #[doc(hidden)]
    pub fn set_clock(&self, clock: Option<Clock>) {
        *self.inner.clock.lock() = clock;
    }

    /// Close every log (syncing it) and stop the background threads. Returns the first log's
    /// error (see [`Aof::close`]): `Ok` means every acknowledged record is durable. A call while
    /// another thread is closing the manager waits for it and returns its outcome, as does a
    /// call after it.
    pub fn close(&self) -> Result<()> {
        let mut outcome = self.inner.close_outcome.lock();
        if let Some(outcome) = outcome.as_ref() {
            return outcome.clone().map_or(Ok(()), Err);
        }
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        // Tier 2 requests in flight are given up now: a log's close waits for its background
        // work, and a fetch from a stalled store would hold it for its time limit and retries.
        // (Nothing a close does needs Tier 2: uploads not done resume at the next open.)
        if let Some(tier2) = self.tier2() {
            tier2.stop();
        }
        // Opens in progress finish first (they see the manager closed and close what they
        // opened): none may register a log with threads that are stopping.
        let logs = self.inner.logs.drain_when_settled();
        let mut first_error = None;
        for log in logs {
            if let Err(e) = log.close() {
                first_error.get_or_insert(e);
            }
        }
        self.inner.workers.shutdown();
        self.inner.tiering.shutdown();
        // Release the root for the next manager even while clones of this one are alive.
        let _ = self.inner._lock.unlock();
        *outcome = Some(first_error.clone());
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for ManagerInner {
    fn drop(&mut self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            if let Some(tier2) = &self.tiering.tier2 {
                tier2.stop();
            }
            // Closed without the map's lock: `Aof::close` of one of them takes it to leave.
            for log in self.logs.drain_when_settled() {
                let _ = log.close();
            }
            self.workers.shutdown();
            self.tiering.shutdown();
        }
    }
}

/// Refuse to adopt a directory without `aof2.root` that already holds something else.
fn refuse_foreign(root: &Path) -> Result<()> {
    let foreign = std::fs::read_dir(root)
        .context(|| format!("list {}", root.display()))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name() != LOCK_FILE && e.file_name() != "logs");
    if foreign {
        return Err(Error::NotAof2File {
            path: root.to_path_buf(),
            what: "root (directory has other files and no aof2.root)",
        });
    }
    Ok(())
}

fn open_root_file(root: &Path) -> Result<u128> {
    let path = root.join(ROOT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if bytes.len() != ROOT_FILE_BYTES {
                return Err(Error::NotAof2File {
                    path,
                    what: "root (aof2.root has the wrong size)",
                });
            }
            RootFile::decode(&bytes)
                .map(|r| r.root_id)
                .map_err(|e| match e {
                    FormatError::UnsupportedVersion(v) => Error::UnsupportedVersion {
                        path: path.clone(),
                        found: v,
                        supported: crate::format::FORMAT_VERSION,
                    },
                    FormatError::BadMagic => Error::NotAof2File {
                        path: path.clone(),
                        what: "root",
                    },
                    other => Error::corruption(path.display().to_string(), other.to_string()),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse_foreign(root)?;
            let root_file = RootFile {
                root_id: sys::random_u128(),
                created_ms: sys::now_ms(),
            };
            sys::write_atomic(&path, &root_file.encode())?;
            Ok(root_file.root_id)
        }
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}
