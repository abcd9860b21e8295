//! An example worker that reports on the scoreboard: run it under prefork,
//!
//!     prefork --workers 4 -- target/release/examples/worker
//!
//! (what `config/prefork.toml` does), then `kill -USR1 <master pid>` or
//! `prefork status -d DIR` to see what every worker is doing. It "serves" a
//! simulated request every few hundred milliseconds, says so on the board,
//! and stops cleanly on SIGTERM. It is an example of the scoreboard's own
//! crate: a worker's `Cargo.toml` needs only `prefork-scoreboard = "0.1"`.
//! Run outside prefork, it says so in one line and exits 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prefork_scoreboard::{Error, Scoreboard};

fn main() -> ExitCode {
    let mut board = match Scoreboard::from_env() {
        Ok(board) => board,
        Err(Error::NotUnderPrefork) => {
            eprintln!(
                "worker: run me under prefork: prefork -- target/release/examples/worker \
                 (PREFORK_STATUS_FD is not set)"
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&mut board) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(board: &mut Scoreboard) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))?;

    let slot = std::env::var("PREFORK_WORKER_SLOT").unwrap_or_default();
    let mut random = std::process::id() as u64 | 1;
    let mut served = 0u64;
    while !stop.load(Ordering::Relaxed) {
        board.update(format!("idle slot={slot} served={served}").as_bytes())?;
        std::thread::sleep(Duration::from_millis(100 + next(&mut random) % 200));

        let item = next(&mut random) % 1000;
        board.update(format!("GET /items/{item} slot={slot} served={served}").as_bytes())?;
        std::thread::sleep(Duration::from_millis(50 + next(&mut random) % 250));
        served += 1;
    }
    board.update(format!("stopping after {served} requests").as_bytes())?;
    Ok(())
}

/// xorshift64: enough randomness for a demo, without a dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
