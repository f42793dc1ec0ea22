//! The TieredCoordinator: moves sealed segments from Tier 0 (segment files, memory-mapped) to
//! Tier 1 (zstd-compressed files of independently decodable frames), evicts Tier 0 copies under
//! the global budget, and hydrates Tier 1 segments that are read repeatedly.
//!
//! - Compression runs on a bounded pool of `compress_threads` workers; nothing on the append
//!   path waits for it. Every transition is a manifest edit written before its effect
//!   (`CompressStarted` before the file exists, `CompressDone` once it is durable,
//!   `Tier0Evicted` before the segment file is deleted, `Hydrated` once it is rebuilt), so
//!   recovery can finish or undo any of them (see `recovery`).
//! - Compression doubles as a scrub: every record checksum of the segment is verified before its
//!   bytes are compressed, so a damaged segment never gets a clean-looking Tier 1 copy.
//! - The zstd level adapts (see [`Compression`]): it drops when segments queue up, when the
//!   workers are busy for most of the time between arrivals, when Tier 0 fills, or when
//!   compression takes more than a fifth of the machine's CPU time (appends need it); it climbs
//!   while they idle.
//! - Eviction picks least-recently-read sealed segments that have a Tier 1 copy and that no
//!   reader holds; it runs on demand (a new segment needs room) and ahead of demand above
//!   [`limits::EVICT_AHEAD_PRESSURE`].
//! - The Tier 1 budget ([`budget::Tier1Budget`]) is reserved before a Tier 1 file is written
//!   (a compression reserves [`tier1::max_tier1_file_len`], a fetch the file's size) and
//!   settled to the file's size once it is installed, so compressions and fetches running at
//!   once never count the same free room. Without room (after evicting local copies Tier 2
//!   holds) nothing waits: the compression is retried later and its segment stays in Tier 0.

pub mod budget;
mod upload;

pub(crate) use upload::BACKGROUND_NICE;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::aof::LogShared;
use crate::config::{Compression, ManagerConfig};
use crate::error::{Error, Result, Tier};
use crate::format::manifest::{Edit, Tier1Info};
use crate::limits;
use crate::segment::{self, EvictOutcome, RolledSegment, Segment};
use crate::tier1::{self, Tier1File};
use crate::tier2::Tier2;
use budget::{Lease, Tier0Budget, Tier1Budget, Tier1Reservation};

/// The Tier 1 copy of one segment, with per-frame single-flight decompression.
#[derive(Debug)]
pub struct Tier1Segment {
    file: Tier1File,
    path: PathBuf,
    info: Tier1Info,
    /// (base seq, record count) of every frame.
    ranges: Vec<(u64, u64)>,
    /// One slot per frame: concurrent readers of a frame wait on its own lock while one of them
    /// decompresses it, then share the result (no global lock, no lost wake-up).
    slots: Vec<Mutex<Option<Weak<Vec<u8>>>>>,
    /// Recently decompressed frames of every Tier 1 segment (shared, bounded).
    cache: Arc<FrameCache>,
    /// Frames decompressed since the last hydration attempt.
    frame_loads: AtomicU64,
    hydrating: AtomicBool,
    /// Frame a reader moved to last (Tier 2 copies: sequential readers get frames ahead).
    last_frame: std::sync::atomic::AtomicUsize,
    /// Frames being fetched ahead. Those fetched are kept alive by [`FrameCache`], not here.
    fetching: Mutex<Vec<usize>>,
    /// Names this segment among the frames fetched ahead in [`FrameCache`].
    id: u64,
}

/// Frames a sequential reader of a Tier 2 copy has fetched ahead of it (each a ranged GET in
/// flight at the same time: one GET stream is slower than decompressing and reading).
const READ_AHEAD_FRAMES: usize = 3;
/// Frames fetched ahead and not yet reached that a manager (or a remote reader) keeps, across
/// all its segments: as many as four sequential readers fetch. Kept per segment instead, each
/// segment a scan stopped in, or left before the last fetch came back, held its frames for as
/// long as the log stayed open, so memory grew with the data read (up to three frames of 256
/// KiB to 8 MiB per segment) outside any budget. Past this many the oldest go first; a reader
/// arriving at a frame that went fetches it itself.
const READ_AHEAD_KEPT: usize = 4 * READ_AHEAD_FRAMES;

static NEXT_TIER1_SEGMENT: AtomicU64 = AtomicU64::new(0);

impl Tier1Segment {
    /// Open a Tier 1 file recorded in the manifest (header, footer and frame index are checked).
    pub fn open(path: PathBuf, info: Tier1Info, cache: Arc<FrameCache>) -> Result<Self> {
        let file = Tier1File::open(&path, info.footer_crc, info.file_len)?;
        Ok(Self::from_file(file, path, info, cache))
    }

    /// Open the copy of a Tier 1 file in Tier 2 (`name` names it in errors).
    pub(crate) fn open_remote(
        remote: Arc<dyn tier1::RangeRead>,
        name: PathBuf,
        info: Tier1Info,
        cache: Arc<FrameCache>,
    ) -> Result<Self> {
        let file = Tier1File::open_remote(remote, &name, info.footer_crc, info.file_len)?;
        Ok(Self::from_file(file, name, info, cache))
    }

