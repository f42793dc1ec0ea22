//! Command-line grammar of `aof2` (clap derive).
//!
//! Contract: parsing only. Every value is validated as far as the CLI can without touching disk:
//! `--durability` goes through [`aof2::Durability::parse`], `--compression` through
//! [`aof2::Compression::parse`], sizes through [`parse_size`]. A parse failure is a clap usage
//! error, which exits with status 2. Ranges and combinations that only the library knows (segment
//! size bounds, a Tier 0 budget too small for two segments, log-name rules) are checked by
//! `open::check_options` before anything touches disk, and also exit 2. `--tier2` is checked by
//! [`parse_tier2`] (scheme, an absolute `file://` path, an `s3://` bucket) and by
//! [`aof2::Tier2Config::validate`] when the configuration is built.
//! `--root` and the log options are accepted after the subcommand.

use std::path::{Path, PathBuf};

use aof2::{Compression, Durability, Tier2Config};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// aof2: inspect and drive a durable append-only log from the shell.
///
/// Exit status: 0 success, 2 invalid input or usage, 3 corruption found, 4 I/O or environment
/// error (for example another process holds the root's lock).
#[derive(Debug, Parser)]
#[command(name = "aof2", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append stdin to a log, one record per line; print each record's sequence number once it
    /// is acknowledged.
    Append(AppendArgs),
    /// Print the records of a log.
    Cat(CatArgs),
    /// Show logs, segments, their states, tiers, sizes, compression and sequence ranges.
    Inspect(InspectArgs),
    /// Check every record checksum, in segment files and Tier 1 copies; exit 3 if anything is
    /// corrupt.
    Verify(VerifyArgs),
    /// Measure append latency and throughput, read-back speed, reopen time, Tier 1 compression,
    /// read-back from Tier 1, Tier 2 uploads and read-back from Tier 2.
    Bench(BenchArgs),
    /// Rebuild a log in a root (typically on a new machine) from its catalog in Tier 2 alone.
    Restore(RestoreArgs),
}

/// The data root every command works on.
#[derive(Debug, Args)]
pub struct RootArg {
    /// Data root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
}

/// Which Tier 2 store `--tier2` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tier2Store {
    /// `--tier2 none`: run without Tier 2 (Tier 1 is the final home of sealed segments).
    Disabled,
    /// A store URL, already checked by [`parse_tier2`].
    Url(String),
}

/// How the manager stores segments: their size, the Tier 0 and Tier 1 budgets, the compression
/// of Tier 1 copies and the Tier 2 store. Every command that opens a root accepts these.
#[derive(Debug, Clone, Args)]
pub struct StorageOptions {
    /// Capacity of each new segment file, bytes (suffixes K, M, G, KiB, MiB, GiB allowed).
    #[arg(long, value_name = "N", value_parser = parse_size, default_value = "64MiB")]
    pub segment_bytes: u64,
    /// Tier 0 budget, bytes: segment files (memory-mapped) of every log in the root, each counted
    /// at its full size. Must hold at least two segments (the active one and the next).
    #[arg(long, value_name = "N", value_parser = parse_size, default_value = "1GiB")]
    pub tier0_max_bytes: u64,
    /// Tier 1 budget, bytes of compressed segment copies (default: unlimited).
    #[arg(long, value_name = "N", value_parser = parse_size)]
    pub tier1_max_bytes: Option<u64>,
    /// zstd level of Tier 1 copies: a fixed level (e.g. 3), adaptive (the library's default
    /// range; lower while compression falls behind, higher while it keeps up) or
    /// adaptive:MIN..MAX.
    #[arg(long, value_name = "LEVEL", value_parser = parse_compression, default_value = "adaptive",
          allow_negative_numbers = true)]
    pub compression: Compression,
    /// Tier 2 object store that sealed segments are uploaded to: s3://BUCKET/PREFIX (credentials
    /// and region from the AWS_* environment variables), file:///ABSOLUTE/DIR, or none to run
    /// without Tier 2. Default: file://ROOT/tier2, a directory in
    /// the data root (reading commands do not create it).
    #[arg(long, value_name = "URL|none", value_parser = parse_tier2)]
    pub tier2: Option<Tier2Store>,
    /// An object_store setting of an s3:// store, for example aws_endpoint=http://127.0.0.1:9000
    /// and aws_allow_http=true for an S3-compatible server (repeatable).
    #[arg(long = "tier2-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub tier2_options: Vec<(String, String)>,
    /// Take the log's Tier 2 writer claim from the root that holds it. That writer is fenced:
    /// everything it appends afterwards is never published. Only for when the old writer is gone
    /// for good (its machine lost, or the log restored elsewhere with `aof2 restore`).
    #[arg(long)]
    pub take_over: bool,
}

/// How a log is opened. Reading commands accept these too (they open the root with the same
/// budgets; the log itself is opened read-only).
#[derive(Debug, Clone, Args)]
pub struct LogOptions {
    #[command(flatten)]
    pub storage: StorageOptions,
    /// When an append is acknowledged: always (after its fdatasync), interval (each record durable about 10 ms after its append), interval:<ms>, or none (the OS decides).
    #[arg(long, value_name = "MODE", value_parser = parse_durability, default_value = "always")]
    pub durability: Durability,
}

