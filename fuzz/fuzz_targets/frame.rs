//! `decode_frame` and `peek_frame` (a record frame: 32-byte header + payload): never panic; a
//! frame that decodes re-encodes to exactly its bytes, and `peek_frame` agrees with it.
#![no_main]

use aof2::format::segment::{decode_frame, encode_frame, peek_frame};
use aof2::limits::FRAME_HEADER_BYTES;
use aof2_fuzz::fix_frames;
use libfuzzer_sys::fuzz_target;

const FRAME: usize = FRAME_HEADER_BYTES as usize;

fn check(bytes: &[u8]) {
    let Ok(header) = decode_frame(bytes) else {
        return;
    };
    let end = FRAME + header.len as usize;
    assert!(end <= bytes.len(), "frame runs past its input");
    assert_eq!(peek_frame(bytes), header);
    let mut encoded = vec![0u8; end];
    encode_frame(&mut encoded, &header, &bytes[FRAME..end]);
    assert_eq!(&encoded[..], &bytes[..end], "frame re-encodes differently");
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    fix_frames(&mut fixed, 0);
    check(&fixed);
});
