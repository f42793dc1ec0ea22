//! The device's own group-commit ceiling, measured next to the run.
//!
//! Contract: [`fdatasync_latency`] times `SAMPLES` rounds of "write 4 KiB at the end of what
//! was written, then `fdatasync`" into an unnamed temporary file in the given directory (so on
//! the same filesystem as the data root), after writing and syncing zeros over the whole range
//! first, as aof2 does for its durable segments (so no round pays for block allocation). The
//! file is gone when the probe returns. `writers ÷ p50` is the closed-loop group-commit ceiling
//! that the 85 % target refers to.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use super::latency::Summary;

/// Timed rounds.
const SAMPLES: usize = 256;
/// Bytes written per round.
const BLOCK: usize = 4096;

/// Latency of one 4 KiB append plus `fdatasync` in `dir`.
pub fn fdatasync_latency(dir: &Path) -> std::io::Result<Summary> {
    let mut file = tempfile::tempfile_in(dir)?;
    file.write_all(&vec![0u8; SAMPLES * BLOCK])?;
    file.sync_all()?;
    let block = [0xa5u8; BLOCK];
    let mut nanos = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let started = Instant::now();
        file.write_all_at(&block, (i * BLOCK) as u64)?;
        file.sync_data()?;
        nanos.push(started.elapsed().as_nanos() as u64);
    }
    Ok(Summary::from_nanos(&mut nanos))
}
