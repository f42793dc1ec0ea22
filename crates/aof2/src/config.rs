//! Configuration of a manager and of each log. Every field states its unit and default;
//! [`ManagerConfig::validate`] and [`LogConfig::validate`] reject out-of-range values with
//! [`Error::InvalidConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::limits;

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The OS decides when data reaches the disk; aof2 syncs only when asked (`flush`) and when
    /// sealing a segment. Records are visible to readers as soon as they are written.
    None,
    /// Every record is durable about one interval after its append: the sync that covers it
    /// starts at the latest the interval, less the average sync time, after the record was
    /// written (earlier when the dirty-bytes watermark is crossed). Appends return once written;
    /// `wait_durable` waits for the sync.
    Interval(Duration),
    /// An append returns only after its bytes are covered by a completed `fdatasync`
    /// (group commit: one sync covers every record written before it).
    Always,
}

impl Durability {
    /// Parse `always`, `none`, `interval` (10 ms) or `interval:<ms>`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "always" => Ok(Durability::Always),
            "none" => Ok(Durability::None),
            "interval" => Ok(Durability::Interval(Duration::from_millis(10))),
            other => match other.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(Durability::Interval(Duration::from_millis(ms))),
                _ => Err(Error::InvalidConfig(format!(
                    "durability {other:?}: expected always, none, interval or interval:<ms>"
                ))),
            },
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> String {
        match self {
            Durability::None => "none".into(),
            Durability::Interval(d) => format!("interval:{}", d.as_millis()),
            Durability::Always => "always".into(),
        }
    }
}

/// Which records a reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadVisibility {
    /// Only records that are durable under the log's durability mode (for `Durability::None`,
    /// every written record). A reader never sees a record that a crash could take back.
    #[default]
    Durable,
    /// Every record written so far, durable or not (for `Durability::Always`, once the group
    /// commit that covers it has written it to the segment file, just before its fdatasync).
    Written,
}

/// How the TieredCoordinator picks the zstd level of Tier 1 files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Always this level (zstd levels: negative = fast modes, 1..=22 stronger).
    Fixed(i32),
    /// Follow the load: start at level 1 (within bounds), drop toward `min` when compression
    /// falls behind ingest (segments queue up or Tier 0 fills) or takes more than twice
    /// `limits::COMPRESS_CPU_SHARE` of the machine's CPU time at the current ingest rate, climb
    /// toward `max` while it keeps up and takes under half that share.
    Adaptive {
        /// Fastest level used.
        min: i32,
        /// Strongest level used.
        max: i32,
    },
}

impl Compression {
    /// Parse `adaptive` (default bounds), `adaptive:MIN..MAX` or a fixed level such as `3`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidConfig(format!(
                "compression {text:?}: expected a level (e.g. 3), adaptive or adaptive:MIN..MAX"
            ))
        };
        let parsed = if text == "adaptive" {
            Compression::default()
        } else if let Some(range) = text.strip_prefix("adaptive:") {
            let (min, max) = range.split_once("..").ok_or_else(bad)?;
            Compression::Adaptive {
                min: min.parse().map_err(|_| bad())?,
                max: max.parse().map_err(|_| bad())?,
            }
        } else {
            Compression::Fixed(text.parse().map_err(|_| bad())?)
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// The level range this setting may use.
    pub fn bounds(&self) -> (i32, i32) {
        match *self {
            Compression::Fixed(level) => (level, level),
            Compression::Adaptive { min, max } => (min, max),
        }
    }

    fn validate(&self) -> Result<()> {
        let (min, max) = self.bounds();
        let range = limits::MIN_ZSTD_LEVEL..=limits::MAX_ZSTD_LEVEL;
        if !range.contains(&min) || !range.contains(&max) || min > max || min == 0 || max == 0 {
            return Err(Error::InvalidConfig(format!(
                "zstd levels {min}..={max} must be non-zero, ordered, within {}..={}",
                limits::MIN_ZSTD_LEVEL,
                limits::MAX_ZSTD_LEVEL
            )));
        }
        Ok(())
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Adaptive {
            min: limits::DEFAULT_MIN_ZSTD_LEVEL,
            max: limits::DEFAULT_MAX_ZSTD_LEVEL,
        }
    }
}

