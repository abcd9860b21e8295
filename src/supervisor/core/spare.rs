//! A pool that sizes itself from the board (`max_workers`, `min_spare`,
//! `max_spare`), as Apache's prefork MPM and Parallel::Prefork's
//! SpareWorkers do: at each board check it counts the idle workers (their
//! status says so, by [`crate::idle::IdleRule`]), and grows while fewer
//! than `min_spare` are idle, shrinks while more than `max_spare` are,
//! within `min_workers..=max_workers`.
//!
//! - Starting workers count as idle: a burst that makes every worker busy
//!   starts the workers it needs once, not again at every check while they
//!   boot. A slot waiting out a crash-loop backoff counts as starting too,
//!   so a crashing program does not make the pool grow.
//! - Growth ramps like Apache's: 1 worker, then 2, 4, ... up to 32 at a
//!   time, a round at most every second, while the shortage lasts. A round
//!   starts its step's workers whatever the shortage (as Apache does): a
//!   burst that leaves many requests queued is met in a few rounds, and
//!   what the last round overshot is retired later, one per check.
//! - Shrinking retires one worker per check, the one idle longest, with the
//!   stop signal and the graceful timeout; never a busy one, nor one that a
//!   rollout is replacing, nor within a round of a growth (the new workers
//!   get that long to take the load before the excess is judged).
//! - A slot given up is *parked*, not removed: the other workers keep their
//!   slot numbers (`PREFORK_WORKER_SLOT`), and growth takes the lowest
//!   parked slot first.
//! - SIGTTIN and SIGTTOU move the floor and the ceiling together by one
//!   (the floor stays at one worker at least).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::slots::{Exec, Slot, Worker};
use super::Pool;
use crate::config::{self, Scaling};
use crate::supervisor::events::Event;

/// Growth rounds are this far apart, at least.
pub const GROWTH_ROUND: Duration = Duration::from_secs(1);
/// Checks run on a fixed schedule but each a little late: a round is due
/// this much before a whole `GROWTH_ROUND` has passed, so that a check one
/// interval after the last round is not skipped for being a few ms early.
const ROUND_SLACK: Duration = Duration::from_millis(50);
/// The most workers one growth round starts.
pub const MAX_GROWTH_STEP: usize = 32;

/// The growth ramp.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ramp {
    /// How many workers the next round starts.
    step: usize,
    last_round: Option<Instant>,
    /// The last check that found too few idle workers: the ramp starts
    /// over from 1 once a whole round passed without a shortage (not at the
    /// first check without one: with short intervals, a few requests ending
    /// together would reset it in the middle of a burst).
    last_short: Option<Instant>,
}

impl Ramp {
    fn round_due(&self, now: Instant) -> bool {
        self.last_round.is_none_or(|at| a_round_since(at, now))
    }
}

/// A growth round has passed since `at` (give or take the checks' slack).
fn a_round_since(at: Instant, now: Instant) -> bool {
    now + ROUND_SLACK >= at + GROWTH_ROUND
}

impl Default for Ramp {
    fn default() -> Self {
        Ramp {
            step: 1,
            last_round: None,
            last_short: None,
        }
    }
}

/// The pool's workers by what they do, for the decision and for the
/// dump, `prefork status` and the metrics. Counted over the pool's slots
/// (not the workers a rollout starts nor those retiring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Ready, and their status says idle.
    pub idle: usize,
    /// Ready, and their status says anything else (or nothing).
    pub busy: usize,
    /// Not ready yet, being forked, or waiting to be (backoff).
    pub starting: usize,
}

/// The bounds a self-sizing pool keeps, as they stand (SIGTTIN and
/// SIGTTOU move them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    pub min_workers: usize,
    pub max_workers: usize,
    pub min_spare: usize,
    pub max_spare: usize,
}

impl Pool {
    /// The workers the pool keeps now: its slots that are not parked.
    pub fn target(&self) -> usize {
        self.slots.iter().filter(|s| !s.parked).count()
    }

