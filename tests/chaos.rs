//! Under fire: the real binary with 16 workers, a stuck timeout and a config
//! file, and everything a supervisor meets in production thrown at it at
//! once, in a random order that a printed seed replays.
//!
//! What is thrown, in rounds of one to three disturbances:
//! - SIGKILL, SIGSTOP (then SIGCONT, or not: the master must judge the worker
//!   stuck) of random workers;
//! - a crash loop in some slots for a bounded phase (workers that exit at
//!   once), then switched off;
//! - workers, one spawn each, that leave a grandchild behind and exit (one
//!   that sleeps, one that ignores SIGTERM, one that is already a zombie),
//!   close their status descriptor, write a multi-MiB status, binary
//!   statuses, records whose header lies, or ignore SIGTERM;
//! - SIGTTIN and SIGTTOU bursts; SIGHUP with the config file flipping between
//!   valid variants (a rollout, a reload, a scale), broken ones and one whose
//!   command cannot run, sometimes several in a row (an interrupted rollout);
//! - SIGUSR1 storms (150 to 250 signals in a second) with `prefork status`
//!   calls running through them;
//! - garbage in the scoreboard directory: stale files of dead processes,
//!   `.tmp` files, foreign names, symlinks (to a file, a directory, nowhere;
//!   some where the next workers' files will be), a FIFO, a directory, and a
//!   foreign program holding a live file of its own.
//!
//! What is checked, by a sampler thread every 20 ms and after every round,
//! each violation recorded with the seed and the time:
//! - after each round, the pool converges: as many workers as the master's
//!   target (the configured count, moved by SIGTTIN/SIGTTOU), each running,
//!   holding its locked status file, written within the stuck timeout, and
//!   running the configuration last loaded; the time it takes is reported
//!   (p50, p99), and the master's own dump must agree;
//! - no zombie child of the master is seen twice 100 ms apart;
//! - nothing outlives its worker's process group (beyond the graceful
//!   timeout the master gives what a worker leaves behind);
//! - no `status_<pid>` file of a dead process stays longer than one check
//!   interval (plus a margin for load); planted stale files go as fast, and
//!   what must be left alone is (`.tmp` files, foreign names, symlinks and
//!   their targets, a FIFO, a directory, a live foreign file);
//! - the master answers every SIGHUP, every SIGUSR1 (a storm's coalesce, but
//!   it dumps during the storm and again after it) and every `prefork
//!   status` call runs to exit 0;
//! - its resident memory and descriptors do not grow over the run;
//! - at the end SIGTERM: exit 0, no process, no file but the garbage that
//!   must be left alone.
//!
//! `PREFORK_CHAOS_SECS` (default 50) is how long disturbances are thrown;
//! `PREFORK_CHAOS_SEED` replays a run's sequence of disturbances;
//! `PREFORK_CHAOS_REPORT` names a file for the summary as JSON, and
//! `PREFORK_CHAOS_LOG` one for the master's whole log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::harness::{all_procs, Proc, Running, Sandbox};

const WORKERS: usize = 16;
const STUCK_TIMEOUT: Duration = Duration::from_secs(2);
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
const GRACEFUL_TIMEOUT: Duration = Duration::from_millis(1500);
const DEFAULT_SECS: u64 = 50;

/// How often the sampler looks at `/proc` and the board.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// A zombie child of the master may not be seen twice this far apart.
const ZOMBIE_LIMIT: Duration = Duration::from_millis(100);
/// On top of one check interval, for a loaded machine: how long a dead
/// process's status file may stay.
const LOAD_MARGIN: Duration = Duration::from_millis(500);
/// What a dead worker left in its group gets the graceful timeout; this much
/// more is for a loaded machine.
const GROUP_MARGIN: Duration = Duration::from_secs(1);
/// A round's disturbances must have settled within this.
const CONVERGE_LIMIT: Duration = Duration::from_secs(20);
/// The pool counts as converged once its state has held this long.
const STABLE_FOR: Duration = Duration::from_millis(100);
/// How long a SIGHUP, a SIGUSR1 or a `prefork status` call may take to answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
/// Growth of the master's resident memory tolerated over the run.
const RSS_SLACK_KIB: u64 = 1024;
/// Growth of the master's descriptor count tolerated over the run.
const FD_SLACK: usize = 2;

/// Ids above the kernel's largest possible pid (`PID_MAX_LIMIT`): no process
/// will ever have them.
const FAKE_PID_BASE: u64 = 4_194_400;

const HEADER: &str = "prefork master pid=";

/// The one worker program. Its behaviour is chosen at each start: a one-shot
/// mode the test leaves in `ctl/once_<slot>` (taken by exactly one worker,
/// which renames it to `ctl/taken_<pid>`), else a standing mode in
/// `ctl/mode_<slot>`, else it beats: a status every 100 ms.
const WORKER: &str = r#"import hashlib, os, signal, struct, sys, time
ctl = os.path.join(os.environ["CHAOS_DIR"], "ctl")
fd = int(os.environ["PREFORK_STATUS_FD"])
slot = os.environ["PREFORK_WORKER_SLOT"]
tag = f"{sys.argv[1]}/{os.environ.get('CHAOS_ENV', '?')} slot={slot}"
pid = os.getpid()
mode = "normal"
try:
    os.rename(os.path.join(ctl, f"once_{slot}"), os.path.join(ctl, f"taken_{pid}"))
    with open(os.path.join(ctl, f"taken_{pid}")) as f:
        mode = f.read().strip()
except OSError:
    try:
        with open(os.path.join(ctl, f"mode_{slot}")) as f:
            mode = f.read().strip()
    except OSError:
        pass

def record(data):
    return hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data

def beat(period, status):
    n = 0
    while True:
        os.pwrite(fd, record(status(n)), 0)
        n += 1
        time.sleep(period)

if mode == "crash":
    os._exit(1)
if mode.startswith("orphan"):
    child = os.fork()
    if child == 0:
        if mode == "orphan-stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if mode != "orphan-zombie":
            time.sleep(30)
        os._exit(0)
    with open(os.path.join(ctl, f"grandchild_{pid}"), "w") as f:
        f.write(f"{child}\n")
    time.sleep(0.3)
    os._exit(0)
if mode == "closer":
    os.pwrite(fd, record(b"closing my status descriptor"), 0)
    os.close(fd)
    while True:
        time.sleep(1)
if mode == "term-ignorer":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode.startswith("huge"):
    tail = b"x" * int(mode.split()[1])
    beat(0.5, lambda n: f"huge {tag} n={n} ".encode() + tail)
if mode == "binary":
    beat(0.1, lambda n: os.urandom(1 + n % 300) + b"\n\x00\xff\x1b[31m")
if mode == "liar":
    while True:
        os.pwrite(fd, b"\0" * 16 + struct.pack(">I", 0xFFFFFFF0) + b"lies", 0)
        time.sleep(0.1)
beat(0.1, lambda n: f"{tag} {mode} beat {n}".encode())
"#;

/// A program sharing the board: it puts a live file of its own there (as
/// Parallel::Scoreboard does: `.tmp`, lock, rename), holds it, and exits.
const FOREIGN: &str = r#"import fcntl, hashlib, os, struct, sys, time
board, ready, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
name = os.path.join(board, f"status_{os.getpid()}")
fd = os.open(name + ".tmp", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.rename(name + ".tmp", name)
data = b"a foreign program sharing the board"
os.pwrite(fd, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)
open(ready, "w").close()
time.sleep(secs)
"#;

/// The one-shot modes a worker can be given.
const ONCE_MODES: &[&str] = &[
    "orphan",
    "orphan-stubborn",
    "orphan-zombie",
    "closer",
    "huge",
    "binary",
    "liar",
    "term-ignorer",
];

/// Ways to break the config file: each must be refused on SIGHUP.
const BROKEN: &[&str] = &[
    "syntax",
    "zero-workers",
    "too-many-workers",
    "wrong-type",
    "unknown-key",
    "empty-command",
    "bad-duration",
    "backoff-inverted",
    "no-working-directory",
    "tiny-interval",
    "binary",
    "empty",
    "missing",
];

/// splitmix64: tiny, good enough, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// From `lo` to `hi`, both included.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// `k` distinct items of `items` (all of them if fewer).
    fn sample<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        let mut out = Vec::new();
        while out.len() < k && !pool.is_empty() {
            let i = self.below(pool.len());
            out.push(pool.swap_remove(i));
        }
        out
    }
}

