//! aof2: a durable, tiered append-only log.
//!
//! An [`AofManager`] owns a data root and many named logs. Each [`Aof`] assigns dense `u64`
//! sequence numbers, appends into memory-mapped, preallocated segment files, and makes appends
//! durable with group commit (one fdatasync covers every record written before it). Metadata
//! changes go through a per-log write-ahead manifest; recovery trusts checksummed sealed segments
//! and scans only the unsealed tail.
//!
//! ```no_run
//! use aof2::{AofManager, LogConfig, ManagerConfig};
//! let manager = AofManager::open(ManagerConfig::new("/tmp/aof2-data"))?;
//! let log = manager.open_log("orders", LogConfig::default())?;
//! let seq = log.append(b"hello")?; // durable when it returns (Durability::Always)
//! assert_eq!(log.read(seq)?.payload(), b"hello");
//! # Ok::<(), aof2::Error>(())
//! ```

mod aof;
mod config;
mod error;
mod flush;
pub mod format;
pub mod limits;
mod manager;
mod manifest;
mod read;
mod recovery;
mod remote;
mod segment;
mod stats;
mod sys;
mod tier1;
mod tier2;
mod tiering;

pub use aof::{Aof, Clock, SyncFault};
pub use config::{
    Compression, Durability, LogConfig, ManagerConfig, ReadVisibility, Tier2Config,
    validate_log_name,
};
pub use error::{Error, ErrorKind, Result, Tier};
pub use manager::{AofManager, LogInfo, ROOT_FILE, SegmentInfo, SegmentState, TierLocation};
pub use read::Reader;
pub use recovery::verify::{Problem, VerifyOptions, VerifyReport};
pub use recovery::{DamagedTail, RecoveryReport};
pub use remote::{RemoteIter, RemoteReader, RestoreProgress, RestoreReport};
pub use segment::{LaterFrames, Record};
pub use stats::LogStats;
pub use tier2::Tier2Stats;
pub use tiering::TierStats;
