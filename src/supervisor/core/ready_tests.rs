//! Readiness with a fake clock: the rollout's gate, the surge, the start
//! timeout, and the stuck timeout counted from readiness.

use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::tests::{config, Harness};
use super::*;
use crate::config::Ready;

fn harness(workers: usize, ready: Ready, surge: usize) -> Harness {
    Harness::with(Config {
        ready,
        max_surge: surge,
        start_timeout: Duration::from_secs(10),
        ..config(workers, "./worker")
    })
}

/// A SIGHUP with a changed command, the harness's readiness kept.
fn roll(h: &mut Harness, command: &str) {
    let new = Config {
        ready: h.pool.config.ready,
        max_surge: h.pool.config.max_surge,
        start_timeout: h.pool.config.start_timeout,
        ..config(h.pool.slots.len(), command)
    };
    h.pool.reconfigure(new, Vec::new(), false, h.now);
    h.run_effects();
}

/// Every due worker started, exec'd and reported.
fn start_ready(h: &mut Harness) -> Vec<Pid> {
    let pids = h.start_all();
    for &pid in &pids {
        h.pool.reported(pid, h.now);
    }
    h.run_effects();
    pids
}

#[test]
fn a_worker_that_reports_is_ready_at_its_first_write_and_not_before() {
    let mut h = harness(2, Ready::Report, 1);
    let pids = h.start_all();
    assert_eq!(h.pool.awaiting_report(), pids);
    assert_eq!(h.pool.snapshot().phase, PhaseName::Starting);
    h.advance(Duration::from_millis(300));
    h.pool.reported(pids[0], h.now);
    assert_eq!(h.pool.awaiting_report(), [pids[1]]);
    assert_eq!(h.pool.snapshot().phase, PhaseName::Starting);
    h.pool.reported(pids[1], h.now);
    h.run_effects();
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    assert!(h.pool.awaiting_report().is_empty());
    let after = Duration::from_millis(300);
    assert_eq!(
        h.logged(|e| matches!(e, Event::Ready { after: a, .. } if *a == after)),
        2
    );
}

#[test]
fn a_delay_makes_a_worker_ready_when_it_ends() {
    let mut h = harness(1, Ready::After(Duration::from_secs(2)), 1);
    let pid = h.start_all()[0];
    assert!(h.pool.awaiting_report().is_empty());
    assert_eq!(h.pool.next_deadline(), Some(h.now + Duration::from_secs(2)));
    h.advance(Duration::from_secs(2));
    h.tick();
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    assert_eq!(
        h.logged(|e| matches!(e, Event::Ready { pid: p, .. } if *p == pid)),
        1
    );
}

#[test]
fn a_reload_retires_an_old_worker_only_once_its_replacement_is_ready() {
    let mut h = harness(2, Ready::Report, 1);
    let old = start_ready(&mut h);
    roll(&mut h, "./v2");
    let (slot, new, spec) = h.tick()[0].clone();
    assert_eq!((slot, spec.command.clone()), (0, vec!["./v2".into()]));
    assert_eq!(spec.generation, 2);
    h.exec_ok(new);
    // Its program runs, but it has not said it is ready: the old one stays,
    // and nothing more is started (the surge is 1).
    h.advance(Duration::from_secs(5));
    assert!(h.tick().is_empty());
    assert!(h.terminated.is_empty());
    assert_eq!(h.pool.awaiting_report(), [new]);
    h.pool.reported(new, h.now);
    h.run_effects();
    assert_eq!(h.terminated, [old[0]]);
    // The next slot waits for the retired one to exit.
    assert!(h.tick().is_empty());
    h.exit(old[0], Ended::Signaled(Signal::SIGTERM));
    let (slot, second, _) = h.tick()[0].clone();
    assert_eq!(slot, 1);
    h.exec_ok(second);
    h.pool.reported(second, h.now);
    h.run_effects();
    h.exit(old[1], Ended::Exited(0));
    h.tick();
    assert_eq!(
        h.logged(|e| matches!(e, Event::RolloutComplete { workers: 2 })),
        1
    );
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
}

