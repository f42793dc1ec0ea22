//! Tier 2 uploads, catalog publication and Tier 1 eviction.
//!
//! A sealed segment with a Tier 1 copy is queued for upload (at compression, and at open for
//! every segment the manifest shows without a Tier 2 copy: the manifest is the persisted upload
//! queue). An upload worker PUTs the Tier 1 file under its content-named key, records
//! `Tier2Uploaded` once the store acknowledged it, and republishes the log's catalog. Only then
//! may the local Tier 1 copy be evicted (`Tier1Evicted`, recorded before the unlink). While the
//! circuit breaker is open, uploads wait and retry; nothing on the append path waits for them.
//! The same holds while the store refuses aof2 (no such bucket, credentials rejected): the
//! refusal is in the Tier 2 stats and the log, and uploads go on once it is fixed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Tiering;
use crate::aof::LogShared;
use crate::error::{ErrorKind, Result};
use crate::format::catalog::CatalogSegment;
use crate::format::manifest::{Edit, Tier2Info};
use crate::segment::Segment;
use crate::tier2::{CatalogContent, LogClaim, Tier2, Tier2Copy};

/// Evict local Tier 1 copies ahead of demand above this share of `tier1_max_bytes`.
const TIER1_EVICT_AHEAD: f64 = 0.9;
/// Niceness of upload threads (and the Tier 2 I/O runtime's threads).
pub(crate) const BACKGROUND_NICE: i32 = 10;
/// Longest an upload waits for compression to catch up.
const UPLOAD_DEFER_MAX: Duration = Duration::from_secs(2);
/// How often deferred uploads look again.
const UPLOAD_DEFER_POLL: Duration = Duration::from_millis(20);
/// How long a failed upload waits before it is tried again (at least: the breaker may say later).
const UPLOAD_RETRY: Duration = Duration::from_millis(500);
/// How long an upload that failed for a local reason (an I/O error such as too many open files)
/// waits before it is tried again.
const UPLOAD_LOCAL_RETRY: Duration = Duration::from_secs(10);

pub(super) enum UploadTask {
    /// Upload a segment (queued at the instant given).
    Upload(Weak<LogShared>, Arc<Segment>, Instant),
    /// Retention removed segments: publish the shorter catalog, then delete their objects.
    Retire(Weak<LogShared>, Vec<String>),
    /// At open: delete objects of segments retention removed before a crash could delete them.
    Sweep(Weak<LogShared>),
    /// A catalog publication failed for want of the store: publish again until it succeeds.
    /// Without it a log that uploads nothing more would keep an old catalog (restores and
    /// remote readers miss its newest segments) until its next open.
    Publish(Weak<LogShared>),
}

#[derive(Default)]
pub(super) struct Uploads {
    tasks: VecDeque<UploadTask>,
    parked: Vec<(Instant, UploadTask)>,
    /// Upload tasks queued, parked or running.
    pending: u64,
    pub(super) stopped: bool,
}

enum Outcome {
    Done,
    /// Tier 2 is unavailable: try again later.
    Retry,
    /// A local I/O error: try again much later.
    RetryLocal,
}

impl Tiering {
    /// Queue `segment` (sealed, with a Tier 1 copy) for upload.
    pub(crate) fn submit_upload(&self, log: &Arc<LogShared>, segment: Arc<Segment>) {
        if self.tier2.is_none() || log.is_read_only() {
            return;
        }
        let mut u = self.uploads.lock();
        u.pending += 1;
        u.tasks.push_back(UploadTask::Upload(
            Arc::downgrade(log),
            segment,
            Instant::now(),
        ));
        drop(u);
        self.upload_ready.notify_one();
    }

    /// Retention removed segments whose objects are `keys`.
    pub(crate) fn submit_retired(&self, log: &Arc<LogShared>, keys: Vec<String>) {
        if self.tier2.is_none() || keys.is_empty() {
            return;
        }
        self.uploads
            .lock()
            .tasks
            .push_back(UploadTask::Retire(Arc::downgrade(log), keys));
        self.upload_ready.notify_one();
    }

    /// Queue the open-time sweep of objects that retention left behind.
    pub(crate) fn submit_sweep(&self, log: &Arc<LogShared>) {
        if self.tier2.is_none() || log.is_read_only() {
            return;
        }
        self.uploads
            .lock()
            .tasks
            .push_back(UploadTask::Sweep(Arc::downgrade(log)));
        self.upload_ready.notify_one();
    }

