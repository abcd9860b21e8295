//! The pool: every decision of the master, and none of its I/O.
//!
//! The core takes inputs (a signal's request, a child's fork, exec or
//! exit, what the board showed, the time) and answers with [`Effect`]s for
//! the shell to carry out: start a worker, signal a process group, log an
//! event. It never reads a clock, a descriptor or `/proc`: time is an
//! argument, so the backoff, rollout, crash-loop and stuck rules are tested
//! with a fake clock (see `tests.rs`), and the shell's tests check only the
//! wiring.

mod ready;
#[cfg(test)]
mod ready_tests;
mod recycle;
mod rollout;
mod slots;
mod spare;
#[cfg(test)]
mod spare_tests;
mod stop;
mod stuck;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use self::slots::Exec;
use self::slots::{Draining, Orphan, Slot, Worker};
pub use self::spare::{Activity, Bounds};
pub use self::stuck::{Clocks, FileSeen, Observation, Silent};
use super::events::{Counters, Ended, Event};
use super::spec::WorkerSpec;
use crate::config::{self, Config};
use crate::listen::Listener;
use rollout::Rollout;

/// How many workers one turn of the loop starts at most: signals and exits
/// are answered between batches.
pub const SPAWN_BATCH: usize = 32;

/// How many workers may be between `fork` and `exec` at once: each holds a
/// descriptor of the master's (its exec-status pipe) until it reports.
pub const MAX_STARTING: usize = 64;

/// What the shell is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Fork a worker for `slot` running `spec`, then report with
    /// [`Pool::forked`] (or [`Pool::fork_failed`]) and, once its exec has
    /// said how it went, [`Pool::exec_done`].
    Spawn { slot: usize, spec: Arc<WorkerSpec> },
    /// This signal to the process group, and SIGCONT, so that a stopped
    /// process can act on it.
    Terminate(Pid, Signal),
    /// The stop signal to the worker alone (the leader of its group), and
    /// SIGCONT to its group.
    Stop(Pid, Signal),
    /// SIGKILL to the process group.
    Kill(Pid),
    /// SIGTERM (and SIGCONT) to one process: an adopted one, which may lead
    /// no group.
    TerminateProcess(Pid),
    /// SIGKILL to one process.
    KillProcess(Pid),
    /// Log it.
    Log(Event),
}

/// What the pool is doing, as a whole.
#[derive(Debug)]
pub enum Phase {
    /// Some slot has not had a running worker yet.
    Starting,
    Running,
    /// Rolling the workers over to a new spec, a few slots at a time.
    Rolling(Rollout),
    Stopping(Stopping),
}

/// A shutdown in progress.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    pub deadline: Instant,
    /// SIGKILL was sent: an immediate stop, or the deadline passed.
    pub killed: bool,
}

/// The phase's name, for the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    Starting,
    Running,
    Reloading,
    Stopping,
}

impl PhaseName {
    /// As the board, the master file and the status pages say it.
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Starting => "starting",
            PhaseName::Running => "running",
            PhaseName::Reloading => "reloading",
            PhaseName::Stopping => "stopping",
        }
    }
}

/// A slot as the snapshot shows it.
#[derive(Debug, Clone)]
pub struct SlotView {
    /// Its number (`PREFORK_WORKER_SLOT`).
    pub slot: usize,
    pub pid: Option<Pid>,
    /// `Some` once its program runs (exec done): since when.
    pub running_since: Option<Instant>,
    pub restarts: u64,
    pub last_end: Option<Ended>,
    /// Its worker is ready.
    pub ready: bool,
}

/// The pool at one moment, for the dump, `prefork status` and metrics.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub phase: PhaseName,
    /// The slots in use (a self-sizing pool's parked ones are left out).
    pub slots: Vec<SlotView>,
    pub counters: Counters,
    pub began: Instant,
    /// Where the workers' sockets listen, in descriptor order.
    pub listen: Vec<String>,
    /// How many workers the pool keeps now.
    pub target: usize,
    pub activity: Activity,
    /// The bounds of a self-sizing pool, as they stand.
    pub bounds: Option<Bounds>,
    /// The idle rule's pattern; `None`: the default rule.
    pub idle_status: Option<String>,
    pub stuck_timeout: Option<Duration>,
}

impl Snapshot {
    pub fn live(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }
}

