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
