//! `aof2 restore`: rebuild a log in a root from its catalog in Tier 2 alone
//! ([`aof2::AofManager::restore_log`]).
//!
//! Contract: the root is created if missing; the log must not exist in it (exit 2, nothing
//! changes), the store must hold a catalog of the log (exit 2 otherwise) and a `file://` store
//! must exist (reading it never creates it). Every segment the catalog lists is recorded as held
//! by Tier 2 and downloaded (checked against its CRC) into Tier 1 while the Tier 1 budget has
//! room. A progress bar of the downloaded bytes goes to stderr, hidden when stderr is not a
//! terminal. stdout gets one summary line,
//! `restored log NAME: S segments (D downloaded into Tier 1), records F..E, M MB in T s (R MB/s),
//! catalog epoch C`, or with `--json` one object: `log`, `log_id` (32 hex digits),
//! `catalog_epoch`, `segments`, `segments_downloaded`, `bytes_downloaded`, `first_seq`,
//! `end_seq`, `seconds`, `mb_per_sec` (MB = 10^6 bytes downloaded).
//!
//! The restored log reads like any other. Appending to it from this root needs the log's Tier 2
//! writer claim: while the old root's claim stands, the first writable open needs `--take-over`
//! (which fences the old writer). Records the old writer had not uploaded (its active segment,
//! segments still queued) are not in Tier 2 and so not restored.

use std::io::Write;

use aof2::{AofManager, ErrorKind, RestoreProgress, RestoreReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::args::{RestoreArgs, Tier2Store};
use crate::failure::{Failure, stdout_error};
use crate::open::{manager_config, require_store};

/// The JSON object.
#[derive(Debug, Serialize)]
struct Summary {
    log: String,
    log_id: String,
    catalog_epoch: u64,
    segments: u64,
    segments_downloaded: u64,
    bytes_downloaded: u64,
    first_seq: u64,
    end_seq: u64,
    seconds: f64,
    mb_per_sec: f64,
}

impl Summary {
    fn new(log: &str, r: &RestoreReport) -> Self {
        Summary {
            log: log.to_string(),
            log_id: format!("{:032x}", r.log_id),
            catalog_epoch: r.catalog_epoch,
            segments: r.segments,
            segments_downloaded: r.segments_downloaded,
            bytes_downloaded: r.bytes_downloaded,
            first_seq: r.first_seq,
            end_seq: r.end_seq,
            seconds: r.seconds,
            mb_per_sec: if r.seconds > 0.0 {
                r.bytes_downloaded as f64 / 1e6 / r.seconds
            } else {
                0.0
            },
        }
    }
}

/// Run `aof2 restore`.
pub fn run(args: &RestoreArgs) -> Result<(), Failure> {
    aof2::validate_log_name(&args.log)?;
    if args.storage.tier2 == Some(Tier2Store::Disabled) {
        return Err(Failure::usage("restore reads Tier 2: give --tier2 URL"));
    }
    let root = &args.root.root;
    let config = manager_config(root, &args.storage)?;
    config.validate()?;
    if let Some(tier2) = &config.tier2 {
        require_store(tier2)?;
    }
    let manager = AofManager::open(config)?;
    let result = if manager.log_exists(&args.log) {
        Err(Failure::usage(format!(
            "log {:?} already exists in {}; restore into a root without it",
            args.log,
            root.display()
        )))
    } else {
        restore(&manager, args)
    };
    let closed = manager.close();
    result?;
    Ok(closed?)
}

fn restore(manager: &AofManager, args: &RestoreArgs) -> Result<(), Failure> {
    let bar = ProgressBar::new(0).with_message("restore");
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>7} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut progress = |p: RestoreProgress| {
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
    };
    let report = manager.restore_log(&args.log, &mut progress);
    bar.finish_and_clear();
    let report = report.map_err(|e| match e.kind() {
        // No catalog of the log in the store: the input names nothing to restore.
        ErrorKind::NotFound => Failure::usage(e.to_string()),
        _ => Failure::from(e).context(format!("restore log {:?}", args.log)),
    })?;
    let summary = Summary::new(&args.log, &report);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer(&mut out, &summary)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        writeln!(
            out,
            "restored log {}: {} segments ({} downloaded into Tier 1), records {}..{}, {:.1} MB \
             in {:.2} s ({:.1} MB/s), catalog epoch {}",
            summary.log,
            summary.segments,
            summary.segments_downloaded,
            summary.first_seq,
            summary.end_seq,
            summary.bytes_downloaded as f64 / 1e6,
            summary.seconds,
            summary.mb_per_sec,
            summary.catalog_epoch
        )
    }
    .and_then(|()| out.flush())
    .map_err(stdout_error)
}
