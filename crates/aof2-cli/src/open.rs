//! Opening roots and logs the way every command needs them.
//!
//! Contract: [`open_root`] takes the root's lock (a second process gets `Error::Locked`, exit 4).
//! [`open_existing_root`] additionally refuses a directory that does not exist (exit 2), so that
//! reading commands never create a root. [`require_log`] validates the name (exit 2 on a bad
//! one) and refuses a log that does not exist (exit 2), so reading commands never create a log.
//! [`log_config`] builds the library configuration from the command-line options.

use std::path::Path;

use aof2::{AofManager, LogConfig, ManagerConfig};

use crate::args::LogOptions;
use crate::failure::Failure;

/// Library configuration for a log opened with these options.
pub fn log_config(options: &LogOptions) -> LogConfig {
    LogConfig {
        durability: options.durability,
        ..LogConfig::default().with_segment_bytes(options.segment_bytes)
    }
}

/// Open (creating if needed) the root and take its lock.
pub fn open_root(root: &Path) -> Result<AofManager, Failure> {
    Ok(AofManager::open(ManagerConfig::new(root))?)
}

/// Open a root that must already exist.
pub fn open_existing_root(root: &Path) -> Result<AofManager, Failure> {
    if !root.is_dir() {
        return Err(Failure::usage(format!(
            "root {} does not exist or is not a directory",
            root.display()
        )));
    }
    open_root(root)
}

/// Check that `name` is a valid name of a log that exists in the root.
pub fn require_log(manager: &AofManager, name: &str) -> Result<(), Failure> {
    aof2::validate_log_name(name)?;
    if manager.log_exists(name) {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "log {name:?} does not exist in {}",
            manager.root().display()
        )))
    }
}

/// Validate the options before anything touches disk (so `append` with a bad segment size does
/// not create the root first).
pub fn check_options(options: &LogOptions) -> Result<(), Failure> {
    Ok(log_config(options).validate()?)
}
