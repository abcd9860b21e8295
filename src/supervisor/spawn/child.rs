//! The child's side, between `fork` and `exec`: async-signal-safe calls
//! only, on data the parent prepared (see the list in [`super`]'s header).

use std::os::fd::RawFd;

use nix::unistd::Pid;

use super::{Stage, LISTEN_PID_PREFIX, REPORT_LEN, STATUS_FD};
use crate::scoreboard::ForkRegistrar;

/// What the child runs on: raw pointers into data the parent keeps alive
/// (the child has its own copy of the whole address space).
pub(super) struct Child {
    pub(super) path: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) sh_argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
    pub(super) working_directory: Option<*const libc::c_char>,
    pub(super) registrar: ForkRegistrar,
    /// The master's listening sockets, `socket_count` of them, for
    /// descriptors 3, 4, ...; the child overwrites the array with the
    /// numbers it moved them to.
    pub(super) sockets: *mut RawFd,
    pub(super) socket_count: usize,
    /// `LISTEN_PID=` and room for digits and a NUL: 32 bytes.
    pub(super) listen_pid: *mut u8,
    pub(super) nofile: Option<libc::rlimit>,
    pub(super) devnull: RawFd,
    /// The write ends of the output pipes, for descriptors 1 and 2, when
    /// the master relays the worker's output.
    pub(super) output: Option<(RawFd, RawFd)>,
    pub(super) report: std::cell::Cell<RawFd>,
    pub(super) master_pid: libc::pid_t,
    /// The worker's own limits, umask, nice value, and the user it
    /// switches to (see [`Identity`]).
    pub(super) rlimit_core: Option<libc::rlimit>,
    pub(super) nice: Option<libc::c_int>,
    pub(super) umask: Option<libc::mode_t>,
    pub(super) identity: Option<Identity>,
}

/// The privilege drop, in numbers resolved before the fork.
pub(super) struct Identity {
    /// The supplementary groups (`groups_len` of them), or none to keep.
    pub(super) groups: Option<*const libc::gid_t>,
    pub(super) groups_len: usize,
    pub(super) gid: libc::gid_t,
    pub(super) uid: Option<libc::uid_t>,
}

