//! The master: a single-threaded loop that keeps N workers running.
//!
//! Each turn of the loop waits in `poll` on the signal self-pipe, with a
//! timeout that ends at the nearest deadline (a backoff, a kill escalation);
//! then it handles the signals, reaps every child that has exited, enforces
//! the deadlines that have passed and starts the workers that are due. No
//! sleeping, no threads: a signal is acted on as soon as it arrives.

mod checks;
mod dump;
mod reload;
mod signals;
mod slots;
mod spawn;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::{Config, Source};
use crate::scoreboard::{Scoreboard, WatchedFile};
use checks::Clocks;
use signals::{Request, Signals};
use slots::{Draining, Ended, Slot};
use spawn::{SpawnError, Spawner};

/// A start-up failure with its own exit code (126, 127), reported before
/// any other worker is forked.
#[derive(Debug)]
pub struct StartFailure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartFailure {}

/// How many workers one turn of the loop starts at most.
const SPAWN_BATCH: usize = 32;

struct Stopping {
    deadline: Instant,
    killed: bool,
}

pub struct Master {
    config: Config,
    board: Scoreboard,
    /// The directory we created (removed when dropped, after `board`).
    owned_dir: Option<tempfile::TempDir>,
    spawner: Spawner,
    signals: Signals,
    slots: Vec<Slot>,
    draining: Vec<Draining>,
    stopping: Option<Stopping>,
    /// When the board is read next; advanced by whole intervals, so the
    /// schedule does not drift.
    next_check: Instant,
    clocks: Clocks,
    /// Where the configuration came from, for SIGHUP.
    source: Source,
    /// Bumped when the worker command changes: slots running an older
    /// generation are rolled over, one at a time.
    generation: u64,
    rollout: reload::Rollout,
}

/// Runs the master until a requested shutdown has completed.
pub fn run(source: Source) -> Result<()> {
    let config = source.load()?;
    let mut master = Master::start(config, source)?;
    if let Err(e) = master.start_first_worker() {
        // The child registered on the board before its exec failed: do not
        // leave its file behind in a directory we were given.
        let _ = master.board.cleanup();
        return Err(e);
    }
    master.run_loop();
    master.finish();
    Ok(())
}

impl Master {
    fn start(config: Config, source: Source) -> Result<Self> {
        spawn::reserve_status_fd()
            .context("cannot reserve descriptor 3 for the workers' status files")?;
        // Signals first: a SIGCHLD or SIGTERM from the very first worker
        // must not be lost, nor kill us with its default action.
        let signals = Signals::install().context("cannot install signal handlers")?;
        become_subreaper();
        let (dir, owned_dir) = match &config.scoreboard_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let tmp = private_board_dir()?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let board = Scoreboard::new(&dir)
            .with_context(|| format!("cannot open the scoreboard in {}", dir.display()))?;
        let spawner = spawner_for(&config, &board);
        log::info!(
            "prefork master pid={} starting {} worker(s) of `{}`, scoreboard {}",
            std::process::id(),
            config.workers,
            spawner.command_line(),
            dir.display()
        );
        let now = Instant::now();
        let config_check_interval = config.check_interval;
        Ok(Master {
            slots: (0..config.workers).map(|_| Slot::new(now)).collect(),
            config,
            board,
            owned_dir,
            spawner,
            signals,
            draining: Vec::new(),
            stopping: None,
            next_check: now + config_check_interval,
            clocks: Clocks::now(),
            source,
            generation: 0,
            rollout: reload::Rollout::default(),
        })
    }

    /// Starts slot 0 alone: a command that cannot be run fails here, with
    /// exit code 127 or 126, before any other worker is forked.
    fn start_first_worker(&mut self) -> Result<()> {
        match self.spawner.spawn(0) {
            Ok(pid) => {
                self.started(0, pid);
                Ok(())
            }
            Err(SpawnError::Exec(e)) => {
                let code = if e.raw_os_error() == Some(libc::ENOENT) {
                    127
                } else {
                    126
                };
                Err(StartFailure {
                    code,
                    message: format!("cannot run `{}`: {e}", self.spawner.command_line()),
                }
                .into())
            }
            Err(e) => bail!(
                "cannot start the first worker of `{}`: {e}",
                self.spawner.command_line()
            ),
        }
    }

    fn run_loop(&mut self) {
        loop {
            self.spawn_due();
            if self.stopping.is_some() && self.is_empty() {
                return;
            }
            self.wait_for_event();
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
            self.enforce_deadlines();
            self.advance_rollout();
            if self.stopping.is_none() && Instant::now() >= self.next_check {
                self.check_board();
            }
        }
    }

