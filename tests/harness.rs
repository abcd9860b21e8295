//! The harness of the supervisor's tests: a sandbox directory per test, and
//! a [`Running`] guard around a real `prefork` master.
//!
//! Everything here observes from the outside, as an operator would: the
//! master's log on stderr, its board dump on stdout, `/proc`, the files the
//! workers write into the sandbox. Waits are bounded polls on events, never
//! bare sleeps; on timeout a test fails with the master's captured stderr.
//! Whatever happens, the guard leaves no process of the test behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long any single wait may take: far above what a loaded CI machine
/// needs, far below a hung test's patience.
pub const TIMEOUT: Duration = Duration::from_secs(10);

const POLL: Duration = Duration::from_millis(15);

/// Polls `done` until it holds (true) or `TIMEOUT` passes (false).
pub fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The Python interpreter that `python3` on `PATH` runs, by its own path
/// (`sys.executable`), for the workers and helpers the tests start.
///
/// Not `python3` itself: on a machine where that is a launcher (a pyenv
/// shim is a bash script that runs several programs before the interpreter)
/// every start costs a quarter of a second on an idle machine and seconds on
/// a loaded one, and the stuck timeout counts from the fork: workers were
/// judged stuck before their first line ran. The same interpreter, started
/// directly, takes a few milliseconds.
pub fn python3() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let mut cmd = Command::new("python3");
        cmd.args(["-S", "-c", "import sys; print(sys.executable)"])
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        // Its stdout is a pipe: no other test may fork while it is open.
        let out = {
            let _forking = crate::util::fork_lock();
            cmd.output()
        };
        let path = out
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| Path::new(p).is_absolute() && Path::new(p).exists());
        path.unwrap_or_else(|| "python3".into())
    })
}

/// The path of an example worker of the scoreboard crate
/// (`crates/scoreboard/examples/`), where cargo puts it: `examples/` beside
/// the `prefork` binary under test. Plain `cargo test` at the workspace root
/// builds it (the scoreboard crate is a default member, and `cargo test`
/// builds examples); a test builds nothing itself.
pub fn rust_example(name: &str) -> String {
    let exe = Path::new(env!("CARGO_BIN_EXE_prefork"))
        .parent()
        .expect("the binary's directory")
        .join("examples")
        .join(name);
    assert!(
        exe.exists(),
        "{} is missing: run plain `cargo test` at the workspace root, which builds the \
         examples of prefork-scoreboard, or `cargo build -p prefork-scoreboard --examples` first",
        exe.display()
    );
    exe.to_str().expect("UTF-8 path").to_string()
}

