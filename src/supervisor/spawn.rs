//! Starting workers: `fork`, then `exec` in the child, and a close-on-exec
//! pipe through which the child reports a failure before `exec` (or, by
//! closing it, that `exec` succeeded). The master never waits on that pipe
//! in its loop: the read end joins the loop's poll set ([`ExecWatch`]).
//!
//! Everything the child needs is prepared before `fork` ([`Prepared`]: the
//! program's resolved path, argv and envp as C strings, the pointer arrays,
//! the working directory; the board's directory descriptor; `/dev/null`).
//! Between `fork` and `exec` the child calls only these, each
//! async-signal-safe (POSIX.1-2008 list, or a raw system call that takes no
//! lock and allocates nothing), and never returns into Rust code that could:
//! - `setpgid`: its own process group, which the master signals as a whole;
//! - `prctl(PR_SET_PDEATHSIG)` and `getppid`: die with the master;
//! - `sigprocmask`, and `rt_sigaction` as a raw system call: an empty mask
//!   and default dispositions (see [`default_disposition`]);
//! - `dup2`: `/dev/null` as standard input;
//! - [`ForkRegistrar::register`]: `getpid`, `openat`, `flock`, `renameat`,
//!   `dup2`/`fcntl`, `close`, with names formatted on the stack: its status
//!   file, locked, as descriptor [`STATUS_FD`];
//! - `chdir`, `close_range` (or `fcntl` on each descriptor), `execve`;
//! - on failure, `write` of a fixed-size report and `_exit`.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;

use super::spec::WorkerSpec;
use crate::scoreboard::{ForkRegistrar, DIR_VAR, STATUS_FD_VAR};

/// The descriptor number of a worker's own status file. The master keeps
/// this number occupied (see [`reserve_status_fd`]) so that none of its own
/// descriptors (an exec pipe) can be given it and then clobbered by `dup2`.
pub const STATUS_FD: i32 = 3;

/// The step of the child's set-up that failed, as the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Stage {
    Setup = 1,
    Stdin = 2,
    Register = 3,
    Chdir = 4,
    Exec = 5,
}

/// Why a worker could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The command cannot be turned into an argv/envp (a NUL byte).
    Prepare(String),
    /// `fork` failed (a process limit, memory).
    Fork(io::Error),
    /// The child's set-up before `exec` failed.
    Setup(io::Error),
    /// The child could not create its status file.
    Register(io::Error),
    /// The working directory cannot be entered.
    Chdir(PathBuf, io::Error),
    /// `exec` of the command failed (not found, not executable, ...).
    Exec(io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Prepare(why) => f.write_str(why),
            SpawnError::Fork(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                write!(f, "fork failed: process limit reached ({e})")
            }
            SpawnError::Fork(e) => write!(f, "fork failed: {e}"),
            SpawnError::Setup(e) => write!(f, "{e}"),
            SpawnError::Register(e) => write!(f, "cannot create its status file: {e}"),
            SpawnError::Chdir(dir, e) => {
                write!(f, "cannot enter working directory {}: {e}", dir.display())
            }
            SpawnError::Exec(e) => write!(f, "{e}"),
        }
    }
}

/// A forked worker whose exec has not reported yet.
pub struct Started {
    pub pid: Pid,
    pub exec: ExecWatch,
}

/// The read end of a child's exec-status pipe: a report when its set-up
/// failed, end of file once `exec` succeeded (the write end is close-on-exec).
pub struct ExecWatch {
    fd: OwnedFd,
    working_directory: Option<PathBuf>,
}

const REPORT_LEN: usize = 8;

