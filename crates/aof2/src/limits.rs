//! Every bound aof2 enforces, in one place, each with the reason for its value.

/// Longest log name. Names become directory names; 128 keeps paths well under `PATH_MAX`
/// and object keys well under S3's 1024-byte key limit.
pub const MAX_LOG_NAME_BYTES: usize = 128;

/// Segment header size. Fixed so the first frame is at a known offset.
pub const SEGMENT_HEADER_BYTES: u64 = 128;
/// Segment footer size.
pub const SEGMENT_FOOTER_BYTES: u64 = 96;
/// Record frame header size.
pub const FRAME_HEADER_BYTES: u64 = 32;
/// Sparse index entry size.
pub const INDEX_ENTRY_BYTES: u64 = 24;
/// Bytes of frames between sparse index entries: a point read steps over at most this much
/// (8 KiB: ~85 frame headers of 64-byte records; the index costs 24 bytes per 8 KiB, 0.3%).
pub const INDEX_INTERVAL_BYTES: u64 = 8 * 1024;

/// Smallest segment. Below this the header, footer and index overheads dominate.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;
/// Largest segment. Offsets inside a segment are u64 on disk, but one segment is one mapping and
/// one unit of tiering; 4 GiB keeps both reasonable.
pub const MAX_SEGMENT_BYTES: u64 = 4 << 30;
/// Default segment size: large enough that rollover is rare, small enough to tier promptly.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Default largest record payload.
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 8 << 20;
/// Records in one batch: bounds the work done under the write lock.
pub const MAX_BATCH_RECORDS: usize = 1 << 20;

/// Largest manifest edit body. Edits are tiny; anything larger is corruption.
pub const MAX_MANIFEST_EDIT_BYTES: u32 = 64 * 1024;
/// Manifest WAL size that triggers compaction into a snapshot.
pub const MANIFEST_COMPACT_BYTES: u64 = 4 << 20;

/// Retries of a transient (EINTR/EAGAIN) I/O error before it counts as a failure.
pub const TRANSIENT_IO_RETRIES: u32 = 8;

/// Flush worker threads per manager, at most.
pub const MAX_FLUSH_THREADS: usize = 64;

/// Space a segment must keep free for its sparse index and footer when `records` bytes of frames
/// with `entries` index entries are present.
pub const fn seal_reserve_bytes(entries: u64) -> u64 {
    entries * INDEX_ENTRY_BYTES + SEGMENT_FOOTER_BYTES
}

/// Frame bytes needed for a payload of `len` bytes.
pub const fn frame_bytes(len: u64) -> u64 {
    FRAME_HEADER_BYTES + len
}

/// Worst-case index entries a segment of `capacity` bytes can need.
pub const fn max_index_entries(capacity: u64) -> u64 {
    capacity / INDEX_INTERVAL_BYTES + 2
}

const _: () =
    assert!(MIN_SEGMENT_BYTES > SEGMENT_HEADER_BYTES + SEGMENT_FOOTER_BYTES + FRAME_HEADER_BYTES);
const _: () = assert!(
    DEFAULT_SEGMENT_BYTES >= MIN_SEGMENT_BYTES && DEFAULT_SEGMENT_BYTES <= MAX_SEGMENT_BYTES
);
const _: () = assert!(
    DEFAULT_MAX_RECORD_BYTES
        + FRAME_HEADER_BYTES
        + SEGMENT_HEADER_BYTES
        + seal_reserve_bytes(max_index_entries(DEFAULT_SEGMENT_BYTES))
        <= DEFAULT_SEGMENT_BYTES
);
const _: () = assert!(MAX_LOG_NAME_BYTES <= u16::MAX as usize);

