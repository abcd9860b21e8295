//! The worker table: one slot per configured worker, and the process groups
//! being drained (retired workers, and what a dead worker left behind).

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use crate::config::Backoff;
use crate::supervisor::events::Ended;

/// Where a worker is between `fork` and its program running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exec {
    /// Forked; its exec has not reported yet.
    Pending,
    /// Its program runs.
    Done,
}

/// The process in a slot.
#[derive(Debug, Clone)]
pub struct Worker {
    pub pid: Pid,
    /// When it was forked.
    pub started: Instant,
    /// The configuration generation it was started with.
    pub generation: u64,
    pub exec: Exec,
    /// Checks in a row that found no lock held on its status file.
    pub unheld_checks: u32,
    /// Since when it is ready (see [`crate::config::Ready`]); `None` while
    /// it starts.
    pub ready: Option<Instant>,
    /// It is to be replaced, and why.
    pub recycle: Option<super::recycle::Recycle>,
    /// A recycle failed: not tried again before this.
    pub recycle_retry: Option<Instant>,
    /// Since when its status says it is idle (when it wrote the idle
    /// status the checks have seen since); `None`: busy, or not seen idle.
    pub idle_since: Option<Instant>,
}

impl Worker {
    /// A worker just forked.
    pub fn forked(pid: Pid, now: Instant, generation: u64) -> Worker {
        Worker {
            pid,
            started: now,
            generation,
            exec: Exec::Pending,
            unheld_checks: 0,
            ready: None,
            recycle: None,
            recycle_retry: None,
            idle_since: None,
        }
    }
}

/// One of the N places a worker runs in. A replacement takes the slot (and
/// `PREFORK_WORKER_SLOT`) of the worker it replaces.
#[derive(Debug, Clone)]
pub struct Slot {
    pub worker: Option<Worker>,
    /// A fork for this slot was asked of the shell and not answered yet.
    pub forking: bool,
    /// Workers started in this slot after its first.
    pub restarts: u64,
    pub starts: u64,
    pub last_end: Option<Ended>,
    /// Quick deaths in a row, which drive the backoff.
    pub failures: u32,
    /// Not to be started before this (crash-loop backoff).
    pub not_before: Instant,
    /// When its last worker died, until its replacement runs: the
    /// respawn's latency.
    pub died: Option<Instant>,
    /// Not in use: a self-sizing pool gave it up (see `spare.rs`). Never
    /// has a worker.
    pub parked: bool,
}

impl Slot {
    pub fn new(now: Instant) -> Self {
        Slot {
            worker: None,
            forking: false,
            restarts: 0,
            starts: 0,
            last_end: None,
            failures: 0,
            not_before: now,
            died: None,
            parked: false,
        }
    }

    /// Takes a parked slot into use again: its next worker starts at once,
    /// with no backoff left from before.
    pub fn unpark(&mut self, now: Instant) {
        self.parked = false;
        self.failures = 0;
        self.not_before = now;
    }

    pub fn pid(&self) -> Option<Pid> {
        self.worker.as_ref().map(|w| w.pid)
    }

    /// In use, empty, not being forked, and past its backoff.
    pub fn is_due(&self, now: Instant) -> bool {
        self.wants_worker() && self.not_before <= now
    }

    /// In use, empty, and not being forked.
    pub fn wants_worker(&self) -> bool {
        !self.parked && self.worker.is_none() && !self.forking
    }

    /// Records a new worker; returns its restart number (0 for the first).
    pub fn started(&mut self, worker: Worker) -> u64 {
        if self.starts > 0 {
            self.restarts += 1;
        }
        self.starts += 1;
        self.worker = Some(worker);
        self.restarts
    }

    /// Records the end of the current worker (or a failed start) and
    /// schedules the next start: at once after a worker that stayed up,
    /// later and later after quick deaths. Returns the delay.
    pub fn ended(&mut self, how: Ended, now: Instant, backoff: &Backoff) -> Duration {
        let uptime = self
            .worker
            .take()
            .map_or(Duration::ZERO, |w| now.duration_since(w.started));
        let quick =
            matches!(how, Ended::SpawnFailed | Ended::NotReady) || uptime < backoff.min_uptime;
        self.failures = if quick {
            self.failures.saturating_add(1)
        } else {
            0
        };
        self.last_end = Some(how);
        let delay = backoff.delay(self.failures);
        self.not_before = now + delay;
        delay
    }
}

/// A process group on its way out: a retired worker (its leader still
/// running) or what a dead worker left in its group. It gets SIGTERM, then
/// SIGKILL at `deadline`, and is forgotten once the group is empty.
#[derive(Debug, Clone)]
pub struct Draining {
    pub pgid: Pid,
    pub leader_alive: bool,
    pub deadline: Instant,
    pub killed: bool,
}

/// A process reparented to us that is none of our workers: a worker's
/// descendant that left its process group. Stopped with SIGTERM (its
/// `deadline` set then), SIGKILL at the deadline.
#[derive(Debug, Clone)]
pub struct Orphan {
    pub pid: Pid,
    pub deadline: Option<Instant>,
    pub killed: bool,
}
