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
//! - `sigprocmask`, and `rt_sigaction` as a raw system call: default
//!   dispositions, then an empty mask (`child.rs` says why raw). The master
//!   forks with every signal blocked (and unblocks them at once in the
//!   parent), so that a signal sent to the new worker before its
//!   dispositions are reset (a stop, during a shutdown or a reload) waits,
//!   pending, and then has its default effect: it is never caught by the
//!   master's handlers the child inherited, which would swallow it;
//! - `fcntl(F_DUPFD_CLOEXEC)`: the exec-status pipe and the listening
//!   sockets moved above the descriptors the worker gets, so that placing
//!   one cannot overwrite another;
//! - `dup2`: `/dev/null` as standard input; with `worker_output =
//!   "prefix"`, the write ends of its output pipes (made before the fork
//!   with `pipe2(O_CLOEXEC)`, moved above first like the report pipe) as
//!   standard output and error;
//! - [`ForkRegistrar::register`]: `getpid`, `openat`, `flock`, `renameat`,
//!   `dup2`/`fcntl`, `close`, with names formatted on the stack: its status
//!   file, locked, as the descriptor after its sockets;
//! - `dup2`: each listening socket onto 3, 4, ...; `getpid`, its digits
//!   written into `LISTEN_PID`'s buffer, allocated before the fork;
//! - `chdir`, `close_range` (or `fcntl` on each descriptor);
//! - `setrlimit`: the descriptor limit the master was started with, or the
//!   configured `rlimit_nofile`; `rlimit_core`;
//! - `setpriority` (`nice`) and `umask`: plain system calls;
//! - `setgroups`, `setgid`, `setuid`: the worker's user and groups, as
//!   numbers resolved when the configuration was loaded
//!   ([`privileges`]); glibc's wrappers signal the process's other threads
//!   to switch too, and the child of a single-threaded master has none, so
//!   each is the plain system call. Then `prctl(PR_SET_PDEATHSIG)` and
//!   `getppid` again: a change of uid or gid clears the parent-death signal;
//! - `execve` (and `execve` of `/bin/sh` for a script without `#!`, as
//!   execvp does);
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

mod child;
mod limits;
pub mod privileges;
mod program;

use child::{Child, Identity};
use limits::nofile_soft_limit;
pub use limits::{raise_nofile_limit, reserve_status_fd};
pub use privileges::{RunAs, UNLIMITED};
pub use program::preflight;
use program::{explain_exec, path_of, resolve};

use super::notify;
use super::spec::WorkerSpec;
use crate::config::WorkerOutput;
use crate::listen::ACTIVATION_VARS;
use crate::scoreboard::{ForkRegistrar, DIR_VAR, STATUS_FD_VAR};

/// The first descriptor a worker is given: its first listening socket, or
/// its status file when it has none. The master keeps this number occupied
/// (see [`reserve_status_fd`]), so that its own descriptors stay out of
/// the way of the common case.
pub const STATUS_FD: i32 = 3;

