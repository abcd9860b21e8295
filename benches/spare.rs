//! Spare scaling (issue 14): how long a pool that sizes itself takes to grow
//! from its floor to what a burst needs, and to shrink back once the burst
//! is over; prefork against Parallel::Prefork::SpareWorkers in the same run.
//!
//! Both pools serve HTTP on loopback with one connection per worker at a
//! time (prefork: `--listen 127.0.0.1:0 --ready report` and the example
//! `http_worker` with `HTTP_WORKER_CONNECTIONS=1`; the peer:
//! `bench/spare_peer.pl`, the same shape in Perl), with the same bounds:
//! 2 workers at least, 32 at most, 2 to 3 idle. A burst is K clients
//! (`tests/httpload.rs`, a new connection per request) each sending
//! `GET /sleep/1` again as soon as the last one is answered, for a fixed
//! time; then the load stops. The pool's size is counted the same way for
//! both, from the outside: the master's live children (zombies left out),
//! from /proc, every 10 ms. prefork's own log lines (`spare scaling: ...
//! -> N worker(s)`) are timed by the same sampler, as a cross-check.
//!
//! For each pool and K (8 and 24): the time from the burst's start until
//! the pool has K + min_spare workers (its need: K busy, 2 idle), the peak,
//! the workers forked and exited while the load ran, the requests served
//! and failed during the burst and their latency, and
//! the time from the load's stop until the pool is back to its resting size
//! (3: max_spare idle workers, all of them idle). prefork runs at its
//! default check interval (1 s) and at 100 ms; the peer at its defaults.
//!
//! `cargo bench --bench spare` runs it all (about 2.5 minutes);
//! `PREFORK_BENCH_QUICK=1` holds each burst 6 s instead of 15 s;
//! `PREFORK_BENCH_ONLY=peer,prefork-1s,prefork-100ms` runs some pools and
//! `PREFORK_BENCH_BURSTS=8,24` sets the bursts;
//! `PREFORK_BENCH_BIN=path` measures another build of prefork, and
//! `PREFORK_BENCH_WORKER=path` another http_worker (default: `examples/
//! http_worker` next to the prefork binary: `cargo build --release
//! --examples -p prefork-scoreboard` first; `bench/spare.sh` does both).
//! Without Perl's module (Debian: libparallel-prefork-perl) the peer's rows
//! say so and prefork's still run. Every pool runs in a fresh directory
//! under /dev/shm, in its own process group, with `PR_SET_PDEATHSIG`; a
//! guard stops it when its row ends or fails.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

mod common;
#[path = "../tests/httpload.rs"]
mod httpload;

use common::{bench_dir, sleep_until, start_ticks, uptime_ticks};
use httpload::{Load, Plan};

/// The bounds both pools keep.
const MIN_WORKERS: usize = 2;
const MAX_WORKERS: usize = 32;
const MIN_SPARE: usize = 2;
const MAX_SPARE: usize = 3;
/// The size a pool comes back to after a burst: max_spare workers, idle.
const REST: usize = MAX_SPARE;
/// How often the pool's size is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How long a pool may take to be back to its resting size.
const SHRINK_TIMEOUT: Duration = Duration::from_secs(60);
/// The bursts: this many concurrent `GET /sleep/1`.
const BURSTS: [usize; 2] = [8, 24];

