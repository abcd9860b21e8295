//! A loopback HTTP/1.1 load generator, for the tests that reload real
//! servers under load and for the reload benchmark (`benches/reload.rs`
//! includes this file with `#[path]`). Standard library only: plain threads
//! and blocking sockets, no async runtime.
//!
//! [`Load::start`] runs a few threads against one address, each sending
//! `GET` requests one after the other: `fresh` threads open a new connection
//! per request (and send `Connection: close`), `keepalive` threads reuse
//! theirs for as long as the server keeps it. [`Load::stop`] returns a
//! [`Report`]: the counts, the first few failures, latency percentiles, and
//! one [`Sample`] per request (when it was sent, how long it took, how it
//! ended, which `X-App-Version` answered), so that a test can ask what
//! happened in a window of time, or which versions answered after an instant.
//!
//! Each request ends in one of three outcomes:
//! - ok: a 200 response, on the first attempt;
//! - retried: a keep-alive connection that had already carried a response
//!   was closed (or reset) by the server before it sent any byte of this
//!   one's, and the request, sent again once on a new connection, got a 200.
//!   That is what HTTP clients do (RFC 9112, section 9.3.1: a server may
//!   close an idle persistent connection at any time, and a client may retry
//!   an idempotent request on a new one), so it is no failure;
//! - failed: anything else, with why: the connection refused, reset or timed
//!   out (connect and read: 5 s), closed before the response on a new
//!   connection or during one, a status other than 200, a malformed
//!   response, or a failed retry.
//!
//! Memory is bounded: at most [`MAX_SAMPLES`] samples are kept in all
//! (requests beyond that are counted, not kept) and [`MAX_FAILURES`] failure
//! reasons per thread.

// Shared by the test crate and a benchmark, each using a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a connect may take before the request fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read (or a write) may block before the request fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Samples kept in all, shared out between the threads.
pub const MAX_SAMPLES: usize = 300_000;
/// Failure reasons kept per thread (every failure is counted).
pub const MAX_FAILURES: usize = 10;
/// The largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The largest response body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Threads that open a new connection for every request.
    pub fresh: usize,
    /// Threads that keep one connection for as long as the server does.
    pub keepalive: usize,
    /// At most this many requests per second per thread (none: as fast as
    /// the answers come).
    pub rate_per_thread: Option<u32>,
    /// The request target, such as `/`.
    pub path: &'static str,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200 at the first attempt.
    Ok,
    /// 200 after one retry on a new connection (see the module's header).
    Retried,
    /// Anything else.
    Failed,
}

/// One request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent (its first attempt), since the load started.
    pub sent_at: Duration,
    /// From then until its response's last byte, or its failure.
    pub latency: Duration,
    pub outcome: Outcome,
    /// The response's `X-App-Version`, if it had one.
    pub version: Option<Arc<str>>,
    /// The response's `X-Worker-Pid`, if it had one.
    pub pid: Option<u32>,
}

impl Sample {
    /// A 200 response, at the first attempt or after a retry.
    pub fn served(&self) -> bool {
        self.outcome != Outcome::Failed
    }
}

/// A failed request, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    pub sent_at: Duration,
    pub reason: String,
}

/// Counts shared with the load's threads while they run.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
}

