//! Changing the pool while it runs: SIGHUP's new configuration, and the
//! rolling restart that a new worker spec needs.
//!
//! A changed spec is rolled out slot by slot: start the new worker, wait
//! until it is ready (see [`crate::config::Ready`]), then retire the old one
//! with the stop signal and the graceful timeout. At most `max_surge`
//! workers are in flight at once, new ones not yet ready and old ones not
//! yet exited: between N and N + `max_surge` workers are alive at every
//! moment, and the listening sockets, held by the master, never stop
//! queueing connections. A new worker that cannot be started, dies, or is
//! not ready within the start timeout aborts the rollout: the old workers
//! stay (and those an interrupted rollout already replaced go back to the
//! spec from before it: the pool never stays mixed).

use std::sync::Arc;
use std::time::Instant;

use nix::unistd::Pid;

use super::slots::{Draining, Exec, Worker};
use super::{Effect, Phase, Pool};
use crate::config::Config;
use crate::listen::Listener;
use crate::supervisor::events::{Ended, Event};
use crate::supervisor::spec::WorkerSpec;

/// A rolling restart in progress.
#[derive(Debug)]
pub struct Rollout {
    /// New workers not ready yet, each for a slot whose worker keeps
    /// running until it is.
    incoming: Vec<Incoming>,
    /// Old workers this rollout retired, until they exit.
    retiring: Vec<Pid>,
    /// What to go back to if the new spec cannot be started, and the
    /// generation of the workers that run it.
    previous: Option<(Arc<WorkerSpec>, u64)>,
}

#[derive(Debug)]
struct Incoming {
    slot: usize,
    /// The worker it replaces.
    old: Pid,
    /// Known once forked.
    worker: Option<Worker>,
}

impl Rollout {
    /// A rollout that only replaces the workers marked for recycling: the
    /// spec stays, and there is nothing to go back to.
    pub(super) fn recycling() -> Rollout {
        Rollout {
            incoming: Vec::new(),
            retiring: Vec::new(),
            previous: None,
        }
    }

    /// The new workers forked and not ready yet.
    pub fn incoming(&self) -> impl Iterator<Item = &Worker> + '_ {
        self.incoming.iter().filter_map(|i| i.worker.as_ref())
    }

    /// The same, each with the slot it is for.
    pub fn incoming_slots(&self) -> impl Iterator<Item = (usize, &Worker)> + '_ {
        self.incoming
            .iter()
            .filter_map(|i| Some((i.slot, i.worker.as_ref()?)))
    }

    /// New workers between the request to fork and their exec.
    pub fn starting(&self) -> usize {
        self.incoming
            .iter()
            .filter(|i| i.worker.as_ref().is_none_or(|w| w.exec == Exec::Pending))
            .count()
    }

    fn position(&self, pid: Pid) -> Option<usize> {
        self.incoming
            .iter()
            .position(|i| i.worker.as_ref().is_some_and(|w| w.pid == pid))
    }
}

impl Pool {
    pub(super) fn rollout(&self) -> Option<&Rollout> {
        match &self.phase {
            Phase::Rolling(r) => Some(r),
            _ => None,
        }
    }

    /// The slots a rollout is starting a new worker for: each waits for
    /// that worker, and is neither respawned nor given up meanwhile.
    pub(super) fn rollout_targets(&self) -> Vec<usize> {
        self.rollout()
            .map_or(Vec::new(), |r| r.incoming.iter().map(|i| i.slot).collect())
    }

    fn rollout_mut(&mut self) -> Option<&mut Rollout> {
        match &mut self.phase {
            Phase::Rolling(r) => Some(r),
            _ => None,
        }
    }

    /// A configuration that could not be loaded (or whose sockets could
    /// not be bound): nothing changes.
    pub fn reload_failed(&mut self, error: String) {
        self.emit(Event::ReloadFailed { error });
    }

