//! The command line: the subcommands, and the run options, parsed by clap
//! straight into a configuration [`Layer`] (where each option is declared,
//! once, for the command line and the config file alike) that goes over the
//! config file's. Nothing past this module sees clap's types.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Layer, Source, MAX_WORKERS};

/// A prefork process supervisor: keeps N workers running COMMAND, each with
/// its own entry on a scoreboard.
#[derive(Debug, Parser)]
#[command(name = "prefork", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, after_help = after_help())]
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
    #[command(after_help = durations_help())]
    Check(Box<RunArgs>),
    /// Print the live workers of a scoreboard (of a running prefork, or of
    /// any program using Parallel::Scoreboard)
    Status(StatusArgs),
    /// Write this worker's status (from a worker started by prefork)
    Report(ReportArgs),
    /// A live view of a scoreboard (of a running prefork, or of any program
    /// using Parallel::Scoreboard), refreshed in place; keys: q quit, a/c/m/s
    /// sort by age/CPU/RSS/slot, / filter, arrows move, Enter whole status
    #[command(after_help = durations_help())]
    Top(TopArgs),
}

/// Which board a reader reads: `-d DIR`, or `-c FILE`'s `scoreboard_dir`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("board").required(true).args(["scoreboard_dir", "config"]))]
pub struct BoardArgs {
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
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub board: BoardArgs,

    /// Print a JSON array instead of a table
    #[arg(long)]
    pub json: bool,

    /// Exit with status 3 when fewer live workers are on the board
    #[arg(long, value_name = "N")]
    pub min_workers: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub board: BoardArgs,

    /// How often the view is read again
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    pub interval: std::time::Duration,

    /// Print one frame as plain text and exit (also what happens when the
    /// output is not a terminal)
    #[arg(long)]
    pub once: bool,

    /// A regular expression that an idle worker's status matches (default:
    /// the master's `idle_status`, else `_`, `idle...` or JSON {"status":"_"})
    #[arg(long, value_name = "PATTERN")]
    pub idle_status: Option<String>,

    /// The order of the rows at start
    #[arg(long, value_enum, default_value = "slot")]
    pub sort: TopSort,
}

/// The orders of `prefork top`'s rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TopSort {
    /// The longest since its last update first
    Age,
    /// The most CPU first
    Cpu,
    /// The largest resident memory first
    Rss,
    /// By slot, then pid
    Slot,
}

fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match crate::duration::parse(text)? {
        d if d.is_zero() => Err("must be above 0".into()),
        d => Ok(d),
    }
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The status (any text), or `-` to read it from standard input
    #[arg(value_name = "STATUS", allow_hyphen_values = true)]
    pub status: OsString,
}

/// How to run: a config file, and options over it. Every option is also a
/// key of the config file, with the same name in snake_case; an option given
/// here overrides the file.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// TOML config file (re-read on SIGHUP)
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub options: Layer,
}

const SIGNALS_HELP: &str = "\
Signals to the master:
  SIGTERM, SIGINT  graceful shutdown (again: immediate)
  SIGQUIT          immediate shutdown
  SIGHUP           re-read the config file; roll changed workers over without downtime
  SIGUSR1          print the scoreboard to standard output
  SIGTTIN/SIGTTOU  one worker more / one fewer (a pool that sizes itself:
                   min_workers and max_workers one higher / lower)
";

fn after_help() -> String {
    format!("{SIGNALS_HELP}\n{}", durations_help())
}

/// What the `<DURATION>` of an option may be.
fn durations_help() -> String {
    format!("Durations: {}.", crate::duration::FORMS)
}

impl RunArgs {
    /// Where the configuration comes from: the file, under these options.
    pub fn into_source(self) -> Source {
        Source {
            file: self.config,
            overrides: self.options,
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
    fn help_says_what_a_duration_may_be() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        assert!(help.contains(crate::duration::FORMS), "{help}");
        let check = cli.find_subcommand_mut("check").unwrap();
        let help = check.render_long_help().to_string();
        assert!(help.contains(crate::duration::FORMS), "{help}");
    }

    #[test]
    fn workers_bounds() {
        assert!(Cli::try_parse_from(["prefork", "-w", "0", "--", "true"]).is_err());
        assert!(Cli::try_parse_from(["prefork", "-w", "100000", "--", "true"]).is_err());
        let cli = Cli::try_parse_from(["prefork", "-w", "3", "--", "sleep", "1"]).unwrap();
        assert_eq!(cli.run.options.workers, Some(3));
        assert_eq!(cli.run.options.command.unwrap(), ["sleep", "1"]);
    }

    #[test]
    fn a_command_named_like_a_subcommand_runs_after_the_separator() {
        let cli = Cli::try_parse_from(["prefork", "--", "check"]).unwrap();
        assert!(cli.subcommand.is_none());
        assert_eq!(cli.run.options.command.unwrap(), ["check"]);
        let cli = Cli::try_parse_from(["prefork", "check", "-c", "x.toml"]).unwrap();
        assert!(matches!(cli.subcommand, Some(Sub::Check(_))));
    }

    #[test]
    fn top_needs_a_board_and_takes_an_interval_and_a_sort() {
        assert!(Cli::try_parse_from(["prefork", "top"]).is_err());
        assert!(Cli::try_parse_from(["prefork", "top", "-d", "b", "--interval", "0"]).is_err());
        let cli =
            Cli::try_parse_from(["prefork", "top", "-d", "b", "--interval", "250ms"]).unwrap();
        let Some(Sub::Top(top)) = cli.subcommand else {
            panic!("not top")
        };
        assert_eq!(top.interval, std::time::Duration::from_millis(250));
        assert_eq!(top.sort, TopSort::Slot);
        let cli =
            Cli::try_parse_from(["prefork", "top", "-c", "x.toml", "--sort", "cpu", "--once"]);
        let Some(Sub::Top(top)) = cli.unwrap().subcommand else {
            panic!("not top")
        };
        assert_eq!((top.sort, top.once), (TopSort::Cpu, true));
    }
}
