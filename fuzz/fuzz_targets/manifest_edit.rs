//! `Edit::decode` (one manifest edit body, all 16 tags): never panics; an edit that decodes
//! re-encodes to exactly its bytes (the decoder refuses trailing bytes, so the encoding is
//! canonical).
#![no_main]

use aof2::format::manifest::Edit;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(edit) = Edit::decode(data) else {
        return;
    };
    assert_eq!(edit.encode(), data, "{edit:?} re-encodes differently");
});
