//! W6: tiering (aof2 only; baselines are plain zstd on the same bytes).
//!
//! Contract: [`w6`] returns these rows, each measured side by side with its baseline in one run:
//! - `compress L<n>`: segments written untiered (Tier 1 disabled), then a manager with Tier 1
//!   enabled, one compression thread and a fixed level compresses them all; MB/s of uncompressed
//!   record bytes over the coordinator's own time (frames cut, encoded, written, fdatasync'ed,
//!   manifest edits). Baseline `zstd L<n>`: `zstd::bulk::Compressor` at the same level over the
//!   same records bytes, one call per segment, in memory.
//! - `point read tier1`: random single-record reads after every sealed segment was evicted to
//!   Tier 1 (1 MiB frames, page cache warm): latency percentiles.
//! - `scan tier1`: a full sequential read from Tier 1, MB/s; baseline `zstd decompress`: the
//!   baseline's compressed segments decompressed in memory.
//! - `ingest via budget` / `ingest untiered`: a child process (hidden subcommand
//!   [`INGEST_COMMAND`]) appends `tier_ingest_bytes` of buffered (`Durability::None`) records
//!   through a `tier_budget` Tier 0 budget, or with Tier 1 disabled and no effective budget; its
//!   own `VmHWM` is the peak RSS (a child, so the parent's memory warm-up does not count).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aof2::{AofManager, Compression, Durability, LogConfig, ManagerConfig};
use clap::ValueEnum;

use crate::payload::{PayloadBuilder, PayloadKind};
use crate::report::{Class, Row, Workload};
use crate::stats::Summary;
use crate::systems::{Result, SystemKind};
use crate::workloads::Settings;

/// The hidden subcommand of the ingest child.
pub const INGEST_COMMAND: &str = "__tier-ingest";

const LOG: &str = "bench";
/// W6 always writes log lines: what a Tier 1 ratio and speed mean depends on the data, and
/// repeated text (ratio > 100) or random bytes (ratio 1) say nothing about logs.
const PAYLOAD: PayloadKind = PayloadKind::Logs;
const SIZE: usize = 1024;

/// Parameters of the ingest child.
#[derive(Debug, Clone)]
pub struct IngestArgs {
    pub dir: PathBuf,
    pub bytes: u64,
    /// Tier 0 budget; 0 = untiered (Tier 1 disabled, budget larger than the data).
    pub budget: u64,
    pub record_size: usize,
    pub payload: PayloadKind,
}

/// What the ingest child measured (one JSON line on stdout).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct IngestResult {
    pub records: u64,
    pub secs: f64,
    pub peak_rss_bytes: u64,
    pub tier0_peak_bytes: u64,
    pub backpressure_retries: u64,
    pub compression_ratio: f64,
    pub compress_mb_per_sec: f64,
    pub compression_level: i32,
    pub evictions: u64,
}

