//! The pool's decisions with a fake clock and fake pids: no process, no
//! descriptor, no sleep. Each test drives the core as the shell would.

use std::ffi::OsString;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::*;
use crate::config::Config;
use crate::supervisor::events::LastStatus;

pub(super) fn config(workers: usize, command: &str) -> Config {
    Config {
        command: vec![OsString::from(command)],
        workers,
        timeout: Some(Duration::from_secs(5)),
        // Out of the way of the deadlines under test.
        check_interval: Duration::from_secs(3600),
        // Readiness has tests of its own.
        ready: crate::config::Ready::Immediate,
        ..Config::default()
    }
}

/// The shell's part, faked: hands out pids, remembers what was asked.
pub(super) struct Harness {
    pub(super) pool: Pool,
    pub(super) now: Instant,
    next_pid: i32,
    pub(super) log: Vec<Event>,
    pub(super) terminated: Vec<Pid>,
    pub(super) killed: Vec<Pid>,
}

impl Harness {
    pub(super) fn new(workers: usize) -> Harness {
        Harness::with(config(workers, "./worker"))
    }

    pub(super) fn with(config: Config) -> Harness {
        let now = Instant::now();
        Harness {
            pool: Pool::new(config, Vec::new(), now),
            now,
            next_pid: 100,
            log: Vec::new(),
            terminated: Vec::new(),
            killed: Vec::new(),
        }
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Ticks, and forks what is asked: returns the new pids (exec pending).
    pub(super) fn tick(&mut self) -> Vec<(usize, Pid, Arc<WorkerSpec>)> {
        self.pool.tick(self.now);
        self.run_effects()
    }

    pub(super) fn run_effects(&mut self) -> Vec<(usize, Pid, Arc<WorkerSpec>)> {
        let mut forked = Vec::new();
        loop {
            let effects = self.pool.take_effects();
            if effects.is_empty() {
                return forked;
            }
            for effect in effects {
                match effect {
                    Effect::Spawn { slot, spec } => {
                        let pid = Pid::from_raw(self.next_pid);
                        self.next_pid += 1;
                        self.pool.forked(slot, pid, self.now);
                        forked.push((slot, pid, spec));
                    }
                    Effect::Terminate(pid, _)
                    | Effect::Stop(pid, _)
                    | Effect::TerminateProcess(pid) => self.terminated.push(pid),
                    Effect::Kill(pid) | Effect::KillProcess(pid) => self.killed.push(pid),
                    Effect::Log(event) => self.log.push(event),
                }
            }
        }
    }

    pub(super) fn exec_ok(&mut self, pid: Pid) {
        self.pool.exec_done(pid, Ok(()), self.now);
        self.run_effects();
    }

    /// Starts every due worker, their execs succeeding.
    pub(super) fn start_all(&mut self) -> Vec<Pid> {
        let forked = self.tick();
        for (_, pid, _) in &forked {
            self.exec_ok(*pid);
        }
        forked.into_iter().map(|(_, pid, _)| pid).collect()
    }

    pub(super) fn exit(&mut self, pid: Pid, how: Ended) {
        self.pool.exited(pid, how, false, self.now);
        self.pool.forget_empty_groups(|_| false);
        self.run_effects();
    }

    pub(super) fn logged(&self, what: impl Fn(&Event) -> bool) -> usize {
        self.log.iter().filter(|e| what(e)).count()
    }
}

#[test]
fn starts_every_slot_and_is_running_once_all_have_exec_d() {
    let mut h = Harness::new(3);
    let forked = h.tick();
    assert_eq!(forked.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(h.pool.snapshot().phase, PhaseName::Starting);
    // Nothing is forked twice while execs are pending.
    assert!(h.tick().is_empty());
    for (_, pid, _) in &forked {
        h.exec_ok(*pid);
    }
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    assert_eq!(
        h.logged(|e| matches!(e, Event::Spawned { restart: 0, .. })),
        3
    );
}

#[test]
fn spawns_are_batched_and_bounded_while_execs_are_pending() {
    let mut h = Harness::new(200);
    assert_eq!(h.tick().len(), SPAWN_BATCH);
    assert_eq!(h.tick().len(), SPAWN_BATCH);
    // 64 are starting: the next spawn waits for an exec, not for a time.
    assert!(h.tick().is_empty());
    assert!(h.pool.next_deadline().is_some_and(|at| at > h.now));
    h.exec_ok(Pid::from_raw(100));
    assert_eq!(h.tick().len(), 1);
}

#[test]
fn a_dead_worker_is_replaced_at_once_then_with_a_growing_backoff() {
    let mut h = Harness::new(1);
    let first = h.start_all()[0];
    h.advance(Duration::from_secs(10));
    h.exit(first, Ended::Signaled(Signal::SIGKILL));
    // It had stayed up: replaced at once.
    let second = h.start_all()[0];
    // It dies young: the first quick death is free...
    h.advance(Duration::from_millis(10));
    h.exit(second, Ended::Exited(1));
    let third = h.start_all()[0];
    // ...the second in a row is a crash loop: 100 ms, then 200 ms.
    h.advance(Duration::from_millis(10));
    h.exit(third, Ended::Exited(1));
    assert!(h.tick().is_empty());
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.now + Duration::from_millis(100))
    );
    assert_eq!(
        h.logged(|e| matches!(e, Event::CrashLoop { failures: 2, .. })),
        1
    );
    h.advance(Duration::from_millis(100));
    let fourth = h.start_all()[0];
    h.advance(Duration::from_millis(10));
    h.exit(fourth, Ended::Exited(1));
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.now + Duration::from_millis(200))
    );
    let snapshot = h.pool.snapshot();
    assert_eq!(snapshot.slots[0].restarts, 3);
    assert_eq!(snapshot.counters.exited_error, 3);
    assert_eq!(snapshot.counters.signaled, 1);
}

