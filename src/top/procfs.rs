//! What `/proc` says of a worker: CPU time and resident memory, from one
//! read of `/proc/<pid>/stat` into a fixed buffer (no `statm` as well),
//! kept open from frame to frame, and CPU % as the time spent between two
//! frames.
//!
//! A pid that is gone, or a line that does not parse, is `None`: a worker
//! may exit between the board's listing and this read. Nothing here writes.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

/// What one read of `/proc/<pid>/stat` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// User plus system time, in clock ticks.
    pub cpu_ticks: u64,
    /// When the process started, in clock ticks since boot: tells a reused
    /// pid from the process sampled before.
    pub start_ticks: u64,
    /// Resident set size, in bytes.
    pub rss_bytes: u64,
}

/// The stat line is about 300 bytes; 52 fields of at most 20 digits and a
/// 16-byte name (which may hold anything) stay under this.
const STAT_BUF: usize = 1536;

/// Reads `/proc/<pid>/stat` once (opened and closed).
pub fn sample(pid: u32) -> Option<Sample> {
    let file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; STAT_BUF];
    let len = read_at_start(&file, &mut buf)?;
    parse_stat(&buf[..len], page_size())
}

/// The `/proc/<pid>/stat` of each worker, kept open from frame to frame:
/// reading an open one again (`pread` at 0, which the kernel answers
/// afresh) costs half of opening it, and the open dominates (about 2 of 3
/// µs). A worker that exits makes its read fail (ESRCH), and its file is
/// dropped; a pid used again is opened again.
#[derive(Debug)]
pub struct ProcFiles {
    open: HashMap<u32, std::fs::File>,
    /// The most files kept open, within our descriptor limit.
    budget: usize,
    seen: Vec<u32>,
}

/// Descriptors left for everything else (the board's, the terminal's).
const SPARE_FDS: u64 = 64;

impl ProcFiles {
    /// Raises our soft descriptor limit to the hard one (a viewer of a
    /// board of thousands keeps thousands open), and keeps open as many
    /// files as it then allows.
    pub fn new() -> ProcFiles {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            {
                Ok(()) => hard,
                Err(_) => soft,
            },
            Ok((soft, _)) => soft,
            Err(_) => 1024,
        };
        ProcFiles {
            open: HashMap::new(),
            budget: limit.saturating_sub(SPARE_FDS).min(1 << 20) as usize,
            seen: Vec::new(),
        }
    }

    /// What `/proc` says of `pid` now.
    pub fn sample(&mut self, pid: u32) -> Option<Sample> {
        self.seen.push(pid);
        let mut buf = [0u8; STAT_BUF];
        if let Some(file) = self.open.get(&pid) {
            match read_at_start(file, &mut buf) {
                Some(len) => return parse_stat(&buf[..len], page_size()),
                None => {
                    self.open.remove(&pid);
                }
            }
        }
        let file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        let len = read_at_start(&file, &mut buf)?;
        if self.open.len() < self.budget {
            self.open.insert(pid, file);
        }
        parse_stat(&buf[..len], page_size())
    }

    /// Ends a frame: closes the files of the pids it did not see.
    pub fn end_frame(&mut self) {
        keep_seen(&mut self.open, &mut self.seen);
    }
}

impl Default for ProcFiles {
    fn default() -> Self {
        ProcFiles::new()
    }
}

/// Reads a `/proc` file from its start into `buf`; `None` once its process
/// is gone (or on any other error). One read gives the whole line; more
/// only for a short read.
fn read_at_start(file: &std::fs::File, buf: &mut [u8]) -> Option<usize> {
    use std::os::unix::fs::FileExt;
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    (len > 0).then_some(len)
}

/// The fields of a stat line that we use. The name, in parentheses, may
/// hold spaces and parentheses: fields are counted from its last `)`.
pub fn parse_stat(line: &[u8], page_size: u64) -> Option<Sample> {
    let close = line.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(line.get(close + 2..)?).ok()?;
    // After the name: state (field 3), ..., utime (14), stime (15), ...,
    // starttime (22), vsize (23), rss in pages (24).
    let mut fields = rest.split_ascii_whitespace();
    let mut nth = |n: usize| -> Option<u64> { fields.nth(n)?.parse().ok() };
    let utime = nth(11)?;
    let stime = nth(0)?;
    let start_ticks = nth(6)?;
    let rss_pages = nth(1)?;
    Some(Sample {
        cpu_ticks: utime + stime,
        start_ticks,
        rss_bytes: rss_pages.saturating_mul(page_size),
    })
}