/// `aof2 append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Log to append to (created if missing).
    #[arg(long, value_name = "NAME")]
    pub log: String,
    /// Before exiting, wait until every sealed segment of the log has its compressed Tier 1 copy
    /// (compression otherwise runs in the background and resumes at the next writable open).
    #[arg(long)]
    pub wait_tier1: bool,
    /// Before exiting, wait until every sealed segment of the log is uploaded to Tier 2 and the
    /// log's catalog lists it (uploads otherwise run in the background and resume at the next
    /// writable open). Records of the active segment are not in Tier 2 until it is sealed.
    #[arg(long)]
    pub wait_tier2: bool,
    /// At the end of input, seal the active segment (even if not full), so that it is
    /// compressed and uploaded too: with --wait-tier2, every appended record is then in Tier 2
    /// when append exits. Each sealed segment holds at least one record.
    #[arg(long)]
    pub seal: bool,
    #[command(flatten)]
    pub options: LogOptions,
}

/// Output format of `aof2 cat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatFormat {
    /// Each payload as raw bytes followed by a newline.
    Raw,
    /// One JSON object per line: seq, timestamp_ms, len, payload_base64.
    Json,
}

/// `aof2 cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    /// Data root directory (required unless --remote; with --remote it only supplies the
    /// default Tier 2 store, ROOT/tier2, and is not opened).
    #[arg(long, value_name = "DIR", required_unless_present = "remote")]
    pub root: Option<PathBuf>,
    /// Read the log from Tier 2 alone (no local root; `--tier2 URL` names the store), while its
    /// writer may run elsewhere. Tier 2 holds the sealed segments the writer's catalog lists.
    #[arg(long)]
    pub remote: bool,
    /// Keep printing records as the log's Tier 2 catalog grows, until interrupted or --limit
    /// records were printed.
    #[arg(long, requires = "remote")]
    pub follow: bool,
    /// How often --follow reads the catalog again, milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000, requires = "follow",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub poll_ms: u64,
    /// Log to read (must exist).
    #[arg(long, value_name = "NAME")]
    pub log: String,
    /// First sequence number to print (default: the log's first record; retention may have
    /// removed records below it, and asking for those is an error).
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Print at most this many records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = CatFormat::Raw)]
    pub format: CatFormat,
    #[command(flatten)]
    pub options: LogOptions,
}

/// `aof2 inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Only this log (default: every log in the root).
    #[arg(long, value_name = "NAME")]
    pub log: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub options: LogOptions,
}

/// `aof2 verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Only this log (default: every log in the root).
    #[arg(long, value_name = "NAME")]
    pub log: Option<String>,
    /// Also check the Tier 2 copy of every uploaded segment, including those still held
    /// locally (by default a Tier 2 copy is checked only when it is the only copy). Reads every
    /// frame of every object: one ranged GET per frame.
    #[arg(long)]
    pub tier2_copies: bool,
    #[command(flatten)]
    pub options: LogOptions,
}

/// `aof2 restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub root: RootArg,
    /// Log to restore (must not exist in the root).
    #[arg(long, value_name = "NAME")]
    pub log: String,
    /// Print one JSON object instead of a summary line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageOptions,
}

/// `aof2 bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Data root (default: a temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Records to append in the timed phase.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub records: u64,
    /// Payload size of each record, bytes.
    #[arg(long, value_name = "B", value_parser = parse_size, default_value = "1024")]
    pub record_size: u64,
    /// Writer threads; each appends its share of the records.
    #[arg(long, value_name = "W", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub writers: u32,
    /// Durability of the benchmark log: always (each append waits for its fdatasync), interval (each record durable about 10 ms after its append), interval:<ms>, or none.
    #[arg(long, value_name = "MODE", value_parser = parse_durability, default_value = "none")]
    pub durability: Durability,
    #[command(flatten)]
    pub storage: StorageOptions,
    /// Print one JSON object on stdout instead of a human-readable report.
    #[arg(long)]
    pub json: bool,
}

/// clap value parser for `--durability`.
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    Durability::parse(text).map_err(|e| e.to_string())
}

/// clap value parser for `--compression`.
pub fn parse_compression(text: &str) -> Result<Compression, String> {
    Compression::parse(text).map_err(|e| e.to_string())
}