/// The step of the child's set-up that failed, as the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Stage {
    Setup = 1,
    Stdin = 2,
    Register = 3,
    Chdir = 4,
    Exec = 5,
    /// The steps of `privileges`: limits, nice value, groups, user.
    Nofile = 6,
    Core = 7,
    Nice = 8,
    Groups = 9,
    Group = 10,
    User = 11,
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
    /// `exec` of the program (at this path) failed: not found, not
    /// executable, a missing interpreter...
    Exec(PathBuf, io::Error),
    /// A limit, the nice value or the switch to the worker's user failed:
    /// what it was, and why.
    Privileges(String, io::Error),
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Prepare(why) => f.write_str(why),
            SpawnError::Fork(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                write!(f, "fork failed: process limit reached ({e})")
            }
            SpawnError::Fork(e) if e.raw_os_error() == Some(libc::EMFILE) => write!(
                f,
                "the master has too many open files (its descriptor limit is {}): raise the hard \
                 limit (ulimit -Hn, LimitNOFILE=) above twice the number of workers (four times \
                 with worker_output = \"prefix\")",
                nofile_soft_limit()
            ),
            SpawnError::Fork(e) => write!(f, "fork failed: {e}"),
            SpawnError::Setup(e) => write!(f, "{e}"),
            SpawnError::Register(e) => write!(f, "cannot create its status file: {e}"),
            SpawnError::Chdir(dir, e) => {
                write!(f, "cannot enter working directory {}: {e}", dir.display())
            }
            SpawnError::Exec(path, e) => f.write_str(&explain_exec(path, e)),
            SpawnError::Privileges(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// The read ends of a relayed worker's standard output and error
/// (`worker_output = "prefix"`), non-blocking and close-on-exec, for the
/// master's loop.
pub struct Outputs {
    pub pid: Pid,
    pub slot: usize,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
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
    program: PathBuf,
    working_directory: Option<PathBuf>,
    /// What the child was to become, to name it in a failure.
    spec: Arc<WorkerSpec>,
}

pub(super) const REPORT_LEN: usize = 8;

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
            s if s == Stage::Exec as u32 => SpawnError::Exec(self.program.clone(), e),
            s if (Stage::Nofile as u32..=Stage::User as u32).contains(&s) => {
                let stage = [
                    Stage::Nofile,
                    Stage::Core,
                    Stage::Nice,
                    Stage::Groups,
                    Stage::Group,
                    Stage::User,
                ][(s - Stage::Nofile as u32) as usize];
                SpawnError::Privileges(privileges::describe(stage, &self.spec), e)
            }
            _ => SpawnError::Setup(e),
        })
    }
}

/// A spec made ready to fork: everything the child needs, as C data.
struct Prepared {
    spec: Arc<WorkerSpec>,
    path: CString,
    argv: Vec<CString>,
    /// `/bin/sh PATH ARGS...`, for a file without `#!` that the kernel
    /// refuses (ENOEXEC): what execvp, and so a shell, does with it.
    sh_argv: Vec<CString>,
    /// The environment but for the slot's variable and `LISTEN_PID`.
    env: Vec<CString>,
    working_directory: Option<CString>,
    /// The master's listening sockets, in the order the worker gets them.
    sockets: Vec<RawFd>,
    /// The supplementary groups of the worker's user, when it switches.
    groups: Option<Vec<libc::gid_t>>,
}

/// The variable naming the running prefork binary, for workers that call
/// `prefork report` (its directory is also on their PATH, last).
pub const BIN_VAR: &str = "PREFORK_BIN";

/// Starts workers on one board.
pub struct Launcher {
    registrar: ForkRegistrar,
    board_dir: PathBuf,
    devnull: OwnedFd,
    master_pid: libc::pid_t,
    /// The descriptor limit the master was started with, which workers get
    /// back (the master raises its own; see [`raise_nofile_limit`]).
    nofile: Option<libc::rlimit>,
    /// The last spec prepared: a spec is prepared once, not per worker.
    prepared: Option<Prepared>,
    /// The output pipes of workers forked since the loop last took them
    /// ([`Launcher::take_outputs`]).
    outputs: Vec<Outputs>,
}

impl Launcher {
    /// `nofile`: the descriptor limit to give workers, when the master
    /// changed its own.
    pub fn new(
        registrar: ForkRegistrar,
        board_dir: &Path,
        nofile: Option<libc::rlimit>,
    ) -> io::Result<Launcher> {
        let devnull = std::fs::File::open("/dev/null")?.into();
        Ok(Launcher {
            registrar,
            board_dir: board_dir.to_path_buf(),
            devnull,
            master_pid: std::process::id() as libc::pid_t,
            nofile,
            prepared: None,
            outputs: Vec::new(),
        })
    }

