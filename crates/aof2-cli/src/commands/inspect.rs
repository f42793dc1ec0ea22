//! `aof2 inspect`: logs, their segments, states, sizes and sequence ranges, and what recovery did
//! when this command opened them.
//!
//! Contract: never creates a root or a log (a missing one is exit 2) and changes nothing on disk:
//! logs are opened read-only, so what recovery would do (cut a torn tail, quarantine a corrupt
//! sealed segment) is reported, not done.
//! Default output is a human table; `--json` prints exactly one JSON document:
//! `{"root": "...", "logs": [{"name", "log_id" (32 hex digits), "next_seq", "durable_seq",
//! "segments": [{"id", "state", "base_seq", "end_seq", "file_bytes", "record_bytes", "path"}],
//! "recovery": {"sealed_segments", "scanned_segments", "cut_tails",
//! "dropped_incomplete_frames", "dropped_segments", "recovery_ms", "quarantined": [{"segment_id", "reason"}]}}]}`.

use std::io::{self, Write};

use aof2::{AofManager, LogInfo, RecoveryReport};
use serde::Serialize;

use crate::args::InspectArgs;
use crate::failure::{Failure, stdout_error};
use crate::open::{open_existing_root, require_log};

/// The JSON document.
#[derive(Debug, Serialize)]
struct Document {
    root: String,
    logs: Vec<LogDoc>,
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
}

#[derive(Debug, Serialize, Default)]
struct RecoveryDoc {
    sealed_segments: usize,
    scanned_segments: usize,
    cut_tails: usize,
    dropped_incomplete_frames: u64,
    dropped_segments: usize,
    recovery_ms: f64,
    quarantined: Vec<QuarantineDoc>,
}

#[derive(Debug, Serialize)]
struct QuarantineDoc {
    segment_id: u64,
    reason: String,
}

/// Run `aof2 inspect`.
pub fn run(args: &InspectArgs) -> Result<(), Failure> {
    if let Some(name) = &args.log {
        aof2::validate_log_name(name)?;
    }
    let manager = open_existing_root(&args.root.root)?;
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
    for name in names {
        let log = manager
            .open_log_read_only(&name)
            .map_err(|e| Failure::from(e).context(format!("open log {name:?}")))?;
        let info = manager.log_info(&log);
        let report = manager.recovery_report(&name).unwrap_or_default();
        logs.push(log_doc(info, report));
    }
    Ok(Document {
        root: manager.root().display().to_string(),
        logs,
    })
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
            })
            .collect(),
        recovery: RecoveryDoc {
            sealed_segments: report.sealed_segments,
            scanned_segments: report.scanned_segments,
            cut_tails: report.cut_tails.len(),
            dropped_incomplete_frames: report.dropped_incomplete_frames,
            dropped_segments: report.dropped_segments,
            recovery_ms: report.elapsed.as_secs_f64() * 1000.0,
            quarantined: report
                .quarantined
                .into_iter()
                .map(|(segment_id, reason)| QuarantineDoc { segment_id, reason })
                .collect(),
        },
    }
}

fn write_table<W: Write>(out: &mut W, doc: &Document) -> io::Result<()> {
    if doc.logs.is_empty() {
        return writeln!(out, "no logs in {}", doc.root);
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
            "  {:<16}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  PATH",
            "SEGMENT", "STATE", "BASE_SEQ", "END_SEQ", "FILE_BYTES", "RECORD_BYTES"
        )?;
        for s in &log.segments {
            writeln!(
                out,
                "  {:016x}  {:<11}  {:>20}  {:>20}  {:>12}  {:>12}  {}",
                s.id, s.state, s.base_seq, s.end_seq, s.file_bytes, s.record_bytes, s.path
            )?;
        }
        let r = &log.recovery;
        writeln!(
            out,
            "  recovery: {} sealed trusted, {} scanned, {} torn tails cut, {} incomplete frames \
             dropped, {} segments dropped, {} quarantined, {:.1} ms",
            r.sealed_segments,
            r.scanned_segments,
            r.cut_tails,
            r.dropped_incomplete_frames,
            r.dropped_segments,
            r.quarantined.len(),
            r.recovery_ms
        )?;
        for q in &r.quarantined {
            writeln!(
                out,
                "  quarantined segment {:016x}: {}",
                q.segment_id, q.reason
            )?;
        }
    }
    Ok(())
}
