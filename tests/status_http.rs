//! The HTTP status server (issue 13) on real loopback sockets: a
//! `StatusServer` in a thread of its own, driven by a small poll loop over
//! its `interest()` as the master's loop drives it, with a fake view, and
//! std clients. Each test holds the fork lock: a child forked by another
//! test meanwhile would keep a copy of the server's connections, and the
//! closes these tests wait for would not reach the client.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use prefork::http::{
    respond, Activity, Bounds, Counts, Histogram, Limits, PoolView, SlotView, StatusServer,
};
use prefork::listen::{BindOptions, ListenAddr, Listener};

use crate::util;

/// A status server running in a thread until dropped.
struct Served {
    at: ListenAddr,
    /// Connections open now, and the most ever open at once.
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    // Last: the lock outlives every socket of the test.
    _forking: MutexGuard<'static, ()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.write_all(b"x");
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Served {
    fn tcp(&self) -> SocketAddr {
        match &self.at {
            ListenAddr::Tcp(at) => *at,
            ListenAddr::Unix(_) => panic!("a unix socket"),
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.tcp()).expect("connect to the status server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn view() -> PoolView {
    let mut latency = Histogram::new(&[0.001, 0.01, 0.1, 1.0]);
    latency.observe(0.0007);
    latency.observe(0.003);
    PoolView {
        master_pid: 4321,
        phase: "running",
        uptime: Duration::from_secs(90),
        target: 3,
        min_workers: 1,
        // A self-sizing pool, so that promtool sees those metrics too.
        activity: Activity {
            idle: 0,
            busy: 1,
            starting: 2,
        },
        bounds: Some(Bounds {
            min_workers: 1,
            max_workers: 8,
            min_spare: 1,
            max_spare: 3,
        }),
        listen: vec!["127.0.0.1:8080".into()],
        scoreboard: "/run/prefork/board".into(),
        slots: vec![
            SlotView {
                slot: 0,
                pid: Some(1001),
                state: "running",
                restarts: 1,
                last_exit: Some("exit 1".into()),
                uptime: Some(Duration::from_secs(30)),
                since_update: Some(Duration::from_millis(250)),
                status: Some(b"GET /a <b>\n\xff".to_vec()),
            },
            SlotView {
                slot: 1,
                pid: Some(1002),
                state: "starting",
                uptime: Some(Duration::from_secs(1)),
                ..SlotView::default()
            },
            SlotView {
                slot: 2,
                state: "empty",
                restarts: 4,
                last_exit: Some("signal 9".into()),
                ..SlotView::default()
            },
        ],
        counts: Counts {
            spawned: 7,
            exits: vec![("exit_error", 1), ("signal", 4)],
            stuck_kills: 0,
            spawn_failures: 0,
            reloads: vec![("ok", 1)],
            output_dropped: 0,
            grown: 2,
            shrunk: 1,
        },
        respawn_latency: latency,
        board_check: Histogram::new(&[0.0001, 0.001, 0.01]),
    }
}

fn serve(limits: Limits) -> Served {
    serve_on(&"127.0.0.1:0".parse().unwrap(), limits, view())
}

/// Binds `addr`, and serves `view` on it with `limits` from a thread that
/// polls the way the master does: the server's interest and a wake-up
/// socket, with the server's deadline as the timeout.
fn serve_on(addr: &ListenAddr, limits: Limits, view: PoolView) -> Served {
    let forking = util::fork_lock();
    let options = BindOptions {
        backlog: 512,
        mode: 0o600,
    };
    let listener = Arc::new(Listener::bind(addr, options).expect("bind the status listener"));
    let at = listener.bound.clone();
    let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let (wake, woken) = UnixStream::pair().unwrap();
    let thread = {
        let (open, most, stop) = (open.clone(), most.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut server = StatusServer::new(listener, limits);
            while !stop.load(Ordering::Relaxed) {
                let interest = server.interest();
                // SAFETY: the server's descriptors and the wake-up socket
                // stay open for the whole call.
                let borrow = |fd| unsafe { BorrowedFd::borrow_raw(fd) };
                let mut fds: Vec<PollFd> = interest
                    .iter()
                    .map(|&(fd, events)| PollFd::new(borrow(fd), events))
                    .collect();
                fds.push(PollFd::new(borrow(woken.as_raw_fd()), PollFlags::POLLIN));
                let timeout = server.deadline().map_or(PollTimeout::NONE, |at| {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis() + 1;
                    PollTimeout::try_from(ms.min(10_000) as i32).unwrap()
                });
                let _ = nix::poll::poll(&mut fds, timeout);
                let now = Instant::now();
                let fired: Vec<_> = interest
                    .iter()
                    .zip(&fds)
                    .filter_map(|(&(fd, _), p)| Some((fd, p.revents().filter(|r| !r.is_empty())?)))
                    .collect();
                for (fd, revents) in fired {
                    server.ready(fd, revents, now, &mut |req| respond(req, &view));
                    most.fetch_max(server.connections(), Ordering::SeqCst);
                }
                server.expire(Instant::now());
                open.store(server.connections(), Ordering::SeqCst);
            }
        })
    };
    Served {
        at,
        open,
        most,
        stop,
        wake,
        thread: Some(thread),
        _forking: forking,
    }
}

/// One response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response (without a body for a HEAD's).
fn read_answer(reader: &mut impl BufRead, head: bool) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("a status line");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a header line");
        let trimmed = line.trim_end_matches("\r\n");
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(": ").expect("name: value");
        headers.push((name.to_string(), value.to_string()));
    }
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    let len: usize = answer
        .header("Content-Length")
        .expect("Content-Length, always")
        .parse()
        .unwrap();
    if !head {
        answer.body.resize(len, 0);
        reader.read_exact(&mut answer.body).expect("the body");
    }
    answer
}