impl Child {
    /// The child's side, between fork and exec. Async-signal-safe only: no
    /// allocation, no lock, no return.
    ///
    /// # Safety
    /// Only in the child of `fork`, with every pointer valid.
    pub(super) unsafe fn run(&self) -> ! {
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
        // Default dispositions for every signal: handlers are reset by exec
        // anyway, but an ignored signal would stay ignored, and the master
        // (Rust ignores SIGPIPE) or its parent may have ignored some. Then
        // an empty mask (the master forked with every signal blocked, and
        // its parent may have blocked some): a signal sent to this worker
        // since the fork, pending until now, has its default effect here,
        // not the master's handler's.
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                default_disposition(sig);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // The worker gets its sockets at 3.. and its status file after
        // them. What must survive that placing (the report pipe, the
        // sockets themselves) moves above, first.
        let status_fd = STATUS_FD + self.socket_count as i32;
        let above = status_fd + 1;
        let report = libc::fcntl(self.report.get(), libc::F_DUPFD_CLOEXEC, above);
        if report < 0 {
            self.fail(Stage::Setup, errno());
        }
        self.report.set(report);
        let sockets = std::slice::from_raw_parts_mut(self.sockets, self.socket_count);
        for fd in sockets.iter_mut() {
            *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above);
            if *fd < 0 {
                self.fail(Stage::Setup, errno());
            }
        }
        // Relayed output: the pipes onto 1 and 2, from copies above, so
        // that neither can be overwritten by the other's placing (nor left
        // close-on-exec by a dup2 onto itself).
        if let Some((out, err)) = self.output {
            let out = libc::fcntl(out, libc::F_DUPFD_CLOEXEC, above);
            let err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, above);
            if out < 0 || err < 0 || libc::dup2(out, 1) < 0 || libc::dup2(err, 2) < 0 {
                self.fail(Stage::Setup, errno());
            }
        }
        // A background group reading the terminal would be stopped by
        // SIGTTIN: no stdin.
        if libc::dup2(self.devnull, 0) < 0 {
            self.fail(Stage::Stdin, errno());
        }
        if let Err(e) = self.registrar.register(status_fd) {
            self.fail(Stage::Register, e);
        }
        // dup2 leaves the copy without close-on-exec: it stays for exec.
        for (target, fd) in (STATUS_FD..).zip(sockets.iter()) {
            if libc::dup2(*fd, target) < 0 {
                self.fail(Stage::Setup, errno());
            }
        }
        if self.socket_count > 0 {
            write_pid(self.listen_pid, libc::getpid());
        }
        if let Some(dir) = self.working_directory {
            if libc::chdir(dir) < 0 {
                self.fail(Stage::Chdir, errno());
            }
        }
        cloexec_above(status_fd);
        // The descriptor limit the master was started with (a worker written
        // for it, with select() say, must not get the master's raised one),
        // or the configured one. Late: until exec closes them, the child
        // holds the master's descriptors, above that limit, and registering
        // needs one more.
        if let Some(limit) = &self.nofile {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limit) < 0 {
                self.fail(Stage::Nofile, errno());
            }
        }
        if let Some(limit) = &self.rlimit_core {
            if libc::setrlimit(libc::RLIMIT_CORE, limit) < 0 {
                self.fail(Stage::Core, errno());
            }
        }
        if let Some(nice) = self.nice {
            // `which` is an int in POSIX and an enum in glibc's header.
            if libc::setpriority(libc::PRIO_PROCESS as _, 0, nice) < 0 {
                self.fail(Stage::Nice, errno());
            }
        }
        if let Some(mask) = self.umask {
            libc::umask(mask);
        }
        if let Some(identity) = &self.identity {
            self.drop_privileges(identity);
        }
        libc::execve(self.path, self.argv, self.envp);
        let e = errno();
        if e == libc::ENOEXEC {
            libc::execve(*self.sh_argv, self.sh_argv, self.envp);
        }
        self.fail(Stage::Exec, e)
    }

    /// Last before exec: everything that needed the master's privileges
    /// (its status file, opened read-write and locked; its sockets; the
    /// limits) is done. Groups first: once the uid is not root's, neither
    /// setgroups nor setgid is allowed.
    ///
    /// # Safety
    /// Only in the child of `fork`, with `to.groups` valid.
    unsafe fn drop_privileges(&self, to: &Identity) {
        if let Some(groups) = to.groups {
            if libc::setgroups(to.groups_len, groups) < 0 {
                self.fail(Stage::Groups, errno());
            }
        }
        if libc::setgid(to.gid) < 0 {
            self.fail(Stage::Group, errno());
        }
        if let Some(uid) = to.uid {
            if libc::setuid(uid) < 0 {
                self.fail(Stage::User, errno());
            }
        }
        // A change of effective uid or gid clears the parent-death signal
        // (prctl(2)): set it again, and check again that the master lives.
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
            self.fail(Stage::Setup, e as i32);
        }
        if nix::unistd::getppid().as_raw() != self.master_pid {
            self.fail(Stage::Setup, libc::ESRCH);
        }
    }

    /// Reports the failed stage and its errno to the master, and exits.
    unsafe fn fail(&self, stage: Stage, errno: i32) -> ! {
        let mut report = [0u8; REPORT_LEN];
        report[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
        report[4..].copy_from_slice(&errno.to_ne_bytes());
        // A pipe takes 8 bytes at once; if the master is gone, nobody cares.
        libc::write(self.report.get(), report.as_ptr().cast(), REPORT_LEN);
        libc::_exit(127)
    }
}

/// Writes `pid`'s digits and a NUL after `LISTEN_PID=` in `buf` (32 bytes):
/// no allocation, no formatting machinery.
///
/// # Safety
/// `buf` points to 32 writable bytes.
unsafe fn write_pid(buf: *mut u8, pid: libc::pid_t) {
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut count = 0;
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut at = LISTEN_PID_PREFIX.len();
    for i in (0..count).rev() {
        *buf.add(at) = digits[i];
        at += 1;
    }
    *buf.add(at) = 0;
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
