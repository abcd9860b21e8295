//! The pool as it must be after each round: as many workers as the
//! master's target, each running, holding its locked status file, written
//! within the stuck timeout, and running the configuration last loaded,
//! the master's slots holding exactly these processes; the wait for it,
//! and the master's own dump agreeing.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant, SystemTime};

use super::driver::Chaos;
use super::procfs::{env_var, flocked, last_arg};
use super::sampler::lstat;
use super::{CONVERGE_LIMIT, STABLE_FOR, STUCK_TIMEOUT};
use crate::harness::{all_procs, Proc};

/// The master's snapshot in its `prefork.master` file (a Parallel::Scoreboard
/// record: MD5, length, JSON), if it reads whole.
fn master_snapshot(board: &std::path::Path) -> Option<serde_json::Value> {
    let data = std::fs::read(board.join("prefork.master")).ok()?;
    let len = u32::from_be_bytes(data.get(16..20)?.try_into().ok()?) as usize;
    serde_json::from_slice(data.get(20..20 + len)?).ok()
}

impl Chaos<'_> {
    pub(super) fn workers(&self) -> Vec<Proc> {
        let master = self.master.pid();
        all_procs()
            .into_iter()
            .filter(|p| p.ppid == master && p.pgid == p.pid && p.state != 'Z')
            .collect()
    }

    pub(super) fn slot_workers(&self) -> Vec<(i32, usize)> {
        self.workers()
            .iter()
            .filter_map(|p| {
                let slot = env_var(p.pid, "PREFORK_WORKER_SLOT")?.parse().ok()?;
                Some((p.pid, slot))
            })
            .collect()
    }

    /// `Ok` when the pool is what it must be; else why not.
    fn pool_state(&self) -> Result<(), String> {
        let workers = self.workers();
        if workers.len() != self.target {
            return Err(format!(
                "{} workers for a target of {}",
                workers.len(),
                self.target
            ));
        }
        let snapshot =
            master_snapshot(&self.sandbox.board()).ok_or("the master's snapshot cannot be read")?;
        self.slots_state(&snapshot, &workers)?;
        self.spare_state(&snapshot)?;
        let locked = flocked();
        let wall = SystemTime::now();
        let board = self.sandbox.board();
        for w in &workers {
            let pid = w.pid;
            if matches!(w.state, 'T' | 't') {
                return Err(format!("pid={pid} is stopped"));
            }
            let Some(meta) = lstat(&board, format!("status_{pid}").as_ref()) else {
                return Err(format!("pid={pid} has no status file"));
            };
            if !meta.file_type().is_file() || !locked.contains(&(meta.dev(), meta.ino())) {
                return Err(format!("pid={pid}'s status file is not locked"));
            }
            let silent = meta
                .modified()
                .ok()
                .and_then(|m| wall.duration_since(m).ok())
                .unwrap_or_default();
            if silent > STUCK_TIMEOUT {
                return Err(format!("pid={pid} silent for {} ms", silent.as_millis()));
            }
            let (arg, env) = (last_arg(pid), env_var(pid, "CHAOS_ENV"));
            if arg.as_deref() != Some(self.current.arg) || env.as_deref() != Some(self.current.env)
            {
                return Err(format!(
                    "pid={pid} runs {arg:?}/{env:?}, not {}/{}",
                    self.current.arg, self.current.env
                ));
            }
        }
        Ok(())
    }

    /// The master's slots hold exactly the processes `/proc` shows. The
    /// count alone can agree while the master is not at rest: a retired
    /// worker that ignores its stop signal (alive for the graceful timeout,
    /// still writing its status) stands in for its slot's replacement
    /// waiting out a crash-loop backoff.
    fn slots_state(&self, snapshot: &serde_json::Value, workers: &[Proc]) -> Result<(), String> {
        let held: BTreeSet<i64> = snapshot
            .get("slots")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("pid")?.as_i64())
            .collect();
        let seen: BTreeSet<i64> = workers.iter().map(|p| i64::from(p.pid)).collect();
        if held != seen {
            let extra: Vec<_> = seen.difference(&held).collect();
            let missing: Vec<_> = held.difference(&seen).collect();
            return Err(format!(
                "/proc has workers {extra:?} that the master's slots do not hold, \
                 and lacks {missing:?} that they do"
            ));
        }
        Ok(())
    }

    /// A self-sizing pool at rest: its master agrees on the target and the
    /// bounds, and keeps its idle (and starting) workers within the spare
    /// bounds, unless it is at its floor or ceiling.
    fn spare_state(&self, snapshot: &serde_json::Value) -> Result<(), String> {
        let Some(b) = self.spare else {
            return Ok(());
        };
        let n = |v: &serde_json::Value, key: &str| v.get(key).and_then(|v| v.as_u64());
        let workers = n(snapshot, "workers").unwrap_or(0) as usize;
        if workers != self.target {
            return Err(format!(
                "the master keeps {workers} workers, its log says {}",
                self.target
            ));
        }
        let scaling = snapshot.get("scaling").cloned().unwrap_or_default();
        let said = [
            n(&scaling, "min_workers"),
            n(&scaling, "max_workers"),
            n(&scaling, "min_spare"),
            n(&scaling, "max_spare"),
        ];
        let expected =
            [b.min_workers, b.max_workers, b.min_spare, b.max_spare].map(|v| Some(v as u64));
        if said != expected {
            return Err(format!(
                "the master's bounds are {said:?}, not {expected:?}"
            ));
        }
        let spare =
            (n(snapshot, "idle").unwrap_or(0) + n(snapshot, "starting").unwrap_or(0)) as usize;
        if spare < b.min_spare && workers < b.max_workers {
            return Err(format!(
                "{spare} idle or starting, below min_spare {}",
                b.min_spare
            ));
        }
        if spare > b.max_spare && workers > b.min_workers {
            return Err(format!(
                "{spare} idle or starting, above max_spare {}",
                b.max_spare
            ));
        }
        Ok(())
    }

    /// Waits until the pool has converged (held for [`STABLE_FOR`]); returns
    /// when it did, and whether it had to (the first look found it
    /// disturbed), or `None` after [`CONVERGE_LIMIT`] (a violation).
    pub(super) fn converge(&mut self, why: &str) -> Option<(Instant, bool)> {
        let deadline = Instant::now() + CONVERGE_LIMIT;
        let mut since: Option<Instant> = None;
        let mut disturbed = false;
        let mut last_log = Instant::now() - Duration::from_secs(1);
        loop {
            if last_log.elapsed() >= Duration::from_millis(100) {
                self.scan_log();
                last_log = Instant::now();
            }
            let now = Instant::now();
            match self.pool_state() {
                Ok(()) => {
                    let start = *since.get_or_insert(now);
                    if now.duration_since(start) >= STABLE_FOR {
                        return Some((start, disturbed));
                    }
                }
                Err(why_not) => {
                    since = None;
                    disturbed = true;
                    if now > deadline {
                        self.findings.violation(format!(
                            "no convergence within {} s after {why}: {why_not}",
                            CONVERGE_LIMIT.as_secs()
                        ));
                        return None;
                    }
                }
            }
            if self.master.try_exit().is_some() {
                self.findings.violation("the master exited during the run");
                return None;
            }
            // Fine-grained while it is quick, lighter on the machine after.
            let waited = CONVERGE_LIMIT.saturating_sub(deadline.saturating_duration_since(now));
            let pause = if waited < Duration::from_millis(500) {
                10
            } else {
                30
            };
            std::thread::sleep(Duration::from_millis(pause));
        }
    }

    /// The master's own view must agree with `/proc` once converged.
    pub(super) fn check_dump(&mut self) {
        let expected = format!("workers={}/{}", self.target, self.target);
        for attempt in 0..3 {
            let Some(dump) = self.sync_dump("after a round") else {
                return;
            };
            let header = dump.lines().next().unwrap_or_default().to_string();
            if header.contains(&expected) {
                return;
            }
            if attempt == 2 {
                // What each side holds, to tell a master that lost a worker
                // from a test that took a passing state for rest.
                let mut seen: Vec<i32> = self.workers().iter().map(|p| p.pid).collect();
                seen.sort_unstable();
                let slots: Vec<String> = dump
                    .lines()
                    .skip(2)
                    .map(|row| row.chars().take(60).collect())
                    .collect();
                let slots = slots.join(" | ");
                let log = self.master.stderr();
                let recent: Vec<&str> = log.lines().rev().take(40).collect();
                let recent: Vec<&str> = recent.into_iter().rev().collect();
                eprintln!(
                    "--- the master's log as the dump disagreed ---\n{}",
                    recent.join("\n")
                );
                self.findings.violation(format!(
                    "the dump says {header:?}, /proc says {expected}; \
                     /proc now has {seen:?}; the dump's slots: {slots}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
