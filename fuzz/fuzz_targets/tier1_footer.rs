//! `Tier1Footer::decode` (the last 64 bytes of a Tier 1 file) and the methods callers use on a
//! decoded footer (`index_offset`, `index_len`, `file_len`, `check_header`, `stored_crc`): never
//! panic; what it accepts re-encodes to exactly its bytes and describes a layout that fits.
#![no_main]

use aof2::format::tier1::{TIER1_FRAMES_OFFSET, Tier1Footer, Tier1Header};
use aof2::limits::TIER1_FOOTER_BYTES;
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

const FOOTER: usize = TIER1_FOOTER_BYTES as usize;

fn check(bytes: &[u8]) {
    let Ok(footer) = Tier1Footer::decode(bytes) else {
        return;
    };
    let encoded = footer.encode();
    assert_eq!(Tier1Footer::decode(&encoded), Ok(footer));
    assert_eq!(&encoded[..], &bytes[..FOOTER]);
    assert_eq!(
        Tier1Footer::stored_crc(&encoded),
        u32::from_le_bytes(bytes[60..64].try_into().unwrap())
    );
    assert!(footer.index_offset() >= TIER1_FRAMES_OFFSET);
    assert_eq!(
        footer.index_offset() + footer.index_len(),
        footer.seg_tail_offset
    );
    assert!(footer.file_len() > footer.seg_tail_offset);
    // A header from the rest of the input, if there is one.
    if let Ok(header) = Tier1Header::decode(&bytes[FOOTER..]) {
        let _ = footer.check_header(&header);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, FOOTER);
    seal_at(&mut fixed, FOOTER, FOOTER);
    check(&fixed);
});
