//! Every option of the supervisor, declared once. [`Layer`] is at the same
//! time the command line's options (clap), the config file's keys (serde),
//! and what `prefork check` prints (serde again). A field's doc comment is
//! its `--help` text, `[default: ...]` included; its `#[arg]` is its flag;
//! its `#[serde(with)]` names the kind of value it takes, in
//! [`super::value`], which checks it the same way from both sources.
//!
//! Layers stack, the command line over the config file ([`Layer::over`]),
//! and the result, with defaults for what nobody said, becomes a [`Config`].
//!
//! Adding an option: a field of [`Layer`]; its field and default in
//! [`Config`], where the supervisor reads it; a line in [`Layer::into_config`]
//! (its default and checks) and one in `From<&Config> for Layer` (what
//! `prefork check` prints). The compiler points at both lines.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::{value, Backoff, Config, LogFormat, Ready, Scaling, WorkerOutput};
use crate::idle::IdleRule;
use crate::listen::ListenAddr;
use crate::supervisor::spawn::privileges;

/// Declares [`Layer`], and from its list of fields the code that has to
/// visit every one of them.
macro_rules! layer {
    (
        $(#[$attr:meta])*
        pub struct Layer {
            $( $(#[$field_attr:meta])* pub $field:ident: $type:ty, )*
        }
    ) => {
        $(#[$attr])*
        pub struct Layer {
            $( $(#[$field_attr])* pub $field: $type, )*
        }

        impl Layer {
            /// The config file's keys, in the order `prefork check` prints them.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// This layer over `below`, option by option: the type of each
            /// field says how (see `Merge`).
            pub fn over(self, below: Layer) -> Layer {
                Layer {
                    $( $field: Merge::over(self.$field, below.$field), )*
                }
            }
        }
    };
}

layer! {
    /// What one source, the config file or the command line, says. The keys
    /// of the file are the fields' names; the long options are the same
    /// names in kebab-case.
    #[derive(Debug, Default, Clone, PartialEq, clap::Args, Deserialize, Serialize)]
    #[serde(default, deny_unknown_fields)]
    pub struct Layer {
        /// The worker command and its arguments (overrides `command` in the file)
        #[arg(last = true, value_name = "COMMAND")]
        #[serde(with = "value::command")]
        pub command: Option<Vec<OsString>>,

        /// Number of workers [default: the number of CPUs]
        #[arg(short, long, value_parser = value::workers::parse)]
        #[serde(with = "value::workers")]
        pub workers: Option<usize>,

        /// Scoreboard directory, created when missing and left in place
        /// [default: a private directory under $XDG_RUNTIME_DIR or /dev/shm, removed at exit]
        #[arg(
            short = 'd',
            long = "scoreboard",
            visible_alias = "scoreboard-dir",
            value_name = "DIR"
        )]
        // `scoreboard` too, as the option is spelled.
        #[serde(with = "value::path", alias = "scoreboard")]
        pub scoreboard_dir: Option<PathBuf>,

        /// How long a shutdown waits after SIGTERM before SIGKILL [default: 30s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub graceful_timeout: Option<Duration>,

        /// Replace a worker whose status has not been updated for this long;
        /// 0 turns it off [default: off]
        #[arg(short = 't', long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub timeout: Option<Duration>,

        /// How long a stuck worker gets between SIGTERM and SIGKILL [default: 5s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub kill_timeout: Option<Duration>,

        /// How often the master reads the scoreboard [default: 1s]
        #[arg(long, value_name = "DURATION", value_parser = value::interval::parse)]
        #[serde(with = "value::interval")]
        pub check_interval: Option<Duration>,

        /// Directory the workers start in [default: the master's]
        #[arg(long, value_name = "DIR")]
        #[serde(with = "value::path")]
        pub working_directory: Option<PathBuf>,

        /// Extra environment variable for the workers (repeatable)
        #[arg(short, long, value_name = "KEY=VALUE", value_parser = value::env::parse)]
        #[serde(with = "value::env")]
        pub env: Vec<(String, String)>,

        /// A worker dying sooner than this after its start counts toward the
        /// crash-loop backoff [default: 1s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub min_uptime: Option<Duration>,

        /// First crash-loop delay, doubled at each further quick death [default: 100ms]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub backoff_initial: Option<Duration>,

        /// Longest crash-loop delay [default: 30s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub backoff_max: Option<Duration>,

        /// Stop a worker's descendant that left its process group (double
        /// fork and setsid) as soon as the master adopts it, rather than
        /// when the master stops [default: false]
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        pub kill_orphans: Option<bool>,

        /// Listen on ADDR and hand the socket to every worker as descriptor
        /// 3, 4, ... in order (repeatable; replaces the file's list):
        /// HOST:PORT, [IPV6]:PORT, :PORT, unix:/PATH; port 0 picks a free one
        /// [default: none, or the
        /// sockets systemd's socket activation passed]
        #[arg(short = 'l', long, value_name = "ADDR", value_parser = value::listen::parse)]
        #[serde(with = "value::listen")]
        // An Option, not a list that adds up: the command line's addresses
        // replace the file's (to move a pool to another port).
        pub listen: Option<Vec<ListenAddr>>,

        /// Mode of the unix socket files it creates [default: 0660]
        #[arg(long, value_name = "MODE", value_parser = value::mode::parse)]
        #[serde(with = "value::mode")]
        pub socket_mode: Option<u32>,

        /// Length of the listening sockets' queue [default: the kernel's
        /// net.core.somaxconn]
        #[arg(long, value_name = "N", value_parser = value::count::parse)]
        #[serde(with = "value::count")]
        pub backlog: Option<u32>,

        /// When a new worker is ready (a reload retires the worker it
        /// replaces only then): report (its first status write), immediate,
        /// or a duration after its start [default: 1s]
        #[arg(long, value_name = "RULE", value_parser = value::ready::parse)]
        #[serde(with = "value::ready")]
        pub ready: Option<Ready>,

        /// A worker not ready this long after its start is killed, as a
        /// failed start [default: 60s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub start_timeout: Option<Duration>,

        /// The signal that asks a worker to finish and exit, on a reload,
        /// a scale-down and a shutdown (QUIT or WINCH for some servers)
        /// [default: TERM]
        #[arg(long, value_name = "SIGNAL", value_parser = value::signal::parse)]
        #[serde(with = "value::signal")]
        pub stop_signal: Option<Signal>,

        /// How many workers beyond the pool's size a rolling reload starts
        /// at once [default: 1]
        #[arg(long, value_name = "N", value_parser = value::count::parse)]
        #[serde(with = "value::count")]
        pub max_surge: Option<u32>,

        /// The master's log lines: text, or json (one object per line with
        /// time, level, event and its fields) [default: text]
        #[arg(long, value_name = "FORMAT", value_parser = value::log_format::parse)]
        #[serde(with = "value::log_format")]
        pub log_format: Option<LogFormat>,

        /// Serve /status, /status.json, /metrics and /healthz on ADDR
        /// (HOST:PORT or unix:/PATH, mode 0600), from the master's own loop
        /// [default: none]
        #[arg(long, value_name = "ADDR", value_parser = value::listen::parse)]
        #[serde(with = "value::listen_one")]
        pub status_listen: Option<ListenAddr>,

        /// The fewest workers: the floor of a pool that sizes itself
        /// (with max_workers), and below it /healthz answers 503 [default: 1]
        #[arg(long, value_name = "N", value_parser = value::count::parse)]
        #[serde(with = "value::count")]
        pub min_workers: Option<u32>,

        /// Size the pool from the board: grow while fewer than min_spare
        /// workers are idle, shrink while more than max_spare are, up to
        /// this many workers; `workers` is then the starting size
        /// [default: a fixed pool of `workers`]
        #[arg(long, value_name = "N", value_parser = value::workers::parse)]
        #[serde(with = "value::workers")]
        pub max_workers: Option<usize>,

        /// A pool that sizes itself starts workers while fewer than this
        /// many are idle (or starting) [default: 1]
        #[arg(long, value_name = "N", value_parser = value::spare::parse)]
        #[serde(with = "value::spare")]
        pub min_spare: Option<usize>,

        /// A pool that sizes itself retires the worker idle longest, one
        /// per check interval, while more than this many are idle
        /// [default: min_spare + 2]
        #[arg(long, value_name = "N", value_parser = value::spare::parse)]
        #[serde(with = "value::spare")]
        pub max_spare: Option<usize>,

        /// A worker is idle when its status matches this regular expression
        /// (unanchored; use ^ and $) [default: `_`, a status starting with
        /// `idle`, or a JSON object whose "status" is "_"]
        #[arg(long, value_name = "REGEX", value_parser = value::idle_status::parse)]
        #[serde(with = "value::idle_status")]
        pub idle_status: Option<String>,

        /// Replace a worker older than this, its replacement started and
        /// ready first [default: never]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub max_lifetime: Option<Duration>,

        /// Up to this much more lifetime, a share per worker, so that workers
        /// started together are not recycled together [default: 0s]
        #[arg(long, value_name = "DURATION", value_parser = value::duration::parse)]
        #[serde(with = "value::duration")]
        pub max_lifetime_jitter: Option<Duration>,

        /// Replace a worker whose resident memory (with its descendants')
        /// is over SIZE (bytes, or with KiB, MiB, GiB), sampled at each check
        /// [default: no limit]
        #[arg(long, value_name = "SIZE", value_parser = value::size::parse)]
        #[serde(with = "value::size")]
        pub max_rss: Option<u64>,

        /// Run the workers as this user (a name, or a number), with its
        /// groups as initgroups sets them; the master must be root
        /// [default: the master's user]
        #[arg(long, value_name = "USER")]
        #[serde(with = "value::account")]
        pub user: Option<String>,

        /// Run the workers with this group (a name, or a number); given
        /// alone, the workers keep the master's user [default: the user's
        /// primary group, or the master's]
        #[arg(long, value_name = "GROUP")]
        #[serde(with = "value::account")]
        pub group: Option<String>,

        /// The workers' umask, in octal like 0027 [default: the master's]
        #[arg(long, value_name = "MODE", value_parser = value::mode::parse)]
        #[serde(with = "value::mode")]
        pub umask: Option<u32>,

        /// The workers' limit on open descriptors (RLIMIT_NOFILE, soft and
        /// hard): a number or "unlimited" [default: the limit prefork was
        /// started with]
        #[arg(long, value_name = "N", value_parser = value::rlimit::parse)]
        #[serde(with = "value::rlimit")]
        pub rlimit_nofile: Option<u64>,

        /// The workers' largest core dump in bytes (RLIMIT_CORE, soft and
        /// hard): a number or "unlimited"; 0 for none [default: the master's]
        #[arg(long, value_name = "BYTES", value_parser = value::rlimit::parse)]
        #[serde(with = "value::rlimit")]
        pub rlimit_core: Option<u64>,

        /// The workers' nice value, from -20 (first served) to 19
        /// [default: the master's]
        #[arg(long, value_name = "N", value_parser = value::nice::parse, allow_negative_numbers = true)]
        #[serde(with = "value::nice")]
        pub nice: Option<i32>,

        /// The workers' standard output and error: inherit (the master's
        /// own), or prefix (relayed by the master, each line as
        /// `[slot S pid P] LINE` on the same stream, or a JSON object with
        /// --log-format json) [default: inherit]
        #[arg(long, value_name = "MODE", value_parser = value::worker_output::parse)]
        #[serde(with = "value::worker_output")]
        pub worker_output: Option<WorkerOutput>,
    }
}

/// How an option's value in one layer goes over its value in the layer
/// below. The field's type says which rule applies.
trait Merge {
    fn over(self, below: Self) -> Self;
}

/// An option said once: the upper layer's value, if it says one, wins.
impl<T> Merge for Option<T> {
    fn over(self, below: Self) -> Self {
        self.or(below)
    }
}

/// A repeatable option: the layers' lists add up, the upper one's last, so
/// that where a later entry wins (a key of `env`), the upper layer wins.
impl<T> Merge for Vec<T> {
    fn over(self, mut below: Self) -> Self {
        below.extend(self);
        below
    }
}

impl Layer {
    /// The effective configuration, with defaults for what no layer set.
    /// `default_workers` is used when no layer gives a count.
    pub fn into_config(self, default_workers: usize) -> Result<Config, String> {
        // Every field, by name: a new one does not compile until it is used.
        let Layer {
            command,
            workers,
            scoreboard_dir,
            graceful_timeout,
            timeout,
            kill_timeout,
            check_interval,
            working_directory,
            env,
            min_uptime,
            backoff_initial,
            backoff_max,
            kill_orphans,
            listen,
            socket_mode,
            backlog,
            ready,
            start_timeout,
            stop_signal,
            max_surge,
            log_format,
            status_listen,
            min_workers,
            max_workers,
            min_spare,
            max_spare,
            idle_status,
            max_lifetime,
            max_lifetime_jitter,
            max_rss,
            user,
            group,
            umask,
            rlimit_nofile,
            rlimit_core,
            nice,
            worker_output,
        } = self;
        let defaults = Config::default();
        let command = command.ok_or(
            "no worker command: give one after `--` (prefork -- ./worker) or as `command` in the config file",
        )?;
        if let Some(dir) = &working_directory {
            if !dir.is_dir() {
                return Err(format!(
                    "working_directory {}: not an existing directory",
                    dir.display()
                ));
            }
        }
        let backoff = Backoff {
            min_uptime: min_uptime.unwrap_or(defaults.backoff.min_uptime),
            initial: backoff_initial.unwrap_or(defaults.backoff.initial),
            max: backoff_max.unwrap_or(defaults.backoff.max),
        };
        if backoff.initial > backoff.max {
            return Err(format!(
                "backoff_initial ({}) is larger than backoff_max ({})",
                crate::duration::display(backoff.initial),
                crate::duration::display(backoff.max)
            ));
        }
        // Names become numbers now, so that an unknown user or group, or a
        // switch the master may not make, refuses the start or the reload.
        let run_as = privileges::resolve(user.as_deref(), group.as_deref())?;
        privileges::check_limits(rlimit_nofile, rlimit_core, nice)?;
        let min_workers = min_workers.map_or(defaults.min_workers, |n| n as usize);
        let scaling = scaling(min_workers, max_workers, min_spare, max_spare)?;
        let workers = match (&scaling, workers) {
            (None, workers) => workers.unwrap_or(default_workers),
            (Some(s), Some(n)) if n < min_workers || n > s.max_workers => {
                return Err(format!(
                    "workers ({n}) is the starting size of a pool that sizes itself: it must lie \
                     between min_workers ({min_workers}) and max_workers ({})",
                    s.max_workers
                ))
            }
            (Some(_), Some(n)) => n,
            (Some(s), None) => min_workers.max(s.min_spare).min(s.max_workers),
        };
        let idle = match &idle_status {
            Some(pattern) => IdleRule::pattern(pattern).map_err(|e| format!("idle_status: {e}"))?,
            None => IdleRule::Default,
        };
        // A key set twice keeps its last value.
        let env: BTreeMap<String, String> = env.into_iter().collect();
        Ok(Config {
            command,
            workers,
            scoreboard_dir,
            graceful_timeout: graceful_timeout.unwrap_or(defaults.graceful_timeout),
            timeout: timeout.filter(|t| !t.is_zero()),
            kill_timeout: kill_timeout.unwrap_or(defaults.kill_timeout),
            check_interval: check_interval.unwrap_or(defaults.check_interval),
            working_directory,
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            backoff,
            kill_orphans: kill_orphans.unwrap_or(defaults.kill_orphans),
            listen: listen.unwrap_or_default(),
            socket_mode: socket_mode.unwrap_or(defaults.socket_mode),
            backlog,
            ready: ready.unwrap_or(defaults.ready),
            start_timeout: start_timeout.unwrap_or(defaults.start_timeout),
            stop_signal: stop_signal.unwrap_or(defaults.stop_signal),
            max_surge: max_surge.map_or(defaults.max_surge, |n| n as usize),
            log_format: log_format.unwrap_or(defaults.log_format),
            status_listen,
            min_workers,
            scaling,
            idle,
            max_lifetime: max_lifetime.filter(|d| !d.is_zero()),
            max_lifetime_jitter: max_lifetime_jitter.unwrap_or(defaults.max_lifetime_jitter),
            max_rss,
            run_as,
            umask,
            rlimit_nofile,
            rlimit_core,
            nice,
            worker_output: worker_output.unwrap_or(defaults.worker_output),
        })
    }
}

/// The spare-scaling bounds, when any of them is set: checked against each
/// other, with the defaults of the ones left out.
fn scaling(
    min_workers: usize,
    max_workers: Option<usize>,
    min_spare: Option<usize>,
    max_spare: Option<usize>,
) -> Result<Option<Scaling>, String> {
    if (max_workers, min_spare, max_spare) == (None, None, None) {
        return Ok(None);
    }
    let max_workers = max_workers.ok_or(
        "min_spare and max_spare size the pool from the board, up to max_workers: set \
         max_workers too (the most workers the pool may grow to)",
    )?;
    if min_workers > max_workers {
        return Err(format!(
            "min_workers ({min_workers}) is above max_workers ({max_workers})"
        ));
    }
    let min_spare = min_spare.unwrap_or(1);
    let max_spare = max_spare.unwrap_or(min_spare + 2);
    if max_spare < min_spare {
        return Err(format!(
            "max_spare ({max_spare}) is below min_spare ({min_spare}): the pool would grow and \
             shrink by turns"
        ));
    }
    Ok(Some(Scaling {
        max_workers,
        min_spare,
        max_spare,
    }))
}

/// The layer that says everything an effective configuration is: what
/// `prefork check` prints. A `None` is an option whose default is an absence
/// (no timeout, a private board); `render` prints its `[default: ...]`.
impl From<&Config> for Layer {
    fn from(config: &Config) -> Layer {
        let lossy = |s: &OsString| s.to_string_lossy().into_owned();
        Layer {
            command: Some(config.command.clone()),
            workers: Some(config.workers),
            scoreboard_dir: config.scoreboard_dir.clone(),
            graceful_timeout: Some(config.graceful_timeout),
            timeout: config.timeout,
            kill_timeout: Some(config.kill_timeout),
            check_interval: Some(config.check_interval),
            working_directory: config.working_directory.clone(),
            env: config
                .env
                .iter()
                .map(|(k, v)| (lossy(k), lossy(v)))
                .collect(),
            min_uptime: Some(config.backoff.min_uptime),
            backoff_initial: Some(config.backoff.initial),
            backoff_max: Some(config.backoff.max),
            kill_orphans: Some(config.kill_orphans),
            listen: Some(config.listen.clone()),
            socket_mode: Some(config.socket_mode),
            backlog: config.backlog,
            ready: Some(config.ready),
            start_timeout: Some(config.start_timeout),
            stop_signal: Some(config.stop_signal),
            max_surge: Some(config.max_surge as u32),
            log_format: Some(config.log_format),
            status_listen: config.status_listen.clone(),
            min_workers: Some(config.min_workers as u32),
            max_workers: config.scaling.map(|s| s.max_workers),
            min_spare: config.scaling.map(|s| s.min_spare),
            max_spare: config.scaling.map(|s| s.max_spare),
            idle_status: config.idle.source().map(str::to_string),
            max_lifetime: config.max_lifetime,
            max_lifetime_jitter: Some(config.max_lifetime_jitter),
            max_rss: config.max_rss,
            user: config.run_as.as_ref().and_then(|r| r.user.clone()),
            group: config.run_as.as_ref().and_then(|r| r.group.clone()),
            umask: config.umask,
            rlimit_nofile: config.rlimit_nofile,
            rlimit_core: config.rlimit_core,
            nice: config.nice,
            worker_output: Some(config.worker_output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upper_layer_wins_and_lists_add_up() {
        let file = Layer {
            workers: Some(2),
            timeout: Some(Duration::from_secs(3)),
            env: vec![("A".into(), "file".into()), ("B".into(), "file".into())],
            ..Layer::default()
        };
        let cli = Layer {
            workers: Some(5),
            env: vec![("B".into(), "cli".into())],
            ..Layer::default()
        };
        let both = cli.over(file);
        assert_eq!(both.workers, Some(5));
        assert_eq!(both.timeout, Some(Duration::from_secs(3)));
        let config = Layer {
            command: Some(vec!["w".into()]),
            ..both
        }
        .into_config(1)
        .unwrap();
        let env: Vec<(OsString, OsString)> =
            vec![("A".into(), "file".into()), ("B".into(), "cli".into())];
        assert_eq!(config.env, env);
    }

    /// What the module says: every key is also a long option, the same
    /// name in kebab-case (or one of its aliases); `command` is the
    /// arguments after `--`.
    #[test]
    fn every_key_is_a_long_option_of_the_same_name() {
        use clap::Args;
        let cmd = Layer::augment_args(clap::Command::new("prefork"));
        for key in Layer::KEYS {
            let arg = cmd.get_arguments().find(|a| a.get_id() == key);
            let arg = arg.unwrap_or_else(|| panic!("no option for key {key}"));
            if *key == "command" {
                assert!(arg.is_last_set());
                continue;
            }
            let long = key.replace('_', "-");
            let names = arg.get_long_and_visible_aliases().unwrap_or_default();
            assert!(names.contains(&long.as_str()), "{key}: {names:?}");
        }
    }
}