    fn from_file(file: Tier1File, path: PathBuf, info: Tier1Info, cache: Arc<FrameCache>) -> Self {
        let ranges: Vec<(u64, u64)> = file
            .frames()
            .iter()
            .map(|f| (f.base_seq, f.record_count as u64))
            .collect();
        let slots = (0..ranges.len()).map(|_| Mutex::new(None)).collect();
        Tier1Segment {
            file,
            path,
            info,
            ranges,
            slots,
            cache,
            frame_loads: AtomicU64::new(0),
            hydrating: AtomicBool::new(false),
            // No frame yet: the first read (often a random one) fetches nothing ahead.
            last_frame: std::sync::atomic::AtomicUsize::new(usize::MAX - 1),
            fetching: Mutex::new(Vec::new()),
            id: NEXT_TIER1_SEGMENT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A reader moved to frame `i`. If it came from frame `i - 1` of a copy in Tier 2 (a scan),
    /// fetch the next [`READ_AHEAD_FRAMES`] frames in the background, so their requests overlap
    /// this frame's reading (a reader arriving at a frame being fetched waits on that frame's
    /// slot and shares the result). Random reads fetch nothing extra. Frames fetched ahead wait
    /// in the [`FrameCache`] (at most [`READ_AHEAD_KEPT`]) until a reader passes them.
    pub(crate) fn read_ahead(self: &Arc<Self>, i: usize) {
        let previous = self.last_frame.swap(i, Ordering::SeqCst);
        if !self.file.is_remote() || previous.wrapping_add(1) != i {
            return;
        }
        self.cache.passed(self.id, i);
        let mut fetching = self.fetching.lock();
        let last = (i + READ_AHEAD_FRAMES).min(self.slots.len().saturating_sub(1));
        for next in i + 1..=last {
            // Being fetched (its slot is locked meanwhile) or still held by someone.
            let loaded = fetching.contains(&next)
                || self.slots[next]
                    .try_lock()
                    .is_none_or(|slot| slot.as_ref().and_then(Weak::upgrade).is_some());
            if loaded {
                continue;
            }
            fetching.push(next);
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name("aof2-read-ahead".into())
                .spawn(move || {
                    let fetched = me.frame(next);
                    me.fetching.lock().retain(|f| *f != next);
                    match fetched {
                        // Not kept once a reader moved past it meanwhile (checked under the
                        // cache's lock, which `passed` takes after the reader's move).
                        Ok(bytes) => me.cache.keep_ahead(me.id, next, bytes, || {
                            me.last_frame.load(Ordering::SeqCst) < next
                        }),
                        Err(e) => {
                            tracing::debug!(frame = next, error = %e, "read-ahead from Tier 2 failed")
                        }
                    }
                });
            if spawned.is_err() {
                fetching.retain(|f| *f != next);
            }
        }
    }

    /// Frames of this segment some reader, cache or read-ahead still holds in memory.
    #[cfg(test)]
    pub(crate) fn frames_in_memory(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| slot.lock().as_ref().and_then(Weak::upgrade).is_some())
            .count()
    }

    /// Whether no frame of this segment is being fetched ahead.
    #[cfg(test)]
    pub(crate) fn read_ahead_idle(&self) -> bool {
        self.fetching.lock().is_empty()
    }

    pub fn info(&self) -> &Tier1Info {
        &self.info
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn file(&self) -> &Tier1File {
        &self.file
    }

    /// The frame holding `seq`: (index, base seq, record count).
    pub fn frame_for_seq(&self, seq: u64) -> Option<(usize, u64, u64)> {
        let i = self.ranges.partition_point(|&(base, _)| base <= seq);
        let (base, count) = *self.ranges.get(i.checked_sub(1)?)?;
        (seq < base + count).then_some((i - 1, base, count))
    }

    /// Decompressed bytes of frame `i` (record frames exactly as in the segment file).
    pub fn frame(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let slot = self
            .slots
            .get(i)
            .ok_or_else(|| Error::corruption(self.path.display().to_string(), "no such frame"))?;
        let mut slot = slot.lock();
        if let Some(bytes) = slot.as_ref().and_then(Weak::upgrade) {
            return Ok(bytes);
        }
        let bytes = Arc::new(self.file.read_frame(i)?);
        *slot = Some(Arc::downgrade(&bytes));
        drop(slot);
        self.cache.keep(bytes.clone());
        // Decompressions count toward hydration: that is the work Tier 0 would save.
        self.frame_loads.fetch_add(1, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Whether this segment has been decompressed often enough to be worth rebuilding in
    /// Tier 0; true at most once until [`Tier1Segment::hydration_done`].
    fn wants_hydration(&self, after_passes: u64) -> bool {
        let loads = self.frame_loads.load(Ordering::Relaxed);
        after_passes > 0
            && loads >= after_passes * self.ranges.len().max(1) as u64
            && !self.hydrating.swap(true, Ordering::AcqRel)
    }

    fn hydration_done(&self) {
        self.frame_loads.store(0, Ordering::Relaxed);
        self.hydrating.store(false, Ordering::Release);
    }
}

/// The last few decompressed Tier 1 frames of a manager, kept alive so that point reads of
/// neighbouring records do not decompress the same frame again. Bounded in entries, so its
/// memory is at most `FRAME_CACHE_ENTRIES` frames.
/// It also keeps the frames fetched ahead of sequential readers of Tier 2 copies, bounded by
/// [`READ_AHEAD_KEPT`] across all segments.
#[derive(Debug, Default)]
pub struct FrameCache {
    frames: Mutex<VecDeque<Arc<Vec<u8>>>>,
    /// Frames fetched ahead and not yet passed by a reader, oldest first.
    ahead: Mutex<VecDeque<AheadFrame>>,
}

/// A frame fetched ahead: (segment id, frame, bytes).
type AheadFrame = (u64, usize, Arc<Vec<u8>>);

impl FrameCache {
    fn keep(&self, frame: Arc<Vec<u8>>) {
        let mut frames = self.frames.lock();
        if frames.len() >= limits::FRAME_CACHE_ENTRIES {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    /// Keep frame `frame` of segment `segment`, fetched ahead, if `still_ahead` (checked under
    /// the lock [`FrameCache::passed`] takes).
    fn keep_ahead(
        &self,
        segment: u64,
        frame: usize,
        bytes: Arc<Vec<u8>>,
        still_ahead: impl FnOnce() -> bool,
    ) {
        let mut ahead = self.ahead.lock();
        if !still_ahead() {
            return;
        }
        if ahead.len() >= READ_AHEAD_KEPT {
            ahead.pop_front();
        }
        ahead.push_back((segment, frame, bytes));
    }

    /// A reader of `segment` reached `frame`: the frames fetched ahead up to it are read.
    fn passed(&self, segment: u64, frame: usize) {
        self.ahead
            .lock()
            .retain(|(s, f, _)| *s != segment || *f > frame);
    }
}

/// Manager-wide tiering statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierStats {
    /// Tier 0 bytes held now (segment files of every log).
    pub tier0_used_bytes: u64,
    /// Tier 0 budget.
    pub tier0_max_bytes: u64,
    /// Highest Tier 0 use seen.
    pub tier0_peak_bytes: u64,
    /// used ÷ budget.
    pub memory_pressure: f64,
    /// Bytes of Tier 1 files (of the logs open for writing).
    pub tier1_used_bytes: u64,
    /// Tier 1 room reserved for files being written (compressions, fetches from Tier 2,
    /// restores): each takes an upper bound of its file's size before it starts and settles to
    /// the real size once the file is written.
    pub tier1_reserved_bytes: u64,
    /// Highest `tier1_used_bytes + tier1_reserved_bytes` seen: stays within `tier1_max_bytes`
    /// unless logs opened with more Tier 1 files than the budget had room for.
    pub tier1_peak_bytes: u64,
    /// Tier 1 budget.
    pub tier1_max_bytes: u64,
    /// Whether compression is stopped because Tier 1 is full.
    pub tier1_full: bool,
    /// zstd level the next compression uses.
    pub compression_level: i32,
    /// Segments waiting for compression.
    pub compress_backlog: u64,
    /// Segments compressed since open.
    pub segments_compressed: u64,
    /// Compressions that failed.
    pub compress_failures: u64,
    /// Uncompressed bytes compressed since open.
    pub compress_in_bytes: u64,
    /// Compressed bytes written since open.
    pub compress_out_bytes: u64,
    /// Time spent compressing (encoding and writing), seconds.
    pub compress_seconds: f64,
    /// Tier 0 copies evicted since open.
    pub evictions: u64,
    /// Bytes of budget released by eviction.
    pub evicted_bytes: u64,
    /// Segments hydrated back into Tier 0.
    pub hydrations: u64,
    /// Appends refused with `Backpressure` after the admission timeout.
    pub admission_timeouts: u64,
    /// Tier 2 figures, when Tier 2 is configured.
    pub tier2: Option<crate::tier2::Tier2Stats>,
}

impl TierStats {
    /// Uncompressed ÷ compressed bytes of what was compressed since open (0 if nothing was).
    pub fn compression_ratio(&self) -> f64 {
        if self.compress_out_bytes == 0 {
            0.0
        } else {
            self.compress_in_bytes as f64 / self.compress_out_bytes as f64
        }
    }

    /// Compression throughput, uncompressed MB/s of worker time.
    pub fn compress_mb_per_sec(&self) -> f64 {
        if self.compress_seconds == 0.0 {
            0.0
        } else {
            self.compress_in_bytes as f64 / 1e6 / self.compress_seconds
        }
    }
}

/// What [`Tiering::compress_while_sealing`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SealOutcome {
    /// Sealed (recorded) and in Tier 1.
    Compressed,
    /// The seal is recorded but the Tier 1 copy is not: the caller must sync the segment.
    SealedNotCompressed,
    /// Nothing recorded: the caller seals the usual way (sync, then record).
    NotCompressed,
}

enum Task {
    Compress(Weak<LogShared>, Arc<Segment>),
    /// Seal (by compressing) a rolled segment of a `None` log: runs even if the log closed.
    Seal(Arc<LogShared>, RolledSegment),
    Hydrate(Weak<LogShared>, Arc<Segment>),
    /// Download a segment read repeatedly from Tier 2 back into Tier 1.
    Fetch(Weak<LogShared>, Arc<Segment>),
}

#[derive(Default)]
struct Counters {
    segments_compressed: AtomicU64,
    compress_failures: AtomicU64,
    compress_in_bytes: AtomicU64,
    compress_out_bytes: AtomicU64,
    compress_ns: AtomicU64,
    evictions: AtomicU64,
    evicted_bytes: AtomicU64,
    hydrations: AtomicU64,
    admission_timeouts: AtomicU64,
    tier1_evictions: AtomicU64,
    tier2_fetches: AtomicU64,
}

struct Queue {
    tasks: VecDeque<Task>,
    /// Compressions that could not run (Tier 1 full, I/O error): retried later.
    parked: Vec<(Instant, Task)>,
    compress_queued: u64,
    /// Logs (by address) with a seal running: their next seal waits.
    sealing: std::collections::HashSet<usize>,
    stopped: bool,
}

fn log_key(log: &Arc<LogShared>) -> usize {
    Arc::as_ptr(log) as usize
}

/// Tiering state of one manager: the Tier 0 budget and the coordinator's workers.
pub(crate) struct Tiering {
    pub(crate) budget: Arc<Tier0Budget>,
    pub(crate) frame_cache: Arc<FrameCache>,
    compression: Compression,
    frame_bytes: usize,
    /// Tier 1 files of the logs open for writing, and reservations of files being written.
    pub(crate) tier1: Arc<Tier1Budget>,
    pub(crate) admission_timeout: Duration,
    queue: Mutex<Queue>,
    ready: Condvar,
    logs: Mutex<Vec<Weak<LogShared>>>,
    level: AtomicI32,
    tier1_full: AtomicBool,
    /// EWMAs, ns per MiB of segment bytes: between compression tasks arriving (the inverse of
    /// the ingest rate), and of compressing them at the level used.
    ingest_ns_per_mib: AtomicU64,
    compress_ns_per_mib: AtomicU64,
    /// The latest ingest sample: a burst of writes counts at once, a lull only through the EWMA.
    last_ingest_ns_per_mib: AtomicU64,
    /// CPUs of the machine.
    cpus: usize,
    last_arrival: Mutex<Option<Instant>>,
    evicting: Mutex<()>,
    /// Bumped (and notified) whenever a compression or seal task finishes.
    progress: Mutex<u64>,
    progressed: Condvar,
    counters: Counters,
    /// `ManagerConfig::tier1_enabled`.
    enabled: bool,
    /// `ManagerConfig::hydrate_after_passes`.
    hydrate_after: u64,
    workers: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Tier 2, when configured: uploads run on their own threads.
    pub(crate) tier2: Option<Arc<Tier2>>,
    /// The root's identity (Tier 2 writer claims name it).
    pub(crate) root_id: u128,
    uploads: Mutex<upload::Uploads>,
    upload_ready: Condvar,
    upload_threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Tiering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiering").finish_non_exhaustive()
    }
}

/// How long a parked compression waits before it is retried.
const RETRY_PARKED: Duration = Duration::from_secs(1);

impl Tiering {
    pub(crate) fn start(
        config: &ManagerConfig,
        root_id: u128,
        tier2: Option<Arc<Tier2>>,
    ) -> Arc<Self> {
        let (min, max) = config.compression.bounds();
        let start_level = match config.compression {
            Compression::Fixed(level) => level,
            // zstd level 1: ~3.5x the speed of the default level 3 on log-like data, for a
            // ratio within 1 % of level 9 on the benchmark's payloads; the level climbs from
            // here only while the machine has CPU time to spare.
            Compression::Adaptive { .. } => limits::ADAPTIVE_START_ZSTD_LEVEL.clamp(min, max),
        };
        let t = Arc::new(Tiering {
            budget: Tier0Budget::new(config.tier0_max_bytes),
            frame_cache: Arc::new(FrameCache::default()),
            compression: config.compression,
            frame_bytes: config.tier1_frame_bytes,
            tier1: Tier1Budget::new(config.tier1_max_bytes),
            admission_timeout: config.admission_timeout,
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                parked: Vec::new(),
                compress_queued: 0,
                sealing: std::collections::HashSet::new(),
                stopped: false,
            }),
            ready: Condvar::new(),
            logs: Mutex::new(Vec::new()),
            level: AtomicI32::new(start_level),
            tier1_full: AtomicBool::new(false),
            ingest_ns_per_mib: AtomicU64::new(0),
            compress_ns_per_mib: AtomicU64::new(0),
            last_ingest_ns_per_mib: AtomicU64::new(0),
            cpus: std::thread::available_parallelism().map_or(2, |n| n.get()),
            last_arrival: Mutex::new(None),
            evicting: Mutex::new(()),
            progress: Mutex::new(0),
            progressed: Condvar::new(),
            counters: Counters::default(),
            workers: config.compress_threads,
            enabled: config.tier1_enabled,
            hydrate_after: config.hydrate_after_passes,
            threads: Mutex::new(Vec::new()),
            tier2: tier2.clone(),
            root_id,
            uploads: Mutex::new(upload::Uploads::default()),
            upload_ready: Condvar::new(),
            upload_threads: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        for i in 0..config.compress_threads {
            let me = t.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("aof2-tier-{i}"))
                    .spawn(move || me.worker())
                    .expect("spawn aof2 tiering thread"),
            );
        }
        *t.threads.lock() = threads;
        if let Some(tier2) = tier2 {
            let mut uploaders = Vec::new();
            for i in 0..tier2.config().upload_concurrency {
                let me = t.clone();
                let tier2 = tier2.clone();
                uploaders.push(
                    std::thread::Builder::new()
                        .name(format!("aof2-upload-{i}"))
                        .spawn(move || me.upload_worker(tier2))
                        .expect("spawn aof2 upload thread"),
                );
            }
            *t.upload_threads.lock() = uploaders;
        }
        t
    }

    /// Stop the workers after the task in hand (queued work resumes at the next open: the
    /// manifest remembers what is pending).
    pub(crate) fn shutdown(&self) {
        if let Some(tier2) = &self.tier2 {
            tier2.stop();
        }
        self.queue.lock().stopped = true;
        self.ready.notify_all();
        let threads: Vec<JoinHandle<()>> = self.threads.lock().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
        self.uploads.lock().stopped = true;
        self.upload_ready.notify_all();
        let uploaders: Vec<JoinHandle<()>> = self.upload_threads.lock().drain(..).collect();
        for t in uploaders {
            let _ = t.join();
        }
    }

    /// Start tiering a log opened for writing: queue every sealed Tier 0 segment that has no
    /// Tier 1 copy yet (pending work from an earlier run included).
    pub(crate) fn register(&self, log: &Arc<LogShared>) {
        self.logs.lock().push(Arc::downgrade(log));
        if log.is_read_only() {
            // Read-only handles neither compress nor count toward the Tier 1 budget.
            return;
        }
        // Pending work from the manifest: compressions of sealed segments no colder tier holds,
        // uploads of Tier 1 copies Tier 2 does not hold yet.
        let segments: Vec<Arc<Segment>> = log.segments.read().iter().cloned().collect();
        log.tier1_counted.store(true, Ordering::Release);
        for segment in segments {
            if let Some(t1) = segment.tier1() {
                // On disk already: counted even beyond the budget (evicted below if Tier 2
                // holds copies).
                self.tier1.force(t1.info().file_len);
            }
            if segment.sealed_meta().is_none() || segment.quarantine_reason().is_some() {
                continue;
            }
            if !segment.has_cold_copy() && segment.in_tier0() {
                self.submit_compress(log, segment);
            } else if segment.tier1().is_some() && segment.tier2().is_none() {
                self.submit_upload(log, segment);
            }
        }
        self.submit_sweep(log);
        self.evict_ahead();
        self.evict_tier1_ahead();
    }

    /// Whether rolled segments of `None` logs are sealed by compressing them (see
    /// [`Tiering::compress_while_sealing`]).
    pub(crate) fn seals_by_compressing(&self) -> bool {
        self.enabled
    }

    /// A segment of `bytes` arrived for compression: the time since the previous one is what
    /// the logs took to write it.
    fn note_arrival(&self, bytes: u64) {
        let now = Instant::now();
        if let Some(prev) = self.last_arrival.lock().replace(now) {
            let sample = per_mib((now - prev).as_nanos() as u64, bytes);
            self.last_ingest_ns_per_mib.store(sample, Ordering::Relaxed);
            ewma(&self.ingest_ns_per_mib, sample);
        }
    }

    /// Queue a rolled segment of a `None` log: sealed by compressing it on the worker pool.
    pub(crate) fn submit_seal(&self, log: Arc<LogShared>, rolled: RolledSegment) {
        self.note_arrival(rolled.records_end);
        let mut q = self.queue.lock();
        q.compress_queued += 1;
        q.tasks.push_back(Task::Seal(log, rolled));
        drop(q);
        self.ready.notify_one();
    }

    /// Queue a sealed segment for compression.
    pub(crate) fn submit_compress(&self, log: &Arc<LogShared>, segment: Arc<Segment>) {
        if !self.enabled {
            return;
        }
        self.note_arrival(segment.records_end());
        let mut q = self.queue.lock();
        q.compress_queued += 1;
        q.tasks
            .push_back(Task::Compress(Arc::downgrade(log), segment));
        drop(q);
        self.ready.notify_one();
    }

    /// A reader decompressed a frame of `segment`: hydrate it if it is read repeatedly.
    pub(crate) fn note_tier1_read(&self, log: &Arc<LogShared>, segment: &Arc<Segment>) {
        if log.is_read_only() {
            // Hydration writes files: never for a read-only handle.
            return;
        }
        if let Some(t1) = segment.tier1() {
            if t1.wants_hydration(self.hydrate_after) {
                self.queue
                    .lock()
                    .tasks
                    .push_back(Task::Hydrate(Arc::downgrade(log), segment.clone()));
                self.ready.notify_one();
            }
        } else if let Some(remote) = segment.tier2().and_then(|c| c.opened())
            && remote.wants_hydration(self.hydrate_after)
        {
            // Read often from Tier 2: bring the Tier 1 copy back (then Tier 0, if it stays hot).
            self.queue
                .lock()
                .tasks
                .push_back(Task::Fetch(Arc::downgrade(log), segment.clone()));
            self.ready.notify_one();
        }
    }

    /// Count an append refused after the admission timeout; the error names the tier that is
    /// out of room.
    pub(crate) fn admission_error(&self, log: &str) -> Error {
        self.counters
            .admission_timeouts
            .fetch_add(1, Ordering::Relaxed);
        if self.tier1_full.load(Ordering::Acquire)
            && let Some(tier2) = &self.tier2
        {
            let state = tier2.breaker_state();
            Error::Backpressure {
                tier: if state == crate::tier2::breaker::BreakerState::Closed {
                    Tier::Tier1
                } else {
                    Tier::Tier2
                },
                detail: format!(
                    "log {log:?}: Tier 1 is full ({} of {} bytes) and its segments wait for \
                     their upload to {} (circuit breaker {}, {} uploads pending{}); nothing was \
                     written",
                    self.tier1.held(),
                    self.tier1.max(),
                    tier2.url(),
                    state.as_str(),
                    self.upload_backlog(),
                    tier2
                        .problem()
                        .map_or(String::new(), |(_, detail)| format!("; {detail}"))
                ),
            }
        } else if self.tier1_full.load(Ordering::Acquire) {
            Error::Backpressure {
                tier: Tier::Tier1,
                detail: format!(
                    "log {log:?}: Tier 1 is full ({} of {} bytes) and there is no Tier 2 to \
                     move segments to, so Tier 0 cannot release memory; nothing was written",
                    self.tier1.held(),
                    self.tier1.max()
                ),
            }
        } else {
            Error::Backpressure {
                tier: Tier::Tier0,
                detail: format!(
                    "log {log:?}: no Tier 0 room for a new segment within {:?} ({}); nothing \
                     was written",
                    self.admission_timeout,
                    self.tier0_holders()
                ),
            }
        }
    }

    /// What holds the Tier 0 budget, in words: which of it eviction cannot release, and why.
    fn tier0_holders(&self) -> String {
        let (mut active, mut unsealed, mut cold_less) = (0u64, 0u64, 0u64);
        let (mut pinned, mut evictable) = (0u64, 0u64);
        let mut writers = 0;
        for log in self.live_logs() {
            if log.is_read_only() {
                continue;
            }
            writers += 1;
            for segment in log.segments.read().iter() {
                let (bytes, reader) = segment.tier0_held();
                if segment.end_seq().is_none() {
                    active += bytes;
                } else if segment.sealed_meta().is_none() {
                    unsealed += bytes;
                } else if !segment.has_cold_copy() {
                    cold_less += bytes;
                } else if reader {
                    pinned += bytes;
                } else {
                    evictable += bytes;
                }
            }
        }
        let used = self.budget.used();
        let mut words = format!(
            "{used} of {} bytes in use: {active} by the active segments of {writers} {} open \
             for writing",
            self.budget.max(),
            if writers == 1 { "log" } else { "logs" }
        );
        if unsealed > 0 {
            words += &format!(", {unsealed} by full segments being sealed");
        }
        if cold_less > 0 {
            words += &format!(
                ", {cold_less} by sealed segments without a Tier 1 copy ({} waiting for \
                 compression{})",
                self.queue.lock().compress_queued,
                if self.enabled {
                    ""
                } else {
                    "; compression into Tier 1 is off, so they can never leave Tier 0"
                }
            );
        }
        if pinned > 0 {
            words += &format!(
                ", {pinned} by segments that readers hold (a `Record` or `Reader` still alive \
                 keeps its segment in memory)"
            );
        }
        if evictable > 0 {
            words += &format!(", {evictable} by segments eviction can release");
        }
        let rest = used.saturating_sub(active + unsealed + cold_less + pinned + evictable);
        if rest > 0 {
            words += &format!(", {rest} by prepared segments and segments being evicted");
        }
        words
    }

    /// Wait up to `wait` for `bytes` of Tier 0 for the next segment of `log`, evicting what can
    /// be evicted and, if that is not enough, taking back segments other logs prepared ahead:
    /// a log that went idle would otherwise keep them for as long as it stays open, and a busy
    /// log could never get room (with the defaults, five logs that were once busy held 15 of
    /// the 16 segments of the budget).
    pub(crate) fn acquire_tier0(
        &self,
        log: &LogShared,
        bytes: u64,
        wait: Duration,
    ) -> Option<Lease> {
        self.budget
            .acquire_until(bytes, Instant::now() + wait, |missing| {
                let mut freed = self.evict(missing);
                for other in self.live_logs() {
                    if freed >= missing {
                        break;
                    }
                    if !std::ptr::eq(Arc::as_ptr(&other), log) && !other.is_read_only() {
                        freed += other.release_prepared(missing - freed);
                    }
                }
            })
    }

    pub(crate) fn stats(&self) -> TierStats {
        let c = &self.counters;
        // Each lock is taken and released on its own (never one inside another).
        let compress_backlog = self.queue.lock().compress_queued;
        let upload_backlog = self.upload_backlog();
        TierStats {
            tier0_used_bytes: self.budget.used(),
            tier0_max_bytes: self.budget.max(),
            tier0_peak_bytes: self.budget.peak(),
            memory_pressure: self.budget.pressure(),
            tier1_used_bytes: self.tier1.used(),
            tier1_reserved_bytes: self.tier1.reserved(),
            tier1_peak_bytes: self.tier1.peak(),
            tier1_max_bytes: self.tier1.max(),
            tier1_full: self.tier1_full.load(Ordering::Relaxed),
            compression_level: self.level.load(Ordering::Relaxed),
            compress_backlog,
            segments_compressed: c.segments_compressed.load(Ordering::Relaxed),
            compress_failures: c.compress_failures.load(Ordering::Relaxed),
            compress_in_bytes: c.compress_in_bytes.load(Ordering::Relaxed),
            compress_out_bytes: c.compress_out_bytes.load(Ordering::Relaxed),
            compress_seconds: c.compress_ns.load(Ordering::Relaxed) as f64 / 1e9,
            evictions: c.evictions.load(Ordering::Relaxed),
            evicted_bytes: c.evicted_bytes.load(Ordering::Relaxed),
            hydrations: c.hydrations.load(Ordering::Relaxed),
            admission_timeouts: c.admission_timeouts.load(Ordering::Relaxed),
            tier2: self.tier2.as_ref().map(|t| {
                t.stats(
                    upload_backlog,
                    c.tier1_evictions.load(Ordering::Relaxed),
                    c.tier2_fetches.load(Ordering::Relaxed),
                )
            }),
        }
    }

    // ------------------------------------------------------------------ workers

    fn next_task(&self) -> Option<Task> {
        let mut q = self.queue.lock();
        loop {
            // Seals must finish (a closing log waits for them) even after `stop`; everything
            // else resumes at the next open from what the manifest says.
            if q.stopped && !q.tasks.iter().any(|t| matches!(t, Task::Seal(..))) {
                return None;
            }
            let now = Instant::now();
            let Queue { parked, tasks, .. } = &mut *q;
            unpark(parked, tasks, now);
            // One seal per log at a time, oldest first: recovery requires a log's seals to be
            // recorded in segment order (a sealed segment never follows an unsealed one).
            let runnable = q.tasks.iter().position(|t| match t {
                Task::Seal(log, _) => !q.sealing.contains(&log_key(log)),
                _ => !q.stopped,
            });
            if let Some(i) = runnable {
                let task = q.tasks.remove(i).expect("position is in range");
                if let Task::Seal(log, _) = &task {
                    q.sealing.insert(log_key(log));
                }
                return Some(task);
            }
            self.ready.wait_for(&mut q, RETRY_PARKED);
        }
    }

    fn worker(self: Arc<Self>) {
        let mut compressor = match zstd::bulk::Compressor::new(3) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot create a zstd context; Tier 1 is disabled");
                return;
            }
        };
        while let Some(task) = self.next_task() {
            match task {
                Task::Compress(log, segment) => {
                    let outcome = match log.upgrade() {
                        Some(log) => match log.enter_background() {
                            Some(_running) if !log.is_closed() => {
                                self.compress(&log, &segment, &mut compressor)
                            }
                            _ => Ok(true),
                        },
                        None => Ok(true),
                    };
                    let mut q = self.queue.lock();
                    match outcome {
                        Ok(_) => q.compress_queued -= 1,
                        Err(_) => q
                            .parked
                            .push((Instant::now() + RETRY_PARKED, Task::Compress(log, segment))),
                    }
                    drop(q);
                    self.note_progress();
                    self.evict_ahead();
                }
                Task::Seal(log, rolled) => {
                    log.seal_segment(rolled, Some(&mut compressor));
                    let mut q = self.queue.lock();
                    q.compress_queued -= 1;
                    q.sealing.remove(&log_key(&log));
                    drop(q);
                    // A later seal of this log may be waiting for this one.
                    self.ready.notify_all();
                    self.note_progress();
                    self.evict_ahead();
                }
                Task::Hydrate(log, segment) => {
                    if let Some(log) = log.upgrade()
                        && !log.is_closed()
                        && let Some(_running) = log.enter_background()
                    {
                        self.hydrate(&log, &segment);
                    }
                    if let Some(t1) = segment.tier1() {
                        t1.hydration_done();
                    }
                }
                Task::Fetch(log, segment) => {
                    if let Some(log) = log.upgrade()
                        && !log.is_closed()
                        && let Some(_running) = log.enter_background()
                    {
                        self.fetch(&log, &segment);
                    }
                    if let Some(remote) = segment.tier2().and_then(|c| c.opened()) {
                        remote.hydration_done();
                    }
                }
            }
        }
    }

    /// Reserve `bytes` of Tier 1 for a file about to be written, evicting local copies that
    /// Tier 2 holds if that makes room; flags (and logs once) Tier 1 as full when it cannot.
    /// Nothing waits here: a compression without room is retried later and its segment stays
    /// in Tier 0 meanwhile; a fetch leaves reads on Tier 2.
    fn reserve_tier1(&self, bytes: u64) -> Option<Tier1Reservation> {
        let reserved = self.tier1.try_reserve(bytes).or_else(|| {
            // Only copies confirmed in Tier 2 can leave Tier 1, and never for a file that
            // cannot fit even in an empty Tier 1 (evicting would buy nothing).
            if self.tier2.is_none() || bytes > self.tier1.max() {
                return None;
            }
            let missing = self.tier1.missing(bytes);
            (missing > 0 && self.evict_tier1(missing) > 0)
                .then(|| self.tier1.try_reserve(bytes))
                .flatten()
        });
        match reserved {
            Some(reservation) => {
                self.tier1_full.store(false, Ordering::Release);
                Some(reservation)
            }
            None => {
                // Appends will see backpressure once Tier 0 fills.
                if !self.tier1_full.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        used = self.tier1.used(),
                        reserved = self.tier1.reserved(),
                        wanted = bytes,
                        max = self.tier1.max(),
                        "Tier 1 is full; compression paused"
                    );
                }
                None
            }
        }
    }

    /// What a compression of `meta` reserves: the most its Tier 1 file can take.
    fn compress_reservation(&self, meta: &segment::SealedMeta) -> u64 {
        tier1::max_tier1_file_len(meta, self.frame_bytes)
    }

    /// Compress one sealed segment into Tier 1. `Ok(false)`: nothing to do; `Err`: retry later.
    fn compress(
        &self,
        log: &LogShared,
        segment: &Arc<Segment>,
        compressor: &mut zstd::bulk::Compressor<'static>,
    ) -> std::result::Result<bool, ()> {
        let Some(meta) = segment.sealed_meta() else {
            return Ok(false);
        };
        if segment.has_cold_copy() || segment.quarantine_reason().is_some() || !segment.in_tier0() {
            // Already done (Tier 1 or Tier 2 holds it), damaged, or retired meanwhile.
            return Ok(false);
        }
        let Some(reservation) = self.reserve_tier1(self.compress_reservation(&meta)) else {
            return Err(());
        };
        match self.compress_core(log, segment, &meta, compressor, reservation, &mut || Ok(())) {
            Ok(_) => Ok(true),
            // A damaged segment stays in Tier 0 (never evicted); `verify` reports it.
            Err(e) if e.kind() == crate::ErrorKind::Corruption => Ok(false),
            Err(_) => Err(()),
        }
    }

    /// Seal a rolled segment of a `Durability::None` log by compressing it: the Tier 1 copy,
    /// synced, is what makes the segment durable, so its uncompressed bytes never have to be
    /// written to the disk (they are dropped with the file when it is evicted). `seal_edit`
    /// records the seal between the Tier 1 file becoming durable and `CompressDone`.
    pub(crate) fn compress_while_sealing(
        &self,
        log: &LogShared,
        segment: &Arc<Segment>,
        meta: &segment::SealedMeta,
        compressor: &mut zstd::bulk::Compressor<'static>,
        seal_edit: &Edit,
    ) -> SealOutcome {
        if !self.enabled {
            return SealOutcome::NotCompressed;
        }
        let Some(reservation) = self.reserve_tier1(self.compress_reservation(meta)) else {
            return SealOutcome::NotCompressed;
        };
        let mut sealed = false;
        let result = self.compress_core(log, segment, meta, compressor, reservation, &mut || {
            log.manifest.lock().append(seal_edit.clone())?;
            sealed = true;
            Ok(())
        });
        match (result, sealed) {
            (Ok(_), _) => SealOutcome::Compressed,
            (Err(_), true) => SealOutcome::SealedNotCompressed,
            (Err(_), false) => SealOutcome::NotCompressed,
        }
    }

    /// `CompressStarted`, write and sync the Tier 1 file, `before_done`, `CompressDone`. On
    /// failure the partial files are removed and `CompressFailed` is recorded. `reservation`
    /// (room for the largest file the segment can make) settles to the file's size at
    /// `CompressDone`, and is given back whole on failure.
    fn compress_core(
        &self,
        log: &LogShared,
        segment: &Arc<Segment>,
        meta: &segment::SealedMeta,
        compressor: &mut zstd::bulk::Compressor<'static>,
        reservation: Tier1Reservation,
        before_done: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Tier1Info> {
        let mapping = segment.tier0_mapping()?.ok_or_else(|| {
            Error::corruption(
                segment.path.display().to_string(),
                "no Tier 0 copy to compress",
            )
        })?;
        let level = self.level.load(Ordering::Relaxed);
        let started = Instant::now();
        // Held until a failure's partial files are gone.
        let mut reservation = Some(reservation);
        let result = (|| -> Result<Tier1Info> {
            log.manifest.lock().append(Edit::CompressStarted {
                segment_id: segment.id,
                level,
            })?;
            // `write_tier1` checks every record's checksum and sequence as it cuts frames (a
            // scrub through the mapping readers already share: no second mapping, no extra RSS),
            // so a damaged segment never gets a clean-looking copy.
            let bytes = mapping.slice(0, meta.file_len).ok_or_else(|| {
                Error::corruption(
                    segment.path.display().to_string(),
                    "shorter than its footer says",
                )
            })?;
            let dir = log.tier1_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            let written = tier1::write_tier1(
                &dir,
                bytes,
                meta,
                log.log_id,
                level,
                self.frame_bytes,
                compressor,
            )?;
            let info = Tier1Info {
                segment_id: segment.id,
                file_len: written.file_len,
                footer_crc: written.footer_crc,
                frames: written.frames,
                uncompressed_bytes: written.uncompressed_bytes,
                level: written.level,
            };
            let opened = Tier1Segment::open(
                dir.join(tier1::tier1_file_name(segment.id)),
                info,
                self.frame_cache.clone(),
            )?;
            before_done()?;
            {
                // Counted and installed under the manifest lock: retention, which retires a
                // segment (and forgets its Tier 1 bytes) under that lock, sees all or none of it.
                let mut manifest = log.manifest.lock();
                manifest.append(Edit::CompressDone(info))?;
                if let Some(reservation) = reservation.take() {
                    reservation.settle(info.file_len);
                }
                segment.set_tier1(Arc::new(opened));
            }
            if let Some(log) = log.me_arc() {
                self.submit_upload(&log, segment.clone());
            }
            Ok(info)
        })();
        drop(mapping);
        let ns = started.elapsed().as_nanos() as u64;
        match &result {
            Ok(info) => {
                let c = &self.counters;
                c.segments_compressed.fetch_add(1, Ordering::Relaxed);
                c.compress_in_bytes
                    .fetch_add(info.uncompressed_bytes, Ordering::Relaxed);
                c.compress_out_bytes
                    .fetch_add(info.file_len, Ordering::Relaxed);
                c.compress_ns.fetch_add(ns, Ordering::Relaxed);
                ewma(
                    &self.compress_ns_per_mib,
                    per_mib(ns, info.uncompressed_bytes),
                );
                self.adapt_level();
            }
            Err(e) => {
                self.counters
                    .compress_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(log = %log.name, segment = segment.id, error = %e, "compression into Tier 1 failed; the segment stays in Tier 0");
                let dir = log.tier1_dir();
                let _ = std::fs::remove_file(dir.join(tier1::tier1_tmp_name(segment.id)));
                let _ = std::fs::remove_file(dir.join(tier1::tier1_file_name(segment.id)));
                let mut manifest = log.manifest.lock();
                if manifest
                    .state()
                    .segments
                    .get(&segment.id)
                    .is_some_and(|e| e.compressing)
                {
                    let _ = manifest.append(Edit::CompressFailed {
                        segment_id: segment.id,
                        reason: e.to_string(),
                    });
                }
            }
        }
        drop(reservation);
        result
    }

    /// Adaptive level: down when compression falls behind ingest or takes too much of the
    /// machine's CPU time, up while it has time to spare ([`next_level`]).
    fn adapt_level(&self) {
        let Compression::Adaptive { min, max } = self.compression else {
            return;
        };
        let load = CompressLoad {
            backlog: self.queue.lock().compress_queued.saturating_sub(1),
            ingest_ns_per_mib: self
                .ingest_ns_per_mib
                .load(Ordering::Relaxed)
                .min(self.last_ingest_ns_per_mib.load(Ordering::Relaxed)),
            compress_ns_per_mib: self.compress_ns_per_mib.load(Ordering::Relaxed),
            workers: self.workers,
            cpus: self.cpus,
            pressure: self.budget.pressure(),
        };
        let level = self.level.load(Ordering::Relaxed);
        let next = next_level(level, min, max, &load);
        if next != level {
            tracing::debug!(level = next, ?load, "compression level");
            self.level.store(next, Ordering::Relaxed);
        }
    }

    /// The logs registered and still alive.
    fn live_logs(&self) -> Vec<Arc<LogShared>> {
        let mut l = self.logs.lock();
        l.retain(|w| w.strong_count() > 0);
        l.iter().filter_map(Weak::upgrade).collect()
    }

    /// Evict while Tier 0 is above the evict-ahead pressure.
    fn evict_ahead(&self) {
        let max = self.budget.max();
        let target = (max as f64 * limits::EVICT_AHEAD_PRESSURE) as u64;
        let used = self.budget.used();
        if used > target {
            self.evict(used - target);
        }
    }

    fn note_progress(&self) {
        *self.progress.lock() += 1;
        self.progressed.notify_all();
    }

    /// Wait until `done` holds (checked whenever a compression or seal finishes) or `deadline`.
    pub(crate) fn wait_progress(&self, deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
        let mut progress = self.progress.lock();
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Bounded: seals of non-`None` logs finish on the sealer thread, which does not
            // notify this condvar.
            self.progressed.wait_for(
                &mut progress,
                (deadline - now).min(Duration::from_millis(20)),
            );
        }
    }

    /// Tier 1 files of this many bytes left the budget (retired, evicted, their log closed).
    pub(crate) fn forget_tier1(&self, bytes: u64) {
        self.tier1.forget(bytes);
    }

    /// Evict every Tier 0 copy of `log` that Tier 1 holds and no reader uses.
    pub(crate) fn evict_log(&self, log: &LogShared) -> Result<u64> {
        let Some(_running) = log.enter_background() else {
            return Err(Error::Closed(format!("log {:?}", log.name)));
        };
        let _one_at_a_time = self.evicting.lock();
        let segments: Vec<Arc<Segment>> = log.segments.read().iter().cloned().collect();
        let mut freed = 0;
        for segment in segments {
            let outcome = segment.evict_tier0(
                || {
                    log.record_if_live(
                        segment.id,
                        Edit::Tier0Evicted {
                            segment_id: segment.id,
                        },
                    )
                },
                |path| log.keep_for_reuse(path),
            )?;
            if let EvictOutcome::Evicted(bytes) = outcome {
                freed += bytes;
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .evicted_bytes
                    .fetch_add(bytes, Ordering::Relaxed);
            }
        }
        Ok(freed)
    }

    /// Evict least-recently-read Tier 0 copies that Tier 1 holds until `need` bytes are freed
    /// (or nothing more can be). Returns the bytes freed.
    pub(crate) fn evict(&self, need: u64) -> u64 {
        let _one_at_a_time = self.evicting.lock();
        let candidates = lru_candidates(&self.live_logs(), |s| {
            s.has_cold_copy() && s.in_tier0() && s.sealed_meta().is_some()
        });
        let mut freed = 0;
        for (log, segment) in candidates {
            if freed >= need {
                break;
            }
            let Some(_running) = log.enter_background() else {
                continue;
            };
            let outcome = segment.evict_tier0(
                || {
                    log.record_if_live(
                        segment.id,
                        Edit::Tier0Evicted {
                            segment_id: segment.id,
                        },
                    )
                },
                |path| log.keep_for_reuse(path),
            );
            match outcome {
                Ok(EvictOutcome::Evicted(bytes)) => {
                    freed += bytes;
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .evicted_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(log = %log.name, segment = segment.id, error = %e, "eviction failed")
                }
            }
        }
        freed
    }

    /// Download a Tier-2-only segment back into Tier 1 if the Tier 1 budget has room.
    fn fetch(&self, log: &LogShared, segment: &Arc<Segment>) {
        let Some(copy) = segment.tier2() else {
            return;
        };
        if segment.tier1().is_some() {
            return;
        }
        let Some(reservation) = self.reserve_tier1(copy.info.tier1.file_len) else {
            return;
        };
        // Held until a failure's file is gone.
        let mut reservation = Some(reservation);
        let dir = log.tier1_dir();
        let path = dir.join(tier1::tier1_file_name(segment.id));
        let result = (|| -> Result<()> {
            copy.download_to(&path)?;
            let opened =
                Tier1Segment::open(path.clone(), copy.info.tier1, self.frame_cache.clone())?;
            let mut manifest = log.manifest.lock();
            if manifest
                .state()
                .segments
                .get(&segment.id)
                .is_none_or(|e| e.tier1.is_some() || e.tier2.is_none())
            {
                return Err(Error::NotFound(format!(
                    "segment {} changed meanwhile",
                    segment.id
                )));
            }
            manifest.append(Edit::Tier1Fetched {
                segment_id: segment.id,
            })?;
            // Under the manifest lock, as for a compression (retention sees all or none).
            if let Some(reservation) = reservation.take() {
                reservation.settle(copy.info.tier1.file_len);
            }
            segment.set_tier1(Arc::new(opened));
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.counters.tier2_fetches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(log = %log.name, segment = segment.id, error = %e, "fetching from Tier 2 failed; reads stay on Tier 2");
                let _ = std::fs::remove_file(&path);
            }
        }
        drop(reservation);
    }

    /// Rebuild a Tier 1 segment into Tier 0 if the budget has room (evicting colder segments).
    fn hydrate(&self, log: &LogShared, segment: &Arc<Segment>) {
        let (Some(t1), Some(meta)) = (segment.tier1(), segment.sealed_meta()) else {
            return;
        };
        if segment.in_tier0() {
            return;
        }
        let Some(lease) = self.budget.try_acquire(meta.file_len).or_else(|| {
            self.evict(meta.file_len);
            self.budget.try_acquire(meta.file_len)
        }) else {
            return;
        };
        let result = (|| -> Result<bool> {
            t1.file().rebuild_segment(&segment.path)?;
            segment::check_sealed(&segment.path, meta.footer_crc, meta.file_len)?;
            log.record_if_live(
                segment.id,
                Edit::Hydrated {
                    segment_id: segment.id,
                },
            )
        })();
        match result {
            Ok(true) if segment.install_tier0(lease) => {
                self.counters.hydrations.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                // Retention removed the segment before or right after the edit: the rebuilt file is no
                // segment's any more (retention unlinks it too; whichever runs second finds
                // nothing).
                let _ = std::fs::remove_file(&segment.path);
            }
            Err(e) => {
                tracing::warn!(log = %log.name, segment = segment.id, error = %e, "hydration failed; reads stay on Tier 1");
                let _ = std::fs::remove_file(&segment.path);
            }
        }
    }
}

