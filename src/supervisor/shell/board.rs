//! The periodic look at the board: what each running worker's status file
//! says (one `fstat` and a lock probe on files kept open), for the core to
//! judge; the files of dead processes we do not know are removed.
//! `read_all` is never called.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::dump::shown_status;
use super::{Shell, READY_POLL};
use crate::render;
use crate::scoreboard::{FileState, Scoreboard, Status};
use crate::supervisor::core::{Clocks, FileSeen, Observation};
use crate::supervisor::events::{Event, LastStatus};
use crate::supervisor::master_file::{self, ClaimError, MasterFile};

/// What the last read of a worker's status said of it, and when.
pub(super) struct IdleSeen {
    /// The file's time at that read.
    updated: SystemTime,
    read_at: SystemTime,
    idle: bool,
}

/// Files are stamped with a coarse clock (a tick, up to 10 ms): a write
/// this soon after another may carry the same time.
const MTIME_GRAIN: Duration = Duration::from_millis(20);

/// How much of a status the idle rule sees: a worker's whole JSON object
/// in practice, and a bounded read whatever a worker writes.
const IDLE_HEAD: usize = 64 * 1024;

impl Shell {
    pub(super) fn check_board(&mut self) {
        let began = Instant::now();
        self.ensure_board();
        let clocks = Clocks::now();
        let running: Vec<_> = self.pool.running().collect();
        let seen: Vec<Observation> = running
            .iter()
            .map(|&(slot, pid)| self.observe(slot, pid))
            .collect();
        self.measure_memory(&running);
        for silent in self.pool.judge(clocks, &seen) {
            let last = match self.files.get(&silent.pid).map(shown_status) {
                Some(Status::Written(status)) => LastStatus::Was(render::escape(&status)),
                Some(Status::Unreadable(why)) => LastStatus::Unreadable(why.to_string()),
                Some(Status::NotYet) | None => LastStatus::Never,
            };
            self.pool.replace_stuck(silent, last, Instant::now());
        }
        self.pool.scale(Instant::now());
        self.remove_unknown_dead_files();
        self.adopt_orphans();
        self.publish();
        self.pool.emit(Event::BoardChecked {
            workers: running.len(),
            took: began.elapsed(),
        });
    }

    /// The pool's snapshot into the master file, for `prefork status`.
    pub(in crate::supervisor) fn publish(&mut self) {
        self.unpublished = false;
        self.published = Instant::now();
        let snapshot = self.snapshot();
        if let Err(e) = self.master_file.publish(&snapshot, Instant::now()) {
            self.pool.emit(Event::BoardProblem {
                what: format!("cannot write {}: {e}", master_file::NAME),
            });
        }
    }

    /// Recreates the board where it was when its directory was removed,
    /// renamed or replaced under us (with the same checks as at start), and
    /// rolls the workers over so that they show on it again. Returns
    /// whether the board is usable.
    pub(super) fn ensure_board(&mut self) -> bool {
        if self.board.dir_is_current() {
            self.board_lost = false;
            return true;
        }
        let dir = self.board.base_dir().to_path_buf();
        match Scoreboard::new(&dir) {
            Ok(board) => {
                let registrar = board
                    .fork_registrar()
                    .expect("the master's scoreboard uses process ids");
                self.launcher.set_registrar(registrar);
                match MasterFile::claim(&dir) {
                    Ok(file) => self.master_file = file,
                    Err(ClaimError::Taken(claimed)) => self.pool.emit(Event::BoardProblem {
                        what: format!("the recreated scoreboard: {claimed}"),
                    }),
                    Err(ClaimError::Io(path, e)) => self.pool.emit(Event::BoardProblem {
                        what: format!("cannot create {}: {e}", path.display()),
                    }),
                }
                // The running workers' files stay open here (an unlinked
                // file still says when it was written): still judged.
                self.board = board;
                self.board_lost = false;
                self.pool.emit(Event::BoardRecreated { dir });
                self.pool
                    .roll_over("their status files went with the old scoreboard directory");
                true
            }
            Err(e) => {
                if !std::mem::replace(&mut self.board_lost, true) {
                    let error = e.to_string();
                    self.pool.emit(Event::BoardLost { dir, error });
                }
                false
            }
        }
    }

