//! `aof2 verify`: check every record checksum of every log (or one).
//!
//! Contract: never creates a root or a log (a missing one is exit 2) and changes nothing on disk
//! (logs are opened read-only: a corrupt sealed segment is reported, not moved). For each log, one line per
//! problem on stdout — `log NAME: segment ID (16 hex digits): LOCATION: DETAIL`, where the
//! library's location names the file and byte offset when known — then a summary line
//! `log NAME: ok|CORRUPT, S segments (T Tier 1 copies checked), R records verified, P problems`,
//! where T counts the segments (quarantined ones aside) that have a compressed Tier 1 copy:
//! `verify_log` checks every frame of it as well as the segment file when both exist. With
//! `--tier2-copies` the Tier 2 object of every uploaded segment is checked too, and the
//! parenthesis says `(T Tier 1 copies checked, U Tier 2 copies checked)`; without it a Tier 2
//! copy is checked only where it is the segment's only copy. A segment that could not be checked
//! (an I/O error, the Tier 2 store not answering) is neither: `log NAME: segment ID: LOCATION: not
//! checked: DETAIL`, the summary adds `, N not checked` and says `UNCHECKED` instead of `ok`, and
//! the command exits 4 unless a problem makes it 3. A problem is a failed
//! checksum or invariant found by `verify_log`, a segment quarantined (now or earlier), or a log
//! that cannot be opened because of corruption (that log's summary then says so and the other
//! logs are still checked). A local copy that the open gave up because another tier holds the
//! segment (a damaged Tier 0 file while Tier 1 or Tier 2 has the segment, say) is a note, not a
//! problem: `log NAME: segment ID: note: Tier N copy given up: REASON`, and the summary adds
//! `, C copies given up`; the records are verified from the copy that stands in. Exit 3 if any
//! problem was found, else 0; errors other than corruption (I/O, locked root) stop the command
//! with their own status.

use std::io::{self, Write};

use aof2::{AofManager, ErrorKind, TierLocation, VerifyOptions};

use crate::args::VerifyArgs;
use crate::failure::{Failure, stdout_error};
use crate::open::{check_options, open_existing_root, require_log};

/// What verification found in one log.
#[derive(Debug, Default)]
struct Outcome {
    log: String,
    segments: usize,
    /// Segments whose Tier 1 copy was checked.
    tier1_segments: usize,
    records: u64,
    problems: Vec<Finding>,
    /// Local copies given up at open because another tier holds the segment.
    notes: Vec<Finding>,
    /// Segments that could not be checked (I/O error, Tier 2 unavailable).
    unchecked: Vec<Finding>,
    /// Tier 2 copies checked, when `--tier2-copies` asked for them.
    tier2_copies: Option<usize>,
}

/// One problem.
#[derive(Debug)]
struct Finding {
    /// The segment, when the problem belongs to one.
    segment_id: Option<u64>,
    /// File and byte offset when known.
    location: String,
    detail: String,
}

/// Run `aof2 verify`.
pub fn run(args: &VerifyArgs) -> Result<(), Failure> {
    if let Some(name) = &args.log {
        aof2::validate_log_name(name)?;
    }
    check_options(&args.options)?;
    let manager = open_existing_root(&args.root.root, &args.options.storage)?;
    let result = verify_all(&manager, args);
    let closed = manager.close();
    let tally = result?;
    closed?;
    if let Some(first) = tally.first_problem {
        return Err(Failure::corruption(format!(
            "corruption found in {} log(s); first problem: {first}",
            tally.corrupt_logs
        )));
    }
    if let Some(first) = tally.first_unchecked {
        return Err(Failure::environment(format!(
            "{} segment(s) could not be checked; first: {first}",
            tally.unchecked
        )));
    }
    Ok(())
}

/// What `verify_all` found over every log.
#[derive(Debug, Default)]
struct Tally {
    corrupt_logs: usize,
    /// The first problem line printed, for the error message.
    first_problem: Option<String>,
    /// Segments not checked, over every log.
    unchecked: usize,
    /// The first "not checked" line printed.
    first_unchecked: Option<String>,
}

