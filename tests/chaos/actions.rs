//! The disturbances a round throws: SIGKILL, SIGSTOP (and SIGCONT, or not),
//! a crash loop, one-shot worker modes, SIGTTIN/SIGTTOU bursts, and the
//! others, drawn by weight; a round, thrown and then converged.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::driver::Chaos;
use super::programs::ONCE_MODES;
use super::storms::{status_call, Storm};
use super::ANSWER_LIMIT;

/// One disturbance; a round throws one to three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Stop,
    CrashLoop,
    Mode,
    Ttin,
    Ttou,
    Hup,
    Storm,
    Garbage,
    Foreign,
    Probe,
    /// A pool that sizes itself: change how many workers are busy.
    Load,
}

impl Action {
    const WEIGHTED: &'static [(Action, u32)] = &[
        (Action::Kill, 14),
        (Action::Stop, 7),
        (Action::CrashLoop, 6),
        (Action::Mode, 14),
        (Action::Ttin, 5),
        (Action::Ttou, 5),
        (Action::Hup, 10),
        (Action::Storm, 5),
        (Action::Garbage, 8),
        (Action::Foreign, 4),
        (Action::Probe, 4),
        (Action::Load, 12),
    ];

    fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::CrashLoop => "crash-loop",
            Action::Mode => "mode",
            Action::Ttin => "ttin",
            Action::Ttou => "ttou",
            Action::Hup => "hup",
            Action::Storm => "usr1-storm",
            Action::Garbage => "garbage",
            Action::Foreign => "foreign",
            Action::Probe => "status-probe",
            Action::Load => "load",
        }
    }
}

/// What a round does later: its disturbances' second halves.
enum Later {
    Cont(i32),
    StormEnd(Storm),
    CrashOff {
        slots: Vec<usize>,
        since: Instant,
        spawns_before: HashMap<usize, u64>,
    },
}

