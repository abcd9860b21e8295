//! The scoreboard's error type. Every error names the path and the operation,
//! so that a message read at 3 a.m. says what failed and where.

use std::io;
use std::path::PathBuf;

/// An error from the scoreboard library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on `path` failed.
    // The cause is part of the message (and so not also a `source()`, which
    // would print it twice in a chain): a log line must say why.
    #[error("cannot {op} {}: {cause}", path.display())]
    Io {
        /// What was being done, as a verb phrase ("open", "lock", "rename to status_12 in").
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        cause: io::Error,
    },
    /// The base directory is one that others could tamper with.
    #[error("refusing scoreboard directory {}: {reason}", path.display())]
    InsecureDir {
        /// The base directory.
        path: PathBuf,
        /// Why it is refused and what to do about it.
        reason: String,
    },
    /// A status longer than the format's 32-bit length field.
    #[error("status of {len} bytes is too large: the record format allows at most 4 GiB - 1")]
    StatusTooLarge {
        /// The length of the rejected status.
        len: usize,
    },
    /// A worker id that cannot be part of a file name.
    #[error("worker id {id:?} is not usable in a file name: it must be non-empty, without '/' or NUL, and not end in \".tmp\"")]
    BadWorkerId {
        /// The rejected id.
        id: String,
    },
    /// `from_env` was called outside a worker started by prefork.
    #[error(
        "not running under prefork: neither PREFORK_STATUS_FD nor PREFORK_SCOREBOARD_DIR is set \
         (start this program with `prefork -- COMMAND`, or build the scoreboard with Scoreboard::new(dir))"
    )]
    NotUnderPrefork,
    /// A `PREFORK_*` variable that cannot be used.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    BadEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The scoreboard's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_error(op: &'static str, path: impl Into<PathBuf>, cause: io::Error) -> Error {
    Error::Io {
        op,
        path: path.into(),
        cause,
    }
}