fn seed() -> u64 {
    match std::env::var("PREFORK_CHAOS_SEED") {
        Ok(text) => {
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("PREFORK_CHAOS_SEED={text:?} is not a number"))
        }
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            Rng(nanos ^ u64::from(std::process::id()) << 32).next()
        }
    }
}

fn chaos_secs() -> u64 {
    std::env::var("PREFORK_CHAOS_SECS")
        .ok()
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("PREFORK_CHAOS_SECS={s:?} is not a number of seconds"))
        })
        .unwrap_or(DEFAULT_SECS)
}

/// Every violation, with the time it was seen, shared by both threads.
#[derive(Clone)]
struct Findings {
    seed: u64,
    start: Instant,
    list: Arc<Mutex<Vec<(f64, String)>>>,
}

impl Findings {
    fn at(&self, when: Instant) -> f64 {
        when.saturating_duration_since(self.start).as_secs_f64()
    }

    fn violation(&self, what: impl Into<String>) {
        let what = what.into();
        let t = self.at(Instant::now());
        eprintln!("chaos seed={} t={t:.3}s VIOLATION: {what}", self.seed);
        self.list.lock().unwrap().push((t, what));
    }

    fn count(&self) -> usize {
        self.list.lock().unwrap().len()
    }
}

/// What a planted entry of the board must become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A dead process's file: removed within one check interval.
    Removed,
    /// Never touched by readers: there until the test removes it.
    Kept,
    /// Either, as long as nothing breaks (a name that a new worker may take).
    Any,
}

struct Planted {
    name: OsString,
    kind: &'static str,
    at: Instant,
    fate: Fate,
    ino: u64,
    /// Settled: removed as it had to be, found missing, or taken back.
    done: bool,
}

/// A file or directory outside the board that a planted symlink points at:
/// it must stay as it was (or keep not existing).
struct Outside {
    path: PathBuf,
    /// (inode, mtime, content) of a file; `None` for what must not exist;
    /// for a directory, the content is its listing.
    was: Option<(u64, i64, Vec<u8>)>,
}

/// A foreign program's live file: it must stay as long as its owner runs.
struct Foreign {
    pid: i32,
    name: String,
    misses: u32,
    reported: bool,
}

#[derive(Default)]
struct SamplerStats {
    samples: u64,
    longest_gap: Duration,
    zombies_seen: u64,
    longest_zombie: Duration,
    workers_seen: u64,
    groups_drained: u64,
    longest_group_drain: Duration,
    dead_files_seen: u64,
    longest_dead_file: Duration,
    planted_removed: u64,
    longest_planted_removal: Duration,
}

/// What the main thread tells the sampler.
#[derive(Default)]
struct Shared {
    planted: Vec<Planted>,
    outside: Vec<Outside>,
    foreign: Vec<Foreign>,
    /// Workers announced by the log, which the sampler may not have seen
    /// alive (the crash-looping ones live a few milliseconds).
    spawned: Vec<i32>,
    /// Every worker the sampler saw: their groups must be empty at the end.
    all_workers: HashSet<i32>,
    stats: SamplerStats,
}

/// The file name's entry in `dir`, not followed.
fn lstat(dir: &Path, name: &std::ffi::OsStr) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(dir.join(name)).ok()
}

fn is_dead(procs: &HashMap<i32, Proc>, pid: i32) -> bool {
    procs.get(&pid).is_none_or(|p| matches!(p.state, 'Z' | 'X'))
}

/// The sampler: every [`SAMPLE_EVERY`], the zombies, groups and files the
/// master is responsible for.
struct Sampler {
    master: i32,
    board: PathBuf,
    shared: Arc<Mutex<Shared>>,
    findings: Findings,
    zombies: HashMap<i32, Instant>,
    reported_zombies: HashSet<i32>,
    workers: HashSet<i32>,
    dead_groups: HashMap<i32, Instant>,
    reported_groups: HashSet<i32>,
    dead_files: HashMap<OsString, (Instant, u64)>,
    reported_files: HashSet<(OsString, u64)>,
}