fn page_size() -> u64 {
    static SIZE: OnceLock<u64> = OnceLock::new();
    // SAFETY: sysconf takes an integer and returns one.
    *SIZE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    // SAFETY: sysconf takes an integer and returns one.
    *TICKS.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as f64,
        _ => 100.0,
    })
}

/// CPU % between frames: the last sample of each pid, kept for the next.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<u32, (Sample, Instant)>,
    /// The pids seen in the frame being read, to forget the others after.
    seen: Vec<u32>,
}

impl CpuMeter {
    /// The share of one CPU (100 = one core busy) that `pid` used since the
    /// last frame; `None` on its first frame or for a reused pid.
    pub fn observe(&mut self, pid: u32, now: Sample, at: Instant) -> Option<f64> {
        self.seen.push(pid);
        let before = self.last.insert(pid, (now, at));
        let (then, when) = before.filter(|(s, _)| s.start_ticks == now.start_ticks)?;
        let elapsed = at.saturating_duration_since(when).as_secs_f64();
        (elapsed > 0.0).then(|| {
            let ticks = now.cpu_ticks.saturating_sub(then.cpu_ticks) as f64;
            ticks / ticks_per_second() / elapsed * 100.0
        })
    }

    /// Ends a frame: forgets the pids it did not see.
    pub fn end_frame(&mut self) {
        keep_seen(&mut self.last, &mut self.seen);
    }
}

/// Keeps in `by_pid` only the pids in `seen` (those of the frame just
/// read), and empties `seen` for the next frame, its capacity kept.
fn keep_seen<V>(by_pid: &mut HashMap<u32, V>, seen: &mut Vec<u32>) {
    seen.sort_unstable();
    by_pid.retain(|pid, _| seen.binary_search(pid).is_ok());
    seen.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_a_stat_line_whose_name_holds_spaces_and_parentheses() {
        let line = b"4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
            250 50 0 0 20 0 1 0 12345 10000000 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line, 4096).unwrap();
        assert_eq!(s.cpu_ticks, 300);
        assert_eq!(s.start_ticks, 12345);
        assert_eq!(s.rss_bytes, 300 * 4096);
        assert_eq!(parse_stat(b"garbage", 4096), None);
        assert_eq!(parse_stat(b"1 (x) S 1 2", 4096), None);
    }

    #[test]
    fn reads_our_own_process_and_not_a_missing_one() {
        let me = sample(std::process::id()).expect("our own stat");
        assert!(me.rss_bytes > 0);
        assert_eq!(sample(u32::MAX), None);
    }

    #[test]
    fn kept_files_are_read_again_and_dropped_when_their_process_is_gone() {
        let mut files = ProcFiles::new();
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = child.id();
        let first = files.sample(pid).expect("a live child");
        files.end_frame();
        assert!(files.open.contains_key(&pid));
        assert_eq!(
            files.sample(pid).map(|s| s.start_ticks),
            Some(first.start_ticks)
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(files.sample(pid), None);
        assert!(!files.open.contains_key(&pid));
        files.end_frame();
        // A pid not seen in a frame is closed.
        files.sample(std::process::id()).unwrap();
        files.end_frame();
        files.end_frame();
        assert!(files.open.is_empty());
    }

    #[test]
    fn cpu_percent_is_the_time_used_between_two_frames() {
        let mut meter = CpuMeter::default();
        let t0 = Instant::now();
        let s = |cpu, start| Sample {
            cpu_ticks: cpu,
            start_ticks: start,
            rss_bytes: 0,
        };
        assert_eq!(meter.observe(7, s(100, 1), t0), None);
        meter.end_frame();
        let ticks = ticks_per_second() as u64;
        let pct = meter.observe(7, s(100 + ticks / 2, 1), t0 + Duration::from_secs(1));
        assert!((pct.unwrap() - 50.0).abs() < 1.0, "{pct:?}");
        meter.end_frame();
        // A new process with the same pid starts over.
        assert_eq!(meter.observe(7, s(5, 2), t0 + Duration::from_secs(2)), None);
        meter.end_frame();
        // A pid not seen in a frame is forgotten.
        meter.end_frame();
        assert!(meter.last.is_empty());
    }
}