    /// A board recreated at the same path: new workers register there.
    pub fn set_registrar(&mut self, registrar: ForkRegistrar) {
        self.registrar = registrar;
    }

    /// The output pipes of the relayed workers forked since the last call.
    pub fn take_outputs(&mut self) -> Vec<Outputs> {
        std::mem::take(&mut self.outputs)
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
        // `LISTEN_PID=` and room for the digits the child writes there: its
        // pid is known only after the fork.
        let mut listen_pid = [0u8; 32];
        listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);
        let mut sockets = prepared.sockets.clone();
        let argv = pointers(&prepared.argv);
        let sh_argv = pointers(&prepared.sh_argv);
        let listen_pid_var = (!sockets.is_empty()).then_some(listen_pid.as_ptr().cast());
        let envp: Vec<*const libc::c_char> = prepared
            .env
            .iter()
            .chain([&slot_var])
            .map(|c| c.as_ptr())
            .chain(listen_pid_var)
            .chain([std::ptr::null()])
            .collect();
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| SpawnError::Fork(e.into()))?;
        // Made here, closed here on a failed fork: (read, write) each.
        let output = match spec.output {
            WorkerOutput::Inherit => None,
            WorkerOutput::Prefix => Some((output_pipe()?, output_pipe()?)),
        };
        let child = Child {
            path: prepared.path.as_ptr(),
            argv: argv.as_ptr(),
            sh_argv: sh_argv.as_ptr(),
            envp: envp.as_ptr(),
            working_directory: prepared.working_directory.as_ref().map(|d| d.as_ptr()),
            registrar: self.registrar,
            sockets: sockets.as_mut_ptr(),
            socket_count: sockets.len(),
            listen_pid: listen_pid.as_mut_ptr(),
            // The configured limit wins over the one the master was
            // started with.
            nofile: spec.rlimit_nofile.map(both).or(self.nofile),
            rlimit_core: spec.rlimit_core.map(both),
            nice: spec.nice,
            umask: spec.umask.map(|m| m as libc::mode_t),
            identity: spec.run_as.as_ref().map(|r| Identity {
                groups: prepared.groups.as_ref().map(|g| g.as_ptr()),
                groups_len: prepared.groups.as_ref().map_or(0, Vec::len),
                gid: r.gid,
                uid: r.uid,
            }),
            devnull: self.devnull.as_raw_fd(),
            output: output
                .as_ref()
                .map(|((_, out), (_, err))| (out.as_raw_fd(), err.as_raw_fd())),
            report: std::cell::Cell::new(write.as_raw_fd()),
            master_pid: self.master_pid,
        };
        // Every signal blocked across the fork (see the module's header);
        // the parent's mask is put back right after it, whatever happened.
        let all = nix::sys::signal::SigSet::all();
        let mut before = nix::sys::signal::SigSet::empty();
        let blocked = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&all),
            Some(&mut before),
        );
        // SAFETY: the master is single-threaded, so the child is a copy of
        // a process in which no lock is held; it runs only `Child::run`,
        // which makes async-signal-safe calls on data prepared above and
        // never returns.
        let forked = unsafe { nix::unistd::fork() };
        if blocked.is_ok() && !matches!(forked, Ok(nix::unistd::ForkResult::Child)) {
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&before),
                None,
            );
        }
        match forked {
            // SAFETY: in the child of that fork; every pointer in `child`
            // points into `prepared`, `argv`, `envp`, `slot_var`, `sockets`
            // and `listen_pid`, alive in the child's copy of the address
            // space (the last two are written there, in the child's copy).
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
                if let Some(((stdout, _), (stderr, _))) = output {
                    // The write ends (the second of each pair) close here:
                    // the worker's copies are the only ones, so its death
                    // (and its group's) brings end of file.
                    self.outputs.push(Outputs {
                        pid,
                        slot,
                        stdout,
                        stderr,
                    });
                }
                Ok(Started {
                    pid,
                    exec: ExecWatch {
                        fd: read,
                        program: PathBuf::from(OsStr::from_bytes(prepared.path.as_bytes())),
                        working_directory: spec.working_directory.clone(),
                        spec: Arc::clone(spec),
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
        let program = resolve(&spec.command[0], path_of(spec).as_deref());
        let path = cstring("the command", program.into_vec())?;
        let argv: Vec<CString> = spec
            .command
            .iter()
            .map(|arg| cstring("an argument of the command", arg.as_bytes().to_vec()))
            .collect::<Result<_, _>>()?;
        let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
        // Variables about sockets that someone handed us are not the
        // worker's: it gets ours, or none.
        let protocols = [&ACTIVATION_VARS[..], &SERVER_STARTER_VARS, &notify::VARS];
        for var in protocols.concat() {
            env.remove(OsStr::new(var));
        }
        env.extend(spec.env.iter().cloned());
        let ours = [
            (DIR_VAR, self.board_dir.clone().into_os_string()),
            (STATUS_FD_VAR, spec.status_fd().to_string().into()),
            ("PREFORK_MASTER_PID", self.master_pid.to_string().into()),
        ];
        env.extend(ours.into_iter().map(|(k, v)| (k.into(), v)));
        env.extend(socket_vars(spec));
        env.remove(OsStr::new("LISTEN_PID"));
        // `prefork report` works in a worker without any PATH set-up: our
        // own directory goes last, so it never shadows the worker's choice.
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                let path = env.entry("PATH".into()).or_default();
                let mut dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
                *path = std::env::join_paths(dirs).unwrap_or_else(|_| path.clone());
            }
            env.insert(BIN_VAR.into(), exe.into_os_string());
        }
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
        let sh_argv = [c"/bin/sh".to_owned(), path.clone()]
            .into_iter()
            .chain(argv_tail(&argv))
            .collect();
        let working_directory = spec
            .working_directory
            .as_ref()
            .map(|dir| cstring("the working directory", dir.as_os_str().as_bytes().to_vec()))
            .transpose()?;
        Ok(Prepared {
            spec: Arc::clone(spec),
            path,
            argv,
            sh_argv,
            env,
            working_directory,
            sockets: spec.sockets.iter().map(|l| l.fd()).collect(),
            groups: spec.run_as.as_ref().and_then(|r| r.groups.clone()),
        })
    }
}