/// A test's own directory: worker scripts, the files they write, the board.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("prefork-supervisor-")
            .tempdir()
            .expect("create a temporary directory");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `<sandbox>/<name>` as a string, to put on a command line.
    pub fn join(&self, name: &str) -> String {
        self.path().join(name).to_str().expect("UTF-8 path").into()
    }

    /// The scoreboard directory passed with `--scoreboard`.
    pub fn board(&self) -> PathBuf {
        self.path().join("board")
    }

    /// Writes a shell script for the workers to run. It is run as `sh
    /// <script>`, never exec'd itself: a script file that another test
    /// thread's fork still holds open for writing would fail with ETXTBSY.
    /// `$DIR` in the script (and in what it starts) is the sandbox.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.join(name);
        let text = format!("export DIR='{}'\n{body}\n", self.path().display());
        std::fs::write(&path, text).expect("write a worker script");
        path
    }

    /// The usual worker: notes its slot in `slot_<pid>`, sets `trap` (a
    /// whole `trap` command, or nothing), then appends its pid to `ready`
    /// and idles until a signal. `sleep & wait` rather than `sleep`: the
    /// shell runs a trap only once its foreground command has ended.
    pub fn worker(&self, trap: &str) -> String {
        let body = format!(
            r#"echo "$PREFORK_WORKER_SLOT" > "$DIR/slot_$$"
{trap}
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#
        );
        self.script("worker.sh", &body)
    }

    /// A worker that writes `serving slot=<slot>` on the board as a worker
    /// written in any language can: one Parallel::Scoreboard record (MD5,
    /// big-endian u32 length, status) written at offset 0 of the descriptor
    /// `$PREFORK_STATUS_FD`. Workers in the slots listed in `silent` write
    /// nothing. Then it appends its pid to `ready` and idles; it dies of
    /// SIGTERM (Python's default).
    pub fn status_worker(&self, silent: &[usize]) -> Vec<String> {
        let script = self.join("status.py");
        let body = r#"import hashlib, os, struct, sys, time
slot = os.environ["PREFORK_WORKER_SLOT"]
if slot not in sys.argv[1:]:
    status = f"serving slot={slot}".encode()
    record = hashlib.md5(status).digest() + struct.pack(">I", len(status)) + status
    os.pwrite(int(os.environ["PREFORK_STATUS_FD"]), record, 0)
with open(os.path.join(os.environ["DIR"], "ready"), "a") as ready:
    ready.write(f"{os.getpid()}\n")
while True:
    time.sleep(1)
"#;
        std::fs::write(&script, body).expect("write a worker script");
        let mut command = vec![python3().to_string(), script];
        command.extend(silent.iter().map(|s| s.to_string()));
        command
    }

    /// The slot worker `pid` (a [`Sandbox::worker`]) says it runs in.
    pub fn slot_file(&self, pid: i32) -> Option<usize> {
        let text = std::fs::read_to_string(self.path().join(format!("slot_{pid}"))).ok()?;
        text.trim().parse().ok()
    }

    /// The pids in `name`, one per line.
    pub fn pids(&self, name: &str) -> BTreeSet<i32> {
        self.lines(name)
            .iter()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The lines of a file the workers append to (none if it does not exist yet).
    pub fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path().join(name))
            .map(|text| text.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// A `prefork` command on this sandbox's board, with `args` (options,
    /// then `--` and the worker command).
    pub fn prefork(&self, args: &[&str]) -> Command {
        let mut cmd = self.prefork_on_default_board(&["--scoreboard"]);
        cmd.arg(self.board()).args(args);
        cmd
    }

    /// A master running `n` copies of the shell script `worker` on this
    /// sandbox's board, with the given graceful timeout.
    pub fn start_sh_workers(&self, n: usize, graceful_timeout: &str, worker: &str) -> Running {
        let n = n.to_string();
        let args = [
            "-w",
            &n,
            "--graceful-timeout",
            graceful_timeout,
            "--",
            "sh",
            worker,
        ];
        Running::start(&mut self.prefork(&args))
    }

    /// A `prefork` command with `args` only: the board is its default.
    pub fn prefork_on_default_board(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prefork"));
        // Workers inherit it: where they write what the test checks.
        cmd.env("DIR", self.path()).args(args);
        cmd
    }

    /// The names in the board directory, sorted.
    pub fn board_files(&self) -> Vec<String> {
        names_in(&self.board())
    }
}

/// The names in `dir`, sorted (none if it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Makes `path` executable (or not).
pub fn set_mode(path: &str, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    /// `R`, `S`, `Z` (zombie: dead, not yet reaped), ...
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
}

/// `None` when no such process exists (not even as a zombie).
pub fn proc_stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: the fields
    // we want follow its last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        state,
        ppid,
        pgid,
    })
}

/// Every process on the machine (this kernel has no `/proc/*/children`).
pub fn all_procs() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(proc_stat)
        .collect()
}

/// The children of `parent`, zombies included.
pub fn children_of(parent: i32) -> Vec<Proc> {
    all_procs()
        .into_iter()
        .filter(|p| p.ppid == parent)
        .collect()
}

/// The environment `pid` was started with (its exec's).
pub fn environ(pid: i32) -> HashMap<String, String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).expect("read environ");
    String::from_utf8_lossy(&bytes)
        .split('\0')
        .filter_map(|var| var.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The descriptors `pid` has open, and what each one is.
pub fn open_fds(pid: i32) -> BTreeMap<i32, PathBuf> {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .expect("list /proc/<pid>/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some((fd, std::fs::read_link(e.path()).ok()?))
        })
        .collect()
}

/// A hexadecimal mask line of `/proc/<pid>/status`, such as `SigIgn`.
pub fn status_mask(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    u64::from_str_radix(value.trim(), 16).expect("a hexadecimal mask")
}

