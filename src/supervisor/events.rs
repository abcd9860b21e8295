//! What happens in the pool, as typed events: the one source of the
//! master's log lines (their wording is here and nowhere else), and of the
//! counters in the pool's snapshot.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::Level;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::duration::display as show;

/// How a worker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signaled(Signal),
    /// It could not be started at all.
    SpawnFailed,
    /// It stopped updating its status and was replaced; with the last
    /// status it wrote (escaped), if any.
    Stuck(Option<String>),
    /// It was not ready within the start timeout, and was killed.
    NotReady,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Exited(code) => write!(f, "exit {code}"),
            Ended::Signaled(sig) => write!(f, "{}", sig.as_str()),
            Ended::SpawnFailed => write!(f, "spawn-failed"),
            Ended::Stuck(None) => write!(f, "stuck"),
            Ended::Stuck(Some(last)) => write!(f, "stuck in \"{last}\""),
            Ended::NotReady => write!(f, "not-ready"),
        }
    }
}

/// What a stuck worker was last seen doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastStatus {
    Never,
    /// Why it cannot be read.
    Unreadable(String),
    Was(String),
}

/// Serialized (for `--log-format json`) as one object: `event` names the
/// variant, in snake_case, and the fields follow.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Starting {
        workers: usize,
        command: String,
        board: PathBuf,
    },
    Listening {
        addr: String,
        fd: i32,
        inherited: bool,
    },
    InheritedUnlisted {
        addr: String,
    },
    StatusServing {
        addr: String,
    },
    Ready {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::secs")]
        after: Duration,
    },
    StartTimeout {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::secs")]
        timeout: Duration,
        rule: String,
        #[serde(serialize_with = "json::secs")]
        kill_timeout: Duration,
    },
    Spawned {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        restart: u64,
    },
    Unwatched {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        error: String,
    },
    Exited {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::display")]
        how: Ended,
        #[serde(serialize_with = "json::secs")]
        uptime: Duration,
    },
    CrashLoop {
        slot: usize,
        failures: u32,
        #[serde(serialize_with = "json::secs")]
        delay: Duration,
    },
    SpawnFailed {
        slot: usize,
        command: String,
        error: String,
        #[serde(serialize_with = "json::secs")]
        delay: Duration,
    },
    RetiredExited {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        #[serde(serialize_with = "json::display")]
        how: Ended,
    },
    NotAWorker {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        #[serde(serialize_with = "json::display")]
        how: Ended,
    },
    Leftovers {
        #[serde(serialize_with = "json::pid")]
        pgid: Pid,
    },
    Adopted {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        command: String,
        stopped_now: bool,
    },
    OrphanExited {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        #[serde(serialize_with = "json::display")]
        how: Ended,
    },
    OrphanKilled {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
    },
    GroupKilled {
        #[serde(serialize_with = "json::pid")]
        pgid: Pid,
    },
    Stuck {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::secs")]
        silent: Duration,
        #[serde(serialize_with = "json::secs")]
        timeout: Duration,
        #[serde(serialize_with = "json::secs")]
        kill_timeout: Duration,
        #[serde(serialize_with = "json::last_status")]
        last: LastStatus,
    },
    Unheld {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
    },
    ClockSkew {
        #[serde(serialize_with = "json::secs")]
        skew: Duration,
    },
    BoardChecked {
        workers: usize,
        #[serde(serialize_with = "json::secs")]
        took: Duration,
    },
    BoardProblem {
        what: String,
    },
    Resized {
        why: &'static str,
        from: usize,
        to: usize,
    },
    Retiring {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::signal")]
        signal: Signal,
    },
    Recycling {
        #[serde(serialize_with = "json::pid")]
        pid: Pid,
        slot: usize,
        #[serde(serialize_with = "json::secs")]
        uptime: Duration,
        /// Its memory, when that is the reason.
        rss: Option<u64>,
        max_rss: Option<u64>,
    },
    /// A self-sizing pool starts workers: too few idle.
    Growing {
        idle: usize,
        busy: usize,
        starting: usize,
        min_spare: usize,
        from: usize,
        to: usize,
    },
    /// A self-sizing pool gives up a slot, retiring its worker if any.
    Shrinking {
        #[serde(serialize_with = "json::opt_pid")]
        pid: Option<Pid>,
        slot: usize,
        #[serde(serialize_with = "json::opt_secs")]
        idle_for: Option<Duration>,
        why: String,
        from: usize,
        to: usize,
    },
    /// SIGTTIN or SIGTTOU moved a self-sizing pool's bounds.
    BoundsMoved {
        why: &'static str,
        min_workers: usize,
        max_workers: usize,
    },
    AddRefused {
        why: String,
    },
    RemoveRefused,
    ReloadFailed {
        error: String,
    },
    BoardDirKept,
    Reloaded,
    RolloutBegun {
        workers: usize,
        command: String,
    },
    RollingOver {
        workers: usize,
        why: &'static str,
    },
    BoardRecreated {
        dir: PathBuf,
    },
    BoardLost {
        dir: PathBuf,
        error: String,
    },
    RolloutStep {
        #[serde(serialize_with = "json::pid")]
        old: Pid,
        slot: usize,
        #[serde(serialize_with = "json::signal")]
        signal: Signal,
    },
    RolloutComplete {
        workers: usize,
    },
    RolloutAborted {
        command: String,
        error: String,
    },
    RollingBack {
        workers: usize,
        command: String,
    },
    StopGraceful {
        workers: usize,
        #[serde(serialize_with = "json::secs")]
        timeout: Duration,
        #[serde(serialize_with = "json::signal")]
        signal: Signal,
    },
    StopNow {
        why: &'static str,
        workers: usize,
    },
    Stopped,
}