/// A load running on its threads until [`Load::stop`].
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// Starts the threads of `plan` against `addr`.
    pub fn start(addr: SocketAddr, plan: Plan) -> Load {
        let threads = plan.fresh + plan.keepalive;
        assert!(threads > 0, "a load needs at least one thread");
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let keep = MAX_SAMPLES / threads;
        let threads = (0..threads)
            .map(|i| {
                let client = Client {
                    addr,
                    path: plan.path,
                    keepalive: i >= plan.fresh,
                    interval: plan
                        .rate_per_thread
                        .filter(|&r| r > 0)
                        .map(|r| Duration::from_secs(1) / r),
                    started,
                    stop: Arc::clone(&stop),
                    counters: Arc::clone(&counters),
                    keep,
                };
                std::thread::Builder::new()
                    .name(format!("httpload-{i}"))
                    .spawn(move || client.run())
                    .expect("start a load thread")
            })
            .collect();
        Load {
            started,
            stop,
            counters,
            threads,
        }
    }

    /// When the load started: [`Sample::sent_at`] counts from here.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Requests ended so far: ok, retried, failed.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.ok.load(Ordering::Relaxed),
            self.counters.retried.load(Ordering::Relaxed),
            self.counters.failed.load(Ordering::Relaxed),
        )
    }

    /// Requests served so far (ok or retried).
    pub fn served(&self) -> u64 {
        let (ok, retried, _) = self.counts();
        ok + retried
    }

    /// Stops the threads (each ends its request in flight, which may take
    /// up to a timeout) and gathers what they saw.
    pub fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let duration = self.started.elapsed();
        let mut report = Report {
            started: self.started,
            duration,
            ok: 0,
            retried: 0,
            failed: 0,
            failures: Vec::new(),
            samples: Vec::new(),
            samples_dropped: 0,
        };
        for thread in self.threads.drain(..) {
            let tally = thread.join().expect("a load thread panicked");
            report.ok += tally.ok;
            report.retried += tally.retried;
            report.failed += tally.failed;
            report.samples_dropped += tally.dropped;
            report.failures.extend(tally.failures);
            report.samples.extend(tally.samples);
        }
        report.failures.sort_by_key(|f| f.sent_at);
        report.samples.sort_by_key(|s| s.sent_at);
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A test that panics before `stop` must not leave threads behind
        // hammering a port another test may get next.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a load saw.
#[derive(Clone, Debug)]
pub struct Report {
    /// When the load started.
    pub started: Instant,
    /// From its start to `stop`.
    pub duration: Duration,
    pub ok: u64,
    pub retried: u64,
    pub failed: u64,
    /// The first few failures of each thread, in the order they were sent.
    pub failures: Vec<Failure>,
    /// Every request kept (see [`MAX_SAMPLES`]), in the order they were sent.
    pub samples: Vec<Sample>,
    /// Requests counted but not kept as samples.
    pub samples_dropped: u64,
}

/// Latency percentiles over a set of served requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// How many requests they are over.
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    /// The percentiles of `latencies` (nearest rank).
    pub fn of(mut latencies: Vec<Duration>) -> Latency {
        latencies.sort();
        let at = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
            latencies.get(i).copied().unwrap_or_default()
        };
        Latency {
            count: latencies.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {}",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.count
        )
    }
}

/// What the requests sent in a window of time did (from the samples kept).
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub ok: u64,
    pub retried: u64,
    pub failed: u64,
    /// Over the served ones.
    pub latency: Latency,
}

impl Report {
    /// Requests served: ok or retried.
    pub fn served(&self) -> u64 {
        self.ok + self.retried
    }

    /// Every request that ended.
    pub fn total(&self) -> u64 {
        self.ok + self.retried + self.failed
    }

    /// `instant` as an offset from the load's start, to compare with
    /// [`Sample::sent_at`] (zero if it came before).
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.started)
    }

    /// Latency of every served request kept.
    pub fn latency(&self) -> Latency {
        self.window(Duration::ZERO, Duration::MAX).latency
    }

    /// The requests sent at `from` or later and before `to`.
    pub fn window(&self, from: Duration, to: Duration) -> Window {
        let mut w = Window::default();
        let mut latencies = Vec::new();
        for s in self.sent_between(from, to) {
            match s.outcome {
                Outcome::Ok => w.ok += 1,
                Outcome::Retried => w.retried += 1,
                Outcome::Failed => w.failed += 1,
            }
            if s.served() {
                latencies.push(s.latency);
            }
        }
        w.latency = Latency::of(latencies);
        w
    }

    /// The served requests sent at `from` or later, counted by the
    /// `X-App-Version` that answered (`(none)` for a response without one).
    pub fn versions_from(&self, from: Duration) -> BTreeMap<String, usize> {
        let mut versions = BTreeMap::new();
        for s in self
            .sent_between(from, Duration::MAX)
            .filter(|s| s.served())
        {
            let v = s.version.as_deref().unwrap_or("(none)").to_string();
            *versions.entry(v).or_insert(0) += 1;
        }
        versions
    }

    /// The distinct `X-Worker-Pid`s that served requests.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.samples.iter().filter_map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn sent_between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Sample> {
        let start = self.samples.partition_point(|s| s.sent_at < from);
        self.samples[start..]
            .iter()
            .take_while(move |s| s.sent_at < to)
    }
}

