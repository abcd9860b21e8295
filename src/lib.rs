//! prefork: a prefork process supervisor, and the scoreboard its workers
//! report their status on.
//!
//! The [`scoreboard`] module is a port of Perl's Parallel::Scoreboard that
//! keeps its on-disk format, so Perl workers and prefork share one board.
//! The rest is the `prefork` binary's: [`cli`] and [`config`] produce a plain
//! [`config::Config`], which [`supervisor::run`] runs.

pub mod cli;
pub mod config;
pub mod duration;
pub mod render;
pub mod report;
pub mod scoreboard;
pub mod status;
pub mod supervisor;
