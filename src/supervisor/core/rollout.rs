//! Changing the pool while it runs: SIGHUP's new configuration, and the
//! rolling restart that a new worker spec needs.
//!
//! A changed spec is rolled out slot by slot: start the new worker, and
//! once its program runs, SIGTERM the old one; move to the next slot only
//! once the old one has exited, so that between N and N+1 workers are alive
//! at every moment. A new spec that cannot be started leaves the running
//! workers alone (but for those of an interrupted rollout, which go back to
//! the spec from before it: the pool never stays mixed).

use std::sync::Arc;
use std::time::Instant;

use nix::unistd::Pid;

use super::slots::{Draining, Exec, Worker};
use super::{Effect, Phase, Pool};
use crate::config::Config;
use crate::supervisor::events::Event;
use crate::supervisor::spec::WorkerSpec;

/// A rolling restart in progress.
#[derive(Debug)]
pub struct Rollout {
    step: Step,
    /// What to go back to if the new spec cannot be started, and the
    /// generation of the workers that run it.
    previous: Option<(Arc<WorkerSpec>, u64)>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    /// Ready to roll the next slot.
    Next,
    /// A new worker for `slot` is being started; `old` keeps running
    /// until it does. `new` is known once forked.
    Starting {
        slot: usize,
        old: Pid,
        new: Option<Pid>,
        generation: u64,
    },
    /// The old worker of the slot last rolled is draining: the next slot
    /// waits for it.
    Draining(Pid),
}

impl Rollout {
    /// The slot a new worker is being started for.
    pub fn target_slot(&self) -> Option<usize> {
        match self.step {
            Step::Starting { slot, .. } => Some(slot),
            _ => None,
        }
    }

    /// The worker being started, once forked.
    pub fn incoming(&self) -> Option<Pid> {
        match self.step {
            Step::Starting { new, .. } => new,
            _ => None,
        }
    }
}

impl Pool {
    pub(super) fn rollout(&self) -> Option<&Rollout> {
        match &self.phase {
            Phase::Rolling(r) => Some(r),
            _ => None,
        }
    }

    fn rollout_mut(&mut self) -> Option<&mut Rollout> {
        match &mut self.phase {
            Phase::Rolling(r) => Some(r),
            _ => None,
        }
    }

    /// A configuration that could not be loaded: nothing changes.
    pub fn reload_failed(&mut self, error: String) {
        self.emit(Event::ReloadFailed { error });
    }

    /// SIGHUP's new configuration. With `roll_anyway` (no config file to
    /// re-read) every worker is restarted, one at a time.
    pub fn reconfigure(&mut self, mut new: Config, roll_anyway: bool, now: Instant) {
        if self.is_stopping() {
            return;
        }
        if new.scoreboard_dir != self.config.scoreboard_dir {
            self.emit(Event::BoardDirKept);
            new.scoreboard_dir = self.config.scoreboard_dir.clone();
        }
        let spec = Arc::new(WorkerSpec::of(&new));
        let workers = new.workers;
        self.config = new;
        if roll_anyway || spec != self.spec {
            let old = std::mem::replace(&mut self.spec, spec);
            self.begin_rollout(old);
            self.emit(Event::RolloutBegun {
                workers: self.live_workers(),
                command: self.spec.command_line(),
            });
        } else {
            self.emit(Event::Reloaded);
        }
        self.resize(workers, "SIGHUP", now);
    }

    /// Every worker is restarted, one slot at a time, with the same spec:
    /// what it was started with no longer holds (its board was recreated).
    pub fn roll_over(&mut self, why: &'static str) {
        if self.is_stopping() {
            return;
        }
        self.begin_rollout(Arc::clone(&self.spec));
        self.emit(Event::RollingOver {
            workers: self.live_workers(),
            why,
        });
    }

    /// Workers of the current generation and older are to be rolled over
    /// to `self.spec`; `old` is what they run, to go back to.
    fn begin_rollout(&mut self, old: Arc<WorkerSpec>) {
        let generation = self.generation;
        self.generation += 1;
        match self.rollout_mut() {
            // An interrupted rollout goes back to what ran before it.
            Some(r) => {
                r.previous.get_or_insert((old, generation));
            }
            None => {
                self.phase = Phase::Rolling(Rollout {
                    step: Step::Next,
                    previous: Some((old, generation)),
                })
            }
        }
    }

