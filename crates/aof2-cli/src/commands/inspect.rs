//! `aof2 inspect`: logs, their segments, states, tiers, sizes and sequence ranges, what recovery
//! did when this command opened them, and the manager's tier statistics.
//!
//! Contract: never creates a root or a log (a missing one is exit 2) and changes nothing on disk:
//! logs are opened read-only, so what recovery would do (cut a torn tail, quarantine a corrupt
//! sealed segment) is reported, not done, and nothing is compressed or evicted.
//! Default output is a human table; `--json` prints exactly one JSON document:
//! `{"root": "...", "logs": [{"name", "log_id" (32 hex digits), "next_seq", "durable_seq",
//! "segments": [{"id", "state", "base_seq", "end_seq", "file_bytes", "record_bytes", "path",
//! "tier" ("0", "0+1", "1" or "-"), "tier1_bytes" (0 without a Tier 1 copy),
//! "compression_ratio" (record bytes / Tier 1 bytes, null without a Tier 1 copy),
//! "tier1_level" (zstd level, null without a Tier 1 copy)}],
//! "recovery": {"sealed_segments", "scanned_segments", "cut_tails",
//! "dropped_incomplete_frames", "dropped_segments", "recovery_ms",
//! "quarantined": [{"segment_id", "reason"}], "tier1_segments", "compressions_restarted",
//! "tier0_dropped": [{"segment_id", "reason"}], "tier1_dropped": [{"segment_id", "reason"}]}}],
//! "tiers": {"tier0_used_bytes", "tier0_max_bytes", "tier1_used_bytes", "tier1_max_bytes" (null
//! when unlimited), "compression_level"}}`.
//! The tier statistics are those of this command's own manager (the budgets given on its command
//! line, the Tier 0 bytes its read-only opens hold, the Tier 1 files of the logs it opened).

use std::io::{self, Write};

use aof2::{AofManager, LogInfo, RecoveryReport, TierStats};
use serde::Serialize;

use crate::args::InspectArgs;
use crate::failure::{Failure, stdout_error};
use crate::open::{check_options, open_existing_root, require_log};

/// The JSON document.
#[derive(Debug, Serialize)]
struct Document {
    root: String,
    logs: Vec<LogDoc>,
    tiers: TiersDoc,
}

/// The manager's tier statistics.
#[derive(Debug, Serialize)]
struct TiersDoc {
    tier0_used_bytes: u64,
    tier0_max_bytes: u64,
    tier1_used_bytes: u64,
    /// `None` (JSON null) when unlimited.
    tier1_max_bytes: Option<u64>,
    /// zstd level the next compression would use.
    compression_level: i32,
}

#[derive(Debug, Serialize)]
struct LogDoc {
    name: String,
    log_id: String,
    next_seq: u64,
    durable_seq: u64,
    segments: Vec<SegmentDoc>,
    recovery: RecoveryDoc,
}

#[derive(Debug, Serialize)]
struct SegmentDoc {
    id: u64,
    state: &'static str,
    base_seq: u64,
    end_seq: u64,
    file_bytes: u64,
    record_bytes: u64,
    path: String,
    tier: &'static str,
    tier1_bytes: u64,
    compression_ratio: Option<f64>,
    tier1_level: Option<i32>,
}

#[derive(Debug, Serialize, Default)]
struct RecoveryDoc {
    sealed_segments: usize,
    scanned_segments: usize,
    cut_tails: usize,
    dropped_incomplete_frames: u64,
    dropped_segments: usize,
    recovery_ms: f64,
    quarantined: Vec<SegmentReasonDoc>,
    tier1_segments: usize,
    compressions_restarted: usize,
    tier0_dropped: Vec<SegmentReasonDoc>,
    tier1_dropped: Vec<SegmentReasonDoc>,
}

/// A segment and why something happened to it.
#[derive(Debug, Serialize)]
struct SegmentReasonDoc {
    segment_id: u64,
    reason: String,
}

/// Run `aof2 inspect`.
pub fn run(args: &InspectArgs) -> Result<(), Failure> {
    if let Some(name) = &args.log {
        aof2::validate_log_name(name)?;
    }
    check_options(&args.options)?;
    let manager = open_existing_root(&args.root.root, &args.options.storage)?;
    let result = collect(&manager, args).and_then(|doc| {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        if args.json {
            serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(io::Error::from)
                .and_then(|()| writeln!(out))
        } else {
            write_table(&mut out, &doc)
        }
        .and_then(|()| out.flush())
        .map_err(stdout_error)
    });
    let closed = manager.close();
    result?;
    Ok(closed?)
}

fn collect(manager: &AofManager, args: &InspectArgs) -> Result<Document, Failure> {
    let names = match &args.log {
        Some(name) => {
            require_log(manager, name)?;
            vec![name.clone()]
        }
        None => manager.list_logs()?,
    };
    let mut logs = Vec::with_capacity(names.len());
    // Read-only handles do not count toward the manager's Tier 1 budget: add up the files.
    let mut tier1_bytes = 0;
    for name in names {
        let log = manager
            .open_log_read_only(&name)
            .map_err(|e| Failure::from(e).context(format!("open log {name:?}")))?;
        let info = manager.log_info(&log);
        tier1_bytes += info.segments.iter().map(|s| s.tier1_bytes).sum::<u64>();
        let report = manager.recovery_report(&name).unwrap_or_default();
        logs.push(log_doc(info, report));
    }
    Ok(Document {
        root: manager.root().display().to_string(),
        logs,
        tiers: tiers_doc(&manager.tier_stats(), tier1_bytes),
    })
}

