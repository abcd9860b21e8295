//! The shell: owns every descriptor, waits in `poll`, turns what happened
//! into the core's inputs and carries out the core's effects.
//!
//! One turn of the loop: let the core act on the time (deadlines, rollout,
//! spawns) and carry that out; wait in `poll` on the signal self-pipe, the
//! exec-status pipes of starting workers, the output sinks with bytes
//! waiting and the relayed workers' output pipes ([`relay`]), until the
//! core's nearest deadline; then feed the core what arrived: exec results,
//! signal requests, reaped children, the board. No call here blocks: every
//! descriptor polled is non-blocking, output goes through the sinks, and
//! spawning does not wait for a child's exec.

mod board;
mod children;
mod dump;
mod memory;
mod notify;
mod relay;
mod status;

pub(super) use status::bind_endpoint;

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::core::{Effect, Pool};
use super::events::{Ended, Event};
use super::master_file::{self, MasterFile};
use super::notify::Notifier;
use super::signals::{Request, Signals};
use super::sinks::{self, Sink, BOARD_CAPACITY};
use super::spawn::{ExecWatch, Launcher, SpawnError, STATUS_FD};
use crate::config::{Config, Source};
use crate::listen::{default_backlog, BindOptions, Listener, Listeners};
use crate::scoreboard::{Scoreboard, WatchedFile};

pub struct Shell {
    pub(super) pool: Pool,
    pub(super) board: Scoreboard,
    /// Our claim on the board, with the pool's snapshot for readers.
    pub(super) master_file: MasterFile,
    /// The directory we created (removed when dropped, after `board`).
    pub(super) owned_dir: Option<tempfile::TempDir>,
    pub(super) launcher: Launcher,
    pub(super) signals: Signals,
    /// Where the configuration came from, for SIGHUP.
    pub(super) source: Source,
    /// The listening sockets, kept across reloads.
    pub(super) listeners: Listeners,
    /// Where the next board check goes on measuring workers' memory.
    pub(super) rss_cursor: usize,
    /// The HTTP status endpoint, when `status_listen` asks for one.
    pub(super) endpoint: Option<status::Endpoint>,
    /// systemd's notification socket, when we run under it.
    pub(super) notifier: Option<Notifier>,
    pub(super) notified: notify::Notified,
    /// The status files of our workers (and of retired ones until they
    /// are reaped), kept open for the checks.
    pub(super) files: HashMap<Pid, WatchedFile>,
    /// What the running workers' statuses said at the last read.
    idle_seen: HashMap<Pid, board::IdleSeen>,
    /// The exec-status pipes of the workers still starting.
    pub(super) starting: Vec<(Pid, ExecWatch)>,
    /// Standard output, for the SIGUSR1 board and relayed worker output.
    pub(super) stdout: Sink,
    /// The output pipes of the workers, with `worker_output = "prefix"`.
    relay: relay::Relay,
    /// The board's directory is gone and could not be made again (said once).
    pub(super) board_lost: bool,
    /// The pool changed since the master file was last written, and when
    /// that was: it is rewritten at most every [`PUBLISH_EVERY`].
    pub(super) unpublished: bool,
    pub(super) published: Instant,
    /// When the awaited workers' status files were last looked at.
    pub(super) reports_looked: Instant,
}

/// How fresh `prefork status` sees the pool, at most: a burst of spawns or
/// exits rewrites the master file once, not once per event.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// How often the files of workers whose readiness is their first status
/// write are looked at (one `fstat` each), while any is awaited.
const READY_POLL: Duration = Duration::from_millis(10);

/// How new listening sockets are made, by `config`.
pub(super) fn bind_options(config: &Config) -> BindOptions {
    BindOptions {
        backlog: config
            .backlog
            .map_or_else(default_backlog, |n| n.min(i32::MAX as u32) as i32),
        mode: config.socket_mode,
    }
}

