//! The Chaos driver: its state (the configuration the pool must run, the
//! master's target, what was thrown and measured), its signals to the master
//! and the dumps that answer SIGUSR1; and the end of a run: the wind-down,
//! SIGTERM, and nothing left behind.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::configs::{Sent, Variant, BASE};
use super::master_log::leading_number;
use super::procfs::{master_fds, master_rss_kib, read_proc_file};
use super::rng::Rng;
use super::sampler::{outside_changed, Fate, Shared};
use super::{Findings, ANSWER_LIMIT, GRACEFUL_TIMEOUT, HEADER, WORKERS};
use crate::harness::{all_procs, Running, Sandbox};

/// What `prefork status` calls and storms measured.
#[derive(Default)]
pub(super) struct Answers {
    pub(super) status_calls: u64,
    pub(super) status_longest: Duration,
    pub(super) storms: u64,
    pub(super) storm_signals: u64,
    pub(super) storm_dumps: Vec<u64>,
    pub(super) dumps_checked: u64,
    pub(super) hups: u64,
    /// For each crash-looping slot checked: (phase in ms, spawns, bound).
    pub(super) crash_loops: Vec<(u128, u64, u64)>,
}

/// A self-sizing pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SpareBounds {
    pub(super) min_workers: usize,
    pub(super) max_workers: usize,
    pub(super) min_spare: usize,
    pub(super) max_spare: usize,
}

/// The bounds of the chaos's self-sizing pool, as its config file says.
pub(super) const SPARE: SpareBounds = SpareBounds {
    min_workers: 8,
    max_workers: 24,
    min_spare: 2,
    max_spare: 4,
};

/// The main thread's side of the run: it throws the disturbances, follows
/// the master's log and dumps, and checks the pool after each round.
pub(super) struct Chaos<'a> {
    pub(super) sandbox: &'a Sandbox,
    pub(super) master: Running,
    pub(super) rng: Rng,
    pub(super) findings: Findings,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) config: PathBuf,
    pub(super) worker: String,
    /// The configuration the workers must run, as the master's own logic
    /// has it (mirrored from its log): the current one, and what an aborted
    /// rollout goes back to.
    pub(super) current: Variant,
    pub(super) previous: Option<Variant>,
    /// SIGHUPs sent, not yet acknowledged in the log.
    pub(super) hups: VecDeque<Sent>,
    /// The master's worker target, from its log's resize lines.
    pub(super) target: usize,
    /// A pool that sizes itself: its bounds as they stand (the config's,
    /// moved by SIGTTIN/SIGTTOU), mirrored from the log.
    pub(super) spare: Option<SpareBounds>,
    pub(super) log_cursor: usize,
    pub(super) resizes: HashMap<&'static str, u64>,
    pub(super) spawns: HashMap<usize, u64>,
    pub(super) spawned_pids: Vec<i32>,
    pub(super) aborted: u64,
    dump_cursor: usize,
    pub(super) dumps: u64,
    pub(super) next_fake: u64,
    pub(super) next_probe: Arc<AtomicU64>,
    pub(super) thrown: BTreeMap<String, u64>,
    /// How long each round took to converge, whether the pool was disturbed
    /// at its end, and what was thrown.
    pub(super) convergence: Vec<(Duration, bool, Vec<&'static str>)>,
    pub(super) foreign: Vec<Child>,
    pub(super) answers: Answers,
    pub(super) rss: Vec<u64>,
    pub(super) fds: Vec<usize>,
}

impl<'a> Chaos<'a> {
    pub(super) fn new(
        sandbox: &'a Sandbox,
        master: Running,
        rng: Rng,
        findings: Findings,
        shared: Arc<Mutex<Shared>>,
        config: PathBuf,
        worker: String,
    ) -> Self {
        Chaos {
            sandbox,
            master,
            rng,
            findings,
            shared,
            config,
            worker,
            current: BASE,
            previous: None,
            hups: VecDeque::new(),
            target: WORKERS,
            spare: None,
            log_cursor: 0,
            resizes: HashMap::new(),
            spawns: HashMap::new(),
            spawned_pids: Vec::new(),
            aborted: 0,
            dump_cursor: 0,
            dumps: 0,
            next_fake: 0,
            next_probe: Arc::new(AtomicU64::new(0)),
            thrown: BTreeMap::new(),
            convergence: Vec::new(),
            foreign: Vec::new(),
            answers: Answers::default(),
            rss: Vec::new(),
            fds: Vec::new(),
        }
    }

    pub(super) fn count(&mut self, what: impl Into<String>) {
        *self.thrown.entry(what.into()).or_default() += 1;
    }

    pub(super) fn ctl(&self, name: &str) -> PathBuf {
        self.sandbox.path().join("ctl").join(name)
    }

    pub(super) fn measure(&mut self) {
        let pid = self.master.pid();
        self.rss.push(master_rss_kib(pid));
        // The master keeps one descriptor per worker (its status file): a
        // self-sizing pool's count is taken without them, so that a pool
        // that ends larger than it started is not taken for a leak.
        let per_worker = match self.spare {
            Some(_) => self.workers().len(),
            None => 0,
        };
        self.fds.push(master_fds(pid).saturating_sub(per_worker));
    }

    // ----- the master's dumps ----------------------------------------------

    /// Counts the dumps printed so far, reading only what is new.
    pub(super) fn count_dumps(&mut self) -> (u64, String) {
        let out = self.master.stdout();
        if let Some(end) = out[self.dump_cursor..].rfind('\n') {
            let end = self.dump_cursor + end + 1;
            self.dumps += out[self.dump_cursor..end].matches(HEADER).count() as u64;
            self.dump_cursor = end;
        }
        (self.dumps, out)
    }

