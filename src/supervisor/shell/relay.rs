//! Relayed worker output (`worker_output = "prefix"`): the read ends of
//! each worker's standard output and error pipes, in the loop's poll set.
//! Each line a worker writes goes to the master's stream of the same name
//! as `[slot S pid P] LINE` (with `--log-format json`, as one JSON object:
//! time, level, event "output", slot, pid, stream, line).
//!
//! Never blocking, never unbounded: the pipes are non-blocking and read at
//! most [`READ_BUDGET`] bytes each per turn of the loop, so a chatty worker
//! cannot starve it; a line longer than [`MAX_LINE`] goes out in pieces of
//! that size; lines go through the master's output sinks, which drop whole
//! lines (and count them in `output_dropped`) when nobody reads. A worker's
//! last partial line goes out, with a newline, at end of file.
//!
//! No pipe outlives what writes to it: a pipe is closed at end of file (the
//! worker and everything it left behind are gone); once its worker is
//! reaped and its process group is empty, what remains is read and the pipe
//! closed, even if an escaped descendant (a `setsid` daemon) still holds
//! the write end; the master's exit closes the rest the same way.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::SystemTime;

use nix::unistd::Pid;

use super::super::sinks::{self, Sink};
use super::super::spawn::Outputs;

/// The longest line relayed whole; a longer one goes out in pieces.
pub(super) const MAX_LINE: usize = 16 * 1024;
/// The most read from one pipe in one turn of the loop: short turns, so that
/// a respawn waits little behind relaying (8 workers writing 100-byte lines
/// flat out: 64 KiB gave 1.13 GB/s and a 3.8 ms respawn, 16 KiB 1.07 GB/s
/// and 2.3 ms; see BENCHMARKS.md).
pub(super) const READ_BUDGET: usize = 16 * 1024;
/// The most read from a pipe being closed (its worker's group is gone, or
/// the master stops): what the pipe holds, unless an escaped descendant
/// keeps writing.
const LAST_BUDGET: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Whose line it is, and how it is labelled.
struct Label {
    pid: Pid,
    slot: usize,
    stream: Stream,
    /// `[slot S pid P] `, made once.
    prefix: Vec<u8>,
}

/// One worker's stream.
struct Pipe {
    fd: OwnedFd,
    label: Label,
    /// The start of a line whose end has not come yet (under [`MAX_LINE`]).
    partial: Vec<u8>,
    /// Its worker was reaped.
    reaped: bool,
}

/// Every relayed pipe, with one read buffer for all.
pub(super) struct Relay {
    pipes: Vec<Pipe>,
    buf: Vec<u8>,
}

impl Relay {
    pub(super) fn new() -> Relay {
        Relay {
            pipes: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Takes the pipes of newly forked workers.
    pub(super) fn adopt(&mut self, outputs: Vec<Outputs>) {
        for o in outputs {
            for (fd, stream) in [(o.stdout, Stream::Stdout), (o.stderr, Stream::Stderr)] {
                self.pipes.push(Pipe {
                    fd,
                    label: Label {
                        pid: o.pid,
                        slot: o.slot,
                        stream,
                        prefix: format!("[slot {} pid {}] ", o.slot, o.pid).into_bytes(),
                    },
                    partial: Vec::new(),
                    reaped: false,
                });
            }
        }
    }

    /// The descriptors to poll for reading, in order.
    pub(super) fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.pipes.iter().map(|p| p.fd.as_raw_fd())
    }

    /// Reads the pipes that `poll` said are ready (`fired`, in the order of
    /// [`Relay::fds`]) and relays their lines; closes those at end of file.
    pub(super) fn pump(&mut self, fired: &[bool], stdout: &mut Sink) {
        if !fired.contains(&true) {
            return;
        }
        self.buf.resize(READ_BUDGET, 0);
        let mut closed = vec![false; self.pipes.len()];
        for (i, pipe) in self.pipes.iter_mut().enumerate() {
            if fired.get(i) == Some(&true) {
                closed[i] = pipe.relay(&mut self.buf, READ_BUDGET, stdout);
            }
        }
        let mut closed = closed.into_iter();
        self.pipes.retain(|_| !closed.next().unwrap_or(false));
    }

    /// `pid` was reaped: its pipes close once its process group is gone.
    pub(super) fn reaped(&mut self, pid: Pid) {
        for pipe in self.pipes.iter_mut().filter(|p| p.label.pid == pid) {
            pipe.reaped = true;
        }
    }

    /// Closes the pipes of reaped workers whose process group is gone, after
    /// relaying what they hold.
    pub(super) fn close_orphaned(&mut self, group_alive: impl Fn(Pid) -> bool, stdout: &mut Sink) {
        let buf = &mut self.buf;
        self.pipes.retain_mut(|pipe| {
            if !pipe.reaped || group_alive(pipe.label.pid) {
                return true;
            }
            pipe.close(buf, stdout);
            false
        });
    }

    /// At the master's exit: relays what every pipe holds, and closes it.
    pub(super) fn finish(&mut self, stdout: &mut Sink) {
        for mut pipe in std::mem::take(&mut self.pipes) {
            pipe.close(&mut self.buf, stdout);
        }
    }
}

impl Pipe {
    /// Reads up to `budget` bytes and relays the lines they end. Returns
    /// whether the pipe is done (end of file, or an error).
    fn relay(&mut self, buf: &mut Vec<u8>, budget: usize, stdout: &mut Sink) -> bool {
        buf.resize(buf.len().max(READ_BUDGET), 0);
        let time = sinks::json_logs().then(|| sinks::rfc3339_millis(SystemTime::now()));
        let Pipe {
            fd, label, partial, ..
        } = self;
        // No log to relay standard error to (not before logging starts):
        // the pipe is closed, and the worker's writes there fail.
        deliver(label.stream, stdout, |sink| {
            let mut taken = 0;
            let done = loop {
                if taken >= budget {
                    break false;
                }
                let want = (budget - taken).min(buf.len());
                // SAFETY: a valid buffer of at least `want` bytes; the
                // descriptor is ours.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), want) };
                match n {
                    0 => break true,
                    n if n > 0 => {
                        taken += n as usize;
                        split(partial, &buf[..n as usize], |line| {
                            label.emit(sink, line, time.as_deref())
                        });
                    }
                    _ => match io::Error::last_os_error().kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => break false,
                        _ => break true,
                    },
                }
            };
            if done && !partial.is_empty() {
                label.emit(sink, partial, time.as_deref());
                partial.clear();
            }
            sink.flush();
            done
        })
        .unwrap_or(true)
    }