impl ExecWatch {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// What the child said, without waiting: `None` while it has not
    /// exec'd nor failed yet.
    pub fn try_result(&self) -> Option<Result<(), SpawnError>> {
        let mut report = [0u8; REPORT_LEN];
        loop {
            // SAFETY: a valid buffer of its length; the descriptor is ours.
            let n = unsafe { libc::read(self.fd(), report.as_mut_ptr().cast(), REPORT_LEN) };
            if n >= 0 {
                return Some(self.decode(&report[..n as usize]));
            }
            match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => continue,
                e if e.kind() == io::ErrorKind::WouldBlock => return None,
                e => return Some(Err(SpawnError::Setup(e))),
            }
        }
    }

    /// Waits for the child's answer (for the first worker only, before the
    /// loop starts).
    pub fn wait(&self) -> Result<(), SpawnError> {
        loop {
            if let Some(result) = self.try_result() {
                return result;
            }
            let fd = self.fd.as_fd();
            let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
            // EINTR just loops.
            let _ = nix::poll::poll(&mut pfd, PollTimeout::NONE);
        }
    }

    fn decode(&self, report: &[u8]) -> Result<(), SpawnError> {
        if report.is_empty() {
            return Ok(()); // end of file: exec succeeded
        }
        if report.len() < REPORT_LEN {
            let e = io::Error::new(io::ErrorKind::UnexpectedEof, "a truncated exec report");
            return Err(SpawnError::Setup(e));
        }
        let stage = u32::from_ne_bytes(report[..4].try_into().expect("4 bytes"));
        let errno = i32::from_ne_bytes(report[4..].try_into().expect("4 bytes"));
        let e = io::Error::from_raw_os_error(errno);
        Err(match stage {
            s if s == Stage::Register as u32 => SpawnError::Register(e),
            s if s == Stage::Chdir as u32 => {
                SpawnError::Chdir(self.working_directory.clone().unwrap_or_default(), e)
            }
            s if s == Stage::Exec as u32 => SpawnError::Exec(e),
            _ => SpawnError::Setup(e),
        })
    }
}

/// A spec made ready to fork: everything the child needs, as C data.
struct Prepared {
    spec: Arc<WorkerSpec>,
    path: CString,
    argv: Vec<CString>,
    /// The environment but for the slot's variable.
    env: Vec<CString>,
    working_directory: Option<CString>,
}

/// Starts workers on one board.
pub struct Launcher {
    registrar: ForkRegistrar,
    board_dir: PathBuf,
    devnull: OwnedFd,
    master_pid: libc::pid_t,
    /// The last spec prepared: a spec is prepared once, not per worker.
    prepared: Option<Prepared>,
}

impl Launcher {
    pub fn new(registrar: ForkRegistrar, board_dir: &Path) -> io::Result<Launcher> {
        let devnull = std::fs::File::open("/dev/null")?.into();
        Ok(Launcher {
            registrar,
            board_dir: board_dir.to_path_buf(),
            devnull,
            master_pid: std::process::id() as libc::pid_t,
            prepared: None,
        })
    }

    /// Forks a worker for `slot` running `spec`. Returns at once: its exec's
    /// outcome comes through the returned [`ExecWatch`].
    pub fn spawn(&mut self, slot: usize, spec: &Arc<WorkerSpec>) -> Result<Started, SpawnError> {
        if !self
            .prepared
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(&p.spec, spec))
        {
            self.prepared = Some(self.prepare(spec)?);
        }
        let prepared = self.prepared.as_ref().expect("prepared above");
        let slot_var = CString::new(format!("PREFORK_WORKER_SLOT={slot}")).expect("no NUL");
        let argv = pointers(&prepared.argv);
        let envp: Vec<*const libc::c_char> = prepared
            .env
            .iter()
            .chain([&slot_var])
            .map(|c| c.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Fork(e.into()))?;
        let child = Child {
            path: prepared.path.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            working_directory: prepared.working_directory.as_ref().map(|d| d.as_ptr()),
            registrar: self.registrar,
            devnull: self.devnull.as_raw_fd(),
            report: write.as_raw_fd(),
            master_pid: self.master_pid,
        };
        // SAFETY: the master is single-threaded, so the child is a copy of
        // a process in which no lock is held; it runs only `Child::run`,
        // which makes async-signal-safe calls on data prepared above and
        // never returns.
        match unsafe { nix::unistd::fork() } {
            // SAFETY: in the child of that fork; every pointer in `child`
            // points into `prepared`, `argv`, `envp` and `slot_var`, alive
            // in the child's copy of the address space.
            Ok(nix::unistd::ForkResult::Child) => unsafe { child.run() },
            Ok(nix::unistd::ForkResult::Parent { child: pid }) => {
                // Also from here: the master may signal the group before the
                // child has run its own setpgid. (Fails harmlessly once the
                // child has exec'd.)
                let _ = nix::unistd::setpgid(pid, pid);
                drop(write);
                nix::fcntl::fcntl(
                    read.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(|e| SpawnError::Setup(e.into()))?;
                Ok(Started {
                    pid,
                    exec: ExecWatch {
                        fd: read,
                        working_directory: spec.working_directory.clone(),
                    },
                })
            }
            Err(e) => Err(SpawnError::Fork(e.into())),
        }
    }

