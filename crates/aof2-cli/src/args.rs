//! Command-line grammar of `aof2` (clap derive).
//!
//! Contract: parsing only. Every value is validated as far as the CLI can without touching disk:
//! `--durability` goes through [`aof2::Durability::parse`], `--compression` through
//! [`aof2::Compression::parse`], sizes through [`parse_size`]. A parse failure is a clap usage
//! error, which exits with status 2. Ranges and combinations that only the library knows (segment
//! size bounds, a Tier 0 budget too small for two segments, log-name rules) are checked by
//! `open::check_options` before anything touches disk, and also exit 2.
//! `--root` and the log options are accepted after the subcommand.

use std::path::PathBuf;

use aof2::{Compression, Durability};
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
    /// Measure append latency and throughput, read-back speed, reopen time, Tier 1 compression
    /// and read-back from Tier 1.
    Bench(BenchArgs),
}

/// The data root every command works on.
#[derive(Debug, Args)]
pub struct RootArg {
    /// Data root directory.
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
}

/// How the manager stores segments: their size, the Tier 0 and Tier 1 budgets and the
/// compression of Tier 1 copies. Every command that opens a root accepts these.
#[derive(Debug, Clone, Copy, Args)]
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
}

/// How a log is opened. Reading commands accept these too (they open the root with the same
/// budgets; the log itself is opened read-only).
#[derive(Debug, Clone, Copy, Args)]
pub struct LogOptions {
    #[command(flatten)]
    pub storage: StorageOptions,
    /// When an append is acknowledged: always, interval, interval:<ms> or none.
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
    #[command(flatten)]
    pub root: RootArg,
    /// Log to read (must exist).
    #[arg(long, value_name = "NAME")]
    pub log: String,
    /// First sequence number to print.
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub from: u64,
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
    #[command(flatten)]
    pub options: LogOptions,
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
    /// Durability of the benchmark log: always, interval, interval:<ms> or none.
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
                let storage = a.options.storage;
                assert_eq!(storage.segment_bytes, aof2::limits::DEFAULT_SEGMENT_BYTES);
                // The defaults are the library's.
                assert_eq!(
                    storage.tier0_max_bytes,
                    aof2::limits::DEFAULT_TIER0_MAX_BYTES
                );
                assert_eq!(storage.tier1_max_bytes, None);
                assert_eq!(storage.compression, Compression::default());
                assert!(!a.wait_tier1);
            }
            other => panic!("{other:?}"),
        }
    }
}