    /// Relays what the pipe holds now (up to [`LAST_BUDGET`]) and its
    /// partial line, before the pipe is dropped (which closes it).
    fn close(&mut self, buf: &mut Vec<u8>, stdout: &mut Sink) {
        if !self.relay(buf, LAST_BUDGET, stdout) && !self.partial.is_empty() {
            let time = sinks::json_logs().then(|| sinks::rfc3339_millis(SystemTime::now()));
            let (label, last) = (&self.label, &self.partial);
            deliver(label.stream, stdout, |sink| {
                label.emit(sink, last, time.as_deref());
                sink.flush();
            });
        }
    }
}

/// Cuts `chunk`, after what `partial` holds, into lines of at most
/// [`MAX_LINE`] bytes (without their newline), each given to `line`; keeps
/// the unfinished end in `partial`.
fn split(partial: &mut Vec<u8>, mut chunk: &[u8], mut line: impl FnMut(&[u8])) {
    while !chunk.is_empty() {
        let room = MAX_LINE - partial.len();
        // A newline right after `room` bytes still ends a whole line.
        let window = &chunk[..chunk.len().min(room + 1)];
        let (end, skip) = match window.iter().position(|&b| b == b'\n') {
            Some(i) => (i, 1),
            None if chunk.len() > room => (room, 0),
            None => {
                partial.extend_from_slice(chunk);
                return;
            }
        };
        if partial.is_empty() {
            line(&chunk[..end]);
        } else {
            partial.extend_from_slice(&chunk[..end]);
            line(partial);
            partial.clear();
        }
        chunk = &chunk[end + skip..];
    }
}

impl Label {
    /// Queues one line (without its newline) on `sink`.
    fn emit(&self, sink: &mut Sink, line: &[u8], time: Option<&str>) {
        match time {
            None => sink.queue(&[&self.prefix, line, b"\n"]),
            Some(time) => {
                let stream = match self.stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                };
                let text = serde_json::to_string(&String::from_utf8_lossy(line))
                    .expect("JSON of a string");
                let object = format!(
                    "{{\"time\":\"{time}\",\"level\":\"info\",\"event\":\"output\",\
                     \"slot\":{},\"pid\":{},\"stream\":\"{stream}\",\"line\":{text}}}\n",
                    self.slot, self.pid
                );
                sink.queue(&[object.as_bytes()]);
            }
        }
    }
}

/// Runs `f` on the sink of `stream`: standard output's, or the log's on
/// standard error (`None` when there is no log yet).
fn deliver<T>(stream: Stream, stdout: &mut Sink, f: impl FnOnce(&mut Sink) -> T) -> Option<T> {
    match stream {
        Stream::Stdout => Some(f(stdout)),
        Stream::Stderr => sinks::log_sink(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pipe {
        partial: Vec<u8>,
    }

    fn pipe() -> Pipe {
        Pipe {
            partial: Vec::new(),
        }
    }

    fn lines_of(pipe: &mut Pipe, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in chunks {
            split(&mut pipe.partial, chunk, |l| out.push(l.to_vec()));
        }
        out
    }

    #[test]
    fn lines_are_cut_at_newlines_across_reads() {
        let mut p = pipe();
        let got = lines_of(&mut p, &[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()]);
        assert_eq!(p.partial, b"three");
    }

    #[test]
    fn a_long_line_goes_out_in_pieces_of_max_line() {
        let mut p = pipe();
        let long = vec![b'x'; 40 * 1024];
        let mut chunks: Vec<&[u8]> = long.chunks(4096).collect();
        chunks.push(b"\n");
        let got = lines_of(&mut p, &chunks);
        let lens: Vec<usize> = got.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 8 * 1024]);
        assert!(p.partial.is_empty());
    }

    #[test]
    fn a_line_of_exactly_max_line_is_one_line() {
        let mut p = pipe();
        let mut line = vec![b'y'; MAX_LINE];
        line.push(b'\n');
        let got = lines_of(&mut p, &[&line[..100], &line[100..]]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].len(), MAX_LINE);
    }
}
