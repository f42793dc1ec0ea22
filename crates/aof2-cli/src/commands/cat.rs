//! `aof2 cat`: print the records of an existing log, from a local root or (`--remote`) from
//! Tier 2 alone.
//!
//! Contract: never creates a root, a log or a store (a missing one is exit 2) and changes nothing
//! on disk (the log is opened read-only). Prints the visible records from `--from` (default: the
//! log's first record, which retention may have moved past 0; a `--from` below it is exit 2), at
//! most `--limit` of them, in sequence order. `raw`: each payload's bytes exactly, then `\n`. `json`: one object per line,
//! `{"seq":S,"timestamp_ms":T,"len":L,"payload_base64":"..."}` (standard alphabet, padded).
//! A read error (for example a quarantined segment, exit 3) stops the output after flushing what
//! was printed. A closed stdout (`aof2 cat | head`) stops quietly with exit 0.
//!
//! `--remote` reads with [`aof2::RemoteReader`] from the store `--tier2` names (or the default
//! store of `--root`, which is not opened or locked): the records of the sealed segments the
//! writer's newest catalog lists, while the writer may run elsewhere. `--follow` then keeps
//! going: whenever it has caught up it flushes stdout and reads the catalog again every
//! `--poll-ms`, until interrupted or `--limit` records were printed. While following, Tier 2
//! being unavailable is reported once on stderr and retried; other errors stop it. (A local
//! follow has nothing to wait for: the writer holds the root's lock, so `cat` cannot open it.)

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use aof2::{ErrorKind, Record, RemoteReader};
use base64::Engine;

use crate::args::{CatArgs, CatFormat};
use crate::failure::{Failure, stdout_error};
use crate::open::{check_options, open_existing_root, require_log, require_store, tier2_config};

/// How long one follow wait lasts before checking again (the catalog is read every poll).
const FOLLOW_WAIT: Duration = Duration::from_secs(60);

/// Run `aof2 cat`.
pub fn run(args: &CatArgs) -> Result<(), Failure> {
    aof2::validate_log_name(&args.log)?;
    check_options(&args.options)?;
    if args.remote {
        return run_remote(args);
    }
    let root = args
        .root
        .as_deref()
        .ok_or_else(|| Failure::usage("--root DIR is required without --remote"))?;
    let manager = open_existing_root(root, &args.options.storage)?;
    let result = require_log(&manager, &args.log).and_then(|()| {
        let log = manager.open_log_read_only(&args.log)?;
        crate::open::warn_recovery(&manager, &args.log);
        let from = start(args.from, log.first_seq(), &args.log)?;
        let records = log.reader(from).take(limit(args));
        with_stdout(|out| print(records, args.format, out))
    });
    let closed = manager.close();
    result?;
    Ok(closed?)
}

/// The first sequence to print: `--from`, or the log's first record (`first_seq`). Records
/// below `first_seq` were removed by retention: asking for them is invalid input.
fn start(from: Option<u64>, first_seq: u64, log: &str) -> Result<u64, Failure> {
    match from {
        None => Ok(first_seq),
        Some(from) if from < first_seq => Err(Failure::usage(format!(
            "--from {from}: log {log:?} starts at record {first_seq} (retention removed the \
             records before it)"
        ))),
        Some(from) => Ok(from),
    }
}

fn limit(args: &CatArgs) -> usize {
    args.limit
        .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}

/// Run `body` with buffered stdout, flushing what was printed even when `body` failed part-way.
fn with_stdout(
    body: impl FnOnce(&mut BufWriter<io::StdoutLock<'static>>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout().lock());
    let printed = body(&mut out);
    let flushed = out.flush().map_err(stdout_error);
    printed.and(flushed)
}

/// `cat --remote`.
fn run_remote(args: &CatArgs) -> Result<(), Failure> {
    let config = tier2_config(args.root.as_deref(), &args.options.storage)?
        .ok_or_else(|| Failure::usage("--remote reads from Tier 2: give --tier2 URL"))?;
    require_store(&config)?;
    let reader = RemoteReader::open(config, &args.log).map_err(|e| match e.kind() {
        ErrorKind::NotFound => Failure::usage(e.to_string()),
        _ => Failure::from(e),
    })?;
    let from = start(args.from, reader.first_seq(), &args.log)?;
    if !args.follow {
        let records = reader.iter_from(from).take(limit(args));
        return with_stdout(|out| print(records, args.format, out));
    }
    let mut records = reader.iter_from(from);
    let poll = Duration::from_millis(args.poll_ms);
    with_stdout(|out| {
        let mut left = args.limit.unwrap_or(u64::MAX);
        let mut encoded = String::new();
        let mut outage = false;
        while left > 0 {
            let next = match records.try_next() {
                Ok(Some(record)) => Ok(Some(record)),
                Ok(None) => {
                    // Caught up: show what was printed, then wait for the catalog to grow.
                    out.flush().map_err(stdout_error)?;
                    records.next_timeout(FOLLOW_WAIT, poll)
                }
                Err(e) => Err(e),
            };
            match next {
                Ok(Some(record)) => {
                    outage = false;
                    write(out, &record, args.format, &mut encoded).map_err(stdout_error)?;
                    left -= 1;
                }
                Ok(None) => {}
                Err(e) if e.kind() == ErrorKind::Unavailable => {
                    if !outage {
                        eprintln!("aof2: warning: {e}; retrying every {} ms", args.poll_ms);
                        outage = true;
                    }
                    std::thread::sleep(poll);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
}

/// Write `records` to `out` in `format`.
fn print<W: Write>(
    records: impl Iterator<Item = aof2::Result<Record>>,
    format: CatFormat,
    out: &mut W,
) -> Result<(), Failure> {
    let mut encoded = String::new();
    for record in records {
        write(out, &record?, format, &mut encoded).map_err(stdout_error)?;
    }
    Ok(())
}

fn write<W: Write>(
    out: &mut W,
    record: &Record,
    format: CatFormat,
    encoded: &mut String,
) -> io::Result<()> {
    match format {
        CatFormat::Raw => write_raw(out, record),
        CatFormat::Json => write_json(out, record, encoded),
    }
}

fn write_raw<W: Write>(out: &mut W, record: &Record) -> io::Result<()> {
    out.write_all(record.payload())?;
    out.write_all(b"\n")
}

/// One JSON line; `encoded` is a reusable scratch buffer for the base64 text (which needs no
/// JSON escaping).
fn write_json<W: Write>(out: &mut W, record: &Record, encoded: &mut String) -> io::Result<()> {
    encoded.clear();
    base64::engine::general_purpose::STANDARD.encode_string(record.payload(), encoded);
    writeln!(
        out,
        "{{\"seq\":{},\"timestamp_ms\":{},\"len\":{},\"payload_base64\":\"{}\"}}",
        record.seq(),
        record.timestamp_ms(),
        record.len(),
        encoded
    )
}
