//! `aof2 inspect`: logs, their segments, states, tiers, sizes and sequence ranges, what recovery
//! did when this command opened them, and the manager's tier statistics.
//!
//! Contract: never creates a root or a log (a missing one is exit 2) and changes nothing on disk:
//! logs are opened read-only, so what recovery would do (cut a torn tail, quarantine a corrupt
//! sealed segment) is reported, not done, and nothing is compressed or evicted.
//! Default output is a human table; `--json` prints exactly one JSON document:
//! `{"root": "...", "logs": [{"name", "log_id" (32 hex digits), "next_seq", "durable_seq",
//! "segments": [{"id", "state", "base_seq", "end_seq", "file_bytes", "record_bytes", "path",
//! "tier" (the tiers holding it: "0", "0+1", "1", "1+2", "2", ... or "-"), "tier1_bytes" (0 without a Tier 1 copy),
//! "compression_ratio" (record bytes / Tier 1 bytes, null without a Tier 1 copy),
//! "tier1_level" (zstd level, null without a Tier 1 copy)}],
//! "recovery": {"sealed_segments", "scanned_segments", "cut_tails",
//! "damaged_tails": [{"segment_id", "cut_offset", "reason", "later_frames", "first_seq",
//! "last_seq"}] (valid frames found past a cut: damage, not a torn tail),
//! "dropped_incomplete_frames", "dropped_segments", "recovery_ms",
//! "quarantined": [{"segment_id", "reason"}], "tier1_segments", "compressions_restarted",
//! "tier0_dropped": [{"segment_id", "reason"}], "tier1_dropped": [{"segment_id", "reason"}]}}],
//! "tier2_catalog": null without Tier 2, else {"epoch", "first_seq", "end_seq", "error"}}],
//! "unreadable_logs": [{"name", "error"}] (without `--log`, a log that cannot be opened is
//! listed here, the others are still shown, and the exit status is that of the first failure),
//! "tiers": {"tier0_used_bytes", "tier0_max_bytes", "tier1_used_bytes", "tier1_max_bytes" (null
//! when unlimited), "compression_level", "tier2": null without Tier 2, else {"url", "breaker"
//! ("closed", "open" or "half-open"), "problem" (null, or why the store refuses aof2 and what to
//! fix: no such bucket, credentials rejected), "breaker_opened", "requests", "request_failures",
//! "retries", "fast_failures", "segments_uploaded", "upload_bytes", "upload_backlog",
//! "ranged_gets", "download_bytes", "catalogs_published", "tier1_evictions"}}}`.
//! The tier statistics are those of this command's own manager (the budgets given on its command
//! line, the Tier 0 bytes its read-only opens hold, the Tier 1 files of the logs it opened, the
//! Tier 2 requests it made: read-only opens upload nothing, so the upload figures are 0 and the
//! breaker shows whether this command reached the store).
//!
//! What Tier 2 holds of each log is read from the log's newest catalog (what a restore or a
//! remote reader would see): its writer epoch and the records `first_seq..end_seq` of the sealed
//! segments it lists; `epoch` and the sequences are null when the store has no catalog of the
//! log, and `error` says why the catalog could not be read (each request is given
//! [`CATALOG_TIMEOUT`], retried once), else null.

use std::io::{self, Write};
use std::time::Duration;

use aof2::{
    AofManager, ErrorKind, LogInfo, RecoveryReport, RemoteReader, Tier2Config, TierLocation,
    TierStats,
};
use serde::Serialize;

use crate::args::InspectArgs;
use crate::failure::{Failure, stdout_error};
use crate::open::{check_options, open_existing_root, require_log};

/// The JSON document.
#[derive(Debug, Serialize)]
struct Document {
    root: String,
    logs: Vec<LogDoc>,
    /// Logs that could not be opened (only without `--log`: the others are still shown).
    unreadable_logs: Vec<UnreadableLogDoc>,
    tiers: TiersDoc,
}

#[derive(Debug, Serialize)]
struct UnreadableLogDoc {
    name: String,
    error: String,
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
    /// `None` (JSON null) without Tier 2.
    tier2: Option<Tier2Doc>,
}

/// Time limit of one request of the catalog read per log.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(5);

/// The manager's Tier 2 statistics.
#[derive(Debug, Serialize)]
struct Tier2Doc {
    url: String,
    breaker: &'static str,
    problem: Option<String>,
    breaker_opened: u64,
    requests: u64,
    request_failures: u64,
    retries: u64,
    fast_failures: u64,
    segments_uploaded: u64,
    upload_bytes: u64,
    upload_backlog: u64,
    ranged_gets: u64,
    download_bytes: u64,
    catalogs_published: u64,
    tier1_evictions: u64,
}

