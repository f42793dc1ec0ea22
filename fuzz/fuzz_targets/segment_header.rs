//! `SegmentHeader::decode` and `is_blank` (segment bytes 0..128): never panics; what it accepts
//! re-encodes to the same fields and the same bytes outside the reserved range.
#![no_main]

use aof2::format::segment::SegmentHeader;
use aof2::limits::SEGMENT_HEADER_BYTES;
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

const HEADER: usize = SEGMENT_HEADER_BYTES as usize;

fn check(bytes: &[u8]) {
    let blank = SegmentHeader::is_blank(bytes);
    let Ok(header) = SegmentHeader::decode(bytes) else {
        return;
    };
    assert!(!blank, "a blank header decoded");
    let encoded = header.encode();
    assert_eq!(SegmentHeader::decode(&encoded), Ok(header));
    assert_eq!(&encoded[..64], &bytes[..64], "fields re-encode differently");
    if bytes[64..124].iter().all(|&b| b == 0) {
        assert_eq!(&encoded[..], &bytes[..HEADER]);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, HEADER);
    check(&fixed);
});