/// clap value parser for `--tier2`: `none`, or a URL the library accepts, with an absolute
/// `file://` path and an `s3://` bucket (checked here so that a bad URL creates nothing).
/// `memory://` is refused: that store lives only as long as one manager, and every command
/// outlives one (`bench` reopens, the others' uploads must still be there for the next run,
/// after Tier 1 copies may have been released because Tier 2 "holds" them).
pub fn parse_tier2(text: &str) -> Result<Tier2Store, String> {
    if text == "none" {
        return Ok(Tier2Store::Disabled);
    }
    if text.starts_with("memory://") {
        return Err(format!(
            "{text:?}: a memory:// store vanishes with the process; use file:///dir or s3://"
        ));
    }
    Tier2Config::new(text)
        .validate()
        .map_err(|e| e.to_string())?;
    if let Some(path) = text.strip_prefix("file://")
        && !Path::new(path).is_absolute()
    {
        return Err(format!(
            "{text:?}: a file:// URL needs an absolute path (file:///dir)"
        ));
    }
    let bucket = text
        .strip_prefix("s3://")
        .or_else(|| text.strip_prefix("s3a://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    if bucket == Some("") {
        return Err(format!("{text:?} names no bucket (s3://bucket/prefix)"));
    }
    Ok(Tier2Store::Url(text.to_string()))
}

/// clap value parser for `--tier2-option`: `KEY=VALUE` with a non-empty key.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// How `--compression` spells a setting (the inverse of [`parse_compression`]).
pub fn compression_name(compression: Compression) -> String {
    match compression {
        Compression::Fixed(level) => level.to_string(),
        Compression::Adaptive { min, max } => format!("adaptive:{min}..{max}"),
    }
}

/// Parse a byte count: a decimal integer with an optional binary suffix (`K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, case-insensitive). `64MiB` is 67108864.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, suffix) = trimmed.split_at(digits_end);
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => return Err(format!("{text:?} is not a size (e.g. 65536, 64KiB, 64MiB)")),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 65536, 64KiB, 64MiB)"))?;
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12x").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durability() {
        assert_eq!(parse_durability("none"), Ok(Durability::None));
        assert!(parse_durability("interval:5").is_ok());
        assert!(parse_durability("sometimes").is_err());
    }

    #[test]
    fn compression() {
        for text in ["3", "-1", "adaptive:1..19", "adaptive:-3..9"] {
            let parsed = parse_compression(text).unwrap();
            assert_eq!(compression_name(parsed), text);
        }
        assert_eq!(parse_compression("adaptive"), Ok(Compression::default()));
        assert_eq!(
            compression_name(Compression::default()),
            format!(
                "adaptive:{}..{}",
                aof2::limits::DEFAULT_MIN_ZSTD_LEVEL,
                aof2::limits::DEFAULT_MAX_ZSTD_LEVEL
            )
        );
        for bad in ["0", "99", "adaptive:5..1", "adaptive:1-3", "fast", ""] {
            assert!(parse_compression(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tier2_urls() {
        assert_eq!(parse_tier2("none"), Ok(Tier2Store::Disabled));
        for good in [
            "s3://bucket",
            "s3://bucket/a/b",
            "s3a://b/p",
            "file:///tmp/t2",
        ] {
            assert_eq!(
                parse_tier2(good),
                Ok(Tier2Store::Url(good.into())),
                "{good}"
            );
        }
        for bad in [
            "",
            "None",
            "http://x",
            "/tmp/t2",
            "file://relative/dir",
            "s3://",
            "s3:///p",
            "memory://",
        ] {
            assert!(parse_tier2(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_key_value("aws_endpoint=http://h:9000/?a=b"),
            Ok(("aws_endpoint".into(), "http://h:9000/?a=b".into()))
        );
        assert_eq!(parse_key_value("k="), Ok(("k".into(), String::new())));
        for bad in ["k", "=v", ""] {
            assert!(parse_key_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cat_root_is_optional_only_with_remote() {
        assert!(Cli::try_parse_from(["aof2", "cat", "--log", "x"]).is_err());
        assert!(
            Cli::try_parse_from(["aof2", "cat", "--log", "x", "--follow", "--root", "/r"]).is_err()
        );
        let cli = Cli::try_parse_from([
            "aof2",
            "cat",
            "--log",
            "x",
            "--remote",
            "--tier2",
            "s3://b/p",
            "--follow",
            "--poll-ms",
            "50",
        ])
        .unwrap();
        match cli.command {
            Command::Cat(a) => {
                assert!(a.root.is_none() && a.remote && a.follow);
                assert_eq!(a.poll_ms, 50);
                assert_eq!(
                    a.options.storage.tier2,
                    Some(Tier2Store::Url("s3://b/p".into()))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn root_after_subcommand() {
        let cli = Cli::try_parse_from([
            "aof2",
            "append",
            "--log",
            "x",
            "--root",
            "/tmp/r",
            "--durability",
            "interval:5",
        ])
        .unwrap();
        match cli.command {
            Command::Append(a) => {
                assert_eq!(a.root.root, PathBuf::from("/tmp/r"));
                let storage = &a.options.storage;
                assert_eq!(storage.segment_bytes, aof2::limits::DEFAULT_SEGMENT_BYTES);
                // The defaults are the library's.
                assert_eq!(
                    storage.tier0_max_bytes,
                    aof2::limits::DEFAULT_TIER0_MAX_BYTES
                );
                assert_eq!(storage.tier1_max_bytes, None);
                assert_eq!(storage.compression, Compression::default());
                assert_eq!(storage.tier2, None);
                assert!(storage.tier2_options.is_empty());
                assert!(!storage.take_over);
                assert!(!a.wait_tier1);
                assert!(!a.wait_tier2);
            }
            other => panic!("{other:?}"),
        }
    }
}
