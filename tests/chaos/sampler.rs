//! The sampler thread and its invariants: every [`SAMPLE_EVERY`], no zombie
//! of the master seen twice, nothing outliving a worker's process group, no
//! file of a dead process left on the board, planted garbage removed or left
//! alone as it must be, no symlink followed, no foreign live file removed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Findings, CHECK_INTERVAL, GRACEFUL_TIMEOUT, GROUP_MARGIN, LOAD_MARGIN};
use super::{SAMPLE_EVERY, ZOMBIE_LIMIT};
use crate::harness::{all_procs, proc_stat, Proc};

/// What a planted entry of the board must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// A dead process's file: removed within one check interval.
    Removed,
    /// Never touched by readers: there until the test removes it.
    Kept,
    /// Either, as long as nothing breaks (a name that a new worker may take).
    Any,
}

pub(super) struct Planted {
    pub(super) name: OsString,
    pub(super) kind: &'static str,
    pub(super) at: Instant,
    pub(super) fate: Fate,
    pub(super) ino: u64,
    /// Settled: removed as it had to be, found missing, or taken back.
    pub(super) done: bool,
}

/// A file or directory outside the board that a planted symlink points at:
/// it must stay as it was (or keep not existing).
pub(super) struct Outside {
    pub(super) path: PathBuf,
    /// (inode, mtime, content) of a file; `None` for what must not exist;
    /// for a directory, the content is its listing.
    pub(super) was: Option<(u64, i64, Vec<u8>)>,
}

/// A foreign program's live file: it must stay as long as its owner runs.
pub(super) struct Foreign {
    pub(super) pid: i32,
    pub(super) name: String,
    pub(super) misses: u32,
    pub(super) reported: bool,
}

#[derive(Default)]
pub(super) struct SamplerStats {
    pub(super) samples: u64,
    pub(super) longest_gap: Duration,
    pub(super) zombies_seen: u64,
    pub(super) longest_zombie: Duration,
    /// The longest time charged to the master (see [`Sampler::zombies`]).
    pub(super) longest_zombie_charged: Duration,
    pub(super) workers_seen: u64,
    pub(super) groups_drained: u64,
    pub(super) longest_group_drain: Duration,
    pub(super) dead_files_seen: u64,
    pub(super) longest_dead_file: Duration,
    pub(super) planted_removed: u64,
    pub(super) longest_planted_removal: Duration,
}

/// What the main thread tells the sampler.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) planted: Vec<Planted>,
    pub(super) outside: Vec<Outside>,
    pub(super) foreign: Vec<Foreign>,
    /// Workers announced by the log, which the sampler may not have seen
    /// alive (the crash-looping ones live a few milliseconds).
    pub(super) spawned: Vec<i32>,
    /// Every worker the sampler saw: their groups must be empty at the end.
    pub(super) all_workers: HashSet<i32>,
    pub(super) stats: SamplerStats,
}

/// The file name's entry in `dir`, not followed.
pub(super) fn lstat(dir: &Path, name: &std::ffi::OsStr) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(dir.join(name)).ok()
}

fn is_dead(procs: &HashMap<i32, Proc>, pid: i32) -> bool {
    procs.get(&pid).is_none_or(|p| matches!(p.state, 'Z' | 'X'))
}

/// A zombie child of the master, as the sampler follows it.
struct Zombie {
    /// The end of the scan that first saw it.
    first: Instant,
    /// The master's run-queue wait then.
    waited_before: Option<Duration>,
    /// What the master was doing at each look since (see [`activity`]).
    master: BTreeMap<String, u32>,
}

/// The sampler: every [`SAMPLE_EVERY`], the zombies, groups and files the
/// master is responsible for.
pub(super) struct Sampler {
    master: i32,
    board: PathBuf,
    shared: Arc<Mutex<Shared>>,
    findings: Findings,
    zombies: HashMap<i32, Zombie>,
    reported_zombies: HashSet<i32>,
    workers: HashSet<i32>,
    dead_groups: HashMap<i32, Instant>,
    reported_groups: HashSet<i32>,
    dead_files: HashMap<OsString, (Instant, u64)>,
    reported_files: HashSet<(OsString, u64)>,
}

impl Sampler {
    pub(super) fn new(
        master: i32,
        board: PathBuf,
        shared: Arc<Mutex<Shared>>,
        findings: Findings,
    ) -> Self {
        Sampler {
            master,
            board,
            shared,
            findings,
            zombies: HashMap::new(),
            reported_zombies: HashSet::new(),
            workers: HashSet::new(),
            dead_groups: HashMap::new(),
            reported_groups: HashSet::new(),
            dead_files: HashMap::new(),
            reported_files: HashSet::new(),
        }
    }

