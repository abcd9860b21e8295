//! The master's own file on its board, `prefork.master` (a name that
//! Parallel::Scoreboard's `status_*` glob and prefork's readers pass over).
//!
//! The master holds an exclusive `flock` on it for its whole life, so a
//! second master started on the same board by mistake is refused, naming
//! the first one's pid, instead of silently doubling the pool. The file
//! carries the pool's snapshot as JSON, in a Parallel::Scoreboard record
//! (MD5, length, bytes: a reader can tell a torn read), rewritten at each
//! board check: what `prefork status` needs to show what the SIGUSR1 dump
//! shows.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::core::{Bounds, Snapshot};
use super::events::{Counters, Ended};
use crate::scoreboard::{self, record};

/// The file's name in the board directory.
pub const NAME: &str = "prefork.master";

/// What the file says about its master: the first fields of its snapshot.
#[derive(Debug)]
pub struct Claimed {
    pub path: PathBuf,
    pub pid: Option<u32>,
}

impl std::fmt::Display for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self.pid.map_or_else(
            || "another prefork master".to_string(),
            |pid| format!("the prefork master pid={pid}"),
        );
        write!(
            f,
            "{who} already runs on this board ({} is locked): stop it first, or give this one a \
             scoreboard directory of its own (--scoreboard DIR)",
            self.path.display()
        )
    }
}

/// The master's claim on its board.
pub struct MasterFile {
    file: nix::fcntl::Flock<File>,
    /// The last snapshot written, kept for its capacity.
    json: Vec<u8>,
}

/// Why the board could not be claimed.
pub enum ClaimError {
    Taken(Claimed),
    Io(PathBuf, io::Error),
}

impl MasterFile {
    /// Creates (or opens) and locks the board's master file.
    pub fn claim(board_dir: &Path) -> Result<MasterFile, ClaimError> {
        let path = board_dir.join(NAME);
        let io = |e| ClaimError::Io(path.clone(), e);
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(io)?;
        if !file.metadata().map_err(io)?.is_file() {
            let e = io::Error::new(io::ErrorKind::InvalidData, "not a regular file");
            return Err(ClaimError::Io(path, e));
        }
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(MasterFile {
                file,
                json: Vec::new(),
            }),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(ClaimError::Taken(Claimed {
                pid: read_pid(&file),
                path,
            })),
            Err((_, e)) => Err(ClaimError::Io(path, e.into())),
        }
    }

    /// Rewrites the snapshot. The file is ours and on the board's
    /// filesystem (tmpfs by default): a positioned write, no wait on anyone.
    pub fn publish(&mut self, snapshot: &Snapshot, now: Instant) -> io::Result<()> {
        render(snapshot, now, &mut self.json);
        scoreboard::write_status_to(self.file.as_fd(), &self.json).map_err(io::Error::other)?;
        let len = (record::HEADER_LEN + self.json.len()) as u64;
        self.file.set_len(len)
    }
}

/// The pid in a claimed file's snapshot, if it reads back whole.
fn read_pid(file: &File) -> Option<u32> {
    let value = read_snapshot(file)?;
    value.get("master_pid")?.as_u64().map(|p| p as u32)
}

/// A full board of 4096 slots fits several times over.
const MAX_SNAPSHOT: usize = 4 << 20;

/// The snapshot in a master file, if it reads back whole.
fn read_snapshot(file: &File) -> Option<serde_json::Value> {
    serde_json::from_slice(&read_record(file)?).ok()
}

/// The snapshot's JSON in a master file, if its record reads back whole (a
/// torn read, the master rewriting it, is tried again a few times). The
/// buffer is the file's size, not the largest a snapshot may be: `prefork
/// top` reads it every frame.
fn read_record(file: &File) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::new();
    for _ in 0..scoreboard::READ_ATTEMPTS {
        let size = file.metadata().ok()?.len() as usize;
        // One byte more than the file: a file that grew since is seen torn.
        buf.resize(size.min(MAX_SNAPSHOT) + 1, 0);
        let n = file.read_at(&mut buf, 0).ok()?;
        if let record::Parsed::Valid(json) = record::parse(&buf[..n]) {
            // The record is its header, then the JSON.
            let len = json.len();
            buf.truncate(record::HEADER_LEN + len);
            buf.drain(..record::HEADER_LEN);
            return Some(buf);
        }
    }
    None
}

