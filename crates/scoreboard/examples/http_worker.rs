//! An example HTTP worker: it serves on the listening socket prefork hands it
//! and says on the scoreboard which request it is serving. Run it with
//!
//!     cargo build --release --bins --examples
//!     target/release/prefork --listen 127.0.0.1:8080 --ready report -w 4 \
//!         -- target/release/examples/http_worker
//!     curl -v localhost:8080/ localhost:8080/   # two answers on one connection
//!     curl localhost:8080/sleep/5               # the board shows "GET /sleep/5"
//!
//! The socket (TCP or unix) is descriptor 3, announced by `LISTEN_FDS` and
//! `LISTEN_PID` (systemd's socket activation), or else by the first entry of
//! `SERVER_STARTER_PORT`. The first status, `idle`, written once the socket
//! is ready, tells prefork the worker is ready (`--ready report`); idle, the
//! worker writes it again every second, a heartbeat for the stuck timeout.
//!
//! HTTP/1.1 with keep-alive, a thread per connection, at most 64 at once.
//! `HTTP_WORKER_CONNECTIONS=N` lowers that limit; with 1 it is a classic
//! prefork worker (Apache's prefork with `KeepAlive Off`): one connection
//! at a time, closed after its response, so that a pool that sizes itself
//! from the board sees one busy worker per request in flight.
//! `GET /` answers `hello from pid P slot S version V` (V is `APP_VERSION`),
//! `GET /sleep/N` the same after N seconds; other paths get 404; a request
//! head over 8 KiB, malformed, or other than a GET without a body gets 400. On SIGTERM, SIGINT or SIGQUIT it
//! closes its copy of the listener at once (the master keeps the socket open,
//! so the connections queued there go to other workers), finishes the
//! requests in hand, answers at most one more request per keep-alive
//! connection, with `Connection: close`, if it comes within 2 s, and exits 0.
//!
//! Only std, the scoreboard crate, and libc for the signal handler and poll.
//! Run outside prefork, it says so in one line and exits 2.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use prefork_scoreboard::{Error, Scoreboard};

const MAX_CONNECTIONS: usize = 64;
const MAX_HEAD: usize = 8 * 1024;
/// How soon a thread waiting on a socket notices a stop.
const TICK: Duration = Duration::from_millis(100);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// After a stop: how long a connection may take to send one last request,
/// and how long we wait for all of them to finish.
const LAST_CALL: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(5);
const USAGE: &str = "http_worker: run me under prefork: \
    prefork --listen 127.0.0.1:8080 -- target/release/examples/http_worker";

/// Set by the handler of SIGTERM, SIGINT and SIGQUIT.
static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let fd = match inherited_socket() {
        Ok(fd) => fd,
        Err(why) => {
            eprintln!("{USAGE} ({why})");
            return ExitCode::from(2);
        }
    };
    let result = match Scoreboard::from_env() {
        Err(Error::NotUnderPrefork) => {
            eprintln!("{USAGE} (PREFORK_STATUS_FD is not set)");
            return ExitCode::from(2);
        }
        Err(e) => Err(e.into()),
        Ok(board) => run(fd, board),
    };
    if let Err(e) = result {
        eprintln!("http_worker: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The descriptor of the listening socket: 3 when `LISTEN_FDS` (at least 1)
/// and `LISTEN_PID` (our pid) say so, else the first of `SERVER_STARTER_PORT`
/// (`127.0.0.1:8080=3;...`). Like sd_listen_fds(3), it unsets the `LISTEN_*`
/// variables, which would mislead a program we started.
fn inherited_socket() -> Result<RawFd, String> {
    let var = |name| std::env::var(name).ok();
    let (fds, pid) = (var("LISTEN_FDS"), var("LISTEN_PID"));
    for name in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(name); // no other thread runs yet
    }
    let count: u32 = fds.as_deref().and_then(|n| n.parse().ok()).unwrap_or(0);
    if count >= 1 && pid == Some(std::process::id().to_string()) {
        return Ok(3);
    }
    let Some(ports) = var("SERVER_STARTER_PORT") else {
        return Err(match fds {
            None => "LISTEN_FDS is not set".into(),
            Some(fds) => format!(
                "LISTEN_FDS={fds} is for LISTEN_PID={}, not us",
                pid.unwrap_or_default()
            ),
        });
    };
    let first = ports.split(';').next().and_then(|p| p.rsplit_once('='));
    (first.and_then(|(_, fd)| fd.parse().ok()))
        .ok_or_else(|| format!("SERVER_STARTER_PORT={ports:?} names no descriptor"))
}

/// An accepted connection, TCP or unix.
trait Conn: Read + Write + AsRawFd + Send {}
impl<T: Read + Write + AsRawFd + Send> Conn for T {}

/// The inherited socket, TCP or unix.
trait Listener: AsRawFd {
    fn accept_conn(&self) -> io::Result<Box<dyn Conn>>;
}

impl Listener for TcpListener {
    fn accept_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.accept()?.0))
    }
}