/// The pools compared.
#[derive(Clone, Copy)]
enum Setup {
    /// prefork with this `--check-interval`.
    Prefork(&'static str),
    /// Parallel::Prefork::SpareWorkers at its defaults.
    Peer,
}

impl Setup {
    /// Its name in `PREFORK_BENCH_ONLY`.
    fn name(self) -> String {
        match self {
            Setup::Prefork(check) => format!("prefork-{check}"),
            Setup::Peer => "peer".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Setup::Prefork(check) => format!("prefork, check {check}"),
            Setup::Peer => "Parallel::Prefork::SpareWorkers".into(),
        }
    }
}

const SETUPS: [Setup; 3] = [Setup::Peer, Setup::Prefork("1s"), Setup::Prefork("100ms")];

fn main() {
    let quick = std::env::var_os("PREFORK_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let hold = Duration::from_secs(if quick { 6 } else { 15 });
    let worker = common::http_worker("PREFORK_BENCH_WORKER");
    let peer = peer_available();
    let only = std::env::var("PREFORK_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    let bursts: Vec<usize> = match std::env::var("PREFORK_BENCH_BURSTS") {
        Ok(v) if !v.is_empty() => v
            .split(',')
            .map(|k| k.trim().parse().expect("PREFORK_BENCH_BURSTS: numbers"))
            .collect(),
        _ => BURSTS.to_vec(),
    };
    machine(quick, &worker, &peer);
    println!(
        "## Spare scaling: a burst of K concurrent `GET /sleep/1`, held {} s, then stopped",
        hold.as_secs()
    );
    println!();
    println!(
        "Bounds: workers {MIN_WORKERS}..{MAX_WORKERS}, spare {MIN_SPARE}..{MAX_SPARE}; need = K + {MIN_SPARE}; \
         rest = {REST} (max_spare idle). Sizes: the master's live children, sampled every {} ms.",
        SAMPLE_EVERY.as_millis()
    );
    println!();
    println!(
        "| pool | K | before | grown to need | peak (at) | forked / exited | served/s | failed | p50 / p99 / max | back to {REST} | log: need / back |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let _ = io::stdout().flush();
    let mut rows: Vec<(usize, Setup, Result<Row, String>)> = Vec::new();
    for &k in &bursts {
        for setup in SETUPS.into_iter().filter(|s| wanted(&s.name())) {
            let row = match setup {
                Setup::Peer => peer.clone().and_then(|_| run(setup, k, hold)),
                Setup::Prefork(_) => worker.clone().and_then(|_| run(setup, k, hold)),
            };
            print_row(setup, k, &row);
            rows.push((k, setup, row));
        }
    }
    println!();
    ratios(&rows, &bursts);
    failures(&rows);
}

/// One burst against one pool: what the sampler and the load saw.
struct Row {
    /// Workers before the burst.
    before: usize,
    /// From the burst's start until K + min_spare workers, if ever.
    grown: Option<Duration>,
    peak: usize,
    /// From the burst's start until the peak was first seen.
    peak_at: Duration,
    served_per_s: f64,
    failed: u64,
    failures: Vec<String>,
    latency: httpload::Latency,
    /// Workers that started, and that exited, while the load ran.
    churn: (usize, usize),
    /// From the load's stop until the pool was back to `REST`, if it was.
    shrunk: Option<Duration>,
    /// The same two, from prefork's log lines (None for the peer).
    log_grown: Option<Duration>,
    log_shrunk: Option<Duration>,
    /// prefork's log: scaling lines up and down, and lines at warn or error.
    log_counts: Option<(usize, usize, Vec<String>)>,
}

fn run(setup: Setup, k: usize, hold: Duration) -> Result<Row, String> {
    let mut pool = match setup {
        Setup::Prefork(check) => Pool::prefork(check)?,
        Setup::Peer => Pool::peer()?,
    };
    let addr = pool.addr;
    let sampler = Sampler::start(pool.pid(), pool.log.clone().filter(|_| pool.is_prefork()));
    // Ready, and at rest: answering, and the same size for a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while httpload::get(addr, "/").is_err() {
        if Instant::now() > deadline {
            return Err(format!("no answer on {addr}: {}", pool.tail()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = sampler.wait_stable(Duration::from_secs(1), Duration::from_secs(30))?;
    let need = k + MIN_SPARE;

    let t0 = Instant::now();
    let load = Load::start(
        addr,
        Plan {
            fresh: k,
            keepalive: 0,
            rate_per_thread: None,
            path: "/sleep/1",
        },
    );
    std::thread::sleep(hold.saturating_sub(t0.elapsed()));
    let stopped = Instant::now();
    let report = load.stop();
    let deadline = stopped + SHRINK_TIMEOUT;
    while sampler.live() > REST && Instant::now() < deadline {
        std::thread::sleep(SAMPLE_EVERY);
    }
    // A second more at rest, to see that it stays there.
    std::thread::sleep(Duration::from_secs(1));
    let Samples {
        sizes: samples,
        events,
        forks,
        exits,
    } = sampler.finish();
    let during = |at: &&Instant| **at >= t0 && **at <= stopped;
    let churn = (
        forks.iter().filter(during).count(),
        exits.iter().filter(during).count(),
    );
    pool.stop();

    let after = |from: Instant| samples.iter().filter(move |(t, _)| *t >= from);
    let grown = after(t0).find(|&&(_, n)| n >= need).map(|(t, _)| *t - t0);
    let (peak_t, peak) = after(t0)
        .filter(|(t, _)| *t <= stopped)
        .fold(
            (t0, 0),
            |best, &(t, n)| if n > best.1 { (t, n) } else { best },
        );
    let shrunk = after(stopped)
        .find(|&&(_, n)| n <= REST)
        .map(|(t, _)| *t - stopped);
    let log_grown = events
        .iter()
        .find(|(t, n, _)| *t >= t0 && *n >= need)
        .map(|(t, _, _)| *t - t0);
    let log_shrunk = events
        .iter()
        .find(|(t, n, _)| *t >= stopped && *n <= REST)
        .map(|(t, _, _)| *t - stopped);
    // prefork's scaling lines, timed from the burst's start, on stderr.
    for (t, _, line) in &events {
        let at = t.saturating_duration_since(t0).as_secs_f64();
        let sign = if *t < t0 { "-" } else { "+" };
        eprintln!("{} K={k} {sign}{at:.2}s {line}", setup.label());
    }
    let log_counts = pool.log.as_ref().filter(|_| pool.is_prefork()).map(|log| {
        let text = fs::read_to_string(log).unwrap_or_default();
        let up = text
            .lines()
            .filter(|l| l.contains("below min_spare"))
            .count();
        let down = text
            .lines()
            .filter(|l| l.contains("above max_spare"))
            .count();
        let bad = text
            .lines()
            .filter(|l| {
                l.contains(" WARN ")
                    || l.contains(" ERROR ")
                    || (l.contains("SIGKILL") && !l.contains("graceful shutdown:"))
            })
            .map(str::to_string)
            .collect();
        (up, down, bad)
    });
    Ok(Row {
        before,
        grown,
        peak,
        peak_at: peak_t - t0,
        served_per_s: report.served() as f64 / report.duration.as_secs_f64(),
        failed: report.failed,
        failures: report
            .failures
            .iter()
            .take(5)
            .map(|f| format!("at {:.3} s: {}", f.sent_at.as_secs_f64(), f.reason))
            .collect(),
        latency: report.latency(),
        churn,
        shrunk,
        log_grown,
        log_shrunk,
        log_counts,
    })
}

fn print_row(setup: Setup, k: usize, row: &Result<Row, String>) {
    let label = setup.label();
    match row {
        Err(why) => println!("| {label} | {k} | - | - | - | - | - | - | - | - | {why} |"),
        Ok(r) => {
            let log = if r.log_counts.is_some() {
                format!("{} / {}", opt(r.log_grown), opt(r.log_shrunk))
            } else {
                "-".into()
            };
            println!(
                "| {label} | {k} | {} | {} | {} ({:.2} s) | {} / {} | {:.1} | {} | {} / {} / {} | {} | {log} |",
                r.before,
                opt(r.grown),
                r.peak,
                r.peak_at.as_secs_f64(),
                r.churn.0,
                r.churn.1,
                r.served_per_s,
                r.failed,
                ms(r.latency.p50),
                ms(r.latency.p99),
                ms(r.latency.max),
                opt(r.shrunk),
            );
        }
    }
    let _ = io::stdout().flush();
}

/// prefork over the peer, per K: grow, back to rest, p99.
fn ratios(rows: &[(usize, Setup, Result<Row, String>)], bursts: &[usize]) {
    println!("### Ratios, prefork / peer (same run; below 1: prefork is faster)");
    println!();
    if !rows
        .iter()
        .any(|(_, s, r)| matches!(s, Setup::Peer) && r.is_ok())
    {
        println!("(none: no row of the peer)");
        println!();
        return;
    }
    println!("| K | prefork check | grown to need | back to {REST} | p99 latency |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64()),
        _ => "-".into(),
    };
    for &k in bursts {
        let peer = rows.iter().find_map(|(kk, s, r)| match (s, r) {
            (Setup::Peer, Ok(r)) if *kk == k => Some(r),
            _ => None,
        });
        for (kk, setup, row) in rows {
            let (Setup::Prefork(check), Ok(r), Some(p)) = (setup, row, peer) else {
                continue;
            };
            if *kk != k {
                continue;
            }
            println!(
                "| {k} | {check} | {} | {} | {} |",
                ratio(r.grown, p.grown),
                ratio(r.shrunk, p.shrunk),
                ratio(Some(r.latency.p99), Some(p.latency.p99)),
            );
        }
    }
    println!();
}

/// The first failed requests of each row, and prefork's log counts.
fn failures(rows: &[(usize, Setup, Result<Row, String>)]) {
    for (k, setup, row) in rows {
        let Ok(r) = row else { continue };
        if let Some((up, down, bad)) = &r.log_counts {
            println!(
                "- {}, K={k}: log: {up} growth round(s), {down} retirement(s), {} line(s) at warn or error{}",
                setup.label(),
                bad.len(),
                if bad.is_empty() { String::new() } else { format!(": {}", bad.join(" | ")) }
            );
        }
        if r.failed > 0 {
            println!(
                "- {}, K={k}: {} failed; first: {}",
                setup.label(),
                r.failed,
                r.failures.join("; ")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The pools

/// A running pool (prefork's master or the Perl manager) and its workers;
/// stopped when dropped, on a panic too.
struct Pool {
    child: Child,
    addr: SocketAddr,
    /// prefork's standard error, or the peer's.
    log: Option<PathBuf>,
    prefork: bool,
    /// When it started, in clock ticks since boot (for [`kill_leftovers`]).
    born: u64,
    _dir: tempfile::TempDir,
}

impl Pool {
    fn prefork(check: &str) -> Result<Pool, String> {
        let worker = common::http_worker("PREFORK_BENCH_WORKER")?;
        let dir = bench_dir("prefork-bench-spare-");
        let board = dir.path().join("board");
        fs::create_dir(&board).map_err(|e| format!("{}: {e}", board.display()))?;
        let (min, max, min_spare, max_spare) = (
            MIN_WORKERS.to_string(),
            MAX_WORKERS.to_string(),
            MIN_SPARE.to_string(),
            MAX_SPARE.to_string(),
        );
        let mut cmd = Command::new(common::prefork());
        cmd.arg("--scoreboard")
            .arg(&board)
            .args(["--listen", "127.0.0.1:0", "--ready", "report"])
            .args(["-e", "HTTP_WORKER_CONNECTIONS=1"])
            .args([
                "--workers",
                &min,
                "--min-workers",
                &min,
                "--max-workers",
                &max,
            ])
            .args(["--min-spare", &min_spare, "--max-spare", &max_spare])
            .args(["--check-interval", check, "--"])
            .arg(&worker);
        let mut pool = Pool::spawn(cmd, dir, true)?;
        let log = pool.log.clone().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let addr = text.lines().find_map(|l| {
                let rest = l.split_once("listening on ")?.1;
                rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = addr {
                pool.addr = addr;
                return Ok(pool);
            }
            if Instant::now() > deadline || !pool.running() {
                return Err(format!("prefork did not listen: {}", pool.tail()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn peer() -> Result<Pool, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/spare_peer.pl");
        let mut cmd = Command::new("perl");
        cmd.arg(&script).args([
            "--min-spare",
            &MIN_SPARE.to_string(),
            "--max-spare",
            &MAX_SPARE.to_string(),
            "--max-workers",
            &MAX_WORKERS.to_string(),
        ]);
        cmd.stdout(Stdio::piped());
        let mut pool = Pool::spawn(cmd, bench_dir("prefork-bench-spare-"), false)?;
        // Its first line, `port N` (or end of file, if it died).
        let stdout = pool.child.stdout.take().expect("a piped stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port: u16 = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("{} said {line:?}: {}", script.display(), pool.tail()))?;
        pool.addr = SocketAddr::from(([127, 0, 0, 1], port));
        Ok(pool)
    }

    /// Starts `cmd` in its own process group, dying with this process, its
    /// standard error a log file in `dir`.
    fn spawn(mut cmd: Command, dir: tempfile::TempDir, prefork: bool) -> Result<Pool, String> {
        let log = dir.path().join("log");
        let file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stderr(file)
            .process_group(0);
        common::dies_with_this_process(&mut cmd);
        let born = uptime_ticks();
        let child = cmd.spawn().map_err(|e| format!("start {cmd:?}: {e}"))?;
        Ok(Pool {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: Some(log),
            prefork,
            born,
            _dir: dir,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn is_prefork(&self) -> bool {
        self.prefork
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn tail(&self) -> String {
        let text = self
            .log
            .as_ref()
            .and_then(|l| fs::read_to_string(l).ok())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" / ")
    }

    /// SIGTERM (both stop their workers gracefully, and they are idle by
    /// now); SIGKILL to the group after 15 s. Then whatever is left.
    fn stop(&mut self) {
        let pid = Pid::from_raw(self.pid());
        let _ = kill(pid, Signal::SIGTERM);
        if !self.wait_exit(Duration::from_secs(15)) {
            eprintln!("{} did not stop on SIGTERM: SIGKILL", self.pid());
            let _ = killpg(pid, Signal::SIGKILL);
            self.wait_exit(Duration::from_secs(5));
        }
        let left = self.kill_leftovers();
        if left > 0 {
            eprintln!("WARNING: {left} worker(s) of {pid} outlived it (killed now)");
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Kills what the pool left running: the peer's workers share its
    /// process group; prefork's run each in their own, and carry
    /// `PREFORK_MASTER_PID=<master>` (only processes started during the
    /// master's life count: its pid may be reused once it is reaped).
    fn kill_leftovers(&self) -> usize {
        let master = self.pid();
        if !self.prefork {
            let alive = live_children(master).len();
            let _ = killpg(Pid::from_raw(master), Signal::SIGKILL);
            return alive;
        }
        let reaped = uptime_ticks();
        let needle = format!("PREFORK_MASTER_PID={master}");
        let mut count = 0;
        for pid in proc_pids() {
            if !start_ticks(pid).is_some_and(|t| t >= self.born && t <= reaped) {
                continue;
            }
            let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                count += 1;
            }
        }
        count
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A row failed: no grace.
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
            self.wait_exit(Duration::from_secs(5));
            self.kill_leftovers();
        }
    }
}

// ---------------------------------------------------------------------------
// Counting workers from the outside

/// A thread counting a master's live children every [`SAMPLE_EVERY`], and
/// timing the scaling lines of prefork's log as they appear.
struct Sampler {
    stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    thread: Option<JoinHandle<Samples>>,
}

/// What the sampler saw: the sizes counted, and the sizes prefork's log
/// announced (when, the size, the line).
#[derive(Default)]
struct Samples {
    sizes: Vec<(Instant, usize)>,
    events: Vec<(Instant, usize, String)>,
    /// When a worker was first seen, and when one was last seen (it exited
    /// before the next sample).
    forks: Vec<Instant>,
    exits: Vec<Instant>,
}

impl Sampler {
    fn start(master: i32, log: Option<PathBuf>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let (s, l) = (Arc::clone(&stop), Arc::clone(&live));
        let thread = std::thread::Builder::new()
            .name("sampler".into())
            .spawn(move || {
                let mut seen = Samples::default();
                let mut known: Vec<i32> = Vec::new();
                let mut tail = log.map(LogTail::new);
                let mut next = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    let mut pids = live_children(master);
                    pids.sort_unstable();
                    let now = Instant::now();
                    l.store(pids.len(), Ordering::Relaxed);
                    seen.sizes.push((now, pids.len()));
                    let new = pids.iter().filter(|p| known.binary_search(p).is_err());
                    seen.forks.extend(new.map(|_| now));
                    let gone = known.iter().filter(|p| pids.binary_search(p).is_err());
                    seen.exits.extend(gone.map(|_| now));
                    known = pids;
                    if let Some(tail) = tail.as_mut() {
                        for line in tail.new_lines() {
                            if let Some(to) = scaled_to(&line) {
                                seen.events.push((now, to, line));
                            }
                        }
                    }
                    next += SAMPLE_EVERY;
                    sleep_until(next);
                }
                seen
            })
            .expect("start the sampler");
        Sampler {
            stop,
            live,
            thread: Some(thread),
        }
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Waits until the size has not changed for `quiet` (and is at most
    /// `REST`); returns it.
    fn wait_stable(&self, quiet: Duration, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        let (mut last, mut since) = (usize::MAX, Instant::now());
        loop {
            let n = self.live();
            if n != last {
                (last, since) = (n, Instant::now());
            } else if n > 0 && n <= REST && since.elapsed() >= quiet {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(format!("the pool did not settle: {n} workers"));
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Complete lines appended to a file since the last call.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let mut chunk = String::new();
        if let Ok(mut f) = File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.offset)).is_ok() {
                if let Ok(n) = f.read_to_string(&mut chunk) {
                    self.offset += n as u64;
                }
            }
        }
        self.partial.push_str(&chunk);
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        done.lines().map(str::to_string).collect()
    }
}

/// The size a `spare scaling: ... -> N worker(s)` line announces.
fn scaled_to(line: &str) -> Option<usize> {
    if !line.contains("spare scaling: ") {
        return None;
    }
    line.split(" -> ").nth(1)?.split(' ').next()?.parse().ok()
}

/// The live children of `parent` (zombies left out), from /proc.
fn live_children(parent: i32) -> Vec<i32> {
    proc_pids()
        .filter(|&pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
            ppid == Some(parent) && state != "Z" && state != "X"
        })
        .collect()
}

fn proc_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

// ---------------------------------------------------------------------------
// Small things

/// Whether Perl and Parallel::Prefork::SpareWorkers are here (its version).
fn peer_available() -> Result<String, String> {
    let out = Command::new("perl")
        .args([
            "-MParallel::Prefork::SpareWorkers",
            "-e",
            "print qq{perl $^V, Parallel::Prefork $Parallel::Prefork::VERSION}",
        ])
        .stderr(Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        _ => Err(
            "no peer: perl or Parallel::Prefork::SpareWorkers is missing (Debian: libparallel-prefork-perl)"
                .into(),
        ),
    }
}

fn machine(quick: bool, worker: &Result<String, String>, peer: &Result<String, String>) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = common::cpu_model();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "# prefork spare scaling benchmark{}",
        if quick { " (quick mode)" } else { "" }
    );
    println!();
    println!("- prefork: {}", common::prefork());
    match worker {
        Ok(w) => println!("- worker: {w} (HTTP_WORKER_CONNECTIONS=1)"),
        Err(why) => println!("- worker: {why}"),
    }
    match peer {
        Ok(v) => println!("- peer: bench/spare_peer.pl ({v})"),
        Err(why) => println!("- peer: {why}"),
    }
    println!("- CPUs: {cpus} ({model}), kernel {}", kernel.trim());
    println!("- load average at start: {}", common::loadavg());
    println!();
}

fn opt(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}
