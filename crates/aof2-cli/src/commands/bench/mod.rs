//! `aof2 bench`: append throughput and latency, read-back speed, reopen time.
//!
//! Contract: works in `--root` (the logs `warmup` and `bench` in it are appended to) or in a
//! temporary directory that is removed afterwards. Phases, in order:
//! 1. warm-up (untimed): `min(N/10, 10000)` records into the log `warmup`, same writers; then
//!    as much anonymous memory as the run will fill is touched once and freed (first touch of
//!    fresh memory is slow on VMs). The library prepares a log's next segments only from its
//!    first append on (readers never pay for it), so the timed phase starts that preparation.
//!    With `always`, [`probe`] then times one 4 KiB append + fdatasync in a file beside the data
//!    (the closed-loop ceiling `writers ÷ p50` that group commit is reported against);
//! 2. timed appends: `N` records of `B` bytes into `bench`, split evenly over `W` threads, each
//!    calling `Aof::append` (which in `always` mode returns only once durable); each append is
//!    timed on its own (buffered modes: one in 8, see `BUFFERED_LATENCY_SAMPLE`) and the payload is built before the clock starts, into a reused buffer,
//!    so the loop allocates nothing per record;
//! 3. an explicit `flush` (reported separately) so every mode has everything durable;
//! 4. read back and verify every record from where this run started (each payload carries its
//!    id, see [`payload`]); a mismatch is corruption (exit 3);
//! 5. wait (at most [`TIER1_TIMEOUT`], else exit 4) until every sealed segment has its Tier 1
//!    copy — compression runs in the background from the first sealed segment on — and take the
//!    manager's tier statistics (compression ratio and speed, level, Tier 0 peak);
//!    With Tier 2, then wait (at most [`TIER2_TIMEOUT`], else exit 4) until every sealed segment
//!    is uploaded and the catalog lists it — uploads run in the background from the first Tier 1
//!    copy on — and take the Tier 2 statistics (upload speed, breaker state);
//! 6. close the manager, then time `AofManager::open` + `open_log` and check the record count
//!    (with Tier 2 this includes claiming the log's writer epoch and publishing its catalog);
//! 7. evict every Tier 0 copy that Tier 1 holds (`evict_tier0`), then read back and verify every
//!    record of this run again, now decompressed from Tier 1 (the active segment stays in Tier 0);
//! 8. with Tier 2: release every Tier 1 copy that Tier 2 holds (`evict_tier1`), then read back and
//!    verify every record of this run's sealed segments, now only in Tier 2 (one ranged GET per
//!    frame, then decompression); the active segment is not read. Without Tier 2
//!    (`--tier2 none`) the Tier 2 fields of the report are null.
//!
//! Every manager is opened with the storage options (`--tier0-max-bytes`, `--tier1-max-bytes`,
//! `--compression`, `--tier2`; the default Tier 2 store is a directory in the data root, so the
//! run exercises all three tiers with no set-up). The peak RSS is the process's `VmHWM` after
//! the run, reset once the warm-up's memory was returned (see [`rss`]); it includes the mapped
//! segment pages.
//!
//! The report goes to stdout (one JSON object with `--json`); the progress bar goes to stderr and
//! is hidden when stderr is not a terminal.

mod latency;
mod payload;
mod probe;
mod report;
mod rss;

use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use aof2::{Aof, AofManager, LogConfig, SegmentState, TierLocation};
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{BenchArgs, compression_name};
use crate::failure::{Failure, stdout_error};
use crate::open::{check_config, manager_config};
use latency::Summary;
use payload::{IdSet, PayloadBuilder};
use report::Report;

