//! The on-disk record of Parallel::Scoreboard 0.08, byte for byte:
//! `MD5(status)` (16 bytes), `len(status)` as a big-endian `u32`, then the
//! status bytes. Anything after the status (left over from an earlier, longer
//! status, since writers never truncate) is ignored.
//!
//! This module is pure: no I/O, so the parser can be property-tested and fuzzed.
//! The parser never allocates; it borrows the status out of the caller's buffer,
//! so a hostile header cannot make anyone allocate 4 GiB.

use md5::{Digest, Md5};

/// Size of the fixed header: 16 bytes of MD5 and 4 bytes of length.
pub const HEADER_LEN: usize = 20;

/// The largest status the format can carry (its length field is 32 bits).
pub const MAX_STATUS_LEN: usize = u32::MAX as usize;

/// The header that precedes `status` in its record.
///
/// Callers must check `status.len() <= MAX_STATUS_LEN` first: the length
/// field is 32 bits wide.
pub fn header(status: &[u8]) -> [u8; HEADER_LEN] {
    debug_assert!(status.len() <= MAX_STATUS_LEN);
    let mut header = [0u8; HEADER_LEN];
    header[..16].copy_from_slice(&Md5::digest(status));
    header[16..].copy_from_slice(&(status.len() as u32).to_be_bytes());
    header
}

/// A whole record: header followed by the status.
pub fn encode(status: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER_LEN + status.len());
    record.extend_from_slice(&header(status));
    record.extend_from_slice(status);
    record
}

/// What a buffer read from the start of a status file holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A record whose checksum matches: this is a status its writer wrote.
    Valid(&'a [u8]),
    /// Fewer than [`HEADER_LEN`] bytes: the worker has not written yet.
    /// Parallel::Scoreboard skips such files silently, and so do we.
    Empty,
    /// The header announces `needed` bytes in all but the buffer holds fewer.
    /// The caller reads more (if the file is that large) or retries.
    Incomplete { needed: u64 },
    /// The checksum does not match: a read torn by a concurrent write, or
    /// garbage. The caller retries a bounded number of times.
    Mismatch,
}

/// Parses the record at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    if buf.len() < HEADER_LEN {
        return Parsed::Empty;
    }
    let len = u32::from_be_bytes([buf[16], buf[17], buf[18], buf[19]]) as u64;
    let needed = HEADER_LEN as u64 + len;
    if (buf.len() as u64) < needed {
        return Parsed::Incomplete { needed };
    }
    let status = &buf[HEADER_LEN..needed as usize];
    if Md5::digest(status).as_slice() == &buf[..16] {
        Parsed::Valid(status)
    } else {
        Parsed::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_perl_layout() {
        // md5("idle") = 0x7cee...; checked against Digest::MD5.
        let record = encode(b"idle");
        assert_eq!(record.len(), 24);
        assert_eq!(&record[16..20], &[0, 0, 0, 4]);
        assert_eq!(&record[20..], b"idle");
        assert_eq!(parse(&record), Parsed::Valid(b"idle"));
    }

    #[test]
    fn trailing_bytes_from_a_longer_status_are_ignored() {
        let mut record = encode(b"a much longer earlier status");
        let short = encode(b"ok");
        record[..short.len()].copy_from_slice(&short);
        assert_eq!(parse(&record), Parsed::Valid(b"ok"));
    }

    #[test]
    fn a_huge_length_is_incomplete_not_an_allocation() {
        let mut record = encode(b"x");
        record[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse(&record),
            Parsed::Incomplete {
                needed: 20 + u32::MAX as u64
            }
        );
    }

    #[test]
    fn short_and_corrupt_buffers() {
        assert_eq!(parse(b""), Parsed::Empty);
        assert_eq!(parse(&[0u8; 19]), Parsed::Empty);
        let mut record = encode(b"status");
        record[0] ^= 1;
        assert_eq!(parse(&record), Parsed::Mismatch);
    }
}
