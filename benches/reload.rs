//! Reloading under load: prefork against its peers.
//!
//! For each setup, a pool of (by default) 8 workers serves a loopback HTTP
//! load (`tests/httpload.rs`: fresh and kept-alive connections, rate-limited
//! threads) for a few seconds, then is reloaded a few times under that
//! load. Measured: requests served, failed and retried (a kept-alive
//! connection closed by the server before any byte of the response, sent
//! again on a new one, as HTTP clients do), latency while steady and while
//! reloading, and how long a reload of every worker takes: from SIGHUP to
//! `rolling restart complete` in prefork's log, and, for every setup, from
//! SIGHUP until no process of the pool from before it is left and the pool
//! has its size again (read from /proc).
//!
//! The setups, as each project documents them:
//! - `prefork-rust`: prefork, `--ready report`, the Rust example
//!   `http_worker` (reads its socket from `LISTEN_FDS`);
//! - `start_server-rust`: Server::Starter's `start_server --port` running
//!   the same worker (it finds its socket in `SERVER_STARTER_PORT`). Server::Starter
//!   runs one process per generation: here, one worker;
//! - `prefork-gunicorn` and `gunicorn`: the WSGI fixture
//!   (`tests/fixtures/wsgi_app.py`) under prefork (8 × `gunicorn --workers
//!   1` on prefork's socket, ready 1 s after exec) and under gunicorn alone
//!   (`--workers 8`, SIGHUP);
//! - `prefork-starman` and `start_server-starman`: the PSGI fixture under
//!   prefork (8 × Starman with one worker, stop signal QUIT) and under
//!   `start_server -- plackup -s Starman --workers 8` (QUIT on SIGHUP, as
//!   Starman's documentation says).
//!
//! Run `cargo build --release --examples` first for the Rust worker
//! (`target/release/examples/http_worker`): `cargo bench --bench reload`
//! builds prefork, not the examples of the scoreboard crate; without it the
//! `-rust` setups are skipped. The other setups need the Debian packages
//! gunicorn, starman, libnet-server-ss-prefork-perl and
//! libserver-starter-perl (`.ci/run` installs them); a setup whose program
//! is missing is skipped, with why.
//!
//! Environment: `PREFORK_RELOAD_ONLY=name,...` runs those setups;
//! `PREFORK_RELOAD_WORKERS` (8), `PREFORK_RELOAD_STEADY_SECS` (3),
//! `PREFORK_RELOAD_COUNT` (3 reloads), `PREFORK_RELOAD_GAP_SECS` (1 s of load
//! after each reload), `PREFORK_RELOAD_RATE` (requests per second per load
//! thread, 200; 0 for as fast as answers come), `PREFORK_RELOAD_THREADS`
//! (`fresh,keepalive`, `2,2`), `PREFORK_RELOAD_TIMEOUT_SECS` (30, for one
//! reload), `PREFORK_BENCH_BIN` (the prefork binary),
//! `PREFORK_RELOAD_WORKER` (the Rust worker), `PREFORK_RELOAD_PREFORK_ARGS`
//! (more options for prefork, such as `--max-surge 8`). The whole run takes about
//! two minutes with the defaults.
//!
//! Every server runs in its own process group, with `PR_SET_PDEATHSIG`, and
//! with a variable naming this run in its environment: when a setup ends,
//! whatever carries it is killed, by process group and pid.

mod common;
#[path = "../tests/httpload.rs"]
mod httpload;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use httpload::{Latency, Load, Plan, Report};

/// What a run is made of, from the environment.
struct Settings {
    workers: usize,
    steady: Duration,
    reloads: usize,
    gap: Duration,
    timeout: Duration,
    plan: Plan,
}

impl Settings {
    fn from_env() -> Settings {
        let threads = env_string("PREFORK_RELOAD_THREADS", "2,2");
        let (fresh, keepalive) = threads
            .split_once(',')
            .and_then(|(f, k)| Some((f.trim().parse().ok()?, k.trim().parse().ok()?)))
            .unwrap_or_else(|| panic!("PREFORK_RELOAD_THREADS={threads}: want FRESH,KEEPALIVE"));
        let rate: u32 = env_number("PREFORK_RELOAD_RATE", 200);
        Settings {
            workers: env_number("PREFORK_RELOAD_WORKERS", 8),
            steady: Duration::from_secs_f64(env_number("PREFORK_RELOAD_STEADY_SECS", 3.0)),
            reloads: env_number("PREFORK_RELOAD_COUNT", 3),
            gap: Duration::from_secs_f64(env_number("PREFORK_RELOAD_GAP_SECS", 1.0)),
            timeout: Duration::from_secs_f64(env_number("PREFORK_RELOAD_TIMEOUT_SECS", 30.0)),
            plan: Plan {
                fresh,
                keepalive,
                rate_per_thread: (rate > 0).then_some(rate),
                path: "/",
            },
        }
    }
}