impl Listener for UnixListener {
    fn accept_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.accept()?.0))
    }
}

/// Takes descriptor `fd` as our listener: non-blocking, since another worker
/// may take the connection poll() announced. (O_NONBLOCK is the socket's,
/// shared with every worker: they all poll before they accept.)
fn adopt(fd: RawFd) -> io::Result<Box<dyn Listener>> {
    // SAFETY: the descriptor is a socket handed down to this process, which
    // nothing else here owns.
    let unix = UnixListener::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // std checks the address family: a TCP socket has no unix address.
    if unix.local_addr().is_ok() {
        unix.set_nonblocking(true)?;
        return Ok(Box::new(unix));
    }
    let tcp = TcpListener::from(OwnedFd::from(unix));
    let named = tcp.local_addr().and_then(|_| tcp.set_nonblocking(true));
    named.map_err(|e| io::Error::new(e.kind(), format!("descriptor {fd}: {e}")))?;
    Ok(Box::new(tcp))
}

/// Waits up to TICK for `fd` to be readable; false on timeout or a signal.
fn readable(fd: RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and a count of 1.
    unsafe { libc::poll(&mut pollfd, 1, TICK.as_millis() as libc::c_int) > 0 }
}

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, SeqCst);
}

fn handle_stop_signals() -> io::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: sigaction is plain data; all zeroes: an empty mask, no flags.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is initialised, and its handler only stores to an
        // atomic, which is async-signal-safe.
        if unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What the worker says on the board: `idle`, or the oldest request in hand.
struct Board {
    scoreboard: Scoreboard,
    in_hand: Vec<String>,
    written: Instant,
}

impl Board {
    fn write(&mut self) {
        let status = self.in_hand.first().map_or("idle", String::as_str);
        if let Err(e) = self.scoreboard.update(status.as_bytes()) {
            eprintln!("http_worker: {e}");
        }
        self.written = Instant::now();
    }

    fn begin(&mut self, request: &str) {
        self.in_hand.push(request.to_string());
        self.write();
    }

    fn end(&mut self, request: &str) {
        if let Some(i) = self.in_hand.iter().position(|r| r == request) {
            self.in_hand.remove(i);
        }
        self.write();
    }

    fn heartbeat(&mut self) {
        if self.in_hand.is_empty() && self.written.elapsed() >= Duration::from_secs(1) {
            self.write();
        }
    }
}

/// `HTTP_WORKER_CONNECTIONS`: how many connections the worker serves at
/// once.
fn max_connections() -> Result<usize, String> {
    match std::env::var("HTTP_WORKER_CONNECTIONS") {
        Err(_) => Ok(MAX_CONNECTIONS),
        Ok(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(n),
            _ => Err(format!(
                "HTTP_WORKER_CONNECTIONS={text:?}: expected a number from 1 to {MAX_CONNECTIONS}"
            )),
        },
    }
}

/// What the connection threads share.
struct Worker {
    board: Mutex<Board>,
    connections: AtomicUsize,
    /// `HTTP_WORKER_CONNECTIONS`, at most [`MAX_CONNECTIONS`].
    max_connections: usize,
    hello: String,
    /// `X-Worker-Pid` and `X-App-Version`.
    headers: String,
}

