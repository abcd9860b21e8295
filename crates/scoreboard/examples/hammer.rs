//! A worker that updates its status as fast as it can (with a counter, so
//! every status differs): the load of the soak benchmark, `bench/soak.py`.
//! It stops on SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prefork_scoreboard::Scoreboard;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut board = Scoreboard::from_env()?;
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
