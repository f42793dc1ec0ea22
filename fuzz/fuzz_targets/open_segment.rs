//! Recovery of a segment file (`AofManager::open_log_read_only` over a root whose only segment
//! is the input): segment header check, frame scan of an unsealed segment, footer and index
//! checks of a sealed one or one whose seal was interrupted before its manifest edit, then
//! reading every record and `verify_log`. The manifest is written by the harness: once with the
//! segment only prepared (as after a crash), once sealed with what its footer says. No panic, no
//! out-of-bounds read of the mapping, dense sequences from the reader.
#![no_main]

use aof2::format::crc32c;
use aof2::format::manifest::{Edit, SealedInfo};
use aof2::format::segment::SegmentFooter;
use aof2::limits::{SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES};
use aof2_fuzz::{
    created, fix_frames, footer_file_len, open_log_with, seal_at, u64_at, u128_at, wal_file,
};
use libfuzzer_sys::fuzz_target;

const HEADER: usize = SEGMENT_HEADER_BYTES as usize;
const FOOTER: usize = SEGMENT_FOOTER_BYTES as usize;

fn open(segment: &[u8]) {
    let log_id = u128_at(segment, 16).unwrap_or(0);
    // Ids near u64::MAX are refused by the manifest tests elsewhere (`open_manifest`).
    let id = u64_at(segment, 32).filter(|&id| id < 1 << 48).unwrap_or(0);
    let capacity = u64_at(segment, 56).unwrap_or(64 << 10);
    let name = format!("segments/{id:016x}.seg");
    let mut edits = created(log_id);
    edits.push(Edit::SegmentPrepared {
        segment_id: id,
        capacity,
    });
    // Unsealed in the manifest: scanned, or found sealed and recorded (interrupted seal).
    open_log_with(&[
        ("manifest/wal-0000000000000000", &wal_file(&edits)),
        (&name, segment),
    ]);
    // Sealed in the manifest, with what its footer says.
    let footer_at = segment.len().saturating_sub(FOOTER);
    let Some(raw) = segment
        .get(footer_at..)
        .and_then(|b| <[u8; FOOTER]>::try_from(b).ok())
    else {
        return;
    };
    let Ok(footer) = SegmentFooter::decode(&raw) else {
        return;
    };
    edits.push(Edit::SegmentSealed(SealedInfo {
        segment_id: id,
        base_seq: footer.base_seq,
        record_count: footer.record_count,
        file_len: footer_file_len(&footer).unwrap_or(0),
        first_timestamp_ms: footer.first_timestamp_ms,
        last_timestamp_ms: footer.last_timestamp_ms,
        footer_crc: SegmentFooter::stored_crc(&raw),
    }));
    open_log_with(&[
        ("manifest/wal-0000000000000000", &wal_file(&edits)),
        (&name, segment),
    ]);
}

fuzz_target!(|data: &[u8]| {
    open(data);
    // Fixed up: the header CRC, every frame CRC, and the footer's index CRC and CRC when the
    // input ends like a sealed segment.
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, HEADER);
    fix_frames(&mut fixed, HEADER);
    let len = fixed.len();
    if len >= HEADER + FOOTER && fixed[len - FOOTER..].starts_with(b"AOF2FTR\0") {
        let footer_at = len - FOOTER;
        let records_end = u64_at(&fixed, footer_at + 40).unwrap_or(0);
        if let Ok(start) = usize::try_from(records_end)
            && start <= footer_at
        {
            let crc = crc32c(&fixed[start..footer_at]);
            fixed[footer_at + 72..footer_at + 76].copy_from_slice(&crc.to_le_bytes());
        }
        seal_at(&mut fixed, footer_at, FOOTER);
    }
    if fixed != data {
        open(&fixed);
    }
});