impl Shell {
    // Each argument is a resource the shell takes over, made by `run`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        pool: Pool,
        board: Scoreboard,
        master_file: MasterFile,
        owned_dir: Option<tempfile::TempDir>,
        launcher: Launcher,
        signals: Signals,
        source: Source,
        listeners: Listeners,
        notifier: Option<Notifier>,
        endpoint: Option<status::Endpoint>,
    ) -> Shell {
        Shell {
            pool,
            board,
            master_file,
            owned_dir,
            launcher,
            signals,
            source,
            listeners,
            notifier,
            endpoint,
            rss_cursor: 0,
            notified: notify::Notified::default(),
            files: HashMap::new(),
            idle_seen: HashMap::new(),
            starting: Vec::new(),
            stdout: Sink::open(1, "standard output", BOARD_CAPACITY),
            relay: relay::Relay::new(),
            board_lost: false,
            unpublished: false,
            published: Instant::now(),
            reports_looked: Instant::now(),
        }
    }

    /// Runs until a requested shutdown has completed.
    pub(super) fn run(&mut self) {
        loop {
            self.pool.tick(Instant::now());
            self.apply_effects();
            if self.pool.is_done() {
                // What the last workers left behind, reparented to us as
                // they died, is stopped too before we go.
                self.adopt_orphans();
                self.apply_effects();
                if self.pool.is_done() {
                    return;
                }
            }
            let (ready, status) = self.wait_for_events();
            self.collect_execs(&ready);
            let mut child_exited = false;
            for request in self.signals.pending() {
                child_exited |= request == Request::Reap;
                self.handle(request);
            }
            // Only after a SIGCHLD: with a thousand children, each
            // waitpid(-1) scan costs the kernel ~0.2 ms. signal-hook records
            // a SIGCHLD that arrives while we reap, so none is missed.
            if child_exited {
                self.reap();
            }
            self.look_for_reports();
            if self.pool.check_due(Instant::now()) {
                self.check_board();
            }
            self.apply_effects();
            // Last: a respawn (just forked above) never waits for a page.
            self.serve_status(&status, Instant::now());
            if self.unpublished && self.published.elapsed() >= PUBLISH_EVERY {
                self.publish();
                self.notify_status();
            }
            self.notify_progress(Instant::now());
        }
    }

    /// Carries out the core's effects, and what they lead to, in order.
    pub(super) fn apply_effects(&mut self) {
        loop {
            let effects = self.pool.take_effects();
            if effects.is_empty() {
                return;
            }
            // A stat and an fstat per batch, so that a board removed since
            // the last check costs no failed start.
            if effects.iter().any(|e| matches!(e, Effect::Spawn { .. })) {
                self.ensure_board();
            }
            // What changes the pool, not a debug line (an idle master's
            // board check must not cost a second wake-up).
            self.unpublished |= effects
                .iter()
                .any(|e| !matches!(e, Effect::Log(event) if event.level() == log::Level::Debug));
            for effect in effects {
                match effect {
                    Effect::Spawn { slot, spec } => {
                        let now = Instant::now();
                        match self.launcher.spawn(slot, &spec) {
                            Ok(started) => {
                                self.pool.forked(slot, started.pid, now);
                                self.starting.push((started.pid, started.exec));
                            }
                            Err(e) => self.pool.fork_failed(slot, e.to_string(), now),
                        }
                    }
                    Effect::Terminate(pgid, signal) => terminate_group(pgid, signal),
                    Effect::Stop(pid, signal) => {
                        let _ = kill(pid, signal);
                        let _ = killpg(pid, Signal::SIGCONT);
                    }
                    Effect::Kill(pgid) => drop(killpg(pgid, Signal::SIGKILL)),
                    Effect::TerminateProcess(pid) => {
                        let _ = kill(pid, Signal::SIGTERM);
                        let _ = kill(pid, Signal::SIGCONT);
                    }
                    Effect::KillProcess(pid) => drop(kill(pid, Signal::SIGKILL)),
                    Effect::Log(event) => sinks::log_event(&event),
                }
            }
        }
    }

    /// Waits until a descriptor is ready or the core's next deadline, and
    /// writes what the sinks hold where `poll` says it can. Returns the
    /// exec pipes that became readable, and the status endpoint's sockets
    /// that are ready, with how.
    fn wait_for_events(&mut self) -> (Vec<RawFd>, Vec<(RawFd, PollFlags)>) {
        let publish = self.unpublished.then(|| self.published + PUBLISH_EVERY);
        // A worker's first status write is not an event we can wait on:
        // while one is awaited, its file is looked at every READY_POLL.
        let report = self
            .pool
            .awaits_report()
            .then(|| self.reports_looked + READY_POLL);
        let deadline = [
            self.pool.next_deadline(),
            publish,
            report,
            self.watchdog_deadline(),
            self.status_deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up: waking a millisecond early would spin.
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let log_fd = sinks::log_sink(|s| s.wants_write().then(|| s.fd())).flatten();
        let out_fd = self.stdout.wants_write().then(|| self.stdout.fd());
        let notify_fd = self
            .notifier
            .as_ref()
            .filter(|n| n.wants_write())
            .map(Notifier::fd);
        let borrow = |fd: RawFd| {
            // SAFETY: each descriptor polled is owned by `self` or by the log
            // sink, and stays open for the whole call.
            unsafe { BorrowedFd::borrow_raw(fd) }
        };
        let mut fds: Vec<PollFd> = vec![PollFd::new(borrow(self.signals.fd()), PollFlags::POLLIN)];
        fds.extend(
            self.starting
                .iter()
                .map(|(_, w)| PollFd::new(borrow(w.fd()), PollFlags::POLLIN)),
        );
        let status_at = fds.len();
        let interest = self.status_interest();
        fds.extend(
            interest
                .iter()
                .map(|&(fd, events)| PollFd::new(borrow(fd), events)),
        );
        let sinks_at = fds.len();
        fds.extend(
            [log_fd, out_fd, notify_fd]
                .into_iter()
                .flatten()
                .map(|fd| PollFd::new(borrow(fd), PollFlags::POLLOUT)),
        );
        let relay_at = fds.len();
        self.relay.adopt(self.launcher.take_outputs());
        fds.extend(
            self.relay
                .fds()
                .map(|fd| PollFd::new(borrow(fd), PollFlags::POLLIN)),
        );
        // EINTR is a wakeup like any other.
        let _ = nix::poll::poll(&mut fds, timeout);
        let fired = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
        let ready: Vec<RawFd> = self
            .starting
            .iter()
            .zip(&fds[1..status_at])
            .filter(|(_, p)| fired(p))
            .map(|((_, w), _)| w.fd())
            .collect();
        let status: Vec<(RawFd, PollFlags)> = interest
            .iter()
            .zip(&fds[status_at..sinks_at])
            .filter_map(|(&(fd, _), p)| Some((fd, p.revents().filter(|r| !r.is_empty())?)))
            .collect();
        let relayed: Vec<bool> = fds[relay_at..].iter().map(fired).collect();
        self.relay.pump(&relayed, &mut self.stdout);
        if fds[sinks_at..relay_at].iter().any(fired) {
            sinks::log_sink(Sink::flush);
            self.stdout.flush();
            if let Some(n) = self.notifier.as_mut() {
                n.flush();
            }
        }
        (ready, status)
    }

    /// The workers whose exec reported (through a readable pipe).
    fn collect_execs(&mut self, ready: &[RawFd]) {
        for fd in ready {
            if let Some(i) = self.starting.iter().position(|(_, w)| w.fd() == *fd) {
                if let Some(result) = self.starting[i].1.try_result() {
                    let (pid, _) = self.starting.swap_remove(i);
                    self.exec_done(pid, result);
                }
            }
        }
    }

    pub(super) fn exec_done(&mut self, pid: Pid, result: Result<(), SpawnError>) {
        if matches!(&result, Err(SpawnError::Register(e)) if e.raw_os_error() == Some(libc::ENOENT))
        {
            // Its board's directory is gone: make it again before a retry.
            self.ensure_board();
        }
        self.pool
            .exec_done(pid, result.map_err(|e| e.to_string()), Instant::now());
        if let Some(slot) = self.pool.slot_of_worker(pid) {
            self.watch(pid, slot);
        }
    }

    /// Opens a new worker's status file, which the child created before
    /// its exec.
    fn watch(&mut self, pid: Pid, slot: usize) {
        if self.files.contains_key(&pid) {
            return;
        }
        match self.board.watch(&pid.to_string()) {
            Ok(file) => drop(self.files.insert(pid, file)),
            Err(e) => self.pool.emit(Event::Unwatched {
                pid,
                slot,
                error: e.to_string(),
            }),
        }
    }

    fn handle(&mut self, request: Request) {
        let now = Instant::now();
        match request {
            Request::Reap => {} // see run()
            Request::Stop => {
                self.notify_stopping();
                self.adopt_orphans();
                self.pool.stop_gracefully(now);
            }
            Request::StopNow => {
                self.notify_stopping();
                self.adopt_orphans();
                self.pool.stop_now("SIGQUIT", now);
            }
            Request::Dump => self.dump(),
            Request::AddWorker => self.pool.add_worker(now),
            Request::RemoveWorker => self.pool.remove_worker(now),
            Request::Reload => self.reload(now),
        }
    }

    fn reload(&mut self, now: Instant) {
        if self.pool.is_stopping() {
            return;
        }
        self.notify_reloading();
        let config = match self.source.load() {
            Ok(config) => config,
            Err(e) => return self.pool.reload_failed(e.to_string()),
        };
        // New addresses are bound before anything changes: one that
        // cannot be bound leaves everything as it was.
        let options = bind_options(&config);
        let resolved = match self.listeners.resolve(&config.listen, options) {
            Ok(resolved) => resolved,
            Err(e) => return self.pool.reload_failed(e.to_string()),
        };
        if let Err(e) = self.rebind_endpoint(&config) {
            // (The new sockets just bound close with `resolved`.)
            return self.pool.reload_failed(e.to_string());
        }
        sinks::set_json_logs(config.log_format == crate::config::LogFormat::Json);
        let roll_anyway = self.source.file.is_none();
        self.pool
            .reconfigure(config, resolved.sockets, roll_anyway, now);
        self.said_listening(&resolved.new);
    }

    /// Says where each of `sockets`, now in the current spec, listens.
    pub(super) fn said_listening(&mut self, sockets: &[Arc<Listener>]) {
        let spec = Arc::clone(self.pool.spec());
        for (fd, socket) in (STATUS_FD..).zip(&spec.sockets) {
            if sockets.iter().any(|s| Arc::ptr_eq(s, socket)) {
                self.pool.emit(Event::Listening {
                    addr: socket.bound.to_string(),
                    fd,
                    inherited: socket.inherited,
                });
            }
        }
    }

    /// Reaps every child that has exited: workers, and anything reparented
    /// to us as a subreaper.
    fn reap(&mut self) {
        self.relay.adopt(self.launcher.take_outputs());
        loop {
            let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Ended::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Ended::Signaled(sig)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.pool.emit(Event::BoardProblem {
                        what: format!("waitpid failed: {e}"),
                    });
                    break;
                }
            };
            // Its exec report first: the child's end of the pipe is closed
            // now, so the read cannot wait.
            if let Some(i) = self.starting.iter().position(|(p, _)| *p == pid) {
                let (_, watch) = self.starting.swap_remove(i);
                let result = watch.try_result().unwrap_or(Ok(()));
                self.exec_done(pid, result);
            }
            let group_alive = killpg(pid, None).is_ok();
            self.pool.exited(pid, how, group_alive, Instant::now());
            self.relay.reaped(pid);
            self.idle_seen.remove(&pid);
            match self.files.remove(&pid) {
                Some(file) => self.board.remove(&file),
                // It died before its exec said it runs: perhaps in the
                // middle of registering, between creating its file and
                // renaming it into place.
                None => drop(self.board.remove_unfinished(&pid.to_string())),
            }
        }
        self.pool
            .forget_empty_groups(|pgid| killpg(pgid, None).is_ok());
        self.relay
            .close_orphaned(|pgid| killpg(pgid, None).is_ok(), &mut self.stdout);
    }

    /// After the last worker: remove their files, and our directory; give
    /// the output a moment to drain.
    pub(super) fn finish(mut self) {
        let _ = std::fs::remove_file(self.board.base_dir().join(master_file::NAME));
        if let Err(e) = self.board.cleanup() {
            self.pool.emit(Event::BoardProblem {
                what: format!("cannot clean the scoreboard: {e}"),
            });
        }
        let dir = self.board.base_dir().to_path_buf();
        self.files.clear();
        drop(self.board);
        if let Some(owned) = self.owned_dir {
            if let Err(e) = owned.close() {
                self.pool.emit(Event::BoardProblem {
                    what: format!(
                        "cannot remove the scoreboard directory {}: {e}",
                        dir.display()
                    ),
                });
            }
        }
        self.pool.emit(Event::Stopped);
        for effect in self.pool.take_effects() {
            if let Effect::Log(event) = effect {
                sinks::log_event(&event);
            }
        }
        self.relay.adopt(self.launcher.take_outputs());
        self.relay.finish(&mut self.stdout);
        flush_at_exit(&mut self.stdout, EXIT_PATIENCE);
        sinks::flush_log_at_exit(EXIT_PATIENCE);
    }
}

/// How long the last output may take to drain at exit: a reader that takes
/// nothing must not hold the exit for long.
const EXIT_PATIENCE: Duration = Duration::from_millis(500);

fn flush_at_exit(sink: &mut Sink, patience: Duration) {
    let deadline = Instant::now() + patience;
    sink.flush();
    while sink.wants_write() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        // SAFETY: the sink's descriptor is open while the sink lives.
        let fd = unsafe { BorrowedFd::borrow_raw(sink.fd()) };
        let ms = PollTimeout::try_from(left.as_millis().clamp(1, 1000) as i32)
            .unwrap_or(PollTimeout::MAX);
        let _ = nix::poll::poll(&mut [PollFd::new(fd, PollFlags::POLLOUT)], ms);
        sink.flush();
    }
}

/// A stop signal to a process group, then SIGCONT: a stopped process
/// (SIGSTOP, a debugger let go) cannot act on it until it runs again.
fn terminate_group(pgid: Pid, signal: Signal) {
    let _ = killpg(pgid, signal);
    let _ = killpg(pgid, Signal::SIGCONT);
}
