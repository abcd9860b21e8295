//! prefork: a prefork process supervisor, and the scoreboard its workers
//! report their status on.
//!
//! The [`scoreboard`] module is the `prefork-scoreboard` crate, re-exported:
//! a port of Perl's Parallel::Scoreboard that keeps its on-disk format, so
//! Perl workers and prefork share one board. A worker that only reports its
//! status depends on that crate alone.
//! The rest is the `prefork` binary's: [`cli`] and [`config`] produce a plain
//! [`config::Config`], which [`supervisor::run`] runs.

// Every `unsafe` block says why it is sound, as in the scoreboard crate.
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod config;
pub mod duration;
pub mod http;
pub mod idle;
pub mod listen;
pub mod render;
pub mod report;
pub use prefork_scoreboard as scoreboard;
pub mod status;
pub mod supervisor;
pub mod top;