impl Event {
    pub fn level(&self) -> Level {
        use Event::*;
        match self {
            SpawnFailed { .. } | ReloadFailed { .. } | RolloutAborted { .. } | BoardLost { .. } => {
                Level::Error
            }
            BoardRecreated { .. } | Adopted { .. } | OrphanKilled { .. } => Level::Warn,
            StartTimeout { .. } | InheritedUnlisted { .. } => Level::Warn,
            Unwatched { .. }
            | CrashLoop { .. }
            | GroupKilled { .. }
            | Stuck { .. }
            | Unheld { .. }
            | ClockSkew { .. }
            | BoardProblem { .. }
            | AddRefused { .. }
            | BoardDirKept => Level::Warn,
            NotAWorker { .. } | BoardChecked { .. } | Ready { .. } => Level::Debug,
            _ => Level::Info,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Event::*;
        match self {
            Starting { workers, command, board } => write!(
                f,
                "prefork master pid={} starting {workers} worker(s) of `{command}`, scoreboard {}",
                std::process::id(),
                board.display()
            ),
            Listening { addr, fd, inherited: false } => {
                write!(f, "listening on {addr} (descriptor {fd} in workers)")
            }
            Listening { addr, fd, inherited: true } => write!(
                f,
                "listening on {addr} (inherited from socket activation; descriptor {fd} in workers)"
            ),
            StatusServing { addr } => write!(
                f,
                "serving /status, /status.json, /metrics and /healthz on {addr}"
            ),
            InheritedUnlisted { addr } => write!(
                f,
                "socket activation passed {addr}, which `listen` does not list: kept, not given \
                 to workers"
            ),
            Ready { pid, slot, after } => write!(
                f,
                "worker pid={pid} slot={slot} ready after {:.3}s",
                after.as_secs_f64()
            ),
            StartTimeout { pid, slot, timeout, rule, kill_timeout } => write!(
                f,
                "worker pid={pid} slot={slot} was not ready within start_timeout {} (ready = \
                 {rule}): a failed start; SIGTERM, SIGKILL after {}",
                show(*timeout),
                show(*kill_timeout)
            ),
            Spawned { pid, slot, restart: 0 } => write!(f, "spawned worker pid={pid} slot={slot}"),
            Spawned { pid, slot, restart } => {
                write!(f, "spawned worker pid={pid} slot={slot} (restart {restart})")
            }
            Unwatched { pid, slot, error } => write!(
                f,
                "worker pid={pid} slot={slot}: {error}; it cannot be checked for being stuck"
            ),
            Exited { pid, slot, how, uptime } => write!(
                f,
                "worker pid={pid} slot={slot} ended ({how}) after {:.3}s",
                uptime.as_secs_f64()
            ),
            CrashLoop { slot, failures, delay } => write!(
                f,
                "slot={slot} is crash-looping ({failures} quick deaths in a row): next start in {}",
                show(*delay)
            ),
            SpawnFailed { slot, command, error, delay } => write!(
                f,
                "cannot start worker slot={slot} `{command}`: {error}; next attempt in {}",
                show(*delay)
            ),
            RetiredExited { pid, how } => write!(f, "retired worker pid={pid} ended ({how})"),
            NotAWorker { pid, how } => write!(f, "reaped pid={pid} ({how}), not a worker"),
            Leftovers { pgid } => {
                write!(f, "terminating what worker pid={pgid} left in its process group")
            }
            Adopted { pid, command, stopped_now } => write!(
                f,
                "adopted pid={pid} `{command}`: a worker's descendant that left its process group \
                 and outlived its parent; {}",
                if *stopped_now {
                    "SIGTERM now"
                } else {
                    "it is stopped when the master stops (kill_orphans = true stops it at once)"
                }
            ),
            OrphanExited { pid, how } => write!(f, "adopted pid={pid} ended ({how})"),
            OrphanKilled { pid } => write!(
                f,
                "adopted pid={pid} did not exit within the graceful timeout: SIGKILL"
            ),
            GroupKilled { pgid } => write!(
                f,
                "process group {pgid} did not exit within the graceful timeout: SIGKILL"
            ),
            Stuck { pid, slot, silent, timeout, kill_timeout, last } => {
                let doing = match last {
                    LastStatus::Never => "it never wrote a status".to_string(),
                    LastStatus::Was(last) => format!("its last status: \"{last}\""),
                    LastStatus::Unreadable(why) => format!("its last status cannot be read: {why}"),
                };
                write!(
                    f,
                    "worker pid={pid} slot={slot} is stuck: no status update for {:.1}s (timeout {}); \
                     {doing}; SIGTERM, SIGKILL after {}",
                    silent.as_secs_f64(),
                    show(*timeout),
                    show(*kill_timeout)
                )
            }
            Unheld { pid, slot } => write!(
                f,
                "worker pid={pid} slot={slot} holds no live status file (it closed the descriptor \
                 PREFORK_STATUS_FD names, or its file was removed); it is left running"
            ),
            ClockSkew { skew } => write!(
                f,
                "the wall clock moved {:.1}s apart from the monotonic clock (suspend, or the clock \
                 was set): no worker is judged stuck this round",
                skew.as_secs_f64()
            ),
            BoardChecked { workers, took } => write!(
                f,
                "board check of {workers} worker(s) took {}us",
                took.as_micros()
            ),
            BoardProblem { what } => f.write_str(what),
            Resized { why, from, to } => write!(f, "{why}: {from} -> {to} worker(s)"),
            Retiring { pid, slot, signal } => {
                write!(f, "retiring worker pid={pid} slot={slot}: {}", signal.as_str())
            }
            Growing {
                idle,
                busy,
                starting,
                min_spare,
                from,
                to,
            } => write!(
                f,
                "spare scaling: {idle} idle, {starting} starting, {busy} busy: below min_spare \
                 {min_spare}: {from} -> {to} worker(s)"
            ),
            Shrinking {
                pid,
                slot,
                idle_for,
                why,
                from,
                to,
            } => {
                write!(f, "spare scaling: {why}: {from} -> {to} worker(s), ")?;
                match (pid, idle_for) {
                    (Some(pid), Some(idle)) => write!(
                        f,
                        "retiring worker pid={pid} slot={slot}, idle for {:.1}s",
                        idle.as_secs_f64()
                    ),
                    (Some(pid), None) => write!(f, "retiring worker pid={pid} slot={slot}"),
                    (None, _) => write!(f, "slot {slot} left empty"),
                }
            }
            BoundsMoved {
                why,
                min_workers,
                max_workers,
            } => write!(
                f,
                "{why}: the pool now keeps {min_workers} to {max_workers} workers"
            ),
            AddRefused { why } => write!(f, "SIGTTIN ignored: {why}"),
            RemoveRefused => f.write_str("SIGTTOU ignored: never fewer than one worker"),
            ReloadFailed { error } => write!(
                f,
                "SIGHUP: configuration not reloaded; the workers keep running as they are: {error}"
            ),
            BoardDirKept => f.write_str(
                "SIGHUP: scoreboard_dir cannot change while running; it takes effect at the next start",
            ),
            Reloaded => f.write_str("SIGHUP: configuration reloaded"),
            RolloutBegun { workers, command } => {
                write!(f, "SIGHUP: rolling {workers} worker(s) over to `{command}`")
            }
            RollingOver { workers, why } => {
                write!(f, "rolling {workers} worker(s) over: {why}")
            }
            BoardRecreated { dir } => write!(
                f,
                "the scoreboard directory {} was removed or replaced while running (by a tmpfiles \
                 cleaner, or logind's RemoveIPC?): created it again",
                dir.display()
            ),
            BoardLost { dir, error } => write!(
                f,
                "the scoreboard directory {} was removed and cannot be created again: {error}; no \
                 worker can start until it can",
                dir.display()
            ),
            Recycling { pid, slot, uptime, rss: Some(rss), max_rss } => write!(
                f,
                "recycling worker pid={pid} slot={slot} after {:.0}s: its memory ({}) is over max_rss ({})",
                uptime.as_secs_f64(),
                mib(*rss),
                mib(max_rss.unwrap_or_default())
            ),
            Recycling { pid, slot, uptime, rss: None, .. } => write!(
                f,
                "recycling worker pid={pid} slot={slot} after {:.0}s: max_lifetime reached",
                uptime.as_secs_f64()
            ),
            RolloutStep { old, slot, signal } => write!(
                f,
                "rolling restart: retiring worker pid={old} slot={slot}: {}",
                signal.as_str()
            ),
            RolloutComplete { workers } => {
                write!(f, "rolling restart complete: {workers} worker(s)")
            }
            RolloutAborted { command, error } => write!(
                f,
                "rolling restart aborted: cannot start `{command}`: {error}; the remaining workers \
                 keep the previous command"
            ),
            RollingBack { workers, command } => write!(
                f,
                "rolling {workers} worker(s) started by the interrupted rollout back to `{command}`"
            ),
            StopGraceful { workers, timeout, signal } => write!(
                f,
                "graceful shutdown: {} to {workers} worker(s), SIGKILL after {}",
                signal.as_str(),
                show(*timeout)
            ),
            StopNow { why, workers } => {
                write!(f, "immediate shutdown ({why}): SIGKILL to {workers} worker(s)")
            }
            Stopped => f.write_str("all workers stopped; exiting"),
        }
    }
}

/// The upper bounds, in seconds, of the histograms' buckets: from half a
/// millisecond (a respawn on an idle machine) to ten seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations observed, by bucket of [`BUCKETS`] (the last one: above),
/// and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Histogram {
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_secs: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum_secs += secs;
    }
}

