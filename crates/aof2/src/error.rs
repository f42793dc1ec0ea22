//! Public error type.
//!
//! Few prescriptive kinds ([`ErrorKind`]) tell the caller what to do; the [`Error`] variants carry
//! the detail a human needs (which log, which segment, which offset). Errors are `Clone` so one
//! failed group commit can hand the same error to every waiter.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input was wrong (bad name, record too large, bad configuration, a Tier 2 store that
    /// refuses aof2's bucket or credentials): fix it, do not retry.
    InvalidInput,
    /// Data on disk failed a checksum or an invariant: check the data (`aof2 verify`).
    Corruption,
    /// A budget or queue is full: retry later. Nothing was written.
    Backpressure,
    /// A dependency (another process holding the root, a remote tier) is unavailable: retry later.
    Unavailable,
    /// Another writer owns the log (Tier 2 writer fencing): stop writing; do not retry.
    Fenced,
    /// The log or manager is closed or failed after an I/O error: reopen it.
    Closed,
    /// The requested thing does not exist.
    NotFound,
    /// An I/O or environment error that is none of the above.
    Io,
}

/// Which storage tier an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Memory-mapped segments.
    Tier0,
    /// Compressed local files.
    Tier1,
    /// Object storage.
    Tier2,
}

/// An aof2 error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A log name does not match `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, or contains `..`.
    #[error(
        "invalid log name {name:?}: names are 1-128 characters of [A-Za-z0-9._-] starting with a letter or digit, without \"..\""
    )]
    InvalidName { name: String },

    /// A record is larger than the log accepts.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes for this log")]
    RecordTooLarge { len: u64, max: u64 },

    /// A batch is empty, has too many records, or does not fit in one segment (a batch never
    /// spans segments).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// The Tier 2 store refuses aof2 for a reason only its configuration can fix: the bucket
    /// does not exist, the store rejects the credentials, or they are not allowed to use the
    /// bucket. `detail` says which, and what to change. Not an outage: retrying the same
    /// configuration gets the same answer (while running, uploads still try again, backing off,
    /// in case the store is fixed meanwhile).
    #[error("Tier 2 store {url} refuses aof2: {detail}")]
    Tier2Misconfigured { url: String, detail: String },

    /// Another process (or another manager in this process) owns the root.
    #[error("root {} is locked by another aof2 process", root.display())]
    Locked { root: PathBuf },

    /// A file or root was written by a newer aof2.
    #[error("{} has format version {found}, this aof2 supports up to {supported}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },

    /// A file is not an aof2 file (wrong magic).
    #[error("{} is not an aof2 {what}", path.display())]
    NotAof2File { path: PathBuf, what: &'static str },

    /// A checksum or invariant failed.
    #[error("corruption in {location}: {detail}")]
    Corruption { location: String, detail: String },

    /// The log refused an operation because a budget is exhausted; nothing was written.
    #[error("backpressure from {tier:?}: {detail}")]
    Backpressure { tier: Tier, detail: String },

    /// A required tier is unavailable.
    #[error("{tier:?} unavailable: {detail}")]
    Unavailable { tier: Tier, detail: String },

    /// Another writer holds the log's Tier 2 writer claim, or took it over from this one: this
    /// handle must not write (nothing it appends would be published).
    #[error("log {log:?} is fenced: {detail}")]
    Fenced { log: String, detail: String },

    /// The requested record, log or segment does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// The log failed earlier (for example an fdatasync failed) and refuses work until reopened.
    #[error("log {log:?} failed and must be reopened: {cause}")]
    LogFailed { log: String, cause: Arc<Error> },

    /// The log handle was opened read-only.
    #[error("log {log:?} is open read-only")]
    ReadOnly { log: String },

    /// The log or manager was closed.
    #[error("{0} is closed")]
    Closed(String),

    /// An I/O error with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: Arc<io::Error>,
    },
}

impl Error {
    /// What the caller should do about this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidName { .. }
            | Error::RecordTooLarge { .. }
            | Error::InvalidBatch(_)
            | Error::InvalidConfig(_)
            | Error::Tier2Misconfigured { .. }
            | Error::ReadOnly { .. } => ErrorKind::InvalidInput,
            Error::Locked { .. } => ErrorKind::Unavailable,
            Error::UnsupportedVersion { .. } => ErrorKind::InvalidInput,
            Error::NotAof2File { .. } | Error::Corruption { .. } => ErrorKind::Corruption,
            Error::Backpressure { .. } => ErrorKind::Backpressure,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Fenced { .. } => ErrorKind::Fenced,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::LogFailed { .. } | Error::Closed(_) => ErrorKind::Closed,
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Io,
            },
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(location: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Corruption {
            location: location.into(),
            detail: detail.into(),
        }
    }
}

/// The public error for a decoder's refusal at `offset` of `path`: a newer version is
/// `UnsupportedVersion`, wrong magic at the start is `NotAof2File` (an aof2 `file` it is not),
/// anything else `Corruption` naming the structure (`what`) and the offset.
pub(crate) fn format_error(
    path: &std::path::Path,
    offset: u64,
    file: &'static str,
    what: &str,
    e: crate::format::FormatError,
) -> Error {
    use crate::format::FormatError;
    match e {
        FormatError::UnsupportedVersion(v) => Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: v,
            supported: crate::format::FORMAT_VERSION,
        },
        FormatError::BadMagic if offset == 0 => Error::NotAof2File {
            path: path.to_path_buf(),
            what: file,
        },
        other => Error::corruption(
            format!("{} offset {offset}", path.display()),
            format!("{what}: {other}"),
        ),
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach context to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
