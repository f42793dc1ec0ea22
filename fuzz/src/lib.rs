//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Random bytes almost never carry a valid CRC-32C, so a decoder fed only raw input spends its
//! time at the checksum check. Every target therefore decodes the raw input first, then a copy
//! whose checksums this module recomputes ("fixed up"), which lets libFuzzer explore the checks
//! behind them. The fix-ups only touch checksum fields, so anything a decoder accepts after a
//! fix-up is something a damaged-but-checksummed file could hold.
//!
//! File-level targets (`open_*`) write the input into a log directory of one `AofManager` that
//! lives for the whole fuzzing process, open the log read-only (recovery, manifest replay,
//! Tier 1 open), read every record and deep-verify it, then close it again.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aof2::format::crc32c;
use aof2::format::manifest::{
    Edit, SealedInfo, Tier1Info, WAL_HEADER_BYTES, WAL_RECORD_OVERHEAD, encode_wal_header,
    encode_wal_record,
};
use aof2::format::segment::SegmentFooter;
use aof2::limits::{
    FRAME_HEADER_BYTES, INDEX_ENTRY_BYTES, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    TIER1_FOOTER_BYTES, TIER1_FRAME_ENTRY_BYTES, TIER1_HEADER_BYTES,
};
use aof2::{AofManager, ManagerConfig, ReadVisibility};

/// Name of the log the file-level targets write and open.
pub const LOG: &str = "fz";

/// Largest record count a file-level target reads back from one input (inputs are small, so a
/// log that claims more is read only this far).
const MAX_READ_RECORDS: u64 = 100_000;

/// Little-endian u32 at `at`, if the bytes are there.
pub fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Little-endian u64 at `at`, if the bytes are there.
pub fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Little-endian u128 at `at`, if the bytes are there.
pub fn u128_at(bytes: &[u8], at: usize) -> Option<u128> {
    Some(u128::from_le_bytes(
        bytes.get(at..at + 16)?.try_into().ok()?,
    ))
}

fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    if let Some(slot) = bytes.get_mut(at..at + 4) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