#[test]
fn the_surge_bounds_the_workers_in_flight() {
    let mut h = harness(5, Ready::Report, 2);
    let old = start_ready(&mut h);
    roll(&mut h, "./v2");
    let first = h.tick();
    assert_eq!(first.iter().map(|f| f.0).collect::<Vec<_>>(), [0, 1]);
    // 5 + 2 alive: no third while both are in flight.
    for (_, pid, _) in &first {
        h.exec_ok(*pid);
    }
    assert!(h.tick().is_empty());
    h.pool.reported(first[0].1, h.now);
    h.run_effects();
    assert_eq!(h.terminated, [old[0]]);
    // The retired one still runs: still 2 in flight.
    assert!(h.tick().is_empty());
    h.exit(old[0], Ended::Signaled(Signal::SIGTERM));
    let next = h.tick();
    assert_eq!(next.iter().map(|f| f.0).collect::<Vec<_>>(), [2]);
    assert_eq!(h.pool.live_workers() + h.pool.draining.len(), 5);
}

#[test]
fn a_new_worker_not_ready_in_time_aborts_the_reload_and_the_old_ones_stay() {
    let mut h = harness(2, Ready::Report, 1);
    let old = start_ready(&mut h);
    roll(&mut h, "./v2-hangs");
    let (_, new, _) = h.tick()[0].clone();
    h.exec_ok(new);
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.now + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(10));
    h.tick();
    assert_eq!(h.terminated, [new]);
    assert_eq!(h.logged(|e| matches!(e, Event::StartTimeout { .. })), 1);
    assert_eq!(h.logged(|e| matches!(e, Event::RolloutAborted { .. })), 1);
    assert_eq!(h.pool.spec().command, ["./worker"]);
    assert_eq!(h.pool.snapshot().phase, PhaseName::Running);
    let running: Vec<Pid> = h.pool.running().map(|(_, pid)| pid).collect();
    assert_eq!(running, old);
    // SIGKILL after the kill timeout; nothing else is started.
    h.advance(Duration::from_secs(5));
    assert!(h.tick().is_empty());
    assert_eq!(h.killed, [new]);
}

#[test]
fn a_new_worker_that_dies_before_it_is_ready_aborts_the_reload() {
    let mut h = harness(2, Ready::Report, 1);
    let old = start_ready(&mut h);
    roll(&mut h, "./v2-crashes");
    let (_, new, _) = h.tick()[0].clone();
    h.exec_ok(new);
    h.exit(new, Ended::Exited(3));
    assert_eq!(
        h.logged(|e| matches!(e, Event::RolloutAborted { error, .. } if error.contains("before it was ready"))),
        1
    );
    assert!(h.terminated.is_empty());
    assert!(h.tick().is_empty());
    let running: Vec<Pid> = h.pool.running().map(|(_, pid)| pid).collect();
    assert_eq!(running, old);
}

#[test]
fn a_worker_never_ready_is_a_failed_start_with_backoff() {
    let mut h = harness(1, Ready::Report, 1);
    let first = h.start_all()[0];
    h.advance(Duration::from_secs(10));
    // The first failure is replaced at once; the second waits.
    let second = h.tick()[0].1;
    assert_eq!(h.terminated, [first]);
    assert_eq!(h.pool.snapshot().counters.spawn_failures, 1);
    assert_eq!(h.pool.snapshot().slots[0].last_end, Some(Ended::NotReady));
    h.exec_ok(second);
    h.advance(Duration::from_secs(10));
    h.tick();
    assert_eq!(h.terminated, [first, second]);
    assert!(h.tick().is_empty());
    assert_eq!(
        h.pool.next_deadline(),
        Some(h.now + Duration::from_millis(100))
    );
}