/// Move the parked tasks whose time has come back to the end of `tasks`.
fn unpark<T>(parked: &mut Vec<(Instant, T)>, tasks: &mut VecDeque<T>, now: Instant) {
    if parked.iter().any(|(at, _)| *at <= now) {
        for (at, task) in std::mem::take(parked) {
            if at <= now {
                tasks.push_back(task);
            } else {
                parked.push((at, task));
            }
        }
    }
}

/// Sealed segments of writable, open `logs` that pass `eligible`, least recently read first.
fn lru_candidates(
    logs: &[Arc<LogShared>],
    eligible: impl Fn(&Segment) -> bool,
) -> Vec<(Arc<LogShared>, Arc<Segment>)> {
    let mut candidates: Vec<(u64, Arc<LogShared>, Arc<Segment>)> = Vec::new();
    for log in logs {
        if log.is_read_only() || log.is_closed() {
            continue;
        }
        for s in log.segments.read().iter() {
            if eligible(s) {
                candidates.push((s.last_access(), log.clone(), s.clone()));
            }
        }
    }
    candidates.sort_by_key(|(at, _, _)| *at);
    candidates
        .into_iter()
        .map(|(_, log, segment)| (log, segment))
        .collect()
}

/// What the adaptive compression level follows.
#[derive(Debug, Clone, Copy)]
struct CompressLoad {
    /// Compression tasks queued behind the one that just finished.
    backlog: u64,
    /// Time the logs take to write a MiB of segments (0: not known yet).
    ingest_ns_per_mib: u64,
    /// Time a compression worker takes to compress a MiB at the current level.
    compress_ns_per_mib: u64,
    workers: usize,
    cpus: usize,
    /// Tier 0 budget in use, 0.0..=1.0.
    pressure: f64,
}

