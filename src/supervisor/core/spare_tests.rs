//! Spare scaling with a fake clock: what each board check decides, given
//! which workers it saw idle.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use nix::unistd::Pid;

use super::tests::{config, Harness};
use super::*;
use crate::config::Scaling;

/// A self-sizing pool of `workers` to start with, and these bounds.
fn harness(workers: usize, min: usize, max: usize, spare: (usize, usize)) -> Harness {
    let mut config = config(workers, "./worker");
    config.min_workers = min;
    config.scaling = Some(Scaling {
        max_workers: max,
        min_spare: spare.0,
        max_spare: spare.1,
    });
    config.timeout = None;
    Harness::with(config)
}

/// The board as the fake workers write it: when each idle worker wrote
/// its idle status; a worker absent from the map is busy.
struct Board {
    wall0: SystemTime,
    mono0: Instant,
    idle: HashMap<Pid, Instant>,
}

impl Board {
    fn new(h: &Harness) -> Board {
        Board {
            wall0: SystemTime::now(),
            mono0: h.now,
            idle: HashMap::new(),
        }
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.wall0 + at.duration_since(self.mono0)
    }

    /// One board check at `h.now`: observe, judge, scale; the effects run.
    fn check(&self, h: &mut Harness) {
        let running: Vec<(usize, Pid)> = h.pool.running().collect();
        let seen: Vec<Observation> = running
            .iter()
            .map(|&(slot, pid)| {
                let since = self.idle.get(&pid).copied();
                Observation {
                    slot,
                    pid,
                    held: true,
                    file: Some(FileSeen {
                        updated: self.wall(since.unwrap_or(h.now)),
                        written: true,
                    }),
                    idle: since.is_some(),
                }
            })
            .collect();
        let clocks = Clocks {
            mono: h.now,
            wall: self.wall(h.now),
        };
        assert!(h.pool.judge(clocks, &seen).is_empty());
        h.pool.scale(h.now);
        h.run_effects();
    }
}

/// Forks and execs every due worker (ready at once: `Ready::Immediate`).
fn start(h: &mut Harness) -> Vec<Pid> {
    h.start_all()
}

fn grown(h: &Harness) -> Vec<usize> {
    h.log
        .iter()
        .filter_map(|e| match e {
            Event::Growing { from, to, .. } => Some(to - from),
            _ => None,
        })
        .collect()
}

fn shrunk(h: &Harness) -> Vec<(Option<Pid>, usize)> {
    h.log
        .iter()
        .filter_map(|e| match e {
            Event::Shrinking { pid, slot, .. } => Some((*pid, *slot)),
            _ => None,
        })
        .collect()
}

#[test]
fn growth_ramps_one_two_four_up_to_the_ceiling_a_round_a_second() {
    let mut h = harness(2, 2, 64, (20, 30));
    let board = Board::new(&h);
    start(&mut h);
    for _ in 0..10 {
        board.check(&mut h);
        // Every worker is busy as soon as it runs.
        start(&mut h);
        // A check sooner than a second after a round starts nobody.
        h.advance(Duration::from_millis(500));
        board.check(&mut h);
        h.advance(Duration::from_millis(500));
    }
    // The step doubles while the shortage lasts, whatever its size (the
    // new workers turn busy at once here), up to the ceiling of 64.
    assert_eq!(grown(&h), [1, 2, 4, 8, 16, 31]);
    assert_eq!(h.pool.target(), 64);
    assert_eq!(h.pool.live_workers(), 64);
    let a = h.pool.activity();
    assert_eq!((a.idle, a.busy, a.starting), (0, 64, 0));
}

#[test]
fn starting_workers_count_as_idle_so_a_burst_starts_them_once() {
    let mut h = harness(4, 1, 32, (2, 4));
    let board = Board::new(&h);
    start(&mut h);
    board.check(&mut h); // 4 busy: one more
    assert_eq!(grown(&h), [1]);
    h.run_effects();
    // Its fork is asked (tick), but its exec has not reported.
    let forked = h.tick();
    assert_eq!(forked.len(), 1);
    h.advance(Duration::from_secs(1));
    board.check(&mut h);
    // 1 starting + 0 idle < 2: the ramp's second round.
    assert_eq!(grown(&h), [1, 2]);
    let a = h.pool.activity();
    assert_eq!(a.starting, 3);
    // While they boot, no further round, however many checks.
    h.tick();
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        board.check(&mut h);
    }
    assert_eq!(grown(&h), [1, 2]);
}