/// Name of the timed log.
pub const BENCH_LOG: &str = "bench";
/// Name of the warm-up log.
pub const WARMUP_LOG: &str = "warmup";
/// Buffered runs time one append in this many.
const BUFFERED_LATENCY_SAMPLE: u64 = 8;
/// Records between progress-bar updates (per writer).
const PROGRESS_STEP: u64 = 65_536;
/// Longest wait for the Tier 1 copies after the read phase.
const TIER1_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the Tier 2 uploads after the Tier 1 copies.
const TIER2_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `aof2 bench`.
pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    let config = LogConfig {
        durability: args.durability,
        ..LogConfig::default().with_segment_bytes(args.storage.segment_bytes)
    };
    check_config(&config, &args.storage)?;
    if args.record_size > config.max_record_bytes {
        return Err(Failure::usage(format!(
            "--record-size {} exceeds the largest record of this configuration ({} bytes)",
            args.record_size, config.max_record_bytes
        )));
    }
    let (root, temporary) = match &args.root {
        Some(root) => (root.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("aof2-bench-")
                .tempdir()
                .map_err(|e| Failure::environment(format!("create a temporary root: {e}")))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    let report = measure(&root, args, &config)?;
    let report = Report {
        root: temporary.is_none().then(|| root.display().to_string()),
        ..report
    };
    drop(temporary);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
            .map_err(stdout_error)
    } else {
        report.write_human(&mut out).map_err(stdout_error)
    }
}

/// How the records are split over the writers.
#[derive(Debug, Clone, Copy)]
struct Plan {
    records: u64,
    size: usize,
    writers: u32,
}

impl Plan {
    /// Ids `start..end` written by writer `w`.
    fn share(&self, w: u32) -> std::ops::Range<u64> {
        let writers = u64::from(self.writers);
        let (base, extra) = (self.records / writers, self.records % writers);
        let w = u64::from(w);
        let start = w * base + w.min(extra);
        start..start + base + u64::from(w < extra)
    }
}

