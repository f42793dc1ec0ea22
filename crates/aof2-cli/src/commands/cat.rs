//! `aof2 cat`: print the records of an existing log.
//!
//! Contract: never creates a root or a log (a missing one is exit 2) and changes nothing on disk
//! (the log is opened read-only). Prints the visible records
//! from `--from`, at most `--limit` of them, in sequence order. `raw`: each payload's bytes
//! exactly, then `\n`. `json`: one object per line,
//! `{"seq":S,"timestamp_ms":T,"len":L,"payload_base64":"..."}` (standard alphabet, padded).
//! A read error (for example a quarantined segment, exit 3) stops the output after flushing what
//! was printed. A closed stdout (`aof2 cat | head`) stops quietly with exit 0.

use std::io::{self, BufWriter, Write};

use aof2::Record;
use base64::Engine;

use crate::args::{CatArgs, CatFormat};
use crate::failure::{Failure, stdout_error};
use crate::open::{check_options, open_existing_root, require_log};

/// Run `aof2 cat`.
pub fn run(args: &CatArgs) -> Result<(), Failure> {
    aof2::validate_log_name(&args.log)?;
    check_options(&args.options)?;
    let manager = open_existing_root(&args.root.root, &args.options.storage)?;
    let result = require_log(&manager, &args.log).and_then(|()| {
        let log = manager.open_log_read_only(&args.log)?;
        let stdout = io::stdout();
        let mut out = BufWriter::with_capacity(64 * 1024, stdout.lock());
        let limit = args
            .limit
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        let records = log.reader(args.from).take(limit);
        let printed = print(records, args.format, &mut out);
        // Flush what was printed even when reading failed part-way.
        let flushed = out.flush().map_err(stdout_error);
        printed.and(flushed)
    });
    let closed = manager.close();
    result?;
    Ok(closed?)
}

/// Write `records` to `out` in `format`.
fn print<W: Write>(
    records: impl Iterator<Item = aof2::Result<Record>>,
    format: CatFormat,
    out: &mut W,
) -> Result<(), Failure> {
    let mut encoded = String::new();
    for record in records {
        let record = record?;
        match format {
            CatFormat::Raw => write_raw(out, &record),
            CatFormat::Json => write_json(out, &record, &mut encoded),
        }
        .map_err(stdout_error)?;
    }
    Ok(())
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