/// Configuration of an [`AofManager`](crate::AofManager).
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Data root directory; created if missing.
    pub root: PathBuf,
    /// Threads that run background flushes (interval, watermark, explicit). Default 2.
    pub flush_threads: usize,
    /// Tick of the interval/age timer. Default 1 ms.
    pub timer_tick: Duration,
    /// Tier 0 budget, bytes: every segment file in Tier 0 (active, prepared, sealed and not yet
    /// evicted, hydrated) counts at its full size, across all logs open for writing (a
    /// read-only handle can evict nothing, so its files are not counted). Default 1 GiB.
    pub tier0_max_bytes: u64,
    /// Tier 1 budget, bytes of compressed files of the logs open for writing. Every writer of a
    /// Tier 1 file (compression, a fetch back from Tier 2, a restore) reserves its room before it
    /// starts (a compression the most its file can take, a little more than the segment), so
    /// writers running at once never share the same free room; the reservation settles to the
    /// file's size once it is written. The files never exceed the budget, except by what a log
    /// brings along when it opens (evicted to Tier 2 right away where Tier 2 holds copies).
    /// Without Tier 2, Tier 1 is the final home of sealed segments, so a full Tier 1 stops
    /// compression (segments without a copy stay in Tier 0; a segment whose copy could not fit
    /// in the whole budget never leaves it) and surfaces as backpressure naming Tier 1. Default:
    /// unlimited (`u64::MAX`).
    pub tier1_max_bytes: u64,
    /// How long an append waits for Tier 0 room (a new segment) before failing with
    /// `Error::Backpressure`. Default 5 s.
    pub admission_timeout: Duration,
    /// zstd level policy of Tier 1 files. Default adaptive.
    pub compression: Compression,
    /// Target uncompressed size of one Tier 1 frame (a point read decompresses one frame).
    /// Default 256 KiB.
    pub tier1_frame_bytes: usize,
    /// Compression worker threads. Default: half the CPUs (at least 1, at most 4).
    pub compress_threads: usize,
    /// Whether sealed segments are compressed into Tier 1. Default true. With `false`, Tier 0
    /// is the only home of the data and nothing can be evicted: size `tier0_max_bytes` for
    /// everything the logs keep, or appends get `Backpressure` naming Tier 0.
    pub tier1_enabled: bool,
    /// A segment only in Tier 1 is hydrated back into Tier 0 once its frames were decompressed
    /// this many times over (in whole segments' worth of frames). 0 = never. Default 2.
    pub hydrate_after_passes: u64,
    /// Object storage for Tier 2. Default `None`: Tier 1 is the final home of sealed segments.
    pub tier2: Option<Tier2Config>,
}

/// Tier 2 (object storage) settings.
///
/// `url` picks the store: `s3://bucket/prefix` (credentials and region from the standard
/// `AWS_*` environment variables, overridden by `options`), `file:///absolute/dir` or
/// `memory://` (process-local, for tests). `options` are `object_store` configuration keys for
/// S3, for example `("aws_endpoint", "http://127.0.0.1:9000")` and `("aws_allow_http", "true")`
/// for an S3-compatible server.
#[derive(Debug, Clone)]
pub struct Tier2Config {
    pub url: String,
    pub options: Vec<(String, String)>,
    /// Time limit of one request (a hung request is abandoned and retried). Default 30 s.
    /// A transfer of a segment object (an upload, a whole-object download) gets one per
    /// `part_bytes` of the object (at least one), so a big object still crosses a slow link;
    /// a download that receives nothing for `request_timeout` is given up before that.
    pub request_timeout: Duration,
    /// Attempts of one operation after the first, with exponential backoff and full jitter.
    /// Default 4.
    pub max_retries: u32,
    /// First backoff (doubling per attempt, capped at `backoff_max`). Default 50 ms.
    pub backoff_base: Duration,
    /// Default 2 s.
    pub backoff_max: Duration,
    /// Consecutive failed requests that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe (doubling while probes fail, capped at
    /// 5 s). Default 1 s.
    pub breaker_open_for: Duration,
    /// Concurrent uploads. Default 4.
    pub upload_concurrency: usize,
    /// Objects at least this large are uploaded in parts. Default 16 MiB.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (at least 5 MiB). Default 8 MiB.
    pub part_bytes: usize,
    /// Opening a log for writing when another root holds its writer claim takes the claim over
    /// instead of failing with `Error::Fenced`. The old writer is fenced from then on. Only set
    /// this when the old writer is gone. Default false.
    pub take_over: bool,
}

impl Tier2Config {
    /// Defaults for a store URL.
    pub fn new(url: impl Into<String>) -> Self {
        Tier2Config {
            url: url.into(),
            options: Vec::new(),
            request_timeout: Duration::from_secs(30),
            max_retries: 4,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(1),
            upload_concurrency: 4,
            multipart_threshold: 16 << 20,
            part_bytes: 8 << 20,
            take_over: false,
        }
    }