    fn wait_for_event(&self) {
        let timeout = match self.next_deadline() {
            None => -1,
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                // Round up: waking a millisecond early would spin.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut fds = [libc::pollfd {
            fd: self.signals.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // EINTR is a wakeup like any other.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout) };
    }

    fn next_deadline(&self) -> Option<Instant> {
        let spawns = self
            .slots
            .iter()
            .filter(|s| s.pid.is_none() && self.stopping.is_none())
            .map(|s| s.not_before);
        let drains = self
            .draining
            .iter()
            .filter(|d| !d.killed)
            .map(|d| d.deadline);
        let stop = self
            .stopping
            .iter()
            .filter(|s| !s.killed)
            .map(|s| s.deadline);
        let check = self.stopping.is_none().then_some(self.next_check);
        spawns.chain(drains).chain(stop).chain(check).min()
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Reap => {} // see run_loop
            Request::Stop if self.stopping.is_some() => self.stop_now("second stop signal"),
            Request::Stop => self.stop_gracefully(),
            Request::StopNow => self.stop_now("SIGQUIT"),
            Request::Dump => self.dump(),
            Request::AddWorker => self.add_worker(),
            Request::RemoveWorker => self.remove_worker(),
            Request::Reload => self.reload(),
        }
    }

    /// Reaps every child that has exited: workers, and anything reparented
    /// to us as a subreaper.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, Ended::Exited(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.on_exit(pid, Ended::Signaled(sig)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    break;
                }
            }
        }
        self.forget_empty_groups();
    }

    fn on_exit(&mut self, pid: Pid, how: Ended) {
        let now = Instant::now();
        if let Some(index) = self.slots.iter().position(|s| s.pid == Some(pid)) {
            let slot = &mut self.slots[index];
            if let Some(file) = slot.file.take() {
                self.board.remove(&file);
            }
            let uptime = now.duration_since(slot.started);
            let delay = slot.ended(how.clone(), now, &self.config.backoff);
            log::info!(
                "worker pid={pid} slot={index} ended ({how}) after {:.3}s",
                uptime.as_secs_f64()
            );
            if !delay.is_zero() && self.stopping.is_none() {
                log::warn!(
                    "slot={index} is crash-looping ({} quick deaths in a row): next start in {}",
                    slot.failures,
                    crate::duration::display(delay)
                );
            }
            self.drain_leftovers(pid);
        } else if let Some(group) = self
            .draining
            .iter_mut()
            .find(|d| d.pgid == pid && d.leader_alive)
        {
            group.leader_alive = false;
            if let Some(file) = group.file.take() {
                self.board.remove(&file);
            }
            log::info!("retired worker pid={pid} ended ({how})");
        } else {
            // Not a worker: a grandchild reparented to us. It changes nothing.
            log::debug!("reaped pid={pid} ({how}), not a worker");
        }
    }

    /// What a dead worker left in its process group gets the same graceful
    /// end as a retired worker, so that nothing outlives its worker.
    fn drain_leftovers(&mut self, pgid: Pid) {
        if killpg(pgid, None).is_err() {
            return; // the group is empty
        }
        let signal = if self.stopping.as_ref().is_some_and(|s| s.killed) {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        log::info!("terminating what worker pid={pgid} left in its process group");
        if signal == Signal::SIGKILL {
            let _ = killpg(pgid, signal);
        } else {
            terminate_group(pgid);
        }
        self.draining.push(Draining {
            pgid,
            leader_alive: false,
            deadline: Instant::now() + self.config.graceful_timeout,
            killed: signal == Signal::SIGKILL,
            file: None,
        });
    }

    /// Drops groups whose leader is reaped and that have no member left.
    fn forget_empty_groups(&mut self) {
        self.draining
            .retain(|d| d.leader_alive || killpg(d.pgid, None).is_ok());
    }

    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        for group in self
            .draining
            .iter_mut()
            .filter(|d| !d.killed && d.deadline <= now)
        {
            log::warn!(
                "process group {} did not exit within the graceful timeout: SIGKILL",
                group.pgid
            );
            let _ = killpg(group.pgid, Signal::SIGKILL);
            group.killed = true;
        }
        if self
            .stopping
            .as_ref()
            .is_some_and(|s| !s.killed && s.deadline <= now)
        {
            self.stop_now("graceful timeout expired");
        }
    }

    /// Starts the workers that are due, at most [`SPAWN_BATCH`] per turn:
    /// a thousand forks take a second, and signals are answered in between.
    fn spawn_due(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].pid.is_none() && self.slots[i].not_before <= now)
            .take(SPAWN_BATCH)
            .collect();
        for index in due {
            match self.spawner.spawn(index) {
                Ok(pid) => self.started(index, pid),
                Err(e) => {
                    let slot = &mut self.slots[index];
                    let delay = slot.ended(Ended::SpawnFailed, now, &self.config.backoff);
                    log::error!(
                        "cannot start worker slot={index} `{}`: {e}; next attempt in {}",
                        self.spawner.command_line(),
                        crate::duration::display(delay)
                    );
                }
            }
        }
    }

    /// Records a new worker and opens its status file, which the child
    /// created before exec.
    fn started(&mut self, index: usize, pid: Pid) {
        let file = match self.board.watch(&pid.to_string()) {
            Ok(file) => Some(file),
            Err(e) => {
                log::warn!(
                    "worker pid={pid} slot={index}: {e}; it cannot be checked for being stuck"
                );
                None
            }
        };
        let slot = &mut self.slots[index];
        slot.started(pid, Instant::now(), file);
        slot.generation = self.generation;
        match slot.restarts {
            0 => log::info!("spawned worker pid={pid} slot={index}"),
            n => log::info!("spawned worker pid={pid} slot={index} (restart {n})"),
        }
    }

    fn stop_gracefully(&mut self) {
        let timeout = self.config.graceful_timeout;
        log::info!(
            "graceful shutdown: SIGTERM to {} worker(s), SIGKILL after {}",
            self.live_workers(),
            crate::duration::display(timeout)
        );
        self.stopping = Some(Stopping {
            deadline: Instant::now() + timeout,
            killed: false,
        });
        self.signal_all(Signal::SIGTERM);
    }

    fn stop_now(&mut self, why: &str) {
        log::info!(
            "immediate shutdown ({why}): SIGKILL to {} worker(s)",
            self.live_workers()
        );
        self.stopping = Some(Stopping {
            deadline: Instant::now(),
            killed: true,
        });
        self.signal_all(Signal::SIGKILL);
        for group in &mut self.draining {
            group.killed = true;
        }
    }

    fn signal_all(&self, signal: Signal) {
        let workers = self.slots.iter().filter_map(|s| s.pid);
        let groups = self.draining.iter().map(|d| d.pgid);
        for pgid in workers.chain(groups) {
            match signal {
                Signal::SIGTERM => terminate_group(pgid),
                _ => drop(killpg(pgid, signal)),
            }
        }
    }

    /// SIGTERM to a worker's group, SIGKILL after `timeout`.
    fn retire(&mut self, pid: Pid, file: Option<WatchedFile>, timeout: Duration) {
        terminate_group(pid);
        self.draining.push(Draining {
            pgid: pid,
            leader_alive: true,
            deadline: Instant::now() + timeout,
            killed: false,
            file,
        });
    }

    fn live_workers(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }

    fn is_empty(&self) -> bool {
        self.live_workers() == 0 && self.draining.is_empty()
    }

    /// After the last worker: remove their files, and our directory.
    fn finish(self) {
        if let Err(e) = self.board.cleanup() {
            log::warn!("cannot clean the scoreboard: {e}");
        }
        let dir = self.board.base_dir().to_path_buf();
        drop(self.board);
        if let Some(owned) = self.owned_dir {
            if let Err(e) = owned.close() {
                log::warn!(
                    "cannot remove the scoreboard directory {}: {e}",
                    dir.display()
                );
            }
        }
        log::info!("all workers stopped; exiting");
    }
}

