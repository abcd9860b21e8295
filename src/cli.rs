//! The command line. Parsed by clap, then turned into a plain [`Config`];
//! nothing past this module sees clap's types.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{Config, MAX_WORKERS};
use crate::duration;

/// A prefork process supervisor: keeps N workers running COMMAND, each with
/// its own entry on a scoreboard.
#[derive(Debug, Parser)]
#[command(name = "prefork", version, about, long_about = None)]
#[command(after_help = SIGNALS_HELP)]
pub struct Opts {
    /// Number of workers [default: the number of CPUs]
    #[arg(short, long, value_parser = parse_workers)]
    pub workers: Option<usize>,

    /// Scoreboard directory, created when missing and left in place
    /// [default: a private directory under $XDG_RUNTIME_DIR or /dev/shm, removed at exit]
    #[arg(short = 'd', long = "scoreboard", value_name = "DIR")]
    pub scoreboard_dir: Option<PathBuf>,

    /// How long a shutdown waits after SIGTERM before SIGKILL
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "30s")]
    pub graceful_timeout: Duration,

    /// Replace a worker whose status has not been updated for this long
    /// (0: never) [default: off]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration::parse)]
    pub timeout: Option<Duration>,

    /// How long a stuck worker gets between SIGTERM and SIGKILL
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "5s")]
    pub kill_timeout: Duration,

    /// How often the master reads the scoreboard
    #[arg(long, value_name = "DURATION", value_parser = parse_interval, default_value = "1s")]
    pub check_interval: Duration,

    /// The worker command and its arguments
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

const SIGNALS_HELP: &str = "\
Signals to the master:
  SIGTERM, SIGINT  graceful shutdown (again: immediate)
  SIGQUIT          immediate shutdown
  SIGUSR1          print the scoreboard to standard output
  SIGTTIN/SIGTTOU  one worker more / one fewer

Durations: 500ms, 2s, 1m, or a bare number of seconds.";

fn parse_workers(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    crate::config::check_workers(n).map(|()| n)
}

impl Opts {
    /// The effective configuration.
    pub fn into_config(self) -> Config {
        Config {
            command: self.command,
            workers: self
                .workers
                .unwrap_or_else(default_workers)
                .min(MAX_WORKERS),
            scoreboard_dir: self.scoreboard_dir,
            graceful_timeout: self.graceful_timeout,
            timeout: self.timeout.filter(|t| !t.is_zero()),
            kill_timeout: self.kill_timeout,
            check_interval: self.check_interval,
            ..Config::default()
        }
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = duration::parse(text)?;
    crate::config::check_interval(interval).map(|()| interval)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn workers_bounds() {
        assert!(Opts::try_parse_from(["prefork", "-w", "0", "--", "true"]).is_err());
        assert!(Opts::try_parse_from(["prefork", "-w", "100000", "--", "true"]).is_err());
        let opts = Opts::try_parse_from(["prefork", "-w", "3", "--", "sleep", "1"]).unwrap();
        assert_eq!(opts.workers, Some(3));
        assert_eq!(opts.command, ["sleep", "1"]);
    }
}
