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
use super::reader::{self, Read};
use super::record::HEADER_LEN;
use super::{sys, writer, Status, Unreadable};

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

    /// The current status: what the worker wrote (read whole and checked),
    /// nothing yet, or why it cannot be read.
    pub fn status(&self) -> Status {
        self.status_with(&mut Vec::new())
    }

    /// [`status`](WatchedFile::status), reading into `buf` (kept by the
    /// caller from call to call): for a reader of many files, one buffer
    /// instead of a fresh 64 KiB one per file.
    pub fn status_with(&self, buf: &mut Vec<u8>) -> Status {
        match reader::read_status(self.fd.as_raw_fd(), buf, self.max_status_len) {
            Read::Written(status) => Status::Written(status.to_vec()),
            Read::NotYet => Status::NotYet,
            Read::Unreadable(why) => Status::Unreadable(why),
        }
    }

    /// The first `max` bytes of the current status and the whole status's
    /// length: what a one-line display needs, read at a cost bounded by `max`.
    /// A head shorter than the status is not checked against the checksum
    /// (that needs the whole status); it counts once two reads in a row agree
    /// and the file holds as many bytes as the header announces. `None` both
    /// when nothing was written yet and when the record cannot be read:
    /// [`try_status_head`] tells which.
    ///
    /// [`try_status_head`]: WatchedFile::try_status_head
    pub fn status_head(&self, max: usize) -> Option<(Vec<u8>, u64)> {
        self.try_status_head(max).ok().flatten()
    }

    /// [`status_head`], telling a file never written (`Ok(None)`) from one
    /// whose record cannot be read (`Err`, with why).
    ///
    /// [`status_head`]: WatchedFile::status_head
    pub fn try_status_head(&self, max: usize) -> Result<Option<(Vec<u8>, u64)>, Unreadable> {
        reader::read_head(self.fd.as_raw_fd(), max)
    }

    pub(super) fn remove(&self, dir: &BaseDir) {
        if let Ok(st) = sys::fstat(self.fd.as_raw_fd()) {
            reader::remove_dead(dir, &self.name, &st);
        }
    }
}
