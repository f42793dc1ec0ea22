//! The local S3 server of the Tier 2 tests: [`aof2_s3_local`], shared with `aof2-bench`.

#[allow(unused_imports)]
pub use aof2_s3_local::*;
