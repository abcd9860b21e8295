//! The worker's side: its own status file, created locked, written in place,
//! and recognised as inherited after a `fork`.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use super::dir::BaseDir;
use super::error::{io_error, Error, Result};
use super::record::{self, HEADER_LEN, MAX_STATUS_LEN};
use super::sys;

/// Counts the forks of this process's ancestors-to-self chain as seen from
/// here: the atfork child handler bumps it in every child. A handle that
/// remembers the generation it opened its file in knows it was inherited
/// without calling `getpid` (a real system call since glibc 2.25) on every
/// update.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn on_fork_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Installs the atfork handler. Called when a scoreboard is built, before
/// any status file can exist, so every later fork is counted.
pub fn watch_forks() {
    ATFORK.call_once(|| {
        // SAFETY: the handler only does an atomic increment, which is
        // async-signal-safe as the child side of fork requires.
        unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
    });
}

pub fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Statuses up to this size are copied next to their header on the stack
/// and written with one `pwrite`; larger ones go out with one `pwritev`.
const STACK_RECORD: usize = 4096;

/// A status file this process created (or adopted) and holds locked.
#[derive(Debug)]
pub struct OwnFile {
    fd: OwnedFd,
    id: String,
    fork_generation: u64,
}

impl OwnFile {
    /// Creates `status_<id>` through `status_<id>.tmp`, locked.
    pub fn create(dir: &BaseDir, id: String) -> Result<Self> {
        let (tmp, name) = names(&id)?;
        let fd = sys::create_locked(dir.fd(), &tmp, &name).map_err(|errno| {
            io_error(
                "create and lock status file",
                dir.join(&format!("status_{id}.tmp")),
                std::io::Error::from_raw_os_error(errno),
            )
        })?;
        Ok(OwnFile {
            fd,
            id,
            fork_generation: fork_generation(),
        })
    }

    /// Takes over a descriptor that a supervisor created and locked for us.
    pub fn adopt(fd: OwnedFd, id: String) -> Self {
        OwnFile {
            fd,
            id,
            fork_generation: fork_generation(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True in the process that opened it; false in a forked child.
    pub fn is_owned_here(&self) -> bool {
        self.fork_generation == fork_generation()
    }

    pub fn write(&self, dir: &BaseDir, status: &[u8]) -> Result<()> {
        write_record(self.fd(), status).map_err(|e| match e {
            WriteError::TooLarge(len) => Error::StatusTooLarge { len },
            WriteError::Io(e) => io_error(
                "write status to",
                dir.join(&format!("status_{}", self.id)),
                e,
            ),
        })
    }

    /// Closes the file; in its owner process also removes it, but only if
    /// the name still refers to our file (a successor with our id may have
    /// renamed its own into place).
    pub fn close(self, dir: &BaseDir) {
        if self.is_owned_here() {
            if let Ok((_, name)) = names(&self.id) {
                let ours = sys::fstat(self.fd());
                let named = sys::stat_at(dir.fd(), &name);
                if let (Ok(ours), Ok(named)) = (ours, named) {
                    if sys::same_file(&ours, &named) {
                        let _ = sys::unlinkat(dir.fd(), &name);
                    }
                }
            }
        }
        // Closing an inherited descriptor does not release the parent's lock:
        // flock locks belong to the open file description, which the parent
        // still holds. Never LOCK_UN here.
        drop(self.fd);
    }
}

pub enum WriteError {
    TooLarge(usize),
    Io(std::io::Error),
}

/// Writes `status`'s whole record at offset 0 of `fd`: one `pwrite` (small
/// statuses are copied next to their header on the stack) or one `pwritev`.
pub fn write_record(fd: RawFd, status: &[u8]) -> std::result::Result<(), WriteError> {
    if status.len() > MAX_STATUS_LEN {
        return Err(WriteError::TooLarge(status.len()));
    }
    let header = record::header(status);
    let result = if status.len() <= STACK_RECORD - HEADER_LEN {
        // Not zero-filled: clearing 4 KiB took a fifth of a small update.
        let mut buf = std::mem::MaybeUninit::<[u8; STACK_RECORD]>::uninit();
        let len = HEADER_LEN + status.len();
        let start = buf.as_mut_ptr().cast::<u8>();
        // SAFETY: both copies stay within the buffer (len <= STACK_RECORD),
        // and the slice below covers exactly the bytes they initialised.
        let record = unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), start, HEADER_LEN);
            std::ptr::copy_nonoverlapping(status.as_ptr(), start.add(HEADER_LEN), status.len());
            std::slice::from_raw_parts(start, len)
        };
        sys::pwrite_at_zero(fd, record)
    } else {
        sys::pwrite2_at_zero(fd, &header, status)
    };
    result.map_err(WriteError::Io)
}