    pub fn activity(&self) -> Activity {
        let mut activity = Activity::default();
        for s in self.slots.iter().filter(|s| !s.parked) {
            match s.worker.as_ref().filter(|w| w.ready.is_some()) {
                Some(w) if w.idle_since.is_some() => activity.idle += 1,
                Some(_) => activity.busy += 1,
                None => activity.starting += 1,
            }
        }
        activity
    }

    /// The bounds, when the pool sizes itself.
    pub fn bounds(&self) -> Option<Bounds> {
        self.config.scaling.map(|s| Bounds {
            min_workers: self.config.min_workers,
            max_workers: s.max_workers,
            min_spare: s.min_spare,
            max_spare: s.max_spare,
        })
    }

    /// After a board check (and [`Pool::judge`], which saw who is idle):
    /// one scaling decision.
    pub fn scale(&mut self, now: Instant) {
        let Some(scaling) = self.config.scaling else {
            return;
        };
        if self.is_stopping() || self.enforce_bounds(now) {
            return;
        }
        let target = self.target();
        let activity = self.activity();
        let spare = activity.idle + activity.starting;
        if spare < scaling.min_spare && target < scaling.max_workers {
            self.ramp.last_short = Some(now);
            if !self.ramp.round_due(now) {
                return;
            }
            let n = self.ramp.step.min(scaling.max_workers - target);
            self.ramp.step = (self.ramp.step * 2).min(MAX_GROWTH_STEP);
            self.ramp.last_round = Some(now);
            self.emit(Event::Growing {
                idle: activity.idle,
                busy: activity.busy,
                starting: activity.starting,
                min_spare: scaling.min_spare,
                from: target,
                to: target + n,
            });
            self.grow(n, now);
            return;
        }
        if self.ramp.last_short.is_none_or(|at| a_round_since(at, now)) {
            self.ramp.step = 1;
        }
        if spare > scaling.max_spare && target > self.config.min_workers && self.ramp.round_due(now)
        {
            if let Some(slot) = self.idle_longest() {
                let why = format!(
                    "{} idle, {} starting, {} busy: above max_spare {}",
                    activity.idle, activity.starting, activity.busy, scaling.max_spare
                );
                self.park(slot, why, now);
            }
        }
    }

    /// Brings the pool within `min_workers..=max_workers` (after SIGTTIN,
    /// SIGTTOU or a reload): all the missing workers at once, the extra
    /// ones one per call. Returns whether it changed anything.
    fn enforce_bounds(&mut self, now: Instant) -> bool {
        let Some(scaling) = self.config.scaling else {
            return false;
        };
        let target = self.target();
        let floor = self.config.min_workers;
        if target < floor {
            self.emit(Event::Resized {
                why: "min_workers",
                from: target,
                to: floor,
            });
            self.grow(floor - target, now);
            return true;
        }
        if target > scaling.max_workers {
            let slot = self.spare_slot().or_else(|| self.idle_longest());
            let slot = slot.or_else(|| self.newest_worker());
            if let Some(slot) = slot {
                let why = format!("{target} workers above max_workers {}", scaling.max_workers);
                self.park(slot, why, now);
                return true;
            }
        }
        false
    }

    /// Takes `n` more slots into use: parked ones first (lowest first),
    /// then new ones. The next tick starts their workers.
    fn grow(&mut self, mut n: usize, now: Instant) {
        for slot in self.slots.iter_mut().filter(|s| s.parked) {
            if n == 0 {
                return;
            }
            slot.unpark(now);
            n -= 1;
        }
        self.slots.extend((0..n).map(|_| Slot::new(now)));
    }