/// What a log's newest Tier 2 catalog lists.
#[derive(Debug, Serialize, Default)]
struct CatalogDoc {
    epoch: Option<u64>,
    first_seq: Option<u64>,
    end_seq: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct LogDoc {
    name: String,
    log_id: String,
    next_seq: u64,
    durable_seq: u64,
    segments: Vec<SegmentDoc>,
    recovery: RecoveryDoc,
    /// `None` (JSON null) without Tier 2.
    tier2_catalog: Option<CatalogDoc>,
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
    tier: String,
    tier1_bytes: u64,
    compression_ratio: Option<f64>,
    tier1_level: Option<i32>,
}

#[derive(Debug, Serialize)]
struct DamagedTailDoc {
    segment_id: u64,
    cut_offset: u64,
    reason: String,
    later_frames: u64,
    first_seq: u64,
    last_seq: u64,
}

#[derive(Debug, Serialize, Default)]
struct RecoveryDoc {
    sealed_segments: usize,
    scanned_segments: usize,
    cut_tails: usize,
    damaged_tails: Vec<DamagedTailDoc>,
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
    let mut unreadable = None;
    let result = collect(&manager, args, &mut unreadable).and_then(|doc| {
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
    closed?;
    // Everything readable was shown; the exit status says what was not.
    unreadable.map_or(Ok(()), Err)
}

/// Gather the document. A log that cannot be opened fails the command with `--log`; without,
/// it is listed in `unreadable_logs` and its failure (the first one) is left in `unreadable`.
fn collect(
    manager: &AofManager,
    args: &InspectArgs,
    unreadable: &mut Option<Failure>,
) -> Result<Document, Failure> {
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
    let mut tier0_bytes = 0;
    let mut unreadable_logs = Vec::new();
    for name in names {
        let log = match manager.open_log_read_only(&name) {
            Ok(log) => log,
            Err(e) if args.log.is_none() => {
                unreadable_logs.push(UnreadableLogDoc {
                    name: name.clone(),
                    error: e.to_string(),
                });
                unreadable.get_or_insert(Failure::from(e).context(format!("open log {name:?}")));
                continue;
            }
            Err(e) => return Err(Failure::from(e).context(format!("open log {name:?}"))),
        };
        let info = manager.log_info(&log);
        tier1_bytes += info.segments.iter().map(|s| s.tier1_bytes).sum::<u64>();
        // Counted from the files: read-only handles hold no Tier 0 budget.
        tier0_bytes += info
            .segments
            .iter()
            .filter(|s| matches!(s.tier, TierLocation::Tier0 | TierLocation::Tier0And1))
            .map(|s| s.file_bytes)
            .sum::<u64>();
        let report = manager.recovery_report(&name).unwrap_or_default();
        let catalog = manager
            .config()
            .tier2
            .as_ref()
            .map(|t2| catalog_doc(t2, &name));
        logs.push(log_doc(info, report, catalog));
    }
    Ok(Document {
        root: manager.root().display().to_string(),
        logs,
        unreadable_logs,
        tiers: tiers_doc(&manager.tier_stats(), tier0_bytes, tier1_bytes),
    })
}

/// Read the newest catalog of log `name`.
fn catalog_doc(config: &Tier2Config, name: &str) -> CatalogDoc {
    let config = Tier2Config {
        request_timeout: CATALOG_TIMEOUT,
        max_retries: 1,
        ..config.clone()
    };
    match RemoteReader::open(config, name) {
        Ok(reader) => CatalogDoc {
            epoch: Some(reader.epoch()),
            first_seq: Some(reader.first_seq()),
            end_seq: Some(reader.end_seq()),
            error: None,
        },
        Err(e) if e.kind() == ErrorKind::NotFound => CatalogDoc::default(),
        Err(e) => CatalogDoc {
            error: Some(e.to_string()),
            ..CatalogDoc::default()
        },
    }
}

fn tiers_doc(stats: &TierStats, tier0_bytes: u64, tier1_bytes: u64) -> TiersDoc {
    TiersDoc {
        tier0_used_bytes: tier0_bytes,
        tier0_max_bytes: stats.tier0_max_bytes,
        tier1_used_bytes: tier1_bytes,
        tier1_max_bytes: (stats.tier1_max_bytes != u64::MAX).then_some(stats.tier1_max_bytes),
        compression_level: stats.compression_level,
        tier2: stats.tier2.as_ref().map(|t| Tier2Doc {
            url: t.url.clone(),
            breaker: t.breaker,
            problem: t.problem.clone(),
            breaker_opened: t.breaker_opened,
            requests: t.requests,
            request_failures: t.request_failures,
            retries: t.retries,
            fast_failures: t.fast_failures,
            segments_uploaded: t.segments_uploaded,
            upload_bytes: t.upload_bytes,
            upload_backlog: t.upload_backlog,
            ranged_gets: t.ranged_gets,
            download_bytes: t.download_bytes,
            catalogs_published: t.catalogs_published,
            tier1_evictions: t.tier1_evictions,
        }),
    }
}

fn reasons(list: Vec<(u64, String)>) -> Vec<SegmentReasonDoc> {
    list.into_iter()
        .map(|(segment_id, reason)| SegmentReasonDoc { segment_id, reason })
        .collect()
}

fn log_doc(info: LogInfo, report: RecoveryReport, tier2_catalog: Option<CatalogDoc>) -> LogDoc {
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
                tier: s.tiers(),
                tier1_bytes: s.tier1_bytes,
                compression_ratio: s.compression_ratio(),
                tier1_level: s.tier1_level,
            })
            .collect(),
        recovery: RecoveryDoc {
            sealed_segments: report.sealed_segments,
            scanned_segments: report.scanned_segments,
            cut_tails: report.cut_tails.len(),
            damaged_tails: report
                .damaged_tails
                .iter()
                .map(|d| DamagedTailDoc {
                    segment_id: d.segment_id,
                    cut_offset: d.cut_offset,
                    reason: d.reason.clone(),
                    later_frames: d.later.frames,
                    first_seq: d.later.first_seq,
                    last_seq: d.later.last_seq,
                })
                .collect(),
            dropped_incomplete_frames: report.dropped_incomplete_frames,
            dropped_segments: report.dropped_segments,
            recovery_ms: report.elapsed.as_secs_f64() * 1000.0,
            quarantined: reasons(report.quarantined),
            tier1_segments: report.tier1_segments,
            compressions_restarted: report.compressions_restarted,
            tier0_dropped: reasons(report.tier0_dropped),
            tier1_dropped: reasons(report.tier1_dropped),
        },
        tier2_catalog,
    }
}