fn env_string(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        _ => default,
    }
}

fn fixtures() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .to_string_lossy()
        .into_owned()
}

/// How the end of a reload shows.
#[derive(Clone, Copy, PartialEq)]
enum Done {
    /// prefork's `rolling restart complete` line (and the pool's pids).
    LogLine,
    /// The pool's pids only.
    Pids,
}

/// One setup: the command that starts it, on which address, and how many
/// processes its pool has once running.
struct Setup {
    name: &'static str,
    /// What the table says it is.
    what: String,
    /// `{ADDR}` in it stands for a free loopback address picked just
    /// before it starts; without one, prefork picks the port (read from its
    /// log).
    command: Vec<String>,
    /// The processes under the root once all are running.
    procs: usize,
    done: Done,
    /// Whether to give it a board of its own in `PREFORK_SCOREBOARD_DIR`:
    /// the Rust worker, out of prefork, makes its own status file there.
    board: bool,
}

fn setups(s: &Settings) -> Vec<Result<Setup, (&'static str, String)>> {
    let n = s.workers.to_string();
    let wsgi = || -> Vec<String> {
        strings(&[
            "--chdir",
            &fixtures(),
            "--graceful-timeout",
            "10",
            "wsgi_app:app",
        ])
    };
    let psgi = format!("{}/app.psgi", fixtures());
    let starman = |workers: &str| -> Vec<String> {
        strings(&[
            "plackup",
            "-s",
            "Starman",
            "-E",
            "deployment",
            "--workers",
            workers,
            &psgi,
        ])
    };
    let extra = env_string("PREFORK_RELOAD_PREFORK_ARGS", "");
    let prefork_with = |ready: &str, stop: &str, worker: Vec<String>| -> Vec<String> {
        let mut cmd = strings(&[
            &common::prefork(),
            "--listen",
            "127.0.0.1:0",
            "-w",
            &n,
            "--ready",
            ready,
            "--stop-signal",
            stop,
        ]);
        cmd.extend(extra.split_whitespace().map(str::to_string));
        cmd.push("--".into());
        cmd.extend(worker);
        cmd
    };
    let mut all = Vec::new();

    let rust = common::http_worker("PREFORK_RELOAD_WORKER");
    all.push(
        rust.clone()
            .map_err(|e| ("prefork-rust", e))
            .map(|w| Setup {
                name: "prefork-rust",
                what: format!("prefork, {n} × http_worker (ready: report)"),
                command: prefork_with("report", "TERM", vec![w]),
                procs: s.workers,
                done: Done::LogLine,
                board: false,
            }),
    );
    all.push(
        rust.map_err(|e| ("start_server-rust", e))
            .and_then(|w| {
                need(
                    "start_server-rust",
                    "start_server",
                    "libserver-starter-perl",
                )?;
                Ok(w)
            })
            .map(|w| Setup {
                name: "start_server-rust",
                what: "start_server, 1 × http_worker (one per generation)".into(),
                command: strings(&["start_server", "--port", ADDR, "--", &w]),
                procs: 1,
                done: Done::Pids,
                board: true,
            }),
    );
    all.push(need("prefork-gunicorn", "gunicorn", "gunicorn").map(|()| {
        let mut gunicorn = strings(&["gunicorn", "--workers", "1"]);
        gunicorn.extend(wsgi());
        Setup {
            name: "prefork-gunicorn",
            what: format!("prefork, {n} × gunicorn --workers 1 (ready: 1s)"),
            // gunicorn's graceful stop is TERM.
            command: prefork_with("1s", "TERM", gunicorn),
            procs: 2 * s.workers,
            done: Done::LogLine,
            board: false,
        }
    }));
    all.push(need("gunicorn", "gunicorn", "gunicorn").map(|()| {
        let mut command = strings(&["gunicorn", "--workers", &n, "--bind", ADDR]);
        command.extend(wsgi());
        Setup {
            name: "gunicorn",
            what: format!("gunicorn --workers {n}, SIGHUP"),
            command,
            procs: s.workers,
            done: Done::Pids,
            board: false,
        }
    }));
    let has_starman = |setup| {
        need(setup, "plackup", "starman")?;
        need_perl(
            setup,
            "Net::Server::SS::PreFork",
            "libnet-server-ss-prefork-perl",
        )
    };
    all.push(has_starman("prefork-starman").map(|()| Setup {
        name: "prefork-starman",
        what: format!("prefork, {n} × Starman --workers 1 (ready: 1s)"),
        // Starman's graceful stop is QUIT (see tests/third_party.rs on
        // what it does to the workers of Starman's own).
        command: prefork_with("1s", "QUIT", starman("1")),
        procs: 2 * s.workers,
        done: Done::LogLine,
        board: false,
    }));
    all.push(
        has_starman("start_server-starman")
            .and_then(|()| {
                need(
                    "start_server-starman",
                    "start_server",
                    "libserver-starter-perl",
                )
            })
            .map(|()| {
                let mut command = strings(&[
                    "start_server",
                    "--port",
                    ADDR,
                    "--signal-on-hup=QUIT",
                    "--signal-on-term=QUIT",
                    "--",
                ]);
                command.extend(starman(&n));
                Setup {
                    name: "start_server-starman",
                    what: format!("start_server, Starman --workers {n} (QUIT on HUP)"),
                    command,
                    procs: 1 + s.workers,
                    done: Done::Pids,
                    board: false,
                }
            }),
    );
    all
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Ok when `program` runs (`--version`), else why the setup is skipped.
fn need(setup: &'static str, program: &str, package: &str) -> Result<(), (&'static str, String)> {
    let ok = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err((
            setup,
            format!("`{program}` does not run: apt-get install {package}"),
        ))
    }
}

