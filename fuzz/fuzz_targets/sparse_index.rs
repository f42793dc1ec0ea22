//! `decode_index` (a segment's sparse index, 24 bytes per entry): never panics; what it accepts
//! is strictly ascending and re-encodes to exactly its bytes.
#![no_main]

use aof2::format::segment::{decode_index, encode_index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(entries) = decode_index(data) else {
        return;
    };
    assert_eq!(entries.len() * 24, data.len());
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].offset < w[1].offset)
    );
    assert_eq!(encode_index(&entries), data);
});