fn run(fd: RawFd, scoreboard: Scoreboard) -> Result<(), Box<dyn std::error::Error>> {
    let listener = adopt(fd)?;
    handle_stop_signals()?;
    let pid = std::process::id();
    let slot = std::env::var("PREFORK_WORKER_SLOT").unwrap_or_else(|_| "?".into());
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| "1".into());
    let (in_hand, written) = (Vec::new(), Instant::now());
    let worker = Arc::new(Worker {
        board: Mutex::new(Board {
            scoreboard,
            in_hand,
            written,
        }),
        connections: AtomicUsize::new(0),
        max_connections: max_connections()?,
        hello: format!("hello from pid {pid} slot {slot} version {version}\n"),
        headers: format!("X-Worker-Pid: {pid}\r\nX-App-Version: {version}\r\n"),
    });
    worker.board().write(); // the first "idle": ready
    while !STOP.load(SeqCst) {
        worker.board().heartbeat();
        if worker.connections.load(SeqCst) >= worker.max_connections {
            // Soon free again when one connection is all it takes.
            std::thread::sleep(match worker.max_connections {
                1 => Duration::from_millis(1),
                _ => TICK,
            });
            continue;
        }
        if !readable(listener.as_raw_fd()) {
            continue;
        }
        match listener.accept_conn() {
            Ok(conn) => {
                worker.connections.fetch_add(1, SeqCst);
                let worker = Arc::clone(&worker);
                std::thread::spawn(move || {
                    worker.serve(conn);
                    worker.connections.fetch_sub(1, SeqCst);
                });
            }
            // Another worker took it, or the client gave up.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::ConnectionAborted
                ) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                eprintln!("http_worker: {e}");
                std::thread::sleep(TICK);
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(listener); // what is queued there now goes to the other workers
    let deadline = Instant::now() + GRACE;
    while worker.connections.load(SeqCst) > 0 && Instant::now() < deadline {
        worker.board().heartbeat();
        std::thread::sleep(Duration::from_millis(20));
    }
    match worker.connections.load(SeqCst) {
        0 => Ok(()),
        n => Err(format!("{n} connection(s) still busy {GRACE:?} after the stop").into()),
    }
}

impl Worker {
    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers requests until the client closes or asks to, or we stop.
    fn serve(&self, mut conn: Box<dyn Conn>) {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut *conn, &mut buf) {
            let Some(Request { line, keep_alive }) = parse(&head) else {
                let _ = self.respond(&mut *conn, "400 Bad Request", "bad request\n", false);
                return;
            };
            self.board().begin(&line);
            let path = line.split(' ').nth(1).unwrap_or_default();
            let route = path.split('?').next().unwrap_or_default();
            let (status, body) = match route.strip_prefix("/sleep/").map(str::parse) {
                _ if route == "/" => ("200 OK", self.hello.as_str()),
                Some(Ok(seconds)) => {
                    std::thread::sleep(Duration::from_secs(seconds));
                    ("200 OK", self.hello.as_str())
                }
                _ => ("404 Not Found", "not found\n"),
            };
            // Once we stop, every answer closes its connection.
            let keep_alive = keep_alive && !STOP.load(SeqCst) && self.max_connections > 1;
            let sent = self.respond(&mut *conn, status, body, keep_alive);
            self.board().end(&line);
            if sent.is_err() || !keep_alive {
                return;
            }
        }
    }

    fn respond(&self, conn: &mut dyn Conn, status: &str, body: &str, keep: bool) -> io::Result<()> {
        let (len, headers) = (body.len(), &self.headers);
        let connection = if keep { "keep-alive" } else { "close" };
        conn.write_all(
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len}\r\n\
                 {headers}Connection: {connection}\r\n\r\n{body}"
            )
            .as_bytes(),
        )
    }
}

/// Reads the next request head (or, past MAX_HEAD, what came, for `parse`
/// to refuse); `None` when the client closed, or is idle too long, or sent
/// no new request within LAST_CALL of a stop. Bytes past the head stay in
/// `buf`: the start of the next request.
fn read_head(conn: &mut dyn Conn, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut deadline = Instant::now() + KEEP_ALIVE;
    let mut stopping = false;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..end + 4).collect());
        }
        if buf.len() > MAX_HEAD {
            return Some(std::mem::take(buf));
        }
        if STOP.load(SeqCst) && !stopping {
            stopping = true;
            deadline = deadline.min(Instant::now() + LAST_CALL);
        }
        if Instant::now() >= deadline {
            return None;
        }
        if readable(conn.as_raw_fd()) {
            let mut chunk = [0; 4096];
            match conn.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// A GET request, as far as this worker cares.
struct Request {
    /// `GET /path`, what the board shows.
    line: String,
    keep_alive: bool,
}

/// `None` for a head that is too large, malformed, not a GET, or announces
/// a body (which this worker does not read).
fn parse(head: &[u8]) -> Option<Request> {
    let mut lines = std::str::from_utf8(head).ok()?.split("\r\n");
    let words: Vec<&str> = lines.next()?.split(' ').collect();
    let ["GET", path, version @ ("HTTP/1.0" | "HTTP/1.1")] = words[..] else {
        return None;
    };
    if head.len() > MAX_HEAD || !path.starts_with('/') {
        return None;
    }
    let mut keep_alive = version == "HTTP/1.1";
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "transfer-encoding" => return None,
            "content-length" if value != "0" => return None,
            "connection" if value.split(',').any(|o| o.trim() == "close") => keep_alive = false,
            "connection" if value.split(',').any(|o| o.trim() == "keep-alive") => keep_alive = true,
            _ => {}
        }
    }
    let line = format!("GET {path}");
    Some(Request { line, keep_alive })
}
