//! Thin wrappers over the `*at` system calls the scoreboard is built on.
//!
//! Everything is relative to the base directory's descriptor, so a directory
//! renamed or swapped under us by someone else cannot redirect a write or an
//! unlink. Names are `CStr`s built by the caller. None of these allocate, so the
//! ones used after `fork` ([`create_locked`]) stay async-signal-safe.

use std::ffi::CStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Retries `f` while it fails with EINTR.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a NUL-terminated string that outlives the call, and
    // openat only reads it.
    let fd =
        retry(|| cvt(unsafe { libc::openat(dir, name.as_ptr(), flags, mode as libc::c_uint) }))?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens an existing entry for reading, never following a symlink and never
/// blocking (a FIFO planted under a status name must not hang the reader).
pub fn open_existing(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    openat(dir, name, flags, 0)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a writable buffer of the size fstat fills.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, so it filled the struct.
    Ok(unsafe { st.assume_init() })
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and outlives the call, and `st` is a
    // writable buffer of the size fstatat fills.
    cvt(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so it filled the struct.
    Ok(unsafe { st.assume_init() })
}

pub fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn same_file(a: &libc::stat, b: &libc::stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Takes the exclusive lock without waiting: `Ok(true)` when it was free
/// (the owner is dead), `Ok(false)` when another open file holds it.
pub fn try_lock(fd: RawFd) -> io::Result<bool> {
    // SAFETY: flock takes no pointer; on a descriptor that is not open it
    // fails with EBADF.
    match retry(|| cvt(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) })) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and outlives the call.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map(drop)
}

/// One `pread` from offset 0 into `buf`.
pub fn pread_once(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry(|| {
        // SAFETY: pread writes at most `buf.len()` bytes into `buf`, which is
        // exclusively borrowed for the call.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })
}

/// Writes `head` then `body` from offset 0: one `pwritev` in the common
/// case, continuing with `pwrite` if the kernel writes less.
pub fn pwrite2_at_zero(fd: RawFd, head: &[u8], body: &[u8]) -> io::Result<()> {
    let iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: body.as_ptr() as *mut libc::c_void,
            iov_len: body.len(),
        },
    ];
    let mut written = retry(|| {
        // SAFETY: both iovecs point at live slices of the stated lengths,
        // which pwritev only reads (the `*mut` is the C API's, not a write).
        let n = unsafe { libc::pwritev(fd, iov.as_ptr(), 2, 0) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    })?;
    // A short write (a signal, or a huge status) is rare: finish piece by piece.
    while written < head.len() {
        written += pwrite_once(fd, &head[written..], written)?;
    }
    let total = head.len() + body.len();
    while written < total {
        written += pwrite_once(fd, &body[written - head.len()..], written)?;
    }
    Ok(())
}

/// One `pwrite` of `buf` at offset 0, looping only on a short write.
pub fn pwrite_at_zero(fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut written = 0;
    while written < buf.len() {
        written += pwrite_once(fd, &buf[written..], written)?;
    }
    Ok(())
}

fn pwrite_once(fd: RawFd, buf: &[u8], offset: usize) -> io::Result<usize> {
    retry(|| {
        // SAFETY: pwrite reads at most `buf.len()` bytes from `buf`, a live slice.
        let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), offset as libc::off_t) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwrite wrote nothing",
            )),
            n => Ok(n as usize),
        }
    })
}

/// Creates `tmp` in `dir` exclusively (never through a symlink), locks it and
/// renames it to `name`, so that readers never see an unlocked status file of
/// a live worker. A stale `tmp` of the same id (left by a dead process whose id
/// we now have) is removed and the creation tried again.
///
/// Async-signal-safe: raw system calls only, no allocation, errors as errno.
/// The descriptor is close-on-exec.
pub fn create_locked(dir: RawFd, tmp: &CStr, name: &CStr) -> Result<OwnedFd, i32> {
    let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let mut attempts = 0;
    let fd = loop {
        match openat(dir, tmp, flags, 0o644) {
            Ok(fd) => break fd,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && attempts < 3 => {
                attempts += 1;
                // The name carries our own id, so nobody alive owns it. unlinkat
                // removes the entry itself, even a planted symlink: never its target.
                let _ = unlinkat(dir, tmp);
            }
            Err(e) => return Err(e.raw_os_error().unwrap_or(libc::EIO)),
        }
    };
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes no pointer, and `fd` is open: we own it.
    retry(|| cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) }))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    // SAFETY: both names are NUL-terminated and outlive the call.
    if let Err(e) = cvt(unsafe { libc::renameat(dir, tmp.as_ptr(), dir, name.as_ptr()) }) {
        let _ = unlinkat(dir, tmp);
        return Err(e.raw_os_error().unwrap_or(libc::EIO));
    }
    Ok(fd)
}