    /// Queue a publication of the log's catalog, unless one is queued already.
    fn submit_publish(&self, log: &Arc<LogShared>) {
        let mut u = self.uploads.lock();
        let queued = |t: &UploadTask| matches!(t, UploadTask::Publish(l) if std::ptr::eq(l.as_ptr(), Arc::as_ptr(log)));
        if u.tasks.iter().any(queued) || u.parked.iter().any(|(_, t)| queued(t)) {
            return;
        }
        u.tasks.push_back(UploadTask::Publish(Arc::downgrade(log)));
        drop(u);
        self.upload_ready.notify_one();
    }

    /// Segments waiting for (or in) their upload.
    pub(crate) fn upload_backlog(&self) -> u64 {
        self.uploads.lock().pending
    }

    fn next_upload(&self) -> Option<UploadTask> {
        loop {
            // Read before taking the upload queue: no thread holds one queue lock while taking
            // the other.
            let defer = self.defer_uploads();
            let mut u = self.uploads.lock();
            if u.stopped {
                return None;
            }
            let now = Instant::now();
            let Uploads { parked, tasks, .. } = &mut *u;
            super::unpark(parked, tasks, now);
            // Uploads yield to compression (which yields to appends): while segments wait for
            // compression and Tier 1 has room, an upload waits up to `UPLOAD_DEFER_MAX`.
            let runnable = u.tasks.iter().position(|t| match t {
                UploadTask::Upload(_, _, queued) => {
                    !defer || now.saturating_duration_since(*queued) >= UPLOAD_DEFER_MAX
                }
                _ => true,
            });
            if let Some(i) = runnable {
                return u.tasks.remove(i);
            }
            let wait = u
                .parked
                .iter()
                .map(|(at, _)| at.saturating_duration_since(now))
                .chain(
                    defer
                        .then_some(UPLOAD_DEFER_POLL)
                        .filter(|_| !u.tasks.is_empty()),
                )
                .min()
                .unwrap_or(Duration::from_secs(1));
            self.upload_ready
                .wait_for(&mut u, wait.max(Duration::from_millis(1)));
        }
    }

    /// Whether uploads should wait: compression has a backlog and Tier 1 is under half full.
    fn defer_uploads(&self) -> bool {
        self.queue.lock().compress_queued > 0
            && (self.tier1.max() == u64::MAX || self.tier1.held() < self.tier1.max() / 2)
    }

    pub(super) fn upload_worker(self: Arc<Self>, tier2: Arc<Tier2>) {
        crate::sys::lower_thread_priority(BACKGROUND_NICE);
        while let Some(task) = self.next_upload() {
            let outcome = match &task {
                // No background guard around the network calls: closing a log never waits for a
                // slow store (the manifest edit takes the guard; see `try_upload`).
                UploadTask::Upload(log, segment, _) => match log.upgrade() {
                    Some(log) if !log.is_closed() => self.upload(&tier2, &log, segment),
                    _ => Outcome::Done,
                },
                UploadTask::Retire(log, keys) => match log.upgrade() {
                    Some(log) => self.retire_objects(&tier2, &log, keys),
                    None => Outcome::Done,
                },
                UploadTask::Sweep(log) => match log.upgrade() {
                    Some(log) if !log.is_closed() => self.sweep(&tier2, &log),
                    _ => Outcome::Done,
                },
                UploadTask::Publish(log) => match log.upgrade() {
                    Some(log) if !log.is_closed() => self.republish(&tier2, &log),
                    _ => Outcome::Done,
                },
            };
            let mut u = self.uploads.lock();
            match outcome {
                Outcome::Done => {
                    if matches!(task, UploadTask::Upload(..)) {
                        u.pending -= 1;
                    }
                }
                Outcome::Retry => u.parked.push((Instant::now() + UPLOAD_RETRY, task)),
                Outcome::RetryLocal => u.parked.push((Instant::now() + UPLOAD_LOCAL_RETRY, task)),
            }
            drop(u);
            self.note_progress();
        }
    }