/// The soft and hard limits of `what` in `/proc/<pid>/limits`.
pub fn limits(pid: i32, what: &str) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = text
        .lines()
        .find(|l| l.starts_with(what))
        .unwrap_or_else(|| panic!("no {what} in {text}"));
    let mut fields = line[what.len()..].split_whitespace();
    (
        fields.next().expect("soft").to_string(),
        fields.next().expect("hard").to_string(),
    )
}

/// A pipe whose buffer is one page, so that a few lines fill it.
pub fn small_pipe() -> (OwnedFd, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    fcntl(write.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(4096)).expect("F_SETPIPE_SZ");
    (read, write)
}

/// Whether the board dump in `text` counts output lines the master dropped.
pub fn counts_dropped_output(text: &str) -> bool {
    text.split("output_dropped=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Whether `pid` runs: a zombie is dead, whoever is to reap it.
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|p| !matches!(p.state, 'Z' | 'X'))
}

/// Whether any process, zombie or not, is in process group `pgid`.
pub fn group_exists(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Sends `signal` to one process of the test.
pub fn signal(pid: i32, signal: Signal) {
    kill(Pid::from_raw(pid), signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// The `pid=` and `slot=` numbers of the log lines containing `what`, in order.
fn pid_slot_lines(log: &str, what: &str) -> Vec<(i32, usize)> {
    log.lines()
        .filter(|line| line.contains(what))
        .filter_map(|line| Some((number_after(line, "pid=")?, number_after(line, "slot=")?)))
        .collect()
}

fn number_after<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    let rest = &line[line.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What a pipe delivered so far, and whether it has reached EOF.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    closed: bool,
}

type Buffer = Arc<Mutex<Captured>>;

/// Reads `from` into `into` until EOF, on a thread of its own.
fn capture(mut from: impl Read + Send + 'static, into: &Buffer) {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut chunk) {
            into.lock().unwrap().bytes.extend_from_slice(&chunk[..n]);
        }
        into.lock().unwrap().closed = true;
    });
}

/// A `prefork` master of the test's. On drop, whether the test passed or
/// panicked, it SIGKILLs the master, the process group of each of its
/// workers (each leads its own), and anything else started under it, and
/// reaps the master.
pub struct Running {
    child: Child,
    pid: i32,
    stdout: Buffer,
    stderr: Buffer,
    status: Option<ExitStatus>,
}

impl Running {
    /// Starts `cmd` as a master: in its own process group, stdin from
    /// /dev/null, stdout and stderr captured, info-level logging (unless
    /// `cmd` sets `RUST_LOG` itself).
    pub fn start(cmd: &mut Command) -> Running {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Running::spawn(cmd)
    }

    /// Like [`Running::start`], with `stdout` and `stderr` as the master's
    /// own, for tests of what it does when nobody reads them. A stream given
    /// as `Stdio::piped()` is captured as usual; what goes anywhere else is
    /// not in [`Running::stdout`] or [`Running::stderr`]. Takes `cmd` whole:
    /// dropped once it is spawned, it closes the test's copies of the
    /// descriptors, so that their reader sees EOF when the master closes its
    /// own.
    pub fn start_with_output(
        mut cmd: Command,
        stdout: impl Into<Stdio>,
        stderr: impl Into<Stdio>,
    ) -> Running {
        cmd.stdout(stdout).stderr(stderr);
        Running::spawn(&mut cmd)
    }

    fn spawn(cmd: &mut Command) -> Running {
        if !cmd.get_envs().any(|(key, _)| key == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        cmd.process_group(0).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe. The master dies with the test
        // thread that started it, should the test process be killed before
        // the guard runs; its workers then die with it (their own PDEATHSIG).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // While the master's pipes are being set up, no other test may fork:
        // its child would keep a copy of their write ends, and this test
        // would never see them close.
        let mut child = {
            let _forking = crate::util::fork_lock();
            cmd.spawn().expect("start prefork")
        };
        let (stdout, stderr) = (Buffer::default(), Buffer::default());
        // A stream not piped to the test has nothing to wait for.
        match child.stdout.take() {
            Some(pipe) => capture(pipe, &stdout),
            None => stdout.lock().unwrap().closed = true,
        }
        match child.stderr.take() {
            Some(pipe) => capture(pipe, &stderr),
            None => stderr.lock().unwrap().closed = true,
        }
        Running {
            pid: child.id() as i32,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap().bytes).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap().bytes).into_owned()
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        signal(self.pid, sig);
    }

