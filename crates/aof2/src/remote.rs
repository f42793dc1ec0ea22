//! Reading a log from Tier 2 alone: [`AofManager::restore_log`] rebuilds a log in a local root
//! from its catalog, and [`RemoteReader`] reads and follows a log without any local root.
//!
//! Both see what the writer's catalog lists: sealed segments whose upload finished, oldest first.
//! Records of the writer's active segment (and of sealed segments still queued for upload) are
//! not in Tier 2 yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::config::{Tier2Config, validate_log_name};
use crate::error::{Error, IoContext, Result};
use crate::format::catalog::{Catalog, CatalogSegment};
use crate::format::manifest::Edit;
use crate::manager::AofManager;
use crate::manifest::ManifestLog;
use crate::recovery::tier2_sealed_meta;
use crate::segment::{Position, Record, Segment};
use crate::sys;
use crate::tier1::tier1_file_name;
use crate::tier2::{Tier2, Tier2Copy};
use crate::tiering::FrameCache;

/// Progress of a restore, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    pub segments_done: u64,
    pub segments_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreReport {
    pub log_id: u128,
    /// Writer epoch of the catalog restored from.
    pub catalog_epoch: u64,
    pub segments: u64,
    /// Segments downloaded into Tier 1 (the rest stay in Tier 2 only: Tier 1 budget).
    pub segments_downloaded: u64,
    pub bytes_downloaded: u64,
    pub first_seq: u64,
    pub end_seq: u64,
    pub seconds: f64,
}

fn segment_of(
    tier2: &Arc<Tier2>,
    name: &Arc<str>,
    log_id: u128,
    s: &CatalogSegment,
    cache: &Arc<FrameCache>,
) -> Result<Arc<Segment>> {
    let copy = Arc::new(Tier2Copy::new(
        tier2.clone(),
        name,
        log_id,
        s.tier2,
        cache.clone(),
    ));
    let meta = tier2_sealed_meta(&s.tier2, &s.sealed, log_id)
        .map_err(|detail| Error::corruption(copy.key.clone(), detail))?;
    let segment = Segment::sealed(
        name.clone(),
        s.sealed.segment_id,
        PathBuf::from(&copy.key),
        meta,
        None,
    );
    segment.set_tier2(copy);
    Ok(Arc::new(segment))
}

/// Restore attempts while the writer's retention keeps removing segments the catalog listed.
const RESTORE_ATTEMPTS: u32 = 3;