impl Chaos<'_> {
    fn pick_action(&mut self) -> Action {
        // Load is a self-sizing pool's alone.
        let spare = self.spare.is_some();
        let weighted = || {
            Action::WEIGHTED
                .iter()
                .filter(move |(a, _)| spare || *a != Action::Load)
        };
        let total: u32 = weighted().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total as usize) as u32;
        for &(action, weight) in weighted() {
            if roll < weight {
                return action;
            }
            roll -= weight;
        }
        unreachable!()
    }

    pub(super) fn round(&mut self) {
        let n = match self.rng.below(10) {
            0..=4 => 1,
            5..=7 => 2,
            _ => 3,
        };
        let actions: Vec<Action> = (0..n).map(|_| self.pick_action()).collect();
        let mut later: Vec<(Instant, Later)> = Vec::new();
        for (i, &action) in actions.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(self.rng.ms(0, 200));
            }
            self.count(action.name());
            self.throw(action, &mut later);
        }
        later.sort_by_key(|(at, _)| *at);
        for (at, what) in later {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            self.finish(what, actions.contains(&Action::Hup));
        }
        let end = Instant::now();
        let names: Vec<&'static str> = actions.iter().map(|a| a.name()).collect();
        let why = format!("a round of {names:?}");
        if let Some((at, disturbed)) = self.converge(&why) {
            self.convergence
                .push((at.saturating_duration_since(end), disturbed, names));
            self.check_dump();
        }
        self.reap_foreign(false);
        self.measure();
        std::thread::sleep(self.rng.ms(0, 300));
    }

    fn throw(&mut self, action: Action, later: &mut Vec<(Instant, Later)>) {
        match action {
            Action::Kill => {
                let workers = self.workers();
                let n = self.rng.between(1, 4) as usize;
                let pids: Vec<i32> = workers.iter().map(|p| p.pid).collect();
                for pid in self.rng.sample(&pids, n) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    self.count("sigkill");
                }
            }
            Action::Stop => {
                let pids: Vec<i32> = self.workers().iter().map(|p| p.pid).collect();
                let n = self.rng.between(1, 2) as usize;
                for pid in self.rng.sample(&pids, n) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
                    self.count("sigstop");
                    // Continued before the stuck timeout, or left for the
                    // master to judge stuck and replace.
                    if self.rng.chance(0.6) {
                        let after = self.rng.ms(100, 1800);
                        later.push((Instant::now() + after, Later::Cont(pid)));
                    }
                }
            }
            Action::CrashLoop => {
                self.scan_log();
                let slots: Vec<usize> = (0..self.target).collect();
                let n = self.rng.between(1, 3) as usize;
                let slots = self.rng.sample(&slots, n);
                for &slot in &slots {
                    std::fs::write(self.ctl(&format!("mode_{slot}")), "crash").unwrap();
                }
                self.kill_slots(&slots);
                let spawns_before = slots
                    .iter()
                    .map(|s| (*s, self.spawns.get(s).copied().unwrap_or(0)))
                    .collect();
                let phase = self.rng.ms(1000, 3000);
                let since = Instant::now();
                later.push((
                    since + phase,
                    Later::CrashOff {
                        slots,
                        since,
                        spawns_before,
                    },
                ));
            }
            Action::Mode => self.give_modes(),
            Action::Ttin | Action::Ttou => self.scale_burst(action),
            Action::Load => self.set_load(),
            Action::Hup => self.hup_chain(),
            Action::Storm => {
                let storm = self.start_storm();
                later.push((
                    storm.started + Duration::from_millis(1100),
                    Later::StormEnd(storm),
                ));
            }
            Action::Garbage => self.garbage(),
            Action::Foreign => self.start_foreign(),
            Action::Probe => {
                let n = self.rng.between(1, 3);
                for _ in 0..n {
                    let flavour = self.rng.below(3);
                    self.count("status-call");
                    let result = status_call(
                        self.sandbox.path(),
                        &self.sandbox.board(),
                        self.next_probe.fetch_add(1, Ordering::Relaxed),
                        flavour,
                    );
                    self.status_answered(result);
                }
            }
        }
    }

    fn finish(&mut self, what: Later, with_hup: bool) {
        match what {
            Later::Cont(pid) => {
                let stopped = crate::harness::proc_stat(pid)
                    .is_some_and(|p| p.ppid == self.master.pid() && p.state == 'T');
                if stopped {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                    self.count("sigcont");
                }
            }
            Later::StormEnd(storm) => self.end_storm(storm),
            Later::CrashOff {
                slots,
                since,
                spawns_before,
            } => {
                for slot in &slots {
                    let _ = std::fs::remove_file(self.ctl(&format!("mode_{slot}")));
                }
                self.scan_log();
                if with_hup {
                    return; // a rollout spawns in those slots too
                }
                let phase = since.elapsed();
                let bound = crash_spawn_bound(phase);
                for slot in slots {
                    let spawned = self.spawns.get(&slot).copied().unwrap_or(0)
                        - spawns_before.get(&slot).copied().unwrap_or(0);
                    self.answers
                        .crash_loops
                        .push((phase.as_millis(), spawned, bound));
                    if spawned > bound {
                        self.findings.violation(format!(
                            "crash-looping slot {slot} was respawned {spawned} times in {} ms \
                             (the backoff allows {bound})",
                            phase.as_millis()
                        ));
                    }
                }
            }
        }
    }

    /// SIGKILLs the workers of `slots` (their replacements read the modes).
    fn kill_slots(&mut self, slots: &[usize]) {
        for (pid, slot) in self.slot_workers() {
            if slots.contains(&slot) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    fn live_huge_worker(&self) -> bool {
        self.workers().iter().any(|w| {
            std::fs::read_to_string(self.ctl(&format!("taken_{}", w.pid)))
                .is_ok_and(|m| m.starts_with("huge"))
        })
    }

    /// One-shot modes for the next worker of one or two slots.
    fn give_modes(&mut self) {
        let slots: Vec<usize> = (0..self.target).collect();
        let n = self.rng.between(1, 2) as usize;
        let slots = self.rng.sample(&slots, n);
        for &slot in &slots {
            let mut mode = self.rng.pick(ONCE_MODES).to_string();
            if mode == "huge" {
                // One huge status at a time: every dump prints it whole.
                if self.live_huge_worker() {
                    mode = "binary".into();
                } else {
                    mode = format!("huge {}", self.rng.between(2 << 20, 8 << 20));
                }
            }
            self.count(format!("mode-{}", mode.split(' ').next().unwrap()));
            let once = self.ctl(&format!("once_{slot}"));
            let tmp = self.ctl(&format!("once_{slot}.new"));
            std::fs::write(&tmp, &mode).unwrap();
            std::fs::rename(&tmp, &once).unwrap();
        }
        self.kill_slots(&slots);
    }

    /// How many slots' workers are busy (the others idle): the pool must
    /// grow or shrink to keep its spare workers within bounds.
    pub(super) fn set_load(&mut self) {
        let busy = self.rng.pick(&[0usize, 4, 8, 12, 16, 20, 24, 28]);
        self.count(format!("load-{busy}"));
        let tmp = self.ctl("busy_below.new");
        std::fs::write(&tmp, busy.to_string()).unwrap();
        std::fs::rename(&tmp, self.ctl("busy_below")).unwrap();
    }

    fn scale_burst(&mut self, action: Action) {
        // Keep the target (or a self-sizing pool's bounds) near the
        // configured count.
        let (configured, now) = match self.spare {
            Some(b) => (super::driver::SPARE.max_workers, b.max_workers),
            None => (self.current.workers, self.target),
        };
        let signal = match action {
            _ if now >= configured + 6 => Signal::SIGTTOU,
            _ if now + 6 <= configured => Signal::SIGTTIN,
            Action::Ttin => Signal::SIGTTIN,
            _ => Signal::SIGTTOU,
        };
        let why = if signal == Signal::SIGTTIN {
            "SIGTTIN"
        } else {
            "SIGTTOU"
        };
        self.scan_log();
        let before = self.resizes.get(why).copied().unwrap_or(0);
        let k = self.rng.between(1, 4);
        for _ in 0..k {
            if !self.signal_master(signal) {
                return;
            }
            self.count(why.to_lowercase());
            std::thread::sleep(self.rng.ms(0, 20));
        }
        // Coalesced or not, the burst moves the target at least once, at
        // most once per signal.
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            self.scan_log();
            let answered = self.resizes.get(why).copied().unwrap_or(0) - before;
            if answered > k {
                self.findings.violation(format!(
                    "a burst of {k} {why} resized the pool {answered} times"
                ));
                return;
            }
            if answered >= 1 {
                return;
            }
            if Instant::now() > deadline {
                self.findings
                    .violation(format!("a burst of {k} {why} was not answered"));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The most spawns a crash-looping slot may see in `phase` when every death
/// is quick: at once, at once, then 100 ms doubling to the 1 s maximum (one
/// more for the worker killed at the start, and a margin for load).
fn crash_spawn_bound(phase: Duration) -> u64 {
    let mut at = 0.0;
    let mut delay = 0.1;
    let mut spawns = 2;
    let limit = phase.as_secs_f64() + 0.3;
    while at + delay <= limit {
        at += delay;
        delay = (delay * 2.0f64).min(1.0);
        spawns += 1;
    }
    spawns + 2
}