/// Verify and print every log.
fn verify_all(manager: &AofManager, args: &VerifyArgs) -> Result<Tally, Failure> {
    let names = match &args.log {
        Some(name) => {
            require_log(manager, name)?;
            vec![name.clone()]
        }
        None => manager.list_logs()?,
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if names.is_empty() {
        writeln!(out, "no logs in {}", manager.root().display()).map_err(stdout_error)?;
    }
    let mut tally = Tally::default();
    for name in names {
        let outcome = verify_one(manager, &name, args)?;
        if let Some(first) = outcome.problems.first() {
            tally.corrupt_logs += 1;
            tally
                .first_problem
                .get_or_insert_with(|| problem_line(&outcome.log, first));
        }
        if let Some(first) = outcome.unchecked.first() {
            tally.unchecked += outcome.unchecked.len();
            tally
                .first_unchecked
                .get_or_insert_with(|| problem_line(&outcome.log, first));
        }
        print_outcome(&mut out, &outcome).map_err(stdout_error)?;
    }
    out.flush().map_err(stdout_error)?;
    Ok(tally)
}

/// Open and verify one log. A corruption error while opening becomes the log's problem.
fn verify_one(manager: &AofManager, name: &str, args: &VerifyArgs) -> Result<Outcome, Failure> {
    let log = match manager.open_log_read_only(name) {
        Ok(log) => log,
        Err(e) if e.kind() == ErrorKind::Corruption => {
            return Ok(Outcome {
                log: name.to_string(),
                problems: vec![Finding {
                    segment_id: None,
                    location: "open".into(),
                    detail: e.to_string(),
                }],
                ..Default::default()
            });
        }
        Err(e) => return Err(Failure::from(e).context(format!("open log {name:?}"))),
    };
    let tier1_segments = manager
        .log_info(&log)
        .segments
        .iter()
        .filter(|s| matches!(s.tier, TierLocation::Tier0And1 | TierLocation::Tier1))
        .count();
    let options = VerifyOptions::default().with_tier2_copies(args.tier2_copies);
    let report = manager.verify_log_with(&log, options);
    let finding = |p: aof2::Problem, not_checked: bool| Finding {
        segment_id: Some(p.segment_id),
        location: p.location,
        detail: match not_checked {
            true => format!("not checked: {}", p.detail),
            false => p.detail,
        },
    };
    let mut outcome = Outcome {
        log: report.log,
        segments: report.segments,
        tier1_segments,
        records: report.records,
        problems: report
            .problems
            .into_iter()
            .map(|p| finding(p, false))
            .collect(),
        notes: Vec::new(),
        unchecked: report
            .unchecked
            .into_iter()
            .map(|p| finding(p, true))
            .collect(),
        tier2_copies: args.tier2_copies.then_some(report.tier2_copies),
    };
    // Segments quarantined by this open are normally in the report already; add any that are not.
    if let Some(recovery) = manager.recovery_report(name) {
        for (tier, dropped) in [(0, &recovery.tier0_dropped), (1, &recovery.tier1_dropped)] {
            for (segment_id, reason) in dropped {
                outcome.notes.push(Finding {
                    segment_id: Some(*segment_id),
                    location: "note".into(),
                    detail: format!("Tier {tier} copy given up: {reason}"),
                });
            }
        }
        for (segment_id, reason) in recovery.quarantined {
            if !outcome
                .problems
                .iter()
                .any(|p| p.segment_id == Some(segment_id))
            {
                outcome.problems.push(Finding {
                    segment_id: Some(segment_id),
                    location: "recovery".into(),
                    detail: format!("quarantined when opened: {reason}"),
                });
            }
        }
    }
    Ok(outcome)
}

fn problem_line(log: &str, p: &Finding) -> String {
    match p.segment_id {
        Some(id) => format!("log {log}: segment {id:016x}: {}: {}", p.location, p.detail),
        None => format!("log {log}: {}: {}", p.location, p.detail),
    }
}

fn print_outcome<W: Write>(out: &mut W, outcome: &Outcome) -> io::Result<()> {
    for p in outcome
        .notes
        .iter()
        .chain(&outcome.unchecked)
        .chain(&outcome.problems)
    {
        writeln!(out, "{}", problem_line(&outcome.log, p))?;
    }
    let mut tail = String::new();
    if !outcome.unchecked.is_empty() {
        tail.push_str(&format!(", {} not checked", outcome.unchecked.len()));
    }
    if !outcome.notes.is_empty() {
        tail.push_str(&format!(", {} copies given up", outcome.notes.len()));
    }
    let tier2 = match outcome.tier2_copies {
        Some(n) => format!(", {n} Tier 2 copies checked"),
        None => String::new(),
    };
    let verdict = if !outcome.problems.is_empty() {
        "CORRUPT"
    } else if !outcome.unchecked.is_empty() {
        "UNCHECKED"
    } else {
        "ok"
    };
    writeln!(
        out,
        "log {}: {verdict}, {} segments ({} Tier 1 copies checked{tier2}), {} records verified, {} problems{tail}",
        outcome.log,
        outcome.segments,
        outcome.tier1_segments,
        outcome.records,
        outcome.problems.len(),
    )
}
