//! What a worker is: compared and swapped as one value when a reload
//! decides whether the workers must be rolled over.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::Config;

/// Everything that makes two workers the same program in the same setting.
/// (Listening sockets, user and limits will join it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Program and arguments, as given.
    pub command: Vec<OsString>,
    /// Extra environment variables, over the master's own.
    pub env: Vec<(OsString, OsString)>,
    pub working_directory: Option<PathBuf>,
}

impl WorkerSpec {
    pub fn of(config: &Config) -> WorkerSpec {
        WorkerSpec {
            command: config.command.clone(),
            env: config.env.clone(),
            working_directory: config.working_directory.clone(),
        }
    }

    /// The command as typed, for messages.
    pub fn command_line(&self) -> String {
        self.command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