impl Sampler {
    fn run(mut self, stop: Arc<AtomicBool>) {
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

    fn zombies(&mut self, procs: &HashMap<i32, Proc>, now: Instant, stats: &mut SamplerStats) {
        let zombies: HashSet<i32> = procs
            .values()
            .filter(|p| p.ppid == self.master && p.state == 'Z')
            .map(|p| p.pid)
            .collect();
        self.zombies.retain(|pid, _| zombies.contains(pid));
        for pid in zombies {
            let first = *self.zombies.entry(pid).or_insert_with(|| {
                stats.zombies_seen += 1;
                now
            });
            let age = now.duration_since(first);
            stats.longest_zombie = stats.longest_zombie.max(age);
            if age > ZOMBIE_LIMIT && self.reported_zombies.insert(pid) {
                self.findings.violation(format!(
                    "zombie pid={pid}, a child of the master, seen twice {} ms apart",
                    age.as_millis()
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
                    if age > GRACEFUL_TIMEOUT + GROUP_MARGIN && self.reported_groups.insert(*pgid) {
                        self.findings.violation(format!(
                            "process(es) {left:?} outlived worker pid={pgid}'s process group by {} ms",
                            age.as_millis()
                        ));
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
            let age = now.duration_since(first.0);
            if age > CHECK_INTERVAL + LOAD_MARGIN && self.reported_files.insert((name.clone(), ino))
            {
                self.findings.violation(format!(
                    "{} of a dead process still on the board {} ms after it was first seen dead",
                    name.to_string_lossy(),
                    age.as_millis()
                ));
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

/// The pid of a `status_<pid>` name (digits only, no `.tmp`).
fn status_pid(name: &std::ffi::OsStr) -> Option<i32> {
    let id = name.as_bytes().strip_prefix(b"status_")?;
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(id).ok()?.parse().ok()
}

fn snapshot(path: &Path) -> Option<(u64, i64, Vec<u8>)> {
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

fn outside_changed(o: &Outside) -> Option<String> {
    let now = snapshot(&o.path);
    (now != o.was).then(|| {
        format!(
            "{} outside the board, the target of a planted symlink, changed: a symlink was followed",
            o.path.display()
        )
    })
}

/// A worker's `/proc` facts that decide whether it is healthy.
fn read_proc_file(pid: i32, what: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/{what}")).ok()
}

fn env_var(pid: i32, key: &str) -> Option<String> {
    let environ = read_proc_file(pid, "environ")?;
    let prefix = format!("{key}=");
    environ.split(|&b| b == 0).find_map(|var| {
        var.strip_prefix(prefix.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

fn last_arg(pid: i32) -> Option<String> {
    let cmdline = read_proc_file(pid, "cmdline")?;
    cmdline
        .split(|&b| b == 0)
        .rfind(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
}

/// (device, inode) of every file with an `flock` on it.
fn flocked() -> HashSet<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("FLOCK") && !l.contains("->"))
        .filter_map(|l| {
            // "1: FLOCK  ADVISORY  WRITE 1234 fd:01:567 0 EOF"
            let id = l.split_whitespace().nth(5)?;
            let mut parts = id.split(':');
            let major = u64::from_str_radix(parts.next()?, 16).ok()?;
            let minor = u64::from_str_radix(parts.next()?, 16).ok()?;
            let ino = parts.next()?.parse().ok()?;
            Some((major, minor, ino))
        })
        .map(|(major, minor, ino)| (encode_dev(major, minor), ino))
        .collect()
}

/// glibc's `makedev`.
fn encode_dev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

fn master_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn master_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A configuration the master can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variant {
    /// The worker's argument, `a` or `b`; [`UNRUNNABLE`] for a command that
    /// does not exist.
    arg: &'static str,
    /// `CHAOS_ENV` in the workers' environment.
    env: &'static str,
    workers: usize,
    kill_ms: u64,
}

const UNRUNNABLE: &str = "(unrunnable)";

const BASE: Variant = Variant {
    arg: "a",
    env: "x",
    workers: WORKERS,
    kill_ms: 500,
};

/// A config file sent with a SIGHUP, and what the master must answer.
#[derive(Debug, Clone)]
enum Sent {
    Valid(Variant),
    Broken(&'static str),
}

impl Sent {
    fn describe(&self) -> String {
        match self {
            Sent::Valid(v) if v.arg == UNRUNNABLE => "a command that cannot run".into(),
            Sent::Valid(v) => format!(
                "variant {}/{} with {} workers, kill_timeout {} ms",
                v.arg, v.env, v.workers, v.kill_ms
            ),
            Sent::Broken(kind) => format!("a broken file ({kind})"),
        }
    }
}

/// The master's acknowledgement of a SIGHUP, from its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ack {
    Rolling,
    Reloaded,
    NotReloaded,
}

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
        }
    }
}

/// A SIGUSR1 storm under way, on threads of its own, while the round's
/// other disturbances are thrown.
struct Storm {
    started: Instant,
    dumps_before: u64,
    sender: std::thread::JoinHandle<u64>,
    prober: std::thread::JoinHandle<Vec<Result<Duration, String>>>,
    stop: Arc<AtomicBool>,
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

/// What `prefork status` calls and storms measured.
#[derive(Default)]
struct Answers {
    status_calls: u64,
    status_longest: Duration,
    storms: u64,
    storm_signals: u64,
    storm_dumps: Vec<u64>,
    dumps_checked: u64,
    hups: u64,
    /// For each crash-looping slot checked: (phase in ms, spawns, bound).
    crash_loops: Vec<(u128, u64, u64)>,
}

struct Chaos<'a> {
    sandbox: &'a Sandbox,
    master: Running,
    rng: Rng,
    findings: Findings,
    shared: Arc<Mutex<Shared>>,
    config: PathBuf,
    worker: String,
    /// The configuration the workers must run, as the master's own logic
    /// has it (mirrored from its log): the current one, and what an aborted
    /// rollout goes back to.
    current: Variant,
    previous: Option<Variant>,
    /// SIGHUPs sent, not yet acknowledged in the log.
    hups: VecDeque<Sent>,
    /// The master's worker target, from its log's resize lines.
    target: usize,
    log_cursor: usize,
    resizes: HashMap<&'static str, u64>,
    spawns: HashMap<usize, u64>,
    spawned_pids: Vec<i32>,
    aborted: u64,
    dump_cursor: usize,
    dumps: u64,
    next_fake: u64,
    next_probe: Arc<AtomicU64>,
    thrown: BTreeMap<String, u64>,
    /// How long each round took to converge, whether the pool was disturbed
    /// at its end, and what was thrown.
    convergence: Vec<(Duration, bool, Vec<&'static str>)>,
    foreign: Vec<Child>,
    answers: Answers,
    rss: Vec<u64>,
    fds: Vec<usize>,
}

impl<'a> Chaos<'a> {
    fn count(&mut self, what: impl Into<String>) {
        *self.thrown.entry(what.into()).or_default() += 1;
    }

    fn ctl(&self, name: &str) -> PathBuf {
        self.sandbox.path().join("ctl").join(name)
    }

    fn config_text(&self, v: Variant, tweak: Option<(&str, &str)>) -> String {
        config_text(self.sandbox, &self.worker, v, tweak)
    }

    /// Replaces the config file at once (never half-written).
    fn write_config(&self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                let tmp = self.config.with_extension("toml.new");
                std::fs::write(&tmp, bytes).expect("write the config");
                std::fs::rename(&tmp, &self.config).expect("replace the config");
            }
            None => {
                let _ = std::fs::remove_file(&self.config);
            }
        }
    }

    fn broken_config(&mut self, kind: &'static str) -> Option<Vec<u8>> {
        let v = self.current;
        let tweak = |key, value| Some((key, value));
        let text = match kind {
            "syntax" => self.config_text(v, tweak("command", "[\"python3\"")),
            "zero-workers" => self.config_text(v, tweak("workers", "0")),
            "too-many-workers" => self.config_text(v, tweak("workers", "100000")),
            "wrong-type" => self.config_text(v, tweak("workers", "\"many\"")),
            "unknown-key" => self.config_text(v, tweak("wrkers", "3")),
            "empty-command" => self.config_text(v, tweak("command", "[]")),
            "bad-duration" => self.config_text(v, tweak("timeout", "\"5 parsecs\"")),
            "backoff-inverted" => self.config_text(v, tweak("backoff_initial", "\"5s\"")),
            "no-working-directory" => {
                let dir = format!("\"{}\"", self.sandbox.join("no-such-dir"));
                self.config_text(v, Some(("working_directory", dir.as_str())))
            }
            "tiny-interval" => self.config_text(v, tweak("check_interval", "\"1ms\"")),
            "binary" => {
                let mut junk = vec![0xff, 0xfe];
                let n = self.rng.between(1, 400) as usize;
                junk.extend(self.rng.bytes(n));
                return Some(junk);
            }
            "empty" => String::new(),
            "missing" => return None,
            other => unreachable!("{other}"),
        };
        Some(text.into_bytes())
    }

    // ----- the master's log -----------------------------------------------

    /// Reads the master's log lines that are new since the last call.
    fn scan_log(&mut self) {
        let log = self.master.stderr();
        let Some(end) = log[self.log_cursor..].rfind('\n') else {
            return;
        };
        let end = self.log_cursor + end + 1;
        let fresh = log[self.log_cursor..end].to_string();
        self.log_cursor = end;
        for line in fresh.lines() {
            self.log_line(line);
        }
    }

    fn log_line(&mut self, line: &str) {
        if line.contains("panicked") {
            self.findings
                .violation(format!("the master panicked: {line}"));
        }
        for alarm in [
            "waitpid failed",
            "cannot clean the scoreboard",
            "cannot write the board",
        ] {
            if line.contains(alarm) {
                self.findings
                    .violation(format!("the master logged: {line}"));
            }
        }
        if let Some(rest) = after(line, "spawned worker pid=") {
            let pid = leading_number(rest);
            let slot = after(rest, "slot=").and_then(leading_number);
            if let (Some(pid), Some(slot)) = (pid, slot) {
                *self.spawns.entry(slot as usize).or_default() += 1;
                self.spawned_pids.push(pid as i32);
                self.shared.lock().unwrap().spawned.push(pid as i32);
            }
            return;
        }
        for why in ["SIGTTIN", "SIGTTOU", "SIGHUP"] {
            if let Some((from, to)) = resize_line(line, why) {
                self.resized(why, from, to, line);
                return;
            }
        }
        let ack = if line.contains("SIGHUP: configuration not reloaded") {
            Some(Ack::NotReloaded)
        } else if line.contains("SIGHUP: rolling ") {
            Some(Ack::Rolling)
        } else if line.contains("SIGHUP: configuration reloaded") {
            Some(Ack::Reloaded)
        } else {
            None
        };
        if let Some(ack) = ack {
            self.acknowledged(ack);
        } else if line.contains("rolling restart complete") {
            self.previous = None;
        } else if line.contains("rolling restart aborted") {
            self.aborted += 1;
            if let Some(previous) = self.previous.take() {
                // Only the command, environment and directory go back.
                self.current = Variant {
                    workers: self.current.workers,
                    kill_ms: self.current.kill_ms,
                    ..previous
                };
            }
        }
    }

    fn resized(&mut self, why: &'static str, from: usize, to: usize, line: &str) {
        *self.resizes.entry(why).or_default() += 1;
        let consistent = from == self.target
            && match why {
                "SIGTTIN" => to == from + 1,
                "SIGTTOU" => to + 1 == from && to >= 1,
                _ => to == self.current.workers,
            };
        if !consistent {
            self.findings.violation(format!(
                "resize inconsistent with the target {} (config workers {}): {line}",
                self.target, self.current.workers
            ));
        }
        self.target = to;
    }

    /// Mirrors what the master does with a SIGHUP it acknowledged.
    fn acknowledged(&mut self, ack: Ack) {
        self.answers.hups += 1;
        let Some(sent) = self.hups.pop_front() else {
            self.findings.violation(format!(
                "a SIGHUP acknowledged ({ack:?}) that was never sent"
            ));
            return;
        };
        let expected = match &sent {
            Sent::Broken(_) => Ack::NotReloaded,
            Sent::Valid(v) if v.arg != self.current.arg || v.env != self.current.env => {
                Ack::Rolling
            }
            Sent::Valid(_) => Ack::Reloaded,
        };
        if ack != expected {
            self.findings.violation(format!(
                "SIGHUP with {} over {}/{} answered {ack:?}, expected {expected:?}",
                sent.describe(),
                self.current.arg,
                self.current.env
            ));
        }
        if let Sent::Valid(v) = sent {
            if ack == Ack::Rolling && self.previous.is_none() {
                self.previous = Some(self.current);
            }
            self.current = v;
        }
    }

    // ----- the master's dumps ----------------------------------------------

    /// Counts the dumps printed so far, reading only what is new.
    fn count_dumps(&mut self) -> (u64, String) {
        let out = self.master.stdout();
        if let Some(end) = out[self.dump_cursor..].rfind('\n') {
            let end = self.dump_cursor + end + 1;
            self.dumps += out[self.dump_cursor..end].matches(HEADER).count() as u64;
            self.dump_cursor = end;
        }
        (self.dumps, out)
    }

    /// SIGUSR1, and the dump that answers it (complete), or a violation.
    fn sync_dump(&mut self, why: &str) -> Option<String> {
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

    fn signal_master(&mut self, signal: Signal) -> bool {
        match kill(Pid::from_raw(self.master.pid()), signal) {
            Ok(()) if self.master.try_exit().is_none() => true,
            _ => {
                self.findings
                    .violation(format!("the master is gone (sending {signal})"));
                false
            }
        }
    }

    // ----- the pool ---------------------------------------------------------

    fn workers(&self) -> Vec<Proc> {
        let master = self.master.pid();
        all_procs()
            .into_iter()
            .filter(|p| p.ppid == master && p.pgid == p.pid && p.state != 'Z')
            .collect()
    }

    fn slot_workers(&self) -> Vec<(i32, usize)> {
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

    /// Waits until the pool has converged (held for [`STABLE_FOR`]); returns
    /// when it did, and whether it had to (the first look found it
    /// disturbed), or `None` after [`CONVERGE_LIMIT`] (a violation).
    fn converge(&mut self, why: &str) -> Option<(Instant, bool)> {
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
    fn check_dump(&mut self) {
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
                self.findings
                    .violation(format!("the dump says {header:?}, /proc says {expected}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn measure(&mut self) {
        let pid = self.master.pid();
        self.rss.push(master_rss_kib(pid));
        self.fds.push(master_fds(pid));
    }

    // ----- rounds -------------------------------------------------------------

    fn pick_action(&mut self) -> Action {
        let total: u32 = Action::WEIGHTED.iter().map(|(_, w)| w).sum();
        let mut roll = self.rng.below(total as usize) as u32;
        for &(action, weight) in Action::WEIGHTED {
            if roll < weight {
                return action;
            }
            roll -= weight;
        }
        unreachable!()
    }

    fn round(&mut self) {
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

    fn scale_burst(&mut self, action: Action) {
        // Keep the target near the configured count.
        let configured = self.current.workers;
        let signal = match action {
            _ if self.target >= configured + 6 => Signal::SIGTTOU,
            _ if self.target + 6 <= configured => Signal::SIGTTIN,
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

    /// One to three config files, each with its SIGHUP, each acknowledged
    /// before the next: valid variants (a rollout, a reload, a scale),
    /// broken files, and a command that cannot run.
    fn hup_chain(&mut self) {
        let n = self.rng.between(1, 3);
        for i in 0..n {
            if i > 0 {
                std::thread::sleep(self.rng.ms(0, 300));
            }
            let roll = self.rng.below(100);
            let (sent, bytes) = if roll < 55 {
                let v = Variant {
                    arg: self.rng.pick(&["a", "b"]),
                    env: self.rng.pick(&["x", "y"]),
                    workers: if self.rng.chance(0.15) { 12 } else { WORKERS },
                    kill_ms: self.rng.pick(&[400, 500]),
                };
                self.count("hup-valid");
                (Sent::Valid(v), Some(self.config_text(v, None).into_bytes()))
            } else if roll < 90 {
                let kind = self.rng.pick(BROKEN);
                self.count(format!("hup-broken-{kind}"));
                (Sent::Broken(kind), self.broken_config(kind))
            } else {
                let v = Variant {
                    arg: UNRUNNABLE,
                    ..self.current
                };
                self.count("hup-unrunnable");
                (Sent::Valid(v), Some(self.config_text(v, None).into_bytes()))
            };
            if !self.send_hup(sent, bytes) {
                return;
            }
        }
    }

    /// Writes the config file (or removes it), sends SIGHUP and waits for
    /// the master's answer in its log (and for an aborted rollout, when the
    /// command cannot run). False when the master is gone.
    fn send_hup(&mut self, sent: Sent, bytes: Option<Vec<u8>>) -> bool {
        self.write_config(bytes.as_deref());
        self.scan_log();
        let before = self.answers.hups;
        let aborted = self.aborted;
        self.hups.push_back(sent.clone());
        if !self.signal_master(Signal::SIGHUP) {
            return false;
        }
        let deadline = Instant::now() + ANSWER_LIMIT;
        while self.answers.hups == before {
            if Instant::now() > deadline {
                self.findings.violation(format!(
                    "SIGHUP with {} not answered within 5 s",
                    sent.describe()
                ));
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
            self.scan_log();
        }
        if matches!(sent, Sent::Valid(v) if v.arg == UNRUNNABLE) {
            let deadline = Instant::now() + ANSWER_LIMIT;
            while self.aborted == aborted && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                self.scan_log();
            }
            if self.aborted == aborted {
                self.findings
                    .violation("a rollout to a command that cannot run was not aborted");
            }
        }
        true
    }

    /// 150 to 250 SIGUSR1 in about a second, with `prefork status` calls
    /// running through it, both on threads of their own: the round goes on.
    fn start_storm(&mut self) -> Storm {
        let signals = self.rng.between(150, 250) as u32;
        let (dumps_before, _) = self.count_dumps();
        let stop = Arc::new(AtomicBool::new(false));
        let master = Pid::from_raw(self.master.pid());
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            let spacing = Duration::from_secs(1) / signals;
            let mut sent = 0;
            for i in 1..=signals {
                if kill(master, Signal::SIGUSR1).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(
                    (started + spacing * i).saturating_duration_since(Instant::now()),
                );
            }
            sent
        });
        let prober = {
            let stop = Arc::clone(&stop);
            let dir = self.sandbox.path().to_path_buf();
            let board = self.sandbox.board();
            let counter = Arc::clone(&self.next_probe);
            std::thread::spawn(move || {
                let mut results = Vec::new();
                // Until the storm's end (and at least three calls), or a
                // deadline should the test fail before that end.
                let deadline = started + ANSWER_LIMIT;
                while (!stop.load(Ordering::Relaxed) || results.len() < 3)
                    && Instant::now() < deadline
                {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    results.push(status_call(&dir, &board, n, n as usize));
                    std::thread::sleep(Duration::from_millis(30));
                }
                results
            })
        };
        Storm {
            started,
            dumps_before,
            sender,
            prober,
            stop,
        }
    }

    /// The storm's end: the master dumped during it, answers after it, and
    /// every `prefork status` call exited 0 in time.
    fn end_storm(&mut self, storm: Storm) {
        let sent = storm.sender.join().expect("the SIGUSR1 sender");
        let (during, _) = self.count_dumps();
        storm.stop.store(true, Ordering::Relaxed);
        let results = storm.prober.join().expect("the status prober");
        self.answers.storms += 1;
        self.answers.storm_signals += sent;
        *self.thrown.entry("usr1-signals".into()).or_default() += sent;
        let answered = self.sync_dump("after a SIGUSR1 storm").is_some();
        let (after, _) = self.count_dumps();
        self.answers.storm_dumps.push(after - storm.dumps_before);
        if answered && during == storm.dumps_before {
            // Not one dump while 150+ requests arrived (the one after the
            // storm was asked for separately).
            self.findings.violation(format!(
                "no dump during a storm of {sent} SIGUSR1 ({} ms)",
                storm.started.elapsed().as_millis()
            ));
        }
        for result in results {
            self.count("status-call");
            self.status_answered(result);
        }
    }

    fn status_answered(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(took) => {
                self.answers.status_calls += 1;
                self.answers.status_longest = self.answers.status_longest.max(took);
            }
            Err(e) => self.findings.violation(format!("prefork status: {e}")),
        }
    }

    // ----- garbage ------------------------------------------------------------

    fn fake_pid(&mut self) -> u64 {
        self.next_fake += 1;
        FAKE_PID_BASE + self.next_fake
    }

    fn plant(&mut self, name: OsString, kind: &'static str, fate: Fate) {
        let Some(meta) = lstat(&self.sandbox.board(), &name) else {
            return; // a worker took the name already: nothing to expect
        };
        self.count(format!("garbage-{kind}"));
        self.shared.lock().unwrap().planted.push(Planted {
            name,
            kind,
            at: Instant::now(),
            fate,
            ino: meta.ino(),
            done: false,
        });
    }

    fn outside(&mut self, path: PathBuf) {
        let was = snapshot(&path);
        self.shared
            .lock()
            .unwrap()
            .outside
            .push(Outside { path, was });
    }

    fn garbage(&mut self) {
        let board = self.sandbox.board();
        let outside = self.sandbox.path().join("outside");
        let n = self.rng.between(1, 4);
        for _ in 0..n {
            let id = self.fake_pid();
            let kind = self.rng.below(15);
            let name = format!("status_{id}");
            let path = board.join(&name);
            match kind {
                0 => {
                    let record = prefork::scoreboard::record::encode(b"a stale worker");
                    std::fs::write(&path, record).unwrap();
                    self.plant(name.into(), "stale-record", Fate::Removed);
                }
                1 => {
                    let len = self.rng.between(0, 200) as usize;
                    std::fs::write(&path, self.rng.bytes(len)).unwrap();
                    self.plant(name.into(), "stale-junk", Fate::Removed);
                }
                2 => {
                    let mut lie = vec![0u8; 16];
                    lie.extend(u32::MAX.to_be_bytes());
                    lie.extend(b"short");
                    std::fs::write(&path, lie).unwrap();
                    self.plant(name.into(), "stale-lying-header", Fate::Removed);
                }
                3 => {
                    // A dead worker of ours: a stale file after a crash.
                    let dead: Vec<i32> = self
                        .spawned_pids
                        .iter()
                        .copied()
                        .filter(|&p| crate::harness::proc_stat(p).is_none())
                        .collect();
                    if dead.is_empty() {
                        continue;
                    }
                    let pid = self.rng.pick(&dead);
                    let name = format!("status_{pid}");
                    let record = prefork::scoreboard::record::encode(b"before the crash");
                    std::fs::write(board.join(&name), record).unwrap();
                    self.plant(name.into(), "stale-dead-worker", Fate::Removed);
                }
                4 => {
                    let name = format!("status_worker-{id}");
                    std::fs::write(board.join(&name), b"").unwrap();
                    self.plant(name.into(), "stale-named", Fate::Removed);
                }
                5 => {
                    let name = format!("{name}.tmp");
                    let record = prefork::scoreboard::record::encode(b"being written");
                    std::fs::write(board.join(&name), record).unwrap();
                    self.plant(name.into(), "tmp", Fate::Kept);
                }
                6 => {
                    let name = match self.rng.below(4) {
                        0 => format!("garbage_{id}"),
                        1 => format!(".hidden_{id}"),
                        2 => format!("STATUS_{id}"),
                        _ => format!("status_w{id}.tmp"),
                    };
                    let len = self.rng.between(0, 64) as usize;
                    std::fs::write(board.join(&name), self.rng.bytes(len)).unwrap();
                    self.plant(name.into(), "foreign-name", Fate::Kept);
                }
                7 | 8 => {
                    let target = outside.join(format!("target_{id}"));
                    std::fs::write(&target, b"outside the board: never touched").unwrap();
                    let link = if kind == 7 {
                        name
                    } else {
                        format!("{name}.tmp")
                    };
                    symlink(&target, board.join(&link)).unwrap();
                    self.plant(link.into(), "symlink-to-file", Fate::Kept);
                    self.outside(target);
                }
                9 => {
                    let target = outside.join(format!("missing_{id}"));
                    symlink(&target, &path).unwrap();
                    self.plant(name.into(), "symlink-dangling", Fate::Kept);
                    self.outside(target);
                }
                10 => {
                    let target = outside.join(format!("dir_{id}"));
                    std::fs::create_dir(&target).unwrap();
                    std::fs::write(target.join("inside"), b"x").unwrap();
                    symlink(&target, &path).unwrap();
                    self.plant(name.into(), "symlink-to-dir", Fate::Kept);
                    self.outside(target);
                }
                11 => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .unwrap();
                    self.plant(name.into(), "fifo", Fate::Kept);
                }
                12 => {
                    std::fs::create_dir(&path).unwrap();
                    std::fs::write(path.join("inside"), b"x").unwrap();
                    self.plant(name.into(), "directory", Fate::Kept);
                }
                13 => {
                    // Where the next workers' files will be: their
                    // registration replaces these, and never follows them.
                    let last = self.spawned_pids.iter().copied().max().unwrap_or(1000);
                    let target = outside.join(format!("ambushed_{id}"));
                    std::fs::write(&target, b"outside the board: never touched").unwrap();
                    for next in last + 1..last + 4 {
                        for name in [format!("status_{next}"), format!("status_{next}.tmp")] {
                            if symlink(&target, board.join(&name)).is_ok() {
                                self.plant(name.into(), "symlink-ambush", Fate::Any);
                            }
                        }
                    }
                    self.outside(target);
                }
                _ => {
                    let mut name = b"status_\xff\xfe".to_vec();
                    name.extend(id.to_string().bytes());
                    let name = OsString::from_vec(name);
                    std::fs::write(board.join(&name), b"").unwrap();
                    self.plant(name, "non-utf8-name", Fate::Any);
                }
            }
        }
        // Take some back, so the directory does not only grow.
        if self.rng.chance(0.3) {
            let mut shared = self.shared.lock().unwrap();
            let candidates: Vec<usize> = (0..shared.planted.len())
                .filter(|&i| !shared.planted[i].done && shared.planted[i].fate != Fate::Removed)
                .collect();
            let k = self.rng.between(1, 3) as usize;
            for i in self.rng.sample(&candidates, k) {
                let p = &mut shared.planted[i];
                p.done = true;
                let path = board.join(&p.name);
                if lstat(&board, &p.name).is_some_and(|m| m.is_dir()) {
                    let _ = std::fs::remove_dir_all(&path);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    fn start_foreign(&mut self) {
        let id = self.fake_pid();
        let ready = self.sandbox.path().join(format!("foreign_ready_{id}"));
        let secs = self.rng.between(300, 2500) as f64 / 1000.0;
        let mut cmd = Command::new("python3");
        cmd.args(["-S", "-c", FOREIGN])
            .arg(self.sandbox.board())
            .arg(&ready)
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = match spawn_helper(&mut cmd) {
            Ok(child) => child,
            Err(e) => panic!("cannot start a foreign program: {e}"),
        };
        let pid = child.id() as i32;
        self.foreign.push(child);
        self.count("foreign-holder");
        let deadline = Instant::now() + ANSWER_LIMIT;
        while !ready.exists() {
            if Instant::now() > deadline {
                return; // a slow machine: nothing to check for this one
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.lock().unwrap().foreign.push(Foreign {
            pid,
            name: format!("status_{pid}"),
            misses: 0,
            reported: false,
        });
    }

    /// Reaps the foreign programs that are done (all of them with `all`).
    fn reap_foreign(&mut self, all: bool) {
        self.foreign.retain_mut(|child| {
            if all {
                return child.wait().is_err();
            }
            !matches!(child.try_wait(), Ok(Some(_)))
        });
    }
}

/// The config file of variant `v`, with one key changed (or added) by `tweak`.
fn config_text(sandbox: &Sandbox, worker: &str, v: Variant, tweak: Option<(&str, &str)>) -> String {
    let board = sandbox.board();
    let command = if v.arg == UNRUNNABLE {
        format!("[\"{}\"]", sandbox.join("no-such-program"))
    } else {
        format!("[\"python3\", \"-S\", \"{}\", \"{}\"]", worker, v.arg)
    };
    let mut keys: Vec<(String, String)> = vec![
        ("command".into(), command),
        ("workers".into(), v.workers.to_string()),
        ("scoreboard_dir".into(), format!("\"{}\"", board.display())),
        (
            "timeout".into(),
            format!("\"{}ms\"", STUCK_TIMEOUT.as_millis()),
        ),
        ("kill_timeout".into(), format!("\"{}ms\"", v.kill_ms)),
        (
            "check_interval".into(),
            format!("\"{}ms\"", CHECK_INTERVAL.as_millis()),
        ),
        (
            "graceful_timeout".into(),
            format!("\"{}ms\"", GRACEFUL_TIMEOUT.as_millis()),
        ),
        ("min_uptime".into(), "\"500ms\"".into()),
        ("backoff_initial".into(), "\"100ms\"".into()),
        ("backoff_max".into(), "\"1s\"".into()),
    ];
    if let Some((key, value)) = tweak {
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => keys.push((key.to_string(), value.to_string())),
        }
    }
    let mut text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    text += &format!(
        "\n[env]\nCHAOS_DIR = \"{}\"\nCHAOS_ENV = \"{}\"\n",
        sandbox.path().display(),
        v.env
    );
    text
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

/// Spawns a helper of the test's that dies with the test (and does not
/// fork while another test sets up its pipes).
fn spawn_helper(cmd: &mut Command) -> std::io::Result<Child> {
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

/// One `prefork status` call, which must exit 0 within [`ANSWER_LIMIT`];
/// returns how long it took.
fn status_call(dir: &Path, board: &Path, n: u64, flavour: usize) -> Result<Duration, String> {
    let out_path = dir.join(format!("probe_{n}.out"));
    let err_path = dir.join(format!("probe_{n}.err"));
    let files = std::fs::File::create(&out_path).and_then(|out| {
        let err = std::fs::File::create(&err_path)?;
        Ok((out, err))
    });
    let (out, err) = files.map_err(|e| format!("cannot create its output files: {e}"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prefork"));
    cmd.arg("status").arg("-d").arg(board);
    let json = flavour % 3 == 1;
    match flavour % 3 {
        1 => drop(cmd.arg("--json")),
        2 => drop(cmd.args(["--min-workers", "1"])),
        _ => {}
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let started = Instant::now();
    let mut child = spawn_helper(&mut cmd).map_err(|e| format!("cannot start it: {e}"))?;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > ANSWER_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", ANSWER_LIMIT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    };
    let took = started.elapsed();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    if !status.success() {
        return Err(format!("{status}: {}", stderr.trim()));
    }
    if stderr.contains("panicked") {
        return Err(format!("panicked: {}", stderr.trim()));
    }
    if json {
        match serde_json::from_slice::<serde_json::Value>(&stdout) {
            Ok(serde_json::Value::Array(_)) => {}
            _ => return Err("--json printed no JSON array".into()),
        }
    }
    Ok(took)
}

fn after<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    line.find(key).map(|i| &line[i + key.len()..])
}

fn leading_number(text: &str) -> Option<u64> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

/// `WHY: FROM -> TO worker(s)`.
fn resize_line(line: &str, why: &str) -> Option<(usize, usize)> {
    let rest = after(line, &format!("{why}: "))?;
    let (from, to) = rest.split_once(" -> ")?;
    let to = to.strip_suffix(" worker(s)")?;
    Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
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

impl Chaos<'_> {
    /// The end of the disturbances: modes off, back to the base config,
    /// every foreign program done; the last convergence.
    fn wind_down(&mut self) -> Option<Duration> {
        for entry in std::fs::read_dir(self.sandbox.path().join("ctl")).expect("list ctl") {
            let name = entry.expect("a ctl entry").file_name();
            let name = name.to_string_lossy();
            if name.starts_with("mode_") || name.starts_with("once_") {
                let _ = std::fs::remove_file(self.ctl(&name));
            }
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
    fn stop(&mut self) -> Option<ExitStatus> {
        if !self.signal_master(Signal::SIGTERM) {
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
    fn check_nothing_left(&self) {
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

/// The summary in a few lines, for people.
fn human_summary(s: &serde_json::Value) -> String {
    let thrown: Vec<String> = s["thrown"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={v}")).collect())
        .unwrap_or_default();
    let conv = |v: &serde_json::Value| {
        format!(
            "{} rounds, p50 {} ms, p99 {} ms, max {} ms",
            v["rounds"], v["p50_ms"], v["p99_ms"], v["max_ms"]
        )
    };
    let (c, m, z) = (&s["convergence"], &s["master"], &s["sampler"]);
    let violations: Vec<String> = s["violations"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    format!(
                        "    t={:.3}s {}",
                        v["t_secs"].as_f64().unwrap_or(0.0),
                        v["what"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "chaos summary: seed={} thrown for {:.1} s in {} rounds ({:.1} s in all)\n\
         \x20 thrown: {}\n\
         \x20 convergence: all {}; disturbed {}; start {} ms, final {} ms\n\
         \x20 master: RSS {} -> {} KiB (max {}), descriptors {} -> {} (max {}); {} spawns, \
         {} SIGHUPs answered, {} dumps ({} storms), {} status calls (longest {} ms)\n\
         \x20 sampler: {} samples; zombies {} (longest {} ms), groups drained {} (longest {} ms), \
         dead files {} (longest {} ms), planted removed {} (longest {} ms)\n\
         \x20 violations: {}{}",
        s["seed"],
        s["thrown_secs"].as_f64().unwrap_or(0.0),
        s["rounds"],
        s["total_secs"].as_f64().unwrap_or(0.0),
        thrown.join(" "),
        conv(&c["all_rounds"]),
        conv(&c["disturbed_rounds"]),
        c["startup_ms"],
        c["final_ms"],
        m["rss_kib"]["start"],
        m["rss_kib"]["end"],
        m["rss_kib"]["max"],
        m["fds"]["start"],
        m["fds"]["end"],
        m["fds"]["max"],
        m["spawns"],
        m["hups_answered"],
        m["dumps"],
        m["storms"],
        m["status_calls"],
        m["status_longest_ms"],
        z["samples"],
        z["zombies_seen"],
        z["longest_zombie_ms"],
        z["groups_drained"],
        z["longest_group_drain_ms"],
        z["dead_files_seen"],
        z["longest_dead_file_ms"],
        z["planted_removed"],
        z["longest_planted_removal_ms"],
        violations.len(),
        if violations.is_empty() {
            String::new()
        } else {
            format!("\n{}", violations.join("\n"))
        },
    )
}

/// Sets its flag when dropped, on a panic too.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn the_master_holds_its_invariants_under_fire() {
    let seed = seed();
    let secs = chaos_secs();
    println!(
        "chaos: seed={seed} for {secs} s (replay: PREFORK_CHAOS_SEED={seed} PREFORK_CHAOS_SECS={secs})"
    );
    let sandbox = Sandbox::new();
    for dir in ["ctl", "outside", "board"] {
        std::fs::create_dir(sandbox.path().join(dir)).expect("create a sandbox directory");
    }
    let worker = sandbox.join("chaos_worker.py");
    std::fs::write(&worker, WORKER).expect("write the worker");
    let config = sandbox.path().join("prefork.toml");
    std::fs::write(&config, config_text(&sandbox, &worker, BASE, None)).expect("the config");
    let findings = Findings {
        seed,
        start: Instant::now(),
        list: Arc::default(),
    };
    let master = Running::start(
        &mut sandbox.prefork_on_default_board(&["-c", config.to_str().expect("UTF-8 path")]),
    );
    let shared = Arc::new(Mutex::new(Shared::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = Sampler {
        master: master.pid(),
        board: sandbox.board(),
        shared: Arc::clone(&shared),
        findings: findings.clone(),
        zombies: HashMap::new(),
        reported_zombies: HashSet::new(),
        workers: HashSet::new(),
        dead_groups: HashMap::new(),
        reported_groups: HashSet::new(),
        dead_files: HashMap::new(),
        reported_files: HashSet::new(),
    };
    let sampler = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || sampler.run(stop)
    });
    // Should the test fail half-way, the sampler stops all the same.
    let _stop_sampler = StopOnDrop(Arc::clone(&stop));
    let mut chaos = Chaos {
        sandbox: &sandbox,
        master,
        rng: Rng(seed),
        findings: findings.clone(),
        shared: Arc::clone(&shared),
        config,
        worker,
        current: BASE,
        previous: None,
        hups: VecDeque::new(),
        target: WORKERS,
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
    };

    let startup = chaos
        .converge("the start")
        .map(|(at, _)| at.duration_since(findings.start));
    chaos.measure();
    let chaos_started = Instant::now();
    let until = chaos_started + Duration::from_secs(secs);
    let mut rounds = 0u64;
    // A master that is gone, or a flood of violations, ends the run early.
    while Instant::now() < until && chaos.master.try_exit().is_none() && findings.count() < 100 {
        chaos.round();
        rounds += 1;
    }
    let thrown_for = chaos_started.elapsed();
    let last_convergence = chaos.wind_down();
    chaos.measure();
    let status = chaos.stop();
    // A few more samples: the shutdown's zombies and groups.
    std::thread::sleep(SAMPLE_EVERY * 5);
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler thread");
    match status {
        Some(status) if status.success() => {}
        other => findings.violation(format!("the master's exit after SIGTERM: {other:?}")),
    }
    chaos.check_nothing_left();
    if let Ok(path) = std::env::var("PREFORK_CHAOS_LOG") {
        let _ = std::fs::write(path, chaos.master.stderr());
    }

    // Memory and descriptors: the start (the first convergence) against the
    // end (the last one, with the same configuration).
    let (rss_start, rss_end) = (chaos.rss[0], *chaos.rss.last().expect("measured"));
    let (fds_start, fds_end) = (chaos.fds[0], *chaos.fds.last().expect("measured"));
    let rss_max = chaos.rss.iter().copied().max().unwrap_or(0);
    let fds_max = chaos.fds.iter().copied().max().unwrap_or(0);
    if rss_end > rss_start + RSS_SLACK_KIB {
        findings.violation(format!(
            "the master's resident memory grew from {rss_start} KiB to {rss_end} KiB"
        ));
    }
    if fds_end > fds_start + FD_SLACK {
        findings.violation(format!(
            "the master's descriptors grew from {fds_start} to {fds_end}"
        ));
    }

    let stats_of = |mut v: Vec<Duration>| {
        v.sort();
        serde_json::json!({
            "rounds": v.len(),
            "p50_ms": ms(percentile(&v, 0.5)),
            "p99_ms": ms(percentile(&v, 0.99)),
            "max_ms": ms(v.last().copied().unwrap_or_default()),
        })
    };
    let all = stats_of(chaos.convergence.iter().map(|c| c.0).collect());
    let disturbed = stats_of(
        chaos
            .convergence
            .iter()
            .filter(|c| c.1)
            .map(|c| c.0)
            .collect(),
    );
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (d, _, kinds) in &chaos.convergence {
        let unique: HashSet<&&str> = kinds.iter().collect();
        for kind in unique {
            by_kind.entry(kind).or_default().push(*d);
        }
    }
    let per_kind: BTreeMap<&str, serde_json::Value> = by_kind
        .into_iter()
        .map(|(kind, v)| (kind, stats_of(v)))
        .collect();
    let s = &shared.lock().unwrap().stats;
    let violations = findings.list.lock().unwrap().clone();
    let summary = serde_json::json!({
        "seed": seed,
        "requested_secs": secs,
        "thrown_secs": thrown_for.as_secs_f64(),
        "total_secs": findings.start.elapsed().as_secs_f64(),
        "rounds": rounds,
        "thrown": chaos.thrown,
        "violations": violations.iter().map(|(t, v)| serde_json::json!({"t_secs": t, "what": v})).collect::<Vec<_>>(),
        "convergence": {
            "all_rounds": all,
            "disturbed_rounds": disturbed,
            "startup_ms": startup.map(ms),
            "final_ms": last_convergence.map(ms),
            "by_kind": per_kind,
        },
        "master": {
            "rss_kib": {"start": rss_start, "end": rss_end, "max": rss_max, "per_round": chaos.rss},
            "fds": {"start": fds_start, "end": fds_end, "max": fds_max},
            "spawns": chaos.spawns.values().sum::<u64>(),
            "hups_answered": chaos.answers.hups,
            "rollouts_aborted": chaos.aborted,
            "dumps": chaos.dumps,
            "dumps_checked": chaos.answers.dumps_checked,
            "storms": chaos.answers.storms,
            "storm_signals": chaos.answers.storm_signals,
            "dumps_per_storm": chaos.answers.storm_dumps,
            "crash_loops_checked": chaos.answers.crash_loops.len(),
            "crash_loop_spawns_most": chaos.answers.crash_loops.iter().map(|c| c.1).max(),
            "crash_loops_ms_spawns_bound": chaos.answers.crash_loops,
            "status_calls": chaos.answers.status_calls,
            "status_longest_ms": ms(chaos.answers.status_longest),
            "log_bytes": chaos.master.stderr().len(),
        },
        "sampler": {
            "samples": s.samples,
            "longest_gap_ms": ms(s.longest_gap),
            "workers_seen": s.workers_seen,
            "zombies_seen": s.zombies_seen,
            "longest_zombie_ms": ms(s.longest_zombie),
            "groups_drained": s.groups_drained,
            "longest_group_drain_ms": ms(s.longest_group_drain),
            "dead_files_seen": s.dead_files_seen,
            "longest_dead_file_ms": ms(s.longest_dead_file),
            "planted_removed": s.planted_removed,
            "longest_planted_removal_ms": ms(s.longest_planted_removal),
        },
    });
    println!("{}", human_summary(&summary));
    let pretty = serde_json::to_string_pretty(&summary).expect("JSON of plain values");
    println!("chaos summary as JSON:\n{pretty}");
    if let Ok(path) = std::env::var("PREFORK_CHAOS_REPORT") {
        std::fs::write(&path, format!("{pretty}\n")).expect("write PREFORK_CHAOS_REPORT");
    }
    if !violations.is_empty() {
        let list: Vec<String> = violations
            .iter()
            .map(|(t, v)| format!("  seed={seed} t={t:.3}s: {v}"))
            .collect();
        let log = chaos.master.stderr();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{} violation(s) under fire (replay: PREFORK_CHAOS_SEED={seed} PREFORK_CHAOS_SECS={secs}):\n{}\n\
             --- the master's last log lines ---\n{}",
            violations.len(),
            list.join("\n"),
            tail.join("\n")
        );
    }
}

// ----- Found under fire: each bug the chaos run found, pinned down -----------

/// A `prefork status` run: its exit code must be 0.
fn status_of(sandbox: &Sandbox) {
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .arg("status")
        .arg("-d")
        .arg(sandbox.board())
        .stdin(Stdio::null())
        .output()
        .expect("run prefork status");
    assert!(out.status.success(), "{out:?}");
}

/// Found under fire: a worker that closed its status descriptor (releasing
/// its lock) had its file removed by the next reader, which takes it for a
/// dead worker's; the master then lost sight of the worker and never judged
/// it stuck, though it never wrote again.
#[test]
fn a_worker_whose_file_a_reader_removed_is_still_judged_stuck() {
    let sandbox = Sandbox::new();
    let closer = sandbox.script(
        "closer.sh",
        r#"exec 3>&-
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let options = [
        "-w",
        "1",
        "-t",
        "1s",
        "--check-interval",
        "100ms",
        "--kill-timeout",
        "300ms",
        "--",
        "sh",
        &closer,
    ];
    let master = Running::start(&mut sandbox.prefork(&options));
    let first = master.wait_ready(&sandbox, 1)[0];
    master.wait_until("the warning", || {
        master.stderr().contains("holds no live status file")
    });
    // The lock is free: a reader removes the file as a dead worker's.
    status_of(&sandbox);
    assert!(!sandbox.board().join(format!("status_{first}")).exists());
    master.wait_until("the closer to be judged stuck and replaced", || {
        master
            .stderr()
            .contains(&format!("worker pid={first} slot=0 is stuck"))
            && master.spawned().iter().any(|&(pid, _)| pid != first)
    });
}

/// Found under fire: a rollout interrupted by a SIGHUP whose command cannot
/// run went back to the command from before the rollout, but left the
/// workers the rollout had already started running the command in between,
/// for good: the pool stayed mixed.
#[test]
fn an_aborted_rollout_leaves_no_worker_of_the_interrupted_one() {
    let sandbox = Sandbox::new();
    // Slow to stop: the rollout waits a second for each old worker.
    let worker = sandbox.script(
        "versioned.sh",
        r#"echo "$1 $$" >> "$DIR/versions"
trap 'sleep 1; exit 0' TERM
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let config = sandbox.path().join("prefork.toml");
    let write = |command: &str| {
        let text = format!("command = {command}\nworkers = 3\ngraceful_timeout = \"5s\"\n");
        std::fs::write(&config, text).expect("write the config");
    };
    let version = |v: &str| format!("[\"sh\", \"{worker}\", \"{v}\"]");
    write(&version("v1"));
    let mut master = Running::start(&mut sandbox.prefork(&["-c", config.to_str().expect("UTF-8")]));
    master.wait_ready(&sandbox, 3);
    write(&version("v2"));
    master.signal(Signal::SIGHUP);
    master.wait_until("the rollout's first step", || {
        master.stderr().contains("rolling restart: retiring worker")
    });
    write(&format!("[\"{}\"]", sandbox.join("no-such-program")));
    master.signal(Signal::SIGHUP);
    master.wait_until("the abort", || {
        master.stderr().contains("rolling restart aborted")
    });
    let runs = |pid: i32, v: &str| sandbox.lines("versions").contains(&format!("{v} {pid}"));
    master.wait_until("every worker back on v1", || {
        let workers = master.workers();
        workers.len() == 3 && workers.iter().all(|&pid| runs(pid, "v1"))
    });
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

/// Found under fire: the master read, escaped and printed the whole of every
/// status in its SIGUSR1 dump (and of a stuck worker's last status in its
/// log, keeping a copy): a multi-megabyte status held its loop up for as
/// long at every SIGUSR1 (no reaping, no respawn) and left its heap as large.
#[test]
fn the_master_shows_a_kibibyte_of_a_huge_status() {
    let sandbox = Sandbox::new();
    let script = sandbox.join("huge.py");
    std::fs::write(
        &script,
        r#"import hashlib, os, struct, time
status = b"huge " + b"x" * (4 << 20)
record = hashlib.md5(status).digest() + struct.pack(">I", len(status)) + status
os.pwrite(int(os.environ["PREFORK_STATUS_FD"]), record, 0)
with open(os.path.join(os.environ["DIR"], "ready"), "a") as ready:
    ready.write(f"{os.getpid()}\n")
while True:
    time.sleep(1)
"#,
    )
    .expect("write the worker");
    let options = [
        "-w",
        "1",
        "-t",
        "1500ms",
        "--check-interval",
        "100ms",
        "--kill-timeout",
        "300ms",
        "--",
        "python3",
        &script,
    ];
    let master = Running::start(&mut sandbox.prefork(&options));
    let first = master.wait_ready(&sandbox, 1)[0];
    let whole = format!("... ({} bytes)", 5 + (4 << 20));
    let dump = master.dump();
    let row = dump.lines().nth(2).expect("the slot's line");
    assert!(
        row.len() < 1200 && row.ends_with(&whole) && row.contains("huge xxx"),
        "{} bytes: {}",
        row.len(),
        &row[..row.len().min(200)]
    );
    // It never writes again: stuck, and its last status said in a line.
    master.wait_until("the stuck worker's replacement", || {
        master.spawned().iter().any(|&(pid, _)| pid != first)
    });
    let log = master.stderr();
    let stuck = log
        .lines()
        .find(|l| l.contains("is stuck"))
        .expect("a stuck line");
    assert!(stuck.len() < 1500 && stuck.contains(&whole), "{stuck:.200}");
    let dump = master.dump();
    assert!(
        dump.lines().all(|l| l.len() < 2600),
        "{}",
        &dump[..dump.len().min(300)]
    );
}
