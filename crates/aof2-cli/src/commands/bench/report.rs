//! The benchmark's results and how they are printed.
//!
//! Contract: [`Report`] serializes to the one JSON object `aof2 bench --json` prints (field names
//! are a stable interface: `records`, `record_size`, `writers`, `durability`,
//! `append_records_per_sec`, `append_mb_per_sec`, `append_latency_us.{p50,p99,p999,max,mean}`,
//! `fsyncs`, `fsync_mean_us`, `read_records_per_sec`, `reopen_ms`, among others). MB is 10^6
//! bytes of payload. [`Report::write_human`] prints the same numbers for people.

use std::io::{self, Write};

use serde::Serialize;

use super::latency::Summary;

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub records: u64,
    pub record_size: u64,
    pub writers: u32,
    pub durability: String,
    pub segment_bytes: u64,
    /// Data root used; `None` for a temporary directory that has been removed.
    pub root: Option<String>,
    pub warmup_records: u64,
    pub append_secs: f64,
    pub append_records_per_sec: f64,
    pub append_mb_per_sec: f64,
    pub append_latency_us: Summary,
    /// Group commits (fdatasync rounds) during the timed appends.
    pub fsyncs: u64,
    pub fsync_mean_us: f64,
    pub fsync_max_us: f64,
    pub segments_rolled: u64,
    pub rollover_waits: u64,
    pub backpressure_waits: u64,
    /// Untimed-for-throughput `flush` after the appends (makes `none`/`interval` data durable).
    pub final_flush_ms: f64,
    pub read_secs: f64,
    pub read_records_per_sec: f64,
    pub read_mb_per_sec: f64,
    /// `AofManager::open` plus `open_log` of the benchmark log after a clean close.
    pub reopen_ms: f64,
}

impl Report {
    /// The human-readable report.
    pub fn write_human<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let l = &self.append_latency_us;
        writeln!(
            out,
            "aof2 bench: {} records x {} B, {} writer(s), durability {}, segments of {} B",
            self.records, self.record_size, self.writers, self.durability, self.segment_bytes
        )?;
        writeln!(
            out,
            "  root:          {}",
            self.root
                .as_deref()
                .unwrap_or("(temporary directory, removed)")
        )?;
        writeln!(
            out,
            "  append:        {:.3} s, {:.0} records/s, {:.1} MB/s",
            self.append_secs, self.append_records_per_sec, self.append_mb_per_sec
        )?;
        writeln!(
            out,
            "  latency (us):  p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p99, l.p999, l.max, l.mean
        )?;
        writeln!(
            out,
            "  fsyncs:        {} (mean {:.1} us, max {:.1} us)",
            self.fsyncs, self.fsync_mean_us, self.fsync_max_us
        )?;
        writeln!(
            out,
            "  segments:      {} rolled, {} rollover waits, {} backpressure waits",
            self.segments_rolled, self.rollover_waits, self.backpressure_waits
        )?;
        writeln!(out, "  final flush:   {:.1} ms", self.final_flush_ms)?;
        writeln!(
            out,
            "  read + verify: {:.3} s, {:.0} records/s, {:.1} MB/s",
            self.read_secs, self.read_records_per_sec, self.read_mb_per_sec
        )?;
        writeln!(out, "  reopen:        {:.2} ms", self.reopen_ms)
    }
}