impl fmt::Display for Report {
    /// One paragraph: the counts, the latency, the first failures.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests in {:.1} s: {} ok, {} retried, {} failed; {}",
            self.total(),
            self.duration.as_secs_f64(),
            self.ok,
            self.retried,
            self.failed,
            self.latency()
        )?;
        if self.samples_dropped > 0 {
            write!(f, " ({} not kept as samples)", self.samples_dropped)?;
        }
        for failure in self.failures.iter().take(MAX_FAILURES) {
            write!(
                f,
                "\n  failed at {:.3} s: {}",
                failure.sent_at.as_secs_f64(),
                failure.reason
            )?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One `GET path` on a new connection, as a `fresh` thread sends it: its
/// response (whatever the status), or why there was none. For probing
/// whether a server answers yet.
pub fn get(addr: SocketAddr, path: &'static str) -> Result<Response, String> {
    let client = Client {
        addr,
        path,
        keepalive: false,
        interval: None,
        started: Instant::now(),
        stop: Arc::default(),
        counters: Arc::default(),
        keep: 0,
    };
    let conn = Conn::open(addr)?;
    let (response, _) = client.exchange(conn).map_err(|e| e.to_string())?;
    Ok(response)
}

// ---------------------------------------------------------------------------
// One thread of the load

/// What one thread saw.
#[derive(Default)]
struct Tally {
    ok: u64,
    retried: u64,
    failed: u64,
    dropped: u64,
    failures: Vec<Failure>,
    samples: Vec<Sample>,
}

struct Client {
    addr: SocketAddr,
    path: &'static str,
    keepalive: bool,
    interval: Option<Duration>,
    started: Instant,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Samples this thread may keep.
    keep: usize,
}

impl Client {
    fn run(self) -> Tally {
        let mut tally = Tally::default();
        let mut conn: Option<Conn> = None;
        let mut next = Instant::now();
        // The last version seen, shared by the samples that carry it.
        let mut version: Option<Arc<str>> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(interval) = self.interval {
                if !self.sleep_until(next) {
                    break;
                }
                // Behind schedule (a slow answer), the next request goes at
                // once, but no burst follows to catch up.
                next = (next + interval).max(Instant::now());
            }
            let t0 = Instant::now();
            let (result, retried) = self.request(&mut conn);
            let latency = t0.elapsed();
            let sent_at = t0 - self.started;
            let sample = match result {
                Ok(response) if response.status == 200 => {
                    let outcome = if retried {
                        Outcome::Retried
                    } else {
                        Outcome::Ok
                    };
                    if version.as_deref() != response.version.as_deref() {
                        version = response.version.map(Arc::from);
                    }
                    Sample {
                        sent_at,
                        latency,
                        outcome,
                        version: version.clone(),
                        pid: response.pid,
                    }
                }
                other => {
                    let reason = match other {
                        Ok(response) => format!("status {}", response.status),
                        Err(why) if retried => format!("{why} (on the retry)"),
                        Err(why) => why,
                    };
                    if tally.failures.len() < MAX_FAILURES {
                        tally.failures.push(Failure { sent_at, reason });
                    }
                    Sample {
                        sent_at,
                        latency,
                        outcome: Outcome::Failed,
                        version: None,
                        pid: None,
                    }
                }
            };
            let (count, counter) = match sample.outcome {
                Outcome::Ok => (&mut tally.ok, &self.counters.ok),
                Outcome::Retried => (&mut tally.retried, &self.counters.retried),
                Outcome::Failed => (&mut tally.failed, &self.counters.failed),
            };
            *count += 1;
            counter.fetch_add(1, Ordering::Relaxed);
            if tally.samples.len() < self.keep {
                tally.samples.push(sample);
            } else {
                tally.dropped += 1;
            }
        }
        tally
    }

    /// Sleeps until `at`, waking every 50 ms to see whether the load is
    /// stopping; false if it is.
    fn sleep_until(&self, at: Instant) -> bool {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = Instant::now();
            if now >= at {
                return true;
            }
            std::thread::sleep((at - now).min(Duration::from_millis(50)));
        }
    }

    /// One request, on `conn` if it is open (and left open after it if the
    /// server allows and this is a keep-alive thread); the second value says
    /// whether it was retried.
    fn request(&self, conn: &mut Option<Conn>) -> (Result<Response, String>, bool) {
        let reused = conn.is_some();
        let first = match conn.take() {
            Some(c) => Ok(c),
            None => Conn::open(self.addr),
        };
        let attempt = first.map_err(Error::Failed).and_then(|c| self.exchange(c));
        match attempt {
            Ok((response, c)) => {
                *conn = c;
                (Ok(response), false)
            }
            Err(Error::ClosedEarly(_)) if reused => {
                let retry = Conn::open(self.addr)
                    .map_err(Error::Failed)
                    .and_then(|c| self.exchange(c));
                match retry {
                    Ok((response, c)) => {
                        *conn = c;
                        (Ok(response), true)
                    }
                    Err(e) => (Err(e.to_string()), true),
                }
            }
            Err(e) => (Err(e.to_string()), false),
        }
    }

    /// Sends the request on `conn` and reads its response; returns the
    /// connection too when it may carry another request.
    fn exchange(&self, mut conn: Conn) -> Result<(Response, Option<Conn>), Error> {
        let connection = if self.keepalive {
            ""
        } else {
            "Connection: close\r\n"
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: prefork-httpload\r\n{connection}\r\n",
            self.path, self.addr
        );
        conn.stream
            .write_all(request.as_bytes())
            .map_err(|e| match e.kind() {
                // The server had closed it: a write can only see that when
                // its RST has come back.
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    Error::ClosedEarly(format!("write: {}", describe(&e)))
                }
                _ => Error::Failed(format!("write: {}", describe(&e))),
            })?;
        let response = conn.read_response()?;
        let again = self.keepalive && response.keep_alive;
        Ok((response, again.then_some(conn)))
    }
}

