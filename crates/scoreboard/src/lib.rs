//! A process scoreboard, compatible byte for byte with Perl's
//! Parallel::Scoreboard 0.08: each worker writes its status into its own file
//! `status_<id>` under one directory and holds an exclusive `flock` on it for
//! as long as it lives; a manager reads them all, and a file whose lock it can
//! take belongs to a dead worker and is removed.
//!
//! Over the Perl module it adds: descriptor-relative file operations that
//! never follow a symlink, a check of the directory's owner and mode, readers
//! that never touch a writer's `.tmp` file, a bounded reader for hostile
//! files, one system call per update, fork detection without `getpid`, and
//! [`Scoreboard::live_workers`], which lists every worker whose lock is held
//! and says why its record cannot be read where `read_all` (as in Perl)
//! leaves such a worker out.
//!
//! ```
//! use prefork_scoreboard::Scoreboard;
//!
//! let dir = tempfile::tempdir()?;
//! let mut board = Scoreboard::new(dir.path().join("board"))?;
//! board.update(b"GET /index.html")?;
//!
//! let all = board.read_all()?;
//! let me = std::process::id().to_string();
//! assert_eq!(all[&me].status, b"GET /index.html");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dir;
mod error;
mod reader;
pub mod record;
mod status;
mod sys;
mod watch;
mod writer;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use dir::BaseDir;
pub use error::{Error, Result};
pub use reader::worker_id;
use reader::Read;
pub use status::{Status, Unreadable, READ_ATTEMPTS};
pub use watch::{FileState, WatchedFile};
pub use writer::ForkRegistrar;
use writer::OwnFile;

/// The README's examples, run as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The variable naming the descriptor of a worker's own, already locked,
/// status file (set by the prefork supervisor).
pub const STATUS_FD_VAR: &str = "PREFORK_STATUS_FD";
/// The variable naming the scoreboard directory (set by the prefork supervisor).
pub const DIR_VAR: &str = "PREFORK_SCOREBOARD_DIR";

/// The default limit on the size of a status a reader will load.
pub const DEFAULT_MAX_STATUS_LEN: usize = 64 * 1024 * 1024;

/// One live worker's entry on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The status bytes, exactly as the worker wrote them.
    pub status: Vec<u8>,
    /// When the worker last wrote its file (its mtime): every update counts,
    /// even one that writes the same status again.
    pub updated: SystemTime,
}

/// A live worker found on the board by [`Scoreboard::live_workers`]: a
/// process holds the lock of its file, whatever the file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWorker {
    /// The worker id (the process id, for prefork's workers).
    pub id: String,
    /// When its file was last written (or created, if never written).
    pub updated: SystemTime,
    /// Its status, [`Status::NotYet`] until it writes one, or why its record
    /// cannot be read.
    pub status: Status,
}

type IdFn = Box<dyn Fn() -> String + Send + Sync>;

/// A handle on a scoreboard directory, for a worker (which [`update`]s its own
/// status) or a manager (which reads everyone's), or both.
///
/// [`update`]: Scoreboard::update
pub struct Scoreboard {
    dir: BaseDir,
    worker_id: Option<IdFn>,
    file: Option<OwnFile>,
    max_status_len: usize,
}

impl std::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("base_dir", &self.dir.path())
            .field("custom_worker_id", &self.worker_id.is_some())
            .field("file", &self.file)
            .finish()
    }
}

/// Options for opening a [`Scoreboard`].
pub struct Builder {
    base_dir: PathBuf,
    dir_mode: u32,
    worker_id: Option<IdFn>,
    allow_foreign_owner: bool,
    max_status_len: usize,
    remove_own_stale_file: bool,
    create: bool,
    /// Why the caller wants no writes at all, if it does (see [`Builder::read_only`]).
    read_only: Option<String>,
}