fn measure(root: &Path, args: &BenchArgs, config: &LogConfig) -> Result<Report, Failure> {
    let size = usize::try_from(args.record_size)
        .map_err(|_| Failure::usage("--record-size does not fit in memory"))?;
    let plan = Plan {
        records: args.records,
        size,
        writers: args.writers,
    };
    let warmup = Plan {
        records: (args.records / 10).min(10_000),
        ..plan
    };
    let manager = AofManager::open(manager_config(root, &args.storage)?)?;
    let tier2_url = manager.config().tier2.as_ref().map(|t| t.url.clone());

    // 1. Warm-up.
    let warm_log = manager.open_log(WARMUP_LOG, config.clone())?;
    append_phase(&warm_log, warmup, &ProgressBar::hidden())?;
    warm_log.close()?;
    drop(warm_log);

    // Fresh memory is slow to touch the first time on these VMs; touch (and return) as much as
    // the timed run will put in the page cache, so the run measures aof2, not the hypervisor.
    let volume = plan
        .records
        .saturating_mul(plan.size as u64 + aof2::limits::FRAME_HEADER_BYTES);
    warm_memory(
        volume
            .saturating_add(config.segment_bytes * 4)
            .min(MAX_WARM_BYTES),
    );
    rss::reset_peak_rss();

    // With `always`, what one fdatasync costs on this device right now: the ceiling that group
    // commit is judged against.
    let fdatasync_probe = if config.durability == aof2::Durability::Always {
        Some(probe::fdatasync_latency(root).map_err(|e| {
            Failure::environment(format!("time fdatasync in {}: {e}", root.display()))
        })?)
    } else {
        None
    };

    // 2. Timed appends.
    let log = manager.open_log(BENCH_LOG, config.clone())?;
    let start_seq = log.next_seq();
    let progress = progress_bar(plan.records, "append");
    let (append_time, mut latencies) = append_phase(&log, plan, &progress)?;
    progress.finish_and_clear();
    let stats = log.stats();

    // 3. Make everything durable.
    let flush_started = Instant::now();
    log.flush()?;
    let final_flush = flush_started.elapsed();

    // 4. Read back and verify.
    let progress = progress_bar(plan.records, "read");
    let read_time = read_phase(&log, start_seq, plan.records, plan, &progress)?;
    progress.finish_and_clear();

    // 5. Let compression catch up.
    let wait_started = Instant::now();
    if !manager.wait_for_tier1(&log, TIER1_TIMEOUT) {
        return Err(Failure::environment(format!(
            "sealed segments of log {BENCH_LOG:?} still lack a Tier 1 copy after {} s",
            TIER1_TIMEOUT.as_secs()
        )));
    }
    let tier1_wait = wait_started.elapsed();
    let mut tier2_wait = None;
    if tier2_url.is_some() {
        let wait_started = Instant::now();
        if !crate::open::wait_for_tier2(&manager, &log, TIER2_TIMEOUT)? {
            let breaker = manager.tier_stats().tier2.map_or("-", |t| t.breaker);
            return Err(Failure::environment(format!(
                "sealed segments of log {BENCH_LOG:?} are still not all in Tier 2 after {} s \
                 (circuit breaker {breaker})",
                TIER2_TIMEOUT.as_secs()
            )));
        }
        tier2_wait = Some(wait_started.elapsed());
    }
    let tiers = manager.tier_stats();

    // 6. Reopen.
    let end_seq = log.next_seq();
    drop(log);
    manager.close()?;
    drop(manager);
    let reopen_started = Instant::now();
    let manager = AofManager::open(manager_config(root, &args.storage)?)?;
    let log = manager.open_log(BENCH_LOG, config.clone())?;
    let reopen = reopen_started.elapsed();
    if log.next_seq() != end_seq {
        return Err(Failure::corruption(format!(
            "after reopening, log {BENCH_LOG:?} has {} records, expected {end_seq}",
            log.next_seq()
        )));
    }

    // 7. Read back from Tier 1.
    let evicted = manager.evict_tier0(&log)?;
    let progress = progress_bar(plan.records, "tier 1");
    let read_tier1_time = read_phase(&log, start_seq, plan.records, plan, &progress)?;
    progress.finish_and_clear();

    // 8. Read back from Tier 2.
    let tier2_read = if tier2_url.is_some() {
        Some(tier2_read_phase(&manager, &log, start_seq, plan)?)
    } else {
        None
    };
    drop(log);
    manager.close()?;
    let peak_rss_bytes = rss::peak_rss_bytes();

    let payload_mb = (plan.records as f64) * (plan.size as f64) / 1e6;
    let append_records_per_sec = per_sec(plan.records as f64, append_time);
    let group_commit_ceiling_per_sec = fdatasync_probe
        .filter(|p| p.p50 > 0.0)
        .map(|p| f64::from(plan.writers) * 1e6 / p.p50);
    Ok(Report {
        records: plan.records,
        record_size: args.record_size,
        writers: plan.writers,
        durability: config.durability.name(),
        segment_bytes: config.segment_bytes,
        tier0_max_bytes: args.storage.tier0_max_bytes,
        tier1_max_bytes: args.storage.tier1_max_bytes,
        compression: compression_name(args.storage.compression),
        root: None,
        warmup_records: warmup.records,
        append_secs: append_time.as_secs_f64(),
        append_records_per_sec,
        append_mb_per_sec: per_sec(payload_mb, append_time),
        append_latency_us: Summary::from_nanos(&mut latencies),
        fsyncs: stats.flushes,
        fsync_mean_us: stats.fsync_mean_us,
        fsync_max_us: stats.fsync_max_us,
        fdatasync_probe_us: fdatasync_probe,
        group_commit_ceiling_per_sec,
        group_commit_efficiency: group_commit_ceiling_per_sec.map(|c| append_records_per_sec / c),
        segments_rolled: stats.segments_rolled,
        segments_recycled: stats.segments_recycled,
        rollover_waits: stats.rollover_waits,
        backpressure_waits: stats.backpressure_waits,
        final_flush_ms: ms(final_flush),
        read_secs: read_time.as_secs_f64(),
        read_records_per_sec: per_sec(plan.records as f64, read_time),
        read_mb_per_sec: per_sec(payload_mb, read_time),
        reopen_ms: ms(reopen),
        tier1_wait_secs: tier1_wait.as_secs_f64(),
        segments_compressed: tiers.segments_compressed,
        compression_ratio: tiers.compression_ratio(),
        tier1_compress_mb_per_sec: tiers.compress_mb_per_sec(),
        compression_level: tiers.compression_level,
        tier0_peak_bytes: tiers.tier0_peak_bytes,
        tier0_evicted_bytes: evicted,
        read_tier1_secs: read_tier1_time.as_secs_f64(),
        read_tier1_records_per_sec: per_sec(plan.records as f64, read_tier1_time),
        read_tier1_mb_per_sec: per_sec(payload_mb, read_tier1_time),
        tier2: tier2_url,
        tier2_wait_secs: tier2_wait.map(|d| d.as_secs_f64()),
        tier2_segments_uploaded: tiers.tier2.as_ref().map(|t| t.segments_uploaded),
        tier2_upload_bytes: tiers.tier2.as_ref().map(|t| t.upload_bytes),
        tier2_upload_mb_per_sec: tiers.tier2.as_ref().map(|t| t.upload_mb_per_sec()),
        tier2_breaker: tiers.tier2.as_ref().map(|t| t.breaker.to_string()),
        tier2_request_failures: tiers.tier2.as_ref().map(|t| t.request_failures),
        tier1_evicted_bytes: tier2_read.as_ref().map(|r| r.tier1_evicted_bytes),
        read_tier2_segments: tier2_read.as_ref().map(|r| r.segments),
        read_tier2_records: tier2_read.as_ref().map(|r| r.records),
        read_tier2_secs: tier2_read.as_ref().map(|r| r.time.as_secs_f64()),
        read_tier2_records_per_sec: tier2_read
            .as_ref()
            .map(|r| per_sec(r.records as f64, r.time)),
        read_tier2_mb_per_sec: tier2_read
            .as_ref()
            .map(|r| per_sec(r.records as f64 * plan.size as f64 / 1e6, r.time)),
        tier2_ranged_gets: tier2_read.as_ref().map(|r| r.ranged_gets),
        tier2_download_bytes: tier2_read.as_ref().map(|r| r.download_bytes),
        peak_rss_bytes,
    })
}