#[test]
fn a_crash_looping_slot_counts_as_starting_not_as_a_reason_to_grow() {
    let mut h = harness(2, 2, 16, (1, 3));
    let board = Board::new(&h);
    let pids = start(&mut h);
    // Slot 0's worker dies at once, twice: its slot waits out a backoff.
    h.exit(pids[0], crate::supervisor::events::Ended::Exited(1));
    let again = start(&mut h);
    h.exit(again[0], crate::supervisor::events::Ended::Exited(1));
    assert!(h.tick().is_empty(), "in backoff");
    h.advance(Duration::from_millis(10));
    board.check(&mut h);
    // 1 busy, 1 empty slot in backoff (starting): spare 1 = min_spare.
    assert!(grown(&h).is_empty());
}

#[test]
fn shrinks_one_per_check_the_idle_longest_and_never_a_busy_one() {
    let mut h = harness(6, 2, 16, (1, 2));
    let mut board = Board::new(&h);
    let pids = start(&mut h);
    let t0 = h.now;
    // Idle since 4 s, 1 s, 3 s and 2 s ago; the last two busy.
    h.advance(Duration::from_secs(10));
    for (pid, ago) in pids.iter().zip([4, 1, 3, 2]) {
        board.idle.insert(*pid, h.now - Duration::from_secs(ago));
    }
    board.check(&mut h);
    assert_eq!(shrunk(&h), [(Some(pids[0]), 0)]);
    assert!(h.terminated.contains(&pids[0]));
    h.advance(Duration::from_millis(100));
    board.check(&mut h);
    assert_eq!(shrunk(&h), [(Some(pids[0]), 0), (Some(pids[2]), 2)]);
    // Two idle left: max_spare is met.
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        board.check(&mut h);
    }
    assert_eq!(shrunk(&h).len(), 2);
    assert_eq!(h.pool.target(), 4);
    assert!(!h.terminated.contains(&pids[4]) && !h.terminated.contains(&pids[5]));
    // Everybody idle: down to the floor, one per check, busy ones never.
    for pid in &pids[4..] {
        board.idle.insert(*pid, t0);
    }
    for _ in 0..5 {
        h.advance(Duration::from_secs(1));
        board.check(&mut h);
    }
    assert_eq!(h.pool.target(), 2, "min_workers is the floor");
    // The parked slots keep no worker; the others keep their numbers.
    let slots: Vec<usize> = h.pool.snapshot().slots.iter().map(|s| s.slot).collect();
    assert_eq!(slots.len(), 2);
    let live: Vec<usize> = h.pool.running().map(|(slot, _)| slot).collect();
    assert_eq!(slots, live);
}

#[test]
fn growth_takes_the_lowest_parked_slot_first() {
    let mut h = harness(4, 1, 8, (1, 1));
    let mut board = Board::new(&h);
    let pids = start(&mut h);
    h.advance(Duration::from_secs(5));
    // Slots 1 and 2 idle (1 longest), 0 and 3 busy.
    board.idle.insert(pids[1], h.now - Duration::from_secs(3));
    board.idle.insert(pids[2], h.now - Duration::from_secs(1));
    board.check(&mut h);
    assert_eq!(shrunk(&h), [(Some(pids[1]), 1)]);
    h.exit(pids[1], crate::supervisor::events::Ended::Exited(0));
    // Now every worker is busy: the pool grows into slot 1 again.
    board.idle.clear();
    h.advance(Duration::from_secs(1));
    board.check(&mut h);
    let forked = h.tick();
    assert_eq!(forked.iter().map(|f| f.0).collect::<Vec<_>>(), [1]);
}

#[test]
fn sigttin_and_sigttou_move_floor_and_ceiling() {
    let mut h = harness(2, 2, 4, (0, 4));
    let board = Board::new(&h);
    let pids = start(&mut h);
    h.pool.add_worker(h.now);
    h.run_effects();
    let b = h.pool.bounds().unwrap();
    assert_eq!((b.min_workers, b.max_workers), (3, 5));
    // Below the new floor: the missing worker starts at once.
    let third = start(&mut h);
    assert_eq!(third.len(), 1);
    h.pool.remove_worker(h.now);
    h.pool.remove_worker(h.now);
    h.run_effects();
    let b = h.pool.bounds().unwrap();
    assert_eq!((b.min_workers, b.max_workers), (1, 3));
    assert_eq!(h.pool.target(), 3, "within the bounds: nobody retired");
    h.pool.remove_worker(h.now);
    h.run_effects();
    // The floor stays at one; above the ceiling of 2 now, one worker goes:
    // nobody is idle, so the newest.
    let b = h.pool.bounds().unwrap();
    assert_eq!((b.min_workers, b.max_workers), (1, 2));
    assert_eq!(h.pool.target(), 2);
    assert_eq!(shrunk(&h), [(Some(third[0]), 2)]);
    h.pool.remove_worker(h.now);
    h.run_effects();
    assert_eq!(shrunk(&h)[1], (Some(pids[1]), 1));
    assert_eq!(h.pool.target(), 1);
    h.pool.remove_worker(h.now);
    h.run_effects();
    assert!(h.log.iter().any(|e| matches!(e, Event::RemoveRefused)));
    board.check(&mut h);
    assert_eq!(h.pool.live_workers(), 1);
    assert_eq!(h.pool.slot_of(pids[0]), Some(0));
}

