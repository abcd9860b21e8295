//! The worker table: one slot per configured worker, and the process groups
//! being drained (retired workers, and what a dead worker left behind).

use std::fmt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::Backoff;
use crate::scoreboard::WatchedFile;

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(Signal),
    /// It could not be started at all.
    SpawnFailed,
    /// It stopped updating its status and was replaced; with the last
    /// status it wrote (escaped), if any.
    Stuck(Option<String>),
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exit {code}"),
            Ended::Signaled(sig) => write!(f, "{}", sig.as_str()),
            Ended::SpawnFailed => write!(f, "spawn-failed"),
            Ended::Stuck(None) => write!(f, "stuck"),
            Ended::Stuck(Some(last)) => write!(f, "stuck in \"{last}\""),
        }
    }
}

/// One of the N places a worker runs in. A replacement takes the slot (and
/// `PREFORK_WORKER_SLOT`) of the worker it replaces.
#[derive(Debug)]
pub struct Slot {
    pub pid: Option<Pid>,
    /// When the current worker was started.
    pub started: Instant,
    /// Workers started in this slot after its first.
    pub restarts: u64,
    pub starts: u64,
    pub last_end: Option<Ended>,
    /// Quick deaths in a row, which drive the backoff.
    pub failures: u32,
    /// Not to be started before this (crash-loop backoff).
    pub not_before: Instant,
    /// The current worker's status file, kept open for the checks.
    pub file: Option<WatchedFile>,
    /// We already said that the current worker holds no live status file.
    pub warned_unheld: bool,
    /// The configuration generation the current worker was started with.
    pub generation: u64,
}

impl Slot {
    pub fn new(now: Instant) -> Self {
        Slot {
            pid: None,
            started: now,
            restarts: 0,
            starts: 0,
            last_end: None,
            failures: 0,
            not_before: now,
            file: None,
            warned_unheld: false,
            generation: 0,
        }
    }

    pub fn started(&mut self, pid: Pid, now: Instant, file: Option<WatchedFile>) {
        self.file = file;
        self.warned_unheld = false;
        if self.starts > 0 {
            self.restarts += 1;
        }
        self.starts += 1;
        self.pid = Some(pid);
        self.started = now;
    }

    /// Records the end of the current worker (or a failed start) and
    /// schedules the next start: at once after a worker that stayed up,
    /// later and later after quick deaths. Returns the delay. The caller
    /// takes `file` first, to remove or hand it on.
    pub fn ended(&mut self, how: Ended, now: Instant, backoff: &Backoff) -> Duration {
        let quick =
            how == Ended::SpawnFailed || now.duration_since(self.started) < backoff.min_uptime;
        self.failures = if quick {
            self.failures.saturating_add(1)
        } else {
            0
        };
        self.pid = None;
        self.last_end = Some(how);
        let delay = backoff.delay(self.failures);
        self.not_before = now + delay;
        delay
    }
}

/// A process group on its way out: a retired worker (its leader still
/// running) or what a dead worker left in its group. It gets SIGTERM, then
/// SIGKILL at `deadline`, and is forgotten once the group is empty.
#[derive(Debug)]
pub struct Draining {
    pub pgid: Pid,
    pub leader_alive: bool,
    pub deadline: Instant,
    pub killed: bool,
    /// The leader's status file, removed when the leader is reaped.
    pub file: Option<WatchedFile>,
}