    /// Waits until `done` holds; on timeout, fails the test with the
    /// master's output.
    pub fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        if !eventually(&mut done) {
            panic!("{}", self.report(&format!("timed out waiting for {what}")));
        }
    }

    /// The TCP address the master's log says its workers listen on (its
    /// first `listening on ADDR` line), once it has said it.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        let mut addr = None;
        self.wait_until("the listening socket", || {
            addr = self.stderr().lines().find_map(|line| {
                let (_, rest) = line.split_once("listening on ")?;
                rest.split(' ').next()?.parse().ok()
            });
            addr.is_some()
        });
        addr.expect("waited for it")
    }

    /// A failure message with everything the master said.
    pub fn report(&self, what: &str) -> String {
        format!(
            "{what}\n--- prefork stderr ---\n{}--- prefork stdout ---\n{}",
            self.stderr(),
            self.stdout()
        )
    }

    /// `(pid, slot)` of every "spawned worker" log line, in order.
    pub fn spawned(&self) -> Vec<(i32, usize)> {
        pid_slot_lines(&self.stderr(), "spawned worker")
    }

    /// `(pid, slot)` of every "worker ... ended" log line, in order.
    pub fn ended(&self) -> Vec<(i32, usize)> {
        pid_slot_lines(&self.stderr(), " ended (")
    }

    /// The log line saying how worker `pid` ended, if it has.
    pub fn end_of(&self, pid: i32) -> Option<String> {
        let needle = format!("worker pid={pid} ");
        self.stderr()
            .lines()
            .find(|l| l.contains(&needle) && l.contains(" ended ("))
            .map(str::to_string)
    }

    /// The master's live workers, from `/proc`: its children that lead their
    /// own process group (what a worker leaves behind and the master reaps
    /// as a subreaper is a child too, but not a group leader).
    pub fn workers(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = children_of(self.pid)
            .into_iter()
            .filter(|p| p.pgid == p.pid && p.state != 'Z')
            .map(|p| p.pid)
            .collect();
        pids.sort();
        pids
    }

    /// Like [`Running::workers`], but as they all were at one moment, for
    /// counting them while they change.
    ///
    /// One scan of `/proc` is no snapshot: it lists the pids, then reads
    /// each one's `stat`, one after the other. A worker started after the
    /// listing is not in it, and the worker it replaced may have died by the
    /// time its `stat` is read: the scan counts one short, or two (the
    /// rollout test saw 1 of 3). So the scan is repeated until two in a row
    /// agree on every child of the master. Each child's state (not a group
    /// leader yet, a live worker, a zombie, gone) only moves forward, so one
    /// that was seen the same in both held so between its two looks, and all
    /// of them held so at once, at any moment between the two scans. (Only a
    /// child both started and gone between its two looks would be missed.)
    pub fn workers_at_one_moment(&self) -> Vec<i32> {
        let scan = || {
            let mut children: Vec<(i32, bool, bool)> = children_of(self.pid)
                .into_iter()
                .map(|p| (p.pid, p.pgid == p.pid, p.state == 'Z'))
                .collect();
            children.sort();
            children
        };
        let mut last = scan();
        let mut agreed = None;
        self.wait_until("two scans of /proc that agree", || {
            let now = scan();
            if now == last {
                agreed = Some(now);
                return true;
            }
            last = now;
            false
        });
        agreed
            .expect("two scans agreed")
            .into_iter()
            .filter(|&(_, leader, zombie)| leader && !zombie)
            .map(|(pid, _, _)| pid)
            .collect()
    }

    /// Asserts that each of `workers` was ended by SIGKILL and left no
    /// process of its group behind.
    pub fn assert_killed(&self, workers: &[i32]) {
        for &pid in workers {
            let end = self.end_of(pid).unwrap_or_default();
            assert!(end.contains("(SIGKILL)"), "{}", self.report(&end));
            assert!(
                !alive(pid) && !group_exists(pid),
                "worker {pid} or its group is left"
            );
        }
    }

    /// The master's children that are dead but not reaped.
    pub fn zombies(&self) -> Vec<i32> {
        children_of(self.pid)
            .into_iter()
            .filter(|p| p.state == 'Z')
            .map(|p| p.pid)
            .collect()
    }

    /// The live workers that the log has announced, too.
    fn logged_workers(&self) -> Vec<i32> {
        let logged: BTreeSet<i32> = self.spawned().into_iter().map(|(p, _)| p).collect();
        let mut workers = self.workers();
        workers.retain(|p| logged.contains(p));
        workers
    }

    /// Waits until exactly `n` workers run and each has been logged as
    /// spawned, and returns their pids (sorted).
    pub fn wait_workers(&self, n: usize) -> Vec<i32> {
        let mut workers = Vec::new();
        self.wait_until(&format!("{n} running worker(s)"), || {
            workers = self.logged_workers();
            workers.len() == n && self.workers().len() == n
        });
        workers
    }

    /// Like [`Running::wait_workers`], and also waits until each of them has
    /// set its trap and said so in the sandbox's `ready` file.
    pub fn wait_ready(&self, sandbox: &Sandbox, n: usize) -> Vec<i32> {
        let mut workers = Vec::new();
        self.wait_until(&format!("{n} ready worker(s)"), || {
            workers = self.logged_workers();
            let ready = sandbox.pids("ready");
            workers.len() == n
                && self.workers().len() == n
                && workers.iter().all(|p| ready.contains(p))
        });
        workers
    }

    /// The slot the log says worker `pid` was spawned in.
    pub fn slot_of(&self, pid: i32) -> usize {
        self.spawned()
            .into_iter()
            .find(|(p, _)| *p == pid)
            .map(|(_, slot)| slot)
            .unwrap_or_else(|| panic!("{}", self.report(&format!("no worker pid={pid} logged"))))
    }

    /// Sends SIGUSR1 and returns the board it prints: a header line (with
    /// `workers=<live>/<slots>`), the column names, one line per slot.
    pub fn dump(&self) -> String {
        const HEADER: &str = "prefork master pid=";
        let before = self.stdout().matches(HEADER).count();
        self.signal(Signal::SIGUSR1);
        let mut board = String::new();
        self.wait_until("the SIGUSR1 board", || {
            let out = self.stdout();
            if out.matches(HEADER).count() == before {
                return false;
            }
            board = out[out.rfind(HEADER).expect("a header")..].to_string();
            let slots: Option<usize> = board
                .lines()
                .next()
                .and_then(|header| header.split_once("workers="))
                .and_then(|(_, count)| number_after(count, "/"));
            slots.is_some_and(|n| board.lines().count() == n + 2 && board.ends_with('\n'))
        });
        board
    }

    /// The master's exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("waitpid on the master");
        }
        self.status
    }

    /// Waits for the master to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if !eventually(|| self.try_exit().is_some()) {
            panic!(
                "{}",
                self.report("timed out waiting for the master to exit")
            );
        }
        // Everything it wrote, too. (No failure here if something else holds
        // the pipes open: what outlives the master is for the test to judge.)
        eventually(|| self.stdout.lock().unwrap().closed && self.stderr.lock().unwrap().closed);
        self.status.expect("exited")
    }

    /// Processes started under this master, found by the variable every
    /// worker (and what it starts) inherits: `/proc/<pid>/environ` is the
    /// environment a program was started with.
    fn descendants(&self) -> Vec<Proc> {
        let marker = format!("PREFORK_MASTER_PID={}", self.pid);
        all_procs()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{}/environ", p.pid))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
            })
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            // The master is our unreaped child, so neither its pid nor its
            // children's can have been reused. Stopped, it forks no one
            // while we kill the group of each of its workers.
            let master = Pid::from_raw(self.pid);
            let _ = kill(master, Signal::SIGSTOP);
            eventually(|| proc_stat(self.pid).is_none_or(|p| matches!(p.state, 'T' | 'Z')));
            for child in children_of(self.pid) {
                let _ = killpg(Pid::from_raw(child.pgid), Signal::SIGKILL);
            }
            let _ = killpg(master, Signal::SIGKILL);
        }
        // What escaped its worker's group, or outlived the master. (Once the
        // master is reaped its pid may be reused, but another master of the
        // same pid within one test is beyond unlikely.)
        for p in self.descendants() {
            let _ = killpg(Pid::from_raw(p.pgid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