    /// One step of a rolling restart, when the previous one is complete.
    pub(super) fn advance_rollout(&mut self) {
        let generation = self.generation;
        let Some(rollout) = self.rollout() else {
            return;
        };
        match rollout.step {
            Step::Starting { .. } => return,
            Step::Draining(old) => {
                if self
                    .draining
                    .iter()
                    .any(|d| d.pgid == old && d.leader_alive)
                {
                    return;
                }
            }
            Step::Next => {}
        }
        let next = self.slots.iter().position(|s| {
            s.worker
                .as_ref()
                .is_some_and(|w| w.exec == Exec::Done && w.generation < generation)
        });
        let Some(slot) = next else {
            // No worker of an older generation runs: done. (A slot that is
            // empty now starts with the new spec anyway.)
            let workers = self.live_workers();
            self.phase = Phase::Running;
            self.check_started_after_rollout();
            return self.emit(Event::RolloutComplete { workers });
        };
        let old = self.slots[slot].pid().expect("position() found a worker");
        let spec = Arc::clone(&self.spec);
        self.rollout_mut().expect("rolling").step = Step::Starting {
            slot,
            old,
            new: None,
            generation,
        };
        self.effects.push(Effect::Spawn { slot, spec });
    }

    fn check_started_after_rollout(&mut self) {
        let all_running = self
            .slots
            .iter()
            .all(|s| s.worker.as_ref().is_some_and(|w| w.exec == Exec::Done));
        if !all_running {
            self.phase = Phase::Starting;
            self.check_started();
        }
    }

    /// A fork the rollout asked for; false when it was not the rollout's.
    pub(super) fn rollout_forked(&mut self, slot: usize, pid: Pid) -> bool {
        match self.rollout_mut() {
            Some(Rollout {
                step: Step::Starting { slot: s, new, .. },
                ..
            }) if *s == slot && new.is_none() => {
                *new = Some(pid);
                true
            }
            _ => false,
        }
    }

    pub(super) fn rollout_fork_failed(&mut self, slot: usize, error: &str, now: Instant) -> bool {
        if self.rollout().and_then(Rollout::target_slot) != Some(slot)
            || self.rollout().and_then(Rollout::incoming).is_some()
        {
            return false;
        }
        self.abort_rollout(error, now);
        true
    }

    /// The new worker's exec reported; false when it was not the rollout's.
    pub(super) fn rollout_exec_done(
        &mut self,
        pid: Pid,
        result: &Result<(), String>,
        now: Instant,
    ) -> bool {
        let Some(Rollout {
            step:
                Step::Starting {
                    slot,
                    old,
                    new: Some(new),
                    generation,
                },
            ..
        }) = self.rollout()
        else {
            return false;
        };
        let (slot, old, generation) = (*slot, *old, *generation);
        if *new != pid {
            return false;
        }
        if let Err(error) = result {
            // It exits by itself.
            self.draining.push(Draining {
                pgid: pid,
                leader_alive: true,
                deadline: now + self.config.graceful_timeout,
                killed: false,
            });
            self.abort_rollout(error, now);
            return true;
        }
        let worker = Worker {
            pid,
            started: now,
            generation,
            exec: Exec::Done,
            unheld_checks: 0,
        };
        let Some(s) = self.slots.get_mut(slot) else {
            // The slot went away (SIGTTOU) meanwhile.
            self.rollout_mut().expect("rolling").step = Step::Next;
            self.retire(pid, None, self.config.graceful_timeout, now);
            return true;
        };
        let replaced = s.worker.take().map(|w| w.pid);
        let restart = s.started(worker);
        self.emit(Event::Spawned { pid, slot, restart });
        let step = match replaced {
            Some(old_pid) if old_pid == old => {
                self.emit(Event::RolloutStep { old, slot });
                self.retire(old, None, self.config.graceful_timeout, now);
                Step::Draining(old)
            }
            // The old one died (or was replaced as stuck) meanwhile.
            Some(other) => {
                self.retire(other, Some(slot), self.config.graceful_timeout, now);
                Step::Draining(other)
            }
            None => Step::Next,
        };
        self.rollout_mut().expect("rolling").step = step;
        true
    }

    /// The new spec cannot be started: keep (and respawn) the old one.
    /// Workers that an interrupted rollout already started run a spec in
    /// between: they are rolled back, one at a time, so that the pool does
    /// not stay mixed.
    fn abort_rollout(&mut self, error: &str, _now: Instant) {
        self.emit(Event::RolloutAborted {
            command: self.spec.command_line(),
            error: error.to_string(),
        });
        let previous = self.rollout_mut().and_then(|r| r.previous.take());
        // With nothing to go back to (this was a rollback), every worker
        // stays as it is: retrying would fail again, at every turn.
        let kept = previous.map(|(spec, generation)| {
            self.spec = spec;
            generation
        });
        self.generation += 1;
        let mut back = 0;
        for slot in &mut self.slots {
            let Some(worker) = slot.worker.as_mut() else {
                continue;
            };
            if kept.is_none_or(|g| worker.generation == g) {
                worker.generation = self.generation;
            } else {
                back += 1;
            }
        }
        match self.rollout_mut() {
            Some(r) if back > 0 => r.step = Step::Next,
            _ => {
                self.phase = Phase::Running;
                self.check_started_after_rollout();
            }
        }
        if back > 0 {
            self.emit(Event::RollingBack {
                workers: back,
                command: self.spec.command_line(),
            });
        }
    }
}
