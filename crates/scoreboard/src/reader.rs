//! The manager's side: list the directory, tell live workers from dead ones
//! by their lock, read the live ones' records, remove the dead ones' files.
//!
//! Everything in the directory is untrusted: a reader skips what is not a
//! status file, says why a live worker's record cannot be read, never panics
//! on it, and never sizes an allocation by a header.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::dir::{Dir, Type};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::dir::BaseDir;
use super::error::{io_error, Result};
use super::record::{self, Parsed, HEADER_LEN};
use super::status::{Unreadable, READ_ATTEMPTS};
use super::sys;

/// The first read of a file takes this much; a longer record grows the buffer.
const INITIAL_READ: usize = 64 * 1024;

/// A live worker's status file, as found by a directory scan.
pub struct LiveFile<'a> {
    pub id: &'a str,
    pub fd: RawFd,
    pub stat: libc::stat,
}

/// Calls `visit` for each live worker's status file, and removes the files
/// of dead workers on the way. `own_id`'s file is treated as live without
/// probing its lock (we hold it through another descriptor). Ids for which
/// `known` is true are passed over without even being opened: a supervisor
/// watches its own workers' files through descriptors it keeps open.
pub fn scan(
    dir: &BaseDir,
    own_id: Option<&str>,
    known: &dyn Fn(&str) -> bool,
    mut visit: impl FnMut(LiveFile<'_>),
) -> Result<()> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut listing = Dir::openat(Some(dir.fd()), ".", flags, Mode::empty())
        .map_err(|e| io_error("list directory", dir.path(), e.into()))?;
    for entry in listing.iter() {
        // An entry that vanishes or fails mid-listing is simply not there.
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(id) = status_id(name) else { continue };
        if known(id) {
            continue;
        }
        // Anything but a regular file (a symlink, a directory, a FIFO) is
        // skipped without opening it; DT_UNKNOWN is settled by fstat below.
        if matches!(entry.file_type(), Some(t) if t != Type::File) {
            continue;
        }
        let Ok(file) = sys::open_existing(dir.fd(), name) else {
            continue; // vanished, a symlink (ELOOP), or not ours to read
        };
        let Ok(stat) = sys::fstat(file.as_raw_fd()) else {
            continue;
        };
        if !sys::is_regular(&stat) {
            continue;
        }
        if own_id != Some(id) {
            match sys::try_lock(file.as_raw_fd()) {
                Ok(true) => {
                    remove_dead(dir, name, &stat);
                    continue;
                }
                Ok(false) => {}
                Err(_) => continue,
            }
        }
        visit(LiveFile {
            id,
            fd: file.as_raw_fd(),
            stat,
        });
    }
    Ok(())
}

/// The id in `status_<id>`; `None` for any other name, including a writer's
/// `status_<id>.tmp`, which a reader must never touch (unlinking it made the
/// writer's rename fail in Parallel::Scoreboard 0.08).
pub fn status_id(name: &CStr) -> Option<&str> {
    worker_id(name.to_bytes())
}

/// [`status_id`] of a file name's bytes: the one rule, for readers that
/// list the directory themselves (`prefork top`).
pub fn worker_id(name: &[u8]) -> Option<&str> {
    let id = name.strip_prefix(b"status_")?;
    if id.is_empty() || id.ends_with(b".tmp") {
        return None;
    }
    std::str::from_utf8(id).ok()
}

/// Removes a dead worker's file, unless the name has meanwhile been taken by
/// a new worker's file (its pid reused), or the directory is read-only for
/// this handle (another user's: see the `dir` module's rule). Another reader
/// removing it first is no error, nor is a directory we may not write to.
pub fn remove_dead(dir: &BaseDir, name: &CStr, locked: &libc::stat) {
    if dir.read_only().is_some() {
        return;
    }
    match sys::stat_at(dir.fd(), name) {
        Ok(now) if sys::same_file(&now, locked) => {}
        _ => return,
    }
    if let Err(e) = sys::unlinkat(dir.fd(), name) {
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {}
            _ => log::warn!(
                "cannot remove the status file of a dead worker {}: {e}",
                dir.path().join(name.to_string_lossy().as_ref()).display()
            ),
        }
    }
}

/// What [`read_status`] found: a [`Status`](crate::Status) whose bytes are
/// borrowed from the caller's buffer.
#[derive(Debug)]
pub enum Read<'b> {
    Written(&'b [u8]),
    NotYet,
    Unreadable(Unreadable),
}

