//! The master: keeps N workers running, single-threaded and event-driven.
//!
//! - [`core`] decides: the pool's slots, phase, backoff, rollout, stuck
//!   clocks and counters; it takes inputs with the time and returns effects,
//!   and does no I/O.
//! - [`shell`] does: it owns the descriptors, waits in `poll` (signals,
//!   starting workers' exec pipes, output), reaps, reads the board, and
//!   carries out the core's effects.
//! - [`sinks`] are where output goes: bounded, never-blocking buffers for
//!   the log and the SIGUSR1 board.
//! - [`events`] are what happened, typed: the one source of log lines and
//!   counters. [`spawn`] forks and execs; [`spec`] says what a worker is.

pub mod core;
pub mod events;
pub mod master_file;
mod notify;
mod shell;
mod signals;
pub mod sinks;
pub mod spawn;
pub mod spec;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::sys::wait::waitpid;

use self::core::Pool;
use self::events::Event;
use self::master_file::{ClaimError, MasterFile};
use self::shell::Shell;
use self::signals::Signals;
use self::spawn::{Launcher, SpawnError};
use crate::config::{LogFormat, Source};
use crate::listen::Listeners;
use crate::scoreboard::Scoreboard;

/// A start-up failure with its own exit code (126, 127), reported before
/// any other worker is forked.
#[derive(Debug)]
pub struct StartFailure {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartFailure {}

/// Runs the master until a requested shutdown has completed.
pub fn run(source: Source) -> Result<()> {
    // Before anything opens a descriptor, and while we are the only thread
    // reading the environment.
    let mut listeners =
        Listeners::from_activation().map_err(|message| StartFailure { code: 2, message })?;
    // systemd's notification socket is ours, not the workers'.
    let notifier =
        notify::Notifier::from_env().context("cannot open a socket for NOTIFY_SOCKET")?;
    let config = source.load()?;
    sinks::set_json_logs(config.log_format == LogFormat::Json);
    spawn::reserve_status_fd()
        .context("cannot reserve descriptor 3 for the workers' status files")?;
    let nofile = spawn::raise_nofile_limit();
    // Signals first: a SIGCHLD or SIGTERM from the very first worker must
    // not be lost, nor kill us with its default action.
    let signals = Signals::install().context("cannot install signal handlers")?;
    become_subreaper();
    let (dir, owned_dir) = match &config.scoreboard_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let tmp = private_board_dir()?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let board = Scoreboard::new(&dir)
        .with_context(|| format!("cannot open the scoreboard in {}", dir.display()))?;
    let master_file = match MasterFile::claim(board.base_dir()) {
        Ok(file) => file,
        Err(ClaimError::Taken(claimed)) => {
            return Err(StartFailure {
                code: 2,
                message: claimed.to_string(),
            }
            .into())
        }
        Err(ClaimError::Io(path, e)) => {
            return Err(e).with_context(|| format!("cannot create {}", path.display()))
        }
    };
    // Bound once, before any worker starts; nothing is started (and our
    // claim on the board is given up) when one cannot be.
    let refuse = |e: crate::listen::ListenError| {
        let _ = std::fs::remove_file(board.base_dir().join(master_file::NAME));
        StartFailure {
            code: 2,
            message: e.to_string(),
        }
    };
    let sockets = listeners
        .resolve(&config.listen, shell::bind_options(&config))
        .map_err(refuse)?
        .sockets;
    let endpoint = shell::bind_endpoint(&config).map_err(refuse)?;
    let registrar = board
        .fork_registrar()
        .expect("the master's scoreboard uses process ids");
    let launcher = Launcher::new(registrar, board.base_dir(), nofile)
        .context("cannot open /dev/null for the workers' standard input")?;
    let unlisted: Vec<String> = listeners
        .inherited()
        .iter()
        .filter(|l| !sockets.iter().any(|s| Arc::ptr_eq(s, l)))
        .map(|l| l.bound.to_string())
        .collect();
    let mut pool = Pool::new(config, sockets, Instant::now());
    pool.emit(Event::Starting {
        workers: pool.config().workers,
        command: pool.spec().command_line(),
        board: dir,
    });
    for addr in unlisted {
        pool.emit(Event::InheritedUnlisted { addr });
    }
    if let Some(e) = &endpoint {
        pool.emit(Event::StatusServing {
            addr: e.addr.to_string(),
        });
    }
    let mut shell = Shell::new(
        pool,
        board,
        master_file,
        owned_dir,
        launcher,
        signals,
        source,
        listeners,
        notifier,
        endpoint,
    );
    // (A clone that must not live as long as `run`: a socket closes when
    // the last spec that lists it goes.)
    shell.said_listening(&shell.pool.spec().sockets.clone());
    shell.apply_effects();
    if let Err(e) = start_first_worker(&mut shell) {
        // The child may have registered on the board before its exec
        // failed: do not leave its file, nor ours, behind in a directory we
        // were given.
        let _ = shell.board.cleanup();
        let _ = std::fs::remove_file(shell.board.base_dir().join(master_file::NAME));
        return Err(e);
    }
    // Readable at once: a second master started now names this one.
    shell.publish();
    shell.run();
    shell.finish();
    Ok(())
}

/// Starts slot 0 alone and waits for its exec: a command that cannot be
/// run fails here, with exit code 127 or 126, before any other worker is
/// forked. (The loop itself never waits for an exec.)
fn start_first_worker(shell: &mut Shell) -> Result<()> {
    let spec = shell.pool.first_spawn();
    let command = spec.command_line();
    let now = Instant::now();
    let started = match shell.launcher.spawn(0, &spec) {
        Ok(started) => started,
        Err(e) => bail!("cannot start the first worker of `{command}`: {e}"),
    };
    shell.pool.forked(0, started.pid, now);
    match started.exec.wait() {
        Ok(()) => {
            shell.exec_done(started.pid, Ok(()));
            shell.apply_effects();
            Ok(())
        }
        Err(e) => {
            // It exits at once; reap it here, before anything else.
            let _ = waitpid(started.pid, None);
            let code = match &e {
                SpawnError::Exec(_, io) if io.raw_os_error() == Some(libc::ENOENT) => 127,
                SpawnError::Exec(..) | SpawnError::Chdir(..) => 126,
                _ => bail!("cannot start the first worker of `{command}`: {e}"),
            };
            Err(StartFailure {
                code,
                message: format!("cannot run `{command}`: {e}"),
            }
            .into())
        }
    }
}

fn become_subreaper() {
    // Orphaned grandchildren are reparented to us, so we reap them (no
    // zombies, even as PID 1 in a container) and see their groups empty.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        log::warn!("cannot become a child subreaper: {e}; orphans of workers go to init");
    }
}

/// A new private directory on a memory-backed filesystem: a status file on
/// disk can block its writer (gunicorn's heartbeat file on /tmp did).
fn private_board_dir() -> Result<tempfile::TempDir> {
    let candidates = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/dev/shm"), std::env::temp_dir()]);
    let mut last_error = None;
    for base in candidates {
        match tempfile::Builder::new()
            .prefix("prefork-")
            .tempdir_in(&base)
        {
            Ok(dir) => return Ok(dir),
            Err(e) => last_error = Some((base, e)),
        }
    }
    let (base, e) = last_error.expect("at least one candidate");
    Err(e).with_context(|| {
        format!(
            "cannot create a scoreboard directory in {} (pass --scoreboard DIR)",
            base.display()
        )
    })
}