// ---------------------------------------------------------------------------
// HTTP/1.1 on one connection

/// Why an attempt failed.
enum Error {
    /// The server closed or reset the connection before any byte of the
    /// response: on a reused connection, the request is sent again.
    ClosedEarly(String),
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ClosedEarly(why) | Error::Failed(why) => f.write_str(why),
        }
    }
}

/// What the load looks at in a response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// `X-App-Version`.
    pub version: Option<String>,
    /// `X-Worker-Pid`.
    pub pid: Option<u32>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

struct Conn {
    stream: TcpStream,
    /// Bytes read and not used yet.
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream =
            TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => "connect: refused".to_string(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    "connect: timed out".to_string()
                }
                _ => format!("connect: {}", describe(&e)),
            })?;
        let setup = stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(READ_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true));
        setup.map_err(|e| format!("socket options: {e}"))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(1024),
        })
    }

    /// Reads more bytes into `buf`; `what` names the part being read, for
    /// the error. Zero is the end of the stream.
    fn fill(&mut self, what: &str) -> Result<usize, Error> {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Failed(format!("read {what}: {}", describe(&e)))),
            }
        }
    }

    fn read_response(&mut self) -> Result<Response, Error> {
        // The head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(malformed("a head larger than 16 KiB"));
            }
            let nothing_yet = self.buf.is_empty();
            match self.fill("the head") {
                Ok(0) if nothing_yet => {
                    return Err(Error::ClosedEarly("closed before the response".into()))
                }
                Ok(0) => return Err(Error::Failed("closed in the response's head".into())),
                Ok(_) => {}
                Err(Error::Failed(why)) if nothing_yet && why.ends_with("reset") => {
                    return Err(Error::ClosedEarly(format!("{why} before the response")))
                }
                Err(e) => return Err(e),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let http10 = match proto {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Err(malformed(&format!("status line {status_line:?}"))),
        };
        let status: u16 = code
            .parse()
            .ok()
            .filter(|c| (100..1000).contains(c) && code.len() == 3)
            .ok_or_else(|| malformed(&format!("status line {status_line:?}")))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| malformed(&format!("header line {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let connection = header("connection").unwrap_or("").to_ascii_lowercase();
        let mut keep_alive = if http10 {
            connection.contains("keep-alive")
        } else {
            !connection.contains("close")
        };

        // The body, read and dropped: only its framing matters here.
        let chunked = header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if matches!(status, 100..=199 | 204 | 304) {
        } else if chunked {
            self.read_chunked()?;
        } else if let Some(length) = header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| malformed(&format!("Content-Length {length:?}")))?;
            if length > MAX_BODY {
                return Err(malformed("a body larger than 1 MiB"));
            }
            self.read_exact_body(length)?;
        } else {
            // Delimited by the end of the connection.
            while self.fill("the body")? > 0 {
                if self.buf.len() > MAX_BODY {
                    return Err(malformed("a body larger than 1 MiB"));
                }
            }
            self.buf.clear();
            keep_alive = false;
        }
        Ok(Response {
            status,
            version: header("x-app-version").map(str::to_string),
            pid: header("x-worker-pid").and_then(|p| p.parse().ok()),
            keep_alive,
        })
    }

    fn read_exact_body(&mut self, length: usize) -> Result<(), Error> {
        while self.buf.len() < length {
            if self.fill("the body")? == 0 {
                return Err(Error::Failed("closed in the response's body".into()));
            }
        }
        self.buf.drain(..length);
        Ok(())
    }

    fn read_chunked(&mut self) -> Result<(), Error> {
        let mut total = 0usize;
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| malformed(&format!("chunk size {line:?}")))?;
            total += size;
            if total > MAX_BODY {
                return Err(malformed("a body larger than 1 MiB"));
            }
            if size == 0 {
                // Trailers, up to an empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(());
            }
            self.read_exact_body(size + 2)?;
        }
    }

    fn read_line(&mut self) -> Result<String, Error> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(malformed("a chunk line larger than 16 KiB"));
            }
            if self.fill("the body")? == 0 {
                return Err(Error::Failed("closed in the response's body".into()));
            }
        }
    }
}

