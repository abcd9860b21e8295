//! Reading one frame: the board (through a read-only scoreboard handle,
//! which never removes a file, not even a dead worker's, and its files kept
//! open: [`super::board`]), the master's snapshot, and each live worker's
//! `/proc/<pid>/stat` (kept open too: [`super::procfs`]).
//!
//! A board directory that vanishes is no error for the viewer: the frame
//! says so, and the next frames look for it again, so a board that comes
//! back (a restarted service) is picked up.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::idle::IdleRule;
use crate::scoreboard::Scoreboard;
use crate::supervisor::master_file;

use super::board::BoardFiles;
use super::model::{classify, Counts, Frame, Row};
use super::procfs::{CpuMeter, ProcFiles};
use super::snapshot::MasterInfo;

/// The largest status read. A status above it shows as unreadable (with its
/// size); the view is for people, and reads the board once a second.
const MAX_STATUS: usize = 1 << 20;

/// What `Scoreboard::read_only` says of our handle.
const WHY_READ_ONLY: &str = "prefork top only reads";

/// Reads frames of one board.
pub struct Reader {
    dir: PathBuf,
    board: Option<Scoreboard>,
    /// `--idle-status`, over the master's rule.
    rule: Option<IdleRule>,
    /// The master's rule as last compiled: its pattern changes only when
    /// the master is reconfigured, and a regex compiled afresh each frame
    /// would also match every status with a cold cache.
    master_rule: Option<IdleRule>,
    files: BoardFiles,
    cpu: CpuMeter,
    proc: ProcFiles,
}

impl Reader {
    /// A reader of the board in `dir`; fails when it cannot be opened.
    pub fn open(dir: &Path, rule: Option<IdleRule>) -> crate::scoreboard::Result<Reader> {
        let board = open_board(dir)?;
        Ok(Reader {
            dir: dir.to_path_buf(),
            board: Some(board),
            rule,
            master_rule: None,
            files: BoardFiles::default(),
            cpu: CpuMeter::default(),
            proc: ProcFiles::new(),
        })
    }

    /// Reads the board as it is now.
    pub fn read(&mut self) -> Frame {
        let mut frame = Frame {
            dir: self.dir.clone(),
            ..Frame::default()
        };
        if let Err(why) = self.ensure_board() {
            frame.error = Some(why);
            return frame;
        }
        let board = self.board.as_ref().expect("ensured above");
        let workers = match self.files.live_workers(board) {
            Ok(workers) => workers,
            Err(e) => {
                frame.error = Some(format!("cannot read the scoreboard: {e}"));
                self.board = None;
                return frame;
            }
        };
        let wall = SystemTime::now();
        let unix_now = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let snapshot = master_file::read_json(&self.dir);
        let at = Instant::now();
        let master = snapshot.and_then(|json| MasterInfo::from_json(&json, unix_now));
        let pattern = master.as_ref().and_then(|m| m.idle_status.as_deref());
        if self.master_rule.as_ref().and_then(IdleRule::source) != pattern {
            self.master_rule = pattern.and_then(|p| IdleRule::pattern(p).ok());
        }
        let rule = self
            .rule
            .as_ref()
            .or(self.master_rule.as_ref())
            .unwrap_or(&IdleRule::Default);
        let stuck_timeout = master.as_ref().and_then(|m| m.stuck_timeout);
        frame.rows = workers
            .into_iter()
            .map(|worker| {
                let age = wall.duration_since(worker.updated).unwrap_or_default();
                let slot = master.as_ref().and_then(|m| m.slots.get(&worker.id));
                let pid = worker.id.parse().ok();
                let sample = pid.and_then(|pid| self.proc.sample(pid));
                let cpu = pid
                    .zip(sample)
                    .and_then(|(pid, s)| self.cpu.observe(pid, s, at));
                Row {
                    slot: slot.map(|s| s.slot),
                    restarts: slot.and_then(|s| s.restarts),
                    state: classify(&worker.status, age, stuck_timeout, rule),
                    line: crate::render::status_cell(&worker.status),
                    age,
                    cpu,
                    rss: sample.map(|s| s.rss_bytes),
                    id: worker.id,
                    status: worker.status,
                }
            })
            .collect();
        self.cpu.end_frame();
        self.proc.end_frame();
        frame.counts = Counts::of(&frame.rows);
        frame.master = master;
        frame
    }

    /// The handle, opened again when the directory was removed or replaced
    /// since (ours would list a deleted directory: nothing, forever).
    fn ensure_board(&mut self) -> Result<(), String> {
        if !self.board.as_ref().is_some_and(Scoreboard::dir_is_current) {
            self.board = None;
            self.files.clear();
            let dir = self.dir.display();
            let board = open_board(&self.dir).map_err(|e| match e {
                crate::scoreboard::Error::Io { cause, .. }
                    if cause.kind() == std::io::ErrorKind::NotFound =>
                {
                    format!("scoreboard {dir} is gone: {cause}; waiting for it to come back")
                }
                e => format!("cannot read the scoreboard {dir}: {e}"),
            })?;
            self.board = Some(board);
        }
        Ok(())
    }
}

fn open_board(dir: &Path) -> crate::scoreboard::Result<Scoreboard> {
    Scoreboard::builder(dir)
        .read_only(WHY_READ_ONLY)
        .max_status_len(MAX_STATUS)
        .build()
}
