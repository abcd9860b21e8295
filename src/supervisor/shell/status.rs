//! The HTTP status endpoint (`status_listen`), served by the master's own
//! loop: its sockets join the one `poll`, every call on them is
//! non-blocking and bounded (see [`crate::http`]), and a page is rendered
//! from the pool's snapshot and the status files the master keeps open.

use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use nix::poll::PollFlags;

use super::dump::shown_status;
use super::Shell;
use crate::config::Config;
use crate::http::{self, Counts, Limits, PoolView, SlotView, StatusServer};
use crate::listen::{BindOptions, ListenAddr, ListenError, Listener};
use crate::scoreboard::Status;
use crate::supervisor::events::{self, Event};

/// The endpoint being served, and where.
pub(in crate::supervisor) struct Endpoint {
    /// As configured (a port of 0, say).
    pub asked: ListenAddr,
    /// Where it is bound.
    pub addr: ListenAddr,
    pub server: StatusServer,
}

/// Binds `config`'s endpoint, if it has one: a unix socket with mode 0600
/// (the board shows what workers do: not for every local user).
pub(in crate::supervisor) fn bind_endpoint(
    config: &Config,
) -> Result<Option<Endpoint>, ListenError> {
    let Some(addr) = &config.status_listen else {
        return Ok(None);
    };
    let options = BindOptions {
        mode: 0o600,
        ..super::bind_options(config)
    };
    let listener = Arc::new(Listener::bind(addr, options)?);
    Ok(Some(Endpoint {
        asked: addr.clone(),
        addr: listener.bound.clone(),
        server: StatusServer::new(listener, Limits::default()),
    }))
}

impl Shell {
    /// What the endpoint's sockets wait for.
    pub(super) fn status_interest(&self) -> Vec<(RawFd, PollFlags)> {
        self.endpoint
            .as_ref()
            .map_or_else(Vec::new, |e| e.server.interest())
    }

    pub(super) fn status_deadline(&self) -> Option<Instant> {
        self.endpoint.as_ref()?.server.deadline()
    }

    /// Serves what `poll` found ready, and closes idle connections. The
    /// pool's view is built once per turn, at the first request that needs
    /// it; with the workers' statuses (a read of each file) only for the
    /// pages that show them.
    pub(super) fn serve_status(&mut self, fired: &[(RawFd, PollFlags)], now: Instant) {
        let Some(mut endpoint) = self.endpoint.take() else {
            return;
        };
        let (mut full, mut light) = (None, None);
        for &(fd, revents) in fired {
            let mut site = |request: &http::Request| {
                let view = if request.path.starts_with("/status") {
                    full.get_or_insert_with(|| self.pool_view(true))
                } else {
                    light.get_or_insert_with(|| self.pool_view(false))
                };
                http::respond(request, view)
            };
            endpoint.server.ready(fd, revents, now, &mut site);
        }
        endpoint.server.expire(now);
        self.endpoint = Some(endpoint);
    }

    /// A reload that moves the endpoint: bound before anything changes.
    /// `Err` leaves everything as it was.
    pub(super) fn rebind_endpoint(&mut self, config: &Config) -> Result<(), ListenError> {
        // The same address asked again keeps its socket (and a port of 0
        // the port it got).
        if config.status_listen.as_ref() == self.endpoint.as_ref().map(|e| &e.asked) {
            return Ok(());
        }
        let endpoint = bind_endpoint(config)?;
        if let Some(e) = &endpoint {
            self.pool.emit(Event::StatusServing {
                addr: e.addr.to_string(),
            });
        }
        self.endpoint = endpoint;
        Ok(())
    }

    /// The pool as the pages show it; `statuses`: with what each worker's
    /// status file says.
    fn pool_view(&self, statuses: bool) -> PoolView {
        let now = Instant::now();
        let wall = SystemTime::now();
        let snapshot = self.snapshot();
        let slots = snapshot
            .slots
            .iter()
            .map(|s| {
                let file = s.pid.and_then(|pid| self.files.get(&pid));
                let state = file.and_then(|f| f.state().ok()).filter(|st| st.written);
                let status = match file.filter(|_| statuses).map(shown_status) {
                    Some(Status::Written(bytes)) => Some(bytes),
                    _ => None,
                };
                SlotView {
                    slot: s.slot,
                    pid: s.pid.map(|p| p.as_raw()),
                    state: match (s.pid, s.ready) {
                        (None, _) => "empty",
                        (Some(_), false) => "starting",
                        (Some(_), true) => "running",
                    },
                    restarts: s.restarts,
                    last_exit: s.last_end.as_ref().map(ToString::to_string),
                    uptime: s.running_since.map(|t| now.duration_since(t)),
                    since_update: state
                        .map(|st| wall.duration_since(st.updated).unwrap_or_default()),
                    status,
                }
            })
            .collect();
        let c = snapshot.counters;
        let config = self.pool.config();
        PoolView {
            master_pid: std::process::id(),
            phase: snapshot.phase.as_str(),
            uptime: now.duration_since(snapshot.began),
            target: snapshot.target,
            activity: snapshot.activity,
            bounds: snapshot.bounds,
            min_workers: config.min_workers,
            listen: snapshot.listen.clone(),
            scoreboard: self.board.base_dir().display().to_string(),
            slots,
            counts: Counts {
                spawned: c.spawned,
                exits: vec![
                    ("exit_ok", c.exited_ok),
                    ("exit_error", c.exited_error),
                    ("signal", c.signaled),
                    ("stuck", c.stuck_kills),
                    ("not_ready", c.not_ready),
                    ("spawn_failed", c.spawn_failures - c.not_ready),
                    ("recycle", c.recycles),
                ],
                stuck_kills: c.stuck_kills,
                spawn_failures: c.spawn_failures,
                reloads: vec![
                    ("ok", c.reloads),
                    ("failed", c.reloads_failed),
                    ("aborted", c.rollouts_aborted),
                ],
                output_dropped: c.output_dropped,
                grown: c.grown,
                shrunk: c.shrunk,
            },
            respawn_latency: histogram(&c.respawn_latency),
            board_check: histogram(&c.board_check),
        }
    }
}

fn histogram(h: &events::Histogram) -> http::Histogram {
    http::Histogram {
        bounds: events::BUCKETS.to_vec(),
        counts: h.counts.to_vec(),
        sum: h.sum_secs,
    }
}
