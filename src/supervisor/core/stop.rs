//! Stopping: a graceful stop (SIGTERM to every group, SIGKILL at the
//! deadline), an immediate one, and the processes we adopted on the way
//! (a worker's descendants that escaped its group), which go with us.

use std::time::Instant;

use nix::unistd::Pid;

use super::slots::{Draining, Orphan, Slot};
use super::{Effect, Phase, Pool, Stopping};
use crate::supervisor::events::Event;

impl Pool {
    /// SIGTERM or SIGINT: SIGTERM to every group and adopted process,
    /// SIGKILL at the graceful deadline; a second one while stopping is
    /// an immediate stop.
    pub fn stop_gracefully(&mut self, now: Instant) {
        if let Some(s) = self.stopping() {
            if !s.killed {
                self.stop_now("second stop signal", now);
            }
            return;
        }
        let (timeout, signal) = (self.config.graceful_timeout, self.config.stop_signal);
        self.emit(Event::StopGraceful {
            workers: self.live_workers(),
            timeout,
            signal,
        });
        self.enter_stopping(Stopping {
            deadline: now + timeout,
            killed: false,
        });
        for pgid in self.all_groups() {
            self.effects.push(Effect::Terminate(pgid, signal));
        }
        for orphan in &mut self.orphans {
            if orphan.deadline.is_none() {
                orphan.deadline = Some(now + timeout);
                self.effects.push(Effect::TerminateProcess(orphan.pid));
            }
        }
    }

    pub fn stop_now(&mut self, why: &'static str, now: Instant) {
        self.emit(Event::StopNow {
            why,
            workers: self.live_workers(),
        });
        self.enter_stopping(Stopping {
            deadline: now,
            killed: true,
        });
        for pgid in self.all_groups() {
            self.effects.push(Effect::Kill(pgid));
        }
        for group in &mut self.draining {
            group.killed = true;
        }
        for orphan in self.orphans.iter_mut().filter(|o| !o.killed) {
            orphan.killed = true;
            self.effects.push(Effect::KillProcess(orphan.pid));
        }
    }

    fn enter_stopping(&mut self, stopping: Stopping) {
        let previous = std::mem::replace(&mut self.phase, Phase::Stopping(stopping));
        // The workers a rollout was starting are stopped with the others.
        if let Phase::Rolling(r) = &previous {
            for worker in r.incoming() {
                self.draining.push(Draining {
                    pgid: worker.pid,
                    leader_alive: true,
                    deadline: stopping.deadline,
                    killed: stopping.killed,
                });
            }
        }
        for slot in &mut self.slots {
            slot.forking = false;
        }
    }

    fn all_groups(&self) -> Vec<Pid> {
        let workers = self.slots.iter().filter_map(Slot::pid);
        let groups = self.draining.iter().map(|d| d.pgid);
        workers.chain(groups).collect()
    }

    /// Whether `pid` is a process we know: a worker, a retired one, an
    /// adopted one.
    pub fn knows(&self, pid: Pid) -> bool {
        self.own_pids().any(|p| p == pid)
    }

    /// A child of ours that none of our records knows: a worker's
    /// descendant that escaped its process group and was reparented to us.
    /// Said once; stopped at once with `kill_orphans` or while stopping,
    /// else when the master stops.
    pub fn adopted(&mut self, pid: Pid, command: String, now: Instant) {
        if self.knows(pid) {
            return;
        }
        let mut orphan = Orphan {
            pid,
            deadline: None,
            killed: false,
        };
        let stopping = self.stopping();
        let now_too = stopping.is_some() || self.config.kill_orphans;
        self.emit(Event::Adopted {
            pid,
            command,
            stopped_now: now_too,
        });
        match stopping {
            Some(s) if s.killed => {
                orphan.killed = true;
                self.effects.push(Effect::KillProcess(pid));
            }
            Some(s) => {
                orphan.deadline = Some(s.deadline.max(now));
                self.effects.push(Effect::TerminateProcess(pid));
            }
            None if self.config.kill_orphans => {
                orphan.deadline = Some(now + self.config.graceful_timeout);
                self.effects.push(Effect::TerminateProcess(pid));
            }
            None => {}
        }
        self.orphans.push(orphan);
    }
}
