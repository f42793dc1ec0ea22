//! Command line: options of a benchmark run and of the hidden W5 child.
//!
//! Contract: [`Cli::settings`] turns the options into [`Settings`]: `--quick` (or the fuller
//! default) picks the base, then every explicit option overrides its part. `--dir` is the parent
//! of the per-row data directories (default: see [`crate::env::default_data_dir`]); `--out` is
//! where `report.json` and the charts go (default `<target>/aof2-bench`). `--redraw FILE`
//! measures nothing: it prints the tables of an earlier `report.json` and redraws its charts.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::payload::PayloadKind;
use crate::report::Workload;
use crate::systems::SystemKind;
use crate::workloads::{CHILD_COMMAND, ChildArgs, Settings};

/// Side-by-side benchmarks of aof2 against okaywal, raft-engine, commitlog and raw files.
#[derive(Debug, Parser)]
#[command(name = "aof2-bench", version)]
pub struct Cli {
    /// Short run: about a second per row, reopen at 400 MiB only (a few minutes in all).
    #[arg(long)]
    pub quick: bool,
    /// Parent directory of the data directories (must be a real disk, not tmpfs).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where report.json and the SVG charts are written.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Workloads to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub workloads: Option<Vec<Workload>>,
    /// Systems to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub systems: Option<Vec<SystemKind>>,
    /// Record sizes in bytes (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Closed-loop writer counts of W1 (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub writers: Option<Vec<usize>>,
    /// Timed seconds per appending row.
    #[arg(long)]
    pub secs: Option<f64>,
    /// Payload contents.
    #[arg(long, value_enum)]
    pub payload: Option<PayloadKind>,
    /// Measure nothing: print the tables of an earlier report.json and redraw its charts.
    #[arg(long, value_name = "REPORT_JSON")]
    pub redraw: Option<PathBuf>,
    /// Reopen volumes of W5 in MiB (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "MIB")]
    pub reopen_mib: Option<Vec<u64>>,
    #[command(subcommand)]
    pub child: Option<Hidden>,
}

/// Subcommands not meant for people.
#[derive(Debug, Subcommand)]
pub enum Hidden {
    /// W5: append until killed.
    #[command(name = CHILD_COMMAND, hide = true)]
    AppendUntilKilled {
        #[arg(long, value_enum)]
        system: SystemKind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        record_size: usize,
        #[arg(long)]
        writers: usize,
        #[arg(long)]
        target_bytes: u64,
        #[arg(long, value_enum)]
        payload: PayloadKind,
    },
    /// W6: ingest through a Tier 0 budget and report.
    #[command(name = crate::tiering::INGEST_COMMAND, hide = true)]
    TierIngest {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        budget: u64,
        #[arg(long)]
        record_size: usize,
        #[arg(long, value_enum)]
        payload: PayloadKind,
    },
}

impl Hidden {
    /// The child's parameters.
    pub fn child_args(&self) -> ChildArgs {
        match self {
            Hidden::TierIngest { .. } => unreachable!("the ingest child has its own entry point"),
            Hidden::AppendUntilKilled {
                system,
                dir,
                record_size,
                writers,
                target_bytes,
                payload,
            } => ChildArgs {
                system: *system,
                dir: dir.clone(),
                record_size: *record_size,
                writers: *writers,
                target_bytes: *target_bytes,
                payload: *payload,
            },
        }
    }
}

impl Cli {
    /// The run's settings, with `data_dir` as the parent of data directories.
    pub fn settings(&self, data_dir: PathBuf) -> Settings {
        let mut s = if self.quick {
            Settings::quick(data_dir)
        } else {
            Settings::full(data_dir)
        };
        if let Some(systems) = &self.systems {
            s.systems = systems.clone();
        }
        if let Some(sizes) = &self.sizes {
            s.sizes = sizes.clone();
        }
        if let Some(writers) = &self.writers {
            s.writers = writers.clone();
        }
        if let Some(secs) = self.secs {
            s.secs = secs;
            s.warmup_secs = s.warmup_secs.min(secs / 4.0);
        }
        if let Some(payload) = self.payload {
            s.payload = payload;
        }
        if let Some(mib) = &self.reopen_mib {
            s.reopen_volumes = mib.iter().map(|m| m << 20).collect();
        }
        s
    }

    /// The workloads to run, in order.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut w = self
            .workloads
            .clone()
            .unwrap_or_else(|| Workload::ALL.to_vec());
        w.sort();
        w.dedup();
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let cli = Cli::try_parse_from([
            "aof2-bench",
            "--quick",
            "--workloads",
            "w2,w1",
            "--systems",
            "aof2-always,okaywal",
            "--sizes",
            "64",
        ])
        .unwrap();
        assert_eq!(cli.workloads(), vec![Workload::W1, Workload::W2]);
        let s = cli.settings(PathBuf::from("/x"));
        assert_eq!(s.systems, vec![SystemKind::Aof2Always, SystemKind::Okaywal]);
        assert_eq!(s.sizes, vec![64]);
        assert_eq!(s.secs, 1.0);
        let child = Cli::try_parse_from([
            "aof2-bench",
            CHILD_COMMAND,
            "--system",
            "raft-engine-nosync",
            "--dir",
            "/d",
            "--record-size",
            "1024",
            "--writers",
            "1",
            "--target-bytes",
            "100",
            "--payload",
            "text",
        ])
        .unwrap();
        assert!(child.child.is_some());
    }
}
