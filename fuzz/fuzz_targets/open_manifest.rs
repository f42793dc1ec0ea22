//! Replaying a manifest (`ManifestLog::open_read_only`: snapshot and WAL decoding, every edit
//! checked against the replayed state and applied) and recovering the log it describes, through
//! `AofManager::open_log_read_only`. The input is a WAL file (`wal-<generation>`), or a snapshot
//! optionally followed by a WAL file. No segment files exist, so recovery walks the missing-file
//! paths of every segment state. No panic in replay, state checks or recovery.
#![no_main]

use aof2::format::crc32c_pair;
use aof2::format::manifest::{SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC, WAL_HEADER_BYTES};
use aof2_fuzz::{fix_wal_records, open_log_with, seal_at, u32_at, u64_at};
use libfuzzer_sys::fuzz_target;

/// Split the input into (snapshot, WAL) as described above.
fn split(data: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    if !data.starts_with(SNAPSHOT_MAGIC) {
        return (None, Some(data));
    }
    let body_len = u32_at(data, 24).unwrap_or(0) as usize;
    let end = SNAPSHOT_HEADER_BYTES.saturating_add(body_len);
    if end < data.len() && data[end..].starts_with(b"AOF2MWAL") {
        (Some(&data[..end]), Some(&data[end..]))
    } else {
        (Some(data), None)
    }
}

fn open(snapshot: Option<&[u8]>, wal: Option<&[u8]>) {
    let mut files: Vec<(String, &[u8])> = Vec::new();
    if let Some(s) = snapshot {
        files.push(("manifest/snapshot".into(), s));
    }
    if let Some(w) = wal {
        let generation = u64_at(w, 16).unwrap_or(0);
        files.push((format!("manifest/wal-{generation:016x}"), w));
    }
    let files: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    open_log_with(&files);
}

fuzz_target!(|data: &[u8]| {
    let (snapshot, wal) = split(data);
    open(snapshot, wal);
    // Fixed up: the snapshot CRC, the WAL header CRC and every WAL record CRC.
    let snapshot = snapshot.map(|s| {
        let mut s = s.to_vec();
        if s.len() >= SNAPSHOT_HEADER_BYTES {
            let body_len = u32_at(&s, 24).unwrap_or(0) as usize;
            let end = SNAPSHOT_HEADER_BYTES.saturating_add(body_len).min(s.len());
            let crc = crc32c_pair(&s[..28], &s[SNAPSHOT_HEADER_BYTES..end]);
            s[28..32].copy_from_slice(&crc.to_le_bytes());
        }
        s
    });
    let wal = wal.map(|w| {
        let mut w = w.to_vec();
        seal_at(&mut w, 0, WAL_HEADER_BYTES);
        if w.len() > WAL_HEADER_BYTES {
            fix_wal_records(&mut w[WAL_HEADER_BYTES..]);
        }
        w
    });
    open(snapshot.as_deref(), wal.as_deref());
});
