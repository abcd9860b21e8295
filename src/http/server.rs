//! The status server's sockets: accepting, reading, writing and closing,
//! each a bounded amount of non-blocking work per readiness the master's
//! `poll` reports. HTTP itself is the [`Exchange`]'s.
//!
//! Deadlines: a connection has [`Limits::idle_timeout`] from the moment it
//! starts waiting for something (accepted, or an answer sent: the next
//! request head; an answer made: its sending) to get it. Bytes trickling
//! in do not extend it, so a client sending a head a byte at a time holds
//! its slot for one timeout, not for `max_head` of them.
//!
//! Closing after a last answer (an error, `Connection: close`) shuts our
//! side down first and reads what the client still sends, for a moment,
//! before closing: closing with its bytes unread would reset the
//! connection, and a reset can destroy the answer still in flight.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use socket2::{SockRef, Socket};

use super::exchange::{Exchange, Next};
use super::{Request, Response};
use crate::listen::Listener;

/// What one status server allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; past it the listener is not polled.
    pub max_connections: usize,
    /// The longest request head, in bytes (longer: 431).
    pub max_head: usize,
    /// How long a connection may wait for a request head, or for its
    /// answer to be taken, before it is closed.
    pub idle_timeout: Duration,
    /// Requests answered on one connection per call of
    /// [`StatusServer::ready`]: a client that pipelines hundreds of
    /// requests in one packet is answered over several turns of the loop
    /// (the connection asks for POLLOUT meanwhile, so the next turn comes
    /// at once), and one turn's work for it stays small (a `/status` of
    /// 1000 slots takes about 0.7 ms to render).
    pub max_pipelined: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            max_head: 8 * 1024,
            idle_timeout: Duration::from_secs(10),
            max_pipelined: 4,
        }
    }
}

/// Connections accepted per call of [`StatusServer::ready`].
const ACCEPT_BATCH: usize = 16;
/// Reads from one connection per call.
const READS_PER_CALL: usize = 4;
/// How long a closing connection's late input is read and dropped.
const LINGER: Duration = Duration::from_secs(2);
/// How much of it, at most.
const LINGER_BYTES: usize = 64 * 1024;
/// How long the listener rests after `accept` failed for want of
/// descriptors or memory (it would stay readable: polling it would spin).
const ACCEPT_REST: Duration = Duration::from_millis(100);

/// An HTTP server on one listening socket, driven by its owner's `poll`.
pub struct StatusServer {
    listener: Arc<Listener>,
    limits: Limits,
    conns: Vec<Conn>,
    /// `accept` failed for want of resources: not polled until then.
    resting_until: Option<Instant>,
}

struct Conn {
    socket: Socket,
    exchange: Exchange,
    deadline: Instant,
    /// Our side is shut down; bytes the peer still sent are dropped, and
    /// counted here.
    lingering: Option<usize>,
}

impl StatusServer {
    /// Serves on `listener` (already bound and listening), which is made
    /// non-blocking here: readiness can be stale by the time of `accept`
    /// (the client gave up meanwhile), and a blocking `accept` would then
    /// wait for the next client.
    pub fn new(listener: Arc<Listener>, limits: Limits) -> StatusServer {
        let server = StatusServer {
            listener,
            limits: Limits {
                max_connections: limits.max_connections.max(1),
                max_head: limits.max_head.max(64),
                max_pipelined: limits.max_pipelined.max(1),
                ..limits
            },
            conns: Vec::new(),
            resting_until: None,
        };
        if let Err(e) = server.listening(|s| s.set_nonblocking(true)) {
            log::warn!(
                "status server on {}: cannot make the socket non-blocking: {e}",
                server.listener.bound
            );
        }
        server
    }

