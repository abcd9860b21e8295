//! What the pages show: plain data, filled by the master at each request
//! from the pool's snapshot and the board. Nothing here reads a clock, a
//! file or a descriptor, so a page is a function of its view.

use std::time::Duration;

// The core's own counts and bounds: plain data, shown as they are.
pub use crate::supervisor::core::{Activity, Bounds};

/// The pool as a page shows it.
#[derive(Debug, Clone, Default)]
pub struct PoolView {
    pub master_pid: u32,
    /// `starting`, `running`, `reloading` or `stopping`.
    pub phase: &'static str,
    pub uptime: Duration,
    /// The number of workers the pool keeps now.
    pub target: usize,
    /// The pool's workers by what they do.
    pub activity: Activity,
    /// A self-sizing pool's bounds, as they stand.
    pub bounds: Option<Bounds>,
    /// Fewer live workers than this fails `/healthz`.
    pub min_workers: usize,
    /// Where the workers' sockets listen.
    pub listen: Vec<String>,
    /// The board's directory.
    pub scoreboard: String,
    pub slots: Vec<SlotView>,
    pub counts: Counts,
    /// Seconds from a worker's death to its replacement's exec.
    pub respawn_latency: Histogram,
    /// Seconds one board check took.
    pub board_check: Histogram,
}

/// One slot of the pool.
#[derive(Debug, Clone, Default)]
pub struct SlotView {
    pub slot: usize,
    pub pid: Option<i32>,
    /// `empty`, `starting` or `running`.
    pub state: &'static str,
    pub restarts: u64,
    /// How the slot's previous worker ended.
    pub last_exit: Option<String>,
    pub uptime: Option<Duration>,
    /// Time since the worker last wrote its status; `None`: never written.
    pub since_update: Option<Duration>,
    /// The status bytes as written (at most 1 KiB of them); `None`: none yet.
    pub status: Option<Vec<u8>>,
}

/// The pool's counters since the master started. Every label is one of a
/// fixed set (the master's own words), never a pid or a status.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub spawned: u64,
    /// Worker exits by reason: `exit_ok`, `exit_error`, `signal`, `stuck`,
    /// `not_ready`, `spawn_failed`.
    pub exits: Vec<(&'static str, u64)>,
    pub stuck_kills: u64,
    pub spawn_failures: u64,
    /// Reloads by outcome: `ok`, `failed`, `aborted`.
    pub reloads: Vec<(&'static str, u64)>,
    /// Lines of the master's output dropped because nobody read them.
    pub output_dropped: u64,
    /// Workers a self-sizing pool added, and retired.
    pub grown: u64,
    pub shrunk: u64,
}

/// A histogram of durations in seconds, with fixed buckets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// The buckets' upper bounds in seconds, ascending (`+Inf` implied).
    pub bounds: Vec<f64>,
    /// Observations per bucket, not cumulative: `bounds.len() + 1` of them,
    /// the last for the values above every bound.
    pub counts: Vec<u64>,
    /// The sum of every observation, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram with these upper bounds (ascending, finite).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Counts one observation of `secs` seconds.
    pub fn observe(&mut self, secs: f64) {
        if self.counts.len() != self.bounds.len() + 1 {
            self.counts.resize(self.bounds.len() + 1, 0);
        }
        let bucket = self.bounds.partition_point(|&bound| bound < secs);
        self.counts[bucket] += 1;
        self.sum += secs;
    }

    /// How many observations it holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it() {
        let mut h = Histogram::new(&[0.001, 0.01, 0.1]);
        for secs in [0.0005, 0.001, 0.002, 0.5] {
            h.observe(secs);
        }
        // Upper bounds are inclusive, as Prometheus's `le` says.
        assert_eq!(h.counts, [2, 1, 0, 1]);
        assert_eq!(h.count(), 4);
        assert!((h.sum - 0.5035).abs() < 1e-12);
    }
}