/// What the pool has been through, counted from the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    /// Workers started (first starts and restarts).
    pub spawned: u64,
    /// Workers that exited on their own, by exit code 0 or not.
    pub exited_ok: u64,
    pub exited_error: u64,
    /// Workers killed by a signal that the master did not send for a stop.
    pub signaled: u64,
    /// Workers replaced because they were stuck.
    pub stuck_kills: u64,
    /// Starts that failed (fork, set-up or exec).
    pub spawn_failures: u64,
    pub reloads: u64,
    pub reloads_failed: u64,
    pub rollouts_aborted: u64,
    /// Workers killed for not being ready within the start timeout.
    pub not_ready: u64,
    /// Workers replaced for their age or their memory.
    pub recycles: u64,
    /// Slots a self-sizing pool took into use, and gave up.
    pub grown: u64,
    pub shrunk: u64,
    /// From a worker's death to its replacement's exec.
    #[serde(skip)]
    pub respawn_latency: Histogram,
    /// How long each board check took.
    #[serde(skip)]
    pub board_check: Histogram,
    /// Lines of the master's own output dropped because nobody read them
    /// (kept by the sinks; the shell fills it into a snapshot).
    pub output_dropped: u64,
}

impl Counters {
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::Spawned { .. } => self.spawned += 1,
            Event::Exited { how, .. } => match how {
                Ended::Exited(0) => self.exited_ok += 1,
                Ended::Exited(_) => self.exited_error += 1,
                Ended::Signaled(_) => self.signaled += 1,
                Ended::SpawnFailed | Ended::Stuck(_) | Ended::NotReady => {}
            },
            Event::Stuck { .. } => self.stuck_kills += 1,
            Event::SpawnFailed { .. } => self.spawn_failures += 1,
            Event::StartTimeout { .. } => {
                self.spawn_failures += 1;
                self.not_ready += 1;
            }
            Event::BoardChecked { took, .. } => self.board_check.observe(*took),
            Event::Recycling { .. } => self.recycles += 1,
            Event::Growing { from, to, .. } => self.grown += (to - from) as u64,
            Event::Shrinking { .. } => self.shrunk += 1,
            Event::Reloaded | Event::RolloutBegun { .. } => self.reloads += 1,
            Event::ReloadFailed { .. } => self.reloads_failed += 1,
            Event::RolloutAborted { .. } => self.rollouts_aborted += 1,
            _ => {}
        }
    }
}

/// `bytes` in MiB, for a sentence.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// How the events' fields look in JSON: pids and codes as numbers,
/// durations in seconds, signals and ends as their names.
mod json {
    use std::time::Duration;

    use nix::sys::signal::Signal;
    use nix::unistd::Pid;
    use serde::Serializer;

    use super::LastStatus;

    pub fn pid<S: Serializer>(pid: &Pid, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(pid.as_raw())
    }

    pub fn signal<S: Serializer>(signal: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(signal.as_str())
    }

    pub fn opt_pid<S: Serializer>(pid: &Option<Pid>, s: S) -> Result<S::Ok, S::Error> {
        match pid {
            Some(pid) => self::pid(pid, s),
            None => s.serialize_none(),
        }
    }

    pub fn opt_secs<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => secs(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn secs<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e6)
    }

    pub fn display<S: Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// The status excerpt, or why there is none.
    pub fn last_status<S: Serializer>(last: &LastStatus, s: S) -> Result<S::Ok, S::Error> {
        match last {
            LastStatus::Never => s.serialize_none(),
            LastStatus::Unreadable(why) => s.collect_str(&format_args!("(unreadable: {why})")),
            LastStatus::Was(status) => s.serialize_str(status),
        }
    }
}