/// The adaptive level after `level`. It drops (half way to `min` at once) when compression falls
/// behind (a backlog, workers busy over 80 % of the time, or Tier 0 nearly full) or takes more
/// than twice [`limits::COMPRESS_CPU_SHARE`] of the machine's CPU time; it climbs one step while
/// none of that is close and compression takes under half that share. zstd reads level 0 as its
/// default (3), so the level steps over it.
fn next_level(level: i32, min: i32, max: i32, load: &CompressLoad) -> i32 {
    let (busy, machine) = if load.ingest_ns_per_mib == 0 {
        (0.0, 0.0)
    } else {
        let work = load.compress_ns_per_mib as f64;
        let ingest = load.ingest_ns_per_mib as f64;
        (
            work / (ingest * load.workers.max(1) as f64),
            work / (ingest * load.cpus.max(1) as f64),
        )
    };
    let next = if load.backlog >= 2
        || busy > 0.8
        || machine > limits::COMPRESS_CPU_SHARE * 2.0
        || load.pressure > 0.95
    {
        (level - ((level - min) / 2).max(2)).max(min)
    } else if load.ingest_ns_per_mib > 0
        && load.backlog == 0
        && busy < 0.4
        && machine < limits::COMPRESS_CPU_SHARE / 2.0
        && load.pressure < 0.75
    {
        (level + 1).min(max)
    } else {
        level
    };
    match next {
        0 if next > level => 1,
        0 => -1,
        n => n,
    }
}

