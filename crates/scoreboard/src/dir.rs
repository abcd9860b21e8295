//! The base directory: created when missing, checked, and held open as a
//! descriptor that every other operation is relative to.
//!
//! One rule decides who may use a directory, for the supervisor, for a
//! worker and for `prefork status` alike:
//!
//! - a world-writable directory without the sticky bit is refused to
//!   everyone: anyone could replace anyone's status files, so not even what
//!   is read there means anything;
//! - writing (creating, updating or removing any file) needs a directory
//!   owned by our effective user or by root. Its owner can remove, replace or
//!   plant files in it at will, so a process writing into another user's
//!   directory works in a place that user controls (and a root reader
//!   removing files on that user's behalf does so with root's privileges);
//!   root is no such risk, as it can do all of that anywhere anyway;
//! - reading needs no more: a monitor reading the board of a service that
//!   runs as another user is common and harmless, and what it reads is only
//!   as trustworthy as the directory's owner, the service's user. A handle
//!   that accepts a foreign owner ([`Builder::allow_foreign_owner`], and so
//!   [`Builder::monitor`]) is therefore read-only there: it never creates nor
//!   removes a file, not even a dead worker's, which is left to the owner's
//!   own readers and supervisor.
//!
//! [`Builder::allow_foreign_owner`]: crate::Builder::allow_foreign_owner
//! [`Builder::monitor`]: crate::Builder::monitor

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::error::{io_error, Error, Result};
use super::sys;

#[derive(Debug)]
pub struct BaseDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Why we may not write here (see the module's rule), when we may not.
    read_only: Option<String>,
}

impl BaseDir {
    /// Creates `path` (and its parents) with `mode` when missing (unless
    /// `mode` is `None`), opens it and applies the module's rule: refused if
    /// anyone may tamper with it; if it belongs to another user, refused
    /// unless `allow_foreign_owner`, and then read-only.
    pub fn open(path: &Path, mode: Option<u32>, allow_foreign_owner: bool) -> Result<Self> {
        if let Some(mode) = mode {
            // recursive(true) tolerates another process creating it at the same time.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(path)
                .map_err(|e| match e.kind() {
                    // EEXIST from mkdir means that something else stands there.
                    io::ErrorKind::AlreadyExists => {
                        let e = io::Error::new(e.kind(), "it exists and is not a directory");
                        io_error("create the scoreboard directory", path, e)
                    }
                    _ => io_error("create directory", path, e),
                })?;
        }
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| {
            io_error(
                "open directory",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })?;
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        let fd = sys::openat(libc::AT_FDCWD, &cpath, flags, 0)
            .map_err(|e| io_error("open directory", path, e))?;
        let st = sys::fstat(fd.as_raw_fd()).map_err(|e| io_error("stat directory", path, e))?;
        check_safe(path, &st)?;
        let read_only = foreign_owner(&st);
        if let (Some(fact), false) = (&read_only, allow_foreign_owner) {
            return Err(not_for_writing(path, fact));
        }
        Ok(BaseDir {
            fd,
            path: path.to_path_buf(),
            read_only,
        })
    }

    /// Whether the path still names the directory we opened: not removed
    /// (a tmpfiles cleaner, logind's RemoveIPC), renamed or replaced.
    pub fn is_current(&self) -> bool {
        let Ok(named) = std::fs::metadata(&self.path) else {
            return false;
        };
        use std::os::unix::fs::MetadataExt;
        sys::fstat(self.fd.as_raw_fd()).is_ok_and(|ours| {
            ours.st_nlink > 0 && ours.st_dev == named.dev() && ours.st_ino == named.ino()
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why this process may not write in the directory, if it may not.
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// Makes the handle read-only whoever owns the directory, saying
    /// `reason` (a foreign owner's fact, when there is one, is kept).
    pub fn forbid_writes(&mut self, reason: String) {
        self.read_only.get_or_insert(reason);
    }

    /// Fails, with the error that opening the directory for writing would
    /// have given, unless we may write in it.
    pub fn check_writable(&self) -> Result<()> {
        match &self.read_only {
            None => Ok(()),
            Some(fact) => Err(not_for_writing(&self.path, fact)),
        }
    }

    /// The full path of an entry, for error messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn insecure(path: &Path, reason: String) -> Error {
    Error::InsecureDir {
        path: path.to_path_buf(),
        reason,
    }
}

/// Refuses a directory that anyone may tamper with, whoever we are.
fn check_safe(path: &Path, st: &libc::stat) -> Result<()> {
    if st.st_mode & 0o002 != 0 && st.st_mode & libc::S_ISVTX == 0 {
        return Err(insecure(
            path,
            format!(
                "it is world-writable (mode {:o}) without the sticky bit, so anyone could replace status files; \
                 use a private directory or `chmod o-w` it",
                st.st_mode & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Why we may not write in a directory of this owner ("it is owned by uid
/// 1000 and we run as uid 0"): it is neither our effective user nor root.
/// `None` when we may.
fn foreign_owner(st: &libc::stat) -> Option<String> {
    // SAFETY: geteuid takes no argument and cannot fail.
    let me = unsafe { libc::geteuid() };
    (st.st_uid != me && st.st_uid != 0)
        .then(|| format!("it is owned by uid {} and we run as uid {me}", st.st_uid))
}

fn not_for_writing(path: &Path, fact: &str) -> Error {
    insecure(
        path,
        format!(
            "{fact}, and we write only in a directory of our own user or of root \
             (a monitor that only reads may use another user's)"
        ),
    )
}