/// SIGTERM to a process group, then SIGCONT: a stopped process (SIGSTOP, a
/// debugger let go) cannot act on SIGTERM until it runs again.
fn terminate_group(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let _ = killpg(pgid, Signal::SIGCONT);
}

/// How this configuration's workers are started, on this board.
fn spawner_for(config: &Config, board: &Scoreboard) -> Spawner {
    let registrar = board
        .fork_registrar()
        .expect("the master's scoreboard uses process ids");
    Spawner::new(
        &config.command,
        &config.env,
        config.working_directory.clone(),
        board.base_dir().to_path_buf(),
        registrar,
    )
}

fn become_subreaper() {
    // Orphaned grandchildren are reparented to us, so we reap them (no
    // zombies, even as PID 1 in a container) and see their groups empty.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        log::warn!(
            "cannot become a child subreaper: {}; orphans of workers go to init",
            std::io::Error::last_os_error()
        );
    }
}

/// A new private directory on a memory-backed filesystem: a status file on
/// disk can block its writer (gunicorn's heartbeat file on /tmp did).
fn private_board_dir() -> Result<tempfile::TempDir> {
    let candidates = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/dev/shm"), std::env::temp_dir()]);
    let mut last_error = None;
    for base in candidates {
        match tempfile::Builder::new()
            .prefix("prefork-")
            .tempdir_in(&base)
        {
            Ok(dir) => return Ok(dir),
            Err(e) => last_error = Some((base, e)),
        }
    }
    let (base, e) = last_error.expect("at least one candidate");
    Err(e).with_context(|| {
        format!(
            "cannot create a scoreboard directory in {} (pass --scoreboard DIR)",
            base.display()
        )
    })
}