/// Reads the record of an open status file into `buf` (grown as needed, up
/// to `max_status_len`): the status when its checksum holds, `NotYet` for an
/// empty file, and otherwise why it cannot be read. A record that does not
/// read back whole is read again, up to [`READ_ATTEMPTS`] times: a
/// concurrent write tears a read, never two in a row for that long.
pub fn read_status(fd: RawFd, buf: &mut Vec<u8>, max_status_len: usize) -> Read<'_> {
    let limit = HEADER_LEN.saturating_add(max_status_len);
    if buf.len() < INITIAL_READ.min(limit) {
        buf.resize(INITIAL_READ.min(limit), 0);
    }
    let mut attempts = 0;
    let mut why = Unreadable::ChecksumMismatch;
    while attempts < READ_ATTEMPTS {
        // One pread per attempt: a regular file gives all it has up to the
        // buffer's size, and a short read parses as incomplete and is retried.
        let len = match sys::pread_once(fd, buf) {
            Ok(n) => n,
            Err(e) => return Read::Unreadable(Unreadable::io(e)),
        };
        match record::parse(&buf[..len]) {
            Parsed::Valid(status) => {
                let end = HEADER_LEN + status.len();
                return Read::Written(&buf[HEADER_LEN..end]);
            }
            Parsed::Empty if len == 0 => return Read::NotYet,
            Parsed::Empty => {
                why = Unreadable::ShortHeader {
                    file_len: len as u64,
                };
                attempts += 1;
            }
            // Never read, whatever the file holds: the header alone says
            // the reader would not take it.
            Parsed::Incomplete { needed } if needed > limit as u64 => {
                return Read::Unreadable(Unreadable::TooLarge {
                    len: needed - HEADER_LEN as u64,
                    limit: max_status_len,
                });
            }
            Parsed::Incomplete { needed } => {
                // A full buffer may just be too small. Grow it to what the
                // header asks, but only if the file really is that large
                // (never by the header's word alone).
                let size = if len == buf.len() {
                    sys::fstat(fd).map_or(0, |st| st.st_size.max(0) as u64)
                } else {
                    len as u64
                };
                if needed <= size {
                    buf.resize(needed as usize, 0);
                } else {
                    why = Unreadable::Truncated {
                        len: needed - HEADER_LEN as u64,
                        file_len: size,
                    };
                    attempts += 1;
                }
            }
            Parsed::Mismatch => {
                why = Unreadable::ChecksumMismatch;
                attempts += 1;
            }
        }
    }
    Read::Unreadable(why)
}

/// The first `max` bytes of an open status file's status, and the whole
/// status's length: for a display that shows no more, at a cost bounded by
/// `max` whatever the status's size. A status that fits is read and checked
/// whole, as [`read_status`] does. A longer one cannot be checked without
/// reading all of it: its head counts once two reads in a row agree (a
/// concurrent update would make them differ) and the file holds as many
/// bytes as the header announces. `Ok(None)` for a file never written.
pub fn read_head(fd: RawFd, max: usize) -> Result<Option<(Vec<u8>, u64)>, Unreadable> {
    let mut buf = vec![0u8; HEADER_LEN.saturating_add(max)];
    let mut again = vec![0u8; buf.len()];
    let mut why = Unreadable::ChecksumMismatch;
    for _ in 0..READ_ATTEMPTS {
        let n = sys::pread_once(fd, &mut buf).map_err(Unreadable::io)?;
        match record::parse(&buf[..n]) {
            Parsed::Valid(status) => return Ok(Some((status.to_vec(), status.len() as u64))),
            Parsed::Empty if n == 0 => return Ok(None),
            Parsed::Empty => why = Unreadable::ShortHeader { file_len: n as u64 },
            Parsed::Incomplete { needed } if n == buf.len() => {
                let size = sys::fstat(fd).map_or(0, |st| st.st_size.max(0) as u64);
                let m = sys::pread_once(fd, &mut again).map_err(Unreadable::io)?;
                if size >= needed && again[..m] == buf[..n] {
                    buf.drain(..HEADER_LEN);
                    return Ok(Some((buf, needed - HEADER_LEN as u64)));
                }
                why = if size < needed {
                    Unreadable::Truncated {
                        len: needed - HEADER_LEN as u64,
                        file_len: size,
                    }
                } else {
                    Unreadable::ChecksumMismatch
                };
            }
            Parsed::Incomplete { needed } => {
                why = Unreadable::Truncated {
                    len: needed - HEADER_LEN as u64,
                    file_len: n as u64,
                }
            }
            Parsed::Mismatch => why = Unreadable::ChecksumMismatch,
        }
    }
    Err(why)
}

/// The time a status file was last written.
pub fn mtime(stat: &libc::stat) -> SystemTime {
    let nanos = Duration::new(stat.st_mtime.unsigned_abs(), stat.st_mtime_nsec as u32);
    if stat.st_mtime >= 0 {
        UNIX_EPOCH + nanos
    } else {
        UNIX_EPOCH - nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_files_are_workers() {
        assert_eq!(worker_id(b"status_42"), Some("42"));
        assert_eq!(worker_id(b"status_42.tmp"), None);
        assert_eq!(worker_id(b"status_"), None);
        assert_eq!(worker_id(b"prefork.master"), None);
        assert_eq!(status_id(c"status_7"), Some("7"));
    }
}
