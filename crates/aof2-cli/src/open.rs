//! Opening roots and logs the way every command needs them.
//!
//! Contract: [`check_options`] / [`check_config`] validate every option (segment size, Tier 0
//! and Tier 1 budgets, compression, the Tier 2 store) before anything touches disk: an invalid
//! value or a Tier 0 budget that cannot hold two segments is exit 2 and creates nothing.
//! [`open_root`] takes the root's lock (a second process gets `Error::Locked`, exit 4).
//! [`open_existing_root`] additionally refuses a directory that does not exist (exit 2), so that
//! reading commands never create a root, and runs without Tier 2 when its `file://` store (by
//! default `ROOT/tier2`) does not exist, so that they never create it either (an absent store
//! holds nothing to read). [`require_log`] validates the name (exit 2 on a bad one) and refuses a log
//! that does not exist (exit 2), so reading commands never create a log. [`log_config`],
//! [`manager_config`] and [`tier2_config`] build the library configuration from the
//! command-line options.
//!
//! Tier 2: without `--tier2`, a root's store is `file://<absolute root>/tier2`; `--tier2 none`
//! turns Tier 2 off, and then `--tier2-option` and `--take-over` are usage errors (they would be
//! silently ignored). A store that refuses aof2 (its bucket does not exist, it rejects the
//! credentials) is a configuration error, exit 2 ([`aof2::Error::Tier2Misconfigured`]), whether
//! the open finds it or [`wait_for_tier2`] does later.

use std::path::Path;
use std::time::{Duration, Instant};

use aof2::{Aof, AofManager, LogConfig, ManagerConfig, Tier2Config};

use crate::args::{LogOptions, StorageOptions, Tier2Store};
use crate::failure::Failure;

/// Directory of the default Tier 2 store inside a data root.
pub const DEFAULT_TIER2_DIR: &str = "tier2";

/// How often [`wait_for_tier2`] looks whether the store refuses aof2.
const TIER2_PROBLEM_POLL: Duration = Duration::from_millis(250);