impl AofManager {
    /// Rebuild log `name` in this root from its catalog in Tier 2: every segment the catalog
    /// lists is recorded as held by Tier 2, and downloaded (checked against its CRC) into Tier 1
    /// while the Tier 1 budget has room. The log must not exist locally. The restored log is
    /// opened like any other; appends continue at its end once this root holds the writer claim
    /// (open with `Tier2Config::take_over` if the old writer is gone).
    ///
    /// Crash-safe: everything is built in `logs/.<name>.restore` and renamed into place at the
    /// end; a leftover of an interrupted restore is removed by the next one. Opens of the name
    /// in this manager wait for the restore and then open the restored log.
    ///
    /// `NotFound` if the store has no catalog of the log. A segment object the catalog lists
    /// but the store does not have: if a newer catalog no longer lists it (the restore raced the
    /// writer's retention), the restore starts again from that catalog; otherwise the store lost
    /// it, and the restore fails with `Corruption` naming the object.
    pub fn restore_log(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(RestoreProgress) + Send),
    ) -> Result<RestoreReport> {
        validate_log_name(name)?;
        let started = Instant::now();
        let tier2 = self.tier2().ok_or_else(|| {
            Error::InvalidConfig("restore needs a Tier 2 store (ManagerConfig::tier2)".into())
        })?;
        // No open of the name may run meanwhile: one that started before the rename would
        // recover (or create) the directory the rename replaces, and acknowledge appends that
        // then vanish with it. Opens wait for this and then open the restored log.
        let _reserved = self.reserve_name(name)?;
        if self.log_exists(name) {
            return Err(Error::InvalidConfig(format!(
                "log {name:?} already exists in {}; restore into a root without it",
                self.root().display()
            )));
        }
        let no_catalog =
            || Error::NotFound(format!("log {name:?} has no catalog in {}", tier2.url()));
        let mut catalog = tier2.latest_catalog(name)?.ok_or_else(no_catalog)?;
        let mut attempts = 1;
        loop {
            let error = match self.restore_catalog(tier2, name, &catalog, started, progress) {
                Err(e) if e.kind() == crate::ErrorKind::NotFound => e,
                other => return other,
            };
            // A segment object the catalog lists is missing. Either the log's writer retired
            // the segment since (this restore raced its retention, which deletes objects once a
            // newer catalog stops listing them): restore from the newer catalog; or the store
            // lost an object it had acknowledged.
            let newer = tier2.latest_catalog(name)?.ok_or_else(no_catalog)?;
            if (newer.epoch, newer.generation) == (catalog.epoch, catalog.generation) {
                return Err(Error::corruption(
                    format!("log {name:?} in {}", tier2.url()),
                    format!(
                        "its newest catalog (epoch {}, generation {}) lists an object the store \
                         does not have: {error}",
                        catalog.epoch, catalog.generation
                    ),
                ));
            }
            if attempts == RESTORE_ATTEMPTS {
                return Err(Error::Unavailable {
                    tier: crate::error::Tier::Tier2,
                    detail: format!(
                        "the catalog of log {name:?} changed during each of {attempts} restore \
                         attempts (its writer's retention removes segments); restore again"
                    ),
                });
            }
            tracing::info!(log = %name, %error, "the catalog changed during the restore; restoring from the newer one");
            catalog = newer;
            attempts += 1;
        }
    }

    /// One restore attempt of `name` from `catalog` (see [`Self::restore_log`]).
    fn restore_catalog(
        &self,
        tier2: &Arc<Tier2>,
        name: &str,
        catalog: &Catalog,
        started: Instant,
        progress: &mut (dyn FnMut(RestoreProgress) + Send),
    ) -> Result<RestoreReport> {
        let logs = self.root().join("logs");
        let staging = logs.join(format!(".{name}.restore"));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .context(|| format!("remove {}", staging.display()))?;
        }
        let manifest_dir = staging.join("manifest");
        let tier1_dir = staging.join("tier1");
        for dir in [&manifest_dir, &tier1_dir, &staging.join("segments")] {
            std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        }
        let mut manifest = ManifestLog::create(
            &manifest_dir,
            Edit::LogCreated {
                log_id: catalog.log_id,
                created_ms: catalog.created_ms,
                name: name.to_string(),
            },
        )?;
        // Where the log starts: its first segment starts there, and with none (retention
        // removed every one) the log continues there, after the records' newest timestamp.
        let first_seq = catalog.first_seq();
        let last_timestamp_ms = if catalog.segments.is_empty() {
            catalog.last_timestamp_ms
        } else {
            0
        };
        if first_seq > 0 || last_timestamp_ms > 0 {
            manifest.append(Edit::RetiredBelow {
                seq: first_seq,
                last_timestamp_ms,
            })?;
        }
        for s in &catalog.segments {
            let id = s.sealed.segment_id;
            manifest.append(Edit::SegmentPrepared {
                segment_id: id,
                capacity: s.sealed.file_len,
            })?;
            manifest.append(Edit::SegmentSealed(s.sealed))?;
            manifest.append(Edit::Tier2Uploaded(s.tier2))?;
            manifest.append(Edit::Tier0Evicted { segment_id: id })?;
        }

        // Download into Tier 1 while its budget has room, a few objects at a time. The logs
        // open in this manager hold part of that budget already, and their compressions and
        // fetches run on meanwhile: the room planned is reserved (in the same step as it is
        // looked at) until the downloads are done, so they cannot take it too.
        let mut wanted = Vec::new();
        let _reservation = self.tier1_budget().reserve_with(|room| {
            let mut planned = 0u64;
            for s in &catalog.segments {
                let len = s.tier2.tier1.file_len;
                if planned.saturating_add(len) > room {
                    break;
                }
                planned += len;
                wanted.push(*s);
            }
            planned
        });
        let planned: u64 = wanted.iter().map(|s| s.tier2.tier1.file_len).sum();
        // The others stay in Tier 2 only: each is checked (one HEAD) for being there with its
        // recorded length and checksum, so a restore never reports success for a log whose
        // records cannot be read.
        let checked = &catalog.segments[wanted.len()..];
        let total = RestoreProgress {
            segments_done: 0,
            segments_total: wanted.len() as u64,
            bytes_done: 0,
            bytes_total: planned,
        };
        progress(total);
        let shared = Mutex::new((manifest, total, None::<Error>));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let cache = Arc::new(FrameCache::default());
        let log_name: Arc<str> = Arc::from(name);
        let copy_of = |s: &CatalogSegment| {
            Tier2Copy::new(
                tier2.clone(),
                &log_name,
                catalog.log_id,
                s.tier2,
                cache.clone(),
            )
        };
        let threads = tier2.config().upload_concurrency.clamp(1, 8);
        let progress = Mutex::new(progress);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if shared.lock().2.is_some() {
                            break;
                        }
                        let Some(s) = wanted.get(i) else {
                            let Some(s) = checked.get(i - wanted.len()) else {
                                break;
                            };
                            if let Err(e) = copy_of(s).check_present() {
                                shared.lock().2.get_or_insert(e);
                            }
                            continue;
                        };
                        let path = tier1_dir.join(tier1_file_name(s.sealed.segment_id));
                        let result = copy_of(s).download_to(&path);
                        let mut guard = shared.lock();
                        let (manifest, done, error) = &mut *guard;
                        match result.and_then(|len| {
                            manifest.append(Edit::Tier1Fetched {
                                segment_id: s.sealed.segment_id,
                            })?;
                            Ok(len)
                        }) {
                            Ok(len) => {
                                done.segments_done += 1;
                                done.bytes_done += len;
                                let snapshot = *done;
                                drop(guard);
                                (progress.lock())(snapshot);
                            }
                            Err(e) => {
                                error.get_or_insert(e);
                            }
                        }
                    }
                });
            }
        });
        let (manifest, done, error) = shared.into_inner();
        if let Some(e) = error {
            return Err(e);
        }
        drop(manifest);
        let target = logs.join(name);
        if target.exists() {
            // Directories a crash during a first open left (`log_exists` said no log is there).
            std::fs::remove_dir_all(&target).context(|| format!("remove {}", target.display()))?;
        }
        std::fs::rename(&staging, &target)
            .context(|| format!("rename {} to {}", staging.display(), target.display()))?;
        sys::sync_dir(&logs)?;
        Ok(RestoreReport {
            log_id: catalog.log_id,
            catalog_epoch: catalog.epoch,
            segments: catalog.segments.len() as u64,
            segments_downloaded: done.segments_done,
            bytes_downloaded: done.bytes_done,
            first_seq: catalog.first_seq(),
            end_seq: catalog.end_seq(),
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

struct RemoteState {
    catalog: Catalog,
    /// Segments of the catalog, oldest first (kept across refreshes, so their opened frame
    /// indexes are reused).
    segments: Vec<Arc<Segment>>,
}

/// Reads (and follows) a log from Tier 2 alone, while its writer runs elsewhere. Read-only; needs
/// no local root.
pub struct RemoteReader {
    tier2: Arc<Tier2>,
    name: Arc<str>,
    cache: Arc<FrameCache>,
    state: RwLock<RemoteState>,
    /// Serializes refreshes.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for RemoteReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteReader")
            .field("log", &self.name)
            .field("url", &self.tier2.url())
            .finish_non_exhaustive()
    }
}

impl RemoteReader {
    /// Open log `name` in the store `config` describes. `Error::NotFound` if it has no catalog.
    pub fn open(config: Tier2Config, name: &str) -> Result<RemoteReader> {
        validate_log_name(name)?;
        let tier2 = Tier2::open(&config)?;
        let catalog = tier2.latest_catalog(name)?.ok_or_else(|| {
            Error::NotFound(format!("log {name:?} has no catalog in {}", tier2.url()))
        })?;
        let name: Arc<str> = Arc::from(name);
        let cache = Arc::new(FrameCache::default());
        let segments = catalog
            .segments
            .iter()
            .map(|s| segment_of(&tier2, &name, catalog.log_id, s, &cache))
            .collect::<Result<Vec<_>>>()?;
        Ok(RemoteReader {
            tier2,
            name,
            cache,
            state: RwLock::new(RemoteState { catalog, segments }),
            refreshing: Mutex::new(()),
        })
    }

    /// Read the newest catalog; returns the new end sequence.
    ///
    /// The end never moves back. A catalog older than the one in use (a listing that lags) is
    /// ignored. `Error::NotFound` if the log was deleted and a new log of the same name
    /// created (the reader keeps the old one's catalog; open a new reader to follow the new
    /// log), and `Error::Corruption` if the newest catalog ends before records this reader
    /// already saw listed.
    pub fn refresh(&self) -> Result<u64> {
        let _one = self.refreshing.lock();
        let Some(catalog) = self.tier2.latest_catalog(&self.name)? else {
            return Ok(self.end_seq());
        };
        let (log_id, version, end) = {
            let state = self.state.read();
            let c = &state.catalog;
            (c.log_id, (c.epoch, c.generation), c.end_seq())
        };
        if catalog.log_id != log_id {
            return Err(Error::NotFound(format!(
                "log {:?} in {} is now another log (id {:032x}; this reader's was {log_id:032x}): \
                 open a new reader",
                self.name,
                self.tier2.url(),
                catalog.log_id
            )));
        }
        if (catalog.epoch, catalog.generation) <= version {
            return Ok(end);
        }
        if catalog.end_seq() < end {
            return Err(Error::Corruption {
                location: format!("catalog of log {:?} in {}", self.name, self.tier2.url()),
                detail: format!(
                    "the newest catalog (epoch {}, generation {}) ends at sequence {}, before \
                     the {end} this reader already saw listed",
                    catalog.epoch,
                    catalog.generation,
                    catalog.end_seq()
                ),
            });
        }
        let old: Vec<Arc<Segment>> = self.state.read().segments.clone();
        let mut segments = Vec::with_capacity(catalog.segments.len());
        for s in &catalog.segments {
            let reuse = old.iter().find(|o| {
                o.id == s.sealed.segment_id && o.tier2().is_some_and(|c| c.info == s.tier2)
            });
            segments.push(match reuse {
                Some(o) => o.clone(),
                None => segment_of(&self.tier2, &self.name, catalog.log_id, s, &self.cache)?,
            });
        }
        let end = catalog.end_seq();
        *self.state.write() = RemoteState { catalog, segments };
        Ok(end)
    }

    /// The log's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// First sequence in Tier 2.
    pub fn first_seq(&self) -> u64 {
        self.state.read().catalog.first_seq()
    }

    /// One past the last sequence in Tier 2 (as of the last refresh).
    pub fn end_seq(&self) -> u64 {
        self.state.read().catalog.end_seq()
    }

    /// Writer epoch of the catalog in use.
    pub fn epoch(&self) -> u64 {
        self.state.read().catalog.epoch
    }

    fn find(&self, seq: u64) -> Result<Arc<Segment>> {
        let state = self.state.read();
        let i = state.segments.partition_point(|s| s.base_seq <= seq);
        i.checked_sub(1)
            .map(|i| state.segments[i].clone())
            .filter(|s| s.end_seq().is_some_and(|end| seq < end))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "log {:?} in {} has no record {seq} (Tier 2 holds {}..{})",
                    self.name,
                    self.tier2.url(),
                    state.catalog.first_seq(),
                    state.catalog.end_seq()
                ))
            })
    }

    /// Read record `seq` (one ranged GET of the frame that holds it, unless cached).
    pub fn read(&self, seq: u64) -> Result<Record> {
        let segment = self.find(seq)?;
        let p = segment.locate(seq)?;
        Ok(segment.read_at(&p.backing, p.offset, seq)?.0)
    }

    /// Iterate from `seq` to the current end; [`RemoteIter::next_timeout`] follows.
    pub fn iter_from(&self, seq: u64) -> RemoteIter<'_> {
        RemoteIter {
            reader: self,
            next_seq: seq,
            position: None,
            failed: false,
        }
    }
}