    fn prepare(&self, spec: &Arc<WorkerSpec>) -> Result<Prepared, SpawnError> {
        let cstring = |what: &str, bytes: Vec<u8>| {
            CString::new(bytes)
                .map_err(|_| SpawnError::Prepare(format!("{what} contains a NUL byte")))
        };
        let path_var = spec
            .env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var_os("PATH"));
        let program = &spec.command[0];
        let path = cstring(
            "the command",
            resolve(program, path_var.as_deref()).into_vec(),
        )?;
        let argv = spec
            .command
            .iter()
            .map(|arg| cstring("an argument of the command", arg.as_bytes().to_vec()))
            .collect::<Result<_, _>>()?;
        let ours: [(&str, OsString); 3] = [
            (DIR_VAR, self.board_dir.clone().into_os_string()),
            (STATUS_FD_VAR, STATUS_FD.to_string().into()),
            ("PREFORK_MASTER_PID", self.master_pid.to_string().into()),
        ];
        let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        env.extend(spec.env.iter().cloned());
        env.extend(ours.into_iter().map(|(k, v)| (k.into(), v)));
        env.remove(OsStr::new("PREFORK_WORKER_SLOT"));
        let env = env
            .into_iter()
            .map(|(key, value)| {
                let mut var = key.into_vec();
                var.push(b'=');
                var.extend(value.into_vec());
                cstring("an environment variable", var)
            })
            .collect::<Result<_, _>>()?;
        let working_directory = spec
            .working_directory
            .as_ref()
            .map(|dir| cstring("the working directory", dir.as_os_str().as_bytes().to_vec()))
            .transpose()?;
        Ok(Prepared {
            spec: Arc::clone(spec),
            path,
            argv,
            env,
            working_directory,
        })
    }
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}