/// `ns` spent on `bytes`, scaled to one MiB.
fn per_mib(ns: u64, bytes: u64) -> u64 {
    (ns as u128 * (1 << 20) / bytes.max(4096) as u128).min(u64::MAX as u128) as u64
}

fn ewma(slot: &AtomicU64, sample: u64) {
    let old = slot.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        (old * 3 + sample) / 4
    };
    slot.store(new, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::{CompressLoad, next_level};

    /// 16 durable writers of 1 KiB on 2 vCPUs: ~8.5 ms to write a MiB, one compression worker.
    fn busy_writers(compress_ns_per_mib: u64) -> CompressLoad {
        CompressLoad {
            backlog: 0,
            ingest_ns_per_mib: 8_500_000,
            compress_ns_per_mib,
            workers: 1,
            cpus: 2,
            pressure: 0.3,
        }
    }

    #[test]
    fn level_drops_when_compression_takes_cpu_time_from_busy_writers() {
        // Level 3 at ~4.3 ms per MiB: half of one worker, a quarter of the machine. The worker
        // keeps up, but the appends wait for CPU meanwhile.
        assert_eq!(next_level(3, -12, 9, &busy_writers(4_300_000)), -4);
        // A fast level at ~1.5 ms per MiB takes under a tenth of the machine: stay.
        assert_eq!(next_level(-8, -12, 9, &busy_writers(1_500_000)), -8);
    }

    #[test]
    fn level_climbs_only_while_the_machine_has_time_to_spare() {
        let idle = CompressLoad {
            ingest_ns_per_mib: 200_000_000,
            ..busy_writers(4_000_000)
        };
        assert_eq!(next_level(3, -12, 9, &idle), 4);
        assert_eq!(next_level(9, -12, 9, &idle), 9);
        // Stepping up over zstd's "default" level 0.
        assert_eq!(next_level(-1, -12, 9, &idle), 1);
        // Ingest not measured yet (the first compression): hold.
        let unknown = CompressLoad {
            ingest_ns_per_mib: 0,
            ..idle
        };
        assert_eq!(next_level(1, -12, 9, &unknown), 1);
    }

    #[test]
    fn level_drops_when_compression_falls_behind() {
        let idle = CompressLoad {
            ingest_ns_per_mib: 200_000_000,
            ..busy_writers(4_000_000)
        };
        let backlog = CompressLoad { backlog: 2, ..idle };
        assert_eq!(next_level(9, -12, 9, &backlog), -1);
        let full = CompressLoad {
            pressure: 0.97,
            ..idle
        };
        assert_eq!(next_level(-11, -12, 9, &full), -12);
        // Stepping down over 0.
        assert_eq!(next_level(2, -2, 9, &full), -1);
    }
}
