//! Helpers shared by the test modules: temporary directories, deadline-bounded
//! waiting, forking under a global lock, a guard that kills and reaps every
//! process a test started, and a `perl` command for the interop tests (with
//! the check that it finds Parallel::Scoreboard).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A fresh directory of the test's own, removed when the test ends.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("prefork-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// How long any single wait in a test may take before the test fails: far
/// above what a loaded CI machine needs, far below a hung test's patience.
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// Polls `done` every 10 ms until it holds (true) or `deadline` passes (false).
pub fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Only one test forks at a time. A child gets a copy of every descriptor of
/// the test process, including pipes another test is about to read to EOF
/// and locks another test expects to be released; holding this lock for the
/// whole of a test that starts processes keeps those tests out of each other's way.
static FORK_MTX: Mutex<()> = Mutex::new(());

/// Takes [`FORK_MTX`], also after another test failed while holding it.
pub fn fork_lock() -> MutexGuard<'static, ()> {
    FORK_MTX
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Forks a child that runs `body` and `_exit`s with its return value (101 if
/// it panics). The child of a multithreaded process should do the minimum:
/// library calls, then exit, never returning into the test harness.
/// Taking the [`fork_lock`] guard proves that no other test forks meanwhile.
/// `body` runs only in the child but is dropped in the parent as well, so it
/// should borrow what it uses: a moved-in `Scoreboard` would be dropped in
/// the parent, removing the parent's file.
pub fn fork_child(
    _forking: &MutexGuard<'static, ()>,
    kids: &mut ChildGuard,
    body: impl FnOnce() -> i32,
) -> Pid {
    // SAFETY: the child only runs `body` (library calls and raw system
    // calls) and then `_exit`s; it never unwinds into the harness.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            // Die with the test (the forking thread, which outlives the
            // guard), even if the test process is killed before guards run.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            kids.pids.push(Target::Pid(child));
            child
        }
    }
}

/// For a worker child: blocks until a signal kills it.
pub fn block_until_killed() -> ! {
    loop {
        unsafe { libc::pause() };
    }
}

enum Target {
    Pid(Pid),
    Group(Pid),
}

/// Kills (SIGKILL) and reaps every process a test started when it goes out of
/// scope, whether the test passed or panicked.
#[derive(Default)]
pub struct ChildGuard {
    pids: Vec<Target>,
}