fn vm_hwm() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The ingest child: append until `bytes` of payload are written, print an [`IngestResult`].
pub fn ingest_child(args: &IngestArgs) -> Result<()> {
    let mut config = ManagerConfig::new(&args.dir);
    if args.budget == 0 {
        config.tier1_enabled = false;
        config.tier0_max_bytes = args.bytes * 2 + (1 << 30);
    } else {
        config.tier0_max_bytes = args.budget;
    }
    let manager = AofManager::open(config)?;
    let log = manager.open_log(
        LOG,
        LogConfig {
            durability: Durability::None,
            ..LogConfig::default()
        },
    )?;
    let mut builder = PayloadBuilder::new(args.record_size, args.payload);
    let n = args.bytes / args.record_size as u64;
    let mut retries = 0;
    let started = Instant::now();
    for id in 0..n {
        loop {
            match log.append(builder.build(id)) {
                Ok(_) => break,
                Err(e) if e.kind() == aof2::ErrorKind::Backpressure => retries += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let t = manager.tier_stats();
    let result = IngestResult {
        records: n,
        secs,
        peak_rss_bytes: vm_hwm(),
        tier0_peak_bytes: t.tier0_peak_bytes,
        backpressure_retries: retries,
        compression_ratio: t.compression_ratio(),
        compress_mb_per_sec: t.compress_mb_per_sec(),
        compression_level: t.compression_level,
        evictions: t.evictions,
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&result)?)?;
    out.flush()?;
    drop(out);
    manager.close()?;
    Ok(())
}

fn row(operation: &str, _settings: &Settings) -> Row {
    Row::new(
        SystemKind::Aof2None,
        Workload::W6,
        operation,
        SIZE,
        1,
        PAYLOAD,
    )
}

fn baseline(operation: &str, name: &str, settings: &Settings) -> Row {
    let mut r = row(operation, settings);
    r.system = name.to_string();
    r.class = Class::Baseline;
    r.durable = false;
    r
}

fn failed(mut r: Row, e: &dyn std::fmt::Display) -> Row {
    r.note(&format!("FAILED: {e}"));
    r
}

/// Fill a root with `bytes` of records, Tier 1 disabled (segments stay uncompressed).
fn fill(root: &Path, bytes: u64, payload: PayloadKind) -> Result<u64> {
    let mut config = ManagerConfig::new(root);
    config.tier1_enabled = false;
    config.tier0_max_bytes = bytes * 2 + (1 << 30);
    let manager = AofManager::open(config)?;
    let log = manager.open_log(
        LOG,
        LogConfig {
            durability: Durability::None,
            ..LogConfig::default()
        },
    )?;
    let mut builder = PayloadBuilder::new(SIZE, payload);
    let n = bytes / SIZE as u64;
    for id in 0..n {
        log.append(builder.build(id))?;
    }
    manager.close()?;
    Ok(n)
}

/// Records bytes of every sealed segment file under `root`.
fn sealed_records(root: &Path) -> Result<Vec<Vec<u8>>> {
    use aof2::format::segment::SegmentFooter;
    let dir = root.join("logs").join(LOG).join("segments");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path)?;
        let footer_at = bytes
            .len()
            .saturating_sub(aof2::limits::SEGMENT_FOOTER_BYTES as usize);
        let Ok(footer) = SegmentFooter::decode(&bytes[footer_at..]) else {
            continue; // the active segment
        };
        if footer.file_len() != bytes.len() as u64 {
            continue;
        }
        let start = aof2::limits::SEGMENT_HEADER_BYTES as usize;
        out.push(bytes[start..footer.records_end as usize].to_vec());
    }
    Ok(out)
}

/// What [`compress_rows`] leaves: both rows, the baseline's compressed segments, and the open
/// manager and log (every sealed segment in Tier 1) for the read rows.
struct Compressed {
    row: Row,
    plain: Row,
    segments: Vec<Vec<u8>>,
    manager: AofManager,
    log: aof2::Aof,
}

/// One compression row pair at `level` with `frame_bytes` frames.
fn compress_rows(
    settings: &Settings,
    root: &Path,
    level: i32,
    frame_bytes: usize,
) -> Result<Compressed> {
    fill(root, settings.tier_fill_bytes, PAYLOAD)?;
    let segments = sealed_records(root)?;
    let total: u64 = segments.iter().map(|s| s.len() as u64).sum();

    let mut plain = baseline(
        &format!("compress L{level}"),
        &format!("zstd L{level}"),
        settings,
    );
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    let started = Instant::now();
    let mut compressed = Vec::with_capacity(segments.len());
    let mut out_bytes = 0u64;
    for s in &segments {
        let c = compressor.compress(s)?;
        out_bytes += c.len() as u64;
        compressed.push(c);
    }
    let plain_secs = started.elapsed().as_secs_f64();
    plain.secs = plain_secs;
    plain.mb_per_sec = Some(total as f64 / 1e6 / plain_secs);
    plain.note(&format!(
        "{} segments, {} MiB, ratio {:.2}, one call per segment",
        segments.len(),
        total >> 20,
        total as f64 / out_bytes as f64
    ));

    let mut config = ManagerConfig::new(root);
    config.compression = Compression::Fixed(level);
    config.compress_threads = 1;
    config.tier1_frame_bytes = frame_bytes;
    // Measure Tier 1 reads, not Tier 0 reads of hydrated segments.
    config.hydrate_after_passes = 0;
    config.tier0_max_bytes = settings.tier_fill_bytes * 2 + (1 << 30);
    let manager = AofManager::open(config)?;
    let log = manager.open_log(
        LOG,
        LogConfig {
            durability: Durability::None,
            ..LogConfig::default()
        },
    )?;
    let mut r = row(&format!("compress L{level}"), settings);
    if !manager.wait_for_tier1(&log, Duration::from_secs(600)) {
        return Err("compression did not finish in 10 minutes".into());
    }
    let t = manager.tier_stats();
    r.secs = t.compress_seconds;
    r.mb_per_sec = Some(t.compress_mb_per_sec());
    let vs = t.compress_mb_per_sec() / plain.mb_per_sec.unwrap_or(f64::NAN);
    r.note(&format!(
        "{} segments, {} KiB frames, ratio {:.2} (file bytes), {vs:.2}x plain zstd (target >= 0.9)",
        t.segments_compressed,
        frame_bytes >> 10,
        t.compression_ratio()
    ));
    Ok(Compressed {
        row: r,
        plain,
        segments: compressed,
        manager,
        log,
    })
}

