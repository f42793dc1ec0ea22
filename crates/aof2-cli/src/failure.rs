//! How a command fails: an exit status and a message for stderr.
//!
//! Contract: every command returns `Result<(), Failure>`. Library errors map by
//! [`aof2::Error::kind`]: `InvalidInput` -> 2 (among them a Tier 2 store that refuses aof2: no
//! such bucket, credentials rejected), `Corruption` -> 3, anything else -> 4 (among them
//! `Fenced`: another root owns the log's Tier 2 writer claim, and `Unavailable`: a locked root or
//! Tier 2 down). I/O errors
//! of the CLI itself map to 4, except a broken stdout pipe, which is [`Failure::Quiet`]: the
//! reader went away (`aof2 cat | head`), so the command stops and exits 0 without a message.
//! `main` prints messages as `aof2: error: <message>`.

use std::fmt;
use std::io;

use aof2::ErrorKind;

/// Exit status of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Invalid input or usage: 2.
    Usage,
    /// Corruption found: 3.
    Corruption,
    /// I/O or environment error: 4.
    Environment,
}

impl Status {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Usage => 2,
            Status::Corruption => 3,
            Status::Environment => 4,
        }
    }
}

/// Why a command stopped early.
#[derive(Debug)]
pub enum Failure {
    /// Report `message` and exit with `status`.
    Error { status: Status, message: String },
    /// Stop and exit 0 without a message (stdout's reader went away).
    Quiet,
}

impl Failure {
    /// Invalid input or usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::Error {
            status: Status::Usage,
            message: message.into(),
        }
    }

    /// Corruption found (exit 3).
    pub fn corruption(message: impl Into<String>) -> Self {
        Failure::Error {
            status: Status::Corruption,
            message: message.into(),
        }
    }

    /// I/O or environment error (exit 4).
    pub fn environment(message: impl Into<String>) -> Self {
        Failure::Error {
            status: Status::Environment,
            message: message.into(),
        }
    }

    /// Prefix the message with what was being done.
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self {
            Failure::Error { status, message } => Failure::Error {
                status,
                message: format!("{what}: {message}"),
            },
            Failure::Quiet => Failure::Quiet,
        }
    }
}

/// Status for a library error kind.
pub fn status_of(kind: ErrorKind) -> Status {
    match kind {
        ErrorKind::InvalidInput => Status::Usage,
        ErrorKind::Corruption => Status::Corruption,
        ErrorKind::Backpressure
        | ErrorKind::Unavailable
        | ErrorKind::Fenced
        | ErrorKind::Closed
        | ErrorKind::NotFound
        | ErrorKind::Io => Status::Environment,
    }
}

impl From<aof2::Error> for Failure {
    fn from(e: aof2::Error) -> Self {
        Failure::Error {
            status: status_of(e.kind()),
            message: e.to_string(),
        }
    }
}

/// Map an error writing to stdout: a broken pipe is a quiet stop, anything else exit 4.
pub fn stdout_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::Quiet
    } else {
        Failure::environment(format!("write to stdout: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_kinds_map_to_statuses() {
        let bad_name = aof2::validate_log_name("../x").unwrap_err();
        assert!(matches!(
            Failure::from(bad_name),
            Failure::Error {
                status: Status::Usage,
                ..
            }
        ));
        let corrupt = aof2::Error::Corruption {
            location: "f offset 1".into(),
            detail: "crc".into(),
        };
        assert!(matches!(
            Failure::from(corrupt),
            Failure::Error {
                status: Status::Corruption,
                ..
            }
        ));
        let locked = aof2::Error::Locked { root: "/r".into() };
        match Failure::from(locked) {
            Failure::Error { status, message } => {
                assert_eq!(status.code(), 4);
                assert!(message.contains("locked"), "{message}");
            }
            Failure::Quiet => panic!("locked is not quiet"),
        }
        let fenced = aof2::Error::Fenced {
            log: "x".into(),
            detail: "root 1 took the writer claim over".into(),
        };
        let unavailable = aof2::Error::Unavailable {
            tier: aof2::Tier::Tier2,
            detail: "circuit breaker open".into(),
        };
        for (error, word) in [(fenced, "fenced"), (unavailable, "unavailable")] {
            match Failure::from(error) {
                Failure::Error { status, message } => {
                    assert_eq!(status, Status::Environment);
                    assert!(message.contains(word), "{message}");
                }
                Failure::Quiet => panic!("{word} is not quiet"),
            }
        }
        assert_eq!(status_of(ErrorKind::Fenced).code(), 4);
        assert_eq!(status_of(ErrorKind::Unavailable).code(), 4);
    }

    #[test]
    fn broken_pipe_is_quiet() {
        assert!(matches!(
            stdout_error(io::Error::from(io::ErrorKind::BrokenPipe)),
            Failure::Quiet
        ));
        assert!(matches!(
            stdout_error(io::Error::other("disk full")),
            Failure::Error {
                status: Status::Environment,
                ..
            }
        ));
    }
}
