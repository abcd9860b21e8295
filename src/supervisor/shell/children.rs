//! The master's children as the kernel lists them: workers, retired
//! workers, and what was reparented to us because we are a subreaper (a
//! worker's descendant that left its process group with `setsid` and
//! outlived its parent). Those last ones are adopted: said once, and
//! stopped with the master (or at once, with `kill_orphans`).
//!
//! One bounded read of `/proc/self/task/<pid>/children` (the master is
//! single-threaded: its one thread has all its children), and a bounded
//! read of each newcomer's command line.

use std::collections::HashSet;
use std::io::Read;
use std::time::Instant;

use nix::unistd::Pid;

use super::Shell;

/// Enough for 100,000 children; a longer list is cut, not waited on.
const MAX_LIST: u64 = 1 << 20;
/// As much of a command line as a log line shows.
const MAX_COMMAND: u64 = 512;

impl Shell {
    /// Tells the core about every child it does not know.
    pub(super) fn adopt_orphans(&mut self) {
        let Some(children) = children() else { return };
        let known: HashSet<Pid> = self.pool.own_pids().collect();
        for pid in children {
            if !known.contains(&pid) {
                let command = command_line(pid);
                self.pool.adopted(pid, command, Instant::now());
            }
        }
    }
}

fn children() -> Option<Vec<Pid>> {
    let me = std::process::id();
    let path = format!("/proc/{me}/task/{me}/children");
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_LIST)
        .read_to_string(&mut text)
        .ok()?;
    Some(
        text.split_ascii_whitespace()
            .filter_map(|p| p.parse().ok())
            .map(Pid::from_raw)
            .collect(),
    )
}

/// `/proc/<pid>/cmdline`, arguments joined by spaces; `?` when gone.
fn command_line(pid: Pid) -> String {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_COMMAND).read_to_end(&mut bytes));
    if read.is_err() || bytes.is_empty() {
        return "?".to_string();
    }
    let text = String::from_utf8_lossy(&bytes);
    text.trim_end_matches('\0').replace('\0', " ")
}