    /// The running workers a self-sizing pool may retire, with their
    /// slots: not being replaced by a rollout, their program running.
    fn retirable(&self) -> impl Iterator<Item = (usize, &Worker)> + '_ {
        let targets = self.rollout_targets();
        self.slots
            .iter()
            .enumerate()
            .filter(move |(i, s)| !s.parked && !targets.contains(i))
            .filter_map(|(i, s)| Some((i, s.worker.as_ref().filter(|w| w.exec == Exec::Done)?)))
    }

    /// The ready worker idle longest that may be retired (not marked for
    /// recycling either).
    fn idle_longest(&self) -> Option<usize> {
        self.retirable()
            .filter(|(_, w)| w.ready.is_some() && w.recycle.is_none())
            .filter_map(|(i, w)| Some((w.idle_since?, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// An empty slot (its worker not forked yet, or in backoff), that no
    /// rollout is starting a worker for (its old one died meanwhile).
    fn spare_slot(&self) -> Option<usize> {
        let targets = self.rollout_targets();
        self.slots
            .iter()
            .enumerate()
            .rposition(|(i, s)| s.wants_worker() && !targets.contains(&i))
    }

    /// The slot of the worker started last, busy or not: what a lowered
    /// ceiling retires when nobody is idle.
    fn newest_worker(&self) -> Option<usize> {
        self.retirable()
            .map(|(i, w)| (w.started, i))
            .max()
            .map(|(_, i)| i)
    }

    /// Gives up slot `slot`: its worker (if any) is asked to finish and
    /// exit gracefully, and the slot waits, parked, for growth to need it.
    fn park(&mut self, slot: usize, why: String, now: Instant) {
        let from = self.target();
        let s = &mut self.slots[slot];
        s.parked = true;
        s.died = None;
        let worker = s.worker.take();
        let idle_for = worker
            .as_ref()
            .and_then(|w| w.idle_since)
            .map(|since| now.saturating_duration_since(since));
        self.emit(Event::Shrinking {
            pid: worker.as_ref().map(|w| w.pid),
            slot,
            idle_for,
            why,
            from,
            to: from - 1,
        });
        if let Some(worker) = worker {
            self.stop_worker(worker.pid, None, now);
        }
        // Trailing parked slots go: a pool that grows again numbers from
        // the lowest free slot anyway.
        while self.slots.last().is_some_and(|s| s.parked) {
            self.slots.pop();
        }
    }

    /// SIGTTIN on a self-sizing pool: floor and ceiling one higher.
    pub(super) fn raise_bounds(&mut self, now: Instant) {
        let Some(scaling) = self.config.scaling.as_mut() else {
            return;
        };
        if let Err(why) = config::check_workers(scaling.max_workers + 1) {
            return self.emit(Event::AddRefused { why });
        }
        scaling.max_workers += 1;
        self.config.min_workers += 1;
        self.bounds_moved("SIGTTIN", now);
    }

    /// SIGTTOU on a self-sizing pool: ceiling and floor one lower, the
    /// floor never below one worker (then the ceiling alone moves).
    pub(super) fn lower_bounds(&mut self, now: Instant) {
        let Some(scaling) = self.config.scaling.as_mut() else {
            return;
        };
        if scaling.max_workers <= 1 {
            return self.emit(Event::RemoveRefused);
        }
        scaling.max_workers -= 1;
        self.config.min_workers = self.config.min_workers.saturating_sub(1).max(1);
        self.bounds_moved("SIGTTOU", now);
    }

    fn bounds_moved(&mut self, why: &'static str, now: Instant) {
        let Scaling { max_workers, .. } = self.config.scaling.expect("a self-sizing pool");
        self.emit(Event::BoundsMoved {
            why,
            min_workers: self.config.min_workers,
            max_workers,
        });
        self.enforce_bounds(now);
    }

    /// On a reload to a self-sizing pool: the pool keeps its size, within
    /// the new bounds, and its ramp starts over.
    pub(super) fn rescale(&mut self, now: Instant) {
        self.ramp = Ramp::default();
        self.enforce_bounds(now);
    }
}
