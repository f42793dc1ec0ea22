//! `SegmentFooter::decode` (the last 96 bytes of a sealed segment): never panics, and neither do
//! the methods callers use on a decoded footer (`file_len`, `stored_crc`); what it accepts
//! re-encodes to the same fields and the same bytes outside the reserved range.
#![no_main]

use aof2::format::segment::SegmentFooter;
use aof2::limits::SEGMENT_FOOTER_BYTES;
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

const FOOTER: usize = SEGMENT_FOOTER_BYTES as usize;

fn check(bytes: &[u8]) {
    let Ok(footer) = SegmentFooter::decode(bytes) else {
        return;
    };
    let encoded = footer.encode();
    assert_eq!(SegmentFooter::decode(&encoded), Ok(footer));
    assert_eq!(&encoded[..76], &bytes[..76], "fields re-encode differently");
    if bytes[76..92].iter().all(|&b| b == 0) {
        assert_eq!(&encoded[..], &bytes[..FOOTER]);
        assert_eq!(
            SegmentFooter::stored_crc(&encoded),
            u32::from_le_bytes(bytes[92..96].try_into().unwrap())
        );
    }
    // Every reader of a footer from disk computes the file length it describes
    // (`segment::read_footer`, Tier 1 open, recovery).
    let _ = footer.file_len();
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, FOOTER);
    check(&fixed);
});
