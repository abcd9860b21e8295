//! The `prefork` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use prefork::cli::Opts;
use prefork::supervisor::{self, StartFailure};

fn main() -> ExitCode {
    let opts = Opts::parse(); // exits 2 on a usage error
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match supervisor::run(opts.into_config()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("prefork: {e:#}");
            match e.downcast_ref::<StartFailure>() {
                Some(failure) => ExitCode::from(failure.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}
