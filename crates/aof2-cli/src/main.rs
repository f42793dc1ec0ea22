//! `aof2`: the command-line tool for aof2 data roots.
//!
//! Contract: parses the command line ([`args`]), runs one subcommand ([`commands`]) and turns its
//! outcome into the process exit status: 0 success, 2 invalid input or usage (including every
//! clap usage error), 3 corruption found, 4 I/O or environment error. Errors are printed to
//! stderr as `aof2: error: <message>`; a closed stdout ends the command quietly with 0.

mod args;
mod commands;
mod failure;
mod open;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Command::Append(a) => commands::append::run(a),
        Command::Cat(a) => commands::cat::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Verify(a) => commands::verify::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Restore(a) => commands::restore::run(a),
    };
    match outcome {
        Ok(()) | Err(Failure::Quiet) => ExitCode::SUCCESS,
        Err(Failure::Error { status, message }) => {
            eprintln!("aof2: error: {message}");
            ExitCode::from(status.code())
        }
    }
}
