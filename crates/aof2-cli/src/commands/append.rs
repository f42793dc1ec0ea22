//! `aof2 append`: stdin lines become records.
//!
//! Contract: each line of stdin (bytes up to, not including, `\n`; a final line without `\n`
//! counts; nothing else is stripped, so an empty line is a zero-length record) is appended in
//! order. A line longer than the log's maximum record size fails the command (exit 2) as soon
//! as that much of it was read: no more of it is read, so memory stays bounded whatever the
//! input (`aof2 append < /dev/zero`). A record's sequence number is printed on its own line
//! only once the record is acknowledged under the log's durability: with `always`, only after
//! an fdatasync covers it. With `always` the appends are pipelined: up to [`BATCH`] lines are
//! appended without waiting, then one wait for durability covers them all. A batch also ends
//! whenever stdin has no more buffered input, so interactive input is acknowledged line by line.
//! If appending fails, the records appended before the failure are still acknowledged and
//! printed, then the error is reported. Unlike `cat`, a closed stdout is an error (exit 4): the
//! caller did not learn every sequence number.
//!
//! Sealed segments are compressed into Tier 1 in the background; closing does not wait for it
//! (an interrupted compression resumes at the next writable open). With `--wait-tier1`, after a
//! successful append the command waits until every sealed segment has its Tier 1 copy, at most
//! [`WAIT_TIER1_TIMEOUT`]; running out of time is exit 4.
//!
//! With Tier 2 (the default store is `ROOT/tier2`), opening the log claims its Tier 2 writer
//! epoch. If another root holds the claim the log is fenced: exit 4 with a message saying so;
//! `--take-over` takes the claim instead (for when the other writer is gone). Uploads run in the
//! background; with `--wait-tier2` the command waits, at most [`WAIT_TIER2_TIMEOUT`] (exit 4
//! after that), until every sealed segment is uploaded and the log's catalog lists it. The
//! active segment's records reach Tier 2 only once it is sealed.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::time::Duration;

use aof2::{Aof, AofManager, Durability, ErrorKind};

use crate::args::{AppendArgs, Tier2Store};
use crate::failure::Failure;
use crate::open::{check_options, log_config, open_root};

/// Most lines appended before waiting for durability (`always` mode).
pub const BATCH: usize = 1024;

/// Longest `--wait-tier1` waits for compression.
pub const WAIT_TIER1_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest `--wait-tier2` waits for uploads.
pub const WAIT_TIER2_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `aof2 append`.
pub fn run(args: &AppendArgs) -> Result<(), Failure> {
    aof2::validate_log_name(&args.log)?;
    check_options(&args.options)?;
    if args.wait_tier2 && args.options.storage.tier2 == Some(Tier2Store::Disabled) {
        return Err(Failure::usage(
            "--wait-tier2 needs Tier 2, not --tier2 none",
        ));
    }
    let manager = open_root(&args.root.root, &args.options.storage)?;
    let result = manager
        .open_log(&args.log, log_config(&args.options))
        .map_err(|e| match e.kind() {
            ErrorKind::Fenced => {
                Failure::environment(format!("{e} (to take the claim over: --take-over)"))
            }
            _ => Failure::from(e),
        })
        .and_then(|log| {
            crate::open::warn_recovery(&manager, &args.log);
            let stdin = io::stdin();
            let stdout = io::stdout();
            pump(
                &log,
                log_config(&args.options).max_record_bytes,
                BufReader::with_capacity(64 * 1024, stdin.lock()),
                &mut BufWriter::with_capacity(64 * 1024, stdout.lock()),
            )?;
            if args.seal {
                log.seal()?;
            }
            if args.wait_tier1 {
                wait_tier1(&manager, &log)?;
            }
            if args.wait_tier2 {
                wait_tier2(&manager, &log)?;
            }
            Ok(())
        });
    let closed = manager.close();
    result?;
    Ok(closed?)
}

