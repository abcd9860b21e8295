//! What a reader found in a live worker's status file: the status, nothing
//! yet, or why the record cannot be read. Liveness comes from the lock, not
//! from the record: a worker whose record is unreadable is alive all the
//! same, and says so through [`Status::Unreadable`] instead of vanishing.

use std::fmt;
use std::io;

use super::record::HEADER_LEN;

/// How many times a reader reads a record whose checksum does not match (or
/// that is shorter than its header says) before giving up on it, as in
/// Parallel::Scoreboard: a write in progress is over long before that.
pub const READ_ATTEMPTS: usize = 10;

/// A live worker's status, as a reader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The status bytes, exactly as the worker wrote them (the checksum holds).
    Written(Vec<u8>),
    /// The file is empty: the worker has not written a status yet.
    NotYet,
    /// The file holds something that is not a whole, valid record.
    Unreadable(Unreadable),
}

impl Status {
    /// The status bytes, if the worker wrote a readable status.
    pub fn written(&self) -> Option<&[u8]> {
        match self {
            Status::Written(status) => Some(status),
            Status::NotYet | Status::Unreadable(_) => None,
        }
    }

    /// Why the record cannot be read, if it cannot.
    pub fn unreadable(&self) -> Option<&Unreadable> {
        match self {
            Status::Unreadable(why) => Some(why),
            Status::Written(_) | Status::NotYet => None,
        }
    }
}

/// Why a live worker's record cannot be read. Its `Display` is a short
/// phrase for a table cell or a log line ("checksum mismatch in 10 reads").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreadable {
    /// The checksum never matched the status in [`READ_ATTEMPTS`] reads: a
    /// corrupt record, or one torn for good (a write that failed half-way).
    /// For a head read without the whole status ([`WatchedFile::status_head`]),
    /// also two reads that never agreed.
    ///
    /// [`WatchedFile::status_head`]: crate::WatchedFile::status_head
    ChecksumMismatch,
    /// The header announces a longer record than the file holds, in every
    /// read: a write cut short (a full disk), or a truncated file.
    Truncated {
        /// The status length the header announces.
        len: u64,
        /// The size of the file (header included).
        file_len: u64,
    },
    /// The header announces a status longer than the reader's limit
    /// ([`Builder::max_status_len`]); it was not read.
    ///
    /// [`Builder::max_status_len`]: crate::Builder::max_status_len
    TooLarge {
        /// The status length the header announces.
        len: u64,
        /// The reader's limit.
        limit: usize,
    },
    /// The file is not empty but shorter than a record's header, in every read.
    ShortHeader {
        /// The size of the file.
        file_len: u64,
    },
    /// Reading the file failed.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// The error, as the operating system put it.
        message: String,
    },
}

impl Unreadable {
    pub(crate) fn io(e: io::Error) -> Self {
        Unreadable::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::ChecksumMismatch => {
                write!(f, "checksum mismatch in {READ_ATTEMPTS} reads")
            }
            Unreadable::Truncated { len, file_len } => write!(
                f,
                "record cut short: its header announces {} bytes, the file has {file_len}",
                HEADER_LEN as u64 + len
            ),
            Unreadable::TooLarge { len, limit } => write!(
                f,
                "status of {len} bytes, above the reader's limit of {limit}"
            ),
            Unreadable::ShortHeader { file_len } => write!(
                f,
                "file of {file_len} bytes, shorter than a record header ({HEADER_LEN})"
            ),
            Unreadable::Io { message, .. } => write!(f, "read error: {message}"),
        }
    }
}
