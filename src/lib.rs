//! prefork: a prefork process supervisor, and the scoreboard its workers
//! report their status on.
//!
//! The [`scoreboard`] module is a port of Perl's Parallel::Scoreboard that
//! keeps its on-disk format, so Perl workers and prefork share one board.

pub mod scoreboard;