impl Builder {
    /// Starts with the mandatory base directory.
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Builder {
            base_dir: base_dir.into(),
            dir_mode: 0o700,
            worker_id: None,
            allow_foreign_owner: false,
            max_status_len: DEFAULT_MAX_STATUS_LEN,
            remove_own_stale_file: true,
            create: true,
            read_only: None,
        }
    }

    /// The mode of directories the scoreboard creates (default `0o700`,
    /// before the umask).
    pub fn dir_mode(mut self, mode: u32) -> Self {
        self.dir_mode = mode;
        self
    }

    /// A function returning this process's worker id, called on every update
    /// as Parallel::Scoreboard's `worker_id` is (default: the process id).
    pub fn worker_id(mut self, id: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.worker_id = Some(Box::new(id));
        self
    }

    /// Accepts a base directory owned by another user (neither this
    /// process's effective user nor root), read-only: for a monitor that
    /// reads someone else's board. Such a handle never creates nor removes a
    /// file there, not even a dead worker's; [`Scoreboard::update`] and
    /// [`Scoreboard::cleanup`] fail with the error [`build`] would have
    /// given without this option. A world-writable directory without the
    /// sticky bit is refused all the same. (Why: see [`Scoreboard::read_only`].)
    ///
    /// [`build`]: Builder::build
    pub fn allow_foreign_owner(mut self, allow: bool) -> Self {
        self.allow_foreign_owner = allow;
        self
    }

    /// For a monitor that only reads: the directory must exist (a missing
    /// one is an error, not created), may belong to another user (and is
    /// then read-only, see [`allow_foreign_owner`]), and no file of this
    /// process's id is removed at start. Dead workers' files are removed
    /// where the directory is ours (or root's) and the system permits it.
    ///
    /// [`allow_foreign_owner`]: Builder::allow_foreign_owner
    pub fn monitor(mut self) -> Self {
        self.create = false;
        self.allow_foreign_owner = true;
        self.remove_own_stale_file = false;
        self
    }

    /// For a viewer that must change nothing on the board (`prefork top`):
    /// a [`monitor`](Builder::monitor) that is read-only on any directory,
    /// its own included. It never creates nor removes a file, not even a
    /// dead worker's (whose lock it can take): such files are listed by
    /// neither reader and left to the board's own master or readers.
    /// [`Scoreboard::read_only`] then says `reason`.
    pub fn read_only(mut self, reason: impl Into<String>) -> Self {
        self = self.monitor();
        self.read_only = Some(reason.into());
        self
    }

    /// The largest status a reader loads (default 64 MiB); a larger record
    /// is not read: [`Unreadable::TooLarge`] for [`Scoreboard::live_workers`],
    /// skipped with a warning by [`Scoreboard::read_all`].
    pub fn max_status_len(mut self, len: usize) -> Self {
        self.max_status_len = len;
        self
    }

    /// Creates the directory when missing, checks it, and removes a stale
    /// file of this process's own id, as Parallel::Scoreboard does.
    pub fn build(self) -> Result<Scoreboard> {
        writer::watch_forks();
        let mode = self.create.then_some(self.dir_mode);
        let mut dir = BaseDir::open(&self.base_dir, mode, self.allow_foreign_owner)?;
        if let Some(reason) = self.read_only {
            dir.forbid_writes(reason);
        }
        let board = Scoreboard {
            dir,
            worker_id: self.worker_id,
            file: None,
            max_status_len: self.max_status_len,
        };
        if self.remove_own_stale_file && board.dir.read_only().is_none() {
            let (_, name) = writer::names(&board.current_id())?;
            let _ = sys::unlinkat(board.dir.fd(), &name);
        }
        Ok(board)
    }
}

/// Set once a handle has adopted `PREFORK_STATUS_FD`: a second adoption
/// would own the same descriptor twice.
static ADOPTED: AtomicBool = AtomicBool::new(false);

impl Scoreboard {
    /// Opens (creating when missing, mode 0700) the scoreboard in `base_dir`.
    pub fn new(base_dir: impl Into<PathBuf>) -> Result<Self> {
        Builder::new(base_dir).build()
    }

    /// Options beyond the base directory.
    pub fn builder(base_dir: impl Into<PathBuf>) -> Builder {
        Builder::new(base_dir)
    }

