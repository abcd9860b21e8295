//! SIGUSR1: the board on standard output, one line per slot, from the
//! status files the master keeps open.

use std::io::Write;
use std::time::{Instant, SystemTime};

use super::Master;
use crate::render;
use crate::scoreboard::WatchedFile;

/// How much of a status the master shows, in its dump and in its log: a
/// line of a table. Reading, escaping and printing the whole of a
/// multi-megabyte status would hold up the loop (reaping, respawning) for
/// as long, at every SIGUSR1, and leave the master's heap that much larger.
const SHOWN: usize = 1024;

/// The status in `file` as the master shows it: at most [`SHOWN`] bytes of
/// it (read at that cost), followed by the whole length when it is longer.
pub(super) fn shown_status(file: &WatchedFile) -> Option<Vec<u8>> {
    let (mut head, len) = file.status_head(SHOWN)?;
    if len > head.len() as u64 {
        // Not in the middle of a character.
        if let Err(e) = std::str::from_utf8(&head) {
            if e.error_len().is_none() {
                head.truncate(e.valid_up_to());
            }
        }
        head.extend_from_slice(format!("... ({len} bytes)").as_bytes());
    }
    Some(head)
}

impl Master {
    pub(super) fn dump(&self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let rows: Vec<render::Row> = self
            .slots
            .iter()
            .enumerate()
            .map(|(index, slot)| {
                let file = slot.file.as_ref().filter(|_| slot.pid.is_some());
                let state = file.and_then(|f| f.state().ok()).filter(|s| s.written);
                render::Row {
                    slot: Some(index),
                    id: slot.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                    uptime: slot.pid.map(|_| now.duration_since(slot.started)),
                    since_update: state.map(|s| wall.duration_since(s.updated).unwrap_or_default()),
                    restarts: Some(slot.restarts),
                    last_exit: slot.last_end.as_ref().map(|e| e.to_string()),
                    status: state.and(file).and_then(shown_status),
                }
            })
            .collect();
        let header = format!(
            "prefork master pid={} workers={}/{} scoreboard={}",
            std::process::id(),
            self.live_workers(),
            self.slots.len(),
            self.board.base_dir().display()
        );
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(render::table(&header, &rows, render::Columns::Supervisor).as_bytes())
            .and_then(|()| out.flush());
        if let Err(e) = written {
            log::warn!("SIGUSR1: cannot write the board to standard output: {e}");
        }
    }
}