/// Wait until every sealed segment of `log` is in Tier 2 and its catalog lists them, or
/// `timeout` passes (`Ok(false)`). Stops at once with exit 2 and the store's refusal if the store
/// refuses aof2 (no such bucket, credentials rejected): waiting longer would not help.
pub fn wait_for_tier2(manager: &AofManager, log: &Aof, timeout: Duration) -> Result<bool, Failure> {
    let deadline = Instant::now() + timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(TIER2_PROBLEM_POLL);
        if manager.wait_for_tier2(log, slice) {
            return Ok(true);
        }
        if let Some(problem) = manager.tier_stats().tier2.and_then(|t| t.problem) {
            return Err(Failure::usage(format!(
                "Tier 2 store {} refuses aof2: {problem}",
                manager
                    .config()
                    .tier2
                    .as_ref()
                    .map_or("-", |t| t.url.as_str())
            )));
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

/// Library configuration for a log opened with these options.
pub fn log_config(options: &LogOptions) -> LogConfig {
    LogConfig {
        durability: options.durability,
        ..LogConfig::default().with_segment_bytes(options.storage.segment_bytes)
    }
}

/// Library configuration for a manager of `root` with these options.
pub fn manager_config(root: &Path, storage: &StorageOptions) -> Result<ManagerConfig, Failure> {
    Ok(ManagerConfig {
        tier0_max_bytes: storage.tier0_max_bytes,
        tier1_max_bytes: storage.tier1_max_bytes.unwrap_or(u64::MAX),
        compression: storage.compression,
        tier2: tier2_config(Some(root), storage)?,
        ..ManagerConfig::new(root)
    })
}

/// The Tier 2 store these options name (`None` with `--tier2 none`). Without `--tier2` the store
/// is the default one of `root`; without a root either, that is a usage error.
pub fn tier2_config(
    root: Option<&Path>,
    storage: &StorageOptions,
) -> Result<Option<Tier2Config>, Failure> {
    let url = match &storage.tier2 {
        Some(Tier2Store::Disabled) => {
            if storage.take_over || !storage.tier2_options.is_empty() {
                return Err(Failure::usage(
                    "--take-over and --tier2-option need a Tier 2 store, not --tier2 none",
                ));
            }
            return Ok(None);
        }
        Some(Tier2Store::Url(url)) => url.clone(),
        None => match root {
            Some(root) => default_tier2_url(root)?,
            None => return Err(Failure::usage("give the Tier 2 store with --tier2 URL")),
        },
    };
    let config = Tier2Config {
        options: storage.tier2_options.clone(),
        take_over: storage.take_over,
        ..Tier2Config::new(url)
    };
    config.validate()?;
    Ok(Some(config))
}

/// `file://<absolute root>/tier2`.
fn default_tier2_url(root: &Path) -> Result<String, Failure> {
    let dir = std::path::absolute(root)
        .map(|root| root.join(DEFAULT_TIER2_DIR))
        .map_err(|e| Failure::usage(format!("root {}: {e}", root.display())))?;
    let text = dir.to_str().ok_or_else(|| {
        Failure::usage(format!(
            "root {} is not valid UTF-8, so it has no default Tier 2 URL: give --tier2 URL or \
             --tier2 none",
            root.display()
        ))
    })?;
    Ok(format!("file://{text}"))
}

/// For commands that only read a store: a `file://` store must already exist (opening it would
/// create the directory).
pub fn require_store(config: &Tier2Config) -> Result<(), Failure> {
    match config.url.strip_prefix("file://") {
        Some(dir) if !Path::new(dir).is_dir() => Err(Failure::usage(format!(
            "Tier 2 store {} does not exist (no directory {dir})",
            config.url
        ))),
        _ => Ok(()),
    }
}

/// Open (creating if needed) the root and take its lock.
pub fn open_root(root: &Path, storage: &StorageOptions) -> Result<AofManager, Failure> {
    Ok(AofManager::open(manager_config(root, storage)?)?)
}

/// Open a root that must already exist.
pub fn open_existing_root(root: &Path, storage: &StorageOptions) -> Result<AofManager, Failure> {
    if !root.is_dir() {
        return Err(Failure::usage(format!(
            "root {} does not exist or is not a directory",
            root.display()
        )));
    }
    if !root.join(aof2::ROOT_FILE).exists() {
        // Reading commands never create a root (nor leave a lock file in someone's directory).
        return Err(Failure::usage(format!(
            "{} is not an aof2 root (it has no {})",
            root.display(),
            aof2::ROOT_FILE
        )));
    }
    let mut config = manager_config(root, storage)?;
    if config
        .tier2
        .as_ref()
        .is_some_and(|t| require_store(t).is_err())
    {
        // An absent file:// store holds nothing to read; opening it would create it.
        config.tier2 = None;
    }
    Ok(AofManager::open(config)?)
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
    // Any absolute root stands in for the real one: only the default Tier 2 URL depends on it,
    // and the real root's is checked when the command builds its configuration.
    Ok(manager_config(Path::new("/"), storage)?.validate()?)
}

/// Tell the user on stderr what recovery found wrong when it opened `log` (damage, not the
/// torn tail an interrupted writer leaves): records dropped behind damage and quarantined
/// segments.
pub fn warn_recovery(manager: &AofManager, log: &str) {
    let Some(report) = manager.recovery_report(log) else {
        return;
    };
    for damaged in &report.damaged_tails {
        eprintln!("aof2: warning: log {log:?}: {damaged}");
    }
    for (segment, reason) in &report.quarantined {
        eprintln!(
            "aof2: warning: log {log:?}: segment {segment} is quarantined ({reason}); reads of \
             its records fail"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn storage(extra: &[&str]) -> StorageOptions {
        let mut args = vec!["aof2", "restore", "--root", "r", "--log", "x"];
        args.extend_from_slice(extra);
        match Cli::try_parse_from(args).unwrap().command {
            Command::Restore(a) => a.storage,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn default_store_is_in_the_root() {
        let config = tier2_config(Some(Path::new("/data/r")), &storage(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(config.url, "file:///data/r/tier2");
        assert!(!config.take_over);
        // A relative root is made absolute.
        let config = tier2_config(Some(Path::new("rel")), &storage(&[]))
            .unwrap()
            .unwrap();
        let expected = std::env::current_dir().unwrap().join("rel").join("tier2");
        assert_eq!(config.url, format!("file://{}", expected.display()));
        assert!(tier2_config(None, &storage(&[])).is_err());
    }

    #[test]
    fn explicit_store_options_and_none() {
        let s = storage(&[
            "--tier2",
            "s3://b/p",
            "--tier2-option",
            "aws_endpoint=http://127.0.0.1:9000",
            "--tier2-option",
            "aws_allow_http=true",
            "--take-over",
        ]);
        let config = tier2_config(None, &s).unwrap().unwrap();
        assert_eq!(config.url, "s3://b/p");
        assert!(config.take_over);
        assert_eq!(
            config.options,
            vec![
                ("aws_endpoint".into(), "http://127.0.0.1:9000".into()),
                ("aws_allow_http".into(), "true".into())
            ]
        );
        assert!(
            tier2_config(Some(Path::new("/r")), &storage(&["--tier2", "none"]))
                .unwrap()
                .is_none()
        );
        for bad in [
            &["--tier2", "none", "--take-over"][..],
            &["--tier2", "none", "--tier2-option", "a=b"],
        ] {
            assert!(tier2_config(Some(Path::new("/r")), &storage(bad)).is_err());
        }
    }
}
