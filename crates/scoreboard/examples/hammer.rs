//! A worker that updates its status as fast as it can (with a counter, so
//! every status differs): the load of the soak benchmark, `bench/soak.py`.
//! It stops on SIGTERM. Run outside prefork, it says so in one line and
//! exits 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prefork_scoreboard::{Error, Scoreboard};

fn main() -> ExitCode {
    let mut board = match Scoreboard::from_env() {
        Ok(board) => board,
        Err(Error::NotUnderPrefork) => {
            eprintln!(
                "hammer: run me under prefork: prefork -- target/release/examples/hammer \
                 (PREFORK_STATUS_FD is not set)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("hammer: {e}");
            return ExitCode::FAILURE;
        }
    };
    match hammer(&mut board) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hammer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hammer(board: &mut Scoreboard) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;
    let mut status = *b"hammering 0000000000000000";
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let digits = format!("{n:016}");
        status[10..].copy_from_slice(digits.as_bytes());
        board.update(&status)?;
    }
    Ok(())
}
