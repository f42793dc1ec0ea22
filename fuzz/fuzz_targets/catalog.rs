//! `Catalog::decode` (a log's catalog object in Tier 2: 80-byte header and a body of WAL-framed
//! edits), plus `first_seq`/`end_seq` on what it returns: never panics, allocates no more than
//! the input justifies; a catalog it accepts re-encodes to the same value and, when the reserved
//! bytes are zero, to exactly its bytes.
#![no_main]

use aof2::format::catalog::{CATALOG_HEADER_BYTES, Catalog};
use aof2::format::crc32c;
use aof2_fuzz::{fix_wal_records, seal_at};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(catalog) = Catalog::decode(bytes) else {
        return;
    };
    let encoded = catalog.encode();
    assert_eq!(Catalog::decode(&encoded).as_ref(), Ok(&catalog));
    if bytes[10..16].iter().all(|&b| b == 0) {
        assert_eq!(encoded, bytes);
    }
    // What readers and restores compute from a catalog.
    assert!(catalog.first_seq() <= catalog.end_seq());
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() < CATALOG_HEADER_BYTES {
        return;
    }
    // Fixed up: every record CRC in the body, the body length and CRC, the header CRC.
    let mut fixed = data.to_vec();
    fix_wal_records(&mut fixed[CATALOG_HEADER_BYTES..]);
    let body_len = (fixed.len() - CATALOG_HEADER_BYTES) as u64;
    let body_crc = crc32c(&fixed[CATALOG_HEADER_BYTES..]);
    fixed[48..56].copy_from_slice(&body_len.to_le_bytes());
    fixed[72..76].copy_from_slice(&body_crc.to_le_bytes());
    seal_at(&mut fixed, 0, CATALOG_HEADER_BYTES);
    check(&fixed);
});
