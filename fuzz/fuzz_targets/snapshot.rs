//! `decode_snapshot` (manifest snapshot file): never panics, allocates no more than the input
//! justifies; what it accepts re-encodes to the same generation and edits and, when the reserved
//! bytes are zero, to the same bytes.
#![no_main]

use aof2::format::crc32c_pair;
use aof2::format::manifest::{SNAPSHOT_HEADER_BYTES, decode_snapshot, encode_snapshot};
use aof2_fuzz::u32_at;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok((generation, edits)) = decode_snapshot(bytes) else {
        return;
    };
    let encoded = encode_snapshot(generation, &edits);
    assert_eq!(decode_snapshot(&encoded), Ok((generation, edits)));
    if bytes[10..16].iter().all(|&b| b == 0) {
        assert_eq!(&encoded[..], &bytes[..encoded.len()]);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // Fix the CRC over the header and the body its length field names.
    if data.len() >= SNAPSHOT_HEADER_BYTES {
        let mut fixed = data.to_vec();
        let body_len = u32_at(&fixed, 24).unwrap_or(0) as usize;
        let body_end = SNAPSHOT_HEADER_BYTES
            .saturating_add(body_len)
            .min(fixed.len());
        let crc = crc32c_pair(&fixed[..28], &fixed[SNAPSHOT_HEADER_BYTES..body_end]);
        fixed[28..32].copy_from_slice(&crc.to_le_bytes());
        check(&fixed);
    }
});