#[test]
fn a_reload_keeps_the_size_within_the_new_bounds() {
    let mut h = harness(4, 1, 8, (0, 8));
    let board = Board::new(&h);
    start(&mut h);
    let mut new = h.pool.config().clone();
    new.workers = 1; // the starting size does not shrink a running pool
    new.min_workers = 6;
    h.pool.reconfigure(new, Vec::new(), false, h.now);
    h.run_effects();
    assert_eq!(h.pool.target(), 6);
    assert_eq!(h.tick().len(), 2);
    let mut new = h.pool.config().clone();
    new.min_workers = 1;
    new.scaling = Some(Scaling {
        max_workers: 3,
        min_spare: 0,
        max_spare: 8,
    });
    h.pool.reconfigure(new, Vec::new(), false, h.now);
    h.run_effects();
    // One extra worker per check until the ceiling holds.
    for _ in 0..5 {
        h.advance(Duration::from_secs(1));
        board.check(&mut h);
    }
    assert_eq!(h.pool.target(), 3);
}

#[test]
fn a_fixed_pool_never_scales() {
    let mut h = Harness::new(3);
    let mut board = Board::new(&h);
    let pids = start(&mut h);
    for pid in &pids {
        board.idle.insert(*pid, h.now);
    }
    for _ in 0..3 {
        h.advance(Duration::from_secs(1));
        board.check(&mut h);
    }
    assert_eq!(h.pool.target(), 3);
    assert!(grown(&h).is_empty() && shrunk(&h).is_empty());
    // The counts still say who is idle.
    assert_eq!(h.pool.activity().idle, 3);
}

#[test]
fn a_round_is_not_skipped_for_a_check_a_little_early_and_the_ramp_survives_a_lull() {
    let mut h = harness(2, 2, 64, (2, 64));
    let board = Board::new(&h);
    start(&mut h);
    board.check(&mut h);
    start(&mut h);
    // The next check 990 ms later (the last one ran 10 ms late): a round.
    h.advance(Duration::from_millis(990));
    board.check(&mut h);
    start(&mut h);
    assert_eq!(grown(&h), [1, 2]);
    // A check with no shortage (two requests ended together), then the
    // shortage again: the ramp goes on from 4, it does not start over.
    let mut lull = Board::new(&h);
    lull.wall0 = board.wall0;
    lull.mono0 = board.mono0;
    let pids: Vec<Pid> = h.pool.running().map(|(_, pid)| pid).take(2).collect();
    for pid in pids {
        lull.idle.insert(pid, h.now);
    }
    h.advance(Duration::from_millis(300));
    lull.check(&mut h);
    h.advance(Duration::from_millis(700));
    board.check(&mut h);
    assert_eq!(grown(&h), [1, 2, 4]);
}

#[test]
fn no_worker_is_retired_within_a_round_of_a_growth() {
    let mut h = harness(3, 1, 16, (1, 1));
    let mut board = Board::new(&h);
    let pids = start(&mut h);
    board.check(&mut h); // three busy: one more
    assert_eq!(grown(&h), [1]);
    start(&mut h);
    // Two requests end at once: two idle, above max_spare; not judged yet.
    for pid in &pids[..2] {
        board.idle.insert(*pid, h.now);
    }
    h.advance(Duration::from_millis(500));
    board.check(&mut h);
    assert!(shrunk(&h).is_empty());
    h.advance(Duration::from_millis(500));
    board.check(&mut h);
    assert_eq!(shrunk(&h).len(), 1);
}

#[test]
fn a_slot_a_rollout_is_starting_a_worker_for_is_never_given_up() {
    let mut h = harness(3, 1, 3, (0, 3));
    let pids = start(&mut h);
    let mut new = h.pool.config().clone();
    new.command = vec!["./other".into()];
    h.pool.reconfigure(new, Vec::new(), false, h.now);
    h.run_effects();
    let incoming = h.tick();
    assert_eq!(incoming.len(), 1, "max_surge 1");
    let target = incoming[0].0;
    // Its old worker dies while the new one starts: the slot is empty.
    h.exit(pids[target], crate::supervisor::events::Ended::Exited(1));
    // A lower ceiling gives up a slot, but not that one.
    h.pool.remove_worker(h.now);
    h.run_effects();
    assert_eq!(shrunk(&h).len(), 1);
    assert!(shrunk(&h).iter().all(|&(_, slot)| slot != target));
    // The new worker takes its slot when it is ready.
    h.exec_ok(incoming[0].1);
    assert_eq!(h.pool.slot_of(incoming[0].1), Some(target));
}