#[test]
fn the_stuck_timeout_counts_from_readiness() {
    // The timeout is 5 s (see `config`); a boot of 20 s is not silence.
    let mut h = harness(1, Ready::Report, 1);
    let pid = h.start_all()[0];
    let wall = SystemTime::now();
    let seen = |updated: SystemTime| {
        [Observation {
            slot: 0,
            pid,
            held: true,
            file: Some(FileSeen {
                updated,
                written: false,
            }),
            idle: false,
        }]
    };
    h.advance(Duration::from_secs(8));
    let clocks = |h: &Harness, by: u64| Clocks {
        mono: h.now,
        wall: wall + Duration::from_secs(by),
    };
    // Not ready: not judged, however long its file has been silent.
    assert!(h.pool.judge(clocks(&h, 8), &seen(wall)).is_empty());
    h.pool.reported(pid, h.now);
    h.advance(Duration::from_secs(4));
    assert!(h.pool.judge(clocks(&h, 12), &seen(wall)).is_empty());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.pool.judge(clocks(&h, 14), &seen(wall)).len(), 1);
}

#[test]
fn respawn_latency_runs_from_a_death_to_the_replacement_s_exec() {
    let mut h = harness(1, Ready::Immediate, 1);
    let first = h.start_all()[0];
    h.advance(Duration::from_secs(5));
    h.exit(first, Ended::Exited(1));
    let (_, second, _) = h.tick()[0].clone();
    h.advance(Duration::from_millis(3));
    h.exec_ok(second);
    let latency = h.pool.snapshot().counters.respawn_latency;
    // 3 ms: the bucket up to 5 ms (the fourth), and nothing else.
    assert_eq!(latency.counts.iter().sum::<u64>(), 1);
    assert_eq!(latency.counts[3], 1);
    assert!((latency.sum_secs - 0.003).abs() < 1e-9);
}

#[test]
fn a_worker_past_its_lifetime_is_replaced_once_its_replacement_is_ready() {
    let mut h = Harness::with(Config {
        ready: Ready::Report,
        max_lifetime: Some(Duration::from_secs(60)),
        max_lifetime_jitter: Duration::from_secs(10),
        ..config(2, "./worker")
    });
    let old = start_ready(&mut h);
    // Each worker's end lies in [60 s, 70 s], its own point in the jitter.
    let next = h.pool.next_deadline().unwrap();
    assert!(next >= h.now + Duration::from_secs(60) && next <= h.now + Duration::from_secs(70));
    h.advance(Duration::from_secs(70));
    let forked = h.tick();
    // One at a time (max_surge 1), and the old one stays until then.
    assert_eq!(forked.len(), 1);
    assert_eq!(
        h.logged(|e| matches!(e, Event::Recycling { rss: None, .. })),
        2
    );
    assert!(h.terminated.is_empty());
    let (slot, new, spec) = forked[0].clone();
    assert_eq!(spec.generation, 1, "the same spec");
    h.exec_ok(new);
    assert!(
        h.terminated.is_empty(),
        "retired before its replacement is ready"
    );
    h.pool.reported(new, h.now);
    h.run_effects();
    assert_eq!(h.terminated, [old[slot]]);
    assert_eq!(h.pool.snapshot().counters.recycles, 2);
}

#[test]
fn a_worker_over_max_rss_is_recycled_and_a_failed_replacement_is_not_retried_at_once() {
    let mut h = Harness::with(Config {
        ready: Ready::Report,
        max_rss: Some(100 << 20),
        ..config(1, "./worker")
    });
    let old = start_ready(&mut h)[0];
    h.pool.measured_rss(old, 50 << 20, h.now);
    assert!(h.tick().is_empty(), "under the limit");
    h.pool.measured_rss(old, 150 << 20, h.now);
    h.run_effects();
    assert_eq!(
        h.logged(|e| matches!(e, Event::Recycling { rss: Some(_), .. })),
        1
    );
    let (_, new, _) = h.tick()[0].clone();
    h.exec_ok(new);
    h.exit(new, Ended::Exited(1));
    // The replacement died: the old worker stays, and is not marked again
    // before the longest backoff.
    assert!(h.terminated.is_empty());
    h.pool.measured_rss(old, 150 << 20, h.now);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::Recycling { .. })), 1);
    h.advance(Duration::from_secs(30));
    h.pool.measured_rss(old, 150 << 20, h.now);
    h.run_effects();
    assert_eq!(h.logged(|e| matches!(e, Event::Recycling { .. })), 2);
}
