//! Judging the board: a worker that has not written its status for longer
//! than the timeout is stuck, and is replaced.

use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Pool;
use crate::supervisor::events::{Ended, Event, LastStatus};

/// The monotonic and the wall clock read together. Status files carry wall
/// clock times, so a suspend or a clock step between two checks would make
/// every worker look silent: such a round judges nobody.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    pub mono: Instant,
    pub wall: SystemTime,
}

impl Clocks {
    pub fn now() -> Self {
        Clocks {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// How far the wall clock moved beyond (or short of) the monotonic one
    /// since `earlier`.
    fn skew_since(&self, earlier: &Clocks) -> Duration {
        let mono = self.mono.duration_since(earlier.mono);
        match self.wall.duration_since(earlier.wall) {
            Ok(wall) => wall.abs_diff(mono),
            Err(backwards) => backwards.duration() + mono,
        }
    }
}

/// What one check saw of one running worker's status file.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// The slot and pid as [`Pool::running`] gave them.
    pub slot: usize,
    pub pid: Pid,
    /// Some process holds the file's lock (false when there is no file).
    pub held: bool,
    /// The file's state, when it could be read.
    pub file: Option<FileSeen>,
    /// Its status says it is idle (by the idle rule).
    pub idle: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FileSeen {
    /// Its last write (or creation).
    pub updated: SystemTime,
    /// It has been written at least once.
    pub written: bool,
}

/// A worker found silent for longer than the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Silent {
    pub pid: Pid,
    pub silent: Duration,
    pub written: bool,
}

impl Pool {
    /// The silent workers among `seen`, taken at `clocks`. Nobody is judged
    /// when the clocks drifted apart since the last check, or without a
    /// timeout. Workers without a live status file are said once.
    pub fn judge(&mut self, clocks: Clocks, seen: &[Observation]) -> Vec<Silent> {
        let interval = self.config.check_interval;
        let skew = self
            .last_check
            .replace(clocks)
            .map_or(Duration::ZERO, |last| clocks.skew_since(&last));
        let judging = skew <= interval;
        if !judging {
            self.emit(Event::ClockSkew { skew });
        }
        let mut silent = Vec::new();
        for observation in seen {
            let slot = observation.slot;
            let Some(worker) = self
                .slots
                .get_mut(slot)
                .and_then(|s| s.worker.as_mut())
                .filter(|w| w.pid == observation.pid)
            else {
                continue;
            };
            // Said at the second check in a row that finds no lock: a
            // worker that died since the last reap released its lock too,
            // and its exit, not this, is the news.
            worker.unheld_checks = if observation.held {
                0
            } else {
                worker.unheld_checks.saturating_add(1)
            };
            worker.idle_since = match observation.file.filter(|_| observation.idle) {
                // Idle since it wrote the idle status first seen: a worker
                // that keeps writing `idle` stays the one idle longest.
                Some(file) => worker.idle_since.or_else(|| {
                    let age = clocks.wall.duration_since(file.updated).unwrap_or_default();
                    Some(clocks.mono.checked_sub(age).unwrap_or(clocks.mono))
                }),
                None => None,
            };
            let ready = worker.ready;
            if worker.unheld_checks == 2 {
                let pid = observation.pid;
                self.emit(Event::Unheld { pid, slot });
            }
            // A worker not ready yet is the start timeout's to judge.
            let (Some(file), Some(timeout), true, Some(ready)) =
                (observation.file, self.config.timeout, judging, ready)
            else {
                continue;
            };
            // The stuck timeout counts from readiness: a slow boot is not
            // silence.
            let since_ready = clocks.mono.saturating_duration_since(ready);
            let quiet = clocks
                .wall
                .duration_since(file.updated)
                .unwrap_or_default()
                .min(since_ready);
            if quiet > timeout {
                silent.push(Silent {
                    pid: observation.pid,
                    silent: quiet,
                    written: file.written,
                });
            }
        }
        silent
    }

    /// SIGTERM to the stuck worker's group (SIGKILL after the kill
    /// timeout), and its replacement in the same slot at once. `last`: its
    /// last status as shown (escaped, bounded), or why it cannot be read.
    pub fn replace_stuck(&mut self, stuck: Silent, last: LastStatus, now: Instant) {
        let Some(slot) = self.slot_of(stuck.pid) else {
            return;
        };
        let shown = if stuck.written {
            last
        } else {
            LastStatus::Never
        };
        let end = match &shown {
            LastStatus::Was(status) => Ended::Stuck(Some(status.clone())),
            _ => Ended::Stuck(None),
        };
        self.emit(Event::Stuck {
            pid: stuck.pid,
            slot,
            silent: stuck.silent,
            timeout: self.config.timeout.unwrap_or_default(),
            kill_timeout: self.config.kill_timeout,
            last: shown,
        });
        self.slots[slot].ended(end, now, &self.config.backoff);
        let kill_timeout = self.config.kill_timeout;
        self.retire(stuck.pid, None, Signal::SIGTERM, kill_timeout, now);
    }
}
