//! The base directory: created when missing, checked, and held open as a
//! descriptor that every other operation is relative to.

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
}

impl BaseDir {
    /// Creates `path` (and its parents) with `mode` when missing (unless
    /// `mode` is `None`), opens it and refuses a directory that others could
    /// tamper with.
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
        check_safe(path, &st, allow_foreign_owner)?;
        Ok(BaseDir {
            fd,
            path: path.to_path_buf(),
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

    /// The full path of an entry, for error messages.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

fn check_safe(path: &Path, st: &libc::stat, allow_foreign_owner: bool) -> Result<()> {
    let insecure = |reason: String| Error::InsecureDir {
        path: path.to_path_buf(),
        reason,
    };
    if st.st_mode & 0o002 != 0 && st.st_mode & libc::S_ISVTX == 0 {
        return Err(insecure(format!(
            "it is world-writable (mode {:o}) without the sticky bit, so anyone could replace status files; \
             use a private directory or `chmod o-w` it",
            st.st_mode & 0o7777
        )));
    }
    // SAFETY: geteuid takes no argument and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !allow_foreign_owner && st.st_uid != me && st.st_uid != 0 {
        return Err(insecure(format!(
            "it is owned by uid {} and we run as uid {me}; use a directory of our own",
            st.st_uid
        )));
    }
    Ok(())
}