#[test]
fn an_exec_failure_is_a_failed_start_with_backoff() {
    let mut h = Harness::new(1);
    let (_, pid, _) = h.tick()[0].clone();
    h.pool
        .exec_done(pid, Err("No such file or directory".into()), h.now);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::SpawnFailed { .. })), 1);
    // Its exit is expected, not a worker's.
    h.exit(pid, Ended::Exited(127));
    assert_eq!(h.logged(|e| matches!(e, Event::RetiredExited { .. })), 1);
    assert_eq!(h.pool.snapshot().counters.spawn_failures, 1);
}

pub(super) fn reconfigured(h: &mut Harness, command: &str) {
    let mut new = config(h.pool.slots.len(), command);
    new.timeout = h.pool.config.timeout;
    h.pool.reconfigure(new, Vec::new(), false, h.now);
    h.run_effects();
}

#[test]
fn a_new_command_rolls_over_one_slot_at_a_time() {
    let mut h = Harness::new(2);
    let old = h.start_all();
    reconfigured(&mut h, "./new-worker");
    assert_eq!(h.pool.snapshot().phase, PhaseName::Reloading);
    let forked = h.tick();
    assert_eq!(forked.len(), 1);
    let (slot, new0, spec) = forked[0].clone();
    assert_eq!(slot, 0);
    assert_eq!(spec.command, ["./new-worker"]);
    // The old worker is retired only once the new one's program runs.
    assert!(h.terminated.is_empty());
    h.exec_ok(new0);
    assert_eq!(h.terminated, [old[0]]);
    // The next slot waits for the old worker to be gone: N to N+1 alive.
    assert!(h.tick().is_empty());
    h.exit(old[0], Ended::Signaled(Signal::SIGTERM));
    let (slot, new1, _) = h.tick()[0].clone();
    assert_eq!(slot, 1);
    h.exec_ok(new1);
    h.exit(old[1], Ended::Signaled(Signal::SIGTERM));
    h.tick();
    assert_eq!(
        h.logged(|e| matches!(e, Event::RolloutComplete { workers: 2 })),
        1
    );
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    let pids: Vec<_> = h.pool.snapshot().slots.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [Some(new0), Some(new1)]);
}

#[test]
fn a_new_command_that_cannot_start_leaves_the_workers_alone() {
    let mut h = Harness::new(2);
    let old = h.start_all();
    reconfigured(&mut h, "./missing");
    let (_, new0, _) = h.tick()[0].clone();
    h.pool
        .exec_done(new0, Err("No such file or directory".into()), h.now);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::RolloutAborted { .. })), 1);
    assert!(h.terminated.is_empty());
    assert_eq!(h.pool.spec().command, ["./worker"]);
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    let pids: Vec<_> = h.pool.snapshot().slots.iter().map(|s| s.pid).collect();
    assert_eq!(pids, [Some(old[0]), Some(old[1])]);
    h.exit(new0, Ended::Exited(127));
    assert!(h.tick().is_empty());
}

