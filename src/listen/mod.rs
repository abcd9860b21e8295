//! The listening sockets the master holds for its workers: bound once,
//! before any worker starts, or inherited through socket activation
//! (`LISTEN_FDS`), and handed to every worker as descriptors 3, 4, ...
//!
//! [`Listeners`] keeps them across reloads: an address listed again keeps
//! its socket (and so its queue of connections, and the port chosen for a
//! port of 0); a new one is bound before anything changes; one no longer
//! listed closes once no spec in use lists it (the workers of an aborted
//! rollout may still need it).

mod address;
mod socket;

use std::sync::{Arc, Weak};

pub use address::{ListenAddr, FORMS};
pub use socket::{default_backlog, BindOptions, ListenError, Listener};

/// The sockets of every spec in use, and those socket activation gave us.
#[derive(Default)]
pub struct Listeners {
    /// From socket activation, kept for the master's life: a reload that
    /// lists one again must find it (a socket unit keeps its own copy, but
    /// cannot hand it over twice).
    inherited: Vec<Arc<Listener>>,
    /// What was bound here, while some spec holds it.
    bound: Vec<Weak<Listener>>,
}

/// What [`Listeners::resolve`] found: the sockets in order, and which of
/// them it bound just now.
pub struct Resolved {
    pub sockets: Vec<Arc<Listener>>,
    pub new: Vec<Arc<Listener>>,
}

/// The variables of socket activation, which are ours alone: never passed
/// on as they came.
pub const ACTIVATION_VARS: [&str; 3] = ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"];

impl Listeners {
    /// Takes the sockets passed to this process by systemd's socket
    /// activation (`LISTEN_FDS`, when `LISTEN_PID` is ours), and removes
    /// its variables from our environment. Call before opening anything.
    pub fn from_activation() -> Result<Listeners, String> {
        let var = |name: &str| std::env::var(name).ok();
        let (fds, pid, names) = (var("LISTEN_FDS"), var("LISTEN_PID"), var("LISTEN_FDNAMES"));
        for name in ACTIVATION_VARS {
            // Single-threaded still: nothing reads the environment meanwhile.
            std::env::remove_var(name);
        }
        let mut listeners = Listeners::default();
        let Some(fds) = fds else {
            return Ok(listeners);
        };
        if pid.and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            // Meant for another process (our parent's): not ours to take.
            return Ok(listeners);
        }
        let count: i32 = fds
            .parse()
            .ok()
            .filter(|&n| (0..=4096).contains(&n))
            .ok_or_else(|| format!("LISTEN_FDS={fds:?} is not a number of descriptors"))?;
        let mut names = names.as_deref().unwrap_or("").split(':');
        for fd in 3..3 + count {
            let name = names.next().filter(|n| !n.is_empty()).map(str::to_string);
            let listener = Listener::inherited(fd, name)
                .map_err(|e| format!("socket activation (LISTEN_FDS={count}): {e}"))?;
            listeners.inherited.push(Arc::new(listener));
        }
        Ok(listeners)
    }

    /// The sockets socket activation gave us.
    pub fn inherited(&self) -> &[Arc<Listener>] {
        &self.inherited
    }

    /// The sockets for `addrs`, in order: the same socket for an address
    /// already held, a new one bound for the others. With no address
    /// listed, the inherited sockets, all of them. On an error nothing
    /// new stays bound. Returns the sockets, and which of them are new.
    pub fn resolve(
        &mut self,
        addrs: &[ListenAddr],
        options: BindOptions,
    ) -> Result<Resolved, ListenError> {
        if addrs.is_empty() {
            return Ok(Resolved {
                sockets: self.inherited.clone(),
                new: Vec::new(),
            });
        }
        self.bound.retain(|w| w.strong_count() > 0);
        let mut sockets = Vec::with_capacity(addrs.len());
        let mut new = Vec::new();
        for addr in addrs {
            if sockets.iter().any(|s: &Arc<Listener>| &s.addr == addr) {
                return Err(ListenError {
                    addr: addr.to_string(),
                    why: "listed twice".into(),
                });
            }
            let held = self
                .inherited
                .iter()
                .find(|l| l.bound == *addr)
                .cloned()
                .or_else(|| {
                    self.bound
                        .iter()
                        .filter_map(Weak::upgrade)
                        .find(|l| l.addr == *addr)
                });
            let socket = match held {
                Some(socket) => socket,
                None => {
                    let socket = Arc::new(Listener::bind(addr, options)?);
                    new.push(Arc::clone(&socket));
                    socket
                }
            };
            sockets.push(socket);
        }
        self.bound.extend(new.iter().map(Arc::downgrade));
        Ok(Resolved { sockets, new })
    }
}
