//! A partial configuration: what one source (the config file, or the
//! command line) says. Layers stack, the command line over the file, and the
//! result, with defaults for what nobody said, becomes a [`Config`].

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{de, Backoff, Config};

/// Every key of the config file. Command-line options have the same names
/// in kebab-case.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    #[serde(default, deserialize_with = "de::command")]
    pub command: Option<Vec<OsString>>,
    #[serde(default, deserialize_with = "de::workers")]
    pub workers: Option<usize>,
    pub scoreboard_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de::duration")]
    pub graceful_timeout: Option<Duration>,
    /// 0 turns stuck detection off.
    #[serde(default, deserialize_with = "de::duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    pub kill_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de::interval")]
    pub check_interval: Option<Duration>,
    pub working_directory: Option<PathBuf>,
    /// Extra environment variables for the workers.
    pub env: Option<BTreeMap<String, String>>,
    /// A worker that dies sooner than this after its start counts toward
    /// the crash-loop backoff.
    #[serde(default, deserialize_with = "de::duration")]
    pub min_uptime: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    pub backoff_initial: Option<Duration>,
    #[serde(default, deserialize_with = "de::duration")]
    pub backoff_max: Option<Duration>,
}

impl Layer {
    /// This layer over `below`: what this one says wins. The `env` tables
    /// merge key by key.
    pub fn over(self, below: Layer) -> Layer {
        let env = match (below.env, self.env) {
            (Some(mut base), Some(top)) => {
                base.extend(top);
                Some(base)
            }
            (base, top) => top.or(base),
        };
        Layer {
            command: self.command.or(below.command),
            workers: self.workers.or(below.workers),
            scoreboard_dir: self.scoreboard_dir.or(below.scoreboard_dir),
            graceful_timeout: self.graceful_timeout.or(below.graceful_timeout),
            timeout: self.timeout.or(below.timeout),
            kill_timeout: self.kill_timeout.or(below.kill_timeout),
            check_interval: self.check_interval.or(below.check_interval),
            working_directory: self.working_directory.or(below.working_directory),
            env,
            min_uptime: self.min_uptime.or(below.min_uptime),
            backoff_initial: self.backoff_initial.or(below.backoff_initial),
            backoff_max: self.backoff_max.or(below.backoff_max),
        }
    }

    /// The effective configuration, with defaults for what no layer set.
    /// `default_workers` is used when no layer gives a count.
    pub fn into_config(self, default_workers: usize) -> Result<Config, String> {
        let defaults = Config::default();
        let backoff_defaults = Backoff::default();
        let command = self.command.ok_or(
            "no worker command: give one after `--` (prefork -- ./worker) or as `command` in the config file",
        )?;
        if let Some(dir) = &self.working_directory {
            if !dir.is_dir() {
                return Err(format!(
                    "working_directory {}: not an existing directory",
                    dir.display()
                ));
            }
        }
        let backoff = Backoff {
            min_uptime: self.min_uptime.unwrap_or(backoff_defaults.min_uptime),
            initial: self.backoff_initial.unwrap_or(backoff_defaults.initial),
            max: self.backoff_max.unwrap_or(backoff_defaults.max),
        };
        if backoff.initial > backoff.max {
            return Err(format!(
                "backoff_initial ({}) is larger than backoff_max ({})",
                crate::duration::display(backoff.initial),
                crate::duration::display(backoff.max)
            ));
        }
        Ok(Config {
            command,
            workers: self.workers.unwrap_or(default_workers),
            scoreboard_dir: self.scoreboard_dir,
            graceful_timeout: self.graceful_timeout.unwrap_or(defaults.graceful_timeout),
            timeout: self.timeout.filter(|t| !t.is_zero()),
            kill_timeout: self.kill_timeout.unwrap_or(defaults.kill_timeout),
            check_interval: self.check_interval.unwrap_or(defaults.check_interval),
            working_directory: self.working_directory,
            env: self
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            backoff,
        })
    }
}
