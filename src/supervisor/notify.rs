//! systemd's notification protocol (`sd_notify(3)`): `READY=1`, `STATUS=`,
//! `RELOADING=1`, `STOPPING=1`, `WATCHDOG=1`, as datagrams to
//! `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! Written here rather than with a crate: the kept ones (`sd-notify`,
//! `libsystemd`) send with a blocking `sendto` on a new socket per call,
//! and a service manager whose queue is full would then stop the master's
//! loop. Here one socket is kept, non-blocking: a message the socket will
//! not take now waits in a short queue (the newest `STATUS=` replaces an
//! older one), and is sent when `poll` says the socket is writable.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variables of the protocol, ours alone: workers never get them (a
/// worker that notified systemd would speak for the master).
pub const VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Messages kept while the socket takes none: beyond, the oldest go.
const QUEUE: usize = 16;

pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
    queue: VecDeque<String>,
    /// Half of `WATCHDOG_USEC`, when the watchdog is ours.
    pub watchdog: Option<Duration>,
    /// Messages dropped because the queue was full.
    pub dropped: u64,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, if any; removes the protocol's
    /// variables from our environment. Call while single-threaded.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let var = |name: &str| std::env::var(name).ok();
        let (socket, usec, pid) = (var(VARS[0]), var(VARS[1]), var(VARS[2]));
        for name in VARS {
            std::env::remove_var(name);
        }
        let Some(path) = socket.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let to = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        let ours = pid.is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && ours)
            .map(|u| Duration::from_micros(u / 2));
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        // Close-on-exec already (std opens sockets with SOCK_CLOEXEC).
        Ok(Some(Notifier {
            socket,
            to,
            queue: VecDeque::new(),
            watchdog,
            dropped: 0,
        }))
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Messages wait for the socket: poll it for writing.
    pub fn wants_write(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Sends `message` (lines of `KEY=VALUE`) now if the socket takes it,
    /// else queues it.
    pub fn send(&mut self, message: String) {
        let status_only = |m: &str| m.starts_with("STATUS=") && !m.contains('\n');
        if status_only(&message) {
            // Only the newest status matters.
            self.queue.retain(|m| !status_only(m));
        }
        if self.queue.len() == QUEUE {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(message);
        self.flush();
    }

    /// Sends what waits, in order, until the socket would block.
    pub fn flush(&mut self) {
        while let Some(message) = self.queue.front() {
            match self.socket.send_to_addr(message.as_bytes(), &self.to) {
                Ok(_) => {
                    self.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nobody listens (the manager went away, a wrong path):
                // nothing to wait for.
                Err(_) => {
                    self.queue.pop_front();
                    self.dropped += 1;
                }
            }
        }
    }
}

/// `MONOTONIC_USEC=`'s value: CLOCK_MONOTONIC in microseconds, as systemd
/// wants it with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}