/// Segments each log keeps prepared (preallocated and pre-faulted) ahead of need. Two, prepared
/// in parallel, keep rollover off the append path at full memory-copy speed: preparing one
/// segment costs about as much as filling it.
pub const PREPARED_SEGMENTS_AHEAD: usize = 2;
/// A log starts preparing segments ahead once its active segment is this fraction full (1/8)
/// after it opened, or once it rolls over. Before that it holds no prepared segment: many logs
/// that hold a few records each would otherwise fill the Tier 0 budget with prepared segments
/// (measured with the defaults: ten durable logs of one record each held 1,088 MiB of the 1 GiB
/// budget, now 640 MiB, their active segments; twenty held 1.7 GiB and the one that then wrote
/// 190 MB failed with `Backpressure`). A busy log reaches the mark after writing 8 MiB of 64 MiB
/// segments, early enough that the first rollover need not wait.
pub const PREPARE_AHEAD_AFTER_FILL_DIVISOR: u64 = 8;
/// A durable log whose active segment was created without zeros (a new log's first one; see
/// `ActiveSegment::unzeroed`) asks for a zero-filled segment once it has written this much (or
/// an eighth of the segment, if less), and rolls over to it as soon as it is ready. Its group
/// commits cost about twice as much until then (measured on a new log, 16 writers of 1 KiB:
/// fsync mean 190-213 us and 62-64k records/s, against 114-139 us and 79-98k/s in a zero-filled
/// segment, runs alternated).
pub const UNZEROED_PREPARE_AFTER_BYTES: u64 = 1 << 20;
/// Share of the machine's CPU time the adaptive compression level aims to use at the current
/// ingest rate: it climbs while compression takes less than half of this, and drops once it takes
/// more than twice this. On 2 vCPUs, 16 durable writers of 1 KiB with a 1 GiB Tier 0 budget
/// (nothing evicted, so compression never fell behind): the level used to climb to 9, each 64 MiB
/// segment took ~300 ms of a vCPU to compress, and appends waiting for CPU meanwhile made the p99
/// 2-3 ms; with the level held near the fastest, compression takes ~30-80 ms per segment.
pub const COMPRESS_CPU_SHARE: f64 = 0.1;
/// The adaptive compression level a manager starts at.
pub const ADAPTIVE_START_ZSTD_LEVEL: i32 = 1;
/// A Tier 0 budget smaller than this many segments of a log is tight: the log prepares one
/// segment ahead instead of [`PREPARED_SEGMENTS_AHEAD`], leaving room for sealed segments in
/// flight to Tier 1.
pub const TIGHT_BUDGET_SEGMENTS: u64 = 8;
/// Files of evicted Tier 0 segments a log keeps (outside the Tier 0 budget, as unmapped page
/// cache) to become its next prepared segments: reusing a file's resident pages instead of
/// faulting in fresh memory is what lets preparation keep up with a buffered writer. Two, as many
/// as are prepared ahead; more evicted files are deleted.
pub const RECYCLED_SEGMENTS_KEPT: usize = 2;
/// A kept file not reused within this long is deleted (checked on the timer tick): only logs that
/// keep rolling segments hold page cache outside the Tier 0 budget, at most
/// `RECYCLED_SEGMENTS_KEPT` segments each.
pub const RECYCLED_SEGMENT_KEEP: std::time::Duration = std::time::Duration::from_secs(10);
/// Threads that prepare segments, per manager.
pub const PREPARE_THREADS: usize = 2;

/// Group commits of one log that may be in flight at once. The device serves concurrent flushes
/// in parallel (measured here with raw files: 1 syncer 9.2k fdatasync/s, 2 syncers 14.3k/s), but
/// with two overlapping groups each group gets smaller and the engine measured slower (16 writers:
/// 37k/s with 2, 44k/s with 1), so one group at a time is the default.
pub const MAX_SYNCS_IN_FLIGHT: u32 = 1;

/// How long a thread waiting for a group commit yields the CPU in a loop before it sleeps
/// (`LogShared::wait_for_sync`): about two syncs. Measured with 16 and 64 writers: 100 us gained
/// little, 300 us as much as 1 or 3 ms.
pub const SYNC_WAIT_SPIN_NS: u64 = 300_000;

/// Durable (`WriteMode::Syscall`) appends stage their frames in memory and the group-commit
/// leader writes them with one `pwrite`; an append that finds this many bytes staged writes
/// them itself (a pipelining writer that runs ahead of the syncs).
pub const STAGED_WRITE_BYTES: u64 = 256 << 10;

/// Longest a waiter lets the group re-form (the writers released by the previous sync come
/// back) before it starts the sync itself: bounds the latency a lone writer can pay when the
/// group shrinks (`LogShared::group_ready`).
pub const MAX_GATHER_WINDOW_NS: u64 = 100_000;

/// Durable segments are zero-filled when prepared; this much is synced at a time, so a group
/// commit of an active log waits behind at most this many bytes of zeros. Measured at 16 writers:
/// 4 MiB doubled the p99 (more commits delayed), 16 MiB kept it near 500 µs, one sync per 64 MiB
/// segment was similar with longer p99.9 stalls.
pub const ZERO_FILL_SYNC_BYTES: u64 = 16 << 20;

