//! Open-time recovery of one log.
//!
//! - Sealed segments are trusted when their header and footer checksums verify against the
//!   manifest (two small reads each: reopen time does not grow with the data they hold). A sealed
//!   segment that fails is moved to `quarantine/`, recorded in the manifest and reported; reads of
//!   its range return `Corruption`. A sealed segment is never unsealed or dropped.
//! - Only unsealed segments (at most the active one and one whose seal was interrupted) are
//!   scanned frame by frame. The scan stops at the first frame that fails its checksum or breaks
//!   sequence continuity, and cuts back a trailing incomplete batch. Nothing after that point is
//!   rewritten: the open's new epoch (`LogOpened`, synced before any frame is written) makes
//!   stale frames there fail the epoch check if they ever line up with new ones.
//! - A segment whose base sequence does not continue the previous one (its predecessor lost an
//!   unsynced tail) was never acknowledged, and is dropped.

pub mod verify;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::aof::Recovered;
use crate::config::{Durability, LogConfig};
use crate::error::{Error, IoContext, Result};
use crate::format::manifest::{Edit, SealedInfo, Tier2Info};
use crate::manifest::index::SegmentIndex;
use crate::manifest::{ManifestLog, SegmentEntry};
use crate::segment::mmap::Mapping;
use crate::segment::{
    self, ActiveSegment, PreparedSegment, Segment, WriteMode, check_sealed, read_footer,
    read_header, scan_frames, segment_file_name,
};
use crate::sys;
use crate::tier1::{tier1_file_name, tier1_tmp_name};
use crate::tier2::{Tier2, Tier2Copy};
use crate::tiering::budget::{Lease, Tier0Budget};
use crate::tiering::{FrameCache, Tier1Segment};

/// What recovery found and did.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Sealed segments trusted after header/footer checks.
    pub sealed_segments: usize,
    /// Segments moved to quarantine, with the reason.
    pub quarantined: Vec<(u64, String)>,
    /// Unsealed segments scanned frame by frame.
    pub scanned_segments: usize,
    /// Torn or garbage tails cut: (segment id, offset where its valid frames end, why).
    pub cut_tails: Vec<(u64, u64, String)>,
    /// Segments whose readable frames end in front of later valid frames of theirs: damage in
    /// the middle of the frames (a zeroed page, flipped bits), not a torn tail. Recovery drops
    /// those frames with the tail (also listed in `cut_tails`); a writable open first copies
    /// the bytes it drops to `quarantine/<log>/`.
    pub damaged_tails: Vec<DamagedTail>,
    /// Frames dropped because their batch was incomplete.
    pub dropped_incomplete_frames: u64,
    /// Segments dropped (never activated, or after a gap).
    pub dropped_segments: usize,
    /// Sealed segments read from their Tier 1 copy (Tier 0 copy evicted).
    pub tier1_segments: usize,
    /// Tier 0 copies given up at open because Tier 1 holds the segment (an interrupted
    /// hydration or a damaged Tier 0 copy), with the reason.
    pub tier0_dropped: Vec<(u64, String)>,
    /// Tier 1 copies given up at open (damaged or missing while Tier 0 still holds the segment;
    /// compressed again), with the reason.
    pub tier1_dropped: Vec<(u64, String)>,
    /// Interrupted compressions whose partial Tier 1 files were removed (they are redone).
    pub compressions_restarted: usize,
    /// Full segments the interrupted run left unsealed, handed to the background sealer instead
    /// of being sealed during the open (`Durability::None` opens only: the open does not wait
    /// for their writeback, and the durable watermark stays below them until they are synced).
    pub seals_resumed: usize,
    /// Segments found sealed on disk but not yet recorded (killed between the footer and the
    /// manifest edit) whose writeback a `Durability::None` open left to the next sync, like
    /// `seals_resumed`: the durable watermark stays below them until then.
    pub seal_syncs_deferred: usize,
    /// How long recovery took.
    pub elapsed: std::time::Duration,
}

/// See [`RecoveryReport::damaged_tails`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedTail {
    pub segment_id: u64,
    /// Where the readable frames end (the log continues from here).
    pub cut_offset: u64,
    /// Why the scan stopped there.
    pub reason: String,
    /// What was found after it.
    pub later: segment::LaterFrames,
    /// Copy of the bytes from `cut_offset` to the end of the last frame found (writable opens).
    pub saved_to: Option<PathBuf>,
}

impl std::fmt::Display for DamagedTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} is damaged at offset {} ({}): {} later frames (seq {}..={}, from offset \
             {}) were dropped with it",
            self.segment_id,
            self.cut_offset,
            self.reason,
            self.later.frames,
            self.later.first_seq,
            self.later.last_seq,
            self.later.first_offset
        )?;
        if let Some(path) = &self.saved_to {
            write!(f, "; the dropped bytes are kept in {}", path.display())?;
        }
        Ok(())
    }
}

pub(crate) fn log_dirs(root: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = root.join("logs").join(name);
    (dir.join("manifest"), dir.join("segments"))
}

/// Whether log `name` exists in `root`: it has a manifest, or segment or Tier 1 files (a log
/// whose manifest is gone, which opening reports as corruption). A crash during a log's first open can leave
/// its directories without either; nothing was ever appended there, and a writable open creates
/// the log afresh.
pub(crate) fn log_exists(root: &Path, name: &str) -> bool {
    let (manifest_dir, segment_dir) = log_dirs(root, name);
    ManifestLog::exists(&manifest_dir) || has_segment_files(&segment_dir)
}