/// `program`'s path on `path`, like execvp would find it; the program itself
/// when it names a path, or when it is not found (exec then says so).
fn resolve(program: &OsStr, path: Option<&OsStr>) -> OsString {
    use std::os::unix::fs::PermissionsExt;
    if program.as_bytes().contains(&b'/') {
        return program.to_owned();
    }
    let dirs = std::env::split_paths(path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin")));
    dirs.filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(|| program.to_owned(), Into::into)
}

/// What the child runs on: raw pointers into data the parent keeps alive
/// (the child has its own copy of the whole address space).
struct Child {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    working_directory: Option<*const libc::c_char>,
    registrar: ForkRegistrar,
    devnull: RawFd,
    report: RawFd,
    master_pid: libc::pid_t,
}

impl Child {
    /// The child's side, between fork and exec. Async-signal-safe only: no
    /// allocation, no lock, no return.
    ///
    /// # Safety
    /// Only in the child of `fork`, with every pointer valid.
    unsafe fn run(&self) -> ! {
        if let Err(e) = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
            self.fail(Stage::Setup, e as i32);
        }
        // A master killed with SIGKILL takes its workers with it. If it died
        // before this call, the signal will never come: give up now.
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            self.fail(Stage::Setup, e as i32);
        }
        if nix::unistd::getppid().as_raw() != self.master_pid {
            self.fail(Stage::Setup, libc::ESRCH);
        }
        // An empty mask (the master's parent may have blocked some), and
        // default dispositions for every signal: handlers are reset by exec
        // anyway, but an ignored signal would stay ignored, and the master
        // (Rust ignores SIGPIPE) or its parent may have ignored some.
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                default_disposition(sig);
            }
        }
        // A background group reading the terminal would be stopped by
        // SIGTTIN: no stdin.
        if libc::dup2(self.devnull, 0) < 0 {
            self.fail(Stage::Stdin, errno());
        }
        if let Err(e) = self.registrar.register(STATUS_FD) {
            self.fail(Stage::Register, e);
        }
        if let Some(dir) = self.working_directory {
            if libc::chdir(dir) < 0 {
                self.fail(Stage::Chdir, errno());
            }
        }
        cloexec_above(STATUS_FD);
        libc::execve(self.path, self.argv, self.envp);
        self.fail(Stage::Exec, errno())
    }

    /// Reports the failed stage and its errno to the master, and exits.
    unsafe fn fail(&self, stage: Stage, errno: i32) -> ! {
        let mut report = [0u8; REPORT_LEN];
        report[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
        report[4..].copy_from_slice(&errno.to_ne_bytes());
        // A pipe takes 8 bytes at once; if the master is gone, nobody cares.
        libc::write(self.report, report.as_ptr().cast(), REPORT_LEN);
        libc::_exit(127)
    }
}

/// This thread's errno: a read of a thread-local, safe after fork.
fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Sets `sig` to SIG_DFL with the raw system call: glibc's `signal` and
/// `sigaction` refuse its reserved real-time signals (32 and 33), which stay
/// ignored across exec if the master inherited them ignored.
fn default_disposition(sig: libc::c_int) {
    // All zeros is SIG_DFL with no flags and an empty mask, whatever the
    // architecture's field order in the kernel's `struct sigaction`.
    let action = [0u64; 4];
    let sigset_size = (libc::SIGRTMAX() as usize + 1) / 8;
    // SAFETY: a valid, zeroed kernel sigaction and no old-action pointer.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            action.as_ptr(),
            std::ptr::null_mut::<u64>(),
            sigset_size,
        )
    };
}

/// Marks every descriptor above `fd` close-on-exec, so that nothing of the
/// master (nor of whoever started it) leaks into a worker. Marking rather
/// than closing keeps the exec-status pipe working until exec.
fn cloexec_above(fd: i32) {
    let first = (fd + 1) as libc::c_uint;
    // SAFETY: close_range only changes descriptor flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        // Kernels before 5.11: mark them one by one, up to the limit.
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct it is given.
        let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur.min(1 << 20) as i32
        } else {
            1 << 16
        };
        for fd in first as i32..max {
            // SAFETY: fcntl on a closed descriptor fails with EBADF, harmless.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// Keeps [`STATUS_FD`] open (on /dev/null, close-on-exec) in the master, so
/// that no descriptor the master opens later lands on that number.
pub fn reserve_status_fd() -> io::Result<()> {
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } >= 0 {
        // Inherited from whoever started us: never pass it on.
        // SAFETY: sets a descriptor flag on an open descriptor.
        unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        return Ok(());
    }
    // Opened close-on-exec; as the lowest free number it is usually 3 itself.
    let null = OwnedFd::from(std::fs::File::open("/dev/null")?);
    if null.as_raw_fd() != STATUS_FD {
        // SAFETY: dup3 onto a number nothing owns (F_GETFD said it is closed);
        // it then stays open for the master's life, owned by nobody.
        if unsafe { libc::dup3(null.as_raw_fd(), STATUS_FD, libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    } else {
        std::mem::forget(null);
    }
    Ok(())
}