/// What the Tier 2 read phase measured.
#[derive(Debug)]
struct Tier2Read {
    tier1_evicted_bytes: u64,
    /// Sealed segments read, every one only in Tier 2.
    segments: u64,
    records: u64,
    time: Duration,
    /// Ranged GETs and bytes of the read (the reopened manager's counters).
    ranged_gets: u64,
    download_bytes: u64,
}

/// Release the Tier 1 copies that Tier 2 holds, then read and verify every record of this run's
/// sealed segments (`start_seq` up to the active segment), which are now only in Tier 2.
fn tier2_read_phase(
    manager: &AofManager,
    log: &Aof,
    start_seq: u64,
    plan: Plan,
) -> Result<Tier2Read, Failure> {
    let tier1_evicted_bytes = manager.evict_tier1(log)?;
    let info = manager.log_info(log);
    let sealed: Vec<_> = info
        .segments
        .iter()
        .filter(|s| s.state == SegmentState::Sealed && s.end_seq > start_seq)
        .collect();
    // Only Tier 2 holds a sealed segment that neither Tier 0 nor Tier 1 does.
    if let Some(local) = sealed.iter().find(|s| s.tier != TierLocation::None) {
        return Err(Failure::environment(format!(
            "segment {:016x} of log {BENCH_LOG:?} is still in Tier {} after the Tier 0 and \
             Tier 1 evictions",
            local.id,
            local.tier.name()
        )));
    }
    let end = sealed.iter().map(|s| s.end_seq).max().unwrap_or(start_seq);
    let records = end.saturating_sub(start_seq);
    let before = manager.tier_stats().tier2;
    let progress = progress_bar(records, "tier 2");
    let time = read_phase(log, start_seq, records, plan, &progress)?;
    progress.finish_and_clear();
    let after = manager.tier_stats().tier2;
    let (ranged_gets, download_bytes) = match (before, after) {
        (Some(b), Some(a)) => (
            a.ranged_gets.saturating_sub(b.ranged_gets),
            a.download_bytes.saturating_sub(b.download_bytes),
        ),
        _ => (0, 0),
    };
    Ok(Tier2Read {
        tier1_evicted_bytes,
        segments: sealed.len() as u64,
        records,
        time,
        ranged_gets,
        download_bytes,
    })
}

/// Most memory the warm-up touches.
const MAX_WARM_BYTES: u64 = 4 << 30;

/// Touch `bytes` of anonymous memory once and give it back.
fn warm_memory(bytes: u64) {
    let Ok(len) = usize::try_from(bytes) else {
        return;
    };
    let mut block: Vec<u8> = Vec::new();
    if block.try_reserve_exact(len).is_err() {
        return;
    }
    block.resize(len, 1);
    std::hint::black_box(&block);
}

