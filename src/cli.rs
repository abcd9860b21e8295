//! The command line. Parsed by clap, then turned into a configuration
//! [`Layer`] that goes over the config file's; nothing past this module sees
//! clap's types.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Layer, Source, MAX_WORKERS};
use crate::duration;

/// A prefork process supervisor: keeps N workers running COMMAND, each with
/// its own entry on a scoreboard.
#[derive(Debug, Parser)]
#[command(name = "prefork", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, after_help = SIGNALS_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Validate the configuration, print it as it would run (after the
    /// command line's overrides), and start nothing. Exits 0 or 2.
    Check(RunArgs),
    /// Print the live workers of a scoreboard (of a running prefork, or of
    /// any program using Parallel::Scoreboard)
    Status(StatusArgs),
    /// Write this worker's status (from a worker started by prefork)
    Report(ReportArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("board").required(true).args(["scoreboard_dir", "config"]))]
pub struct StatusArgs {
    /// The scoreboard directory
    #[arg(
        short = 'd',
        long = "scoreboard",
        visible_alias = "scoreboard-dir",
        value_name = "DIR"
    )]
    pub scoreboard_dir: Option<PathBuf>,

    /// A config file whose `scoreboard_dir` names the directory
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,

    /// Exit with status 3 when fewer live workers are on the board
    #[arg(long, value_name = "N")]
    pub min_workers: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The status (any text), or `-` to read it from standard input
    #[arg(value_name = "STATUS", allow_hyphen_values = true)]
    pub status: OsString,
}

/// How to run: every option here is also a key of the config file, with
/// the same name in snake_case; an option given here overrides the file.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML config file (re-read on SIGHUP)
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Number of workers [default: the number of CPUs]
    #[arg(short, long, value_parser = parse_workers)]
    pub workers: Option<usize>,

    /// Scoreboard directory, created when missing and left in place
    /// [default: a private directory under $XDG_RUNTIME_DIR or /dev/shm, removed at exit]
    #[arg(
        short = 'd',
        long = "scoreboard",
        visible_alias = "scoreboard-dir",
        value_name = "DIR"
    )]
    pub scoreboard_dir: Option<PathBuf>,

    /// How long a shutdown waits after SIGTERM before SIGKILL [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub graceful_timeout: Option<Duration>,

    /// Replace a worker whose status has not been updated for this long;
    /// 0 turns it off [default: off]
    #[arg(short = 't', long, value_name = "DURATION", value_parser = duration::parse)]
    pub timeout: Option<Duration>,

    /// How long a stuck worker gets between SIGTERM and SIGKILL [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub kill_timeout: Option<Duration>,

    /// How often the master reads the scoreboard [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub check_interval: Option<Duration>,

    /// Directory the workers start in [default: the master's]
    #[arg(long, value_name = "DIR")]
    pub working_directory: Option<PathBuf>,

    /// Extra environment variable for the workers (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// A worker dying sooner than this after its start counts toward the
    /// crash-loop backoff [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub min_uptime: Option<Duration>,

    /// First crash-loop delay, doubled at each further quick death [default: 100ms]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub backoff_initial: Option<Duration>,

    /// Longest crash-loop delay [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub backoff_max: Option<Duration>,

    /// The worker command and its arguments (overrides `command` in the file)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

const SIGNALS_HELP: &str = "\
Signals to the master:
  SIGTERM, SIGINT  graceful shutdown (again: immediate)
  SIGQUIT          immediate shutdown
  SIGHUP           re-read the config file; roll changed workers over without downtime
  SIGUSR1          print the scoreboard to standard output
  SIGTTIN/SIGTTOU  one worker more / one fewer

Durations: 500ms, 2s, 1m, or a bare number of seconds.";

fn parse_workers(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    crate::config::check_workers(n).map(|()| n)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = duration::parse(text)?;
    crate::config::check_interval(interval).map(|()| interval)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

impl RunArgs {
    /// Where the configuration comes from: the file, under these options.
    pub fn into_source(self) -> Source {
        let env = (!self.env.is_empty()).then(|| self.env.into_iter().collect());
        let overrides = Layer {
            command: (!self.command.is_empty()).then_some(self.command),
            workers: self.workers,
            scoreboard_dir: self.scoreboard_dir,
            graceful_timeout: self.graceful_timeout,
            timeout: self.timeout,
            kill_timeout: self.kill_timeout,
            check_interval: self.check_interval,
            working_directory: self.working_directory,
            env,
            min_uptime: self.min_uptime,
            backoff_initial: self.backoff_initial,
            backoff_max: self.backoff_max,
        };
        Source {
            file: self.config,
            overrides,
            default_workers: default_workers(),
        }
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn workers_bounds() {
        assert!(Cli::try_parse_from(["prefork", "-w", "0", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["prefork", "-w", "100000", "--", "true"]).is_err());
        let cli = Cli::try_parse_from(["prefork", "-w", "3", "--", "sleep", "1"]).unwrap();
        assert_eq!(cli.run.workers, Some(3));
        assert_eq!(cli.run.command, ["sleep", "1"]);
    }

    #[test]
    fn a_command_named_like_a_subcommand_runs_after_the_separator() {
        let cli = Cli::try_parse_from(["prefork", "--", "check"]).unwrap();
        assert!(cli.subcommand.is_none());
        assert_eq!(cli.run.command, ["check"]);
        let cli = Cli::try_parse_from(["prefork", "check", "-c", "x.toml"]).unwrap();
        assert!(matches!(cli.subcommand, Some(Sub::Check(_))));
    }
}
