//! Shared helpers for the black-box tests in `tests/`.
//!
//! Each test file pulls these in with `mod support;` and uses only a part of them, so unused
//! items are expected here and not a sign of dead code.
#![allow(dead_code)]

pub mod s3;

/// Copy a directory tree (files as the page cache holds them: a crash image when nothing runs).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `count` incompressible payloads of `len` bytes (a Tier 1 file about as large as the records).
pub fn incompressible(count: usize, len: usize) -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}