    /// The handle of a worker started by the prefork supervisor: adopts the
    /// locked status file passed as descriptor `PREFORK_STATUS_FD` in
    /// `PREFORK_SCOREBOARD_DIR`, or creates one there when no usable
    /// descriptor was passed (for example in a process the worker forked).
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os(DIR_VAR);
        let fd = std::env::var_os(STATUS_FD_VAR);
        let dir = match (dir, fd.as_ref()) {
            (None, None) => return Err(Error::NotUnderPrefork),
            (None, Some(fd)) => {
                return Err(Error::BadEnv {
                    var: DIR_VAR,
                    value: String::new(),
                    reason: format!(
                        "it is unset while {STATUS_FD_VAR}={} is set; both are set by prefork",
                        fd.to_string_lossy()
                    ),
                })
            }
            (Some(dir), _) => dir,
        };
        let mut builder = Builder::new(dir);
        builder.remove_own_stale_file = false;
        let mut board = builder.build()?;
        if let Some(fd) = fd {
            board.file = board.adopt(fd)?;
        }
        Ok(board)
    }

    fn adopt(&self, value: OsString) -> Result<Option<OwnFile>> {
        let text = value.to_string_lossy().into_owned();
        let bad = |reason: &str| Error::BadEnv {
            var: STATUS_FD_VAR,
            value: text.clone(),
            reason: reason.to_string(),
        };
        let fd: RawFd = text
            .parse()
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or_else(|| bad("not a descriptor number"))?;
        let id = std::process::id().to_string();
        let (_, name) = writer::names(&id)?;
        // Adopt only the file that really is ours: after a fork, or in a
        // program started by a worker, this number may be closed or be
        // something else entirely. Then we make our own file instead.
        let (Ok(passed), Ok(named)) = (sys::fstat(fd), sys::stat_at(self.dir.fd(), &name)) else {
            return Ok(None);
        };
        if !sys::same_file(&passed, &named) {
            return Ok(None);
        }
        if ADOPTED.swap(true, Ordering::SeqCst) {
            return Err(bad("already adopted by another Scoreboard in this process"));
        }
        // Our own children must not inherit the lock: a grandchild holding it
        // would keep a dead worker looking alive.
        // SAFETY: F_SETFD takes an integer, not a pointer, and `fd` is open:
        // fstat succeeded on it just above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: the descriptor is the status file the supervisor opened for
        // this process, and the ADOPTED flag makes us its only owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Some(OwnFile::adopt(owned, id)))
    }

    /// The base directory.
    pub fn base_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the base directory's path still names the directory this
    /// handle opened: false once it was removed, renamed or replaced, when
    /// new files would no longer be where readers look.
    pub fn dir_is_current(&self) -> bool {
        self.dir.is_current()
    }

    /// Why this handle may not write in its directory ("it is owned by uid
    /// 1000 and we run as uid 0"), if it may not: it was built with
    /// [`Builder::allow_foreign_owner`] (or [`Builder::monitor`]) on a
    /// directory that belongs to neither this process's effective user nor
    /// root. One rule for every process, the prefork supervisor and
    /// `prefork status` included: writing (creating, updating, removing
    /// files) needs a directory of our own user or of root, because its owner
    /// can remove, replace or plant files in it at will; reading does not,
    /// because a monitor reading a service's board as another user is
    /// common and harmless, and what it reads is only as trustworthy as the
    /// directory's owner (the service's user) anyway.
    pub fn read_only(&self) -> Option<&str> {
        self.dir.read_only()
    }

    /// This process's worker id.
    pub fn current_id(&self) -> String {
        match &self.worker_id {
            Some(id) => id(),
            None => match &self.file {
                Some(file) if file.is_owned_here() => file.id().to_string(),
                _ => std::process::id().to_string(),
            },
        }
    }

    /// Saves this worker's status: one positioned write once the file is
    /// open. The first update in a process (including the first after a
    /// `fork`, which leaves the parent's file alone) creates and locks the
    /// process's own file.
    pub fn update(&mut self, status: &[u8]) -> Result<()> {
        if !self.file_is_current() {
            self.dir.check_writable()?;
            if let Some(inherited) = self.file.take() {
                inherited.close(&self.dir);
            }
            self.file = Some(OwnFile::create(&self.dir, self.current_id())?);
        }
        let file = self.file.as_ref().expect("opened above");
        file.write(&self.dir, status)
    }

    fn file_is_current(&self) -> bool {
        match (&self.file, &self.worker_id) {
            (Some(file), None) => file.is_owned_here(),
            (Some(file), Some(id)) => file.is_owned_here() && file.id() == id(),
            (None, _) => false,
        }
    }

    /// The statuses of all live workers that have written at least once,
    /// keyed by worker id, as Parallel::Scoreboard's `read_all` returns them.
    /// Files of dead workers are removed on the way.
    ///
    /// Like Parallel::Scoreboard, this leaves out a live worker whose record
    /// cannot be read (corrupt, cut short, above the size limit; logged as a
    /// warning) or that has not written yet: it tells what workers say, not
    /// which are alive. [`live_workers`] lists every live worker.
    ///
    /// [`live_workers`]: Scoreboard::live_workers
    pub fn read_all(&self) -> Result<HashMap<String, WorkerStatus>> {
        let mut all = HashMap::new();
        self.visit_live(|id, updated, status| match status {
            Read::Written(status) => {
                let status = status.to_vec();
                all.insert(id.to_string(), WorkerStatus { status, updated });
            }
            Read::NotYet => {}
            Read::Unreadable(why) => log::warn!(
                "cannot read the status of worker {id} in {}: {why}; skipping it",
                self.dir.path().display()
            ),
        })?;
        Ok(all)
    }

    /// Every live worker on the board: every file whose lock is held, with
    /// its status as written, [`Status::NotYet`] for a worker that has not
    /// written, or [`Status::Unreadable`] with why its record cannot be
    /// read. A record torn by a concurrent write is read again first (up to
    /// [`READ_ATTEMPTS`] times). Liveness comes from the lock, not from the
    /// record: a health check counting these counts a worker whose record
    /// is damaged, where [`read_all`] (like Parallel::Scoreboard) leaves it
    /// out. Files of dead workers are removed on the way.
    ///
    /// [`read_all`]: Scoreboard::read_all
    pub fn live_workers(&self) -> Result<Vec<LiveWorker>> {
        let mut all = Vec::new();
        self.visit_live(|id, updated, status| {
            let status = match status {
                Read::Written(status) => Status::Written(status.to_vec()),
                Read::NotYet => Status::NotYet,
                Read::Unreadable(why) => Status::Unreadable(why),
            };
            all.push(LiveWorker {
                id: id.to_string(),
                updated,
                status,
            })
        })?;
        Ok(all)
    }

    /// Calls `visit` with the id, the last write and what the record says,
    /// for every live worker.
    fn visit_live(&self, mut visit: impl FnMut(&str, SystemTime, Read<'_>)) -> Result<()> {
        let own_id = self.current_id();
        let mut buf = Vec::new();
        reader::scan(&self.dir, Some(&own_id), &|_| false, |file| {
            let updated = reader::mtime(&file.stat);
            // Most files never written are skipped without a read.
            if file.stat.st_size == 0 {
                return visit(file.id, updated, Read::NotYet);
            }
            let status = reader::read_status(file.fd, &mut buf, self.max_status_len);
            visit(file.id, updated, status);
        })
    }

    /// Removes the status files of dead workers. Fails on a read-only
    /// handle (see [`Scoreboard::read_only`]).
    pub fn cleanup(&self) -> Result<()> {
        self.dir.check_writable()?;
        reader::scan(&self.dir, Some(&self.current_id()), &|_| false, |_| {})
    }

    /// Removes the files of dead workers, passing over the ids for which
    /// `known` is true without opening them: for a supervisor, which watches
    /// its own workers through [`WatchedFile`]s, this is one directory
    /// listing plus the cost of the files it does not know.
    pub fn cleanup_unknown(&self, known: impl Fn(&str) -> bool) -> Result<()> {
        self.dir.check_writable()?;
        reader::scan(&self.dir, Some(&self.current_id()), &known, |_| {})
    }

    /// Removes `status_<id>.tmp`, what a process that died in the middle of
    /// registering (between creating its file and renaming it into place)
    /// left: for a supervisor that has reaped process `id`, since nobody
    /// else registers under that name. No such file is no error.
    pub fn remove_unfinished(&self, id: &str) -> Result<()> {
        self.dir.check_writable()?;
        let name = format!("status_{id}.tmp");
        let path = self.dir.join(&name);
        let c_name = std::ffi::CString::new(name).map_err(|_| {
            error::io_error("remove", &path, std::io::ErrorKind::InvalidInput.into())
        })?;
        match sys::unlinkat(self.dir.fd(), &c_name) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(error::io_error("remove", path, e))
            }
            _ => Ok(()),
        }
    }

    /// Opens worker `id`'s status file for watching (see [`WatchedFile`]).
    pub fn watch(&self, id: &str) -> Result<WatchedFile> {
        WatchedFile::open(&self.dir, id, self.max_status_len)
    }

    /// Removes `file`'s entry, if the name still refers to that file (and not
    /// to a successor that reused the id) and the handle is not read-only.
    /// Call it once its worker is gone.
    pub fn remove(&self, file: &WatchedFile) {
        file.remove(&self.dir)
    }

    /// What a child process needs to put itself on the board between `fork`
    /// and `exec` without allocating. `None` with a custom worker id, which
    /// only the id function can compute, and on a read-only handle.
    pub fn fork_registrar(&self) -> Option<ForkRegistrar> {
        let usable = self.worker_id.is_none() && self.dir.read_only().is_none();
        usable.then_some(ForkRegistrar {
            dir_fd: self.dir.fd(),
        })
    }
}

/// Writes a status record to an open status file, as `update` does: for a
/// process that was handed the descriptor of a worker's file and has no
/// scoreboard of its own (`prefork report`, run by a shell worker).
pub fn write_status_to(fd: std::os::fd::BorrowedFd<'_>, status: &[u8]) -> Result<()> {
    use std::os::fd::AsRawFd;
    writer::write_record(fd.as_raw_fd(), status).map_err(|e| match e {
        writer::WriteError::TooLarge(len) => Error::StatusTooLarge { len },
        writer::WriteError::Io(e) => error::io_error(
            "write status to descriptor",
            format!("{}", fd.as_raw_fd()),
            e,
        ),
    })
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            file.close(&self.dir);
        }
    }
}