/// The running master's snapshot on the board in `dir`, for `prefork
/// status`: `None` without a master file, when its master is gone (nobody
/// holds its lock), or when it cannot be read. Never blocks: the file is
/// opened without following a symlink nor waiting on a FIFO.
pub fn read(dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&read_json(dir)?).ok()
}

/// The same snapshot as its JSON text, for a reader with a parser of its
/// own (`prefork top` reads the fields it shows without building a tree).
pub fn read_json(dir: &Path) -> Option<Vec<u8>> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dir.join(NAME))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    // A lock we can take means a master that is gone: its snapshot is stale.
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => None,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => read_record(&file),
        Err(_) => None,
    }
}

/// The snapshot as the file carries it (serialized straight from borrowed
/// data: no JSON tree of a thousand slots built and dropped per write).
#[derive(serde::Serialize)]
struct Published<'a> {
    master_pid: u32,
    started: Option<f64>,
    updated: Option<f64>,
    phase: &'static str,
    workers: usize,
    live: usize,
    slots: Vec<PublishedSlot<'a>>,
    counters: &'a Counters,
    listen: &'a [String],
    idle: usize,
    busy: usize,
    starting: usize,
    /// A self-sizing pool's bounds; `None` for a fixed pool.
    scaling: Option<Bounds>,
    /// The idle rule's pattern; `None`: the default rule.
    idle_status: Option<&'a str>,
    /// Seconds; `None`: no stuck timeout.
    stuck_timeout: Option<f64>,
}

#[derive(serde::Serialize)]
struct PublishedSlot<'a> {
    slot: usize,
    pid: Option<i32>,
    state: &'static str,
    since: Option<f64>,
    restarts: u64,
    #[serde(serialize_with = "display")]
    last_exit: Option<&'a Ended>,
}

fn display<S: serde::Serializer>(end: &Option<&Ended>, s: S) -> Result<S::Ok, S::Error> {
    match end {
        Some(end) => s.collect_str(end),
        None => s.serialize_none(),
    }
}

/// The snapshot as JSON into `out`: times as Unix seconds, so that any
/// reader can use them.
fn render(snapshot: &Snapshot, now: Instant, out: &mut Vec<u8>) {
    let wall = SystemTime::now();
    let unix = |at: Instant| {
        wall.checked_sub(now.saturating_duration_since(at))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
    };
    let phase = snapshot.phase.as_str();
    let slots = snapshot
        .slots
        .iter()
        .map(|s| PublishedSlot {
            slot: s.slot,
            pid: s.pid.map(|p| p.as_raw()),
            state: match (s.pid, s.ready) {
                (None, _) => "empty",
                (Some(_), false) => "starting",
                (Some(_), true) => "running",
            },
            since: s.running_since.and_then(unix),
            restarts: s.restarts,
            last_exit: s.last_end.as_ref(),
        })
        .collect();
    let published = Published {
        master_pid: std::process::id(),
        started: unix(snapshot.began),
        updated: unix(now),
        phase,
        workers: snapshot.target,
        live: snapshot.live(),
        slots,
        counters: &snapshot.counters,
        listen: &snapshot.listen,
        idle: snapshot.activity.idle,
        busy: snapshot.activity.busy,
        starting: snapshot.activity.starting,
        scaling: snapshot.bounds,
        idle_status: snapshot.idle_status.as_deref(),
        stuck_timeout: snapshot.stuck_timeout.map(|t| t.as_secs_f64()),
    };
    out.clear();
    serde_json::to_writer(&mut *out, &published).expect("JSON of plain values");
}