/// Sends `raw` on a new connection and reads one response.
fn ask(served: &Served, raw: &str) -> (Answer, BufReader<TcpStream>) {
    let mut stream = served.connect();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader, raw.starts_with("HEAD"));
    (answer, reader)
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// Whether the server closed the connection: the next read sees its end
/// (or a reset) rather than bytes.
fn closed_by_server(reader: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    match reader.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

#[test]
fn each_endpoint_answers_with_its_content_type() {
    let served = serve(Limits::default());
    let (text, _) = ask(&served, &get("/status"));
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    let body = text.text();
    assert!(
        body.contains("master pid=4321 running, workers=2/3"),
        "{body}"
    );
    // Escaped as `prefork status` escapes a status.
    assert!(body.contains("GET /a <b>\\n\\xff"), "{body}");

    let (html, _) = ask(
        &served,
        "GET /status HTTP/1.1\r\nAccept: text/html,*/*;q=0.8\r\n\r\n",
    );
    assert_eq!(
        html.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let page = html.text();
    assert!(page.contains("GET /a &lt;b&gt;\\n\\xff"), "{page}");
    assert!(!page.contains("<script"), "{page}");

    let (json, _) = ask(&served, &get("/status.json?pretty"));
    assert_eq!(json.header("Content-Type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    assert_eq!(doc["master_pid"], 4321);
    assert_eq!(doc["slots"].as_array().unwrap().len(), 3);
    assert_eq!(doc["slots"][0]["status"], "GET /a <b>\n\u{fffd}");
    assert!(doc["slots"][0]["status_base64"].is_string());
    assert_eq!(doc["slots"][2]["state"], "empty");

    let (metrics, _) = ask(&served, &get("/metrics"));
    assert_eq!(
        metrics.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let exposition = metrics.text();
    assert!(
        exposition.contains("prefork_workers{state=\"starting\"} 1"),
        "{exposition}"
    );
    assert!(
        !exposition.contains("1001"),
        "a pid as a label: {exposition}"
    );

    let (health, _) = ask(&served, &get("/healthz"));
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
}

#[test]
fn healthz_fails_below_min_workers() {
    let mut view = view();
    view.min_workers = 3;
    let served = serve_on(&"127.0.0.1:0".parse().unwrap(), Limits::default(), view);
    let (health, _) = ask(&served, &get("/healthz"));
    assert_eq!(health.status, 503);
    let reason = health.text();
    assert_eq!(reason.lines().count(), 1, "{reason}");
    assert!(reason.contains("2 live worker(s)"), "{reason}");
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let served = serve(Limits::default());
    let (first, mut reader) = ask(&served, &get("/healthz"));
    assert_eq!(first.status, 200);
    assert_eq!(first.header("Connection"), Some("keep-alive"));
    reader
        .get_mut()
        .write_all(get("/status.json").as_bytes())
        .unwrap();
    let second = read_answer(&mut reader, false);
    assert_eq!(second.status, 200);
    assert_eq!(served.open(), 1, "still the one connection");
}

#[test]
fn an_http10_request_closes_unless_kept_alive() {
    let served = serve(Limits::default());
    let (answer, mut reader) = ask(&served, "GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(answer.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
    let (answer, mut reader) = ask(
        &served,
        "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(answer.header("Connection"), Some("keep-alive"));
    reader
        .get_mut()
        .write_all(get("/healthz").as_bytes())
        .unwrap();
    assert_eq!(read_answer(&mut reader, false).status, 200);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let served = serve(Limits {
        max_pipelined: 4,
        ..Limits::default()
    });
    let paths = ["/healthz", "/status.json", "/nope", "/metrics"];
    // Fifty requests in one write: more than answered per turn.
    let all: String = (0..50).map(|i| get(paths[i % 4])).collect();
    let mut stream = served.connect();
    stream.write_all(all.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..50 {
        let answer = read_answer(&mut reader, false);
        let expected = match paths[i % 4] {
            "/healthz" => (200, "text/plain; charset=utf-8"),
            "/status.json" => (200, "application/json"),
            "/nope" => (404, "text/plain; charset=utf-8"),
            _ => (200, "text/plain; version=0.0.4; charset=utf-8"),
        };
        assert_eq!(
            (answer.status, answer.header("Content-Type").unwrap()),
            expected,
            "answer {i}"
        );
    }
}

#[test]
fn head_sends_the_headers_only() {
    let served = serve(Limits::default());
    let (head, mut reader) = ask(&served, "HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    let len: usize = head.header("Content-Length").unwrap().parse().unwrap();
    assert!(len > 100);
    // What follows on the connection is the next answer, not a body.
    reader
        .get_mut()
        .write_all(get("/healthz").as_bytes())
        .unwrap();
    let next = read_answer(&mut reader, false);
    assert_eq!((next.status, next.text().as_str()), (200, "ok\n"));
}

#[test]
fn other_methods_get_405_with_allow() {
    let served = serve(Limits::default());
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let (answer, _) = ask(&served, &format!("{method} /status HTTP/1.1\r\n\r\n"));
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("Allow"), Some("GET, HEAD"), "{method}");
    }
}

#[test]
fn unknown_paths_get_404() {
    let served = serve(Limits::default());
    for path in ["/", "/status/", "/metricsx", "/../etc/passwd"] {
        let (answer, _) = ask(&served, &get(path));
        assert_eq!(answer.status, 404, "{path}");
    }
}

#[test]
fn a_9kib_head_gets_431_and_a_close() {
    let served = serve(Limits::default());
    let raw = format!(
        "GET /status HTTP/1.1\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    );
    let (answer, mut reader) = ask(&served, &raw);
    assert_eq!(answer.status, 431);
    assert_eq!(answer.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
}

#[test]
fn garbage_gets_400_and_a_close() {
    let served = serve(Limits::default());
    let (answer, mut reader) = ask(&served, "\x16\x03\x01\x02\x00 hello\r\n\r\n");
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("Connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
    // A body: nothing here takes one.
    let (answer, mut reader) = ask(
        &served,
        "GET /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(answer.status, 400);
    assert!(closed_by_server(&mut reader));
}

/// A client that connected and sent nothing, one that sent half a request,
/// one that pipelines requests and never reads: none of them delays
/// another client's answer.
#[test]
fn slow_and_silent_clients_do_not_delay_another() {
    let served = serve(Limits {
        idle_timeout: Duration::from_secs(30),
        ..Limits::default()
    });
    let _silent = served.connect();
    let mut half = served.connect();
    half.write_all(b"GET /status HTTP/1.1\r\nHost: te").unwrap();
    let mut deaf = served.connect();
    deaf.set_nonblocking(true).unwrap();
    let request = get("/status.json");
    let mut written = 0;
    // Until its socket buffers are full: the server stops reading it
    // while an answer waits.
    let full_by = util::deadline();
    loop {
        match deaf.write(request.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < full_by,
            "the deaf client's buffers never filled"
        );
    }
    assert!(written > 0);
    assert!(util::wait_until(util::deadline(), || served.open() == 3));
    let start = Instant::now();
    let (answer, _) = ask(&served, &get("/healthz"));
    let took = start.elapsed();
    assert_eq!(answer.status, 200);
    assert!(
        took < Duration::from_secs(2),
        "answered after {took:?}, with three slow clients connected"
    );
}

#[test]
fn the_idle_timeout_closes_silent_half_sent_and_deaf_connections() {
    let timeout = Duration::from_millis(300);
    let served = serve(Limits {
        idle_timeout: timeout,
        ..Limits::default()
    });
    let start = Instant::now();
    let mut silent = served.connect();
    let mut half = served.connect();
    half.write_all(b"GET /status HTTP/1.1\r\n").unwrap();
    let mut deaf = served.connect();
    deaf.set_nonblocking(true).unwrap();
    let request = get("/status.json");
    while deaf.write(request.as_bytes()).is_ok() {}
    deaf.set_nonblocking(false).unwrap();
    assert!(closed_by_server(&mut silent), "the silent client");
    assert!(start.elapsed() >= timeout, "closed before the timeout");
    assert!(closed_by_server(&mut half), "the half-sent request");
    assert!(
        util::wait_until(util::deadline(), || served.open() == 0),
        "{} connection(s) still open",
        served.open()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_flood_of_200_connections_is_capped_and_all_are_served() {
    let limits = Limits::default();
    let served = serve(limits);
    let mut clients: Vec<TcpStream> = (0..200).map(|_| served.connect()).collect();
    assert!(
        util::wait_until(util::deadline(), || served.open() == limits.max_connections),
        "the server holds {} connections",
        served.open()
    );
    for client in &mut clients {
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    for (i, client) in clients.into_iter().enumerate() {
        let mut reader = BufReader::new(client);
        let answer = read_answer(&mut reader, false);
        assert_eq!(answer.status, 200, "client {i}");
        assert_eq!(answer.header("Connection"), Some("close"), "client {i}");
    }
    let most = served.most.load(Ordering::SeqCst);
    assert!(
        most <= limits.max_connections,
        "{most} connections at once, over the cap of {}",
        limits.max_connections
    );
}

#[test]
fn a_unix_socket_listener_serves_the_same() {
    let dir = util::tempdir();
    let path = dir.path().join("status.sock");
    let served = serve_on(&ListenAddr::Unix(path.clone()), Limits::default(), view());
    let mode = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.unwrap(), 0o600);
    let mut stream = UnixStream::connect(&path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(get("/healthz").as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader, false);
    assert_eq!((answer.status, answer.text().as_str()), (200, "ok\n"));
    reader.get_mut().write_all(get("/nope").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut reader, false).status, 404);
    drop(served);
}

/// `promtool check metrics` (Debian's `prometheus` package, which .ci/run
/// installs) accepts the exposition, lint included.
#[test]
fn metrics_pass_promtool_check() {
    let promtool = which("promtool").unwrap_or_else(|| {
        panic!(
            "promtool is not installed: this test needs it (`apt-get install prometheus`, \
             as .ci/run does)"
        )
    });
    let served = serve(Limits::default());
    let (metrics, _) = ask(&served, &get("/metrics"));
    assert_eq!(metrics.status, 200);
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(&metrics.body)
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- the exposition:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        metrics.text()
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
