//! Readiness: when a new worker counts as serving (its first status write,
//! at once, or after a delay: [`crate::config::Ready`]). A reload retires
//! an old worker only once its replacement is ready; the stuck timeout
//! counts from readiness; a worker not ready within the start timeout is a
//! failed start.

use std::time::Instant;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::slots::{Exec, Worker};
use super::Pool;
use crate::config::Ready;
use crate::supervisor::events::{Ended, Event};

impl Pool {
    /// Every worker whose program runs and that is not ready yet: the
    /// slots' and the rollout's.
    fn unready(&self) -> impl Iterator<Item = (usize, &Worker)> + '_ {
        let in_slots = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.worker.as_ref().map(|w| (i, w)));
        let incoming = self.rollout().into_iter().flat_map(|r| r.incoming_slots());
        in_slots.chain(incoming).filter(|(_, w)| w.ready.is_none())
    }

    /// The workers whose readiness is their first status write, not seen
    /// yet: the shell looks at their files, often, until it sees one.
    pub fn awaiting_report(&self) -> Vec<Pid> {
        if self.config.ready != Ready::Report {
            return Vec::new();
        }
        self.unready()
            .filter(|(_, w)| w.exec == Exec::Done)
            .map(|(_, w)| w.pid)
            .collect()
    }

    /// Whether any worker's first status write is awaited (no list made).
    pub fn awaits_report(&self) -> bool {
        self.config.ready == Ready::Report && self.unready().any(|(_, w)| w.exec == Exec::Done)
    }

    /// The shell saw `pid` write its status for the first time.
    pub fn reported(&mut self, pid: Pid, now: Instant) {
        if self.config.ready == Ready::Report {
            self.mark_ready(pid, now);
        }
    }

    /// Right after a worker's exec: ready now, if the rule says so.
    pub(super) fn became_ready_if_due(&mut self, pid: Pid, now: Instant) {
        let due = match self.config.ready {
            Ready::Immediate => true,
            Ready::After(delay) => self
                .unready()
                .any(|(_, w)| w.pid == pid && w.started + delay <= now),
            Ready::Report => false,
        };
        if due {
            self.mark_ready(pid, now);
        }
    }

    fn mark_ready(&mut self, pid: Pid, now: Instant) {
        if self.rollout_ready(pid, now) {
            return;
        }
        let Some(slot) = self.slot_of(pid) else {
            return;
        };
        let worker = self.slots[slot].worker.as_mut().expect("slot_of found it");
        if worker.ready.is_some() || worker.exec != Exec::Done {
            return;
        }
        worker.ready = Some(now);
        let after = now.duration_since(worker.started);
        self.emit(Event::Ready { pid, slot, after });
        self.check_started();
    }

    /// What is due at `now`: delayed readiness, and start timeouts.
    pub(super) fn readiness_due(&mut self, now: Instant) {
        if let Ready::After(delay) = self.config.ready {
            let due: Vec<Pid> = self
                .unready()
                .filter(|(_, w)| w.exec == Exec::Done && w.started + delay <= now)
                .map(|(_, w)| w.pid)
                .collect();
            for pid in due {
                self.mark_ready(pid, now);
            }
        }
        self.rollout_start_timeouts(now);
        let timeout = self.config.start_timeout;
        let late: Vec<(usize, Pid)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.worker.as_ref().map(|w| (i, w)))
            .filter(|(_, w)| w.ready.is_none() && w.started + timeout <= now)
            .map(|(i, w)| (i, w.pid))
            .collect();
        for (slot, pid) in late {
            self.start_timed_out(pid, slot);
            self.slots[slot].ended(Ended::NotReady, now, &self.config.backoff);
            let kill_timeout = self.config.kill_timeout;
            self.retire(pid, None, Signal::SIGTERM, kill_timeout, now);
        }
    }

    pub(super) fn start_timed_out(&mut self, pid: Pid, slot: usize) {
        self.emit(Event::StartTimeout {
            pid,
            slot,
            timeout: self.config.start_timeout,
            rule: self.config.ready.to_string(),
            kill_timeout: self.config.kill_timeout,
        });
    }

    /// When readiness next needs the time: a delay ending, a start timeout.
    pub(super) fn readiness_deadline(&self) -> Option<Instant> {
        let timeout = self.config.start_timeout;
        let delay = match self.config.ready {
            Ready::After(delay) => Some(delay),
            _ => None,
        };
        self.unready()
            .flat_map(|(_, w)| {
                let ready_at = delay
                    .filter(|_| w.exec == Exec::Done)
                    .map(|d| w.started + d);
                ready_at.into_iter().chain([w.started + timeout])
            })
            .min()
    }

    /// Every slot has a worker, and it is ready.
    pub fn all_ready(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| !s.parked)
            .all(|s| s.worker.as_ref().is_some_and(|w| w.ready.is_some()))
    }
}