    /// SIGHUP's new configuration, with its listening sockets. With
    /// `roll_anyway` (no config file to re-read) every worker is restarted.
    pub fn reconfigure(
        &mut self,
        mut new: Config,
        sockets: Vec<Arc<Listener>>,
        roll_anyway: bool,
        now: Instant,
    ) {
        if self.is_stopping() {
            return;
        }
        if new.scoreboard_dir != self.config.scoreboard_dir {
            self.emit(Event::BoardDirKept);
            new.scoreboard_dir = self.config.scoreboard_dir.clone();
        }
        let mut spec = WorkerSpec::with_sockets(&new, sockets);
        let workers = new.workers;
        self.config = new;
        if roll_anyway || spec != *self.spec {
            spec.generation = self.spec.generation + 1;
            let old = std::mem::replace(&mut self.spec, Arc::new(spec));
            self.begin_rollout(old);
            self.emit(Event::RolloutBegun {
                workers: self.live_workers(),
                command: self.spec.command_line(),
            });
        } else {
            self.emit(Event::Reloaded);
        }
        match self.config.scaling {
            Some(_) => self.rescale(now),
            None => self.resize(workers, "SIGHUP", now),
        }
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
                    incoming: Vec::new(),
                    retiring: Vec::new(),
                    previous: Some((old, generation)),
                })
            }
        }
    }

    /// Starts new workers while fewer than `max_surge` are in flight;
    /// completes the rollout once no old worker is left.
    pub(super) fn advance_rollout(&mut self) {
        let generation = self.generation;
        let surge = self.config.max_surge.max(1);
        let draining = &self.draining;
        let Some(rollout) = (match &mut self.phase {
            Phase::Rolling(r) => Some(r),
            _ => None,
        }) else {
            return;
        };
        rollout
            .retiring
            .retain(|pid| draining.iter().any(|d| d.pgid == *pid && d.leader_alive));
        let mut spawns = Vec::new();
        while rollout.incoming.len() + rollout.retiring.len() < surge {
            let next = self.slots.iter().enumerate().position(|(i, s)| {
                s.worker.as_ref().is_some_and(|w| {
                    w.exec == Exec::Done && (w.generation < generation || w.recycle.is_some())
                }) && !rollout.incoming.iter().any(|inc| inc.slot == i)
            });
            let Some(slot) = next else { break };
            let old = self.slots[slot].pid().expect("position() found a worker");
            rollout.incoming.push(Incoming {
                slot,
                old,
                worker: None,
            });
            spawns.push(slot);
        }
        let in_flight = !rollout.incoming.is_empty() || !rollout.retiring.is_empty();
        for slot in spawns {
            let spec = Arc::clone(&self.spec);
            self.effects.push(Effect::Spawn { slot, spec });
        }
        let old_left = self.slots.iter().any(|s| {
            s.worker
                .as_ref()
                .is_some_and(|w| w.generation < generation || w.recycle.is_some())
        });
        if !in_flight && !old_left {
            // (A slot that is empty now starts with the new spec anyway.)
            let workers = self.live_workers();
            self.phase = Phase::Running;
            self.check_started_after_rollout();
            self.emit(Event::RolloutComplete { workers });
        }
    }

    fn check_started_after_rollout(&mut self) {
        if !self.all_ready() {
            self.phase = Phase::Starting;
            self.check_started();
        }
    }

    /// A fork the rollout asked for; false when it was not the rollout's.
    pub(super) fn rollout_forked(&mut self, slot: usize, pid: Pid, now: Instant) -> bool {
        let generation = self.generation;
        let Some(incoming) = self.rollout_mut().and_then(|r| {
            r.incoming
                .iter_mut()
                .find(|i| i.slot == slot && i.worker.is_none())
        }) else {
            return false;
        };
        incoming.worker = Some(Worker::forked(pid, now, generation));
        true
    }

    pub(super) fn rollout_fork_failed(&mut self, slot: usize, error: &str, now: Instant) -> bool {
        let Some(r) = self.rollout_mut() else {
            return false;
        };
        let Some(i) = r
            .incoming
            .iter()
            .position(|i| i.slot == slot && i.worker.is_none())
        else {
            return false;
        };
        r.incoming.remove(i);
        self.abort_rollout(error, now);
        true
    }

    /// A new worker's exec reported; false when it was not the rollout's.
    pub(super) fn rollout_exec_done(
        &mut self,
        pid: Pid,
        result: &Result<(), String>,
        now: Instant,
    ) -> bool {
        let Some(i) = self.rollout().and_then(|r| r.position(pid)) else {
            return false;
        };
        if let Err(error) = result {
            self.rollout_mut().expect("rolling").incoming.remove(i);
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
        let incoming = &mut self.rollout_mut().expect("rolling").incoming[i];
        let slot = incoming.slot;
        incoming.worker.as_mut().expect("position() found it").exec = Exec::Done;
        let s = self.slots.get(slot);
        let restart = s.map_or(0, |s| if s.starts > 0 { s.restarts + 1 } else { 0 });
        self.emit(Event::Spawned { pid, slot, restart });
        self.became_ready_if_due(pid, now);
        true
    }

    /// A new worker of the rollout is ready: it takes its slot, and the
    /// worker it replaces is retired.
    pub(super) fn rollout_ready(&mut self, pid: Pid, now: Instant) -> bool {
        let Some(i) = self.rollout().and_then(|r| r.position(pid)) else {
            return false;
        };
        let incoming = self.rollout_mut().expect("rolling").incoming.remove(i);
        let mut worker = incoming.worker.expect("position() found it");
        let after = now.duration_since(worker.started);
        worker.ready = Some(now);
        let slot = incoming.slot;
        self.emit(Event::Ready { pid, slot, after });
        let signal = self.config.stop_signal;
        let Some(s) = self.slots.get_mut(slot).filter(|s| !s.parked) else {
            // The slot went away (SIGTTOU, or a self-sizing pool gave it
            // up) meanwhile.
            self.stop_worker(pid, None, now);
            return true;
        };
        let replaced = s.worker.take().map(|w| w.pid);
        s.started(worker);
        let retired = match replaced {
            Some(old) if old == incoming.old => {
                self.emit(Event::RolloutStep { old, slot, signal });
                self.stop_worker(old, None, now);
                Some(old)
            }
            // The old one died, and this slot's spawn gave way to the
            // rollout's; or it was replaced as stuck meanwhile.
            Some(other) => {
                self.stop_worker(other, Some(slot), now);
                Some(other)
            }
            None => None,
        };
        if let Some(old) = retired {
            self.rollout_mut().expect("rolling").retiring.push(old);
        }
        self.check_started();
        true
    }

    /// A new worker of the rollout exited before it was ready: the new
    /// spec does not work. False when `pid` was not the rollout's.
    pub(super) fn rollout_exited(&mut self, pid: Pid, how: &Ended, now: Instant) -> bool {
        let Some(i) = self.rollout().and_then(|r| r.position(pid)) else {
            return false;
        };
        let incoming = self.rollout_mut().expect("rolling").incoming.remove(i);
        let started = incoming.worker.expect("position() found it").started;
        self.emit(Event::Exited {
            pid,
            slot: incoming.slot,
            how: how.clone(),
            uptime: now.duration_since(started),
        });
        self.abort_rollout(
            &format!("worker pid={pid} ended ({how}) before it was ready"),
            now,
        );
        true
    }

    /// New workers of the rollout past the start timeout: killed, and the
    /// rollout aborted.
    pub(super) fn rollout_start_timeouts(&mut self, now: Instant) {
        let timeout = self.config.start_timeout;
        let late: Vec<(usize, Pid)> = self
            .rollout()
            .into_iter()
            .flat_map(|r| r.incoming.iter())
            .filter_map(|i| i.worker.as_ref().map(|w| (i.slot, w)))
            .filter(|(_, w)| w.ready.is_none() && w.started + timeout <= now)
            .map(|(slot, w)| (slot, w.pid))
            .collect();
        for (slot, pid) in late {
            let Some(i) = self.rollout().and_then(|r| r.position(pid)) else {
                continue;
            };
            self.rollout_mut().expect("rolling").incoming.remove(i);
            self.start_timed_out(pid, slot);
            let kill_timeout = self.config.kill_timeout;
            self.retire(
                pid,
                None,
                nix::sys::signal::Signal::SIGTERM,
                kill_timeout,
                now,
            );
            let why = format!(
                "worker pid={pid} was not ready within start_timeout {} (ready = {})",
                crate::duration::display(timeout),
                self.config.ready
            );
            self.abort_rollout(&why, now);
        }
    }

    /// The new spec cannot be started: keep (and respawn) the old one.
    /// Its other new workers are retired. Workers that an interrupted
    /// rollout already started run a spec in between: they are rolled
    /// back, one at a time, so that the pool does not stay mixed.
    fn abort_rollout(&mut self, error: &str, now: Instant) {
        self.emit(Event::RolloutAborted {
            command: self.spec.command_line(),
            error: error.to_string(),
        });
        let others: Vec<Pid> = self
            .rollout_mut()
            .map(|r| std::mem::take(&mut r.incoming))
            .into_iter()
            .flatten()
            .filter_map(|i| i.worker.map(|w| w.pid))
            .collect();
        for pid in others {
            self.stop_worker(pid, None, now);
        }
        self.recycles_given_up(now);
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
        if back == 0 {
            self.phase = Phase::Running;
            self.check_started_after_rollout();
        }
        if back > 0 {
            self.emit(Event::RollingBack {
                workers: back,
                command: self.spec.command_line(),
            });
        }
    }
}
