//! The `prefork` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use prefork::cli::{Cli, Sub};
use prefork::config::{self, ConfigError};
use prefork::supervisor::{self, StartFailure};

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on a usage error
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let outcome = match cli.subcommand {
        Some(Sub::Check(args)) => check(args.into_source()),
        None => supervisor::run(cli.run.into_source()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prefork: {e:#}");
            if let Some(failure) = e.downcast_ref::<StartFailure>() {
                ExitCode::from(failure.code)
            } else if e.is::<ConfigError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `prefork check`: the effective configuration, or what is wrong with it.
fn check(source: config::Source) -> anyhow::Result<()> {
    let config = source.load()?;
    print!("{}", config::render(&config));
    Ok(())
}
