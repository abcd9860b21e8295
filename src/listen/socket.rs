//! One listening socket: bound by the master (TCP with `SO_REUSEADDR`, or
//! a unix socket file with its mode), or inherited through socket
//! activation. Workers get duplicates; the master's copy closes when the
//! last spec that lists it is gone.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::ListenAddr;

/// A listening socket the master holds for its workers.
pub struct Listener {
    /// As configured (or, for an inherited one, as found).
    pub addr: ListenAddr,
    /// Where it is bound: the port the kernel chose for a port of 0.
    pub bound: ListenAddr,
    /// Its `LISTEN_FDNAMES` name.
    pub name: String,
    /// Inherited through socket activation rather than bound here.
    pub inherited: bool,
    socket: Socket,
    /// The socket file we created, with its identity: removed when this
    /// listener goes, if it is still that file.
    created: Option<(PathBuf, u64, u64)>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listener({}, fd {})", self.bound, self.fd())
    }
}

/// How new sockets are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindOptions {
    pub backlog: i32,
    /// The mode of a unix socket file.
    pub mode: u32,
}

/// Why an address cannot be listened on: it names the address.
#[derive(Debug)]
pub struct ListenError {
    pub addr: String,
    pub why: String,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.why)
    }
}

impl std::error::Error for ListenError {}

/// The longest path a unix socket address holds (`sun_path` less its NUL).
const MAX_UNIX_PATH: usize = 107;

impl Listener {
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Binds and listens on `addr`.
    pub fn bind(addr: &ListenAddr, options: BindOptions) -> Result<Listener, ListenError> {
        let fail = |why: String| ListenError {
            addr: addr.to_string(),
            why,
        };
        let (socket, created) = match addr {
            ListenAddr::Tcp(at) => (
                bind_tcp(at, options).map_err(|e| fail(explain(addr, &e)))?,
                None,
            ),
            ListenAddr::Unix(path) => {
                let (socket, id) = bind_unix(path, options).map_err(fail)?;
                (socket, Some(id))
            }
        };
        let bound = local_addr(&socket).unwrap_or_else(|_| addr.clone());
        Ok(Listener {
            addr: addr.clone(),
            name: bound.fd_name(),
            bound,
            inherited: false,
            socket,
            created,
        })
    }

    /// A socket passed to us at `fd` (socket activation), checked to be a
    /// listening stream socket. Made close-on-exec: workers get it through
    /// the spec, like any other.
    pub fn inherited(fd: RawFd, name: Option<String>) -> Result<Listener, String> {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(format!("descriptor {fd} is not open"));
        }
        // SAFETY: the descriptor is open and was handed to us (LISTEN_FDS
        // says so); from here the Socket owns it.
        let socket = unsafe { Socket::from(OwnedFd::from_raw_fd(fd)) };
        let listening = socket.r#type().ok() == Some(Type::STREAM) && accepts(fd);
        if !listening {
            std::mem::forget(socket); // not ours to close: say so and stop
            return Err(format!("descriptor {fd} is not a listening stream socket"));
        }
        socket
            .set_cloexec(true)
            .map_err(|e| format!("descriptor {fd}: {e}"))?;
        let bound = local_addr(&socket)
            .map_err(|e| format!("descriptor {fd}: cannot read its address: {e}"))?;
        Ok(Listener {
            addr: bound.clone(),
            name: name.unwrap_or_else(|| bound.fd_name()),
            bound,
            inherited: true,
            socket,
            created: None,
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.created {
            // Only if it is still the file we made: another master may
            // have replaced it since.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// `SO_ACCEPTCONN`: the socket is listening.
fn accepts(fd: RawFd) -> bool {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    ret == 0 && value != 0
}

fn local_addr(socket: &Socket) -> io::Result<ListenAddr> {
    let addr = socket.local_addr()?;
    if let Some(inet) = addr.as_socket() {
        return Ok(ListenAddr::Tcp(inet));
    }
    match addr.as_pathname() {
        Some(path) => Ok(ListenAddr::Unix(path.to_path_buf())),
        None => Err(io::Error::other("an unnamed or abstract unix socket")),
    }
}

fn bind_tcp(at: &std::net::SocketAddr, options: BindOptions) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(*at), Type::STREAM, None)?;
    // A restarted master binds again at once, whatever TIME_WAIT the
    // previous one left.
    socket.set_reuse_address(true)?;
    socket.bind(&SockAddr::from(*at))?;
    socket.listen(options.backlog)?;
    Ok(socket)
}

/// What a failed TCP bind means, and what to do.
fn explain(addr: &ListenAddr, e: &io::Error) -> String {
    let port = match addr {
        ListenAddr::Tcp(at) => at.port(),
        ListenAddr::Unix(_) => 0,
    };
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "address already in use: another process listens there (`ss -ltnp 'sport = :{port}'` names it)"
        ),
        Some(libc::EACCES) if port < 1024 => format!(
            "permission denied: port {port} is below 1024, which needs root or CAP_NET_BIND_SERVICE \
             (or a lower net.ipv4.ip_unprivileged_port_start)"
        ),
        Some(libc::EADDRNOTAVAIL) => {
            "no interface of this machine has that address".to_string()
        }
        _ => e.to_string(),
    }
}

