//! `decode_wal_header` (manifest WAL file header, 32 bytes): never panics; the generation it
//! returns re-encodes to the same bytes outside the reserved ranges.
#![no_main]

use aof2::format::manifest::{WAL_HEADER_BYTES, decode_wal_header, encode_wal_header};
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(generation) = decode_wal_header(bytes) else {
        return;
    };
    let encoded = encode_wal_header(generation);
    assert_eq!(decode_wal_header(&encoded), Ok(generation));
    assert_eq!(&encoded[..10], &bytes[..10]);
    assert_eq!(&encoded[16..24], &bytes[16..24]);
    if bytes[10..16].iter().chain(&bytes[24..28]).all(|&b| b == 0) {
        assert_eq!(&encoded[..], &bytes[..WAL_HEADER_BYTES]);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, WAL_HEADER_BYTES);
    check(&fixed);
});