fn tiers_doc(stats: &TierStats, tier1_bytes: u64) -> TiersDoc {
    TiersDoc {
        tier0_used_bytes: stats.tier0_used_bytes,
        tier0_max_bytes: stats.tier0_max_bytes,
        tier1_used_bytes: tier1_bytes,
        tier1_max_bytes: (stats.tier1_max_bytes != u64::MAX).then_some(stats.tier1_max_bytes),
        compression_level: stats.compression_level,
    }
}

fn reasons(list: Vec<(u64, String)>) -> Vec<SegmentReasonDoc> {
    list.into_iter()
        .map(|(segment_id, reason)| SegmentReasonDoc { segment_id, reason })
        .collect()
}

fn log_doc(info: LogInfo, report: RecoveryReport) -> LogDoc {
    LogDoc {
        name: info.name,
        log_id: format!("{:032x}", info.log_id),
        next_seq: info.next_seq,
        durable_seq: info.durable_seq,
        segments: info
            .segments
            .into_iter()
            .map(|s| SegmentDoc {
                id: s.id,
                state: s.state.name(),
                base_seq: s.base_seq,
                end_seq: s.end_seq,
                file_bytes: s.file_bytes,
                record_bytes: s.record_bytes,
                path: s.path.display().to_string(),
                tier: s.tier.name(),
                tier1_bytes: s.tier1_bytes,
                compression_ratio: s.compression_ratio(),
                tier1_level: s.tier1_level,
            })
            .collect(),
        recovery: RecoveryDoc {
            sealed_segments: report.sealed_segments,
            scanned_segments: report.scanned_segments,
            cut_tails: report.cut_tails.len(),
            dropped_incomplete_frames: report.dropped_incomplete_frames,
            dropped_segments: report.dropped_segments,
            recovery_ms: report.elapsed.as_secs_f64() * 1000.0,
            quarantined: reasons(report.quarantined),
            tier1_segments: report.tier1_segments,
            compressions_restarted: report.compressions_restarted,
            tier0_dropped: reasons(report.tier0_dropped),
            tier1_dropped: reasons(report.tier1_dropped),
        },
    }
}

fn write_table<W: Write>(out: &mut W, doc: &Document) -> io::Result<()> {
    if doc.logs.is_empty() {
        writeln!(out, "no logs in {}", doc.root)?;
    }
    for (i, log) in doc.logs.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(
            out,
            "log {}  id {}  next_seq {}  durable_seq {}  segments {}",
            log.name,
            log.log_id,
            log.next_seq,
            log.durable_seq,
            log.segments.len()
        )?;
        writeln!(
            out,
            "  {:<16}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  {:<4}  {:>12}  {:>7}  {:>5}  PATH",
            "SEGMENT",
            "STATE",
            "BASE_SEQ",
            "END_SEQ",
            "FILE_BYTES",
            "RECORD_BYTES",
            "TIER",
            "TIER1_BYTES",
            "RATIO",
            "LEVEL"
        )?;
        for s in &log.segments {
            let ratio = s
                .compression_ratio
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"));
            let level = s
                .tier1_level
                .map_or_else(|| "-".to_string(), |l| l.to_string());
            writeln!(
                out,
                "  {:016x}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  {:<4}  {:>12}  {:>7}  {:>5}  {}",
                s.id,
                s.state,
                s.base_seq,
                s.end_seq,
                s.file_bytes,
                s.record_bytes,
                s.tier,
                s.tier1_bytes,
                ratio,
                level,
                s.path
            )?;
        }
        let r = &log.recovery;
        writeln!(
            out,
            "  recovery: {} sealed trusted, {} scanned, {} torn tails cut, {} incomplete frames \
             dropped, {} segments dropped, {} quarantined, {} in Tier 1 only, {} compressions \
             restarted, {:.1} ms",
            r.sealed_segments,
            r.scanned_segments,
            r.cut_tails,
            r.dropped_incomplete_frames,
            r.dropped_segments,
            r.quarantined.len(),
            r.tier1_segments,
            r.compressions_restarted,
            r.recovery_ms
        )?;
        for (what, list) in [
            ("quarantined segment", &r.quarantined),
            ("Tier 0 copy dropped, segment", &r.tier0_dropped),
            ("Tier 1 copy dropped, segment", &r.tier1_dropped),
        ] {
            for q in list {
                writeln!(out, "  {what} {:016x}: {}", q.segment_id, q.reason)?;
            }
        }
    }
    let t = &doc.tiers;
    writeln!(
        out,
        "tiers: Tier 0 {} of {} bytes used, Tier 1 {} bytes used (budget {}), compression level {}",
        t.tier0_used_bytes,
        t.tier0_max_bytes,
        t.tier1_used_bytes,
        t.tier1_max_bytes
            .map_or_else(|| "unlimited".to_string(), |b| b.to_string()),
        t.compression_level
    )
}
