//! The descriptors the master keeps for its workers: descriptor 3 reserved
//! for their status files, and the descriptor limit (raised for the master,
//! given back to the workers).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::STATUS_FD;

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

pub(super) fn nofile_soft_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur
}

/// Raises the master's soft descriptor limit to its hard one, as systemd and
/// the Go runtime do: a thousand workers' status files and exec pipes do
/// not fit in the common soft limit of 1024. Returns the limit it was
/// started with, for the workers, when it changed it.
pub fn raise_nofile_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } < 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return None;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given.
    (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0).then_some(limit)
}
