//! A worker's memory, for `max_rss`: the resident pages of its process and
//! of its descendants (what its process group usually holds: a server's
//! master and its children), from `/proc`. Bounded: a few small reads per
//! process, at most [`MAX_TREE`] processes per worker.

use std::io::Read;
use std::time::Instant;

use nix::unistd::Pid;

use super::Shell;

/// The most processes counted under one worker.
const MAX_TREE: usize = 256;

/// The most workers measured by one board check; the next check goes on
/// from where it stopped.
const RSS_PER_CHECK: usize = 100;

impl Shell {
    /// With `max_rss`, at a board check: the memory of the next
    /// [`RSS_PER_CHECK`] of the `running` workers (slot, pid), in turn. A
    /// few reads of `/proc` per worker (11 µs each at 1000 workers): a big
    /// pool's check stays short, and memory grows slowly.
    pub(super) fn measure_memory(&mut self, running: &[(usize, Pid)]) {
        if self.pool.config().max_rss.is_none() || running.is_empty() {
            return;
        }
        let now = Instant::now();
        let first = self.rss_cursor % running.len();
        let sampled = running.len().min(RSS_PER_CHECK);
        for &(_, pid) in running.iter().cycle().skip(first).take(sampled) {
            if let Some(rss) = tree_rss(pid) {
                self.pool.measured_rss(pid, rss, now);
            }
        }
        self.rss_cursor = first + sampled;
    }
}

/// Resident bytes of `pid` and its descendants; `None` when `pid` is gone.
fn tree_rss(pid: Pid) -> Option<u64> {
    let page = page_size();
    let mut total = resident_pages(pid.as_raw())? * page;
    let mut todo = children(pid.as_raw());
    let mut seen = 1;
    while let Some(child) = todo.pop() {
        if seen == MAX_TREE {
            break;
        }
        seen += 1;
        total += resident_pages(child).unwrap_or(0) * page;
        todo.extend(children(child));
    }
    Some(total)
}

fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointer.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// A small procfs file, read once into a stack buffer.
fn read_small(path: &str, buf: &mut [u8]) -> Option<usize> {
    std::fs::File::open(path).ok()?.read(buf).ok()
}

/// The second field of `/proc/<pid>/statm`: resident pages.
fn resident_pages(pid: i32) -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = read_small(&format!("/proc/{pid}/statm"), &mut buf)?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The children of `pid`'s main thread.
fn children(pid: i32) -> Vec<i32> {
    let mut buf = [0u8; 4096];
    let Some(n) = read_small(&format!("/proc/{pid}/task/{pid}/children"), &mut buf) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
