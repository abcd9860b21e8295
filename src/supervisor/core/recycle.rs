//! Recycling: a worker past `max_lifetime` (plus its share of
//! `max_lifetime_jitter`) or whose memory is past `max_rss` is replaced
//! without a gap: the rollout's machinery starts its replacement, waits
//! until it is ready, then retires it gracefully. The pool never drops
//! below its size for a recycle.

use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::rollout::Rollout;
use super::{Phase, Pool};
use crate::supervisor::events::Event;

/// Why a worker is recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recycle {
    Lifetime,
    /// Its resident memory, in bytes, when measured.
    Rss(u64),
}

impl Pool {
    /// When worker `pid`, started at `started`, reaches its lifetime: the
    /// jitter spreads workers started together (the pid picks a point in
    /// it, the same at every look: no random source in the core).
    fn lifetime_end(&self, pid: Pid, started: Instant) -> Option<Instant> {
        let lifetime = self.config.max_lifetime?;
        let jitter_ms = self.config.max_lifetime_jitter.as_millis() as u64;
        let share = if jitter_ms == 0 {
            0
        } else {
            (pid.as_raw() as u64).wrapping_mul(2_654_435_761) % (jitter_ms + 1)
        };
        Some(started + lifetime + Duration::from_millis(share))
    }

    /// Workers whose lifetime ended are marked for recycling.
    pub(super) fn lifetimes_due(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let w = s.worker.as_ref()?;
                let end = self.lifetime_end(w.pid, w.started)?;
                let retry = w.recycle_retry.is_none_or(|at| at <= now);
                (w.ready.is_some() && w.recycle.is_none() && retry && end <= now).then_some(i)
            })
            .collect();
        for slot in due {
            self.mark_recycle(slot, Recycle::Lifetime, now);
        }
    }

    /// The shell measured worker `pid`'s resident memory (its process and
    /// descendants), in bytes.
    pub fn measured_rss(&mut self, pid: Pid, rss: u64, now: Instant) {
        let Some(max) = self.config.max_rss else {
            return;
        };
        let Some(slot) = self.slot_of(pid) else {
            return;
        };
        let w = self.slots[slot].worker.as_ref().expect("slot_of found it");
        let retry = w.recycle_retry.is_none_or(|at| at <= now);
        if rss > max && w.ready.is_some() && w.recycle.is_none() && retry {
            self.mark_recycle(slot, Recycle::Rss(rss), now);
        }
    }

    fn mark_recycle(&mut self, slot: usize, why: Recycle, now: Instant) {
        if !matches!(self.phase, Phase::Running | Phase::Rolling(_)) {
            return; // starting (not every slot ready) or stopping
        }
        let w = self.slots[slot]
            .worker
            .as_mut()
            .expect("a worker to recycle");
        w.recycle = Some(why);
        let (pid, uptime) = (w.pid, now.duration_since(w.started));
        self.emit(Event::Recycling {
            pid,
            slot,
            uptime,
            rss: match why {
                Recycle::Rss(rss) => Some(rss),
                Recycle::Lifetime => None,
            },
            max_rss: self.config.max_rss,
        });
        if matches!(self.phase, Phase::Running) {
            self.phase = Phase::Rolling(Rollout::recycling());
        }
    }

    /// A recycle that could not be carried out (its replacement failed):
    /// the worker stays, and is not tried again before the longest backoff.
    pub(super) fn recycles_given_up(&mut self, now: Instant) {
        let retry = now + self.config.backoff.max;
        for w in self.slots.iter_mut().filter_map(|s| s.worker.as_mut()) {
            if w.recycle.take().is_some() {
                w.recycle_retry = Some(retry);
            }
        }
    }

    /// When the next lifetime ends, for the loop's timeout.
    pub(super) fn recycle_deadline(&self) -> Option<Instant> {
        self.config.max_lifetime?;
        self.slots
            .iter()
            .filter_map(|s| s.worker.as_ref())
            .filter(|w| w.ready.is_some() && w.recycle.is_none())
            .filter_map(|w| {
                let end = self.lifetime_end(w.pid, w.started)?;
                Some(end.max(w.recycle_retry.unwrap_or(end)))
            })
            .min()
    }
}
