//! `decode_frame_index` (a Tier 1 file's frame index, checked against its footer). The input is
//! a Tier 1 footer (64 bytes) followed by index bytes. Never panics, allocates no more than the
//! index bytes justify; what it accepts re-encodes to exactly the index bytes and is consistent
//! with the footer (contiguous frames, dense sequences, totals that add up).
#![no_main]

use aof2::format::crc32c;
use aof2::format::tier1::{
    TIER1_FRAMES_OFFSET, Tier1Footer, decode_frame_index, encode_frame_index,
};
use aof2::limits::{FRAME_HEADER_BYTES, TIER1_FOOTER_BYTES};
use aof2_fuzz::seal;
use libfuzzer_sys::fuzz_target;

const FOOTER: usize = TIER1_FOOTER_BYTES as usize;

fn check(footer: &Tier1Footer, index: &[u8]) {
    let Ok(entries) = decode_frame_index(index, footer) else {
        return;
    };
    assert_eq!(encode_frame_index(&entries), index);
    assert_eq!(entries.len(), footer.frame_count as usize);
    let mut offset = TIER1_FRAMES_OFFSET;
    let mut seq = footer.base_seq;
    let mut records = 0u64;
    let mut bytes = 0u64;
    for e in &entries {
        assert_eq!(e.compressed_offset, offset);
        assert_eq!(e.base_seq, seq);
        assert!(e.record_count > 0 && e.compressed_len > 0);
        assert!(e.uncompressed_len as u64 >= e.record_count as u64 * FRAME_HEADER_BYTES);
        assert_eq!(e.end_seq(), seq + e.record_count as u64);
        offset += e.compressed_len as u64;
        seq = e.end_seq();
        records += e.record_count as u64;
        bytes += e.uncompressed_len as u64;
    }
    assert_eq!(offset, footer.index_offset());
    assert_eq!(records, footer.record_count);
    assert_eq!(bytes, footer.uncompressed_records_bytes);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < FOOTER {
        return;
    }
    let (raw_footer, index) = data.split_at(FOOTER);
    if let Ok(footer) = Tier1Footer::decode(raw_footer) {
        check(&footer, index);
    }
    // Fixed up: magic, version, lengths, reserved bytes and both CRCs.
    let mut fixed: [u8; FOOTER] = raw_footer.try_into().unwrap();
    fixed[..8].copy_from_slice(b"AOF2T1FT");
    fixed[8..12].copy_from_slice(&[1, 0, 64, 0]);
    fixed[56..60].fill(0);
    fixed[28..32].copy_from_slice(&crc32c(index).to_le_bytes());
    seal(&mut fixed);
    if let Ok(footer) = Tier1Footer::decode(&fixed) {
        check(&footer, index);
        // The same footer with exactly as many index bytes as it names, when the input has them.
        let wanted = footer.index_len();
        if wanted < index.len() as u64 {
            let index = &index[..wanted as usize];
            let footer = Tier1Footer {
                index_crc: crc32c(index),
                ..footer
            };
            check(&footer, index);
        }
    }
});
