//! Opening and reading a Tier 1 file (`tier1::Tier1File::open`, `read_frame`, `verify`; the
//! module is private, so through `AofManager::open_log_read_only` over a root whose manifest says
//! the segment is held only in Tier 1 and whose `.t1` file is the input). The harness writes the
//! manifest so that the file's length and footer CRC match, and the sealed info from the file's
//! segment footer copy, so the checks behind them are reached. No panic, no allocation sized by
//! an unchecked length field, dense sequences from the reader.
#![no_main]

use aof2_fuzz::{created, fix_tier1, open_log_with, tier1_only_edits, u64_at, u128_at, wal_file};
use libfuzzer_sys::fuzz_target;

fn open(t1: &[u8]) {
    let log_id = u128_at(t1, 16).unwrap_or(0);
    let id = u64_at(t1, 32).filter(|&id| id < 1 << 48).unwrap_or(0);
    let mut edits = created(log_id);
    edits.extend(tier1_only_edits(id, t1));
    open_log_with(&[
        ("manifest/wal-0000000000000000", &wal_file(&edits)),
        (&format!("tier1/{id:016x}.t1"), t1),
    ]);
}

fuzz_target!(|data: &[u8]| {
    open(data);
    let mut fixed = data.to_vec();
    fix_tier1(&mut fixed);
    if fixed != data {
        open(&fixed);
    }
});
