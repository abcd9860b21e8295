//! Writing to a descriptor we share with others without blocking and
//! without changing it for them.
//!
//! Setting `O_NONBLOCK` on standard output or error would set it on the
//! open file description that the workers inherit too: their own writes
//! would start failing with EAGAIN. So each kind of descriptor gets the
//! non-blocking write it allows:
//! - a pipe, FIFO or terminal is opened again through `/proc/self/fd`,
//!   which gives the master a description of its own, non-blocking;
//! - a socket (journald's stream) takes `send` with `MSG_DONTWAIT`;
//! - a regular file or `/dev/null` never blocks for long: written as is;
//! - where none of these applies (no `/proc`), a write is made only when
//!   `poll` says now that the descriptor is writable, and of at most
//!   `PIPE_BUF` bytes, which a pipe with room takes without waiting.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub enum Destination {
    /// Our own non-blocking description of the same pipe or terminal.
    Reopened(OwnedFd),
    Socket(RawFd),
    Plain(RawFd),
    /// A write only after a zero-timeout poll, at most `PIPE_BUF` bytes.
    Guarded(RawFd),
}

impl Destination {
    pub fn open(fd: RawFd) -> Destination {
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            return Destination::Plain(fd); // closed: writes fail with EBADF
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFBLK => Destination::Plain(fd),
            libc::S_IFSOCK => Destination::Socket(fd),
            _ => match reopen(fd) {
                Ok(own) => Destination::Reopened(own),
                Err(_) => Destination::Guarded(fd),
            },
        }
    }

    pub fn fd(&self) -> RawFd {
        match self {
            Destination::Reopened(own) => own.as_raw_fd(),
            Destination::Socket(fd) | Destination::Plain(fd) | Destination::Guarded(fd) => *fd,
        }
    }

    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let n = match self {
            Destination::Reopened(_) | Destination::Plain(_) => {
                // SAFETY: a valid buffer and its length; the descriptor may be
                // closed, which write reports as EBADF.
                unsafe { libc::write(self.fd(), bytes.as_ptr().cast(), bytes.len()) }
            }
            Destination::Socket(fd) => {
                let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
                // SAFETY: as for write; send never blocks with MSG_DONTWAIT.
                unsafe { libc::send(*fd, bytes.as_ptr().cast(), bytes.len(), flags) }
            }
            Destination::Guarded(fd) => {
                if !writable_now(*fd)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let len = bytes.len().min(libc::PIPE_BUF);
                // SAFETY: as above, with at most the buffer's length.
                unsafe { libc::write(*fd, bytes.as_ptr().cast(), len) }
            }
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// A new, non-blocking open file description of what `fd` refers to.
fn reopen(fd: RawFd) -> io::Result<OwnedFd> {
    let path = CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a path of digits");
    let flags = libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    // SAFETY: a NUL-terminated path; the result is checked below.
    let own = unsafe { libc::open(path.as_ptr(), flags) };
    if own < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(own) })
}

fn writable_now(fd: RawFd) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err(io::Error::from_raw_os_error(libc::EPIPE));
    }
    Ok(pfd.revents & libc::POLLOUT != 0)
}