    /// What worker `pid`'s status file says now (one `fstat`), following
    /// the file to its new inode when the worker replaced it.
    fn file_state(&mut self, pid: nix::unistd::Pid) -> Option<FileState> {
        let mut state = self.files.get(&pid).and_then(|f| f.state().ok());
        if state.is_none_or(|s| !s.linked) {
            // The worker replaced its file: Parallel::Scoreboard's
            // constructor removes it and update() makes a new one. Until a
            // new one exists, the old descriptor stays: its inode still says
            // when the worker last wrote. (A reader removes the file of a
            // worker that closed its descriptor, taking the released lock
            // for a dead worker's: that worker must still be judged.)
            if let Ok(file) = self.board.watch(&pid.to_string()) {
                state = file.state().ok();
                self.files.insert(pid, file);
            }
        }
        state
    }

    fn observe(&mut self, slot: usize, pid: nix::unistd::Pid) -> Observation {
        let state = self.file_state(pid);
        let held = self
            .files
            .get(&pid)
            .is_some_and(|f| f.is_held().unwrap_or(true));
        let idle = state.is_some_and(|s| self.is_idle(pid, &s));
        Observation {
            slot,
            pid,
            held,
            file: state.map(|s| FileSeen {
                updated: s.updated,
                written: s.written,
            }),
            idle,
        }
    }

    /// Whether worker `pid`'s status says it is idle, by the idle rule.
    /// The status is read again only when the file was written since the
    /// last read: a pool of quiet workers costs no read at all.
    fn is_idle(&mut self, pid: nix::unistd::Pid, state: &FileState) -> bool {
        if !state.written {
            return false;
        }
        if let Some(seen) = self.idle_seen.get(&pid) {
            // A write within the kernel's timestamp grain of the last read
            // may carry the same time: then the time says nothing.
            if seen.updated == state.updated && seen.read_at >= state.updated + MTIME_GRAIN {
                return seen.idle;
            }
        }
        let read_at = SystemTime::now();
        let head = self.files.get(&pid).and_then(|f| f.status_head(IDLE_HEAD));
        let idle = head.is_some_and(|(status, _)| self.pool.config().idle.is_idle(&status));
        let seen = IdleSeen {
            updated: state.updated,
            read_at,
            idle,
        };
        self.idle_seen.insert(pid, seen);
        idle
    }

    /// Files of dead processes that are not ours (stale files, other
    /// programs sharing the directory) are removed; our own workers' files
    /// are removed when they are reaped, so they are not even opened here.
    fn remove_unknown_dead_files(&mut self) {
        let ours: HashSet<i32> = self.pool.own_pids().map(|p| p.as_raw()).collect();
        let known = |id: &str| id.parse().is_ok_and(|pid: i32| ours.contains(&pid));
        if let Err(e) = self.board.cleanup_unknown(known) {
            self.pool.emit(Event::BoardProblem {
                what: format!("cannot clean the scoreboard: {e}"),
            });
        }
    }
}

impl Shell {
    /// Tells the pool which of the workers it awaits a first status write
    /// from have written one: one `fstat` of each file kept open, at most
    /// every [`READY_POLL`] however often the loop turns.
    pub(super) fn look_for_reports(&mut self) {
        let now = Instant::now();
        if now < self.reports_looked + READY_POLL || !self.pool.awaits_report() {
            return;
        }
        self.reports_looked = now;
        for pid in self.pool.awaiting_report() {
            if self.file_state(pid).is_some_and(|s| s.written) {
                self.pool.reported(pid, now);
            }
        }
    }
}
