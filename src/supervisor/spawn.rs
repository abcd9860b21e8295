//! Starting one worker. Everything a child needs (argv, envp, the program's
//! path, the scoreboard's directory descriptor) is prepared before `fork`, by
//! std's `Command` and by [`Spawner::new`]; between `fork` and `exec` the
//! child makes only raw, async-signal-safe system calls (see `in_child`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::unistd::Pid;

use crate::scoreboard::{ForkRegistrar, DIR_VAR, STATUS_FD_VAR};

/// The descriptor number of a worker's own status file. The master keeps
/// this number occupied (see [`reserve_status_fd`]) so that std's internal
/// exec-error pipe can never be given it and then be clobbered by `dup2`.
pub const STATUS_FD: i32 = 3;

/// Marks an errno that came from registering on the scoreboard, not from
/// `exec`: std passes the child's raw error code through its pipe unchanged.
const REGISTER_TAG: i32 = 0x0100_0000;

/// Why a worker could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// `exec` of the command failed (not found, not executable, ...).
    Exec(io::Error),
    /// The child could not create its status file.
    Register(io::Error),
    /// `fork` or the set-up before `exec` failed.
    Other(io::Error),
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Exec(e) => write!(f, "{e}"),
            SpawnError::Register(e) => write!(f, "cannot create its status file: {e}"),
            SpawnError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// What a worker is: the command, where it runs, what it is told.
pub struct Spawner {
    /// As given, for messages and as the worker's argv[0].
    program: OsString,
    /// Where it was found on PATH, once, rather than by every child.
    resolved: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    working_directory: Option<PathBuf>,
    scoreboard_dir: PathBuf,
    registrar: ForkRegistrar,
    master_pid: libc::pid_t,
}

impl Spawner {
    pub fn new(
        command: &[OsString],
        env: &[(OsString, OsString)],
        working_directory: Option<PathBuf>,
        scoreboard_dir: PathBuf,
        registrar: ForkRegistrar,
    ) -> Self {
        let path = env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.clone())
            .or_else(|| std::env::var_os("PATH"));
        Spawner {
            resolved: resolve(&command[0], path.as_deref()),
            program: command[0].clone(),
            args: command[1..].to_vec(),
            env: env.to_vec(),
            working_directory,
            scoreboard_dir,
            registrar,
            master_pid: std::process::id() as libc::pid_t,
        }
    }

    /// The command as typed, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Forks and execs one worker for `slot`. Returns once the worker has
    /// exec'd (std waits on its close-on-exec error pipe), so an exec failure
    /// is reported here, never as a worker that dies at once.
    pub fn spawn(&self, slot: usize) -> Result<Pid, SpawnError> {
        let mut cmd = Command::new(&self.resolved);
        cmd.arg0(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(DIR_VAR, &self.scoreboard_dir)
            .env(STATUS_FD_VAR, STATUS_FD.to_string())
            .env("PREFORK_WORKER_SLOT", slot.to_string())
            .env("PREFORK_MASTER_PID", self.master_pid.to_string())
            // Its own process group: the master signals the whole group, and
            // a terminal's Ctrl-C reaches only the master. A background group
            // reading the terminal would be stopped by SIGTTIN, so no stdin.
            .process_group(0)
            .stdin(Stdio::null());
        if let Some(dir) = &self.working_directory {
            cmd.current_dir(dir);
        }
        let registrar = self.registrar;
        let master_pid = self.master_pid;
        // SAFETY: the closure runs in the child between fork and exec and
        // calls only async-signal-safe functions: prctl, getppid,
        // sigprocmask, rt_sigaction, openat, flock, renameat, dup2, fcntl,
        // close, close_range. It allocates nothing; its errors are raw errno
        // values.
        unsafe {
            cmd.pre_exec(move || in_child(registrar, master_pid));
        }
        match cmd.spawn() {
            Ok(child) => Ok(Pid::from_raw(child.id() as libc::pid_t)),
            Err(e) => Err(classify(e)),
        }
    }
}

/// `program`'s path on `path`, like execvp would find it; the program itself
/// when it names a path, or when it is not found (exec then says so).
fn resolve(program: &OsStr, path: Option<&OsStr>) -> OsString {
    use std::os::unix::ffi::OsStrExt;
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

/// The child's side, between fork and exec. Async-signal-safe only.
fn in_child(registrar: ForkRegistrar, master_pid: libc::pid_t) -> io::Result<()> {
    // A master killed with SIGKILL takes its workers with it. If it died
    // before this call, the signal will never come: give up now.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::getppid() } != master_pid {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // An empty mask (std passes the master's on, and the master's parent
    // may have blocked some), and default dispositions for every signal:
    // handlers are reset by exec anyway, but an ignored signal would stay
    // ignored, and the master's own parent may have ignored some.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            default_disposition(sig);
        }
    }
    registrar
        .register(STATUS_FD)
        .map_err(|errno| io::Error::from_raw_os_error(REGISTER_TAG | errno))?;
    cloexec_above(STATUS_FD);
    Ok(())
}

/// Sets `sig` to SIG_DFL with the raw system call: glibc's `signal` and
/// `sigaction` refuse its reserved real-time signals (32 and 33), which stay
/// ignored across exec if the master inherited them ignored.
fn default_disposition(sig: libc::c_int) {
    // All zeros is SIG_DFL with no flags and an empty mask, whatever the
    // architecture's field order in the kernel's `struct sigaction`.
    let action = [0u64; 4];
    let sigset_size = (libc::SIGRTMAX() as usize + 1) / 8;
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
/// than closing keeps std's exec-error pipe working until exec.
fn cloexec_above(fd: i32) {
    let first = (fd + 1) as libc::c_uint;
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret < 0 {
        // Kernels before 5.11: mark them one by one.
        for fd in first as i32..1024 {
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

fn classify(e: io::Error) -> SpawnError {
    match e.raw_os_error() {
        Some(code) if code & REGISTER_TAG != 0 => {
            SpawnError::Register(io::Error::from_raw_os_error(code & !REGISTER_TAG))
        }
        Some(
            libc::ENOENT | libc::EACCES | libc::ENOEXEC | libc::ENOTDIR | libc::ELOOP | libc::E2BIG,
        ) => SpawnError::Exec(e),
        _ => SpawnError::Other(e),
    }
}

/// Keeps [`STATUS_FD`] open (on /dev/null, close-on-exec) in the master, so
/// that no descriptor the master opens later lands on that number.
pub fn reserve_status_fd() -> io::Result<()> {
    if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } >= 0 {
        // Inherited from whoever started us: never pass it on.
        unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        return Ok(());
    }
    use std::os::fd::IntoRawFd;
    // Opened close-on-exec; as the lowest free number it is usually 3 itself.
    let null = std::fs::File::open("/dev/null")?.into_raw_fd();
    if null != STATUS_FD {
        let ret = unsafe { libc::dup3(null, STATUS_FD, libc::O_CLOEXEC) };
        unsafe { libc::close(null) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