    /// Add an `object_store` option (builder style).
    pub fn with_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    pub fn validate(&self) -> Result<()> {
        let scheme_ok = ["s3://", "s3a://", "file://", "memory://"]
            .iter()
            .any(|s| self.url.starts_with(s));
        if !scheme_ok {
            return Err(Error::InvalidConfig(format!(
                "tier 2 URL {:?} must start with s3://, file:// or memory://",
                self.url
            )));
        }
        if let Some(path) = self.url.strip_prefix("file://")
            && !path.starts_with('/')
        {
            return Err(Error::InvalidConfig(format!(
                "tier 2 URL {:?}: a file:// URL needs an absolute path (file:///dir)",
                self.url
            )));
        }
        if let Some(rest) = self
            .url
            .strip_prefix("s3://")
            .or_else(|| self.url.strip_prefix("s3a://"))
            && rest.split('/').next().is_none_or(str::is_empty)
        {
            return Err(Error::InvalidConfig(format!(
                "tier 2 URL {:?} names no bucket (s3://bucket/prefix)",
                self.url
            )));
        }
        for (key, _) in &self.options {
            if key.parse::<object_store::aws::AmazonS3ConfigKey>().is_err() {
                return Err(Error::InvalidConfig(format!(
                    "tier 2 option {key:?} is not an S3 setting (for example aws_endpoint, \
                     aws_allow_http, aws_region, aws_access_key_id)"
                )));
            }
        }
        if self.request_timeout.is_zero() || self.upload_concurrency == 0 {
            return Err(Error::InvalidConfig(
                "tier 2 request_timeout and upload_concurrency must be non-zero".into(),
            ));
        }
        if self.part_bytes < 5 << 20 || self.multipart_threshold < self.part_bytes as u64 {
            return Err(Error::InvalidConfig(format!(
                "tier 2 part_bytes {} must be at least 5 MiB and at most multipart_threshold {}",
                self.part_bytes, self.multipart_threshold
            )));
        }
        if self.breaker_failures == 0 {
            return Err(Error::InvalidConfig(
                "tier 2 breaker_failures must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl ManagerConfig {
    /// Defaults for a root directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        ManagerConfig {
            root: root.into(),
            flush_threads: 2,
            timer_tick: Duration::from_millis(1),
            tier0_max_bytes: limits::DEFAULT_TIER0_MAX_BYTES,
            tier1_max_bytes: u64::MAX,
            admission_timeout: Duration::from_secs(5),
            compression: Compression::default(),
            tier1_frame_bytes: limits::DEFAULT_TIER1_FRAME_BYTES,
            compress_threads: (cpus / 2).clamp(1, 4),
            tier1_enabled: true,
            hydrate_after_passes: limits::HYDRATE_AFTER_PASSES,
            tier2: None,
        }
    }

    /// Check ranges.
    pub fn validate(&self) -> Result<()> {
        self.compression.validate()?;
        if let Some(tier2) = &self.tier2 {
            tier2.validate()?;
            if !self.tier1_enabled {
                return Err(Error::InvalidConfig(
                    "Tier 2 stores Tier 1 files: it needs tier1_enabled".into(),
                ));
            }
        }
        if self.tier0_max_bytes < 2 * limits::MIN_SEGMENT_BYTES {
            return Err(Error::InvalidConfig(format!(
                "tier0_max_bytes {} must hold at least two segments of the smallest size ({} bytes)",
                self.tier0_max_bytes,
                2 * limits::MIN_SEGMENT_BYTES
            )));
        }
        if !(limits::MIN_TIER1_FRAME_BYTES..=limits::MAX_TIER1_FRAME_BYTES)
            .contains(&self.tier1_frame_bytes)
        {
            return Err(Error::InvalidConfig(format!(
                "tier1_frame_bytes {} must be within {}..={}",
                self.tier1_frame_bytes,
                limits::MIN_TIER1_FRAME_BYTES,
                limits::MAX_TIER1_FRAME_BYTES
            )));
        }
        if self.compress_threads == 0 || self.compress_threads > limits::MAX_COMPRESS_THREADS {
            return Err(Error::InvalidConfig(format!(
                "compress_threads {} must be 1..={}",
                self.compress_threads,
                limits::MAX_COMPRESS_THREADS
            )));
        }
        if self.flush_threads == 0 || self.flush_threads > limits::MAX_FLUSH_THREADS {
            return Err(Error::InvalidConfig(format!(
                "flush_threads {} must be 1..={}",
                self.flush_threads,
                limits::MAX_FLUSH_THREADS
            )));
        }
        if self.timer_tick.is_zero() || self.timer_tick > Duration::from_secs(1) {
            return Err(Error::InvalidConfig(
                "timer_tick must be within (0, 1 s]".into(),
            ));
        }
        Ok(())
    }
}

/// Configuration of one log, given when it is opened.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Capacity of each new segment file, bytes. Default 64 MiB; 64 KiB ..= 4 GiB.
    pub segment_bytes: u64,
    /// Largest record payload, bytes. Default 8 MiB, at most what fits in one segment.
    pub max_record_bytes: u64,
    /// Durability of appends. Default `Always`.
    pub durability: Durability,
    /// Seal the active segment once it is this old, even if not full. Default: none.
    pub segment_max_age: Option<Duration>,
    /// Start a background flush when this many bytes are unsynced (Interval mode). Default 4 MiB.
    pub flush_watermark_bytes: u64,
    /// Appends wait for a flush when this many bytes are unsynced (Interval mode). Default 64 MiB.
    pub dirty_limit_bytes: u64,
    /// Which records readers see by default.
    pub read_visibility: ReadVisibility,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: limits::DEFAULT_SEGMENT_BYTES,
            max_record_bytes: limits::DEFAULT_MAX_RECORD_BYTES,
            durability: Durability::Always,
            segment_max_age: None,
            flush_watermark_bytes: 4 << 20,
            dirty_limit_bytes: 64 << 20,
            read_visibility: ReadVisibility::Durable,
        }
    }
}

