//! `Claim::decode` (a writer claim object in Tier 2, 96 bytes): never panics; what it accepts is
//! exactly 96 bytes and re-encodes to the same fields and, when the reserved bytes are zero, to
//! the same bytes.
#![no_main]

use aof2::format::catalog::{CLAIM_BYTES, Claim};
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(claim) = Claim::decode(bytes) else {
        return;
    };
    assert_eq!(bytes.len(), CLAIM_BYTES);
    let encoded = claim.encode();
    assert_eq!(Claim::decode(&encoded), Ok(claim));
    assert_eq!(&encoded[..10], &bytes[..10]);
    assert_eq!(&encoded[16..64], &bytes[16..64]);
    if bytes[10..16].iter().chain(&bytes[64..92]).all(|&b| b == 0) {
        assert_eq!(&encoded[..], bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, CLAIM_BYTES);
    check(&fixed);
});
