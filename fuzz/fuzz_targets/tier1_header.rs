//! `Tier1Header::decode` (Tier 1 file bytes 0..64): never panics; what it accepts re-encodes to
//! exactly its bytes (the header has no reserved bytes).
#![no_main]

use aof2::format::tier1::Tier1Header;
use aof2::limits::TIER1_HEADER_BYTES;
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

const HEADER: usize = TIER1_HEADER_BYTES as usize;

fn check(bytes: &[u8]) {
    let Ok(header) = Tier1Header::decode(bytes) else {
        return;
    };
    let encoded = header.encode();
    assert_eq!(Tier1Header::decode(&encoded), Ok(header));
    assert_eq!(&encoded[..], &bytes[..HEADER]);
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, HEADER);
    check(&fixed);
});