fn malformed(what: &str) -> Error {
    Error::Failed(format!("malformed response: {what}"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A short name for the I/O errors a load sees, the rest as they come.
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::BrokenPipe => "broken pipe".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        _ => e.to_string(),
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    //! The load against tiny servers on a std `TcpListener`, each behaving
    //! as one case needs.

    use super::*;
    use std::io::BufRead;
    use std::net::TcpListener;

    /// How a test server answers.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// 200 with `X-App-Version` from `version` and a Content-Length
        /// body, keeping the connection while the client does.
        KeepAlive,
        /// 200, `Connection: close`, then closes.
        Close,
        /// 200 without `Connection: close`, then closes the connection at
        /// once: an idle keep-alive connection the server dropped, which the
        /// client learns of only when it sends the next request.
        DropsIdle,
        /// 500 (keeping the connection).
        Error500,
        /// Reads the request and closes without a byte.
        CloseWithoutAnswer,
        /// A chunked 200.
        Chunked,
        /// Not HTTP.
        Garbage,
    }

    struct Server {
        addr: SocketAddr,
        /// What `X-App-Version` the next responses carry.
        version: Arc<std::sync::Mutex<String>>,
    }

    /// A server on an ephemeral loopback port, a thread per connection,
    /// that lives until the test process ends (its threads block in
    /// accept, harmless).
    fn serve(behaviour: Behaviour) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let version = Arc::new(std::sync::Mutex::new("v1".to_string()));
        let shared = Arc::clone(&version);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let version = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = answer(stream, behaviour, &version);
                });
            }
        });
        Server { addr, version }
    }

    fn answer(
        stream: TcpStream,
        behaviour: Behaviour,
        version: &std::sync::Mutex<String>,
    ) -> io::Result<()> {
        let mut reader = io::BufReader::new(stream.try_clone()?);
        let mut out = stream;
        loop {
            // One request head (a GET has no body).
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == "\r\n" {
                    break;
                }
            }
            let v = version.lock().unwrap().clone();
            let body = format!("hello from {v}\n");
            let response = match behaviour {
                Behaviour::KeepAlive | Behaviour::DropsIdle => format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-App-Version: {v}\r\nX-Worker-Pid: 42\r\n\r\n{body}",
                    body.len()
                ),
                Behaviour::Close => format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\nX-App-Version: {v}\r\n\r\n{body}",
                    body.len()
                ),
                Behaviour::Error500 => {
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops".into()
                }
                Behaviour::CloseWithoutAnswer => return Ok(()),
                Behaviour::Chunked => format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-App-Version: {v}\r\n\r\n5\r\nhello\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                ),
                Behaviour::Garbage => "SSH-2.0-OpenSSH\r\n\r\n".into(),
            };
            out.write_all(response.as_bytes())?;
            if matches!(
                behaviour,
                Behaviour::Close | Behaviour::Garbage | Behaviour::DropsIdle
            ) {
                return Ok(());
            }
        }
    }

    fn plan(fresh: usize, keepalive: usize) -> Plan {
        Plan {
            fresh,
            keepalive,
            rate_per_thread: None,
            path: "/",
        }
    }

    /// Runs `plan` against `addr` until `n` requests have ended (or 10 s).
    fn run_until(addr: SocketAddr, plan: Plan, n: u64) -> Report {
        let load = Load::start(addr, plan);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (ok, retried, failed) = load.counts();
            if ok + retried + failed >= n || Instant::now() >= deadline {
                return load.stop();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn keepalive_and_fresh_requests_are_ok() {
        let server = serve(Behaviour::KeepAlive);
        let report = run_until(server.addr, plan(1, 2), 300);
        assert!(report.total() >= 300, "{report}");
        assert_eq!((report.failed, report.retried), (0, 0), "{report}");
        assert_eq!(report.samples.len() as u64, report.total());
        assert!(report
            .samples
            .windows(2)
            .all(|w| w[0].sent_at <= w[1].sent_at));
        let versions = report.versions_from(Duration::ZERO);
        assert_eq!(versions.keys().collect::<Vec<_>>(), ["v1"], "{versions:?}");
        assert_eq!(report.pids(), [42]);
        let latency = report.latency();
        assert_eq!(latency.count as u64, report.total());
        assert!(latency.p50 <= latency.p99 && latency.p99 <= latency.max);
    }

    #[test]
    fn connection_close_is_followed_on_keepalive_threads() {
        let server = serve(Behaviour::Close);
        let report = run_until(server.addr, plan(1, 1), 100);
        assert_eq!((report.failed, report.retried), (0, 0), "{report}");
        assert!(report.ok >= 100, "{report}");
    }

    #[test]
    fn an_idle_connection_closed_by_the_server_is_retried_not_failed() {
        let server = serve(Behaviour::DropsIdle);
        let report = run_until(server.addr, plan(0, 2), 100);
        assert_eq!(report.failed, 0, "{report}");
        // Every request but each thread's first finds its connection closed.
        assert!(report.retried >= 90, "{report}");
        assert!(report.ok >= 2, "{report}");
        assert!(report.window(Duration::ZERO, Duration::MAX).retried == report.retried);
    }

    #[test]
    fn a_fresh_connection_closed_without_an_answer_is_a_failure() {
        let server = serve(Behaviour::CloseWithoutAnswer);
        let report = run_until(server.addr, plan(1, 0), 5);
        assert_eq!((report.ok, report.retried), (0, 0), "{report}");
        assert!(report.failed >= 5, "{report}");
        assert!(
            report.failures[0].reason.contains("before the response"),
            "{report}"
        );
    }

    #[test]
    fn a_retry_that_fails_is_a_failure() {
        // The server answers a connection's first request and closes it;
        // the retry's new connection goes to a closed port.
        let server = serve(Behaviour::DropsIdle);
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused = closed.local_addr().expect("address");
        drop(closed);
        let client = Client {
            addr: refused,
            path: "/",
            keepalive: true,
            interval: None,
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::default(),
            keep: 10,
        };
        let conn = Conn::open(server.addr).expect("connect");
        let Ok((response, mut conn)) = client.exchange(conn) else {
            panic!("the first request is not answered");
        };
        assert_eq!(response.status, 200);
        assert!(conn.is_some(), "a keep-alive response keeps the connection");
        let (result, retried) = client.request(&mut conn);
        assert!(retried);
        assert_eq!(
            result.expect_err("the retry cannot connect"),
            "connect: refused"
        );
        assert!(conn.is_none());
    }

    #[test]
    fn a_500_is_a_failure_with_its_status() {
        let server = serve(Behaviour::Error500);
        let report = run_until(server.addr, plan(1, 1), 20);
        assert_eq!(report.ok + report.retried, 0, "{report}");
        assert!(report.failed >= 20);
        assert_eq!(report.failures[0].reason, "status 500");
        assert!(report.failures.len() <= 2 * MAX_FAILURES);
        assert_eq!(report.latency().count, 0, "failures have no latency");
    }

    #[test]
    fn garbage_is_a_malformed_response() {
        let server = serve(Behaviour::Garbage);
        let report = run_until(server.addr, plan(1, 0), 3);
        assert!(report.failed >= 3, "{report}");
        assert!(
            report.failures[0]
                .reason
                .starts_with("malformed response: status line"),
            "{report}"
        );
    }

    #[test]
    fn a_chunked_body_is_read_to_its_end() {
        let server = serve(Behaviour::Chunked);
        let report = run_until(server.addr, plan(0, 1), 50);
        assert_eq!((report.failed, report.retried), (0, 0), "{report}");
        let versions = report.versions_from(Duration::ZERO);
        assert_eq!(versions.get("v1").copied(), Some(report.ok as usize));
    }

    #[test]
    fn get_returns_one_response() {
        let server = serve(Behaviour::Error500);
        let response = get(server.addr, "/").expect("a response");
        assert_eq!(response.status, 500);
        let server = serve(Behaviour::KeepAlive);
        let response = get(server.addr, "/").expect("a response");
        assert_eq!(
            (response.status, response.version.as_deref(), response.pid),
            (200, Some("v1"), Some(42))
        );
    }

    #[test]
    fn connect_refused_is_a_failure() {
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("address");
        drop(closed);
        let report = run_until(addr, plan(1, 1), 10);
        assert!(report.failed >= 10, "{report}");
        assert_eq!(report.failures[0].reason, "connect: refused");
    }

    #[test]
    fn versions_are_told_apart_by_when_the_request_was_sent() {
        let server = serve(Behaviour::KeepAlive);
        let load = Load::start(server.addr, plan(1, 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while load.served() < 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        *server.version.lock().unwrap() = "v2".into();
        let switched = Instant::now();
        let before = load.served();
        while load.served() < before + 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let report = load.stop();
        let after = report.versions_from(report.at(switched));
        assert_eq!(after.keys().collect::<Vec<_>>(), ["v2"], "{after:?}");
        let all = report.versions_from(Duration::ZERO);
        assert!(all["v1"] >= 50 && all["v2"] >= 50, "{all:?}");
        let early = report.window(Duration::ZERO, report.at(switched));
        assert!(early.ok >= 50 && early.failed == 0);
    }

    #[test]
    fn a_rate_limit_paces_each_thread() {
        let server = serve(Behaviour::KeepAlive);
        let plan = Plan {
            rate_per_thread: Some(50),
            ..plan(1, 1)
        };
        let load = Load::start(server.addr, plan);
        std::thread::sleep(Duration::from_millis(500));
        let report = load.stop();
        // 2 threads x 50/s, each sending its first at once: at most this
        // many over however long the load ran (a loaded machine oversleeps).
        let most = 2 * (1 + (report.duration.as_secs_f64() * 50.0) as u64);
        assert!(report.total() <= most, "{report}; at most {most}");
        assert!(report.total() >= 10, "{report}");
        assert_eq!(report.failed, 0, "{report}");
    }

    #[test]
    fn samples_are_bounded() {
        let server = serve(Behaviour::KeepAlive);
        let client = Client {
            addr: server.addr,
            path: "/",
            keepalive: true,
            interval: None,
            started: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            counters: Arc::default(),
            keep: 5,
        };
        let stop = Arc::clone(&client.stop);
        let counters = Arc::clone(&client.counters);
        let thread = std::thread::spawn(move || client.run());
        let deadline = Instant::now() + Duration::from_secs(10);
        while counters.ok.load(Ordering::Relaxed) < 20 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        let tally = thread.join().unwrap();
        assert_eq!(tally.samples.len(), 5);
        assert_eq!(tally.dropped, tally.ok - 5);
    }
}
