//! One module per subcommand; each exposes `run(&Args) -> Result<(), Failure>`.
//!
//! Contract: a command writes its results to stdout, never prints errors itself (it returns a
//! [`Failure`](crate::failure::Failure) and `main` reports it), and closes the manager it opened
//! before returning, also on failure.

pub mod append;
pub mod bench;
pub mod cat;
pub mod inspect;
pub mod restore;
pub mod verify;
