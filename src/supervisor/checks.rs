//! The periodic check of the board: replace stuck workers, notice workers
//! without a live status file, remove the files of dead processes we do not
//! know. For our own workers it costs an `fstat` and a lock probe each, on
//! files kept open; `read_all` is never called.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::dump::shown_status;
use super::spawn::STATUS_FD;
use super::Master;
use crate::duration;
use crate::render;
use crate::supervisor::slots::Ended;

/// The monotonic and the wall clock read together. Status files carry wall
/// clock times, so a suspend or a clock step between two checks would make
/// every worker look silent: such a round judges nobody.
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    mono: Instant,
    wall: SystemTime,
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

/// A slot whose worker was found silent for longer than the timeout.
struct Silent {
    index: usize,
    silent: Duration,
    written: bool,
}

impl Master {
    pub(super) fn check_board(&mut self) {
        let started = Instant::now();
        let interval = self.config.check_interval;
        self.schedule_next_check(interval);
        let clocks = Clocks::now();
        let skew = clocks.skew_since(&self.clocks);
        self.clocks = clocks;
        let judge = skew <= interval;
        if !judge {
            log::warn!(
                "the wall clock moved {:.1}s apart from the monotonic clock (suspend, or the clock was set): \
                 no worker is judged stuck this round",
                skew.as_secs_f64()
            );
        }
        let silent = self.watch_workers(clocks.wall, judge);
        for worker in silent {
            self.replace_stuck(worker);
        }
        self.remove_unknown_dead_files();
        log::debug!(
            "board check of {} worker(s) took {}us",
            self.live_workers(),
            started.elapsed().as_micros()
        );
    }

    /// The next check is one interval after the previous one was due, not
    /// after it ran: the schedule does not drift. Rounds missed (a long
    /// stop of the master) are skipped, not caught up in a burst.
    fn schedule_next_check(&mut self, interval: Duration) {
        let now = Instant::now();
        self.next_check += interval;
        if self.next_check <= now {
            let behind = now.duration_since(self.next_check).as_nanos();
            let missed = (behind / interval.as_nanos()) as u32 + 1;
            self.next_check += interval * missed;
        }
    }

    /// One `fstat` (and a lock probe) per worker; returns the silent ones.
    fn watch_workers(&mut self, wall: SystemTime, judge: bool) -> Vec<Silent> {
        let mut silent = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(pid) = slot.pid else { continue };
            let mut state = slot.file.as_ref().and_then(|f| f.state().ok());
            if state.is_none_or(|s| !s.linked) {
                // The worker replaced its file: Parallel::Scoreboard's
                // constructor removes it and update() makes a new one. Until
                // a new one exists, the old descriptor stays: its inode still
                // says when the worker last wrote. (A reader removes the file
                // of a worker that closed its descriptor, taking the released
                // lock for a dead worker's: that worker must still be judged.)
                if let Ok(file) = self.board.watch(&pid.to_string()) {
                    slot.file = Some(file);
                    state = slot.file.as_ref().and_then(|f| f.state().ok());
                }
            }
            let held = slot
                .file
                .as_ref()
                .is_some_and(|f| f.is_held().unwrap_or(true));
            if !held && !slot.warned_unheld {
                log::warn!(
                    "worker pid={pid} slot={index} holds no live status file (it closed descriptor \
                     {STATUS_FD}, or its file was removed); it is left running"
                );
                slot.warned_unheld = true;
            }
            let (Some(state), Some(timeout), true) = (state, self.config.timeout, judge) else {
                continue;
            };
            let quiet = wall.duration_since(state.updated).unwrap_or_default();
            if quiet > timeout {
                silent.push(Silent {
                    index,
                    silent: quiet,
                    written: state.written,
                });
            }
        }
        silent
    }

    /// SIGTERM to the stuck worker's group (SIGKILL after the kill
    /// timeout), and its replacement in the same slot at once.
    fn replace_stuck(&mut self, worker: Silent) {
        let slot = &mut self.slots[worker.index];
        let Some(pid) = slot.pid else { return };
        let file = slot.file.take();
        let last = file
            .as_ref()
            .and_then(shown_status)
            .map(|s| render::escape(&s));
        let doing = match (&last, worker.written) {
            (_, false) => "it never wrote a status".to_string(),
            (Some(last), true) => format!("its last status: \"{last}\""),
            (None, true) => "its last status cannot be read".to_string(),
        };
        log::warn!(
            "worker pid={pid} slot={} is stuck: no status update for {:.1}s (timeout {}); {doing}; \
             SIGTERM, SIGKILL after {}",
            worker.index,
            worker.silent.as_secs_f64(),
            duration::display(self.config.timeout.unwrap_or_default()),
            duration::display(self.config.kill_timeout),
        );
        slot.ended(Ended::Stuck(last), Instant::now(), &self.config.backoff);
        self.retire(pid, file, self.config.kill_timeout);
    }

    /// Files of dead processes that are not our workers (stale files, other
    /// programs sharing the directory) are removed; our own workers' files
    /// are removed when they are reaped, so they are not even opened here.
    fn remove_unknown_dead_files(&self) {
        let ours: HashSet<i32> = self
            .slots
            .iter()
            .filter_map(|s| s.pid)
            .chain(
                self.draining
                    .iter()
                    .filter(|d| d.leader_alive)
                    .map(|d| d.pgid),
            )
            .map(|pid| pid.as_raw())
            .collect();
        let known = |id: &str| id.parse().is_ok_and(|pid: i32| ours.contains(&pid));
        if let Err(e) = self.board.cleanup_unknown(known) {
            log::warn!("cannot clean the scoreboard: {e}");
        }
    }
}