impl LogConfig {
    /// Largest payload a segment of this config can hold.
    pub fn segment_payload_limit(&self) -> u64 {
        self.segment_bytes
            - limits::SEGMENT_HEADER_BYTES
            - limits::FRAME_HEADER_BYTES
            - limits::seal_reserve_bytes(limits::max_index_entries(self.segment_bytes))
    }

    /// Check ranges and consistency.
    pub fn validate(&self) -> Result<()> {
        if !(limits::MIN_SEGMENT_BYTES..=limits::MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(Error::InvalidConfig(format!(
                "segment_bytes {} must be within {}..={}",
                self.segment_bytes,
                limits::MIN_SEGMENT_BYTES,
                limits::MAX_SEGMENT_BYTES
            )));
        }
        if self.max_record_bytes > self.segment_payload_limit()
            || self.max_record_bytes > u32::MAX as u64
        {
            return Err(Error::InvalidConfig(format!(
                "max_record_bytes {} does not fit a segment of {} bytes (at most {})",
                self.max_record_bytes,
                self.segment_bytes,
                self.segment_payload_limit()
            )));
        }
        if let Durability::Interval(d) = self.durability
            && d.is_zero()
        {
            return Err(Error::InvalidConfig(
                "durability interval must be > 0".into(),
            ));
        }
        if self
            .segment_max_age
            .is_some_and(|age| age < Duration::from_millis(1))
        {
            return Err(Error::InvalidConfig(
                "segment_max_age must be at least 1 ms".into(),
            ));
        }
        if self.flush_watermark_bytes == 0 || self.dirty_limit_bytes < self.flush_watermark_bytes {
            return Err(Error::InvalidConfig(
                "need 0 < flush_watermark_bytes <= dirty_limit_bytes".into(),
            ));
        }
        Ok(())
    }

    /// Clamp `max_record_bytes` to what the segment size allows (used when only the segment size
    /// was changed from the default).
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> Self {
        self.segment_bytes = segment_bytes;
        if segment_bytes >= limits::MIN_SEGMENT_BYTES {
            self.max_record_bytes = self.max_record_bytes.min(self.segment_payload_limit());
        }
        self
    }
}

/// Check a log name: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}` without `..` anywhere (the name is
/// a directory name; `..` is refused outright rather than reasoned about).
pub fn validate_log_name(name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= limits::MAX_LOG_NAME_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName {
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "A9", "log.1", "x_y-z", &"a".repeat(128)] {
            validate_log_name(good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a..b",
            "a..",
            "a/b",
            "-a",
            "_a",
            ".hidden",
            "a b",
            "é",
            &"a".repeat(129),
            "a\0",
        ] {
            assert!(
                matches!(validate_log_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durability_parse() {
        assert_eq!(Durability::parse("always").unwrap(), Durability::Always);
        assert_eq!(
            Durability::parse("interval:5").unwrap(),
            Durability::Interval(Duration::from_millis(5))
        );
        assert!(Durability::parse("sometimes").is_err());
        assert!(Durability::parse("interval:0").is_err());
    }

    #[test]
    fn config_ranges() {
        LogConfig::default().validate().unwrap();
        LogConfig::default()
            .with_segment_bytes(limits::MIN_SEGMENT_BYTES)
            .validate()
            .unwrap();
        assert!(
            LogConfig {
                segment_bytes: 1000,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        assert!(
            LogConfig {
                max_record_bytes: 1 << 40,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