fn per_sec(amount: f64, time: Duration) -> f64 {
    let secs = time.as_secs_f64();
    if secs > 0.0 { amount / secs } else { 0.0 }
}

fn ms(time: Duration) -> f64 {
    time.as_secs_f64() * 1000.0
}

fn progress_bar(len: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(what);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>6} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Append `plan.records` records with `plan.writers` threads. Returns the wall time from the
/// moment every writer is ready until the last append returned, and every append's latency (ns).
fn append_phase(
    log: &Aof,
    plan: Plan,
    progress: &ProgressBar,
) -> Result<(Duration, Vec<u64>), Failure> {
    let ready = Barrier::new(plan.writers as usize + 1);
    // Reading the clock twice costs about as much as a buffered append of a small record, so
    // buffered runs time one append in `BUFFERED_LATENCY_SAMPLE` (still hundreds of thousands of
    // samples); durable appends are all timed.
    let sample_every = if log.durability() == aof2::Durability::Always {
        1
    } else {
        BUFFERED_LATENCY_SAMPLE
    };
    let (elapsed, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..plan.writers)
            .map(|w| {
                let ready = &ready;
                s.spawn(move || {
                    writer(log, plan.share(w), plan.size, ready, progress, sample_every)
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (started.elapsed(), results)
    });
    let mut latencies = Vec::with_capacity(plan.records as usize);
    for result in results {
        let mut mine = result.map_err(|_| Failure::environment("a writer thread panicked"))??;
        latencies.append(&mut mine);
    }
    Ok((elapsed, latencies))
}

/// One writer: append the records with ids in `ids`, timing each append.
fn writer(
    log: &Aof,
    ids: std::ops::Range<u64>,
    size: usize,
    ready: &Barrier,
    progress: &ProgressBar,
    sample_every: u64,
) -> Result<Vec<u64>, aof2::Error> {
    let mut builder = PayloadBuilder::new(size);
    let mut latencies = Vec::with_capacity(((ids.end - ids.start) / sample_every + 1) as usize);
    ready.wait();
    let mut unreported = 0;
    for id in ids {
        let payload = builder.build(id);
        if id % sample_every == 0 {
            let started = Instant::now();
            log.append(payload)?;
            latencies.push(started.elapsed().as_nanos() as u64);
        } else {
            log.append(payload)?;
        }
        unreported += 1;
        if unreported == PROGRESS_STEP {
            progress.inc(unreported);
            unreported = 0;
        }
    }
    progress.inc(unreported);
    Ok(latencies)
}

/// Read `records` records from `start_seq` and check each (payload, and every id at most once);
/// returns the time taken.
fn read_phase(
    log: &Aof,
    start_seq: u64,
    records: u64,
    plan: Plan,
    progress: &ProgressBar,
) -> Result<Duration, Failure> {
    let mut builder = PayloadBuilder::new(plan.size);
    let mut seen = IdSet::new(plan.records);
    let mut count = 0u64;
    let started = Instant::now();
    let limit = usize::try_from(records).unwrap_or(usize::MAX);
    for record in log.reader(start_seq).take(limit) {
        let record = record?;
        let bad = |detail: String| {
            Failure::corruption(format!(
                "log {BENCH_LOG:?} record {}: {detail}",
                record.seq()
            ))
        };
        match builder.check(record.payload()).map_err(bad)? {
            Some(id) if !seen.insert(id) => {
                return Err(bad(format!("record id {id} is duplicate or out of range")));
            }
            _ => {}
        }
        count += 1;
        if count.is_multiple_of(PROGRESS_STEP) {
            progress.inc(PROGRESS_STEP);
        }
    }
    let elapsed = started.elapsed();
    if count != records {
        return Err(Failure::corruption(format!(
            "read back {count} records from log {BENCH_LOG:?}, expected {records}"
        )));
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_id_once() {
        for (records, writers) in [(10, 3), (2, 4), (0, 1), (1_000_000, 7)] {
            let plan = Plan {
                records,
                size: 8,
                writers,
            };
            let mut next = 0;
            for w in 0..writers {
                let r = plan.share(w);
                assert_eq!(r.start, next);
                assert!(r.end - r.start <= records / u64::from(writers) + 1);
                next = r.end;
            }
            assert_eq!(next, records);
        }
    }
}