/// Iterator over a [`RemoteReader`]'s records.
pub struct RemoteIter<'a> {
    reader: &'a RemoteReader,
    next_seq: u64,
    position: Option<(Arc<Segment>, Position)>,
    failed: bool,
}

impl std::fmt::Debug for RemoteIter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteIter")
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl RemoteIter<'_> {
    /// Sequence of the record the next call returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next record if Tier 2 holds it (as of the last refresh).
    pub fn try_next(&mut self) -> Result<Option<Record>> {
        let seq = self.next_seq;
        if seq >= self.reader.end_seq() {
            return Ok(None);
        }
        let stale = match &self.position {
            Some((segment, position)) => {
                seq >= position.limit || segment.end_seq().is_none_or(|end| seq >= end)
            }
            None => true,
        };
        if stale {
            self.position = None;
            let segment = self.reader.find(seq)?;
            let position = segment.locate(seq)?;
            self.position = Some((segment, position));
        }
        let (segment, position) = self.position.as_mut().expect("positioned");
        let (record, next) = segment.read_at(&position.backing, position.offset, seq)?;
        position.offset = next;
        self.next_seq += 1;
        Ok(Some(record))
    }

    /// Follow mode: wait up to `timeout` for the next record, reading the catalog again every
    /// `poll`. `Ok(None)`: nothing new in time.
    pub fn next_timeout(&mut self, timeout: Duration, poll: Duration) -> Result<Option<Record>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.try_next()? {
                return Ok(Some(r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(poll.min(deadline - now));
            self.reader.refresh()?;
        }
    }
}

impl Iterator for RemoteIter<'_> {
    type Item = Result<Record>;

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