    /// SIGUSR1, and the dump that answers it (complete), or a violation.
    pub(super) fn sync_dump(&mut self, why: &str) -> Option<String> {
        let (before, _) = self.count_dumps();
        if !self.signal_master(Signal::SIGUSR1) {
            return None;
        }
        let deadline = Instant::now() + ANSWER_LIMIT;
        loop {
            let (now, out) = self.count_dumps();
            if now > before {
                let dump = &out[..self.dump_cursor];
                let last = &dump[dump.rfind(HEADER).expect("a header")..];
                let slots = last
                    .lines()
                    .next()
                    .and_then(|h| h.split_once("workers="))
                    .and_then(|(_, n)| n.split_once('/'))
                    .and_then(|(_, n)| leading_number(n));
                if slots.is_some_and(|n| last.lines().count() == n as usize + 2) {
                    self.answers.dumps_checked += 1;
                    return Some(last.to_string());
                }
            }
            if Instant::now() > deadline {
                self.findings
                    .violation(format!("SIGUSR1 ({why}) not answered within 5 s"));
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(super) fn signal_master(&mut self, signal: Signal) -> bool {
        match kill(Pid::from_raw(self.master.pid()), signal) {
            Ok(()) if self.master.try_exit().is_none() => true,
            _ => {
                self.findings
                    .violation(format!("the master is gone (sending {signal})"));
                false
            }
        }
    }
}

/// Spawns a helper of the test's that dies with the test (and does not
/// fork while another test sets up its pipes).
pub(super) fn spawn_helper(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let _forking = crate::util::fork_lock();
    cmd.spawn()
}

/// Should the test fail half-way: the foreign programs are done too.
impl Drop for Chaos<'_> {
    fn drop(&mut self) {
        for child in &mut self.foreign {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ----- the end of a run ------------------------------------------------------

impl Chaos<'_> {
    /// The end of the disturbances: modes off, back to the base config,
    /// every foreign program done; the last convergence.
    pub(super) fn wind_down(&mut self) -> Option<Duration> {
        for entry in std::fs::read_dir(self.sandbox.path().join("ctl")).expect("list ctl") {
            let name = entry.expect("a ctl entry").file_name();
            let name = name.to_string_lossy();
            if name.starts_with("mode_") || name.starts_with("once_") {
                let _ = std::fs::remove_file(self.ctl(&name));
            }
        }
        if self.spare.is_some() {
            // The load the run started with.
            let tmp = self.ctl("busy_below.new");
            std::fs::write(&tmp, "10").expect("write the load");
            std::fs::rename(&tmp, self.ctl("busy_below")).expect("replace the load");
        }
        let text = self.config_text(BASE, None).into_bytes();
        let started = Instant::now();
        self.send_hup(Sent::Valid(BASE), Some(text));
        let converged = self.converge("the final SIGHUP");
        if converged.is_some() {
            self.check_dump();
        }
        self.reap_foreign(true);
        converged.map(|(at, _)| at.saturating_duration_since(started))
    }

    /// SIGTERM: the master must exit 0 after its graceful shutdown.
    pub(super) fn stop(&mut self) -> Option<ExitStatus> {
        // Gone before the signal is a violation; gone right after it is
        // what SIGTERM asks (a test thread that lost its CPU between the two
        // would see a quick master as gone: not `signal_master`, then).
        if let Some(status) = self.master.try_exit() {
            self.findings
                .violation(format!("the master exited before SIGTERM: {status}"));
            return Some(status);
        }
        if let Err(e) = kill(Pid::from_raw(self.master.pid()), Signal::SIGTERM) {
            self.findings
                .violation(format!("SIGTERM to the master failed: {e}"));
            return self.master.try_exit();
        }
        let deadline = Instant::now() + GRACEFUL_TIMEOUT + Duration::from_secs(10);
        loop {
            if let Some(status) = self.master.try_exit() {
                self.scan_log();
                return Some(status);
            }
            if Instant::now() > deadline {
                self.findings
                    .violation("the master did not exit after SIGTERM");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After the master's exit: no process of its, no file but the planted
    /// ones that had to be left alone, no symlink target touched.
    pub(super) fn check_nothing_left(&self) {
        let marker = format!("PREFORK_MASTER_PID={}", self.master.pid());
        let shared = self.shared.lock().unwrap();
        for p in all_procs() {
            let started_by_master = read_proc_file(p.pid, "environ")
                .is_some_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()));
            if started_by_master || shared.all_workers.contains(&p.pgid) {
                self.findings.violation(format!(
                    "pid={} (group {}, state {}) is left after the master's exit",
                    p.pid, p.pgid, p.state
                ));
            }
        }
        let allowed: HashMap<&OsString, Fate> = shared
            .planted
            .iter()
            .filter(|p| !p.done || p.fate == Fate::Removed)
            .map(|p| (&p.name, p.fate))
            .collect();
        let board = self.sandbox.board();
        let left: HashSet<OsString> = std::fs::read_dir(&board)
            .expect("the board directory stays")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        for name in &left {
            match allowed.get(name) {
                Some(Fate::Kept | Fate::Any) => {}
                _ => self.findings.violation(format!(
                    "{} is left on the board after the master's exit",
                    name.to_string_lossy()
                )),
            }
        }
        for p in shared.planted.iter().filter(|p| !p.done) {
            if p.fate == Fate::Kept && !left.contains(&p.name) {
                self.findings.violation(format!(
                    "planted {} {} was removed by the shutdown",
                    p.kind,
                    p.name.to_string_lossy()
                ));
            }
        }
        for o in &shared.outside {
            if let Some(why) = outside_changed(o) {
                self.findings.violation(why);
            }
        }
    }
}