/// Wait until every sealed segment of `log` has its Tier 1 copy.
fn wait_tier1(manager: &AofManager, log: &Aof) -> Result<(), Failure> {
    if manager.wait_for_tier1(log, WAIT_TIER1_TIMEOUT) {
        Ok(())
    } else {
        Err(Failure::environment(format!(
            "--wait-tier1: sealed segments of log {:?} still lack a Tier 1 copy after {} s \
             (they are compressed at the next writable open)",
            log.name(),
            WAIT_TIER1_TIMEOUT.as_secs()
        )))
    }
}

/// Wait until every sealed segment of `log` is in Tier 2 and its catalog lists them.
fn wait_tier2(manager: &AofManager, log: &Aof) -> Result<(), Failure> {
    if crate::open::wait_for_tier2(manager, log, WAIT_TIER2_TIMEOUT)? {
        return Ok(());
    }
    let state = manager.tier_stats().tier2.map_or_else(
        || "no Tier 2 store".to_string(),
        |t| {
            format!(
                "{}: circuit breaker {}, {} segments waiting, {} failed requests",
                t.url, t.breaker, t.upload_backlog, t.request_failures
            )
        },
    );
    Err(Failure::environment(format!(
        "--wait-tier2: sealed segments of log {:?} are still not all in Tier 2 after {} s \
         ({state}); uploads resume at the next writable open",
        log.name(),
        WAIT_TIER2_TIMEOUT.as_secs()
    )))
}

/// Append every line of `input` to `log`, writing acknowledged sequence numbers to `out`. A line
/// is read up to `max_record_bytes` and its `\n`; one longer than that stops the command without
/// reading the rest of it.
fn pump<R: Read, W: Write>(
    log: &Aof,
    max_record_bytes: u64,
    mut input: BufReader<R>,
    out: &mut W,
) -> Result<(), Failure> {
    let pipelined = log.durability() == Durability::Always;
    let mut line = Vec::with_capacity(4096);
    let mut pending: Vec<u64> = Vec::with_capacity(BATCH);
    let mut line_number: u64 = 0;
    loop {
        line.clear();
        line_number += 1;
        // A whole record and its newline, or one byte too many.
        let step = match (&mut input)
            .take(max_record_bytes + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                if line.len() as u64 > max_record_bytes {
                    Err(Failure::usage(format!(
                        "record longer than the maximum of {max_record_bytes} bytes for this log \
                         (the rest of the line was not read)"
                    )))
                } else if pipelined {
                    log.append_nowait(&line).map_err(Failure::from)
                } else {
                    log.append(&line).map_err(Failure::from)
                }
            }
            Err(e) => Err(Failure::environment(format!("read stdin: {e}"))),
        };
        match step {
            Ok(seq) => pending.push(seq),
            Err(failure) => {
                // Acknowledge what did get appended, then report the failure.
                acknowledge(log, &mut pending, out, pipelined)?;
                return Err(failure.context(format!("stdin line {line_number}")));
            }
        }
        if pending.len() >= BATCH || input.buffer().is_empty() {
            acknowledge(log, &mut pending, out, pipelined)?;
        }
    }
    acknowledge(log, &mut pending, out, pipelined)
}

/// Wait until `pending` is durable (when `pipelined`), print it and flush.
fn acknowledge<W: Write>(
    log: &Aof,
    pending: &mut Vec<u64>,
    out: &mut W,
    pipelined: bool,
) -> Result<(), Failure> {
    let Some(&last) = pending.last() else {
        return Ok(());
    };
    if pipelined {
        log.wait_durable(last)?;
    }
    let written: io::Result<()> = pending
        .iter()
        .try_for_each(|seq| writeln!(out, "{seq}"))
        .and_then(|()| out.flush());
    pending.clear();
    written.map_err(|e| Failure::environment(format!("write sequence numbers to stdout: {e}")))
}
