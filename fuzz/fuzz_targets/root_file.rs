//! `RootFile::decode` (`aof2.root`, 64 bytes): never panics; what it accepts re-encodes to the
//! same fields and, when the reserved bytes are zero, to the same bytes.
#![no_main]

use aof2::format::root::{ROOT_FILE_BYTES, RootFile};
use aof2_fuzz::seal_at;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    let Ok(root) = RootFile::decode(bytes) else {
        return;
    };
    let encoded = root.encode();
    assert_eq!(RootFile::decode(&encoded), Ok(root));
    let reserved_zero = bytes[10..16].iter().chain(&bytes[40..60]).all(|&b| b == 0);
    if reserved_zero {
        assert_eq!(&encoded[..], &bytes[..ROOT_FILE_BYTES]);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut fixed = data.to_vec();
    seal_at(&mut fixed, 0, ROOT_FILE_BYTES);
    check(&fixed);
});
