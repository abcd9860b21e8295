//! SIGUSR1: the board on standard output, one line per slot, from the
//! pool's snapshot and the status files the master keeps open. Written
//! through the standard output sink: a reader that does not read loses
//! lines (and is told how many), never the loop.

use std::time::{Instant, SystemTime};

use super::Shell;
use crate::render;
use crate::scoreboard::{Status, WatchedFile};
use crate::supervisor::core::Snapshot;
use crate::supervisor::sinks;

/// How much of a status the master shows, in its dump and in its log: a
/// line of a table. Reading, escaping and printing the whole of a
/// multi-megabyte status would hold up the loop (reaping, respawning) for
/// as long, at every SIGUSR1, and leave the master's heap that much larger.
const SHOWN: usize = 1024;

/// The status in `file` as the master shows it: at most [`SHOWN`] bytes of
/// it (read at that cost), followed by the whole length when it is longer;
/// or why it cannot be read (the worker holds its lock all the same).
pub(super) fn shown_status(file: &WatchedFile) -> Status {
    let (mut head, len) = match file.try_status_head(SHOWN) {
        Ok(Some(head)) => head,
        Ok(None) => return Status::NotYet,
        Err(why) => return Status::Unreadable(why),
    };
    if len > head.len() as u64 {
        // Not in the middle of a character.
        if let Err(e) = std::str::from_utf8(&head) {
            if e.error_len().is_none() {
                head.truncate(e.valid_up_to());
            }
        }
        head.extend_from_slice(format!("... ({len} bytes)").as_bytes());
    }
    Status::Written(head)
}

impl Shell {
    /// The pool's snapshot, with what the shell alone knows.
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut snapshot = self.pool.snapshot();
        let log_dropped = sinks::log_sink(|s| s.dropped()).unwrap_or(0);
        snapshot.counters.output_dropped = log_dropped + self.stdout.dropped();
        snapshot
    }

    pub(super) fn dump(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let snapshot = self.snapshot();
        let rows: Vec<render::Row> = snapshot
            .slots
            .iter()
            .map(|slot| {
                let file = slot.pid.and_then(|pid| self.files.get(&pid));
                let state = file.and_then(|f| f.state().ok()).filter(|s| s.written);
                let status = file.map_or(Status::NotYet, shown_status);
                render::Row {
                    slot: Some(slot.slot),
                    id: slot.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                    uptime: slot.running_since.map(|t| now.duration_since(t)),
                    since_update: state.map(|s| wall.duration_since(s.updated).unwrap_or_default()),
                    restarts: Some(slot.restarts),
                    last_exit: slot.last_end.as_ref().map(|e| e.to_string()),
                    status,
                }
            })
            .collect();
        let phase = snapshot.phase.as_str();
        let mut header = format!(
            "prefork master pid={} workers={}/{} phase={phase} uptime={:.0}s restarts={} \
             output_dropped={} scoreboard={}",
            std::process::id(),
            snapshot.live(),
            snapshot.target,
            now.duration_since(snapshot.began).as_secs_f64(),
            snapshot.slots.iter().map(|s| s.restarts).sum::<u64>(),
            snapshot.counters.output_dropped,
            self.board.base_dir().display()
        );
        let a = snapshot.activity;
        header += &format!(" idle={} busy={} starting={}", a.idle, a.busy, a.starting);
        if let Some(b) = snapshot.bounds {
            header += &format!(
                " bounds=workers:{}..{},spare:{}..{}",
                b.min_workers, b.max_workers, b.min_spare, b.max_spare
            );
        }
        if !snapshot.listen.is_empty() {
            header += &format!(" listen={}", snapshot.listen.join(","));
        }
        let table = render::table(&header, &rows, render::Columns::Supervisor);
        for line in table.split_inclusive('\n') {
            self.stdout.push(line.as_bytes());
        }
    }
}