fn need_perl(
    setup: &'static str,
    module: &str,
    package: &str,
) -> Result<(), (&'static str, String)> {
    let ok = Command::new("perl")
        .arg(format!("-M{module}"))
        .arg("-e1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err((
            setup,
            format!("perl lacks {module}: apt-get install {package}"),
        ))
    }
}

/// Stands for the address in a setup's command.
const ADDR: &str = "{ADDR}";

/// A loopback port free a moment ago, for the servers that bind their own:
/// below the kernel's ephemeral range, where the load's own connections
/// would take ports (`ip_local_port_range` starts at 32768 by default).
fn free_port() -> Result<SocketAddr, String> {
    let start = 20000 + (std::process::id() % 10000) as u16;
    (start..32000)
        .chain(20000..start)
        .find_map(|port| {
            TcpListener::bind(("127.0.0.1", port))
                .ok()?
                .local_addr()
                .ok()
        })
        .ok_or_else(|| "no free port between 20000 and 32000".into())
}

// ---------------------------------------------------------------------------

fn main() {
    let settings = Settings::from_env();
    let only = std::env::var("PREFORK_RELOAD_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    header(&settings);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for (i, setup) in setups(&settings).into_iter().enumerate() {
        match setup {
            Err((name, why)) if wanted(name) => notes.push(format!("- `{name}` skipped: {why}")),
            Err(_) => {}
            Ok(setup) if wanted(setup.name) => {
                eprintln!("# {}", setup.name);
                match run(&settings, &setup, i) {
                    Ok((row, command)) => {
                        // Paths from the repository's root, as one runs it.
                        let command =
                            command.replace(&format!("{}/", env!("CARGO_MANIFEST_DIR")), "");
                        notes.push(format!("- `{}`: `{command}`", setup.name));
                        rows.push(row);
                    }
                    Err(why) => notes.push(format!("- `{}` failed: {why}", setup.name)),
                }
            }
            Ok(_) => {}
        }
    }
    println!("| setup | steady req/s | steady p50 / p99 | reloading req/s | reloading p50 / p99 / max | failed | retried | reload: log line | reload: pids |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        println!("{row}");
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}

fn header(s: &Settings) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = common::cpu_model();
    let rate = s
        .plan
        .rate_per_thread
        .map_or("as fast as answered".to_string(), |r| {
            format!("{r} req/s each")
        });
    println!("# Reloading under load: prefork and its peers");
    println!();
    println!(
        "- CPUs: {cpus} ({model}); load average at start: {}",
        common::loadavg()
    );
    println!("- prefork: {}", common::prefork());
    println!(
        "- load: {} fresh-connection and {} keep-alive threads, {rate}; {} s steady, then {} reload(s) of {} workers, each followed by {} s of load",
        s.plan.fresh,
        s.plan.keepalive,
        s.steady.as_secs_f64(),
        s.reloads,
        s.workers,
        s.gap.as_secs_f64()
    );
    println!(
        "- a reload's pace is each program's: prefork rolls `max_surge` (1) slot(s) at a time, stopping an old worker once its replacement is ready (`report`: its first status; else a delay after its exec); start_server stops the old generation `--interval` (1 s) after it started the new one; gunicorn stops its old workers as soon as it has forked the new ones"
    );
    println!(
        "- reload times: median and max of the reloads; \"log line\" is SIGHUP to prefork's `rolling restart complete`, \"pids\" is SIGHUP until no process of the pool from before it is left and the pool has its size again"
    );
    println!();
}

