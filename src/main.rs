//! The `prefork` binary: parse, run, map the outcome to an exit code.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use prefork::cli::{BoardArgs, Cli, StatusArgs, Sub, TopArgs, TopSort};
use prefork::config::{self, ConfigError};
use prefork::supervisor::{self, sinks, StartFailure};
use prefork::{report, status, top};

/// `prefork status --min-workers N` found fewer.
const UNHEALTHY: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on a usage error
    sinks::init_logging();
    let outcome = match cli.subcommand {
        Some(Sub::Check(args)) => check(args.into_source()),
        Some(Sub::Status(args)) => return status(args).unwrap_or_else(|e| fail(&e)),
        Some(Sub::Report(args)) => report::run(args.status.as_bytes()),
        Some(Sub::Top(args)) => return top(args).unwrap_or_else(|e| fail(&e)),
        None => supervisor::run(cli.run.into_source()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    // What the log still holds goes first.
    sinks::flush_log_at_exit(std::time::Duration::from_millis(500));
    eprintln!("prefork: {e:#}");
    if let Some(failure) = e.downcast_ref::<StartFailure>() {
        ExitCode::from(failure.code)
    } else if e.is::<ConfigError>() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

/// `prefork check`: the effective configuration, or what is wrong with it.
fn check(source: config::Source) -> Result<()> {
    let config = source.load()?;
    let spec = supervisor::spec::WorkerSpec::of(&config);
    if let Err(why) = supervisor::spawn::preflight(&spec) {
        return Err(ConfigError(format!("cannot run `{}`: {why}", spec.command_line())).into());
    }
    print!("{}", config::render(&config));
    Ok(())
}

/// The board of `-d DIR` or of `-c FILE`.
fn board_dir(args: BoardArgs) -> Result<PathBuf> {
    Ok(match (args.scoreboard_dir, args.config) {
        (Some(dir), _) => dir,
        (None, Some(file)) => config::scoreboard_dir_of(&file)?,
        (None, None) => unreachable!("clap requires one of them"),
    })
}

fn status(args: StatusArgs) -> Result<ExitCode> {
    let dir = board_dir(args.board)?;
    let query = status::Query {
        json: args.json,
        min_workers: args.min_workers,
    };
    Ok(match status::run(&dir, query)? {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(UNHEALTHY),
    })
}

fn top(args: TopArgs) -> Result<ExitCode> {
    let idle_rule = match &args.idle_status {
        Some(pattern) => Some(
            prefork::idle::IdleRule::pattern(pattern)
                .map_err(|why| ConfigError(format!("--idle-status {pattern:?}: {why}")))?,
        ),
        None => None,
    };
    let options = top::Options {
        dir: board_dir(args.board)?,
        interval: args.interval,
        once: args.once,
        idle_rule,
        sort: match args.sort {
            TopSort::Age => top::model::SortKey::Age,
            TopSort::Cpu => top::model::SortKey::Cpu,
            TopSort::Rss => top::model::SortKey::Rss,
            TopSort::Slot => top::model::SortKey::Slot,
        },
    };
    top::run(options).map(ExitCode::from)
}
