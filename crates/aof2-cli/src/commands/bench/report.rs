//! The benchmark's results and how they are printed.
//!
//! Contract: [`Report`] serializes to the one JSON object `aof2 bench --json` prints (field names
//! are a stable interface: `records`, `record_size`, `writers`, `durability`,
//! `append_records_per_sec`, `append_mb_per_sec`, `append_latency_us.{p50,p99,p999,max,mean}`,
//! `fsyncs`, `fsync_mean_us`, `group_commit_ceiling_per_sec`, `group_commit_efficiency`,
//! `read_records_per_sec`, `reopen_ms`, `compression_ratio`,
//! `tier1_compress_mb_per_sec`, `read_tier1_records_per_sec`, `peak_rss_bytes`,
//! `tier0_peak_bytes`, `compression_level`, `tier2_upload_mb_per_sec`,
//! `read_tier2_records_per_sec`, `tier2_segments_uploaded`, `tier2_breaker`, among others; the
//! `tier2*` and `read_tier2*` fields are null with `--tier2 none`). MB is 10^6 bytes (of payload, except
//! for compression, which counts the uncompressed bytes it compressed). [`Report::write_human`]
//! prints the same numbers for people.

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
    /// Tier 0 budget of the manager, bytes.
    pub tier0_max_bytes: u64,
    /// Tier 1 budget, bytes; `None` (JSON null) when unlimited.
    pub tier1_max_bytes: Option<u64>,
    /// Compression setting, as `--compression` spells it.
    pub compression: String,
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
    /// `always` only (else null): one 4 KiB append plus fdatasync into a file beside the data,
    /// timed on its own before the run ([`super::probe`]).
    pub fdatasync_probe_us: Option<Summary>,
    /// `writers` ÷ the probe's p50: what closed-loop group commit could reach on this device.
    pub group_commit_ceiling_per_sec: Option<f64>,
    /// `append_records_per_sec` ÷ `group_commit_ceiling_per_sec`.
    pub group_commit_efficiency: Option<f64>,
    pub segments_rolled: u64,
    /// Segments prepared in the file of an evicted one instead of a new file.
    pub segments_recycled: u64,
    pub rollover_waits: u64,
    pub backpressure_waits: u64,
    /// Untimed-for-throughput `flush` after the appends (makes `none`/`interval` data durable).
    pub final_flush_ms: f64,
    pub read_secs: f64,
    pub read_records_per_sec: f64,
    pub read_mb_per_sec: f64,
    /// `AofManager::open` plus `open_log` of the benchmark log after a clean close.
    pub reopen_ms: f64,
    /// How long compression still had to run after the read-back (0 if it had kept up).
    pub tier1_wait_secs: f64,
    /// Segments compressed into Tier 1 by the first manager (both logs).
    pub segments_compressed: u64,
    /// Uncompressed ÷ compressed bytes of those segments (0 if none was sealed).
    pub compression_ratio: f64,
    /// Compression speed, uncompressed MB per second of worker time.
    pub tier1_compress_mb_per_sec: f64,
    /// zstd level the next compression would have used (where adaptive compression settled).
    pub compression_level: i32,
    /// Highest Tier 0 use of the first manager, bytes.
    pub tier0_peak_bytes: u64,
    /// Tier 0 bytes released by `evict_tier0` before the Tier 1 read.
    pub tier0_evicted_bytes: u64,
    pub read_tier1_secs: f64,
    pub read_tier1_records_per_sec: f64,
    pub read_tier1_mb_per_sec: f64,
    /// Tier 2 store URL; `None` with `--tier2 none` (and then every `tier2*`/`read_tier2*` field
    /// is null too).
    pub tier2: Option<String>,
    /// How long uploads still had to run after the Tier 1 copies were complete.
    pub tier2_wait_secs: Option<f64>,
    /// Segments uploaded by the first manager (both logs).
    pub tier2_segments_uploaded: Option<u64>,
    /// Bytes (Tier 1 files) uploaded by the first manager.
    pub tier2_upload_bytes: Option<u64>,
    /// Upload speed: `tier2_upload_bytes` ÷ the time uploads took, summed over concurrent
    /// uploads (`Tier2Stats::upload_mb_per_sec`), so the speed of one upload stream, not the
    /// wall-clock rate (uploads overlap the appends and the compression).
    pub tier2_upload_mb_per_sec: Option<f64>,
    /// Circuit breaker state after the uploads: "closed", "open" or "half-open".
    pub tier2_breaker: Option<String>,
    /// Failed Tier 2 request attempts of the first manager.
    pub tier2_request_failures: Option<u64>,
    /// Tier 1 bytes released by `evict_tier1` before the Tier 2 read.
    pub tier1_evicted_bytes: Option<u64>,
    /// Sealed segments read back from Tier 2 (each one only there).
    pub read_tier2_segments: Option<u64>,
    /// Records read back from Tier 2: this run's records in sealed segments (not the active one).
    pub read_tier2_records: Option<u64>,
    pub read_tier2_secs: Option<f64>,
    pub read_tier2_records_per_sec: Option<f64>,
    pub read_tier2_mb_per_sec: Option<f64>,
    /// Ranged GETs of the Tier 2 read, and the bytes they returned (compressed frames).
    pub tier2_ranged_gets: Option<u64>,
    pub tier2_download_bytes: Option<u64>,
    /// Peak resident set size of the process after the warm-up (`VmHWM`), bytes; 0 if unknown.
    pub peak_rss_bytes: u64,
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
            "  tiers:         Tier 0 budget {} B, Tier 1 budget {}, compression {}",
            self.tier0_max_bytes,
            self.tier1_max_bytes
                .map_or_else(|| "unlimited".to_string(), |b| format!("{b} B")),
            self.compression
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
        if let (Some(probe), Some(ceiling), Some(efficiency)) = (
            self.fdatasync_probe_us,
            self.group_commit_ceiling_per_sec,
            self.group_commit_efficiency,
        ) {
            writeln!(
                out,
                "  group commit:  {:.1} records per fsync; a lone 4 KiB append + fdatasync here \
                 takes p50 {:.1} us, so {} writers could reach {:.0} records/s; reached {:.1} %",
                self.records as f64 / self.fsyncs.max(1) as f64,
                probe.p50,
                self.writers,
                ceiling,
                efficiency * 100.0
            )?;
        }
        writeln!(
            out,
            "  segments:      {} rolled ({} in reused files), {} rollover waits, {} backpressure waits",
            self.segments_rolled,
            self.segments_recycled,
            self.rollover_waits,
            self.backpressure_waits
        )?;
        writeln!(out, "  final flush:   {:.1} ms", self.final_flush_ms)?;
        writeln!(
            out,
            "  read + verify: {:.3} s, {:.0} records/s, {:.1} MB/s",
            self.read_secs, self.read_records_per_sec, self.read_mb_per_sec
        )?;
        writeln!(out, "  reopen:        {:.2} ms", self.reopen_ms)?;
        writeln!(
            out,
            "  tier 1:        {} segments compressed, ratio {:.2}x, {:.1} MB/s, level now {}; \
             waited {:.3} s after the read",
            self.segments_compressed,
            self.compression_ratio,
            self.tier1_compress_mb_per_sec,
            self.compression_level,
            self.tier1_wait_secs
        )?;
        writeln!(
            out,
            "  tier 0:        peak {:.1} MiB, {:.1} MiB evicted before the Tier 1 read",
            mib(self.tier0_peak_bytes),
            mib(self.tier0_evicted_bytes)
        )?;
        writeln!(
            out,
            "  read tier 1:   {:.3} s, {:.0} records/s, {:.1} MB/s",
            self.read_tier1_secs, self.read_tier1_records_per_sec, self.read_tier1_mb_per_sec
        )?;
        match (&self.tier2, self.read_tier2_secs) {
            (Some(url), Some(read_secs)) => {
                writeln!(
                    out,
                    "  tier 2:        {} segments uploaded ({:.1} MB) to {}, {:.1} MB/s per \
                     upload, breaker {}, {} failed requests; waited {:.3} s after Tier 1",
                    self.tier2_segments_uploaded.unwrap_or(0),
                    self.tier2_upload_bytes.unwrap_or(0) as f64 / 1e6,
                    url,
                    self.tier2_upload_mb_per_sec.unwrap_or(0.0),
                    self.tier2_breaker.as_deref().unwrap_or("-"),
                    self.tier2_request_failures.unwrap_or(0),
                    self.tier2_wait_secs.unwrap_or(0.0)
                )?;
                writeln!(
                    out,
                    "  read tier 2:   {:.3} s, {:.0} records/s, {:.1} MB/s ({} records of {} \
                     segments, {} ranged GETs, {:.1} MB fetched; {:.1} MiB of Tier 1 released)",
                    read_secs,
                    self.read_tier2_records_per_sec.unwrap_or(0.0),
                    self.read_tier2_mb_per_sec.unwrap_or(0.0),
                    self.read_tier2_records.unwrap_or(0),
                    self.read_tier2_segments.unwrap_or(0),
                    self.tier2_ranged_gets.unwrap_or(0),
                    self.tier2_download_bytes.unwrap_or(0) as f64 / 1e6,
                    mib(self.tier1_evicted_bytes.unwrap_or(0))
                )?;
            }
            _ => writeln!(out, "  tier 2:        none")?,
        }
        writeln!(out, "  peak RSS:      {:.1} MiB", mib(self.peak_rss_bytes))
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