/// What one reload took: to the log line (prefork), and to the pool's
/// pids; `None` if not within the timeout.
struct Reload {
    sent: Instant,
    log: Option<Duration>,
    pids: Option<Duration>,
    /// When its window of load ends: the later of the two, or the timeout.
    end: Instant,
}

/// Runs one setup; returns its table row and the command it ran.
fn run(s: &Settings, setup: &Setup, index: usize) -> Result<(String, String), String> {
    let own = setup.command.iter().any(|a| a == ADDR);
    let addr = if own { Some(free_port()?) } else { None };
    let command: Vec<String> = setup
        .command
        .iter()
        .map(|a| match addr {
            Some(addr) if a == ADDR => addr.to_string(),
            _ => a.clone(),
        })
        .collect();
    eprintln!("  {}", command.join(" "));
    let mut server = Server::start(&command, setup.board, index)?;
    let addr = match addr {
        Some(addr) => addr,
        None => server.listening_on(Duration::from_secs(30))?,
    };
    server.wait_serving(addr, setup.procs, Duration::from_secs(60))?;

    let load = Load::start(addr, s.plan);
    std::thread::sleep(s.steady);
    let mut reloads = Vec::new();
    for _ in 0..s.reloads {
        reloads.push(server.reload(setup, s.timeout)?);
        std::thread::sleep(s.gap);
    }
    let report = load.stop();
    server.stop();
    eprintln!("  {report}");
    Ok((row(setup, &report, &reloads), command.join(" ")))
}