fn read_rows(
    settings: &Settings,
    manager: &AofManager,
    log: &aof2::Aof,
    compressed: &[Vec<u8>],
) -> Result<Vec<Row>> {
    manager.evict_tier0(log)?;
    let end = log.next_seq();
    let sealed_end = manager
        .log_info(log)
        .segments
        .iter()
        .filter(|s| s.tier == aof2::TierLocation::Tier1)
        .map(|s| s.end_seq)
        .max()
        .unwrap_or(0);
    if sealed_end == 0 {
        return Err("nothing was evicted to Tier 1".into());
    }
    // Random point reads within the Tier 1 segments.
    let reads = settings.point_reads.min(20_000);
    let mut latencies = Vec::with_capacity(reads as usize);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let started = Instant::now();
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let seq = x % sealed_end;
        let t = Instant::now();
        let r = log.read(seq)?;
        std::hint::black_box(r.payload());
        latencies.push(t.elapsed().as_nanos() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    let mut point = row("point read tier1", settings);
    point.set_rate(reads, secs);
    point.set_latency(Summary::from_nanos(&mut latencies));
    point.note(&format!(
        "random records of {} Tier 1 segments, 1 MiB frames, file pages cached (target p99 < 2 ms)",
        manager
            .log_info(log)
            .segments
            .iter()
            .filter(|s| s.tier == aof2::TierLocation::Tier1)
            .count()
    ));
    // Evict whatever the point reads hydrated, then scan.
    manager.evict_tier0(log)?;
    let started = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    for r in log.reader(0) {
        let r = r?;
        if r.seq() >= sealed_end {
            break;
        }
        bytes += r.len() as u64;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut scan = row("scan tier1", settings);
    scan.set_rate(n, secs);

    let mut plain = baseline("scan tier1", "zstd decompress", settings);
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let started = Instant::now();
    let mut out = 0u64;
    for c in compressed {
        let d = decompressor.decompress(c, 128 << 20)?;
        out += d.len() as u64;
        std::hint::black_box(&d);
    }
    let plain_secs = started.elapsed().as_secs_f64();
    plain.secs = plain_secs;
    plain.mb_per_sec = Some(out as f64 / 1e6 / plain_secs);
    plain.note("the same segments compressed whole at the same level, decompressed in memory");
    // Compare on the same unit: frame bytes (payload + 32-byte headers) per second.
    let frame_bytes = bytes + n * aof2::limits::FRAME_HEADER_BYTES;
    let frame_mb = frame_bytes as f64 / 1e6 / secs;
    scan.note(&format!(
        "{frame_mb:.0} MB/s of record frames = {:.2}x zstd decompress (target >= 0.8); {n} records, CRC checked",
        frame_mb / plain.mb_per_sec.unwrap_or(f64::NAN)
    ));
    let _ = end;
    Ok(vec![point, scan, plain])
}

fn ingest(settings: &Settings, budget: u64) -> Result<IngestResult> {
    let dir = tempfile::Builder::new()
        .prefix("aof2-bench-w6-")
        .tempdir_in(&settings.data_dir)?;
    let payload = PAYLOAD
        .to_possible_value()
        .ok_or("payload without a name")?;
    let child = Command::new(std::env::current_exe()?)
        .arg(INGEST_COMMAND)
        .arg("--dir")
        .arg(dir.path())
        .args(["--bytes", &settings.tier_ingest_bytes.to_string()])
        .args(["--budget", &budget.to_string()])
        .args(["--record-size", &SIZE.to_string()])
        .args(["--payload", payload.get_name()])
        .stdout(Stdio::piped())
        .spawn()?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(format!("ingest child failed: {}", output.status).into());
    }
    let line = BufReader::new(&output.stdout[..])
        .lines()
        .next()
        .ok_or("ingest child printed nothing")??;
    Ok(serde_json::from_str(&line)?)
}

/// W6 rows.
pub fn w6(settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    for (level, frame_bytes, reads) in [(1, 256 << 10, false), (3, 1 << 20, true)] {
        let dir = match tempfile::Builder::new()
            .prefix("aof2-bench-w6-")
            .tempdir_in(&settings.data_dir)
        {
            Ok(d) => d,
            Err(e) => {
                rows.push(failed(row(&format!("compress L{level}"), settings), &e));
                continue;
            }
        };
        eprintln!(
            "  compress L{level} ({} MiB)",
            settings.tier_fill_bytes >> 20
        );
        match compress_rows(settings, dir.path(), level, frame_bytes) {
            Ok(Compressed {
                row: r,
                plain,
                segments: compressed,
                manager,
                log,
            }) => {
                rows.push(r);
                rows.push(plain);
                if reads {
                    eprintln!("  tier1 reads");
                    match read_rows(settings, &manager, &log, &compressed) {
                        Ok(mut r) => rows.append(&mut r),
                        Err(e) => rows.push(failed(row("scan tier1", settings), &e)),
                    }
                }
                let _ = manager.close();
            }
            Err(e) => rows.push(failed(row(&format!("compress L{level}"), settings), &e)),
        }
    }
    let gib = settings.tier_ingest_bytes as f64 / (1u64 << 30) as f64;
    eprintln!(
        "  ingest {gib:.1} GiB untiered, then via a {} MiB budget",
        settings.tier_budget >> 20
    );
    let untiered = ingest(settings, 0);
    let tiered = ingest(settings, settings.tier_budget);
    let mut base_rate = None;
    for (name, result, budget) in [
        ("ingest untiered", untiered, 0),
        ("ingest via budget", tiered, settings.tier_budget),
    ] {
        let mut r = row(name, settings);
        match result {
            Ok(res) => {
                r.set_rate(res.records, res.secs);
                r.volume_bytes = Some(res.records * SIZE as u64);
                let rate = res.records as f64 / res.secs;
                let mut note = format!(
                    "buffered, 1 writer, {gib:.1} GiB; peak RSS {} MiB, Tier 0 peak {} MiB",
                    res.peak_rss_bytes >> 20,
                    res.tier0_peak_bytes >> 20
                );
                if budget > 0 {
                    note.push_str(&format!(
                        ", budget {} MiB (target: RSS < budget + 128 MiB = {} MiB; {}), {:.2}x untiered (target >= 0.7), level now {}, ratio {:.2}, {} evictions, {} backpressure retries",
                        budget >> 20,
                        (budget >> 20) + 128,
                        if res.peak_rss_bytes < budget + (128 << 20) { "met" } else { "NOT met" },
                        base_rate.map_or(f64::NAN, |b: f64| rate / b),
                        res.compression_level,
                        res.compression_ratio,
                        res.evictions,
                        res.backpressure_retries
                    ));
                } else {
                    base_rate = Some(rate);
                    note.push_str(", Tier 1 disabled");
                }
                r.note(&note);
                rows.push(r);
            }
            Err(e) => rows.push(failed(r, &e)),
        }
    }
    rows
}