/// Default Tier 0 budget: room for an active and two prepared 64 MiB segments of several logs
/// plus sealed segments waiting for compression, well below the memory of a small server.
pub const DEFAULT_TIER0_MAX_BYTES: u64 = 1 << 30;
/// Compression worker threads per manager, at most.
pub const MAX_COMPRESS_THREADS: usize = 16;
/// zstd's fastest level aof2 accepts (zstd's negative "fast" levels trade ratio for speed; below
/// about -50 there is little compression left on log data).
pub const MIN_ZSTD_LEVEL: i32 = -50;
/// zstd's strongest level.
pub const MAX_ZSTD_LEVEL: i32 = 22;
/// Default adaptive bounds. Measured on log lines with one core: level 1 ~450 MB/s (ratio 4.4),
/// -3 ~590 MB/s (2.8), -10 ~730 MB/s (2.4), -20 ~860 MB/s (2.1). A buffered writer fills
/// segments at ~0.8–1 GB/s, so keeping up on two cores needs about -12; `9` is as strong as an
/// idle coordinator can afford before compression time dwarfs the segment's write time.
pub const DEFAULT_MIN_ZSTD_LEVEL: i32 = -12;
/// See [`DEFAULT_MIN_ZSTD_LEVEL`].
pub const DEFAULT_MAX_ZSTD_LEVEL: i32 = 9;
/// Descriptors of local Tier 1 files kept open per process (fewer under a soft limit of open
/// files below 256: a quarter of it). A Tier 1 file is opened when it is read and its descriptor
/// cached; past this many, the longest-open one is closed (the next read of that file opens it
/// again). So a long Tier 1 history does not hold one descriptor per segment: 10,000 segments
/// would pass the usual soft limit of 1,024 open files.
pub const TIER1_OPEN_FILES: usize = 64;
/// Decompressed Tier 1 frames a manager keeps for the next point read (at most this many frames
/// of `tier1_frame_bytes` each: 1 MiB with the default 256 KiB frames).
pub const FRAME_CACHE_ENTRIES: usize = 4;
/// Tier 0 pressure (used / limit) above which eviction runs ahead of demand.
pub const EVICT_AHEAD_PRESSURE: f64 = 0.9;
/// A Tier 1 segment whose frames were decompressed this many times over (counted in whole
/// segments' worth of frames) is read repeatedly: it is hydrated back into Tier 0 when the budget
/// allows.
pub const HYDRATE_AFTER_PASSES: u64 = 2;

/// Tier 1 file header size: magic, version, level, identity and counts, with room to spare, so
/// the segment header copy and the first zstd frame are at fixed offsets.
pub const TIER1_HEADER_BYTES: u64 = 64;
/// Tier 1 file footer size: read with one small `pread` at open, together with the segment
/// footer copy right before it.
pub const TIER1_FOOTER_BYTES: u64 = 64;
/// Tier 1 frame index entry size: fixed, so `frame_for_seq` is a binary search over the
/// decoded index and the index length is `frames x 32`.
pub const TIER1_FRAME_ENTRY_BYTES: u64 = 32;
/// Default uncompressed bytes per Tier 1 zstd frame. A point read decompresses one whole frame,
/// so this bounds its cost: 0.2 ms per 256 KiB frame (decompress + CRC, measured on log-line
/// records at level 1), while ratio and speed stay those of compressing the segment in one call
/// (64 MiB segment: 0.226 of the input at 449 MB/s vs 0.224 at 472 MB/s in one zstd call) and
/// the index stays small (32 bytes per 256 KiB).
pub const DEFAULT_TIER1_FRAME_BYTES: usize = 256 << 10;
/// Smallest Tier 1 frame target. Each frame costs a zstd frame header, a 32-byte index entry, a
/// context reset and a `pread`, and starts without history: at 16 KiB write speed already drops
/// 5-10% (404-414 vs 441-449 MB/s in the measurement above; the ratio held on that repetitive
/// data, less repetitive data is expected to lose ratio in small frames too).
pub const MIN_TIER1_FRAME_BYTES: usize = 16 << 10;
/// Largest Tier 1 frame target: bounds the memory and latency of decompressing a frame for a
/// point read (about 6 ms at 8 MiB, scaling the rate above); longer frames gained no ratio in
/// the measurement above.
pub const MAX_TIER1_FRAME_BYTES: usize = 8 << 20;

const _: () = assert!(
    MIN_TIER1_FRAME_BYTES <= DEFAULT_TIER1_FRAME_BYTES
        && DEFAULT_TIER1_FRAME_BYTES <= MAX_TIER1_FRAME_BYTES
);
// Frame lengths are u32 on disk: a frame is at most the target, or one record frame alone, and
// a record frame is smaller than the records area of the largest segment.
const _: () = assert!((MAX_TIER1_FRAME_BYTES as u64) < u32::MAX as u64);
const _: () = assert!(MAX_SEGMENT_BYTES - SEGMENT_HEADER_BYTES <= u32::MAX as u64);
/// How long a preparer waits for Tier 0 room before giving up (the appender that needs the
/// segment asks again every few milliseconds until its admission timeout).
pub const PREPARE_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Bytes a download of a whole Tier 2 object (a restore, a fetch back into Tier 1) gathers
/// before it writes them to its file. The object streams through a buffer of this size, so a
/// download holds this much whatever the object's size (a segment is 64 MiB by default, and a
/// restore runs up to 8 downloads at once); 1 MiB makes each write large enough that its
/// system call costs nothing next to moving the bytes.
pub const DOWNLOAD_CHUNK_BYTES: usize = 1 << 20;