/// Write the CRC-32C of everything but the last four bytes into the last four bytes (the
/// trailing CRC of every fixed-size aof2 structure). No-op below 4 bytes.
pub fn seal(bytes: &mut [u8]) {
    let n = bytes.len();
    if n < 4 {
        return;
    }
    let crc = crc32c(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Seal the fixed-size structure of `len` bytes at `at`, if it is inside `bytes`.
pub fn seal_at(bytes: &mut [u8], at: usize, len: usize) {
    if let Some(s) = at.checked_add(len).and_then(|end| bytes.get_mut(at..end)) {
        seal(s);
    }
}

/// Recompute the CRC of every WAL record (`crc ‖ len ‖ body`) from the start of `bytes`, as far
/// as the records' lengths stay inside `bytes`. Returns where the last whole record ended.
pub fn fix_wal_records(bytes: &mut [u8]) -> usize {
    let mut pos = 0usize;
    while let Some(len) = u32_at(bytes, pos + 4) {
        let Some(end) = (pos + WAL_RECORD_OVERHEAD).checked_add(len as usize) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        let crc = crc32c(&bytes[pos + 4..end]);
        put_u32(bytes, pos, crc);
        pos = end;
    }
    pos
}

/// Recompute the CRC of every record frame (`crc ‖ 28 header bytes ‖ payload`) from `start`, as
/// far as the frames' lengths stay inside `bytes`.
pub fn fix_frames(bytes: &mut [u8], start: usize) {
    let header = FRAME_HEADER_BYTES as usize;
    let mut pos = start;
    while let Some(len) = u32_at(bytes, pos + 4) {
        let Some(end) = (pos + header).checked_add(len as usize) else {
            break;
        };
        if end > bytes.len() {
            break;
        }
        // An all-zero frame header is the end of the records area: keep it.
        if bytes[pos..pos + header].iter().all(|&b| b == 0) {
            break;
        }
        let crc = crc32c(&bytes[pos + 4..end]);
        put_u32(bytes, pos, crc);
        pos = end;
    }
}

/// Fix the checksums of a Tier 1 file: Tier 1 header, segment header copy, sparse index copy and
/// segment footer copy, frame index and Tier 1 footer (in that order, each CRC over bytes fixed
/// before it). Zstd frames are left alone.
pub fn fix_tier1(bytes: &mut [u8]) {
    let header = TIER1_HEADER_BYTES as usize;
    let footer = TIER1_FOOTER_BYTES as usize;
    let seg_footer = SEGMENT_FOOTER_BYTES as usize;
    seal_at(bytes, 0, header);
    seal_at(bytes, header, SEGMENT_HEADER_BYTES as usize);
    let len = bytes.len();
    let Some(footer_at) = len.checked_sub(footer) else {
        return;
    };
    let Some(seg_footer_at) = footer_at.checked_sub(seg_footer) else {
        return;
    };
    // Sparse index copy: between the tail offset and the segment footer copy.
    let tail_offset = u64_at(bytes, footer_at + 16).unwrap_or(0);
    if let Ok(tail_offset) = usize::try_from(tail_offset)
        && tail_offset <= seg_footer_at
    {
        let index_crc = crc32c(&bytes[tail_offset..seg_footer_at]);
        put_u32(bytes, seg_footer_at + 72, index_crc);
    }
    seal_at(bytes, seg_footer_at, seg_footer);
    // Frame index: `frame count` entries ending at the tail offset.
    let frames = u32_at(bytes, footer_at + 12).unwrap_or(0) as u64;
    if let Some(index_at) = tail_offset.checked_sub(frames * TIER1_FRAME_ENTRY_BYTES)
        && let (Ok(index_at), Ok(tail_offset)) =
            (usize::try_from(index_at), usize::try_from(tail_offset))
        && tail_offset <= footer_at
    {
        let crc = crc32c(&bytes[index_at..tail_offset]);
        put_u32(bytes, footer_at + 28, crc);
    }
    seal_at(bytes, footer_at, footer);
}

/// `records_end + 24 x entries + 96` without overflow (what `SegmentFooter::file_len` computes).
pub fn footer_file_len(footer: &SegmentFooter) -> Option<u64> {
    footer
        .records_end
        .checked_add(footer.index_entries as u64 * INDEX_ENTRY_BYTES)?
        .checked_add(SEGMENT_FOOTER_BYTES)
}

/// A manifest WAL file of generation 0 holding `edits`.
pub fn wal_file(edits: &[Edit]) -> Vec<u8> {
    let mut out = encode_wal_header(0).to_vec();
    for edit in edits {
        out.extend_from_slice(&encode_wal_record(edit));
    }
    debug_assert!(out.len() >= WAL_HEADER_BYTES);
    out
}

/// The manifest edits of a log `LOG` with `log_id`, opened once.
pub fn created(log_id: u128) -> Vec<Edit> {
    vec![
        Edit::LogCreated {
            log_id,
            created_ms: 1_700_000_000_000,
            name: LOG.to_string(),
        },
        Edit::LogOpened { epoch: 1 },
    ]
}

/// Manifest edits describing sealed segment `id`, held only by the Tier 1 file `t1` (what the
/// manifest would record for it after compression and eviction). The sealed info comes from the
/// segment footer copy in `t1` when it decodes, so recovery gets past its cross-checks.
pub fn tier1_only_edits(id: u64, t1: &[u8]) -> Vec<Edit> {
    let len = t1.len();
    let tail = (TIER1_FOOTER_BYTES + SEGMENT_FOOTER_BYTES) as usize;
    let seg_footer = len
        .checked_sub(tail)
        .and_then(|at| t1.get(at..at + SEGMENT_FOOTER_BYTES as usize))
        .and_then(|b| <[u8; 96]>::try_from(b).ok());
    let decoded = seg_footer.and_then(|raw| Some((raw, SegmentFooter::decode(&raw).ok()?)));
    let sealed = match decoded {
        Some((raw, f)) => SealedInfo {
            segment_id: id,
            base_seq: f.base_seq,
            // A sealed range past u64::MAX is the manifest's to refuse (`open_manifest` finds
            // recovery adding it unchecked); keep it out of this target so it reaches the file.
            record_count: f.record_count.min(u64::MAX - f.base_seq),
            file_len: footer_file_len(&f).unwrap_or(0),
            first_timestamp_ms: f.first_timestamp_ms,
            last_timestamp_ms: f.last_timestamp_ms,
            footer_crc: SegmentFooter::stored_crc(&raw),
        },
        None => SealedInfo {
            segment_id: id,
            base_seq: 0,
            record_count: 0,
            file_len: 0,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            footer_crc: 0,
        },
    };
    let level = u32_at(t1, 12).unwrap_or(1) as i32;
    let footer_at = len.saturating_sub(TIER1_FOOTER_BYTES as usize);
    vec![
        Edit::SegmentPrepared {
            segment_id: id,
            capacity: 64 << 10,
        },
        Edit::SegmentSealed(sealed),
        Edit::CompressStarted {
            segment_id: id,
            level,
        },
        Edit::CompressDone(Tier1Info {
            segment_id: id,
            file_len: len as u64,
            footer_crc: u32_at(t1, len.saturating_sub(4)).unwrap_or(0),
            frames: u32_at(t1, footer_at + 12).unwrap_or(0),
            uncompressed_bytes: u64_at(t1, footer_at + 32).unwrap_or(0),
            level,
        }),
        Edit::Tier0Evicted { segment_id: id },
    ]
}

/// One manager over a scratch root for the whole process (opening a manager starts threads:
/// too slow per input).
pub struct Harness {
    pub root: PathBuf,
    pub manager: AofManager,
}

/// The process's harness (created on first use).
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // tmpfs when there is one: the targets write a few files per input.
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let root = base.join(format!("aof2-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut config = ManagerConfig::new(&root);
        config.flush_threads = 1;
        config.compress_threads = 1;
        config.hydrate_after_passes = 0;
        config.tier0_max_bytes = 1 << 30;
        let manager = AofManager::open(config).expect("open the fuzzing root");
        Harness { root, manager }
    })
}

/// Replace log `LOG` with `files` (paths relative to the log directory), open it read-only, read
/// every record, verify it, and close it. Panics only on a violated property.
pub fn open_log_with(files: &[(&str, &[u8])]) {
    let h = harness();
    let dir = h.root.join("logs").join(LOG);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(h.root.join("quarantine"));
    for sub in ["manifest", "segments", "tier1"] {
        std::fs::create_dir_all(dir.join(sub)).expect("create log directories");
    }
    for (path, bytes) in files {
        std::fs::write(dir.join(path), bytes).expect("write an input file");
    }
    let Ok(log) = h.manager.open_log_read_only(LOG) else {
        return;
    };
    let first = log.first_seq();
    let next = log.next_seq();
    assert!(first <= next, "first seq {first} after next seq {next}");
    // Every record the log says it holds, in order, with dense sequence numbers.
    let mut expected = first;
    for record in log.reader_with(first, ReadVisibility::Written) {
        let Ok(record) = record else { break };
        assert_eq!(
            record.seq(),
            expected,
            "reader skipped or repeated a record"
        );
        assert!(
            record.seq() < next,
            "reader yields seq {} past next seq {next}",
            record.seq()
        );
        let _ = record.payload().len();
        expected += 1;
        if expected - first >= MAX_READ_RECORDS {
            break;
        }
    }
    for seq in [
        first,
        next.saturating_sub(1),
        first.saturating_add((next - first) / 2),
    ] {
        if let Ok(record) = log.read(seq) {
            assert_eq!(record.seq(), seq, "read({seq}) returned another record");
        }
    }
    if next - first <= MAX_READ_RECORDS {
        let report = h.manager.verify_log(&log);
        let _ = report.is_clean();
    }
    let _ = h.manager.log_info(&log);
    let _ = log.close();
}
