//! `aof2-bench`: side-by-side benchmarks of aof2 against peer logs (okaywal, raft-engine,
//! commitlog) and physical baselines (raw file, memcpy) on the same machine, in one run.
//!
//! Contract: `aof2-bench [--quick] [options]` runs the selected workloads (see
//! [`workloads`]), prints a table per workload and aof2's ratio to the best peer on stdout
//! (progress on stderr), and writes `<out>/report.json` and `<out>/*.svg` (see [`report`]).
//! `--redraw REPORT_JSON` measures nothing: it reprints the tables of an earlier report and
//! redraws its charts. Exit code 0 when every row was measured, 1 when some row failed (its error is in its notes),
//! 2 on a usage or environment error. The hidden subcommand `__append-until-killed` is the child
//! process W5 kills.

mod cli;
mod env;
mod payload;
mod report;
mod stats;
mod systems;
mod tier2;
mod tiering;
mod workloads;

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use cli::Cli;
use workloads::Bench;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(cli::Hidden::TierIngest {
        dir,
        bytes,
        budget,
        record_size,
        payload,
    }) = &cli.child
    {
        let args = tiering::IngestArgs {
            dir: dir.clone(),
            bytes: *bytes,
            budget: *budget,
            record_size: *record_size,
            payload: *payload,
        };
        return match tiering::ingest_child(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("aof2-bench ingest child: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(child) = &cli.child {
        return match workloads::append_until_killed(&child.child_args()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("aof2-bench child: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("aof2-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Print tables, write charts; returns whether every row was measured.
fn publish(
    out_dir: &std::path::Path,
    rows: &[report::Row],
    json: Option<&std::path::Path>,
) -> systems::Result<bool> {
    let charts = report::write_charts(out_dir, rows)?;
    let mut out = std::io::stdout().lock();
    if let Some(json) = json {
        writeln!(out, "\nreport: {}", json.display())?;
    }
    for chart in charts {
        writeln!(out, "chart:  {}", chart.display())?;
    }
    Ok(rows.iter().all(|r| !r.notes.contains("FAILED")))
}

/// Run the benchmark; `Ok(false)` when some row failed.
fn run(cli: &Cli) -> systems::Result<bool> {
    let target = env::target_dir();
    let out_dir = cli.out.clone().unwrap_or_else(|| target.join("aof2-bench"));
    std::fs::create_dir_all(&out_dir)?;
    if let Some(path) = &cli.redraw {
        let rows = report::read_json(path)?;
        for workload in report::Workload::ALL {
            if rows.iter().any(|r| r.workload == workload) {
                report::write_table(&mut std::io::stdout().lock(), workload, &rows)?;
            }
        }
        return publish(&out_dir, &rows, None);
    }
    let data_dir = match &cli.dir {
        Some(dir) => dir.clone(),
        None => env::default_data_dir(&target),
    };
    workloads::check_data_dir(&data_dir)
        .map_err(|e| format!("data directory {}: {e}", data_dir.display()))?;
    if env::is_memory_fs(&data_dir) {
        eprintln!(
            "warning: {} is on a memory filesystem: fdatasync costs nothing there",
            data_dir.display()
        );
    }
    let settings = cli.settings(data_dir);
    let workloads = cli.workloads();

    let started = Instant::now();
    let warm = (if cli.quick { 1u64 << 30 } else { 4 << 30 })
        .min(env::available_memory().unwrap_or(0) / 4);
    eprintln!(
        "aof2-bench ({}): data under {}, {} s per row, payload {:?}; touching {} MiB of memory first",
        if cli.quick { "quick" } else { "full" },
        settings.data_dir.display(),
        settings.secs,
        settings.payload,
        warm >> 20
    );
    env::warm_memory(warm);

    let bench = Bench::new(&settings);
    let mut rows = Vec::new();
    let stdout = std::io::stdout();
    for workload in workloads {
        let mut new_rows = bench.run(workload);
        report::compare_to_peers(&mut new_rows);
        report::write_table(&mut stdout.lock(), workload, &new_rows)?;
        rows.append(&mut new_rows);
    }
    let json = out_dir.join("report.json");
    report::write_json(&json, &rows)?;
    let charts = report::write_charts(&out_dir, &rows)?;
    let mut out = stdout.lock();
    writeln!(out, "\nreport: {}", json.display())?;
    for chart in charts {
        writeln!(out, "chart:  {}", chart.display())?;
    }
    writeln!(out, "total time: {:.1} s", started.elapsed().as_secs_f64())?;
    Ok(rows.iter().all(|r| !r.notes.contains("FAILED")))
}