fn write_table<W: Write>(out: &mut W, doc: &Document) -> io::Result<()> {
    if doc.logs.is_empty() && doc.unreadable_logs.is_empty() {
        writeln!(out, "no logs in {}", doc.root)?;
    }
    for log in &doc.unreadable_logs {
        writeln!(out, "log {}  cannot be opened: {}", log.name, log.error)?;
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
            "  {:<16}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  {:<6}  {:>12}  {:>7}  {:>5}  PATH",
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
                "  {:016x}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  {:<6}  {:>12}  {:>7}  {:>5}  {}",
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
        for d in &r.damaged_tails {
            writeln!(
                out,
                "    damaged: segment {} cut at offset {} ({}); {} later frames (seq {}..={}) \
                 dropped",
                d.segment_id, d.cut_offset, d.reason, d.later_frames, d.first_seq, d.last_seq
            )?;
        }
        for (what, list) in [
            ("quarantined segment", &r.quarantined),
            ("Tier 0 copy dropped, segment", &r.tier0_dropped),
            ("Tier 1 copy dropped, segment", &r.tier1_dropped),
        ] {
            for q in list {
                writeln!(out, "  {what} {:016x}: {}", q.segment_id, q.reason)?;
            }
        }
        if let Some(c) = &log.tier2_catalog {
            match (&c.error, c.epoch, c.first_seq, c.end_seq) {
                (Some(error), ..) => writeln!(out, "  tier 2: catalog unreadable: {error}")?,
                (None, Some(epoch), Some(first), Some(end)) => writeln!(
                    out,
                    "  tier 2: catalog of writer epoch {epoch} lists records {first}..{end}"
                )?,
                _ => writeln!(out, "  tier 2: no catalog (nothing uploaded yet)")?,
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
    )?;
    match &t.tier2 {
        None => writeln!(out, "tier 2: none"),
        Some(t2) => {
            if let Some(problem) = &t2.problem {
                writeln!(out, "tier 2 refuses aof2: {problem}")?;
            }
            writeln!(
                out,
                "tier 2: {}, circuit breaker {} (opened {} times), {} segments uploaded ({} bytes), \
             upload backlog {}, {} requests ({} failed, {} retries, {} refused fast), {} ranged \
             GETs ({} bytes), {} catalogs published, {} Tier 1 copies released",
                t2.url,
                t2.breaker,
                t2.breaker_opened,
                t2.segments_uploaded,
                t2.upload_bytes,
                t2.upload_backlog,
                t2.requests,
                t2.request_failures,
                t2.retries,
                t2.fast_failures,
                t2.ranged_gets,
                t2.download_bytes,
                t2.catalogs_published,
                t2.tier1_evictions
            )
        }
    }
}