fn bind_unix(path: &Path, options: BindOptions) -> Result<(Socket, (PathBuf, u64, u64)), String> {
    let len = path.as_os_str().as_bytes().len();
    if len > MAX_UNIX_PATH {
        return Err(format!(
            "the path is {len} bytes long, and a unix socket's path holds at most {MAX_UNIX_PATH}: choose a shorter one"
        ));
    }
    clear_stale(path)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| e.to_string())?;
    let address = SockAddr::unix(path).map_err(|e| e.to_string())?;
    // The file is created with the mode asked, never looser for a moment:
    // the umask applies to bind's file. (The master is single-threaded.)
    // SAFETY: umask only swaps the process's mask.
    let old = unsafe { libc::umask(0o777 & !options.mode as libc::mode_t) };
    let bound = socket.bind(&address);
    // SAFETY: as above, restoring it.
    unsafe { libc::umask(old) };
    bound.map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES) => format!(
            "permission denied: the master cannot create files in {}",
            path.parent().unwrap_or(Path::new("/")).display()
        ),
        Some(libc::ENOENT) => format!(
            "directory {} does not exist",
            path.parent().unwrap_or(Path::new("/")).display()
        ),
        Some(libc::EADDRINUSE) => "another process created a socket there just now".to_string(),
        _ => e.to_string(),
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let created = (path.to_path_buf(), meta.dev(), meta.ino());
    // Exactly the mode asked, whatever bits the umask could not add.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(options.mode));
    if let Err(e) = socket.listen(options.backlog) {
        let _ = std::fs::remove_file(path);
        return Err(e.to_string());
    }
    Ok((socket, created))
}

/// Makes way for a new socket at `path`: nothing there, or a stale socket
/// that nobody accepts on (left by a master that died), which is removed.
/// A live socket, or a file that is not a socket, is refused.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot look at the path: {e}")),
        Ok(meta) => meta,
    };
    if !meta.file_type().is_socket() {
        return Err(
            "a file that is not a socket is there: remove it, or choose another path".to_string(),
        );
    }
    // A non-blocking connect: a full backlog answers EAGAIN at once
    // (live), never a wait.
    let probe =
        Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).map_err(|e| e.to_string())?;
    let address = SockAddr::unix(path).map_err(|e| e.to_string())?;
    match probe.connect(&address) {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            log::info!(
                "removing the stale socket {} (nobody accepts on it)",
                path.display()
            );
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(
            "a socket is there that the master may not connect to (permission denied): remove it"
                .to_string(),
        ),
        Ok(()) | Err(_) => Err(
            "another process accepts connections on this socket: stop it, or choose another path"
                .to_string(),
        ),
    }
}

/// The kernel's ceiling on a listen backlog (`net.core.somaxconn`): what
/// the backlog defaults to. A read of a tiny procfs file, bounded.
pub fn default_backlog() -> i32 {
    let read = || -> Option<i32> {
        use std::io::Read;
        let mut buf = [0u8; 32];
        let n = std::fs::File::open("/proc/sys/net/core/somaxconn")
            .ok()?
            .read(&mut buf)
            .ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    };
    read().filter(|&n| n > 0).unwrap_or(4096)
}