/// Whether the log holds data files: segment files, or Tier 1 files (a log whose every sealed
/// segment left Tier 0).
fn has_segment_files(segment_dir: &Path) -> bool {
    let holds = |dir: &Path, suffix: &str| {
        std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(suffix)))
        })
    };
    holds(segment_dir, ".seg") || holds(&segment_dir.with_file_name("tier1"), ".t1")
}

fn manifest_missing(manifest_dir: &Path) -> Error {
    Error::corruption(
        manifest_dir.display().to_string(),
        "log has segment or Tier 1 files but no manifest",
    )
}

struct Unsealed {
    id: u64,
    path: PathBuf,
    file: File,
    header: crate::format::segment::SegmentHeader,
    scan: segment::ScanResult,
}

/// Open (or create) a log and recover it to a consistent state.
///
/// With `read_only`, nothing on disk changes: the log must exist, no epoch is started, torn tails
/// and interrupted seals are only noted, a damaged sealed segment is quarantined in memory only,
/// and the handle refuses appends.
pub(crate) fn recover_log(
    root: &Path,
    name: &str,
    config: &LogConfig,
    read_only: bool,
    budget: &Arc<Tier0Budget>,
    frame_cache: &Arc<FrameCache>,
    tier2: Option<&Arc<Tier2>>,
) -> Result<(Recovered, RecoveryReport)> {
    let (manifest_dir, segment_dir) = log_dirs(root, name);
    let started = std::time::Instant::now();
    let report = RecoveryReport::default();
    if read_only {
        if !ManifestLog::exists(&manifest_dir) {
            if has_segment_files(&segment_dir) {
                return Err(manifest_missing(&manifest_dir));
            }
            return Err(Error::NotFound(format!("log {name:?}")));
        }
        let manifest = ManifestLog::open_read_only(&manifest_dir)?;
        return recover_segments(
            root,
            name,
            config,
            manifest,
            segment_dir,
            true,
            started,
            report,
            budget,
            frame_cache,
            tier2,
        );
    }
    let existing = if ManifestLog::exists(&manifest_dir) {
        match ManifestLog::open(&manifest_dir) {
            Ok(m) => Some(m),
            Err(Error::NotFound(_)) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let manifest = if let Some(m) = existing {
        m
    } else {
        if has_segment_files(&segment_dir) {
            return Err(manifest_missing(&manifest_dir));
        }
        std::fs::create_dir_all(&segment_dir)
            .context(|| format!("create {}", segment_dir.display()))?;
        sys::sync_dir(&root.join("logs"))?;
        ManifestLog::create(
            &manifest_dir,
            Edit::LogCreated {
                log_id: sys::random_u128(),
                created_ms: sys::now_ms(),
                name: name.to_string(),
            },
        )?
    };
    std::fs::create_dir_all(&segment_dir)
        .context(|| format!("create {}", segment_dir.display()))?;
    // Files an earlier run kept to reuse (it stopped before deleting them): nothing refers to
    // them.
    for k in 0..crate::limits::RECYCLED_SEGMENTS_KEPT {
        remove_if_present(&segment_dir.join(segment::recycled_file_name(k)))?;
    }
    recover_segments(
        root,
        name,
        config,
        manifest,
        segment_dir,
        false,
        started,
        report,
        budget,
        frame_cache,
        tier2,
    )
}

#[allow(clippy::too_many_arguments)]
fn recover_segments(
    root: &Path,
    name: &str,
    config: &LogConfig,
    mut manifest: ManifestLog,
    segment_dir: PathBuf,
    read_only: bool,
    started: std::time::Instant,
    mut report: RecoveryReport,
    budget: &Arc<Tier0Budget>,
    frame_cache: &Arc<FrameCache>,
    tier2: Option<&Arc<Tier2>>,
) -> Result<(Recovered, RecoveryReport)> {
    let manifest_dir = segment_dir.with_file_name("manifest");
    let tier1_dir = segment_dir.with_file_name("tier1");
    let log_id = manifest.state().log_id;
    // What the Tier 0 budget counts for a segment file. A read-only handle can evict nothing (that
    // takes manifest edits), so counting its files would only hold room that writers of other
    // logs can never get back: they stay on disk either way.
    let tier0_lease = |bytes: u64| budget.force(if read_only { 0 } else { bytes });
    // A new epoch for every writable open: frames of older epochs found after frames of this one
    // are stale leftovers, so a torn tail never has to be zeroed.
    let epoch = manifest.state().epoch.checked_add(1).ok_or_else(|| {
        Error::corruption(manifest_dir.display().to_string(), "open epoch exhausted")
    })?;
    // Checked before anything is written: a refused open leaves another log's manifest as it was.
    if manifest.state().name != name {
        return Err(Error::corruption(
            manifest_dir.display().to_string(),
            format!("manifest belongs to log {:?}", manifest.state().name),
        ));
    }
    manifest.append(Edit::LogOpened { epoch })?;
    let log_name: Arc<str> = Arc::from(name);
    let entries: Vec<(u64, SegmentEntry)> = manifest
        .state()
        .segments
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();

    let mut index = SegmentIndex::default();
    // The log starts where retention (or a restore) left it; with no segment left, that is also
    // where it continues.
    let mut next_seq = manifest.state().retired_below;
    // Timestamps never decrease within a log: a new active segment continues from the newest
    // record of any segment (or of those retired), not from the clock alone (which may have
    // been stepped back).
    let mut last_timestamp_ms = manifest.state().retired_last_timestamp_ms;
    let mut unsealed: Vec<Unsealed> = Vec::new();
    // A `None` open's segment found sealed on disk but not yet synced: its first record, and
    // its file for the group commits (see below).
    let mut sealed_unsynced: Option<u64> = None;
    let mut unsynced_files: Vec<Arc<File>> = Vec::new();
    let mut gap = false;
    let mut blank: Vec<(u64, u64)> = Vec::new();
    // Checking every frame of the unsealed segments is most of an open after a buffered writer
    // outran its sealer: do it on every core up front; the walk below takes each result whose
    // file it finds unchanged.
    let unsealed_ids: Vec<u64> = entries
        .iter()
        .filter(|(_, e)| e.sealed.is_none())
        .map(|(id, _)| *id)
        .collect();
    let mut prescanned = prescan(&segment_dir, &unsealed_ids);
    for (id, entry) in entries {
        let path = segment_dir.join(segment_file_name(id));
        if let Some(info) = entry.sealed {
            if gap || !unsealed.is_empty() {
                return Err(Error::corruption(
                    path.display().to_string(),
                    "sealed segment follows an unsealed or lost one",
                ));
            }
            if next_seq != info.base_seq {
                return Err(Error::corruption(
                    path.display().to_string(),
                    format!(
                        "sealed segment starts at seq {} but the log continues at {}",
                        info.base_seq, next_seq
                    ),
                ));
            }
            next_seq = info.base_seq + info.record_count;
            last_timestamp_ms = last_timestamp_ms.max(info.last_timestamp_ms);
            if let Some(reason) = entry.quarantined {
                index.insert(Arc::new(Segment::quarantined(
                    log_name.clone(),
                    id,
                    path,
                    info.base_seq,
                    info.base_seq + info.record_count,
                    reason,
                )));
                continue;
            }
            if entry.compressing && entry.tier1.is_none() && !read_only {
                undo_compression(&mut manifest, &tier1_dir, id, &mut report)?;
            } else if entry.tier1.is_none() && !read_only {
                // Leftovers of a Tier 1 release (recorded, then a crash before the unlink) or of
                // an unfinished fetch from Tier 2.
                for file in [tier1_tmp_name(id), tier1_file_name(id)] {
                    remove_if_present(&tier1_dir.join(file))?;
                }
            }
            // The Tier 2 copy (opened lazily, on the first read that needs it).
            let tier2_copy = match (entry.tier2, tier2) {
                (Some(info), Some(t2)) => Some(Arc::new(Tier2Copy::new(
                    t2.clone(),
                    name,
                    log_id,
                    info,
                    frame_cache.clone(),
                ))),
                _ => None,
            };
            let attach = |segment: &Segment| {
                if let Some(copy) = &tier2_copy {
                    segment.set_tier2(copy.clone());
                }
            };
            let tier1 = match entry.tier1 {
                Some(t1) => match Tier1Segment::open(
                    tier1_dir.join(tier1_file_name(id)),
                    t1,
                    frame_cache.clone(),
                ) {
                    Ok(opened) => Some(Arc::new(opened)),
                    // Only damage (or a missing file) gives a copy up; anything else (too many
                    // open files, an I/O error) fails the open and changes nothing.
                    Err(e)
                        if e.kind() != crate::ErrorKind::Corruption
                            && e.kind() != crate::ErrorKind::NotFound =>
                    {
                        return Err(e);
                    }
                    Err(e) if entry.in_tier0 => {
                        // The Tier 0 copy is still there: give up the damaged Tier 1 copy (moved
                        // to quarantine, reported) and compress again.
                        tracing::error!(log = name, segment = id, error = %e, "Tier 1 copy is unusable; reading from Tier 0");
                        if !read_only {
                            quarantine_file(root, name, &tier1_dir.join(tier1_file_name(id)))?;
                        }
                        manifest.append(Edit::Tier1Dropped { segment_id: id })?;
                        report.tier1_dropped.push((id, e.to_string()));
                        None
                    }
                    Err(e) if tier2_copy.is_some() => {
                        // Tier 2 holds the segment: release the unusable local copy.
                        tracing::error!(log = name, segment = id, error = %e, "Tier 1 copy is unusable; reading from Tier 2");
                        if !read_only {
                            quarantine_file(root, name, &tier1_dir.join(tier1_file_name(id)))?;
                            manifest.append(Edit::Tier1Evicted { segment_id: id })?;
                        }
                        report.tier1_dropped.push((id, e.to_string()));
                        None
                    }
                    Err(e) if entry.tier2.is_some() => {
                        // Tier 2 holds the segment, but this open has no store to read it from:
                        // change nothing (quarantining it would cut off a good copy for good).
                        return Err(Error::InvalidConfig(format!(
                            "log {name:?}: segment {id}'s local copy is unusable ({e}) and only \
                             Tier 2 holds it; open the root with its Tier 2 store configured \
                             (--tier2 URL)"
                        )));
                    }
                    Err(e) => {
                        let reason = format!("Tier 1 copy unusable and no Tier 0 copy: {e}");
                        tracing::error!(log = name, segment = id, %reason, "quarantining segment");
                        if !read_only {
                            quarantine_file(root, name, &tier1_dir.join(tier1_file_name(id)))?;
                        }
                        index.insert(quarantine_segment(
                            &mut manifest,
                            &mut report,
                            &log_name,
                            id,
                            path,
                            &info,
                            reason,
                        )?);
                        continue;
                    }
                },
                None => None,
            };
            if !entry.in_tier0 && tier1.is_none() {
                // Only Tier 2 holds the segment.
                let Some(copy) = tier2_copy.clone() else {
                    return Err(Error::InvalidConfig(format!(
                        "log {name:?}: segment {id} is only in Tier 2; open the root with its \
                         Tier 2 store configured (--tier2 URL)"
                    )));
                };
                if !read_only {
                    // Leftover of a Tier 0 eviction (recorded, then a crash before the unlink).
                    remove_if_present(&path)?;
                }
                let meta = tier2_sealed_meta(&copy.info, &info, log_id)
                    .map_err(|detail| Error::corruption(copy.key.clone(), detail))?;
                report.sealed_segments += 1;
                let segment = Segment::sealed(log_name.clone(), id, path, meta, None);
                segment.set_tier2(copy);
                index.insert(Arc::new(segment));
                continue;
            }
            if !entry.in_tier0 {
                let t1 = tier1.expect("Tier 1 copy checked above");
                // A crash between the eviction edit and the unlink leaves the file behind.
                if !read_only {
                    remove_if_present(&path)?;
                    // And an interrupted hydration leaves its temporary file.
                    let mut tmp = path.clone().into_os_string();
                    tmp.push(".tmp");
                    remove_if_present(Path::new(&tmp))?;
                }
                let meta = match tier1_sealed_meta(&t1, &info) {
                    Ok(meta) => meta,
                    Err(e) => {
                        let reason = e.to_string();
                        index.insert(quarantine_segment(
                            &mut manifest,
                            &mut report,
                            &log_name,
                            id,
                            path,
                            &info,
                            reason,
                        )?);
                        continue;
                    }
                };
                report.sealed_segments += 1;
                report.tier1_segments += 1;
                let segment = Segment::sealed(log_name.clone(), id, path, meta, None);
                segment.set_tier1(t1);
                attach(&segment);
                index.insert(Arc::new(segment));
                continue;
            }
            match check_sealed(&path, info.footer_crc, info.file_len) {
                Ok(meta) => {
                    report.sealed_segments += 1;
                    let lease = tier0_lease(meta.file_len);
                    let segment = Segment::sealed(log_name.clone(), id, path, meta, Some(lease));
                    if let Some(t1) = tier1 {
                        segment.set_tier1(t1);
                    }
                    attach(&segment);
                    index.insert(Arc::new(segment));
                }
                Err(e)
                    if tier1.is_some()
                        && (e.kind() == crate::ErrorKind::Corruption
                            || e.kind() == crate::ErrorKind::NotFound) =>
                {
                    // Tier 1 holds the segment: an interrupted hydration (the rebuilt file is a
                    // cache and is not synced) or a damaged Tier 0 copy. Read from Tier 1.
                    let reason = e.to_string();
                    tracing::warn!(log = name, segment = id, %reason, "dropping the Tier 0 copy; Tier 1 holds the segment");
                    let t1 = tier1.expect("checked");
                    let meta = match tier1_sealed_meta(&t1, &info) {
                        Ok(meta) => meta,
                        Err(t1_error) => {
                            // Neither copy can be trusted: quarantine (never a failed open).
                            let reason = format!("{reason}; Tier 1 copy: {t1_error}");
                            tracing::error!(log = name, segment = id, %reason, "quarantining segment");
                            if !read_only {
                                quarantine_file(root, name, &path)?;
                            }
                            index.insert(quarantine_segment(
                                &mut manifest,
                                &mut report,
                                &log_name,
                                id,
                                path,
                                &info,
                                reason,
                            )?);
                            continue;
                        }
                    };
                    if !read_only {
                        manifest.append(Edit::Tier0Evicted { segment_id: id })?;
                        remove_if_present(&path)?;
                    }
                    report.tier0_dropped.push((id, reason));
                    report.sealed_segments += 1;
                    report.tier1_segments += 1;
                    let segment = Segment::sealed(log_name.clone(), id, path, meta, None);
                    segment.set_tier1(t1);
                    attach(&segment);
                    index.insert(Arc::new(segment));
                }
                Err(e)
                    if (e.kind() == crate::ErrorKind::Corruption
                        || e.kind() == crate::ErrorKind::NotFound)
                        && let Some(copy) = tier2_copy.clone()
                        && let Ok(meta) = tier2_sealed_meta(&copy.info, &info, log_id) =>
                {
                    // Tier 2 holds the segment (its Tier 1 copy was released): read from there.
                    let reason = e.to_string();
                    tracing::warn!(log = name, segment = id, %reason, "dropping the Tier 0 copy; Tier 2 holds the segment");
                    if !read_only {
                        manifest.append(Edit::Tier0Evicted { segment_id: id })?;
                        remove_if_present(&path)?;
                    }
                    report.tier0_dropped.push((id, reason));
                    report.sealed_segments += 1;
                    let segment = Segment::sealed(log_name.clone(), id, path, meta, None);
                    segment.set_tier2(copy);
                    index.insert(Arc::new(segment));
                }
                Err(e)
                    if e.kind() == crate::ErrorKind::Corruption
                        || e.kind() == crate::ErrorKind::NotFound =>
                {
                    let reason = e.to_string();
                    tracing::error!(log = name, segment = id, %reason, "quarantining sealed segment");
                    if !read_only {
                        quarantine_file(root, name, &path)?;
                    }
                    index.insert(quarantine_segment(
                        &mut manifest,
                        &mut report,
                        &log_name,
                        id,
                        path,
                        &info,
                        reason,
                    )?);
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        // Unsealed: prepared (blank), active, or interrupted while sealing (a `None` log with
        // Tier 1 seals by compressing: an interrupted compression leaves files to remove).
        if entry.compressing && !read_only {
            undo_compression(&mut manifest, &tier1_dir, id, &mut report)?;
        }
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                drop_segment(&mut manifest, &path, id, &mut report, read_only)?;
                continue;
            }
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        let read = match read_header(&file, &path) {
            Ok(read) => read,
            // A torn header with nothing after it: `kill -9` landed while the segment was being
            // activated (the header is copied into the mapping, and a copy is not atomic). No
            // frame was written, so nothing was acknowledged, and no later segment can have been
            // activated (a segment rolls only with frames in it): treat it as blank.
            Err(e) if e.kind() == crate::ErrorKind::Corruption && !first_frame_written(&file) => {
                report.cut_tails.push((
                    id,
                    0,
                    format!("torn header of a segment being activated: {e}"),
                ));
                None
            }
            Err(e) => return Err(e),
        };
        let header = match read {
            Some(h) if !gap => h,
            None if !gap && first_frame_written(&file) => {
                return Err(Error::corruption(
                    format!("{} offset 0", path.display()),
                    "segment header is blank but frames follow it",
                ));
            }
            None if !gap
                && file.metadata().is_ok_and(|m| m.len() == entry.capacity)
                && (read_only || entry.capacity == config.segment_bytes) =>
            {
                // Prepared but never activated: reuse it instead of preparing another. (A
                // read-only open uses nothing and drops nothing, whatever its configured segment
                // size: it must not report the writer's prepared segments as dropped.)
                blank.push((id, entry.capacity));
                continue;
            }
            _ => {
                drop(file);
                drop_segment(&mut manifest, &path, id, &mut report, read_only)?;
                continue;
            }
        };
        if header.segment_id != id || header.log_id != log_id {
            return Err(Error::corruption(
                format!("{} offset 0", path.display()),
                "segment header belongs to another segment or log",
            ));
        }
        let expected = unsealed
            .last()
            .map(|u| u.header.base_seq + u.scan.record_count)
            .unwrap_or(next_seq);
        if expected != header.base_seq {
            // The predecessor lost an unsynced tail: nothing from here on was acknowledged.
            gap = true;
            drop(file);
            drop_segment(&mut manifest, &path, id, &mut report, read_only)?;
            continue;
        }
        // Interrupted after the footer was written but before the manifest edit?
        let len = file
            .metadata()
            .context(|| format!("stat {}", path.display()))?
            .len();
        // (Only right after sealed segments: seals are recorded in segment order.)
        if len < header.capacity
            && unsealed.is_empty()
            && let Ok(footer) = read_footer(&file, &path, len)
            && footer.log_id == log_id
            && footer.segment_id == id
            && footer.base_seq == header.base_seq
            && let Ok(meta) = check_sealed_meta(&path, len)
        {
            // The footer and the truncation, and for a `None` log (which seals without syncing
            // while it compresses) the frames too, may be only in the page cache. `Always` and
            // `Interval` opens sync the file before the watermark covers it; a `None` open, like
            // its resumed seals, does not wait for that writeback: the durable watermark stays
            // below the segment until a group commit syncs the file.
            if config.durability == Durability::None {
                if !read_only {
                    sealed_unsynced.get_or_insert(header.base_seq);
                    report.seal_syncs_deferred += 1;
                    unsynced_files.push(Arc::new(
                        file.try_clone()
                            .context(|| format!("reopen {}", path.display()))?,
                    ));
                }
            } else if !read_only {
                sys::retry_transient(|| file.sync_all())
                    .context(|| format!("fsync {}", path.display()))?;
            }
            manifest.append(Edit::SegmentSealed(sealed_info(id, &meta)))?;
            next_seq = header.base_seq + footer.record_count;
            last_timestamp_ms = last_timestamp_ms.max(footer.last_timestamp_ms);
            report.sealed_segments += 1;
            let lease = tier0_lease(meta.file_len);
            index.insert(Arc::new(Segment::sealed(
                log_name.clone(),
                id,
                path,
                meta,
                Some(lease),
            )));
            continue;
        }
        let mut scan = match prescanned.remove(&id) {
            Some(p) if p.len == len && p.base_seq == header.base_seq => p.scan,
            _ => {
                let mapping = Mapping::map_read(&file, &path, len)
                    .context(|| format!("mmap {}", path.display()))?;
                scan_frames(mapping.tail(0), header.base_seq, len)
            }
        };
        report.scanned_segments += 1;
        if header.recycled && scan.dropped_incomplete_batch == 0 {
            // Whatever follows the frames is most likely left over from the file's earlier
            // segment, not a torn write: the end is the same, but it is not worth a report.
            scan.stop = None;
        }
        if let Some(stop) = &scan.stop {
            tracing::warn!(log = name, segment = id, offset = scan.records_end, %stop, "cutting torn tail");
        }
        last_timestamp_ms = last_timestamp_ms.max(scan.last_timestamp_ms);
        unsealed.push(Unsealed {
            id,
            path,
            file,
            header,
            scan,
        });
    }

    // Every unsealed segment but the last was interrupted while sealing: seal it now, or, for a
    // `None` log (whose frames nobody was promised were on disk), let the background sealer do it
    // as if they had just rolled, so the open does not wait for their writeback (a buffered writer
    // that outran its sealer leaves many).
    let defer_syncs = !read_only && config.durability == Durability::None;
    let mut durable_seq = sealed_unsynced;
    let mut deferred = Vec::new();
    let tail = unsealed.pop();
    let save_in = (!read_only).then(|| root.join("quarantine").join(name));
    for u in unsealed {
        note_tail(&u, &mut report, name, save_in.as_deref())?;
        let lease = tier0_lease(u.header.capacity);
        let active = u.into_active(
            &log_name,
            epoch,
            WriteMode::for_durability(config.durability),
            lease,
        )?;
        if read_only {
            index.insert(active.roll().segment);
            continue;
        }
        if defer_syncs {
            let rolled = active.roll();
            durable_seq.get_or_insert(rolled.segment.base_seq);
            index.insert(rolled.segment.clone());
            deferred.push(rolled);
            report.seals_resumed += 1;
            continue;
        }
        let rolled = active.roll();
        let file = rolled.open_for_seal()?;
        let (segment, meta) = rolled.seal(&file, sys::now_ms(), true)?;
        manifest.append(Edit::SegmentSealed(sealed_info(segment.id, &meta)))?;
        index.insert(segment);
    }
    let active = match tail {
        Some(u) if read_only => {
            note_tail(&u, &mut report, name, None)?;
            let lease = tier0_lease(u.header.capacity);
            Some(u.into_active(&log_name, epoch, WriteMode::Syscall, lease)?)
        }
        None if read_only => None,
        Some(u) => {
            note_tail(&u, &mut report, name, save_in.as_deref())?;
            reset_tail_length(&u)?;
            let path = u.path.clone();
            let lease = tier0_lease(u.header.capacity);
            let active = u.into_active(
                &log_name,
                epoch,
                WriteMode::for_durability(config.durability),
                lease,
            )?;
            // Recovered frames may only be in the page cache (the writer was killed): make them
            // durable before anyone is told they are. (Cheap after a clean close: then the
            // watermark is exact, `next_seq`, unless full segments were left for the sealer.)
            // Before pre-faulting: for a writable mapping that dirties the whole free tail.
            sys::retry_transient(|| active.file.sync_data())
                .context(|| format!("fdatasync {}", path.display()))?;
            active.prefault();
            Some(active)
        }
        None => {
            let mode = WriteMode::for_durability(config.durability);
            let prepared = if blank.is_empty() {
                let id = manifest.state().next_segment_id;
                manifest.append(Edit::SegmentPrepared {
                    segment_id: id,
                    capacity: config.segment_bytes,
                })?;
                // Not zero-filled: opening a new log must be quick; later segments are.
                PreparedSegment::create(&segment_dir, id, config.segment_bytes, mode, false)?
            } else {
                let (id, capacity) = blank.remove(0);
                PreparedSegment::reopen_blank(&segment_dir, id, capacity, mode, false)?
            };
            let id = prepared.id;
            let active = prepared
                .with_lease(tier0_lease(config.segment_bytes))
                .activate(log_name.clone(), log_id, next_seq, sys::now_ms(), epoch);
            // Make the header durable so the next open finds the segment active.
            sys::retry_transient(|| active.file.sync_data())
                .context(|| format!("fdatasync segment {id} of {name}"))?;
            Some(active)
        }
    };
    if let Some(active) = &active {
        index.insert(active.segment.clone());
        next_seq = active.next_seq;
    }
    Ok((
        Recovered {
            name: log_name,
            log_id,
            segment_dir,
            manifest,
            index,
            active,
            next_seq,
            read_only,
            blank_segments: blank,
            unsealed: deferred,
            unsynced_files,
            durable_seq: durable_seq.unwrap_or(next_seq),
            last_timestamp_ms,
        },
        RecoveryReport {
            elapsed: started.elapsed(),
            ..report
        },
    ))
}

/// A frame scan done ahead of the recovery walk, for a file of `len` bytes whose header says
/// `base_seq`.
struct Prescan {
    len: u64,
    base_seq: u64,
    scan: segment::ScanResult,
}

/// Scan the frames of segments `ids` in `dir` on up to `available_parallelism` threads. Only
/// reads; a segment that cannot be read or has no header is left to the walk.
fn prescan(dir: &Path, ids: &[u64]) -> std::collections::HashMap<u64, Prescan> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(ids.len());
    if threads < 2 {
        return Default::default();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let scan_one = |id: u64| -> Option<Prescan> {
        let path = dir.join(segment_file_name(id));
        let file = File::open(&path).ok()?;
        let header = read_header(&file, &path).ok()??;
        let len = file.metadata().ok()?.len();
        let mapping = Mapping::map_read(&file, &path, len).ok()?;
        mapping.prefault_read();
        Some(Prescan {
            len,
            base_seq: header.base_seq,
            scan: scan_frames(mapping.tail(0), header.base_seq, len),
        })
    };
    std::thread::scope(|scope| {
        // The last one with a header (later ones were prepared, never activated) is probably the
        // active segment, which the walk syncs: start its writeback now, while the others are
        // scanned (a sync is never wrong, only sometimes early).
        scope.spawn(move || {
            for &id in ids.iter().rev() {
                let path = dir.join(segment_file_name(id));
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                if let Ok(Some(_)) = read_header(&file, &path) {
                    let _ = file.sync_data();
                    return;
                }
            }
        });
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else {
                            return done;
                        };
                        if let Some(p) = scan_one(id) {
                            done.push((id, p));
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a frame scan does not panic"))
            .collect()
    })
}

impl Unsealed {
    fn into_active(
        self,
        log_name: &Arc<str>,
        epoch: u32,
        mode: WriteMode,
        lease: Lease,
    ) -> Result<ActiveSegment> {
        ActiveSegment::reopen(
            log_name.clone(),
            self.path,
            self.file,
            &self.header,
            &self.scan,
            epoch,
            mode,
            Some(lease),
        )
    }
}

fn sealed_info(id: u64, meta: &segment::SealedMeta) -> SealedInfo {
    SealedInfo {
        segment_id: id,
        base_seq: meta.footer.base_seq,
        record_count: meta.footer.record_count,
        file_len: meta.file_len,
        first_timestamp_ms: meta.footer.first_timestamp_ms,
        last_timestamp_ms: meta.footer.last_timestamp_ms,
        footer_crc: meta.footer_crc,
    }
}

/// A segment whose footer was written but whose `SegmentSealed` edit was lost (a crash in
/// between): rare, so it is checked in full before it is trusted.
fn check_sealed_meta(path: &Path, len: u64) -> Result<segment::SealedMeta> {
    let file = File::open(path).context(|| format!("open {}", path.display()))?;
    let mut raw = [0u8; crate::limits::SEGMENT_FOOTER_BYTES as usize];
    std::os::unix::fs::FileExt::read_exact_at(
        &file,
        &mut raw,
        len - crate::limits::SEGMENT_FOOTER_BYTES,
    )
    .context(|| format!("read {}", path.display()))?;
    let crc = crate::format::segment::SegmentFooter::stored_crc(&raw);
    let meta = check_sealed(path, crc, len)?;
    segment::verify_sealed(path, &meta)?;
    Ok(meta)
}

/// Record where (and why) a segment's valid frames end. Nothing is zeroed: frames written from
/// now on carry a newer epoch, so the stale bytes beyond them can never pass as records.
///
/// Valid frames past the cut mean damage, not a torn tail: reported loudly, and with `save_in`
/// (a writable open, before anything overwrites them) the dropped bytes are copied there first.
fn note_tail(
    u: &Unsealed,
    report: &mut RecoveryReport,
    log: &str,
    save_in: Option<&Path>,
) -> Result<()> {
    report.dropped_incomplete_frames += u.scan.dropped_incomplete_batch;
    let reason = u.scan.stop.clone().unwrap_or_else(|| {
        format!(
            "zeros at offset {} in front of later frames",
            u.scan.records_end
        )
    });
    if u.scan.stop.is_some() || u.scan.later.is_some() {
        report
            .cut_tails
            .push((u.id, u.scan.records_end, reason.clone()));
    }
    let Some(later) = &u.scan.later else {
        return Ok(());
    };
    let mut damaged = DamagedTail {
        segment_id: u.id,
        cut_offset: u.scan.records_end,
        reason,
        later: later.clone(),
        saved_to: None,
    };
    if let Some(dir) = save_in {
        let start = u.scan.records_end;
        let mut bytes = vec![0u8; (later.end_offset - start) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&u.file, &mut bytes, start)
            .context(|| format!("read {}", u.path.display()))?;
        std::fs::create_dir_all(dir).context(|| format!("create {}", dir.display()))?;
        // Named by what it holds: an open that finds the same damage again (nothing was appended
        // over it since) keeps the copy it already has.
        let target = dir.join(format!(
            "{}.damaged-tail-{start}-seq-{}-{}",
            segment_file_name(u.id),
            later.first_seq,
            later.last_seq
        ));
        if !target.exists() {
            sys::write_atomic(&target, &bytes)?;
        }
        damaged.saved_to = Some(target);
    }
    tracing::error!(log, "{damaged}");
    report.damaged_tails.push(damaged);
    Ok(())
}

/// A tail segment shortened by damage gets its preallocated length back (the new bytes read as
/// zeros), so appends can continue into it.
fn reset_tail_length(u: &Unsealed) -> Result<()> {
    let len = u
        .file
        .metadata()
        .context(|| format!("stat {}", u.path.display()))?
        .len();
    if len < u.header.capacity {
        u.file
            .set_len(u.header.capacity)
            .context(|| format!("extend {}", u.path.display()))?;
    }
    Ok(())
}

fn drop_segment(
    manifest: &mut ManifestLog,
    path: &Path,
    id: u64,
    report: &mut RecoveryReport,
    read_only: bool,
) -> Result<()> {
    if read_only {
        manifest.append(Edit::SegmentDropped { segment_id: id })?;
        report.dropped_segments += 1;
        return Ok(());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove {}", path.display()), e)),
    }
    if let Some(dir) = path.parent() {
        sys::sync_dir(dir)?;
    }
    manifest.append(Edit::SegmentDropped { segment_id: id })?;
    report.dropped_segments += 1;
    Ok(())
}

fn quarantine_file(root: &Path, name: &str, path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let qdir = root.join("quarantine").join(name);
    std::fs::create_dir_all(&qdir).context(|| format!("create {}", qdir.display()))?;
    let target = qdir.join(path.file_name().expect("segment file name"));
    std::fs::rename(path, &target)
        .context(|| format!("move {} to {}", path.display(), target.display()))?;
    sys::sync_dir(&qdir)?;
    if let Some(dir) = path.parent() {
        sys::sync_dir(dir)?;
    }
    Ok(())
}

/// Whether bytes follow the (blank) header where the first frame would be. A prepared segment
/// that was never activated is all zeros; a zeroed header in front of frames is damage.
fn first_frame_written(file: &File) -> bool {
    let mut buf = [0u8; crate::limits::FRAME_HEADER_BYTES as usize];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, crate::limits::SEGMENT_HEADER_BYTES)
        .is_ok_and(|()| buf.iter().any(|&b| b != 0))
}

/// The sealed-segment metadata of a segment held only in Tier 1, from the copy of its footer
/// stored there (checked against the manifest).
fn tier1_sealed_meta(t1: &Tier1Segment, info: &SealedInfo) -> Result<segment::SealedMeta> {
    let footer = *t1.file().segment_footer();
    let crc = crate::format::segment::SegmentFooter::stored_crc(&footer.encode());
    if crc != info.footer_crc
        || footer.base_seq != info.base_seq
        || footer.file_len() != info.file_len
    {
        return Err(Error::corruption(
            t1.path().display().to_string(),
            "segment footer copy disagrees with the manifest",
        ));
    }
    Ok(segment::SealedMeta {
        footer,
        footer_crc: crc,
        file_len: info.file_len,
    })
}

/// The sealed-segment metadata of a segment held only in Tier 2, from the footer copy the
/// manifest keeps with the upload.
pub(crate) fn tier2_sealed_meta(
    t2: &Tier2Info,
    info: &SealedInfo,
    log_id: u128,
) -> std::result::Result<segment::SealedMeta, String> {
    let footer = crate::format::segment::SegmentFooter::decode(&t2.segment_footer)
        .map_err(|e| format!("segment footer copy: {e}"))?;
    let crc = crate::format::segment::SegmentFooter::stored_crc(&t2.segment_footer);
    if crc != info.footer_crc
        || footer.base_seq != info.base_seq
        || footer.file_len() != info.file_len
    {
        return Err("segment footer copy disagrees with the manifest".into());
    }
    if footer.log_id != log_id {
        return Err(format!(
            "segment footer copy belongs to log {:032x}, not this log ({log_id:032x})",
            footer.log_id
        ));
    }
    Ok(segment::SealedMeta {
        footer,
        footer_crc: crc,
        file_len: info.file_len,
    })
}

/// An interrupted compression: remove what it left and record that it did not finish (so
/// nothing waits for it, retention included); the coordinator compresses again.
fn undo_compression(
    manifest: &mut ManifestLog,
    tier1_dir: &Path,
    id: u64,
    report: &mut RecoveryReport,
) -> Result<()> {
    for file in [tier1_tmp_name(id), tier1_file_name(id)] {
        remove_if_present(&tier1_dir.join(file))?;
    }
    manifest.append(Edit::CompressFailed {
        segment_id: id,
        reason: "interrupted by a crash".into(),
    })?;
    report.compressions_restarted += 1;
    Ok(())
}

/// Record that sealed segment `id` is quarantined (manifest edit, report) and return the index
/// entry that makes reads of its range return `Corruption`.
fn quarantine_segment(
    manifest: &mut ManifestLog,
    report: &mut RecoveryReport,
    log_name: &Arc<str>,
    id: u64,
    path: PathBuf,
    info: &SealedInfo,
    reason: String,
) -> Result<Arc<Segment>> {
    manifest.append(Edit::SegmentQuarantined {
        segment_id: id,
        reason: reason.clone(),
    })?;
    report.quarantined.push((id, reason.clone()));
    Ok(Arc::new(Segment::quarantined(
        log_name.clone(),
        id,
        path,
        info.base_seq,
        info.base_seq + info.record_count,
        reason,
    )))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::Tier1Info;
    use crate::format::segment::SegmentFooter;

    /// A Tier 2 footer copy is accepted only for the log it names.
    #[test]
    fn tier2_footer_copy_of_another_log_is_refused() {
        let footer = SegmentFooter {
            index_entries: 1,
            log_id: 0xaaaa,
            segment_id: 3,
            base_seq: 1000,
            record_count: 50,
            records_end: 128 + 9000,
            first_timestamp_ms: 1,
            last_timestamp_ms: 2,
            sealed_ms: 3,
            index_crc: 4,
        };
        let encoded = footer.encode();
        let t2 = Tier2Info {
            tier1: Tier1Info {
                segment_id: 3,
                file_len: 4242,
                footer_crc: 5,
                frames: 2,
                uncompressed_bytes: 9000,
                level: 3,
            },
            object_crc: 6,
            segment_footer: encoded,
        };
        let info = SealedInfo {
            segment_id: 3,
            base_seq: 1000,
            record_count: 50,
            file_len: footer.file_len(),
            first_timestamp_ms: 1,
            last_timestamp_ms: 2,
            footer_crc: SegmentFooter::stored_crc(&encoded),
        };
        let meta = tier2_sealed_meta(&t2, &info, 0xaaaa).expect("its own log");
        assert_eq!(meta.footer.log_id, 0xaaaa);
        let err = tier2_sealed_meta(&t2, &info, 0xbbbb).unwrap_err();
        assert!(err.contains("belongs to log"), "{err}");
    }
}