pub struct Pool {
    config: Config,
    spec: Arc<WorkerSpec>,
    /// Bumped when the spec changes: workers of an older generation are
    /// rolled over.
    generation: u64,
    slots: Vec<Slot>,
    draining: Vec<Draining>,
    /// Processes reparented to us (we are a subreaper) that are none of
    /// ours: a worker's descendants that escaped its process group.
    orphans: Vec<Orphan>,
    phase: Phase,
    counters: Counters,
    /// When the board is read next; advanced by whole intervals, so the
    /// schedule does not drift.
    next_check: Instant,
    /// The clocks at the last check, to notice a suspend or a clock step.
    last_check: Option<Clocks>,
    began: Instant,
    effects: Vec<Effect>,
    /// A self-sizing pool's growth ramp.
    ramp: spare::Ramp,
}

impl Pool {
    /// A pool of `config`'s workers, given `sockets`.
    pub fn new(config: Config, sockets: Vec<Arc<Listener>>, now: Instant) -> Pool {
        Pool {
            spec: Arc::new(WorkerSpec::with_sockets(&config, sockets)),
            generation: 0,
            slots: (0..config.workers).map(|_| Slot::new(now)).collect(),
            draining: Vec::new(),
            orphans: Vec::new(),
            phase: Phase::Starting,
            counters: Counters::default(),
            next_check: now + config.check_interval,
            last_check: None,
            began: now,
            effects: Vec::new(),
            ramp: spare::Ramp::default(),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn spec(&self) -> &Arc<WorkerSpec> {
        &self.spec
    }

    /// The effects decided since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Counts `event` and asks for it to be logged. Also for what the shell
    /// observes itself (a board problem), so that it is counted too.
    pub fn emit(&mut self, event: Event) {
        self.counters.record(&event);
        self.effects.push(Effect::Log(event));
    }

    fn stopping(&self) -> Option<Stopping> {
        match &self.phase {
            Phase::Stopping(s) => Some(*s),
            _ => None,
        }
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping().is_some()
    }

    /// Stopping, and nothing of ours runs any more.
    pub fn is_done(&self) -> bool {
        self.is_stopping()
            && self.live_workers() == 0
            && self.draining.is_empty()
            && self.orphans.is_empty()
    }

    pub fn live_workers(&self) -> usize {
        self.slots.iter().filter(|s| s.worker.is_some()).count()
    }

    /// Workers forked whose exec has not reported yet.
    fn starting(&self) -> usize {
        let in_slots = self
            .slots
            .iter()
            .filter(|s| s.forking || s.worker.as_ref().is_some_and(|w| w.exec == Exec::Pending))
            .count();
        in_slots + self.rollout().map_or(0, Rollout::starting)
    }

    /// The slot of worker `pid` (or of the worker a rollout's new worker
    /// `pid` is to replace), if it is one.
    pub fn slot_of_worker(&self, pid: Pid) -> Option<usize> {
        self.slot_of(pid).or_else(|| {
            let r = self.rollout()?;
            r.incoming_slots()
                .find(|(_, w)| w.pid == pid)
                .map(|(slot, _)| slot)
        })
    }

    /// The workers whose program runs: the ones to watch on the board.
    pub fn running(&self) -> impl Iterator<Item = (usize, Pid)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let w = s.worker.as_ref()?;
            (w.exec == Exec::Done).then_some((i, w.pid))
        })
    }

    /// Every process we started that may still run: the workers, and the
    /// leaders of the groups draining. (A board file of any other process
    /// is someone else's.)
    pub fn own_pids(&self) -> impl Iterator<Item = Pid> + '_ {
        let workers = self.slots.iter().filter_map(Slot::pid);
        let leaders = self
            .draining
            .iter()
            .filter(|d| d.leader_alive)
            .map(|d| d.pgid);
        let incoming = self
            .rollout()
            .into_iter()
            .flat_map(|r| r.incoming().map(|w| w.pid));
        let orphans = self.orphans.iter().map(|o| o.pid);
        workers.chain(leaders).chain(incoming).chain(orphans)
    }

    pub fn phase_name(&self) -> PhaseName {
        match self.phase {
            Phase::Starting => PhaseName::Starting,
            Phase::Running => PhaseName::Running,
            Phase::Rolling(_) => PhaseName::Reloading,
            Phase::Stopping(_) => PhaseName::Stopping,
        }
    }

    /// A one-line summary, for systemd's `STATUS=`.
    pub fn summary(&self) -> String {
        let restarts: u64 = self.slots.iter().map(|s| s.restarts).sum();
        let mut summary = format!(
            "{}/{} workers, {} stuck, {} restarts",
            self.live_workers(),
            self.target(),
            self.counters.stuck_kills,
            restarts
        );
        if let Some(b) = self.bounds() {
            let a = self.activity();
            summary.push_str(&format!(
                ", {} idle {} busy {} starting (workers {}..{}, spare {}..{})",
                a.idle, a.busy, a.starting, b.min_workers, b.max_workers, b.min_spare, b.max_spare
            ));
        }
        summary
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self.phase_name(),
            slots: self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.parked)
                .map(|(slot, s)| SlotView {
                    slot,
                    pid: s.pid(),
                    running_since: s
                        .worker
                        .as_ref()
                        .filter(|w| w.exec == Exec::Done)
                        .map(|w| w.started),
                    restarts: s.restarts,
                    last_end: s.last_end.clone(),
                    ready: s.worker.as_ref().is_some_and(|w| w.ready.is_some()),
                })
                .collect(),
            counters: self.counters,
            began: self.began,
            listen: self
                .spec
                .sockets
                .iter()
                .map(|l| l.bound.to_string())
                .collect(),
            target: self.target(),
            activity: self.activity(),
            bounds: self.bounds(),
            idle_status: self.config.idle.source().map(str::to_string),
            stuck_timeout: self.config.timeout,
        }
    }

    /// The nearest moment something is due: a spawn, a kill escalation, the
    /// end of the graceful timeout, the next board check.
    pub fn next_deadline(&self) -> Option<Instant> {
        let stopping = self.stopping();
        // While MAX_STARTING workers are starting, the next spawn waits for
        // one of them to report (an event), not for a time.
        let can_spawn = stopping.is_none() && self.starting() < MAX_STARTING;
        let spawns = self
            .slots
            .iter()
            .filter(|s| s.wants_worker() && can_spawn)
            .map(|s| s.not_before);
        let drains = self
            .draining
            .iter()
            .filter(|d| !d.killed)
            .map(|d| d.deadline);
        let stop = stopping.filter(|s| !s.killed).map(|s| s.deadline);
        let check = stopping.is_none().then_some(self.next_check);
        let orphans = self
            .orphans
            .iter()
            .filter(|o| !o.killed)
            .filter_map(|o| o.deadline);
        let ready = stopping.is_none().then(|| self.readiness_deadline());
        let recycle = stopping.is_none().then(|| self.recycle_deadline());
        spawns
            .chain(drains)
            .chain(stop)
            .chain(check)
            .chain(orphans)
            .chain(ready.flatten())
            .chain(recycle.flatten())
            .min()
    }

    /// Everything that is due at `now`: kill escalations, the next rollout
    /// step, the workers to start.
    pub fn tick(&mut self, now: Instant) {
        self.enforce_deadlines(now);
        if !self.is_stopping() {
            self.readiness_due(now);
            self.lifetimes_due(now);
        }
        self.advance_rollout();
        self.spawn_due(now);
    }

    fn enforce_deadlines(&mut self, now: Instant) {
        let overdue: Vec<Pid> = self
            .draining
            .iter_mut()
            .filter(|d| !d.killed && d.deadline <= now)
            .map(|d| {
                d.killed = true;
                d.pgid
            })
            .collect();
        for pgid in overdue {
            self.emit(Event::GroupKilled { pgid });
            self.effects.push(Effect::Kill(pgid));
        }
        let overdue: Vec<Pid> = self
            .orphans
            .iter_mut()
            .filter(|o| !o.killed && o.deadline.is_some_and(|d| d <= now))
            .map(|o| {
                o.killed = true;
                o.pid
            })
            .collect();
        for pid in overdue {
            self.emit(Event::OrphanKilled { pid });
            self.effects.push(Effect::KillProcess(pid));
        }
        if self
            .stopping()
            .is_some_and(|s| !s.killed && s.deadline <= now)
        {
            self.stop_now("graceful timeout expired", now);
        }
    }

    fn spawn_due(&mut self, now: Instant) {
        if self.is_stopping() {
            return;
        }
        // A slot whose old worker died while a rollout starts its new one
        // waits for that one.
        let targets = self.rollout_targets();
        let room = MAX_STARTING.saturating_sub(self.starting());
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_due(now) && !targets.contains(&i))
            .take(SPAWN_BATCH.min(room))
            .collect();
        for slot in due {
            self.slots[slot].forking = true;
            let spec = Arc::clone(&self.spec);
            self.effects.push(Effect::Spawn { slot, spec });
        }
    }

    /// The shell starts slot 0 by itself, before the loop (to fail fast on
    /// a command that cannot run): the spec to start it with.
    pub fn first_spawn(&mut self) -> Arc<WorkerSpec> {
        self.slots[0].forking = true;
        Arc::clone(&self.spec)
    }

    /// The shell forked the worker asked for `slot`.
    pub fn forked(&mut self, slot: usize, pid: Pid, now: Instant) {
        if self.rollout_forked(slot, pid, now) {
            return;
        }
        let generation = self.generation;
        match self.slots.get_mut(slot) {
            Some(s) if s.forking => {
                s.forking = false;
                s.worker = Some(Worker::forked(pid, now, generation));
            }
            // The slot went away (SIGTTOU), or what asked for it (an
            // aborted rollout) no longer wants it.
            _ => self.stop_worker(pid, None, now),
        }
    }

    /// The shell could not fork (or set up) the worker asked for `slot`.
    pub fn fork_failed(&mut self, slot: usize, error: String, now: Instant) {
        if self.rollout_fork_failed(slot, &error, now) {
            return;
        }
        let Some(s) = self.slots.get_mut(slot).filter(|s| s.forking) else {
            return;
        };
        s.forking = false;
        self.start_failed(slot, error, now);
    }

    /// A worker's exec reported: its program runs (`Ok`), or it could not
    /// be started and exits at once.
    pub fn exec_done(&mut self, pid: Pid, result: Result<(), String>, now: Instant) {
        if self.rollout_exec_done(pid, &result, now) {
            return;
        }
        let Some(slot) = self.slot_of(pid) else {
            return; // retired before its exec said anything
        };
        match result {
            Ok(()) => {
                let s = &mut self.slots[slot];
                let mut worker = s.worker.take().expect("slot_of found it");
                worker.exec = Exec::Done;
                let restart = s.started(worker);
                if let Some(died) = s.died.take() {
                    let latency = now.duration_since(died);
                    self.counters.respawn_latency.observe(latency);
                }
                self.emit(Event::Spawned { pid, slot, restart });
                self.became_ready_if_due(pid, now);
            }
            Err(error) => {
                // It exits by itself; its exit is a retired one's.
                self.draining.push(Draining {
                    pgid: pid,
                    leader_alive: true,
                    deadline: now + self.config.graceful_timeout,
                    killed: false,
                });
                self.start_failed(slot, error, now);
            }
        }
    }

    fn start_failed(&mut self, slot: usize, error: String, now: Instant) {
        let delay = self.slots[slot].ended(Ended::SpawnFailed, now, &self.config.backoff);
        let command = self.spec.command_line();
        self.emit(Event::SpawnFailed {
            slot,
            command,
            error,
            delay,
        });
    }

    /// Starting ends once every slot has a ready worker.
    fn check_started(&mut self) {
        if matches!(self.phase, Phase::Starting) && self.all_ready() {
            self.phase = Phase::Running;
        }
    }

    pub(super) fn slot_of(&self, pid: Pid) -> Option<usize> {
        self.slots.iter().position(|s| s.pid() == Some(pid))
    }

    /// A child was reaped. `group_alive`: whether its process group still
    /// has members (what the worker started and left behind).
    pub fn exited(&mut self, pid: Pid, how: Ended, group_alive: bool, now: Instant) {
        if self.rollout_exited(pid, &how, now) {
            if group_alive {
                self.drain_leftovers(pid, now);
            }
        } else if let Some(slot) = self.slot_of(pid) {
            let s = &mut self.slots[slot];
            let started = s.worker.as_ref().expect("slot_of found it").started;
            s.died = Some(now);
            let delay = s.ended(how.clone(), now, &self.config.backoff);
            let failures = s.failures;
            let uptime = now.duration_since(started);
            self.emit(Event::Exited {
                pid,
                slot,
                how,
                uptime,
            });
            if !delay.is_zero() && !self.is_stopping() {
                self.emit(Event::CrashLoop {
                    slot,
                    failures,
                    delay,
                });
            }
            if group_alive {
                self.drain_leftovers(pid, now);
            }
        } else if let Some(group) = self
            .draining
            .iter_mut()
            .find(|d| d.pgid == pid && d.leader_alive)
        {
            group.leader_alive = false;
            self.emit(Event::RetiredExited { pid, how });
        } else if let Some(i) = self.orphans.iter().position(|o| o.pid == pid) {
            self.orphans.swap_remove(i);
            self.emit(Event::OrphanExited { pid, how });
        } else {
            // A grandchild reparented to us that we had not seen yet.
            self.emit(Event::NotAWorker { pid, how });
        }
    }

    /// What a dead worker left in its process group gets the same graceful
    /// end as a retired worker, so that nothing outlives its worker.
    fn drain_leftovers(&mut self, pgid: Pid, now: Instant) {
        let killed = self.stopping().is_some_and(|s| s.killed);
        self.emit(Event::Leftovers { pgid });
        self.effects.push(if killed {
            Effect::Kill(pgid)
        } else {
            Effect::Terminate(pgid, Signal::SIGTERM)
        });
        self.draining.push(Draining {
            pgid,
            leader_alive: false,
            deadline: now + self.config.graceful_timeout,
            killed,
        });
    }

    /// Drops the groups whose leader is reaped and that have no member
    /// left; `alive` asks the kernel (the shell's `killpg(pgid, 0)`).
    pub fn forget_empty_groups(&mut self, mut alive: impl FnMut(Pid) -> bool) {
        self.draining.retain(|d| d.leader_alive || alive(d.pgid));
    }

    /// Asks a worker to finish and exit: the stop signal to it alone (a
    /// server's master stops its own workers, as it means to: Starman's
    /// would die mid-request of a QUIT meant for their master), SIGKILL to
    /// its whole group after the graceful timeout. What it leaves in its
    /// group when it exits gets SIGTERM then (see `drain_leftovers`).
    fn stop_worker(&mut self, pid: Pid, slot: Option<usize>, now: Instant) {
        let signal = self.config.stop_signal;
        if let Some(slot) = slot {
            self.emit(Event::Retiring { pid, slot, signal });
        }
        self.effects.push(Effect::Stop(pid, signal));
        self.draining.push(Draining {
            pgid: pid,
            leader_alive: true,
            deadline: now + self.config.graceful_timeout,
            killed: false,
        });
    }

    /// `signal` to a worker's whole group, SIGKILL after `timeout`: for a
    /// worker that is stuck or never got ready, not asked to finish.
    fn retire(
        &mut self,
        pid: Pid,
        slot: Option<usize>,
        signal: Signal,
        timeout: Duration,
        now: Instant,
    ) {
        if let Some(slot) = slot {
            self.emit(Event::Retiring { pid, slot, signal });
        }
        self.effects.push(Effect::Terminate(pid, signal));
        self.draining.push(Draining {
            pgid: pid,
            leader_alive: true,
            deadline: now + timeout,
            killed: false,
        });
    }

    /// SIGTTIN: one worker more (for a self-sizing pool, floor and
    /// ceiling one higher).
    pub fn add_worker(&mut self, now: Instant) {
        if self.is_stopping() {
            return;
        }
        if self.config.scaling.is_some() {
            return self.raise_bounds(now);
        }
        match config::check_workers(self.slots.len() + 1) {
            Ok(()) => self.resize(self.slots.len() + 1, "SIGTTIN", now),
            Err(why) => self.emit(Event::AddRefused { why }),
        }
    }

    /// SIGTTOU: one worker fewer, never none (for a self-sizing pool,
    /// floor and ceiling one lower).
    pub fn remove_worker(&mut self, now: Instant) {
        if self.is_stopping() {
            return;
        }
        if self.config.scaling.is_some() {
            return self.lower_bounds(now);
        }
        if self.slots.len() <= 1 {
            return self.emit(Event::RemoveRefused);
        }
        self.resize(self.slots.len() - 1, "SIGTTOU", now);
    }

    /// New slots are started by the next tick; removed ones (the last
    /// ones) have their workers retired with the graceful timeout. Slots
    /// a self-sizing pool had parked are taken into use again.
    fn resize(&mut self, workers: usize, why: &'static str, now: Instant) {
        if workers == self.slots.len() && self.target() == workers {
            return;
        }
        self.emit(Event::Resized {
            why,
            from: self.target(),
            to: workers,
        });
        for slot in self.slots.iter_mut().take(workers).filter(|s| s.parked) {
            slot.unpark(now);
        }
        while self.slots.len() < workers {
            self.slots.push(Slot::new(now));
        }
        while self.slots.len() > workers {
            let slot = self.slots.pop().expect("more slots than wanted");
            if let Some(pid) = slot.pid() {
                let index = self.slots.len();
                self.stop_worker(pid, Some(index), now);
            }
        }
    }

    /// When the board is due to be checked, the schedule moves on and the
    /// shell is to observe the running workers; then [`Pool::judge`].
    pub fn check_due(&mut self, now: Instant) -> bool {
        if self.is_stopping() || now < self.next_check {
            return false;
        }
        let interval = self.config.check_interval;
        // One interval after the previous check was due, not after it ran:
        // no drift. Rounds missed (a long stop of the master) are skipped,
        // not caught up in a burst.
        self.next_check += interval;
        if self.next_check <= now {
            let behind = now.duration_since(self.next_check).as_nanos();
            let missed = (behind / interval.as_nanos()) as u32 + 1;
            self.next_check += interval * missed;
        }
        true
    }
}
