//! Changing the pool while it runs: SIGTTIN/SIGTTOU scale it by one, and
//! SIGHUP re-reads the configuration and applies it without downtime.
//!
//! A changed command, environment or working directory is rolled out slot
//! by slot: start the new worker, SIGTERM the old one, and move to the next
//! slot only once the old one has exited, so that between N and N+1 workers
//! are alive at every moment. A configuration that cannot be loaded, or a
//! new command that cannot be started, leaves the running workers alone
//! (but for those of an interrupted rollout, which go back to the command
//! from before it: the pool never stays mixed).

use std::time::Instant;

use nix::unistd::Pid;

use super::slots::Slot;
use super::spawn::Spawner;
use super::{spawner_for, Master};
use crate::config::{self, Config};

/// The state of a rolling restart.
#[derive(Default)]
pub struct Rollout {
    /// The old worker of the slot last rolled: the next slot waits for it.
    waiting_for: Option<Pid>,
    /// What to go back to if the new command cannot be started, and the
    /// generation of the workers that run it.
    previous: Option<(Spawner, Config, u64)>,
}

impl Master {
    pub(super) fn reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let mut new = match self.source.load() {
            Ok(config) => config,
            Err(e) => {
                log::error!(
                    "SIGHUP: configuration not reloaded; the workers keep running as they are: {e}"
                );
                return;
            }
        };
        if new.scoreboard_dir != self.config.scoreboard_dir {
            log::warn!("SIGHUP: scoreboard_dir cannot change while running; it takes effect at the next start");
            new.scoreboard_dir = self.config.scoreboard_dir.clone();
        }
        let old = std::mem::replace(&mut self.config, new);
        let relaunch = self.source.file.is_none()
            || self.config.command != old.command
            || self.config.env != old.env
            || self.config.working_directory != old.working_directory;
        if relaunch {
            let spawner =
                std::mem::replace(&mut self.spawner, spawner_for(&self.config, &self.board));
            // A rollout interrupted by this one goes back to what ran before it.
            if self.rollout.previous.is_none() {
                self.rollout.previous = Some((spawner, old, self.generation));
            }
            self.generation += 1;
            log::info!(
                "SIGHUP: rolling {} worker(s) over to `{}`",
                self.live_workers(),
                self.spawner.command_line()
            );
        } else {
            log::info!("SIGHUP: configuration reloaded");
        }
        self.resize(self.config.workers, "SIGHUP");
    }

    pub(super) fn add_worker(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        match config::check_workers(self.slots.len() + 1) {
            Ok(()) => self.resize(self.slots.len() + 1, "SIGTTIN"),
            Err(e) => log::warn!("SIGTTIN ignored: {e}"),
        }
    }

    pub(super) fn remove_worker(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if self.slots.len() <= 1 {
            log::info!("SIGTTOU ignored: never fewer than one worker");
            return;
        }
        self.resize(self.slots.len() - 1, "SIGTTOU");
    }

    /// New slots are started by the loop; removed ones (the last ones)
    /// have their workers retired with the graceful timeout.
    fn resize(&mut self, workers: usize, why: &str) {
        if workers == self.slots.len() {
            return;
        }
        log::info!("{why}: {} -> {workers} worker(s)", self.slots.len());
        while self.slots.len() < workers {
            self.slots.push(Slot::new(Instant::now()));
        }
        while self.slots.len() > workers {
            let mut slot = self.slots.pop().expect("more slots than wanted");
            if let Some(pid) = slot.pid {
                log::info!(
                    "retiring worker pid={pid} slot={}: SIGTERM",
                    self.slots.len()
                );
                self.retire(pid, slot.file.take(), self.config.graceful_timeout);
            }
        }
    }

    /// One step of a rolling restart, when the previous step is complete.
    pub(super) fn advance_rollout(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        if let Some(old) = self.rollout.waiting_for {
            if self
                .draining
                .iter()
                .any(|d| d.pgid == old && d.leader_alive)
            {
                return;
            }
            self.rollout.waiting_for = None;
        }
        let generation = self.generation;
        let Some(index) = self
            .slots
            .iter()
            .position(|s| s.pid.is_some() && s.generation < generation)
        else {
            if self.rollout.previous.take().is_some() {
                log::info!(
                    "rolling restart complete: {} worker(s)",
                    self.live_workers()
                );
            }
            return;
        };
        let old_pid = self.slots[index]
            .pid
            .expect("position() found a live worker");
        match self.spawner.spawn(index) {
            Ok(pid) => {
                let old_file = self.slots[index].file.take();
                self.started(index, pid);
                log::info!("rolling restart: retiring worker pid={old_pid} slot={index}: SIGTERM");
                self.retire(old_pid, old_file, self.config.graceful_timeout);
                self.rollout.waiting_for = Some(old_pid);
            }
            Err(e) => self.abort_rollout(&e.to_string()),
        }
    }

    /// The new command cannot be started: keep (and respawn) the old one.
    /// Workers that an interrupted rollout already started run a command in
    /// between: they are rolled back, one at a time, so that the pool does
    /// not stay mixed.
    fn abort_rollout(&mut self, error: &str) {
        log::error!(
            "rolling restart aborted: cannot start `{}`: {error}; the remaining workers keep the previous command",
            self.spawner.command_line()
        );
        // With nothing to go back to (this was a rollback), every worker
        // stays as it is: retrying would fail again, at every turn.
        let kept = self
            .rollout
            .previous
            .take()
            .map(|(spawner, previous, generation)| {
                self.spawner = spawner;
                self.config.command = previous.command;
                self.config.env = previous.env;
                self.config.working_directory = previous.working_directory;
                generation
            });
        self.generation += 1;
        let mut back = 0;
        for slot in &mut self.slots {
            if slot.pid.is_none() || kept.is_none_or(|g| slot.generation == g) {
                slot.generation = self.generation;
            } else {
                back += 1;
            }
        }
        if back > 0 {
            log::info!(
                "rolling {back} worker(s) started by the interrupted rollout back to `{}`",
                self.spawner.command_line()
            );
        }
    }
}
