//! The board's live workers, read with their files kept open from frame to
//! frame: a listing of the directory, then per file one `fstat`, one lock
//! probe and one read (none while the file's mtime says it was not written
//! since), where a scan (`Scoreboard::live_workers`) opens, reads and
//! closes each file every time. What a worker is, live or dead, is the
//! scoreboard's one rule (its lock is held), through its [`WatchedFile`].
//!
//! Nothing is ever removed: a dead worker's file is passed over (and kept
//! open, so that it costs no open per frame) until its name goes.

use std::collections::HashMap;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use crate::scoreboard::{self, LiveWorker, Scoreboard, Status, WatchedFile};

/// A status read is reused while the file's mtime stays the same, if it
/// was read this long after that mtime: a later write, even within the same
/// tick of the coarse clock that stamps files (a few ms), gets a later one.
const SETTLED: Duration = Duration::from_millis(50);

/// A worker's file, and its status as last read.
#[derive(Debug)]
struct Open {
    file: WatchedFile,
    /// The mtime the status was read at, when it was read, and the status.
    read: Option<(SystemTime, SystemTime, Status)>,
}

#[derive(Debug, Default)]
pub struct BoardFiles {
    open: HashMap<String, Open>,
    /// What each record is read into.
    buf: Vec<u8>,
}

impl BoardFiles {
    /// Forgets every file (the directory was replaced).
    pub fn clear(&mut self) {
        self.open.clear();
    }

    /// Every live worker on `board`, in the directory's order.
    pub fn live_workers(&mut self, board: &Scoreboard) -> io::Result<Vec<LiveWorker>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(board.base_dir())? {
            // An entry that vanishes mid-listing is simply not there.
            let Ok(entry) = entry else { continue };
            if entry.file_type().is_ok_and(|t| !t.is_file()) {
                continue;
            }
            let name = entry.file_name();
            if let Some(id) = scoreboard::worker_id(name.as_bytes()) {
                ids.push(id.to_string());
            }
        }
        let mut workers = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(worker) = self.read(board, id) {
                workers.push(worker);
            }
        }
        // Files whose names are gone are closed.
        if self.open.len() > ids.len() {
            ids.sort_unstable();
            self.open.retain(|id, _| ids.binary_search(id).is_ok());
        }
        Ok(workers)
    }

    /// Worker `id`, if it is live.
    fn read(&mut self, board: &Scoreboard, id: &str) -> Option<LiveWorker> {
        let mut state = self.open.get(id).and_then(|f| f.file.state().ok());
        // A file that lost its name was replaced (a new worker of the same
        // id, or removed and made again): the name's file is opened anew.
        if !state.is_some_and(|s| s.linked) {
            let file = board.watch(id).ok()?;
            state = Some(file.state().ok()?);
            self.open.insert(id.to_string(), Open { file, read: None });
        }
        let updated = state?.updated;
        let open = self.open.get_mut(id)?;
        if !open.file.is_held().ok()? {
            return None;
        }
        let status = match &open.read {
            Some((mtime, at, status))
                if *mtime == updated && at.duration_since(*mtime).is_ok_and(|d| d > SETTLED) =>
            {
                status.clone()
            }
            _ => {
                let at = SystemTime::now();
                let status = open.file.status_with(&mut self.buf);
                open.read = Some((updated, at, status.clone()));
                status
            }
        };
        Some(LiveWorker {
            id: id.to_string(),
            updated,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_live_workers_keeps_files_open_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Scoreboard::new(dir.path()).unwrap();
        writer.update(b"serving").unwrap();
        let me = std::process::id().to_string();
        // A dead worker's file: nobody holds its lock.
        let dead = dir.path().join("status_999999999");
        std::fs::write(&dead, crate::scoreboard::record::encode(b"gone")).unwrap();
        // Our own file's lock is held by this process through another
        // descriptor: flock locks are per open file, so the probe sees it.
        let board = Scoreboard::builder(dir.path())
            .read_only("a test")
            .build()
            .unwrap();
        let mut files = BoardFiles::default();
        for round in 0..2 {
            let workers = files.live_workers(&board).unwrap();
            assert_eq!(workers.len(), 1, "round {round}: {workers:?}");
            assert_eq!(workers[0].id, me);
            assert_eq!(
                workers[0].status,
                crate::scoreboard::Status::Written(b"serving".to_vec())
            );
            assert_eq!(files.open.len(), 2, "both files kept open");
        }
        // A write right after a read is read, whatever the clock's tick.
        writer.update(b"busier").unwrap();
        let workers = files.live_workers(&board).unwrap();
        assert_eq!(
            workers[0].status,
            crate::scoreboard::Status::Written(b"busier".to_vec())
        );
        writer.update(b"busiest").unwrap();
        let workers = files.live_workers(&board).unwrap();
        assert_eq!(
            workers[0].status,
            crate::scoreboard::Status::Written(b"busiest".to_vec())
        );
        assert!(dead.exists());
        std::fs::remove_file(&dead).unwrap();
        files.live_workers(&board).unwrap();
        assert_eq!(files.open.len(), 1, "the removed file is closed");
    }
}