    /// Make sure the log holds its writer claim (claimed at open, or later if Tier 2 was down
    /// then).
    fn ensure_claim(&self, tier2: &Tier2, log: &LogShared) -> Result<Arc<LogClaim>> {
        let claim = log.claim().cloned().ok_or_else(|| {
            crate::Error::Closed(format!("log {:?} has no Tier 2 claim", log.name))
        })?;
        claim.check()?;
        if claim.epoch() == 0 {
            tier2.claim(&claim, self.root_id, tier2.config().take_over)?;
        }
        Ok(claim)
    }

    fn upload(&self, tier2: &Arc<Tier2>, log: &Arc<LogShared>, segment: &Arc<Segment>) -> Outcome {
        match self.try_upload(tier2, log, segment) {
            Ok(()) => Outcome::Done,
            // The store is down, or refuses aof2 (logged once by `Tier2`, shown in its stats):
            // the operator may fix it while the process runs.
            Err(e) if crate::tier2::retry_later(&e) => {
                tracing::debug!(log = %log.name, segment = segment.id, error = %e, "upload to Tier 2 deferred");
                Outcome::Retry
            }
            Err(e) if e.kind() == ErrorKind::Fenced => {
                if let Some(claim) = log.claim() {
                    claim.fence(e.to_string());
                }
                Outcome::Done
            }
            Err(e) if e.kind() == ErrorKind::Io => {
                // Local trouble that may pass (too many open files, an I/O error): the catalog
                // lists only a contiguous prefix, so giving up would stall Tier 2 until a reopen.
                tracing::error!(log = %log.name, segment = segment.id, error = %e, "upload to Tier 2 failed; trying again in {} s", UPLOAD_LOCAL_RETRY.as_secs());
                Outcome::RetryLocal
            }
            Err(e) => {
                // The Tier 1 file went with retention, or is damaged: the segment is queued
                // again at the next open.
                tracing::error!(log = %log.name, segment = segment.id, error = %e, "upload to Tier 2 failed");
                Outcome::Done
            }
        }
    }

    fn try_upload(
        &self,
        tier2: &Arc<Tier2>,
        log: &Arc<LogShared>,
        segment: &Arc<Segment>,
    ) -> Result<()> {
        if segment.tier2().is_some() || segment.quarantine_reason().is_some() {
            return Ok(());
        }
        let (Some(t1), Some(meta)) = (segment.tier1(), segment.sealed_meta()) else {
            // Its Tier 1 copy was dropped (it is compressed and queued again) or it was retired.
            return Ok(());
        };
        let claim = self.ensure_claim(tier2, log)?;
        let tier1 = *t1.info();
        let key = tier2.segment_key_parts(&log.name, log.log_id, segment.id, tier1.footer_crc);
        let object_crc = tier2.upload_file(&key, t1.path(), tier1.file_len)?;
        let info = Tier2Info {
            tier1,
            object_crc,
            segment_footer: meta.footer.encode(),
        };
        let retired = {
            // A closed log is done; its next open queues the segment again (same key, same
            // bytes: the repeated upload is harmless).
            let Some(_running) = log.enter_background() else {
                return Ok(());
            };
            let mut manifest = log.manifest.lock();
            match manifest.state().segments.get(&segment.id) {
                None => true,
                // Recorded meanwhile (by another upload of the same bytes to the same key).
                Some(e) if e.tier2.is_some() || e.sealed.is_none() => return Ok(()),
                Some(_) => {
                    // Before the upload shows anywhere: `wait_for_tier2` must not see the
                    // segment uploaded and the catalog current.
                    claim.dirty.store(true, Ordering::Release);
                    manifest.append(Edit::Tier2Uploaded(info))?;
                    false
                }
            }
        };
        if retired {
            // Retention removed the segment while it was uploaded: no catalog lists the object
            // and nothing will record it. Left here it would stay until the log's next open
            // (the sweep), for the life of a long-running process.
            if let Err(e) = tier2.delete(&key) {
                tracing::warn!(%key, error = %e, "deleting the object of a segment retired during its upload failed; the next open deletes it");
            }
            return Ok(());
        }
        segment.set_tier2(Arc::new(Tier2Copy::new(
            tier2.clone(),
            &log.name,
            log.log_id,
            info,
            self.frame_cache.clone(),
        )));
        if let Err(e) = self.publish(tier2, log, &claim) {
            // The object is safe and recorded; the catalog is published again later (by the
            // next upload, or the retried publication queued here).
            tracing::warn!(log = %log.name, error = %e, "publishing the catalog failed");
            if e.kind() == ErrorKind::Fenced {
                return Err(e);
            }
            if crate::tier2::retry_later(&e) {
                self.submit_publish(log);
            }
        }
        self.evict_tier1_ahead();
        Ok(())
    }