    pub(super) fn run(mut self, stop: Arc<AtomicBool>) {
        let mut last = Instant::now();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let gap = started.duration_since(last);
            last = started;
            self.sample(n % 10 == 0, gap);
            n += 1;
            std::thread::sleep(SAMPLE_EVERY.saturating_sub(started.elapsed()));
        }
    }

    fn sample(&mut self, check_outside: bool, gap: Duration) {
        // The board first, then /proc: a file listed belongs to a process
        // that existed when it was listed, so a pid absent from the later
        // scan of /proc really is gone.
        let listing: Vec<(OsString, std::fs::Metadata)> = std::fs::read_dir(&self.board)
            .map(|entries| {
                entries
                    .filter_map(|e| {
                        let e = e.ok()?;
                        Some((e.file_name(), e.metadata().ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let procs: HashMap<i32, Proc> = all_procs().into_iter().map(|p| (p.pid, p)).collect();
        let now = Instant::now();
        let shared = Arc::clone(&self.shared);
        let mut shared = shared.lock().unwrap();
        shared.stats.samples += 1;
        shared.stats.longest_gap = shared.stats.longest_gap.max(gap);
        self.zombies(&procs, now, &mut shared.stats);
        self.groups(&procs, now, &mut shared);
        self.dead_files(&listing, &procs, now, &mut shared.stats);
        self.planted(now, &mut shared, check_outside);
        self.foreign(&listing, &procs, &mut shared);
    }

    /// A zombie is charged to the master from the end of the scan that
    /// first saw it (it was a zombie then already) to a fresh look at it
    /// alone: the next scan's view of it may be as old as that scan is long,
    /// and a loaded machine can stall the sampler in the middle of a scan.
    /// What the master spent on a run queue meanwhile, waiting for a CPU, is
    /// taken off: the scheduler, not the master, decides that. What is
    /// charged is the time it ran, or slept by its own choice (in `poll`, or
    /// blocked in a `spawn`): that is what the limit bounds. On an idle
    /// machine all of these are the same.
    fn zombies(&mut self, procs: &HashMap<i32, Proc>, now: Instant, stats: &mut SamplerStats) {
        let zombies: HashSet<i32> = procs
            .values()
            .filter(|p| p.ppid == self.master && p.state == 'Z')
            .map(|p| p.pid)
            .collect();
        self.zombies.retain(|pid, _| zombies.contains(pid));
        if zombies.is_empty() {
            return;
        }
        let waited_total = run_queue_wait(self.master);
        let activity = activity(self.master);
        for pid in zombies {
            let zombie = self.zombies.entry(pid).or_insert_with(|| {
                stats.zombies_seen += 1;
                Zombie {
                    first: now,
                    waited_before: waited_total,
                    master: BTreeMap::new(),
                }
            });
            *zombie.master.entry(activity.clone()).or_default() += 1;
            let (first, waited_before) = (zombie.first, zombie.waited_before);
            let seen = now.duration_since(first);
            stats.longest_zombie = stats.longest_zombie.max(seen);
            // Unknown (the master is gone): nothing is taken off.
            let waited_since = |total: Option<Duration>| {
                total
                    .zip(waited_before)
                    .map_or(Duration::ZERO, |(now, then)| now.saturating_sub(then))
            };
            let mut charged = seen.saturating_sub(waited_since(waited_total));
            let mut age = seen;
            let mut waited = waited_since(waited_total);
            if charged > ZOMBIE_LIMIT && !self.reported_zombies.contains(&pid) {
                // A fresh look: the time first, then what is seen.
                let looked = Instant::now();
                let waited_now = run_queue_wait(self.master);
                let still = proc_stat(pid).is_some_and(|p| p.ppid == self.master && p.state == 'Z');
                if !still {
                    continue; // reaped: the scan's view of it was old
                }
                age = looked.duration_since(first);
                waited = waited_since(waited_now);
                charged = age.saturating_sub(waited);
            }
            stats.longest_zombie_charged = stats.longest_zombie_charged.max(charged);
            if charged > ZOMBIE_LIMIT && self.reported_zombies.insert(pid) {
                let meanwhile: Vec<String> = self.zombies[&pid]
                    .master
                    .iter()
                    .map(|(what, n)| format!("{n}x {what}"))
                    .collect();
                self.findings.violation(format!(
                    "zombie pid={pid}, a child of the master, seen twice {} ms apart, \
                     {} ms of it while the master ran or slept (it waited {} ms for a CPU); \
                     the master at each look meanwhile: {}; now: {}",
                    age.as_millis(),
                    charged.as_millis(),
                    waited.as_millis(),
                    meanwhile.join(", "),
                    doing(self.master)
                ));
            }
        }
    }

    fn groups(&mut self, procs: &HashMap<i32, Proc>, now: Instant, shared: &mut Shared) {
        let current: HashSet<i32> = procs
            .values()
            .filter(|p| p.ppid == self.master && p.pgid == p.pid && p.state != 'Z')
            .map(|p| p.pid)
            .collect();
        let announced = std::mem::take(&mut shared.spawned);
        for pid in current.iter().copied().chain(announced) {
            if shared.all_workers.insert(pid) {
                shared.stats.workers_seen += 1;
            }
            self.workers.insert(pid);
        }
        let died: Vec<i32> = self
            .workers
            .iter()
            .copied()
            .filter(|pid| !current.contains(pid))
            .collect();
        for pid in died {
            self.workers.remove(&pid);
            self.dead_groups.insert(pid, now);
        }
        let mut members: HashMap<i32, Vec<i32>> = HashMap::new();
        for p in procs.values() {
            if self.dead_groups.contains_key(&p.pgid) {
                members.entry(p.pgid).or_default().push(p.pid);
            }
        }
        let stats = &mut shared.stats;
        self.dead_groups.retain(|pgid, died| {
            let age = now.duration_since(*died);
            match members.get(pgid) {
                None => {
                    stats.groups_drained += 1;
                    stats.longest_group_drain = stats.longest_group_drain.max(age);
                    false
                }
                Some(left) => {
                    let limit = GRACEFUL_TIMEOUT + GROUP_MARGIN;
                    if age > limit && !self.reported_groups.contains(pgid) {
                        // A fresh look, as for zombies: the scan's may be old.
                        let looked = Instant::now();
                        let left: Vec<i32> = left
                            .iter()
                            .copied()
                            .filter(|&pid| proc_stat(pid).is_some_and(|p| p.pgid == *pgid))
                            .collect();
                        let age = looked.duration_since(*died);
                        if !left.is_empty() && age > limit {
                            self.reported_groups.insert(*pgid);
                            self.findings.violation(format!(
                                "process(es) {left:?} outlived worker pid={pgid}'s process group by {} ms",
                                age.as_millis()
                            ));
                        }
                    }
                    true
                }
            }
        });
    }

    fn dead_files(
        &mut self,
        listing: &[(OsString, std::fs::Metadata)],
        procs: &HashMap<i32, Proc>,
        now: Instant,
        stats: &mut SamplerStats,
    ) {
        let mut present = HashSet::new();
        for (name, meta) in listing {
            let Some(pid) = status_pid(name) else {
                continue;
            };
            if !meta.file_type().is_file() || !is_dead(procs, pid) {
                self.dead_files.remove(name);
                continue;
            }
            present.insert(name.clone());
            let ino = meta.ino();
            let first = self.dead_files.entry(name.clone()).or_insert_with(|| {
                stats.dead_files_seen += 1;
                (now, ino)
            });
            if first.1 != ino {
                *first = (now, ino);
            }
            let limit = CHECK_INTERVAL + LOAD_MARGIN;
            let first = first.0;
            if now.duration_since(first) > limit
                && !self.reported_files.contains(&(name.clone(), ino))
            {
                // A fresh look, as for zombies: the listing may be old.
                let looked = Instant::now();
                let still = lstat(&self.board, name).is_some_and(|m| m.ino() == ino)
                    && proc_stat(pid).is_none_or(|p| matches!(p.state, 'Z' | 'X'));
                let age = looked.duration_since(first);
                if still && age > limit {
                    self.reported_files.insert((name.clone(), ino));
                    self.findings.violation(format!(
                        "{} of a dead process still on the board {} ms after it was first seen dead",
                        name.to_string_lossy(),
                        age.as_millis()
                    ));
                }
            }
        }
        self.dead_files.retain(|name, (first, _)| {
            let keep = present.contains(name);
            if !keep {
                stats.longest_dead_file = stats.longest_dead_file.max(now.duration_since(*first));
            }
            keep
        });
    }

    fn planted(&mut self, now: Instant, shared: &mut Shared, check_outside: bool) {
        let stats = &mut shared.stats;
        for p in shared.planted.iter_mut().filter(|p| !p.done) {
            let there = lstat(&self.board, &p.name).is_some_and(|m| m.ino() == p.ino);
            let age = now.duration_since(p.at);
            match (p.fate, there) {
                (Fate::Removed, false) => {
                    p.done = true;
                    stats.planted_removed += 1;
                    stats.longest_planted_removal = stats.longest_planted_removal.max(age);
                }
                (Fate::Removed, true) if age > CHECK_INTERVAL + LOAD_MARGIN => {
                    p.done = true;
                    self.findings.violation(format!(
                        "planted {} {} (a dead process's file) still there after {} ms",
                        p.kind,
                        p.name.to_string_lossy(),
                        age.as_millis()
                    ));
                }
                (Fate::Kept, false) => {
                    p.done = true;
                    self.findings.violation(format!(
                        "planted {} {} was removed or replaced: readers must leave it alone",
                        p.kind,
                        p.name.to_string_lossy()
                    ));
                }
                _ => {}
            }
        }
        if check_outside {
            for o in &shared.outside {
                if let Some(why) = outside_changed(o) {
                    self.findings.violation(why);
                }
            }
            // Reported once: forget the changed ones.
            shared.outside.retain(|o| outside_changed(o).is_none());
        }
    }

    fn foreign(
        &mut self,
        listing: &[(OsString, std::fs::Metadata)],
        procs: &HashMap<i32, Proc>,
        shared: &mut Shared,
    ) {
        let names: HashSet<&OsString> = listing.iter().map(|(n, _)| n).collect();
        for f in shared.foreign.iter_mut().filter(|f| !f.reported) {
            if is_dead(procs, f.pid) || names.contains(&OsString::from(&f.name)) {
                f.misses = 0;
                continue;
            }
            f.misses += 1;
            if f.misses >= 2 {
                f.reported = true;
                self.findings.violation(format!(
                    "the live file {} of a running foreign program (pid={}) was removed",
                    f.name, f.pid
                ));
            }
        }
        shared.foreign.retain(|f| !is_dead(procs, f.pid));
    }
}

/// How long `pid` has waited on a run queue for a CPU, all told: the second
/// field of `/proc/<pid>/schedstat` (nanoseconds).
fn run_queue_wait(pid: i32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// What the master is doing, in a word: `running` (or waiting for a CPU),
/// else the innermost kernel function it sleeps in (`poll_schedule_timeout`:
/// its loop's `poll`; a socket receive such as `__skb_wait_for_more_packets`:
/// std's `spawn` waiting for the child's exec).
fn activity(pid: i32) -> String {
    if proc_stat(pid).is_some_and(|p| p.state == 'R') {
        return "running".into();
    }
    std::fs::read_to_string(format!("/proc/{pid}/stack"))
        .ok()
        .and_then(|s| {
            let frame = s.lines().next()?.split_whitespace().nth(1)?;
            Some(frame.split('+').next()?.to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// What the master is doing, for a violation's message: its state, the
/// system call it is in (`/proc/<pid>/syscall`: its number) and the
/// innermost kernel functions of `/proc/<pid>/stack`.
fn doing(pid: i32) -> String {
    let read = |what: &str| std::fs::read_to_string(format!("/proc/{pid}/{what}")).ok();
    let state = proc_stat(pid).map_or('?', |p| p.state);
    let syscall = read("syscall")
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let stack: Vec<String> = read("stack")
        .unwrap_or_default()
        .lines()
        .take(3)
        .filter_map(|l| {
            l.split_whitespace()
                .nth(1)?
                .split('+')
                .next()
                .map(str::to_string)
        })
        .collect();
    format!(
        "state {state}, syscall {syscall}, in [{}]",
        stack.join(" < ")
    )
}

/// The pid of a `status_<pid>` name (digits only, no `.tmp`).
fn status_pid(name: &std::ffi::OsStr) -> Option<i32> {
    let id = name.as_bytes().strip_prefix(b"status_")?;
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(id).ok()?.parse().ok()
}

pub(super) fn snapshot(path: &Path) -> Option<(u64, i64, Vec<u8>)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let content = if meta.is_dir() {
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| Some(e.ok()?.file_name().into_vec()))
            .collect();
        names.sort();
        names.join(&b'/')
    } else {
        std::fs::read(path).ok()?
    };
    Some((
        meta.ino(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        content,
    ))
}

pub(super) fn outside_changed(o: &Outside) -> Option<String> {
    let now = snapshot(&o.path);
    (now != o.was).then(|| {
        format!(
            "{} outside the board, the target of a planted symlink, changed: a symlink was followed",
            o.path.display()
        )
    })
}