const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";

/// A pipe for a relayed stream: (read end, non-blocking, for the master;
/// write end, for the child), both close-on-exec.
fn output_pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Fork(e.into()))?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| SpawnError::Setup(e.into()))?;
    Ok((read, write))
}

/// Server::Starter's variables, which Perl servers (Starman through
/// Net::Server::SS::PreFork, Starlet) read.
const SERVER_STARTER_VARS: [&str; 2] = ["SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION"];

/// The variables that describe a worker's sockets, in systemd's terms and
/// Server::Starter's (`LISTEN_PID` is the child's own, written after fork).
fn socket_vars(spec: &WorkerSpec) -> Vec<(OsString, OsString)> {
    if spec.sockets.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = spec.sockets.iter().map(|l| l.name.as_str()).collect();
    let ports: Vec<String> = spec
        .sockets
        .iter()
        .zip(STATUS_FD..)
        .map(|(l, fd)| format!("{}={fd}", l.bound.server_starter_form()))
        .collect();
    [
        ("LISTEN_FDS", spec.sockets.len().to_string()),
        ("LISTEN_FDNAMES", names.join(":")),
        ("SERVER_STARTER_PORT", ports.join(";")),
        ("SERVER_STARTER_GENERATION", spec.generation.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

/// A limit as setrlimit takes it: the same soft and hard.
fn both(value: u64) -> libc::rlimit {
    libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    }
}

fn argv_tail(argv: &[CString]) -> impl Iterator<Item = CString> + '_ {
    argv.iter().skip(1).cloned()
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect()
}