/// Checks an id and returns the names `status_<id>.tmp` and `status_<id>`.
pub fn names(id: &str) -> Result<(CString, CString)> {
    let bad = id.is_empty() || id.contains(['/', '\0']) || id.ends_with(".tmp");
    if bad {
        return Err(Error::BadWorkerId { id: id.to_string() });
    }
    // The checks above rule out interior NULs.
    let name = CString::new(format!("status_{id}")).expect("no NUL in id");
    let tmp = CString::new(format!("status_{id}.tmp")).expect("no NUL in id");
    Ok((tmp, name))
}

/// Registers a freshly forked worker on the board, between `fork` and
/// `exec`: creates and locks `status_<pid>` and leaves it open, without
/// close-on-exec, as a chosen descriptor number that survives `exec`.
///
/// Obtained from [`Scoreboard::fork_registrar`](super::Scoreboard::fork_registrar)
/// before forking; it is a copy of the handle's directory descriptor, so the
/// child needs nothing that would allocate.
#[derive(Debug, Clone, Copy)]
pub struct ForkRegistrar {
    pub(super) dir_fd: RawFd,
}

impl ForkRegistrar {
    /// Async-signal-safe: only `getpid`, `openat`, `flock`, `renameat`,
    /// `dup2`/`fcntl` and `close`, with names formatted on the stack.
    /// Returns the errno of the first call that failed.
    pub fn register(&self, target_fd: RawFd) -> std::result::Result<(), i32> {
        // SAFETY: getpid takes no argument and cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut tmp_buf = [0u8; 40];
        let mut name_buf = [0u8; 40];
        let tmp = pid_name(&mut tmp_buf, pid, true);
        let name = pid_name(&mut name_buf, pid, false);
        let fd = sys::create_locked(self.dir_fd, tmp, name)?;
        let raw = fd.as_raw_fd();
        if raw == target_fd {
            // Already at the right number: keep it across exec.
            // SAFETY: F_SETFD takes an integer, not a pointer, and `raw` is
            // open: `fd` owns it.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } < 0 {
                return Err(errno());
            }
            std::mem::forget(fd);
        } else {
            // SAFETY: dup2 takes no pointer; `raw` is open (`fd` owns it), and
            // whatever `target_fd` was is the caller's to replace: it asked
            // for the status file at that number.
            if unsafe { libc::dup2(raw, target_fd) } < 0 {
                return Err(errno());
            }
        }
        // Dropping `fd` (when it is not the target) closes the original; the
        // duplicate keeps the open file description and so the lock.
        Ok(())
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Writes `status_<pid>[.tmp]\0` into `buf` without allocating.
fn pid_name(buf: &mut [u8; 40], pid: libc::pid_t, tmp: bool) -> &CStr {
    const PREFIX: &[u8] = b"status_";
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut len = PREFIX.len();
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
    for i in (0..count).rev() {
        buf[len] = digits[i];
        len += 1;
    }
    if tmp {
        buf[len..len + 4].copy_from_slice(b".tmp");
        len += 4;
    }
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).expect("exactly one NUL, at the end")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_names_without_allocating() {
        let mut buf = [0u8; 40];
        assert_eq!(pid_name(&mut buf, 0, false).to_bytes(), b"status_0");
        assert_eq!(
            pid_name(&mut buf, 4194304, true).to_bytes(),
            b"status_4194304.tmp"
        );
        assert_eq!(
            pid_name(&mut buf, i32::MAX, false).to_bytes(),
            b"status_2147483647"
        );
    }

    #[test]
    fn ids_that_would_escape_or_clash_are_refused() {
        for id in ["", "a/b", "x.tmp", "nul\0"] {
            assert!(names(id).is_err(), "{id:?}");
        }
        assert!(names("42").is_ok());
        assert!(names("worker-a").is_ok());
    }
}
