//! The supervisor's effective configuration: plain data, validated, with
//! the defaults in one place. The master loop sees only [`Config`]; the
//! file, the command line and their layering live in the submodules.

mod file;
mod layer;
mod value;

pub use file::{read, render, scoreboard_dir_of, ConfigError, Source, MAX_FILE_SIZE};
pub use layer::Layer;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::idle::IdleRule;
use crate::listen::ListenAddr;
pub use crate::supervisor::spawn::RunAs;

/// A ceiling on the worker count: beyond it a typo (an extra zero) would
/// fork-bomb the machine.
pub const MAX_WORKERS: usize = 4096;

/// Everything the master needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Program and arguments of every worker.
    pub command: Vec<OsString>,
    pub workers: usize,
    /// `None`: a private directory on a memory-backed filesystem, removed at exit.
    pub scoreboard_dir: Option<PathBuf>,
    pub graceful_timeout: Duration,
    /// A worker whose status file has not been written for this long is
    /// stuck and replaced. `None`: silent workers are never killed.
    pub timeout: Option<Duration>,
    /// How long a stuck worker gets between SIGTERM and SIGKILL.
    pub kill_timeout: Duration,
    /// How often the master reads the board.
    pub check_interval: Duration,
    pub working_directory: Option<PathBuf>,
    /// Extra environment variables for the workers.
    pub env: Vec<(OsString, OsString)>,
    pub backoff: Backoff,
    /// Stop adopted processes (a worker's escaped descendants) at once.
    pub kill_orphans: bool,
    /// Where the workers' listening sockets are bound, in the order of
    /// their descriptors (3, 4, ...).
    pub listen: Vec<ListenAddr>,
    /// The mode of the unix socket files.
    pub socket_mode: u32,
    /// `None`: the kernel's ceiling.
    pub backlog: Option<u32>,
    pub ready: Ready,
    /// How long a new worker may take to be ready.
    pub start_timeout: Duration,
    /// What asks a worker to finish and exit.
    pub stop_signal: Signal,
    /// How many workers beyond the pool's size a rollout runs at once.
    pub max_surge: usize,
    pub log_format: LogFormat,
    /// Where the HTTP status, metrics and health endpoint is served.
    pub status_listen: Option<ListenAddr>,
    /// Live workers below this make /healthz answer 503; the floor of a
    /// pool that sizes itself.
    pub min_workers: usize,
    /// `Some`: the pool sizes itself from its idle workers (`workers` is
    /// then its starting size); `None`: a fixed pool of `workers`.
    pub scaling: Option<Scaling>,
    /// When a worker's status says it is idle.
    pub idle: IdleRule,
    /// A worker older than this is replaced (its replacement ready first).
    pub max_lifetime: Option<Duration>,
    /// Up to this much more, a share picked per worker: workers started
    /// together are not recycled together.
    pub max_lifetime_jitter: Duration,
    /// A worker whose memory (resident, with its descendants) is over this
    /// many bytes is replaced.
    pub max_rss: Option<u64>,
    /// Who the workers run as, resolved to numbers. `None`: the master's
    /// user and groups.
    pub run_as: Option<RunAs>,
    /// `None`: the master's.
    pub umask: Option<u32>,
    /// Soft and hard. `None`: what the master was started with.
    pub rlimit_nofile: Option<u64>,
    /// Soft and hard. `None`: the master's.
    pub rlimit_core: Option<u64>,
    /// `None`: the master's.
    pub nice: Option<i32>,
    /// Where the workers' standard output and error go.
    pub worker_output: WorkerOutput,
}

/// A pool that sizes itself: it keeps between `min_spare` and `max_spare`
/// idle workers, and between `min_workers` and `max_workers` workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scaling {
    pub max_workers: usize,
    pub min_spare: usize,
    pub max_spare: usize,
}

/// How the master's log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// A sentence per line, with a timestamp (none under journald, which
    /// stamps lines itself).
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

/// When a new worker is ready: a rolling reload retires the worker it
/// replaces only then, the stuck timeout counts from then, and one not
/// ready within `start_timeout` is a failed start.
///
/// The default is a delay of one second, like Server::Starter's
/// `--interval` and einhorn's default: a worker that does not know prefork
/// (gunicorn, Starman, most servers) never writes a status, and a default
/// that waited for one would kill every such worker as a failed start.
/// Workers that report should say `ready = "report"`: their readiness is
/// then known, not guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// At its first status write.
    Report,
    /// As soon as its program runs.
    Immediate,
    /// This long after its program runs.
    After(Duration),
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ready::Report => f.write_str("report"),
            Ready::Immediate => f.write_str("immediate"),
            Ready::After(d) => f.write_str(&crate::duration::display(*d)),
        }
    }
}

/// Crash-loop protection: a worker that dies within `min_uptime` of its
/// start delays its slot's next spawn, `initial` doubling up to `max`. The
/// first quick death in a row is replaced at once: one worker killed by
/// accident (or by an operator) must not cost a slot its capacity; a second
/// one in a row is a loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min_uptime: Duration,
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min_uptime: Duration::from_secs(1),
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before the next spawn after `failures` quick deaths in a row.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures <= 1 {
            return Duration::ZERO;
        }
        let doublings = (failures - 2).min(31);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            command: Vec::new(),
            workers: 1,
            scoreboard_dir: None,
            graceful_timeout: Duration::from_secs(30),
            timeout: None,
            kill_timeout: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
            working_directory: None,
            env: Vec::new(),
            backoff: Backoff::default(),
            kill_orphans: false,
            listen: Vec::new(),
            socket_mode: 0o660,
            backlog: None,
            ready: Ready::After(Duration::from_secs(1)),
            start_timeout: Duration::from_secs(60),
            stop_signal: Signal::SIGTERM,
            max_surge: 1,
            log_format: LogFormat::Text,
            status_listen: None,
            min_workers: 1,
            scaling: None,
            idle: IdleRule::Default,
            max_lifetime: None,
            max_lifetime_jitter: Duration::ZERO,
            max_rss: None,
            run_as: None,
            umask: None,
            rlimit_nofile: None,
            rlimit_core: None,
            nice: None,
            worker_output: WorkerOutput::Inherit,
        }
    }
}

/// The worker count must be at least 1 and at most [`MAX_WORKERS`].
pub fn check_workers(n: usize) -> Result<(), String> {
    match n {
        0 => Err("the number of workers must be at least 1".into()),
        n if n > MAX_WORKERS => Err(format!(
            "{n} workers is above the ceiling of {MAX_WORKERS}; run several masters for more"
        )),
        _ => Ok(()),
    }
}

/// The check interval must be positive: 0 would make the master spin.
pub fn check_interval(interval: Duration) -> Result<(), String> {
    if interval < Duration::from_millis(10) {
        return Err("the check interval must be at least 10ms".into());
    }
    Ok(())
}

/// Where the workers' standard output and error go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerOutput {
    /// The master's own descriptors, shared: what the workers write is
    /// not seen by the master.
    Inherit,
    /// A pipe per stream, read by the master's loop: each line is written
    /// to the master's stream of the same name, prefixed with the worker's
    /// slot and pid, without ever blocking the loop.
    Prefix,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::ZERO);
        assert_eq!(b.delay(2), Duration::from_millis(100));
        assert_eq!(b.delay(3), Duration::from_millis(200));
        assert_eq!(b.delay(5), Duration::from_millis(800));
        assert_eq!(b.delay(20), Duration::from_secs(30));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(30));
    }
}