#[test]
fn an_interrupted_rollout_is_rolled_back_when_its_successor_fails() {
    let mut h = Harness::new(2);
    let old = h.start_all();
    reconfigured(&mut h, "./v2");
    let (_, v2, _) = h.tick()[0].clone();
    h.exec_ok(v2);
    h.exit(old[0], Ended::Signaled(Signal::SIGTERM));
    // Before slot 1 rolls, a third command that cannot run.
    reconfigured(&mut h, "./v3-missing");
    let (slot, v3, _) = h.tick()[0].clone();
    h.pool
        .exec_done(v3, Err("No such file or directory".into()), h.now);
    h.run_effects();
    assert_eq!(
        h.logged(|e| matches!(e, Event::RollingBack { workers: 1, .. })),
        1
    );
    assert_eq!(h.pool.spec().command, ["./worker"]);
    h.exit(v3, Ended::Exited(127));
    // The v2 worker goes back to the first command.
    let (back_slot, back, spec) = h.tick()[0].clone();
    assert_eq!((slot, back_slot), (0, 0));
    assert_eq!(spec.command, ["./worker"]);
    h.exec_ok(back);
    assert_eq!(h.terminated.last(), Some(&v2));
}

#[test]
fn a_silent_worker_is_judged_stuck_unless_the_clocks_drifted() {
    let mut h = Harness::new(1);
    let pid = h.start_all()[0];
    let wall = SystemTime::now();
    let seen = |updated: SystemTime| {
        [Observation {
            slot: 0,
            pid,
            held: true,
            file: Some(FileSeen {
                updated,
                written: true,
            }),
            idle: false,
        }]
    };
    let clocks = |mono: Instant, wall: SystemTime| Clocks { mono, wall };
    assert!(h.pool.judge(clocks(h.now, wall), &seen(wall)).is_empty());
    // Six seconds later by both clocks, silent for 6 s by the file: stuck.
    h.advance(Duration::from_secs(6));
    let wall = wall + Duration::from_secs(6);
    let silent = h
        .pool
        .judge(clocks(h.now, wall), &seen(wall - Duration::from_secs(6)));
    assert_eq!(silent.len(), 1);
    // The wall clock jumped hours ahead of the monotonic one: nobody.
    h.advance(Duration::from_secs(1));
    let jumped = wall + Duration::from_secs(3 * 3600);
    assert!(h
        .pool
        .judge(clocks(h.now, jumped), &seen(wall - Duration::from_secs(6)))
        .is_empty());
    assert_eq!(h.logged(|e| matches!(e, Event::ClockSkew { .. })), 0);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::ClockSkew { .. })), 1);
    // Replaced in the same slot at once, the stuck one retired.
    h.pool
        .replace_stuck(silent[0], LastStatus::Was("GET /".into()), h.now);
    let replacement = h.tick();
    assert_eq!(replacement.len(), 1);
    assert_eq!(replacement[0].0, 0);
    assert_eq!(h.terminated, [pid]);
    assert_eq!(h.pool.snapshot().counters.stuck_kills, 1);
    // SIGKILL after the kill timeout.
    h.advance(Duration::from_secs(5));
    h.tick();
    assert_eq!(h.killed, [pid]);
}

#[test]
fn a_worker_without_a_live_file_is_said_once() {
    let mut h = Harness::new(1);
    let pid = h.start_all()[0];
    let unheld = [Observation {
        slot: 0,
        pid,
        held: false,
        file: None,
        idle: false,
    }];
    // Not at the first check: it may have died since the last reap.
    h.pool.judge(Clocks::now(), &unheld);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::Unheld { .. })), 0);
    for _ in 0..3 {
        h.pool.judge(Clocks::now(), &unheld);
    }
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::Unheld { .. })), 1);
}

#[test]
fn a_graceful_stop_escalates_at_its_deadline_and_ends_when_all_are_gone() {
    let mut h = Harness::new(2);
    let pids = h.start_all();
    h.pool.stop_gracefully(h.now);
    h.run_effects();
    assert_eq!(h.terminated, pids);
    h.exit(pids[0], Ended::Signaled(Signal::SIGTERM));
    // No respawn while stopping.
    assert!(h.tick().is_empty());
    h.advance(Duration::from_secs(30));
    h.tick();
    assert_eq!(h.killed, [pids[1]]);
    assert!(!h.pool.is_done());
    h.exit(pids[1], Ended::Signaled(Signal::SIGKILL));
    assert!(h.pool.is_done());
}

#[test]
fn ttou_retires_the_last_slot_and_ttin_adds_one() {
    let mut h = Harness::new(2);
    let pids = h.start_all();
    h.pool.remove_worker(h.now);
    h.run_effects();
    assert_eq!(h.terminated, [pids[1]]);
    h.pool.remove_worker(h.now);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::RemoveRefused)), 1);
    h.pool.add_worker(h.now);
    assert_eq!(h.tick().len(), 1);
}