    /// Publish the log's catalog: every sealed segment in Tier 2, oldest first, up to the first
    /// one that is not there yet.
    pub(crate) fn publish(&self, tier2: &Tier2, log: &LogShared, claim: &LogClaim) -> Result<()> {
        claim.dirty.store(true, Ordering::Release);
        let published = tier2.publish_catalog(claim, || {
            claim.dirty.store(false, Ordering::Release);
            let manifest = log.manifest.lock();
            let state = manifest.state();
            let mut segments = Vec::new();
            // Listing nothing, the catalog ends where the log starts: the first live segment
            // (not in Tier 2 yet) starts there, or every segment was retired.
            let mut next_seq = state.retired_below;
            let mut last_timestamp_ms = state.retired_last_timestamp_ms;
            for entry in state.segments.values() {
                match (entry.sealed, entry.tier2) {
                    (Some(sealed), Some(tier2)) => {
                        next_seq = sealed.base_seq + sealed.record_count;
                        last_timestamp_ms = last_timestamp_ms.max(sealed.last_timestamp_ms);
                        segments.push(CatalogSegment { sealed, tier2 });
                    }
                    _ => break,
                }
            }
            CatalogContent {
                created_ms: state.created_ms,
                next_seq,
                last_timestamp_ms,
                segments,
            }
        });
        if published.is_err() {
            claim.dirty.store(true, Ordering::Release);
        }
        published
    }

    /// Publish the catalog a failed publication left behind (nothing to do if a later one
    /// succeeded meanwhile).
    fn republish(&self, tier2: &Tier2, log: &LogShared) -> Outcome {
        let Some(claim) = log.claim() else {
            return Outcome::Done;
        };
        match self.ensure_claim(tier2, log) {
            Ok(_) if !claim.dirty.load(Ordering::Acquire) => Outcome::Done,
            Ok(_) => match self.publish(tier2, log, claim) {
                Ok(()) => Outcome::Done,
                Err(e) if crate::tier2::retry_later(&e) => Outcome::Retry,
                Err(e) => {
                    tracing::warn!(log = %log.name, error = %e, "publishing the catalog failed");
                    Outcome::Done
                }
            },
            Err(e) if crate::tier2::retry_later(&e) => Outcome::Retry,
            Err(_) => Outcome::Done,
        }
    }

    fn retire_objects(&self, tier2: &Tier2, log: &LogShared, keys: &[String]) -> Outcome {
        if let Some(claim) = log.claim()
            && claim.epoch() > 0
        {
            match self.publish(tier2, log, claim) {
                Ok(()) => {}
                Err(e) if crate::tier2::retry_later(&e) => return Outcome::Retry,
                // Fenced: the new writer's catalog decides what is live; leave the objects.
                Err(_) => return Outcome::Done,
            }
        } else {
            return Outcome::Retry;
        }
        for key in keys {
            if let Err(e) = tier2.delete(key) {
                if crate::tier2::retry_later(&e) {
                    return Outcome::Retry;
                }
                tracing::warn!(%key, error = %e, "deleting a retired Tier 2 object failed");
            }
        }
        Outcome::Done
    }