fn row(setup: &Setup, report: &Report, reloads: &[Reload]) -> String {
    let first = reloads
        .first()
        .map_or(report.duration, |r| report.at(r.sent));
    let steady = report.window(Duration::ZERO, first);
    let steady_rate = (steady.ok + steady.retried) as f64 / first.as_secs_f64().max(1e-9);
    let windows: Vec<(Duration, Duration)> = reloads
        .iter()
        .map(|r| (report.at(r.sent), report.at(r.end)))
        .collect();
    let reloading: Vec<&httpload::Sample> = report
        .samples
        .iter()
        .filter(|x| {
            windows
                .iter()
                .any(|&(a, b)| x.sent_at >= a && x.sent_at < b)
        })
        .collect();
    let reload_secs: f64 = windows.iter().map(|(a, b)| (*b - *a).as_secs_f64()).sum();
    let served_reloading = reloading.iter().filter(|x| x.served()).count();
    let latency = Latency::of(
        reloading
            .iter()
            .filter(|x| x.served())
            .map(|x| x.latency)
            .collect(),
    );
    let times = |pick: fn(&Reload) -> Option<Duration>| -> String {
        let mut got: Vec<Duration> = reloads.iter().filter_map(pick).collect();
        let missing = reloads.len() - got.len();
        if got.is_empty() {
            return if missing > 0 {
                "none in time".into()
            } else {
                "-".into()
            };
        }
        got.sort();
        let mut text = format!(
            "{} / {}",
            secs(got[got.len() / 2]),
            secs(*got.last().expect("not empty"))
        );
        if missing > 0 {
            let _ = write!(text, " ({missing} not in time)");
        }
        text
    };
    let log = if setup.done == Done::LogLine {
        times(|r| r.log)
    } else {
        "-".into()
    };
    format!(
        "| {} | {:.0} | {} / {} | {:.0} | {} / {} / {} | {} | {} | {} | {} |",
        setup.what,
        steady_rate,
        ms(steady.latency.p50),
        ms(steady.latency.p99),
        served_reloading as f64 / reload_secs.max(1e-9),
        ms(latency.p50),
        ms(latency.p99),
        ms(latency.max),
        report.failed,
        report.retried,
        log,
        times(|r| r.pids),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// A server of the benchmark's

/// A setup's root process (prefork, start_server, gunicorn), its log, and
/// the variable that marks everything started under it.
struct Server {
    child: Child,
    log: PathBuf,
    marker: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(command: &[String], board: bool, index: usize) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix("prefork-reload-bench-")
            .tempdir()
            .map_err(|e| format!("a temporary directory: {e}"))?;
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let marker_value = format!("{}-{index}", std::process::id());
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .env("PREFORK_RELOAD_BENCH", &marker_value)
            .env("RUST_LOG", "info")
            .env("APP_VERSION", "bench")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .process_group(0);
        if board {
            let board = dir.path().join("board");
            fs::create_dir(&board).map_err(|e| format!("{}: {e}", board.display()))?;
            cmd.env("PREFORK_SCOREBOARD_DIR", board);
        }
        common::dies_with_this_process(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
        Ok(Server {
            child,
            log,
            marker: format!("PREFORK_RELOAD_BENCH={marker_value}"),
            _dir: dir,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("exited ({status}):\n{}", self.tail())),
            _ => None,
        }
    }

    /// The address of prefork's `listening on ADDR` line.
    fn listening_on(&mut self, timeout: Duration) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.log().lines().find_map(|line| {
                let rest = &line[line.find("listening on ")? + "listening on ".len()..];
                rest.split_whitespace().next()?.parse().ok()
            });
            if let Some(addr) = found {
                return Ok(addr);
            }
            if let Some(why) = self.exited() {
                return Err(why);
            }
            if Instant::now() >= deadline {
                return Err(format!("no `listening on` line:\n{}", self.tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `procs` processes run under the root and a request is
    /// answered with a 200.
    fn wait_serving(
        &mut self,
        addr: SocketAddr,
        procs: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if descendants(self.pid()).len() >= procs
                && httpload::get(addr, "/").is_ok_and(|r| r.status == 200)
            {
                // Give the last ones started a moment to accept too.
                std::thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
            if let Some(why) = self.exited() {
                return Err(why);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not serving with {procs} processes in {} s ({} now):\n{}",
                    timeout.as_secs(),
                    descendants(self.pid()).len(),
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGHUP, then the times of the reload's end.
    fn reload(&mut self, setup: &Setup, timeout: Duration) -> Result<Reload, String> {
        const DONE: &str = "rolling restart complete";
        let before: HashSet<i32> = descendants(self.pid()).into_iter().collect();
        let completed = self.log().matches(DONE).count();
        let sent = Instant::now();
        kill(Pid::from_raw(self.pid()), Signal::SIGHUP).map_err(|e| format!("SIGHUP: {e}"))?;
        let mut log = None;
        let mut pids = None;
        let deadline = sent + timeout;
        loop {
            let now = descendants(self.pid());
            let elapsed = sent.elapsed();
            if pids.is_none() && now.len() >= setup.procs && now.iter().all(|p| !before.contains(p))
            {
                pids = Some(elapsed);
            }
            if setup.done == Done::LogLine
                && log.is_none()
                && self.log().matches(DONE).count() > completed
            {
                log = Some(elapsed);
            }
            if pids.is_some() && (log.is_some() || setup.done == Done::Pids) {
                break;
            }
            if let Some(why) = self.exited() {
                return Err(why);
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "  a reload did not end within {} s: {} of {} processes from before it left",
                    timeout.as_secs(),
                    now.iter().filter(|p| before.contains(p)).count(),
                    before.len()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Reload {
            sent,
            log,
            pids,
            end: Instant::now(),
        })
    }

    /// SIGTERM (and for start_server with Starman, its `--signal-on-term`),
    /// a few seconds to exit, then SIGKILL to whatever is left.
    fn stop(&mut self) {
        let root = Pid::from_raw(self.pid());
        let _ = kill(root, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        }
        let _ = self.child.wait();
        // Whatever was started under it and is left (a worker leads its own
        // process group under prefork; a server's orphans move to init).
        for pid in marked(&self.marker) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// `(pid, ppid)` of every live process (zombies left out).
fn processes() -> Vec<(i32, i32)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            (state != "Z" && state != "X").then_some((pid, ppid))
        })
        .collect()
}

/// The live processes under `root`, at any depth.
fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, ppid) in processes() {
        children.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            found.push(c);
            queue.push(c);
        }
    }
    found
}

/// The processes whose environment holds `marker` (`NAME=VALUE`).
fn marked(marker: &str) -> Vec<i32> {
    processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
        })
        .collect()
}
