//! The master's output: bounded buffers that are written without ever
//! blocking, one per destination (standard error for the log, standard
//! output for the SIGUSR1 board).
//!
//! A destination that is not read (a pipe to a hung `logger`, `| less` left
//! on a page, journald under back-pressure) must never stop the loop: a
//! blocking write there would leave dead workers unreaped and unreplaced.
//! Each line goes into the destination's buffer, and the buffer is written
//! as far as the descriptor takes it now; the rest waits until `poll` says
//! the descriptor is writable. A full buffer drops whole new lines and
//! counts them; once it has drained, one line says how many were lost and
//! why. A closed reader (EPIPE) or a bad descriptor ends the sink: what
//! follows is counted and dropped, never fatal.

mod log;
mod nonblocking;

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;

pub use self::log::{
    flush_log_at_exit, init_logging, json_logs, log_event, log_sink, rfc3339_millis, set_json_logs,
};
use nonblocking::Destination;

/// The log's buffer: a few thousand lines of a burst.
pub const LOG_CAPACITY: usize = 256 * 1024;
/// The board's buffer: a full board of 4096 workers with 1 KiB statuses.
pub const BOARD_CAPACITY: usize = 8 * 1024 * 1024;

/// One destination's buffer and what it lost.
pub struct Sink {
    name: &'static str,
    dest: Destination,
    pending: VecDeque<u8>,
    capacity: usize,
    /// Lines dropped since the last notice.
    unreported: u64,
    /// Lines dropped since the start, for the snapshot.
    dropped: u64,
    /// The first reason lines were dropped since the last notice.
    why: Option<&'static str>,
    /// The reader is gone (EPIPE, a bad descriptor): nothing is written again.
    closed: bool,
}

impl Sink {
    /// A sink on descriptor `fd` (1 or 2), named for the notices.
    pub fn open(fd: RawFd, name: &'static str, capacity: usize) -> Sink {
        Sink {
            name,
            dest: Destination::open(fd),
            pending: VecDeque::new(),
            capacity,
            unreported: 0,
            dropped: 0,
            why: None,
            closed: false,
        }
    }

    /// Queues `line` (which ends with a newline) whole, or drops it whole,
    /// then writes what the descriptor takes now.
    pub fn push(&mut self, line: &[u8]) {
        if self.closed {
            self.drop_line("its reader closed it");
            return;
        }
        if self.pending.len() + line.len() > self.capacity {
            self.drop_line("nobody read it fast enough");
            return;
        }
        self.pending.extend(line);
        self.flush();
    }

    /// Queues one line made of `parts` (the last ending with a newline)
    /// whole, or drops it whole, without writing: for a batch of lines,
    /// written by one [`Sink::flush`] after it.
    pub fn queue(&mut self, parts: &[&[u8]]) {
        if self.closed {
            self.drop_line("its reader closed it");
            return;
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.pending.len() + len > self.capacity {
            self.drop_line("nobody read it fast enough");
            return;
        }
        for part in parts {
            self.pending.extend(*part);
        }
    }

    fn drop_line(&mut self, why: &'static str) {
        self.unreported += 1;
        self.dropped += 1;
        self.why.get_or_insert(why);
    }

    /// Writes as much as the descriptor takes without blocking. Once the
    /// buffer has drained after a loss, queues the notice of it.
    pub fn flush(&mut self) {
        while !self.closed && !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match self.dest.write(front) {
                Ok(0) => break,
                Ok(n) => drop(self.pending.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // EPIPE, EBADF, EIO: the destination is gone for good.
                    let lines = self.pending.iter().filter(|&&b| b == b'\n').count();
                    self.unreported += lines as u64;
                    self.dropped += lines as u64;
                    self.pending.clear();
                    self.closed = true;
                }
            }
        }
        if self.pending.is_empty() && self.unreported > 0 && !self.closed {
            let notice = format!(
                "prefork: {} line(s) of output to {} were dropped: {}\n",
                self.unreported,
                self.name,
                self.why.take().unwrap_or("its buffer was full")
            );
            self.unreported = 0;
            self.pending.extend(notice.as_bytes());
            self.flush();
        }
    }

    /// Whether bytes wait for the descriptor to become writable.
    pub fn wants_write(&self) -> bool {
        !self.closed && !self.pending.is_empty()
    }

    /// The descriptor to poll for writability.
    pub fn fd(&self) -> RawFd {
        self.dest.fd()
    }

    /// Lines lost since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    fn read_all(fd: &OwnedFd) -> Vec<u8> {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut out = Vec::new();
        let mut chunk = [0u8; 65536];
        while let Ok(n @ 1..) = nix::unistd::read(fd.as_raw_fd(), &mut chunk) {
            out.extend_from_slice(&chunk[..n]);
        }
        out
    }

    #[test]
    fn a_full_pipe_drops_whole_lines_then_says_how_many() {
        let (r, w) = pipe();
        let mut sink = Sink::open(w.as_raw_fd(), "the test pipe", 1024);
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        // The pipe (64 KiB) fills, then the 1 KiB buffer: never a blocking write.
        for _ in 0..2000 {
            sink.push(&line);
        }
        assert!(sink.dropped() > 0);
        assert!(sink.wants_write());
        let mut got = read_all(&r);
        sink.flush();
        got.extend(read_all(&r));
        let text = String::from_utf8(got).unwrap();
        let notice = text.lines().last().unwrap();
        assert!(
            notice.starts_with(&format!("prefork: {} line(s)", sink.dropped())),
            "{notice}"
        );
        assert!(notice.contains("nobody read it fast enough"), "{notice}");
        // Every other line arrived whole.
        assert!(text.lines().rev().skip(1).all(|l| l.len() == 99));
        assert!(!sink.wants_write());
    }

    #[test]
    fn a_closed_reader_is_not_fatal() {
        let (r, w) = pipe();
        drop(r);
        let mut sink = Sink::open(w.as_raw_fd(), "the test pipe", 1024);
        sink.push(b"one\n");
        sink.push(b"two\n");
        assert_eq!(sink.dropped(), 2);
        assert!(!sink.wants_write());
    }

    #[test]
    fn json_times_are_utc_to_the_millisecond() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339_millis(at), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_millis(leap), "2000-02-29T00:00:00.000Z");
    }
}