    /// Calls `f` with the listening socket.
    fn listening<R>(&self, f: impl FnOnce(SockRef<'_>) -> R) -> R {
        // SAFETY: `self.listener` owns the descriptor and outlives the call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.listener.fd()) };
        f(SockRef::from(&fd))
    }

    /// The descriptors to poll, and for what: the listener (while under
    /// the cap on connections), and each connection (readable while it
    /// waits for a request, writable while an answer waits to go out).
    pub fn interest(&self) -> Vec<(RawFd, PollFlags)> {
        let mut fds = Vec::with_capacity(self.conns.len() + 1);
        if self.conns.len() < self.limits.max_connections && self.resting_until.is_none() {
            fds.push((self.listener.fd(), PollFlags::POLLIN));
        }
        fds.extend(self.conns.iter().map(|c| (c.fd(), c.events())));
        fds
    }

    /// `fd`, one of [`StatusServer::interest`]'s, is ready with `revents`:
    /// accepts, reads, answers (asking `site` for each GET or HEAD) and
    /// writes, as far as the sockets allow now and within bounds.
    pub fn ready(
        &mut self,
        fd: RawFd,
        revents: PollFlags,
        now: Instant,
        site: &mut dyn FnMut(&Request) -> Response,
    ) {
        if fd == self.listener.fd() {
            return self.accept(now);
        }
        let Some(i) = self.conns.iter().position(|c| c.fd() == fd) else {
            return; // closed earlier in this turn
        };
        if !self.conns[i].drive(revents, now, site, &self.limits) {
            self.conns.swap_remove(i);
        }
    }

    /// The earliest deadline: a connection's, or the end of the
    /// listener's rest.
    pub fn deadline(&self) -> Option<Instant> {
        let conns = self.conns.iter().map(|c| c.deadline);
        conns.chain(self.resting_until).min()
    }

    /// Closes the connections whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        self.conns.retain(|c| c.deadline > now);
        if self.resting_until.is_some_and(|until| until <= now) {
            self.resting_until = None;
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn accept(&mut self, now: Instant) {
        let room = self.limits.max_connections.saturating_sub(self.conns.len());
        for _ in 0..room.min(ACCEPT_BATCH) {
            // accept4 with SOCK_CLOEXEC: no worker inherits a client.
            let socket = match self.listening(|s| s.accept()) {
                Ok((socket, _)) => socket,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    Some(libc::EAGAIN) => return,
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays
                    // queued, and the listener readable.
                    _ => {
                        self.resting_until = Some(now + ACCEPT_REST);
                        return;
                    }
                },
            };
            if socket.set_nonblocking(true).is_err() {
                continue; // closed at once: never a blocking socket
            }
            // An answer is one write: send its last segment at once rather
            // than after the client's delayed ACK. (Fails on a unix socket,
            // which has no Nagle to turn off.)
            let _ = socket.set_nodelay(true);
            self.conns.push(Conn {
                socket,
                exchange: Exchange::new(self.limits.max_head),
                deadline: now + self.limits.idle_timeout,
                lingering: None,
            });
        }
    }
}

impl Conn {
    fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn events(&self) -> PollFlags {
        if self.lingering.is_some() {
            return PollFlags::POLLIN;
        }
        match self.exchange.next() {
            Next::Read => PollFlags::POLLIN,
            // An answer to send, or more pipelined requests to answer (a
            // connected socket is writable at once: the next turn).
            Next::Write | Next::Answer | Next::Close => PollFlags::POLLOUT,
        }
    }

    /// Does what the connection can now; returns false when it is done
    /// with (closed by dropping it).
    fn drive(
        &mut self,
        revents: PollFlags,
        now: Instant,
        site: &mut dyn FnMut(&Request) -> Response,
        limits: &Limits,
    ) -> bool {
        if revents.contains(PollFlags::POLLNVAL) {
            return false;
        }
        if let Some(dropped) = &mut self.lingering {
            return drain(&self.socket, dropped);
        }
        let (mut answered, mut reads) = (0, 0);
        loop {
            match self.exchange.next() {
                Next::Write => {
                    let sent = send(&self.socket, self.exchange.output());
                    match sent {
                        Ok(0) => return true, // (not for a stream socket with room)
                        Ok(n) => self.exchange.wrote(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EPIPE, ECONNRESET: the client is gone.
                        Err(_) => return false,
                    }
                    if self.exchange.next() != Next::Write {
                        // Sent: a new wait begins.
                        self.deadline = now + limits.idle_timeout;
                    }
                }
                Next::Answer => {
                    if answered == limits.max_pipelined {
                        return true; // the rest next turn (POLLOUT)
                    }
                    if self.exchange.answer(site) {
                        answered += 1;
                        self.deadline = now + limits.idle_timeout;
                    }
                }
                Next::Read => {
                    if reads == READS_PER_CALL {
                        return true;
                    }
                    reads += 1;
                    let socket = &self.socket;
                    match self.exchange.read_with(|buf| (&*socket).read(buf)) {
                        Ok(_) => {} // 0: the peer's end, which `next` heeds
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return false,
                    }
                }
                Next::Close if self.exchange.peer_done() => return false,
                Next::Close => {
                    // Our last answer is out: say so, and read what the
                    // client still sends until it closes too.
                    if self.socket.shutdown(std::net::Shutdown::Write).is_err() {
                        return false;
                    }
                    self.deadline = self.deadline.min(now + LINGER);
                    let mut dropped = 0;
                    let open = drain(&self.socket, &mut dropped);
                    self.lingering = Some(dropped);
                    return open;
                }
            }
        }
    }
}

/// A write that never raises SIGPIPE, whatever the process's disposition.
fn send(socket: &Socket, bytes: &[u8]) -> io::Result<usize> {
    socket.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

/// Reads and drops a closing connection's input; false once it is done
/// (the peer closed, an error, or too much of it).
fn drain(socket: &Socket, dropped: &mut usize) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..READS_PER_CALL {
        match (&*socket).read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                *dropped += n;
                if *dropped > LINGER_BYTES {
                    return false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
