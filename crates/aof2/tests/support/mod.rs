//! Shared helpers for the black-box tests in `tests/`.
//!
//! Each test file pulls these in with `mod support;` and uses only a part of them, so unused
//! items are expected here and not a sign of dead code.
#![allow(dead_code)]

pub mod s3;
