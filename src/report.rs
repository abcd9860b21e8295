//! `prefork report STATUS`: a worker in any language (a shell script, say)
//! writes its status to the status file prefork handed it as
//! `PREFORK_STATUS_FD`. It runs in a loop, so it does the least it can: no
//! directory, no lock, one `fstat` and one `pwrite`.

use std::io::Read;
use std::os::fd::BorrowedFd;

use anyhow::{bail, Context, Result};

use crate::scoreboard::{self, STATUS_FD_VAR};

/// Writes `status` (or standard input, for `-`) as the worker's status.
pub fn run(status: &[u8]) -> Result<()> {
    let fd = status_fd()?;
    let mut from_stdin = Vec::new();
    let status = if status == b"-" {
        std::io::stdin()
            .read_to_end(&mut from_stdin)
            .context("cannot read the status from standard input")?;
        &from_stdin[..]
    } else {
        status
    };
    // SAFETY: status_fd() checked that the descriptor is open, and this
    // process does not close it while the borrow lives.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    scoreboard::write_status_to(fd, status)?;
    Ok(())
}

fn status_fd() -> Result<i32> {
    const UNDER_PREFORK: &str = "`prefork report` must run in a worker started by prefork";
    let Some(value) = std::env::var_os(STATUS_FD_VAR) else {
        bail!("{UNDER_PREFORK}: {STATUS_FD_VAR} is not set");
    };
    let value = value.to_string_lossy();
    let Ok(fd) = value.parse::<i32>() else {
        bail!("{UNDER_PREFORK}: {STATUS_FD_VAR}={value:?} is not a descriptor number");
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is a writable buffer of the size fstat fills; a descriptor
    // number that is not open makes it fail with EBADF, nothing worse.
    if fd < 0 || unsafe { libc::fstat(fd, st.as_mut_ptr()) } < 0 {
        bail!(
            "{UNDER_PREFORK}: descriptor {fd} ({STATUS_FD_VAR}) is closed: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: fstat succeeded and filled the struct.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        bail!("{UNDER_PREFORK}: descriptor {fd} ({STATUS_FD_VAR}) is not a status file");
    }
    Ok(fd)
}
