//! Opening roots and logs the way every command needs them.
//!
//! Contract: [`check_options`] / [`check_config`] validate every option (segment size, Tier 0
//! and Tier 1 budgets, compression) before anything touches disk: an invalid value or a Tier 0
//! budget that cannot hold two segments is exit 2 and creates nothing. [`open_root`] takes the
//! root's lock (a second process gets `Error::Locked`, exit 4). [`open_existing_root`]
//! additionally refuses a directory that does not exist (exit 2), so that reading commands never
//! create a root. [`require_log`] validates the name (exit 2 on a bad one) and refuses a log that
//! does not exist (exit 2), so reading commands never create a log. [`log_config`] and
//! [`manager_config`] build the library configuration from the command-line options.

use std::path::Path;

use aof2::{AofManager, LogConfig, ManagerConfig};

use crate::args::{LogOptions, StorageOptions};
use crate::failure::Failure;

/// Library configuration for a log opened with these options.
pub fn log_config(options: &LogOptions) -> LogConfig {
    LogConfig {
        durability: options.durability,
        ..LogConfig::default().with_segment_bytes(options.storage.segment_bytes)
    }
}

/// Library configuration for a manager of `root` with these options.
pub fn manager_config(root: &Path, storage: &StorageOptions) -> ManagerConfig {
    ManagerConfig {
        tier0_max_bytes: storage.tier0_max_bytes,
        tier1_max_bytes: storage.tier1_max_bytes.unwrap_or(u64::MAX),
        compression: storage.compression,
        ..ManagerConfig::new(root)
    }
}

/// Open (creating if needed) the root and take its lock.
pub fn open_root(root: &Path, storage: &StorageOptions) -> Result<AofManager, Failure> {
    Ok(AofManager::open(manager_config(root, storage))?)
}

/// Open a root that must already exist.
pub fn open_existing_root(root: &Path, storage: &StorageOptions) -> Result<AofManager, Failure> {
    if !root.is_dir() {
        return Err(Failure::usage(format!(
            "root {} does not exist or is not a directory",
            root.display()
        )));
    }
    open_root(root, storage)
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
    check_config(&log_config(options), &options.storage)
}

/// Validate a log configuration together with the storage options it will be opened under.
pub fn check_config(log: &LogConfig, storage: &StorageOptions) -> Result<(), Failure> {
    log.validate()?;
    // The library refuses this too, but only once the root exists; say it in the flags' terms.
    if log.segment_bytes.saturating_mul(2) > storage.tier0_max_bytes {
        return Err(Failure::usage(format!(
            "--tier0-max-bytes {} is too small: the Tier 0 budget must hold two segments of \
             --segment-bytes {} (the active one and the next), at least {} bytes",
            storage.tier0_max_bytes,
            log.segment_bytes,
            log.segment_bytes.saturating_mul(2)
        )));
    }
    Ok(manager_config(Path::new(""), storage).validate()?)
}