#[test]
fn an_adopted_process_is_said_once_and_stopped_with_the_master() {
    let mut h = Harness::new(1);
    let worker = h.start_all()[0];
    let escaped = Pid::from_raw(999);
    for _ in 0..3 {
        h.pool.adopted(escaped, "sleep 1000".into(), h.now);
        h.pool.adopted(worker, "not an orphan".into(), h.now);
    }
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::Adopted { .. })), 1);
    assert!(h.terminated.is_empty());
    h.pool.stop_gracefully(h.now);
    h.run_effects();
    assert_eq!(h.terminated, [worker, escaped]);
    h.exit(worker, Ended::Signaled(Signal::SIGTERM));
    // The master waits for it, and kills it at the graceful deadline.
    assert!(!h.pool.is_done());
    h.advance(Duration::from_secs(30));
    h.tick();
    assert_eq!(h.killed, [escaped]);
    h.exit(escaped, Ended::Signaled(Signal::SIGKILL));
    assert!(h.pool.is_done());
}

#[test]
fn with_kill_orphans_an_adopted_process_is_stopped_at_once() {
    let mut h = Harness::new(1);
    let mut config = config(1, "./worker");
    config.kill_orphans = true;
    h.pool = Pool::new(config, Vec::new(), h.now);
    h.start_all();
    let escaped = Pid::from_raw(999);
    h.pool.adopted(escaped, "sleep 1000".into(), h.now);
    h.run_effects();
    assert_eq!(h.terminated, [escaped]);
    h.advance(Duration::from_secs(30));
    h.tick();
    assert_eq!(h.killed, [escaped]);
}

#[test]
fn a_worker_forked_after_a_shutdown_began_is_stopped_too() {
    let mut h = Harness::new(1);
    // The fork is asked for, and the shutdown begins before it is done.
    h.pool.tick(h.now);
    let spawns: Vec<usize> = h
        .pool
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Spawn { slot, .. } => Some(slot),
            _ => None,
        })
        .collect();
    assert_eq!(spawns, [0]);
    h.pool.stop_gracefully(h.now);
    h.run_effects();
    let pid = Pid::from_raw(4242);
    h.pool.forked(0, pid, h.now);
    h.run_effects();
    assert!(h.terminated.contains(&pid), "{:?}", h.log);
    assert!(!h.pool.is_done(), "it is waited for");
    h.exit(pid, Ended::Signaled(Signal::SIGTERM));
    assert!(h.pool.is_done());
}

/// The state the chaos run once took for rest: a recycled worker retired
/// (and slow to go) while its replacement died young and its slot waits
/// out a crash-loop backoff. As many processes run as the pool's size, but
/// one slot is empty: the rollout stays open until the retired worker is
/// gone, the slot is filled after its backoff, and nothing is lost.
#[test]
fn a_replacement_that_dies_young_waits_its_backoff_while_the_retired_worker_drains() {
    let mut h = Harness::with(Config {
        max_lifetime: Some(Duration::from_secs(10)),
        ..config(1, "./worker")
    });
    let first = h.start_all()[0];
    // A quick death (free: replaced at once), so that the next is a loop.
    h.advance(Duration::from_millis(10));
    h.exit(first, Ended::Exited(1));
    let old = h.start_all()[0];
    h.advance(Duration::from_secs(10));
    let (slot, new, _) = h.tick()[0].clone();
    assert_eq!(slot, 0);
    h.exec_ok(new);
    assert_eq!(h.terminated, [old], "retired once its replacement runs");
    h.advance(Duration::from_millis(10));
    h.exit(new, Ended::Signaled(Signal::SIGKILL));
    let snapshot = h.pool.snapshot();
    assert_eq!(snapshot.live(), 0);
    assert_eq!(snapshot.target, 1);
    assert_eq!(snapshot.phase, PhaseName::Reloading, "the old one drains");
    assert!(h.tick().is_empty(), "backing off");
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.now + Duration::from_millis(100))
    );
    h.advance(Duration::from_millis(100));
    let next = h.start_all()[0];
    assert_eq!(h.pool.snapshot().phase, PhaseName::Reloading);
    h.exit(old, Ended::Signaled(Signal::SIGTERM));
    h.tick();
    let snapshot = h.pool.snapshot();
    assert_eq!(snapshot.phase, PhaseName::Running);
    assert_eq!(snapshot.slots[0].pid, Some(next));
    assert_eq!(
        h.logged(|e| matches!(e, Event::RolloutComplete { workers: 1 })),
        1
    );
}
