//! The status server's cost with 1000 workers (issue 13: `/metrics` for
//! 1000 slots in at most 2 ms):
//!
//! 1. rendering each page from a view of 1000 slots (`respond`, no socket);
//! 2. `GET /metrics` served over loopback TCP by a `StatusServer` driven by
//!    a poll loop like the master's, one keep-alive client, request written
//!    to response read.
//!
//! `cargo bench --bench status_http` prints the median, 99th percentile and
//! worst of each; `PREFORK_BENCH_QUICK=1` does fewer rounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use prefork::http::{respond, Histogram, Limits, PoolView, Request, SlotView, StatusServer};
use prefork::listen::{BindOptions, ListenAddr, Listener};

fn view(slots: usize) -> PoolView {
    let bounds = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ];
    let mut respawn_latency = Histogram::new(&bounds);
    let mut board_check = Histogram::new(&bounds);
    for i in 0..5000 {
        respawn_latency.observe(0.0007 + (i % 13) as f64 * 0.0001);
        board_check.observe(0.0002 * (i % 7) as f64);
    }
    PoolView {
        master_pid: std::process::id(),
        phase: "running",
        uptime: Duration::from_secs(86_400),
        target: slots,
        min_workers: 1,
        activity: prefork::http::Activity {
            idle: slots / 2,
            busy: slots - slots / 2,
            starting: 0,
        },
        bounds: None,
        listen: vec!["127.0.0.1:8080".into()],
        scoreboard: "/dev/shm/prefork-bench".into(),
        slots: (0..slots)
            .map(|slot| SlotView {
                slot,
                pid: Some(100_000 + slot as i32),
                state: "running",
                restarts: (slot % 5) as u64,
                last_exit: (slot % 5 != 0).then(|| "signal 9".to_string()),
                uptime: Some(Duration::from_millis(3_600_000 + slot as u64)),
                since_update: Some(Duration::from_micros(1_234_567 + slot as u64 * 7)),
                status: Some(
                    format!("GET /api/v1/items/{slot} 200 0.004s keep-alive").into_bytes(),
                ),
            })
            .collect(),
        counts: prefork::http::Counts {
            spawned: 12_345,
            exits: vec![("exit_ok", 10_000), ("signal", 2_000), ("stuck", 3)],
            stuck_kills: 3,
            spawn_failures: 1,
            reloads: vec![("ok", 40), ("failed", 2)],
            output_dropped: 0,
            grown: 0,
            shrunk: 0,
        },
        respawn_latency,
        board_check,
    }
}

struct Figures(Vec<Duration>);

impl Figures {
    fn print(mut self, what: &str, bytes: usize) {
        self.0.sort();
        let at = |q: f64| self.0[((self.0.len() - 1) as f64 * q) as usize];
        println!(
            "{what:<44} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms   ({} rounds, {bytes} bytes)",
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            at(1.0).as_secs_f64() * 1e3,
            self.0.len()
        );
    }
}

fn render(view: &PoolView, path: &'static str, html: bool, rounds: usize) {
    let req = Request {
        method: "GET",
        path,
        accepts_html: html,
    };
    let mut bytes = 0;
    let times = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            let r = respond(&req, view);
            let took = start.elapsed();
            bytes = r.body.len();
            took
        })
        .collect();
    let what = format!(
        "render {path}{}, 1000 slots",
        if html { " (HTML)" } else { "" }
    );
    Figures(times).print(&what, bytes);
}

/// A status server on a loopback port, in a thread polling like the master.
fn serve(view: PoolView) -> (std::net::SocketAddr, Arc<AtomicBool>, UnixStream) {
    let addr: ListenAddr = "127.0.0.1:0".parse().unwrap();
    let listener = Arc::new(
        Listener::bind(
            &addr,
            BindOptions {
                backlog: 128,
                mode: 0o600,
            },
        )
        .unwrap(),
    );
    let ListenAddr::Tcp(at) = listener.bound.clone() else {
        unreachable!()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (wake_tx, wake_rx) = UnixStream::pair().unwrap();
    let stopping = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut server = StatusServer::new(listener, Limits::default());
        while !stopping.load(Ordering::Relaxed) {
            let interest = server.interest();
            // SAFETY: every descriptor is the server's or the wake pipe's,
            // open for the whole call.
            let borrow = |fd| unsafe { BorrowedFd::borrow_raw(fd) };
            let mut fds: Vec<PollFd> = interest
                .iter()
                .map(|&(fd, events)| PollFd::new(borrow(fd), events))
                .collect();
            use std::os::fd::AsRawFd;
            fds.push(PollFd::new(borrow(wake_rx.as_raw_fd()), PollFlags::POLLIN));
            let _ = nix::poll::poll(&mut fds, PollTimeout::from(100u16));
            let now = Instant::now();
            let fired: Vec<_> = interest
                .iter()
                .zip(&fds)
                .filter_map(|(&(fd, _), p)| Some((fd, p.revents().filter(|r| !r.is_empty())?)))
                .collect();
            for (fd, revents) in fired {
                server.ready(fd, revents, now, &mut |req| respond(req, &view));
            }
            server.expire(Instant::now());
        }
    });
    (at, stop, wake_tx)
}

fn over_loopback(rounds: usize) {
    let (at, stop, mut wake) = serve(view(1000));
    let stream = std::net::TcpStream::connect(at).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut body = Vec::new();
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds + 10 {
        let start = Instant::now();
        writer
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
            .unwrap();
        let mut len = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).unwrap();
        times.push(start.elapsed());
    }
    times.drain(..10); // warm-up
    Figures(times).print("GET /metrics over loopback, 1000 slots", body.len());
    stop.store(true, Ordering::Relaxed);
    let _ = wake.write_all(b"x");
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for the list: none here
    }
    let quick = std::env::var_os("PREFORK_BENCH_QUICK").is_some();
    let rounds = if quick { 200 } else { 2000 };
    let view = view(1000);
    render(&view, "/metrics", false, rounds);
    render(&view, "/status.json", false, rounds / 4);
    render(&view, "/status", false, rounds / 4);
    render(&view, "/status", true, rounds / 4);
    over_loopback(rounds);
}