    /// Delete the log's segment objects below its oldest live segment: retention removed them
    /// from the manifest, but the process stopped before their deletion (which follows the
    /// catalog publication). Runs once the current catalog no longer lists them. Also deletes
    /// objects of live segments other than the recorded copy (uploads a crash kept from being
    /// recorded, of bytes the segment no longer has).
    fn sweep(&self, tier2: &Tier2, log: &LogShared) -> Outcome {
        let Some(claim) = log.claim() else {
            return Outcome::Done;
        };
        if claim.check().is_err() {
            return Outcome::Done;
        }
        if claim.epoch() == 0 || claim.dirty.load(Ordering::Acquire) {
            match self
                .ensure_claim(tier2, log)
                .and_then(|c| self.publish(tier2, log, &c))
            {
                Ok(()) => {}
                Err(e) if crate::tier2::retry_later(&e) => return Outcome::Retry,
                Err(_) => return Outcome::Done,
            }
        }
        // Below both the oldest live segment and the oldest one the published catalog lists:
        // retention may have moved on since the last publication (its own deletions follow the
        // next one).
        let first_live = log
            .oldest_live_segment_id()
            .min(claim.published_first.load(Ordering::Acquire));
        let keys = match tier2.list(&tier2.segments_prefix(&log.name, log.log_id)) {
            Ok(keys) => keys,
            Err(e) if crate::tier2::retry_later(&e) => return Outcome::Retry,
            Err(_) => return Outcome::Done,
        };
        // A live segment whose Tier 2 copy is recorded is never uploaded again: an object of it
        // under another key is an earlier compression's upload that a crash kept from being
        // recorded (the segment was compressed again into other bytes after the restart).
        let recorded: std::collections::HashMap<u64, String> = log
            .segments
            .read()
            .iter()
            .filter_map(|s| s.tier2().map(|copy| (s.id, copy.key.clone())))
            .collect();
        let mut removed = 0;
        for key in keys {
            let id = key
                .rsplit('/')
                .next()
                .and_then(|name| name.get(..16))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            let orphan = id.is_some_and(|id| {
                id < first_live || recorded.get(&id).is_some_and(|live| *live != key)
            });
            if orphan {
                match tier2.delete(&key) {
                    Ok(()) => removed += 1,
                    Err(e) if crate::tier2::retry_later(&e) => return Outcome::Retry,
                    Err(e) => {
                        tracing::warn!(%key, error = %e, "deleting a retired Tier 2 object failed")
                    }
                }
            }
        }
        if removed > 0 {
            tracing::info!(log = %log.name, removed, "deleted Tier 2 objects left by a restart (retired segments, unrecorded uploads)");
        }
        Outcome::Done
    }

    /// Evict while Tier 1 files and reservations together are above the evict-ahead share, so
    /// compressions find room without evicting first.
    pub(super) fn evict_tier1_ahead(&self) {
        if self.tier1.max() == u64::MAX || self.tier2.is_none() {
            return;
        }
        let target = (self.tier1.max() as f64 * TIER1_EVICT_AHEAD) as u64;
        let held = self.tier1.held();
        if held > target {
            self.evict_tier1(held - target);
        }
    }

    /// Release every local Tier 1 copy of `log` that Tier 2 holds.
    pub(crate) fn evict_tier1_log(&self, log: &Arc<LogShared>) -> u64 {
        self.evict_tier1_of(std::slice::from_ref(log), u64::MAX)
    }

    /// Release least-recently-read local Tier 1 copies of segments that Tier 2 holds until `need`
    /// bytes are freed (or nothing more can be). Returns the bytes freed.
    pub(crate) fn evict_tier1(&self, need: u64) -> u64 {
        self.evict_tier1_of(&self.live_logs(), need)
    }

    fn evict_tier1_of(&self, logs: &[Arc<LogShared>], need: u64) -> u64 {
        let candidates =
            super::lru_candidates(logs, |s| s.tier1().is_some() && s.tier2().is_some());
        let mut freed = 0;
        for (log, segment) in candidates {
            if freed >= need {
                break;
            }
            let Some(_running) = log.enter_background() else {
                continue;
            };
            let result = (|| -> Result<Option<u64>> {
                let mut manifest = log.manifest.lock();
                let entry = manifest.state().segments.get(&segment.id);
                if entry.is_none_or(|e| e.tier1.is_none() || e.tier2.is_none()) {
                    return Ok(None);
                }
                manifest.append(Edit::Tier1Evicted {
                    segment_id: segment.id,
                })?;
                // Taken under the manifest lock: a retention that retires the segment after
                // this finds no Tier 1 bytes to forget, and these are forgotten here.
                let taken = segment.take_tier1();
                drop(manifest);
                let Some(t1) = taken else {
                    return Ok(None);
                };
                // Recorded first: a crash before the unlink leaves a file recovery removes.
                // Readers holding the copy keep their open descriptor.
                if let Err(e) = std::fs::remove_file(t1.path())
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %t1.path().display(), error = %e, "removing an evicted Tier 1 file failed");
                }
                Ok(Some(t1.info().file_len))
            })();
            match result {
                Ok(Some(bytes)) => {
                    freed += bytes;
                    self.forget_tier1(bytes);
                    self.counters
                        .tier1_evictions
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(log = %log.name, segment = segment.id, error = %e, "Tier 1 eviction failed")
                }
            }
        }
        freed
    }
}
