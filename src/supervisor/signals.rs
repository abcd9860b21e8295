//! The master's signals, delivered through signal-hook's self-pipe: the
//! handlers only record the signal and write a byte that wakes `poll`; every
//! decision is taken in the loop. The bytes mean "wake up", nothing more: a
//! child between fork and exec runs these handlers too, and can only cause a
//! spurious wakeup.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use signal_hook::consts::signal::*;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

/// What a signal asks of the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGCHLD: some child changed state; reap.
    Reap,
    /// SIGTERM, SIGINT: stop gracefully (immediately when already stopping).
    Stop,
    /// SIGQUIT: stop now.
    StopNow,
    /// SIGUSR1: print the board.
    Dump,
    /// SIGTTIN: one worker more.
    AddWorker,
    /// SIGTTOU: one worker fewer.
    RemoveWorker,
    /// SIGHUP: reload the configuration, or restart the workers.
    Reload,
}

const HANDLED: [libc::c_int; 8] = [
    SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGTTIN, SIGTTOU, SIGHUP,
];

pub struct Signals {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
}

impl Signals {
    /// Installs the handlers. Call before the first worker is spawned.
    pub fn install() -> io::Result<Self> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let delivery = SignalDelivery::with_pipe(read, write, SignalOnly, HANDLED)?;
        unblock(&HANDLED)?;
        Ok(Signals { delivery })
    }

    /// The descriptor that becomes readable when a signal arrives.
    pub fn fd(&self) -> RawFd {
        self.delivery.get_read().as_raw_fd()
    }

    /// The requests of the signals that arrived since the last call.
    pub fn pending(&mut self) -> Vec<Request> {
        self.delivery.pending().filter_map(request).collect()
    }
}

/// Whoever started us may have blocked some of our signals (the mask is
/// inherited across exec): a blocked SIGTERM would never be seen.
fn unblock(signals: &[libc::c_int]) -> io::Result<()> {
    let mut set = nix::sys::signal::SigSet::empty();
    for &signal in signals {
        set.add(nix::sys::signal::Signal::try_from(signal)?);
    }
    set.thread_unblock()?;
    Ok(())
}

fn request(signal: libc::c_int) -> Option<Request> {
    Some(match signal {
        SIGCHLD => Request::Reap,
        SIGTERM | SIGINT => Request::Stop,
        SIGQUIT => Request::StopNow,
        SIGUSR1 => Request::Dump,
        SIGTTIN => Request::AddWorker,
        SIGTTOU => Request::RemoveWorker,
        SIGHUP => Request::Reload,
        _ => return None,
    })
}