impl ChildGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes over a spawned process that leads its own process group
    /// (`Command::process_group(0)`): the whole group is killed, and the
    /// process is reaped here rather than through `Child::wait`.
    pub fn add_group(&mut self, leader: std::process::Child) -> Pid {
        let pid = Pid::from_raw(leader.id() as i32);
        self.pids.push(Target::Group(pid));
        pid
    }

    fn forget(&mut self, pid: Pid) {
        self.pids
            .retain(|t| !matches!(t, Target::Pid(p) | Target::Group(p) if *p == pid));
    }

    /// SIGKILLs `pid` (and its group, if it leads one) and reaps it.
    pub fn kill(&mut self, pid: Pid) {
        let is_group = self
            .pids
            .iter()
            .any(|t| matches!(t, Target::Group(p) if *p == pid));
        if is_group {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        kill(pid, Signal::SIGKILL).expect("kill a child");
        waitpid(pid, None).expect("reap a killed child");
        self.forget(pid);
    }

    /// Waits (until `deadline`, else panics) for `pid` to exit on its own, and reaps it.
    pub fn wait_exit(&mut self, pid: Pid, deadline: Instant) -> WaitStatus {
        let mut status = None;
        let exited = wait_until(deadline, || {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
                WaitStatus::StillAlive => false,
                other => {
                    status = Some(other);
                    true
                }
            }
        });
        assert!(exited, "process {pid} did not exit in time");
        self.forget(pid);
        status.expect("set when exited")
    }

    /// `None` while `pid` runs; how it ended once it has (it is then reaped).
    pub fn try_wait(&mut self, pid: Pid) -> Option<WaitStatus> {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)).expect("waitpid") {
            WaitStatus::StillAlive => None,
            ended => {
                self.forget(pid);
                Some(ended)
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        for target in self.pids.drain(..) {
            let pid = match target {
                Target::Pid(pid) => pid,
                Target::Group(pid) => {
                    let _ = killpg(pid, Signal::SIGKILL);
                    pid
                }
            };
            // Every pid here is an unreaped child of ours, so it cannot have
            // been reused: killing it can only hit the process we started.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// A pipe that children block on until the parent opens it, so that they all
/// start at the same moment (for races).
pub struct StartGate {
    read: OwnedFd,
    write: OwnedFd,
}

impl StartGate {
    pub fn new() -> Self {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
        StartGate { read, write }
    }

    /// In a child: closes its copy of the write end, then blocks until the
    /// parent's copy closes too (EOF). The child `_exit`s without dropping
    /// `self`, so closing the raw descriptor here is not a double close.
    pub fn wait(&self) {
        unsafe { libc::close(self.write.as_raw_fd()) };
        let mut byte = 0u8;
        loop {
            let n = unsafe { libc::read(self.read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
            let interrupted = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
            if n >= 0 || !interrupted {
                return;
            }
        }
    }

    /// In the parent: lets every waiting child go.
    pub fn open(self) {
        drop(self);
    }
}

/// Creates `path` and takes an exclusive `flock` on it, as a live worker
/// holds its status file. The lock lasts as long as the returned `File`.
pub fn locked_file(path: &Path, contents: &[u8]) -> File {
    std::fs::write(path, contents).expect("write a planted file");
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .expect("open a planted file");
    let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(ret, 0, "lock {}", path.display());
    file
}

/// Makes a forked child the only holder of `file`'s lock, as a live worker
/// holds its status file, whatever the file holds: the lock is taken here,
/// the child inherits the open file (and so the lock) and pauses, and our
/// own copy is closed. Killing the child (through `kids`) releases it.
pub fn hold_in_child(forking: &MutexGuard<'static, ()>, kids: &mut ChildGuard, file: File) -> Pid {
    let ret = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(ret, 0, "lock a planted file");
    let child = fork_child(forking, kids, || block_until_killed());
    drop(file);
    child
}

/// Creates `path` holding `contents`, then [`hold_in_child`].
pub fn held_by_child(
    forking: &MutexGuard<'static, ()>,
    kids: &mut ChildGuard,
    path: &Path,
    contents: &[u8],
) -> Pid {
    std::fs::write(path, contents).expect("write a planted file");
    let file = File::open(path).expect("open a planted file");
    hold_in_child(forking, kids, file)
}

/// The names in `dir`, sorted: to say which status files exist.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list a test directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `<dir>/status_<id>`.
pub fn status_path(dir: &Path, id: impl std::fmt::Display) -> PathBuf {
    dir.join(format!("status_{id}"))
}

/// The process's umask, read without changing it (`umask(2)` can only be read
/// by setting it, which would race with the other tests' threads).
pub fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("a Umask line in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).expect("an octal umask")
}

/// A `perl` command that finds Parallel::Scoreboard as a Perl user would:
/// installed, or through `PERL5LIB`. Relative `PERL5LIB` entries (CI sets
/// `../shared/reference/perl`) are taken relative to the package root, the
/// tests' working directory, and made absolute so that they hold whatever
/// directory the command later runs in.
pub fn perl() -> Command {
    let mut cmd = Command::new("perl");
    if let Some(lib) = std::env::var_os("PERL5LIB") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let absolute: Vec<PathBuf> = std::env::split_paths(&lib)
            .map(|p| if p.is_relative() { root.join(p) } else { p })
            .collect();
        let joined: OsString = std::env::join_paths(absolute).expect("PERL5LIB entries");
        cmd.env("PERL5LIB", joined);
    }
    cmd
}

/// Fails the test, saying where the module comes from, unless
/// `perl -MParallel::Scoreboard -e1` works (with [`perl`]'s `PERL5LIB`). It takes
/// the [`fork_lock`] itself: call it before taking that lock.
pub fn require_parallel_scoreboard() {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(why) = CHECK.get_or_init(perl_finds_the_module) {
        panic!("{PARALLEL_SCOREBOARD_MISSING}\n`perl -MParallel::Scoreboard -e1` said: {why}");
    }
}

/// How to get Parallel::Scoreboard, for a machine without it.
const PARALLEL_SCOREBOARD_MISSING: &str = "\
this test runs Perl's Parallel::Scoreboard (0.08, from CPAN; Debian does not package it), \
which perl cannot load. Either install it: `cpanm Parallel::Scoreboard` (Debian: `apt-get install \
cpanminus` first), or point PERL5LIB at a directory that holds Parallel/Scoreboard.pm: this \
repository's CI runs `PERL5LIB=../shared/reference/perl cargo test` (relative entries are taken \
from the package root). The module needs Class::Accessor::Lite (Debian: `apt-get install perl \
libclass-accessor-lite-perl`; cpanm installs it with the module).";

fn perl_finds_the_module() -> Result<(), String> {
    let out = {
        // Its stdout and stderr are pipes: no other test may fork meanwhile.
        let _forking = fork_lock();
        perl().args(["-MParallel::Scoreboard", "-e1"]).output()
    };
    match out {
        Err(e) => Err(format!("cannot run perl: {e}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}
