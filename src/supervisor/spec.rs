//! What a worker is: compared and swapped as one value when a reload
//! decides whether the workers must be rolled over.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, RunAs, WorkerOutput};
use crate::listen::Listener;

/// Everything that makes two workers the same program in the same setting.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Program and arguments, as given.
    pub command: Vec<OsString>,
    /// Extra environment variables, over the master's own.
    pub env: Vec<(OsString, OsString)>,
    pub working_directory: Option<PathBuf>,
    /// The listening sockets, descriptors 3, 4, ... in the worker. The
    /// master's copy of a socket lives as long as a spec lists it.
    pub sockets: Vec<Arc<Listener>>,
    /// Server::Starter's generation (`SERVER_STARTER_GENERATION`): 1 for
    /// the first spec, one more for each spec rolled out. Not part of what
    /// makes two specs the same.
    pub generation: u64,
    /// Who the worker runs as (`None`: the master's user).
    pub run_as: Option<RunAs>,
    /// Its umask, resource limits and nice value (`None`: inherited).
    pub umask: Option<u32>,
    pub rlimit_nofile: Option<u64>,
    pub rlimit_core: Option<u64>,
    pub nice: Option<i32>,
    /// Its standard output and error: the master's, or pipes it relays.
    pub output: WorkerOutput,
}

impl PartialEq for WorkerSpec {
    fn eq(&self, other: &Self) -> bool {
        self.command == other.command
            && self.env == other.env
            && self.working_directory == other.working_directory
            && self.sockets.len() == other.sockets.len()
            && self
                .sockets
                .iter()
                .zip(&other.sockets)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.run_as == other.run_as
            && self.umask == other.umask
            && self.rlimit_nofile == other.rlimit_nofile
            && self.rlimit_core == other.rlimit_core
            && self.nice == other.nice
            && self.output == other.output
    }
}

impl Eq for WorkerSpec {}

impl WorkerSpec {
    /// The spec of `config`, with no socket.
    pub fn of(config: &Config) -> WorkerSpec {
        WorkerSpec::with_sockets(config, Vec::new())
    }

    pub fn with_sockets(config: &Config, sockets: Vec<Arc<Listener>>) -> WorkerSpec {
        WorkerSpec {
            command: config.command.clone(),
            env: config.env.clone(),
            working_directory: config.working_directory.clone(),
            sockets,
            generation: 1,
            run_as: config.run_as.clone(),
            umask: config.umask,
            rlimit_nofile: config.rlimit_nofile,
            rlimit_core: config.rlimit_core,
            nice: config.nice,
            output: config.worker_output,
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

    /// The descriptor of the worker's status file: the first after its
    /// sockets.
    pub fn status_fd(&self) -> i32 {
        3 + self.sockets.len() as i32
    }
}
