//! A manager's standing view of one known worker's status file. A
//! supervisor knows its workers from `waitpid`, so instead of scanning and
//! re-opening every file on every check (what `read_all` must do), it keeps
//! each worker's file open and asks the kernel one `fstat` per check.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::SystemTime;

use super::dir::BaseDir;
use super::error::{io_error, Result};
use super::reader::{self, LiveFile};
use super::record::HEADER_LEN;
use super::{sys, writer};

/// What one `fstat` says about a watched status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    /// Last write (or creation, when never written): every update counts.
    pub updated: SystemTime,
    /// The worker has written a status at least once.
    pub written: bool,
    /// The file still has a name in the directory (it was not removed).
    pub linked: bool,
}

/// An open, read-only descriptor on one worker's `status_<id>`.
#[derive(Debug)]
pub struct WatchedFile {
    fd: OwnedFd,
    id: String,
    name: CString,
    max_status_len: usize,
}

impl WatchedFile {
    pub(super) fn open(dir: &BaseDir, id: &str, max_status_len: usize) -> Result<Self> {
        let (_, name) = writer::names(id)?;
        let path = || dir.join(&format!("status_{id}"));
        let fd = sys::open_existing(dir.fd(), &name).map_err(|e| io_error("open", path(), e))?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_error("stat", path(), e))?;
        if !sys::is_regular(&st) {
            let e = io::Error::new(io::ErrorKind::InvalidData, "not a regular file");
            return Err(io_error("watch", path(), e));
        }
        Ok(WatchedFile {
            fd,
            id: id.to_string(),
            name,
            max_status_len,
        })
    }

    /// The worker id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// One `fstat`: when the file was last written, and whether it ever was.
    pub fn state(&self) -> io::Result<FileState> {
        let st = sys::fstat(self.fd.as_raw_fd())?;
        Ok(FileState {
            updated: reader::mtime(&st),
            written: st.st_size >= HEADER_LEN as i64,
            linked: st.st_nlink > 0,
        })
    }

    /// Whether some process still holds the file's lock. When none does
    /// (the worker closed its descriptor), the probe's lock is released at
    /// once, so that other readers see the file as dead too.
    pub fn is_held(&self) -> io::Result<bool> {
        let fd = self.fd.as_raw_fd();
        let free = sys::try_lock(fd)?;
        if free {
            // SAFETY: flock takes no pointer, and `fd` is open: `self.fd` owns it.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
        }
        Ok(!free)
    }

    /// The current status, when the worker has written one that reads back
    /// consistently.
    pub fn status(&self) -> Option<Vec<u8>> {
        let stat = sys::fstat(self.fd.as_raw_fd()).ok()?;
        let file = LiveFile {
            id: &self.id,
            fd: self.fd.as_raw_fd(),
            stat,
        };
        let mut buf = Vec::new();
        let path = || format!("status_{}", self.id);
        reader::read_status(&file, &mut buf, self.max_status_len, path).map(<[u8]>::to_vec)
    }

    /// The first `max` bytes of the current status and the whole status's
    /// length: what a one-line display needs, read at a cost bounded by `max`
    /// (a head longer than that is not checked against the checksum; see
    /// [`reader::read_head`]).
    pub fn status_head(&self, max: usize) -> Option<(Vec<u8>, u64)> {
        reader::read_head(self.fd.as_raw_fd(), max)
    }

    pub(super) fn remove(&self, dir: &BaseDir) {
        if let Ok(st) = sys::fstat(self.fd.as_raw_fd()) {
            reader::remove_dead(dir, &self.name, &st);
        }
    }
}
