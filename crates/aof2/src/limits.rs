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
/// Threads that prepare segments, per manager.
pub const PREPARE_THREADS: usize = 2;

/// Group commits of one log that may be in flight at once. The device serves concurrent flushes
/// in parallel (measured here with raw files: 1 syncer 9.2k fdatasync/s, 2 syncers 14.3k/s), but
/// with two overlapping groups each group gets smaller and the engine measured slower (16 writers:
/// 37k/s with 2, 44k/s with 1), so one group at a time is the default.
pub const MAX_SYNCS_IN_FLIGHT: u32 = 1;

/// Longest a group-commit leader waits for the writers released by the previous sync to come
/// back: bounds the latency a lone writer can pay when the group shrinks.
pub const MAX_GATHER_WINDOW_NS: u64 = 100_000;

/// Durable segments are zero-filled when prepared; this much is synced at a time, so a group
/// commit of an active log waits behind at most this many bytes of zeros. Measured at 16 writers:
/// 4 MiB doubled the p99 (more commits delayed), 16 MiB kept it near 500 µs, one sync per 64 MiB
/// segment was similar with longer p99.9 stalls.
pub const ZERO_FILL_SYNC_BYTES: u64 = 16 << 20;
