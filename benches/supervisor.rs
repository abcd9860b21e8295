//! Benchmarks of the supervisor (the `prefork` binary), not of the library:
//!
//! 1. respawn latency: SIGKILL of a worker to its replacement's status file;
//! 2. start-up time of 100 and 1000 workers, and the master's memory;
//! 3. the idle master's wake-ups and CPU time;
//! 4. the cost of one board check (the master's own debug log), against a
//!    library `read_all` of the same board;
//! 5. the wall time of one `prefork report STATUS`;
//! 6. respawn latency and SIGTERM to exit with a stalled reader: standard
//!    output or error a pipe nobody reads, full (issue 10);
//! 7. respawn latency while a loopback load scrapes `/metrics` as fast as
//!    it answers, against the same master quiet (issue 13);
//! 8. `GET /metrics` of a master running 1000 workers (issue 13);
//! 9. relayed worker output (`--worker-output prefix`): 8 workers writing
//!    flat out, the master's stdout to /dev/null (issue 14).
//!
//! `cargo bench --bench supervisor` runs them all (about 2 min);
//! `PREFORK_BENCH_QUICK=1` runs a shorter version of each (about 45 s),
//! `PREFORK_BENCH_ONLY=respawn,startup,idle,check,report,stalled,scrape,metrics,relay` a subset;
//! `PREFORK_BENCH_BIN=path` measures another build of prefork, and
//! `PREFORK_BENCH_STARTUP_WORKER="program args"` starts that worker instead
//! of `sleep 100000` in section 2. Each
//! master runs in a fresh directory under /dev/shm, in its own process group,
//! with `PR_SET_PDEATHSIG` (it dies with this process, and its workers die
//! with it); a guard stops it when a section ends or fails, and kills any
//! process left with its `PREFORK_MASTER_PID`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

mod common;
#[path = "../tests/httpload.rs"]
mod httpload;

use common::{bench_dir, clock_ticks, sleep_until, start_ticks, uptime_ticks};

/// The binary under test: `PREFORK_BENCH_BIN` when set (bench/supervisor.sh
/// points it at a plain `cargo build --release` binary: the bench profile's
/// build differs, with debug info and the dev-dependencies' features), else
/// the one cargo built for this bench.
fn prefork() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(common::prefork)
}

/// A worker that never reports and never exits on its own.
const SLEEPER: &[&str] = &["sleep", "100000"];

/// A worker that reports once (so that `read_all` has a record to read),
/// then sleeps with the status file still open and locked.
fn reporting_sleeper() -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#""$0" report "idle slot=$PREFORK_WORKER_SLOT" && exec sleep 100000"#.into(),
        prefork().into(),
    ]
}

fn main() {
    let quick = std::env::var_os("PREFORK_BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
    let only = std::env::var("PREFORK_BENCH_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|s| s.trim() == name);
    machine(quick);
    // In the order of their numbers (the section titles and BENCHMARKS.md
    // carry them).
    let sections: [(_, fn(bool)); 9] = [
        ("respawn", respawn_latency),
        ("startup", startup),
        ("idle", idle_wakeups),
        ("check", check_cost),
        ("report", report_call),
        ("stalled", stalled_reader),
        ("scrape", scrape_storm),
        ("metrics", metrics_of_1000),
        ("relay", relay_throughput),
    ];
    for (name, run) in sections {
        if wanted(name) {
            run(quick);
        }
    }
}

/// Section 9: what the master relays with `--worker-output prefix` from 8
/// workers writing as fast as they can (`yes`), its standard output
/// /dev/null: bytes read from the workers' pipes and written out (the
/// master's `rchar` and `wchar` in /proc/<pid>/io), and its CPU.
fn relay_throughput(quick: bool) {
    const WORKERS: usize = 8;
    let period = Duration::from_secs(if quick { 3 } else { 10 });
    section(&format!(
        "9. Relayed output: {WORKERS} workers running `yes` flat out, `--worker-output prefix`, \
         the master's stdout /dev/null, over {}",
        fmt(period)
    ));
    println!(
        "| lines | in (read from workers) | out (written, prefixes included) | lines/s | master CPU | respawn median / p90 (kills) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let long = format!("exec yes {}", "x".repeat(99));
    let kills = if quick { 20 } else { 60 };
    for (label, script, line_len) in [
        (
            "none (`sleep`: the respawn's reference)",
            "exec sleep 100000",
            0.0,
        ),
        ("2 B (`yes`)", "exec yes", 2.0),
        ("100 B", long.as_str(), 100.0),
    ] {
        let mut master = Master::start(
            WORKERS,
            &["--worker-output", "prefix"],
            &["sh", "-c", script],
            None,
        );
        let mut alive = master.wait_for_workers(WORKERS, Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(300));
        let io = |pid: i32| {
            let text = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            (field("rchar:"), field("wchar:"))
        };
        let (r0, w0) = io(master.pid());
        let u0 = Usage::of(master.pid());
        let t0 = Instant::now();
        std::thread::sleep(period);
        let (r1, w1) = io(master.pid());
        let cpu = Usage::of(master.pid()).since(&u0).runtime();
        let secs = t0.elapsed().as_secs_f64();
        let mb = |bytes: u64| bytes as f64 / secs / 1e6;
        let input = mb(r1 - r0);
        // While the workers write on: SIGKILL one, time its replacement.
        let respawns = time_respawns(&mut master, &mut alive, kills, Duration::from_secs(5));
        let r = Summary::of(&respawns.latencies);
        let lines = if line_len > 0.0 {
            format!("{:.2} M", input * 1e6 / line_len / 1e6)
        } else {
            "-".to_string()
        };
        println!(
            "| {label} | {input:.1} MB/s | {:.1} MB/s | {lines} | {:.0}% | {} / {} ({}) |",
            mb(w1 - w0),
            cpu.as_secs_f64() / secs * 100.0,
            fmt(r.median),
            fmt(r.p90),
            respawns.latencies.len()
        );
        master.stop(Signal::SIGTERM);
    }
    println!();
    println!(
        "in: bytes the master read (its pipes from the workers, and the little else it reads); \
         out: bytes it wrote, each line with its `[slot S pid P] ` prefix; target (issue 14): in >= 100 MB/s."
    );
}

/// A master of `workers` `sleep` workers serving its status endpoint on a
/// free loopback port, and that port.
fn master_with_endpoint(workers: usize) -> (std::net::SocketAddr, Master) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let endpoint = addr.to_string();
    let master = Master::start(workers, &["--status-listen", &endpoint], SLEEPER, None);
    (addr, master)
}

/// Section 8: `GET /metrics` (a new connection each, as Prometheus
/// scrapes) of a master running 1000 workers, from the request's first
/// byte to the answer's last.
fn metrics_of_1000(quick: bool) {
    const WORKERS: usize = 1000;
    let requests = if quick { 100 } else { 500 };
    section(&format!(
        "8. GET /metrics of a master running {WORKERS} `sleep` workers ({requests} requests, a new connection each)"
    ));
    let (addr, mut master) = master_with_endpoint(WORKERS);
    master.wait_for_workers(WORKERS, Duration::from_secs(120));
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..requests {
        let t0 = Instant::now();
        let answer = httpload::get(addr, "/metrics").expect("an answer");
        times.push(t0.elapsed());
        assert_eq!(answer.status, 200);
        size += 1;
    }
    master.stop(Signal::SIGTERM);
    let s = Summary::of(&times);
    println!("| requests | median | p90 | p99 | max |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {size} | {} | {} | {} | {} |",
        fmt(s.median),
        fmt(s.p90),
        fmt(s.p99),
        fmt(s.max)
    );
    verdict(
        "median GET /metrics with 1000 workers",
        s.median,
        Duration::from_millis(2),
    );
    println!("load average after: {}", common::loadavg());
}

/// Section 7, respawn latency with nobody on the status endpoint, then while a
/// loopback load scrapes `/metrics` (keep-alive and new connections), on the
/// same master: the endpoint shares the master's loop, and must not slow a
/// respawn. Two storms: 1000 scrapes a second (a fleet's Prometheus
/// servers, misconfigured tenfold), and as fast as it answers (which, on
/// two cores, also takes the CPU from the master). Quiet and storm rounds
/// alternate, so that a change in the machine's load falls on all.
fn scrape_storm(quick: bool) {
    const WORKERS: usize = 16;
    let rounds = if quick { 1 } else { 3 };
    let storm = Duration::from_secs(if quick { 3 } else { 10 });
    section(&format!(
        "7. Respawn latency under a scrape storm ({WORKERS} `sleep` workers; {rounds} round(s) of {} s quiet, {} s \
         at 1000 scrapes/s, {} s unlimited; 2 threads scraping /metrics, one on a kept-alive connection, one on a new \
         connection per request)",
        storm.as_secs(),
        storm.as_secs(),
        storm.as_secs()
    ));
    let (addr, mut master) = master_with_endpoint(WORKERS);
    let mut alive = master.wait_for_workers(WORKERS, Duration::from_secs(30));
    struct Storm {
        name: &'static str,
        rate: Option<u32>,
        respawns: Vec<Duration>,
        scrapes: u64,
        failed: u64,
        latencies: Vec<Duration>,
    }
    let mut storms = [
        ("quiet", None, false),
        ("1000 scrapes/s", Some(500), true),
        ("unlimited", None, true),
    ]
    .map(|(name, rate, load)| {
        (
            load,
            Storm {
                name,
                rate,
                respawns: Vec::new(),
                scrapes: 0,
                failed: 0,
                latencies: Vec::new(),
            },
        )
    });
    for _ in 0..rounds {
        for (load, s) in storms.iter_mut() {
            let load = load.then(|| {
                httpload::Load::start(
                    addr,
                    httpload::Plan {
                        fresh: 1,
                        keepalive: 1,
                        rate_per_thread: s.rate,
                        path: "/metrics",
                    },
                )
            });
            let until = Instant::now() + storm;
            while Instant::now() < until {
                let r = time_respawns(&mut master, &mut alive, 1, Duration::from_secs(5));
                s.respawns.extend(r.latencies);
            }
            if let Some(load) = load {
                let report = load.stop();
                s.scrapes += report.served();
                s.failed += report.failed;
                s.latencies.extend(
                    report
                        .samples
                        .iter()
                        .filter(|x| x.served())
                        .map(|x| x.latency),
                );
            }
        }
    }
    master.stop(Signal::SIGTERM);
    println!("| load on /metrics | respawns | median | p90 | p99 | max | median / quiet | scrapes/s | failed | scrape p50 / p99 |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let quiet = Summary::of(&storms[0].1.respawns).median;
    let secs = storm.as_secs_f64() * rounds as f64;
    for (_, s) in &storms {
        let r = Summary::of(&s.respawns);
        let (scrapes, failed, latency) = if s.latencies.is_empty() {
            ("-".to_string(), "-".to_string(), "-".to_string())
        } else {
            let l = Summary::of(&s.latencies);
            (
                format!("{:.0}", s.scrapes as f64 / secs),
                s.failed.to_string(),
                format!("{} / {}", fmt(l.median), fmt(l.p99)),
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {scrapes} | {failed} | {latency} |",
            s.name,
            s.respawns.len(),
            fmt(r.median),
            fmt(r.p90),
            fmt(r.p99),
            fmt(r.max),
            r.median.as_secs_f64() / quiet.as_secs_f64(),
        );
    }
    let t = Summary::of(&storms[1].1.respawns).median;
    println!();
    println!(
        "target: median respawn latency at 1000 scrapes/s within 10 % of the quiet one: {} vs {} ({:+.1} %) -> {}",
        fmt(t),
        fmt(quiet),
        (t.as_secs_f64() / quiet.as_secs_f64() - 1.0) * 100.0,
        if t.as_secs_f64() <= quiet.as_secs_f64() * 1.1 { "met" } else { "MISSED" }
    );
    println!("load average after: {}", common::loadavg());
}

// ---------------------------------------------------------------------------
// The sections

fn machine(quick: bool) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = common::cpu_model();
    let kernel = read_trimmed("/proc/sys/kernel/osrelease");
    let pid_max = read_trimmed("/proc/sys/kernel/pid_max");
    let nproc = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        .map_or("?".to_string(), |(soft, _)| limit(soft));
    println!(
        "# prefork supervisor benchmarks{}",
        if quick { " (quick mode)" } else { "" }
    );
    println!();
    let size = fs::metadata(prefork()).map_or(0, |m| m.len());
    println!(
        "- binary: {} ({:.1} MiB)",
        prefork(),
        size as f64 / 1048576.0
    );
    println!("- CPUs: {cpus} ({model}), kernel {kernel}");
    println!("- pid_max {pid_max}, RLIMIT_NPROC {nproc}");
    println!("- load average at start: {}", common::loadavg());
    println!();
}

/// A worker younger than `--min-uptime` (1 s by the master's clock, which
/// starts a little after we see the file) would count as a quick death.
const RESPAWN_MIN_AGE: Duration = Duration::from_millis(1100);
/// Lets the master finish the previous respawn (exec, log) before the next.
const RESPAWN_GAP: Duration = Duration::from_millis(40);

/// What a series of kills measured: see [`time_respawns`].
#[derive(Default)]
struct Respawns {
    /// SIGKILL to the replacement's status file, per kill.
    latencies: Vec<Duration>,
    /// SIGKILL to the removal of the victim's file (the reap), when seen.
    reaped: Vec<Duration>,
    /// That removal to the replacement's file (the spawn).
    forked: Vec<Duration>,
    /// Kills whose removal and replacement came in one inotify read.
    together: usize,
    /// The worker whose replacement did not come in time: the kills stop
    /// there.
    blocked: Option<i32>,
}

/// Kills up to `kills` workers of `alive` (pid, when its file appeared) one
/// at a time, the oldest first, each once it is [`RESPAWN_MIN_AGE`] old and
/// [`RESPAWN_GAP`] after the previous replacement, and times each one's
/// replacement. Stops at the first replacement that does not come within
/// `wait`.
fn time_respawns(
    master: &mut Master,
    alive: &mut [(i32, Instant)],
    kills: usize,
    wait: Duration,
) -> Respawns {
    let mut r = Respawns::default();
    let mut last = Instant::now();
    for _ in 0..kills {
        let oldest = (0..alive.len())
            .min_by_key(|&i| alive[i].1)
            .expect("workers");
        let (victim, born) = alive[oldest];
        sleep_until((born + RESPAWN_MIN_AGE).max(last + RESPAWN_GAP));
        let t0 = Instant::now();
        kill(Pid::from_raw(victim), Signal::SIGKILL).expect("kill a worker");
        let Some((pid, seen)) = master.watch.next_new(&master.seen, t0 + wait) else {
            r.blocked = Some(victim);
            break;
        };
        master.seen.insert(pid);
        r.latencies.push(seen - t0);
        // The master removes the dead worker's file when it reaps it, just
        // before it forks the replacement.
        if let Some(&removed) = master.watch.removed.get(&victim) {
            r.reaped.push(removed.saturating_duration_since(t0));
            r.forked.push(seen.saturating_duration_since(removed));
            r.together += usize::from(removed == seen);
        }
        alive[oldest] = (pid, seen);
        last = seen;
    }
    r
}

/// 1. From a worker's SIGKILL to its replacement's `status_<pid>`.
fn respawn_latency(quick: bool) {
    const WORKERS: usize = 16;
    let kills = if quick { 60 } else { 300 };
    section(&format!(
        "1. Respawn latency: SIGKILL to the replacement's status file ({WORKERS} `sleep` workers, {kills} kills)"
    ));
    let mut master = Master::start(WORKERS, &[], SLEEPER, None);
    let mut alive: Vec<(i32, Instant)> = master.wait_for_workers(WORKERS, Duration::from_secs(30));
    println!(
        "master pid {} (for `strace -c -f -p` or `perf record -p`)",
        master.pid()
    );
    println!();
    let _ = io::stdout().flush();
    let Respawns {
        latencies,
        reaped,
        forked,
        together,
        blocked,
    } = time_respawns(&mut master, &mut alive, kills, Duration::from_secs(5));
    if let Some(victim) = blocked {
        panic!(
            "no replacement for worker {victim} within 5 s: {}",
            tail(&master.log)
        );
    }
    let pid = master.pid();
    let hwm = proc_status_number(pid, "VmHWM");
    master.stop(Signal::SIGTERM);
    let log = fs::read_to_string(&master.log).unwrap_or_default();
    let quick_deaths = log.lines().filter(|l| l.contains("crash-looping")).count();
    let respawns = log.lines().filter(|l| l.contains("(restart ")).count();
    println!("| interval | samples | median | p90 | p99 | max | min | mean |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let s = Summary::of(&latencies);
    for (name, samples) in [
        ("**SIGKILL -> new status file**", &latencies),
        ("SIGKILL -> old file removed (reap)", &reaped),
        ("old file removed -> new status file (spawn)", &forked),
    ] {
        if samples.is_empty() {
            continue;
        }
        let s = Summary::of(samples);
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            samples.len(),
            fmt(s.median),
            fmt(s.p90),
            fmt(s.p99),
            fmt(s.max),
            fmt(s.min),
            fmt(s.mean)
        );
    }
    println!();
    println!(
        "(the split is as this process saw the inotify events: when both come in one read, \
         as in {together} of {} kills here, the whole latency counts as reap)",
        reaped.len()
    );
    println!(
        "master log: {respawns} respawns, {quick_deaths} crash-loop delays (must be 0); master VmHWM {hwm} KiB"
    );
    verdict("median respawn latency", s.median, Duration::from_millis(2));
    println!("load average after: {}", common::loadavg());
}

/// 2. Start-up time and the master's memory.
fn startup(quick: bool) {
    // Another worker (a diagnostic: how much of the start-up is the
    // worker's own exec), as words separated by spaces.
    let custom = std::env::var("PREFORK_BENCH_STARTUP_WORKER").unwrap_or_default();
    let worker: Vec<&str> = if custom.trim().is_empty() {
        SLEEPER.to_vec()
    } else {
        custom.split_whitespace().collect()
    };
    section(&format!(
        "2. Start-up: `prefork -w N -- {}` until all N status files exist",
        worker.join(" ")
    ));
    let max_workers = workers_allowed(1000);
    let sizes: Vec<(usize, usize)> = [(1, 5), (100, 5), (1000, 5)]
        .into_iter()
        .filter(|&(n, _)| n <= max_workers)
        .map(|(n, runs)| (n, if quick { 1 } else { runs }))
        .collect();
    println!(
        "| workers | runs | start-up median | min | max | per worker (median) | master CPU (median) | VmRSS | of which anon / file | VmHWM | graceful stop (SIGTERM) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rss_100 = None;
    for (n, runs) in sizes {
        let mut times = Vec::new();
        let mut stops = Vec::new();
        let mut cpu = Vec::new();
        let (mut rss, mut hwm, mut anon, mut file) = (0, 0, 0, 0);
        for _ in 0..runs {
            let mut master = Master::start(n, &[], &worker, None);
            master.wait_for_workers(n, Duration::from_secs(120));
            times.push(master.started.elapsed());
            cpu.push(Usage::of(master.pid()).runtime());
            // Let the master log its last spawn and settle in its loop.
            std::thread::sleep(Duration::from_millis(300));
            let now = proc_status_number(master.pid(), "VmRSS");
            if now >= rss {
                rss = now;
                anon = proc_status_number(master.pid(), "RssAnon");
                file = proc_status_number(master.pid(), "RssFile");
            }
            hwm = hwm.max(proc_status_number(master.pid(), "VmHWM"));
            stops.push(master.stop(Signal::SIGTERM));
        }
        let s = Summary::of(&times);
        let stop = Summary::of(&stops);
        if n == 100 {
            rss_100 = Some(rss);
        }
        println!(
            "| {n} | {runs} | {} | {} | {} | {} | {} | {rss} KiB | {anon} / {file} KiB | {hwm} KiB | {} |",
            fmt(s.median),
            fmt(s.min),
            fmt(s.max),
            fmt(s.median / n as u32),
            fmt(Summary::of(&cpu).median),
            fmt(stop.median),
        );
    }
    if max_workers < 1000 {
        println!("(1000 workers skipped: the process limit allows only {max_workers})");
    }
    println!();
    println!(
        "start-up: from spawning prefork to the N-th status file; master CPU: its run time \
         (/proc/<pid>/schedstat) from exec to that moment, less sensitive to other load than the wall time."
    );
    println!(
        "VmRSS/VmHWM: the largest over the runs, 300 ms after the last status file appeared; \
         RssAnon is the master's own memory, RssFile the pages of its binary and libraries \
         (shared with other processes running them)."
    );
    if let Some(rss) = rss_100 {
        let ok = rss <= 4096;
        println!(
            "target: master RSS <= 4 MiB with 100 workers: {rss} KiB -> {}",
            if ok { "met" } else { "MISSED" }
        );
    }
    println!("load average after: {}", common::loadavg());
}

/// 3. How often an idle master wakes up, and what it costs.
fn idle_wakeups(quick: bool) {
    let period = Duration::from_secs(if quick { 3 } else { 10 });
    section(&format!(
        "3. Idle master: `sleep` workers, default settings (check every 1 s, no timeout), over {}",
        fmt(period)
    ));
    println!(
        "| workers | wake-ups (vol + invol) | per second | CPU utime+stime | CPU (schedstat) | CPU share | CPU per wake-up |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut verdicts = Vec::new();
    for n in [100, 1000] {
        if n > workers_allowed(n) {
            println!("| {n} | skipped: process limit | | | | | |");
            continue;
        }
        let mut master = Master::start(n, &[], SLEEPER, None);
        master.wait_for_workers(n, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1500));
        let pid = master.pid();
        let before = Usage::of(pid);
        let t0 = Instant::now();
        std::thread::sleep(period);
        let after = Usage::of(pid);
        let elapsed = t0.elapsed();
        master.stop(Signal::SIGTERM);
        let d = after.since(&before);
        let secs = elapsed.as_secs_f64();
        println!(
            "| {n} | {} ({} + {}) | {:.2} | {} ticks = {} ms | {} | {:.4} % | {} |",
            d.wakeups(),
            d.voluntary,
            d.involuntary,
            d.wakeups() as f64 / secs,
            d.ticks,
            d.ticks * 1000 / clock_ticks(),
            fmt(d.runtime()),
            d.runtime().as_secs_f64() / secs * 100.0,
            fmt(d.runtime() / d.wakeups().max(1) as u32),
        );
        let expected = secs.round() as u64;
        verdicts.push(format!(
            "{n} workers: {} wake-ups in {} (expected about {expected}): {}",
            d.wakeups(),
            fmt(elapsed),
            if d.wakeups() <= expected + 2 {
                "met"
            } else {
                "MORE than expected"
            }
        ));
    }
    println!();
    println!(
        "wake-ups: voluntary + nonvoluntary context switches (/proc/<pid>/status); CPU: /proc/<pid>/stat \
         (clock ticks of {} ms) and /proc/<pid>/schedstat (ns)",
        1000 / clock_ticks()
    );
    for v in verdicts {
        println!("expected: about one wake-up per check interval; {v}");
    }
    println!("load average after: {}", common::loadavg());
}

/// 4. One board check, from the master's debug log, and `read_all`.
fn check_cost(quick: bool) {
    let lines = if quick { 20 } else { 50 };
    let reads = if quick { 20 } else { 50 };
    section(&format!(
        "4. One board check: `RUST_LOG=debug --check-interval 100ms`, workers that reported once then sleep; \
         {lines} checks, and {reads} library `read_all()` of the same board"
    ));
    println!(
        "| workers | check median | check p90 | check max | master CPU per wake-up | `read_all` every 100 ms: median | max | `read_all` back to back: median | max |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let worker = reporting_sleeper();
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let mut check_1000 = None;
    let mut rewritten_rows = Vec::new();
    for n in [100, 1000] {
        if n > workers_allowed(n) {
            println!("| {n} | skipped: process limit | | | | | | | |");
            continue;
        }
        let mut master = Master::start(n, &["--check-interval", "100ms"], &worker, Some("debug"));
        master.wait_for_workers(n, Duration::from_secs(120));
        let reader = prefork::scoreboard::Scoreboard::builder(&master.board)
            .monitor()
            .build()
            .expect("open the board as a monitor");
        // Every worker has reported once: read_all sees them all.
        let deadline = Instant::now() + Duration::from_secs(60);
        while reader.read_all().map_or(0, |all| all.len()) < n {
            assert!(Instant::now() < deadline, "the workers did not all report");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let skip = checks_logged(&master.log, n).len();
        let before = Usage::of(master.pid());
        let deadline = Instant::now() + Duration::from_secs(30 + lines as u64 / 5);
        let checks = loop {
            std::thread::sleep(Duration::from_millis(100));
            let all = checks_logged(&master.log, n);
            if all.len() >= skip + lines {
                break all[skip..skip + lines].to_vec();
            }
            assert!(Instant::now() < deadline, "too few checks logged");
        };
        let per_wakeup = {
            let d = Usage::of(master.pid()).since(&before);
            d.runtime() / d.wakeups().max(1) as u32
        };
        // The same checks while every status changes between two of them:
        // the idle rule reads each one again (a status unchanged since the
        // last read is not read).
        let rewritten = {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let rewriter = std::thread::spawn({
                let (board, stop) = (master.board.clone(), std::sync::Arc::clone(&stop));
                move || rewrite_statuses(&board, &stop)
            });
            std::thread::sleep(Duration::from_millis(300));
            let skip = checks_logged(&master.log, n).len();
            let deadline = Instant::now() + Duration::from_secs(30 + lines as u64 / 5);
            let checks = loop {
                std::thread::sleep(Duration::from_millis(100));
                let all = checks_logged(&master.log, n);
                if all.len() >= skip + lines {
                    break all[skip..skip + lines].to_vec();
                }
                assert!(Instant::now() < deadline, "too few checks logged");
            };
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            rewriter.join().expect("the rewriter");
            Summary::of(&checks)
        };
        rewritten_rows.push((n, rewritten));
        // The master is stopped meanwhile, so that the two do not compete.
        kill(Pid::from_raw(master.pid()), Signal::SIGSTOP).expect("SIGSTOP the master");
        let spaced = time_read_all(&reader, n, reads, Duration::from_millis(100));
        let back_to_back = time_read_all(&reader, n, reads, Duration::ZERO);
        kill(Pid::from_raw(master.pid()), Signal::SIGCONT).expect("SIGCONT the master");
        drop(reader);
        master.stop(Signal::SIGTERM);
        let c = Summary::of(&checks);
        let r = Summary::of(&spaced);
        let b = Summary::of(&back_to_back);
        if n == 1000 {
            check_1000 = Some(c.median);
        }
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} |",
            fmt(c.median),
            fmt(c.p90),
            fmt(c.max),
            fmt(per_wakeup),
            fmt(r.median),
            fmt(r.max),
            fmt(b.median),
            fmt(b.max),
        );
    }
    println!();
    println!("The same checks while a thread rewrites every status (`idle ...`, `busy ...` by turns) every 50 ms:");
    println!("each check reads every status again for the idle rule.");
    println!();
    println!("| workers | check median | check p90 | check max |");
    println!("| ---: | ---: | ---: | ---: |");
    for (n, c) in &rewritten_rows {
        println!(
            "| {n} | {} | {} | {} |",
            fmt(c.median),
            fmt(c.p90),
            fmt(c.max)
        );
    }
    println!();
    println!(
        "check: the master's own figure (`board check of N worker(s) took Xus`, microsecond resolution);"
    );
    println!(
        "master CPU per wake-up: its schedstat run time over the same checks divided by its context switches \
         (the check, plus the rest of a turn of its loop: poll, signals, waitpid, the log line);"
    );
    println!(
        "read_all: timed in this process with the master stopped (SIGSTOP); `every 100 ms` is a naive \
         supervisor's periodic check, `back to back` the same with warm caches."
    );
    if let Some(median) = check_1000 {
        verdict(
            "board check with 1000 workers (median)",
            median,
            Duration::from_millis(2),
        );
    }
    println!("load average after: {}", common::loadavg());
}

/// Until `stop`: every 50 ms, a new status in every `status_*` file of
/// `board`, `idle` and `busy` by turns, as a Parallel::Scoreboard record
/// written in place (what a worker's update does).
fn rewrite_statuses(board: &Path, stop: &std::sync::atomic::AtomicBool) {
    use md5::{Digest, Md5};
    use std::os::unix::fs::FileExt;
    let files: Vec<File> = fs::read_dir(board)
        .expect("list the board")
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name()
                .to_str()?
                .starts_with("status_")
                .then_some(())?;
            fs::OpenOptions::new().write(true).open(e.path()).ok()
        })
        .collect();
    let mut turn = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let status = if turn % 2 == 0 {
            &b"idle now"[..]
        } else {
            &b"busy now"[..]
        };
        let mut record = Md5::digest(status).to_vec();
        record.extend_from_slice(&(status.len() as u32).to_be_bytes());
        record.extend_from_slice(status);
        for file in &files {
            let _ = file.write_at(&record, 0);
        }
        turn += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `reads` timed calls of `read_all` (after 3 unmeasured ones), `spacing`
/// apart; each must see `n` workers.
fn time_read_all(
    reader: &prefork::scoreboard::Scoreboard,
    n: usize,
    reads: usize,
    spacing: Duration,
) -> Vec<Duration> {
    for _ in 0..3 {
        reader.read_all().expect("read_all");
    }
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads {
        std::thread::sleep(spacing);
        let t0 = Instant::now();
        let all = reader.read_all().expect("read_all");
        times.push(t0.elapsed());
        assert_eq!(all.len(), n, "read_all missed workers");
    }
    times
}

/// 5. `prefork report STATUS`, a process per call, as a shell worker runs it.
fn report_call(quick: bool) {
    let calls = if quick { 100 } else { 500 };
    section(&format!(
        "5. `prefork report STATUS`: wall time of one call (fork, exec, write, exit, wait), {calls} calls"
    ));
    let dir = bench_dir("prefork-bench-");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("status_report"))
        .expect("create a status file");
    // Kept away from 3, which the child's dup2 targets: dup2(3, 3) would
    // leave close-on-exec set.
    let fd = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .expect("duplicate the status file's descriptor");
    let status = "idle slot=0 served=12345";
    let report = time_calls(calls, fd, prefork(), &["report", status]);
    let len = fs::metadata(dir.path().join("status_report")).map_or(0, |m| m.len());
    assert_eq!(
        len as usize,
        20 + status.len(),
        "the status record was not written"
    );
    let true_path = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("true");
    let baseline = time_calls(calls, fd, true_path, &[]);
    let _ = nix::unistd::close(fd);
    println!("| command | median | p90 | p99 | max | min |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, times) in [
        (format!("prefork report \"{status}\""), &report),
        (format!("{true_path} (process start floor)"), &baseline),
    ] {
        let s = Summary::of(times);
        println!(
            "| `{name}` | {} | {} | {} | {} | {} |",
            fmt(s.median),
            fmt(s.p90),
            fmt(s.p99),
            fmt(s.max),
            fmt(s.min)
        );
    }
    println!();
    verdict(
        "median `prefork report`",
        Summary::of(&report).median,
        Duration::from_millis(2),
    );
    println!("load average after: {}", common::loadavg());
}

/// Runs `program args` `calls` times (after 20 unmeasured ones) with `fd`
/// as its descriptor 3 and `PREFORK_STATUS_FD=3`; the wall time of each.
fn time_calls(calls: usize, fd: RawFd, program: &str, args: &[&str]) -> Vec<Duration> {
    let mut times = Vec::with_capacity(calls);
    for i in 0..calls + 20 {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("PREFORK_STATUS_FD", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: dup2 is async-signal-safe; nothing is allocated.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let t0 = Instant::now();
        let status = cmd.status().expect("run the command");
        let elapsed = t0.elapsed();
        assert!(status.success(), "{program} {args:?} failed: {status}");
        if i >= 20 {
            times.push(elapsed);
        }
    }
    times
}

/// How the master's standard output and error are connected in one run of
/// section 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// (a) stdout a pipe that this process reads; the log to a file.
    ReadStdout,
    /// (b) stdout a one-page pipe nobody reads, filled with SIGUSR1 boards.
    UnreadStdout,
    /// (c0) stderr a pipe that this process reads, with the debug log of a
    /// check every 10 ms; stdout /dev/null. The control for (c).
    ReadStderr,
    /// (c) the same with stderr a one-page pipe nobody reads, full.
    UnreadStderr,
}

impl Output {
    fn label(self) -> &'static str {
        match self {
            Output::ReadStdout => "(a) stdout read",
            Output::UnreadStdout => "(b) stdout unread, full of boards",
            Output::ReadStderr => "(c0) stderr read, debug log every 10 ms",
            Output::UnreadStderr => "(c) stderr unread, full of debug log",
        }
    }

    fn flood(self) -> bool {
        matches!(self, Output::ReadStderr | Output::UnreadStderr)
    }
}

/// The size the unread pipes are shrunk to (`F_SETPIPE_SZ`): one page.
const STALL_PIPE: usize = 4096;
/// How long a replacement, or a stop, may take before the master counts as
/// blocked.
const STALL_WAIT: Duration = Duration::from_secs(5);
/// The masters' `--graceful-timeout` in section 6, and how long the
/// benchmark waits for their exit after SIGTERM (a margin over it).
const STALL_GRACEFUL: Duration = Duration::from_secs(5);
const STALL_EXIT_WAIT: Duration = Duration::from_secs(7);

/// One run of section 6.
struct StallRun {
    output: Output,
    /// Bytes waiting in the unread pipe when the kills began.
    waiting: Option<usize>,
    /// SIGUSR1 boards sent to fill the pipe.
    boards: usize,
    respawns: Respawns,
    /// After a blocked kill: the master's zombie and live children.
    children: Option<(usize, usize)>,
    /// SIGTERM to the master's exit; `None`: not within STALL_EXIT_WAIT.
    stop: Option<Duration>,
    /// Why the run could not start (workers did not come up).
    failed: Option<String>,
}

/// Section 6: respawn latency, and the time SIGTERM takes to stop the
/// master, when its standard output or error is a pipe nobody reads (issue
/// 10).
fn stalled_reader(quick: bool) {
    const WORKERS: usize = 16;
    let kills = if quick { 40 } else { 200 };
    section(&format!(
        "6. Stalled reader: respawn latency ({WORKERS} `sleep` workers, up to {kills} kills, each as in section 1) \
         and SIGTERM to exit (`--graceful-timeout {}`), with stdout or stderr a pipe nobody reads",
        fmt(STALL_GRACEFUL)
    ));
    let runs: Vec<StallRun> = [
        Output::ReadStdout,
        Output::UnreadStdout,
        Output::ReadStderr,
        Output::UnreadStderr,
    ]
    .into_iter()
    .map(|output| stall_run(output, WORKERS, kills))
    .collect();
    println!(
        "| run | unread pipe when the kills began | respawns timed | median | p90 | p99 | max | median / (a) | SIGTERM to exit |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let base = runs
        .iter()
        .find(|r| r.output == Output::ReadStdout)
        .filter(|r| !r.respawns.latencies.is_empty())
        .map(|r| Summary::of(&r.respawns.latencies).median);
    let control = runs
        .iter()
        .find(|r| r.output == Output::ReadStderr)
        .filter(|r| !r.respawns.latencies.is_empty())
        .map(|r| Summary::of(&r.respawns.latencies).median);
    for run in &runs {
        let pipe = match (run.waiting, run.boards) {
            (None, _) => "-".to_string(),
            (Some(n), 0) => format!("{n} of {STALL_PIPE} B"),
            (Some(n), boards) => format!("{n} of {STALL_PIPE} B ({boards} boards)"),
        };
        let stop = run.stop.map_or_else(
            || format!("did not exit within {}", fmt(STALL_EXIT_WAIT)),
            fmt,
        );
        if let Some(why) = &run.failed {
            println!(
                "| {} | {pipe} | 0 | {why} | | | | | {stop} |",
                run.output.label()
            );
            continue;
        }
        let r = &run.respawns;
        let timed = r.latencies.len();
        if timed == 0 {
            println!(
                "| {} | {pipe} | 0 | no respawn within {} (blocked) | | | | | {stop} |",
                run.output.label(),
                fmt(STALL_WAIT)
            );
            continue;
        }
        let s = Summary::of(&r.latencies);
        let ratio = base.map_or("-".into(), |b| {
            format!("{:.2}x", s.median.as_secs_f64() / b.as_secs_f64())
        });
        let timed = if r.blocked.is_some() {
            format!("{timed}, then none within {} (blocked)", fmt(STALL_WAIT))
        } else {
            timed.to_string()
        };
        println!(
            "| {} | {pipe} | {timed} | {} | {} | {} | {} | {ratio} | {stop} |",
            run.output.label(),
            fmt(s.median),
            fmt(s.p90),
            fmt(s.p99),
            fmt(s.max),
        );
    }
    println!();
    println!(
        "unread pipes: {STALL_PIPE} bytes (F_SETPIPE_SZ), the bytes waiting in them as FIONREAD shows; \
         (b) sends SIGUSR1 one at a time (signals coalesce), each after the previous board has reached \
         the pipe, until the next would not fit, then one more; (c0) and (c) run `RUST_LOG=debug \
         --check-interval 10ms` (a `board check` line every 10 ms), and (c) waits until the pipe stops \
         filling. A kill whose replacement does not appear within {} ends the run.",
        fmt(STALL_WAIT)
    );
    for run in &runs {
        if let (Some(victim), Some((zombies, live))) = (run.respawns.blocked, run.children) {
            println!(
                "{}: worker {victim} not replaced within {}; 0.5 s after 2 more kills, the master \
                 had {zombies} zombie and {live} live children",
                run.output.label(),
                fmt(STALL_WAIT)
            );
        }
    }
    for (run, reference, name) in [
        (Output::UnreadStdout, base, "(a)"),
        (Output::UnreadStderr, base, "(a)"),
        (Output::UnreadStderr, control, "(c0)"),
    ] {
        let Some(run) = runs.iter().find(|r| r.output == run) else {
            continue;
        };
        let verdict = match (&run.failed, run.respawns.blocked, reference) {
            (Some(why), _, _) => format!("MISSED ({why})"),
            (None, Some(_), _) => "MISSED (blocked)".to_string(),
            (None, None, Some(reference)) if !run.respawns.latencies.is_empty() => {
                let m = Summary::of(&run.respawns.latencies).median;
                let ratio = m.as_secs_f64() / reference.as_secs_f64();
                format!(
                    "{} against {} = {ratio:.2}x -> {}",
                    fmt(m),
                    fmt(reference),
                    if ratio <= 1.5 {
                        "met (within 1.5x)"
                    } else {
                        "MISSED"
                    }
                )
            }
            _ => "no reference".to_string(),
        };
        println!(
            "target: {} respawns as fast as {name}: {verdict}",
            run.output.label()
        );
    }
    for run in runs
        .iter()
        .filter(|r| matches!(r.output, Output::UnreadStdout | Output::UnreadStderr))
    {
        println!(
            "target: {}: SIGTERM stops the master within its graceful timeout ({}): {}",
            run.output.label(),
            fmt(STALL_GRACEFUL),
            match run.stop {
                Some(t) if t <= STALL_GRACEFUL => format!("{} -> met", fmt(t)),
                Some(t) => format!("{} -> MISSED", fmt(t)),
                None => format!("did not exit within {} -> MISSED", fmt(STALL_EXIT_WAIT)),
            }
        );
    }
    println!("load average after: {}", common::loadavg());
}

/// One run of section 6: a master with `output`, its pipe filled, then the
/// kills, then SIGTERM. Every wait is bounded; the master and everything it
/// started are killed (by process group) before this returns.
fn stall_run(output: Output, workers: usize, kills: usize) -> StallRun {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let unread = matches!(output, Output::UnreadStdout | Output::UnreadStderr);
    if unread {
        nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(STALL_PIPE as libc::c_int),
        )
        .expect("F_SETPIPE_SZ");
    } else {
        // Read until every writer (the master, and the workers that
        // inherited it) is gone; left to run out on its own.
        let mut reader = File::from(read.try_clone().expect("dup the pipe"));
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            while matches!(io::Read::read(&mut reader, &mut chunk), Ok(1..)) {}
        });
    }
    let graceful = format!("{}ms", STALL_GRACEFUL.as_millis());
    let mut options = vec!["--graceful-timeout", graceful.as_str()];
    if output.flood() {
        options.extend(["--check-interval", "10ms"]);
    }
    let rust_log = output.flood().then_some("debug");
    let (stdout, stderr) = match output {
        Output::ReadStdout | Output::UnreadStdout => (Stdio::from(write), None),
        Output::ReadStderr | Output::UnreadStderr => (Stdio::null(), Some(Stdio::from(write))),
    };
    let mut master = Master::start_with(workers, &options, SLEEPER, rust_log, stdout, stderr);
    let mut run = StallRun {
        output,
        waiting: None,
        boards: 0,
        respawns: Respawns::default(),
        children: None,
        stop: None,
        failed: None,
    };
    let mut alive = match master.try_wait_for_workers(workers, Duration::from_secs(30)) {
        Ok(alive) => alive,
        Err(why) => {
            run.failed = Some(why);
            run.stop = master.stop_within(Signal::SIGTERM, STALL_EXIT_WAIT);
            return run;
        }
    };
    match output {
        Output::UnreadStdout => {
            // One board at a time, each once the previous one has reached
            // the pipe, until the next would not fit; then one more, which
            // the master must keep (or block on).
            let mut board = 0;
            loop {
                let before = pipe_waiting(&read);
                if run.boards > 0 && before + board > STALL_PIPE {
                    break;
                }
                let _ = kill(Pid::from_raw(master.pid()), Signal::SIGUSR1);
                run.boards += 1;
                let deadline = Instant::now() + Duration::from_secs(1);
                while pipe_waiting(&read) == before && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Whatever a partial write added keeps coming for a moment.
                std::thread::sleep(Duration::from_millis(20));
                let now = pipe_waiting(&read);
                if now == before {
                    break; // no room for a board: full
                }
                board = board.max(now - before);
            }
            let _ = kill(Pid::from_raw(master.pid()), Signal::SIGUSR1);
            run.boards += 1;
            std::thread::sleep(Duration::from_millis(50));
            run.waiting = Some(pipe_waiting(&read));
        }
        Output::UnreadStderr => {
            // Until the pipe has stopped filling for 300 ms (a line every
            // 10 ms would have found room), at most 10 s.
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut last, mut since) = (pipe_waiting(&read), Instant::now());
            while Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                let now = pipe_waiting(&read);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() >= Duration::from_millis(300) && now > 0 {
                    break;
                }
            }
            run.waiting = Some(pipe_waiting(&read));
        }
        Output::ReadStdout | Output::ReadStderr => {}
    }
    let _ = io::stdout().flush();
    run.respawns = time_respawns(&mut master, &mut alive, kills, STALL_WAIT);
    if let Some(victim) = run.respawns.blocked {
        // A few more kills, as in the issue, then what the master left.
        for &(pid, _) in alive.iter().filter(|(pid, _)| *pid != victim).take(2) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(500));
        let children = children_of(master.pid());
        let zombies = children.iter().filter(|&&(_, state)| state == 'Z').count();
        run.children = Some((zombies, children.len() - zombies));
    }
    run.stop = master.stop_within(Signal::SIGTERM, STALL_EXIT_WAIT);
    drop(read);
    run
}

/// How many bytes wait in a pipe (FIONREAD on its read end).
fn pipe_waiting(read: &impl AsRawFd) -> usize {
    let mut size: libc::c_int = 0;
    // SAFETY: FIONREAD writes the count into an int.
    unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut size) };
    size.max(0) as usize
}

/// The children of `parent` (pid, state letter), zombies included, from
/// /proc (this kernel has no `/proc/<pid>/task/<pid>/children`).
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid: i32 = fields.next()?.parse().ok()?;
            (ppid == parent).then_some((pid, state))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A master under test

/// A running `prefork` master on a fresh board; stopped when dropped.
struct Master {
    child: Child,
    /// When `spawn` was called.
    started: Instant,
    /// The same, in clock ticks since boot (as in /proc/<pid>/stat).
    born: u64,
    board: PathBuf,
    log: PathBuf,
    watch: BoardWatch,
    /// Every worker pid seen on the board.
    seen: HashSet<i32>,
    /// Holds `board` and `log`; removed last.
    _dir: tempfile::TempDir,
}

impl Master {
    fn start(workers: usize, options: &[&str], command: &[&str], rust_log: Option<&str>) -> Master {
        Master::start_with(workers, options, command, rust_log, Stdio::null(), None)
    }

    /// The same with the master's standard output `stdout`, and its standard
    /// error `stderr` instead of the log file (which then stays empty).
    fn start_with(
        workers: usize,
        options: &[&str],
        command: &[&str],
        rust_log: Option<&str>,
        stdout: Stdio,
        stderr: Option<Stdio>,
    ) -> Master {
        let dir = bench_dir("prefork-bench-");
        let board = dir.path().join("board");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&board)
            .expect("create the board directory");
        let log = dir.path().join("master.log");
        let log_file = File::create(&log).expect("create the master's log");
        let watch = BoardWatch::new(&board);
        let mut cmd = Command::new(prefork());
        cmd.arg("--workers")
            .arg(workers.to_string())
            .arg("--scoreboard")
            .arg(&board)
            .args(options)
            .arg("--")
            .args(command)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr.unwrap_or_else(|| log_file.into()))
            .process_group(0);
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        common::dies_with_this_process(&mut cmd);
        let born = uptime_ticks();
        let started = Instant::now();
        let child = cmd.spawn().expect("start prefork");
        Master {
            child,
            started,
            born,
            board,
            log,
            watch,
            seen: HashSet::new(),
            _dir: dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until `n` workers' status files have appeared; returns them
    /// with when each was seen.
    fn wait_for_workers(&mut self, n: usize, timeout: Duration) -> Vec<(i32, Instant)> {
        match self.try_wait_for_workers(n, timeout) {
            Ok(found) => found,
            Err(why) => panic!("{why}: {}", tail(&self.log)),
        }
    }

    /// The same, or why not (the master exited, or too few in `timeout`).
    fn try_wait_for_workers(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<(i32, Instant)>, String> {
        let deadline = Instant::now() + timeout;
        let mut found = Vec::with_capacity(n);
        while found.len() < n {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "prefork exited ({status}) before its {n} workers started"
                ));
            }
            let step = (Instant::now() + Duration::from_millis(500)).min(deadline);
            match self.watch.next_new(&self.seen, step) {
                Some((pid, at)) => {
                    self.seen.insert(pid);
                    found.push((pid, at));
                }
                None if Instant::now() >= deadline => {
                    return Err(format!(
                        "only {} of {n} workers started within {}",
                        found.len(),
                        fmt(timeout)
                    ))
                }
                None => {}
            }
        }
        Ok(found)
    }

    /// Sends `signal` to the master and waits for its exit (SIGKILL to its
    /// process group after 60 s); returns how long that took.
    fn stop(&mut self, signal: Signal) -> Duration {
        let t0 = Instant::now();
        if self.stop_within(signal, Duration::from_secs(60)).is_none() {
            eprintln!(
                "prefork {} did not stop on {signal}: SIGKILL to its process group",
                self.pid()
            );
        }
        t0.elapsed()
    }

    /// Sends `signal` to the master and waits up to `timeout` for its exit;
    /// returns how long that took, or `None` when it did not exit: it is then
    /// killed, with its process group. Either way, whatever it left running
    /// is killed (by process group) before this returns.
    fn stop_within(&mut self, signal: Signal, timeout: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        let pid = Pid::from_raw(self.pid());
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, signal);
        let exited = self.wait_exit(timeout);
        let elapsed = t0.elapsed();
        if !exited {
            let _ = killpg(pid, Signal::SIGKILL);
            self.wait_exit(Duration::from_secs(10));
        }
        let left = kill_leftovers(self.pid(), self.born);
        if exited && left > 0 {
            eprintln!("WARNING: {left} process(es) of prefork {pid} outlived it (killed now)");
        }
        exited.then_some(elapsed)
    }

    /// Whether the master exited (and was reaped) within `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // A section failed: stop at once (SIGKILL to the workers).
            let pid = Pid::from_raw(self.pid());
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGQUIT);
            if !self.wait_exit(Duration::from_secs(5)) {
                let _ = killpg(pid, Signal::SIGKILL);
                self.wait_exit(Duration::from_secs(5));
            }
            kill_leftovers(self.pid(), self.born);
        }
    }
}

/// Kills (by process group) every process that still carries
/// `PREFORK_MASTER_PID=<master>` in its environment and was started during
/// the master's life (from `born`, in clock ticks since boot, to now, just
/// after it was reaped): its workers and what they started. Returns how
/// many there were.
fn kill_leftovers(master: i32, born: u64) -> usize {
    // The pid is free again once the master is reaped: processes started
    // from then on may belong to another master that got the same pid.
    let reaped = uptime_ticks();
    let needle = format!("PREFORK_MASTER_PID={master}");
    let mut count = 0;
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match start_ticks(pid) {
            Some(t) if t >= born && t < reaped => {}
            _ => continue,
        }
        let Ok(environ) = fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == needle.as_bytes())
        {
            let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid))).unwrap_or(Pid::from_raw(pid));
            if pgid.as_raw() > 1 && pgid != nix::unistd::getpgrp() {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            count += 1;
        }
    }
    count
}

/// Status files appearing in (and removed from) a board directory, through
/// inotify.
struct BoardWatch {
    inotify: Inotify,
    dir: PathBuf,
    /// Names read but not yet consumed, with when they were read.
    pending: VecDeque<(String, Instant)>,
    /// When the removal of `status_<pid>` was first seen.
    removed: HashMap<i32, Instant>,
}

impl BoardWatch {
    fn new(dir: &Path) -> BoardWatch {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify_init");
        inotify
            .add_watch(
                dir,
                AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE,
            )
            .expect("inotify_add_watch");
        BoardWatch {
            inotify,
            dir: dir.to_path_buf(),
            pending: VecDeque::new(),
            removed: HashMap::new(),
        }
    }

    /// The next `status_<pid>` that appears, for a pid not in `known`, and
    /// when it was seen; `None` at `deadline`.
    fn next_new(&mut self, known: &HashSet<i32>, deadline: Instant) -> Option<(i32, Instant)> {
        loop {
            while let Some((name, at)) = self.pending.pop_front() {
                match status_pid(&name) {
                    Some(pid) if !known.contains(&pid) => return Some((pid, at)),
                    _ => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let mut fds = [libc::pollfd {
                fd: self.inotify.as_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            let at = Instant::now();
            if ready <= 0 {
                continue;
            }
            match self.inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            // Events were lost: list the directory instead.
                            for name in list_status_files(&self.dir) {
                                self.pending.push_back((name, at));
                            }
                        } else if let Some(name) = event.name {
                            let name = name.to_string_lossy().into_owned();
                            if event.mask.contains(AddWatchFlags::IN_DELETE) {
                                if let Some(pid) = status_pid(&name) {
                                    self.removed.entry(pid).or_insert(at);
                                }
                            } else {
                                self.pending.push_back((name, at));
                            }
                        }
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(e) => panic!("reading inotify events: {e}"),
            }
        }
    }
}

/// The pid in `status_<pid>` (not `.tmp`, nothing else).
fn status_pid(name: &str) -> Option<i32> {
    let digits = name.strip_prefix("status_")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn list_status_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| status_pid(n).is_some())
                .collect()
        })
        .unwrap_or_default()
}

/// The durations of the checks of `n` workers logged so far.
fn checks_logged(log: &Path, n: usize) -> Vec<Duration> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest = line.split_once("board check of ")?.1;
            let (count, rest) = rest.split_once(" worker(s) took ")?;
            let micros = rest.trim().strip_suffix("us")?;
            (count.parse::<usize>().ok()? == n).then_some(())?;
            Some(Duration::from_micros(micros.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Measuring

#[derive(Debug, Clone, Copy)]
struct Summary {
    min: Duration,
    median: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Summary {
    /// Nearest-rank percentiles.
    fn of(samples: &[Duration]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank = |p: f64| {
            let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[i.clamp(1, sorted.len()) - 1]
        };
        Summary {
            min: sorted[0],
            median: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<Duration>() / sorted.len() as u32,
        }
    }
}

/// A process's scheduling counters.
#[derive(Debug, Clone, Copy)]
struct Usage {
    voluntary: u64,
    involuntary: u64,
    /// utime + stime, in clock ticks.
    ticks: u64,
    /// Time on a CPU, in nanoseconds (/proc/<pid>/schedstat).
    runtime_ns: u64,
    /// Times it was scheduled in.
    slices: u64,
}

impl Usage {
    fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            voluntary: self.voluntary - earlier.voluntary,
            involuntary: self.involuntary - earlier.involuntary,
            ticks: self.ticks - earlier.ticks,
            runtime_ns: self.runtime_ns - earlier.runtime_ns,
            slices: self.slices - earlier.slices,
        }
    }

    fn wakeups(&self) -> u64 {
        self.voluntary + self.involuntary
    }

    fn runtime(&self) -> Duration {
        Duration::from_nanos(self.runtime_ns)
    }

    fn of(pid: i32) -> Usage {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
        // Fields after the command's closing parenthesis start at field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("stat format")
            .1
            .split_whitespace()
            .collect();
        let field = |n: usize| fields[n - 3].parse::<u64>().expect("a number");
        let schedstat = fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
        let sched: Vec<u64> = schedstat
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        Usage {
            voluntary: proc_status_number(pid, "voluntary_ctxt_switches"),
            involuntary: proc_status_number(pid, "nonvoluntary_ctxt_switches"),
            ticks: field(14) + field(15),
            runtime_ns: sched.first().copied().unwrap_or(0),
            slices: sched.get(2).copied().unwrap_or(0),
        }
    }
}

/// The number in a `/proc/<pid>/status` line (kB for the Vm* ones).
fn proc_status_number(pid: i32, key: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    text.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// How many workers this user may start (one process each, besides what
/// already runs), capped at `wanted`.
fn workers_allowed(wanted: usize) -> usize {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NPROC)
        .map_or(u64::MAX, |(soft, _)| soft);
    let pid_max: u64 = read_trimmed("/proc/sys/kernel/pid_max")
        .parse()
        .unwrap_or(32768);
    // Head room for this process, the master, and whatever else runs.
    let room = limit.min(pid_max).saturating_sub(2000);
    wanted.min(room as usize)
}

// ---------------------------------------------------------------------------
// Small things

fn section(title: &str) {
    println!();
    println!("## {title}");
    println!();
    let _ = io::stdout().flush();
}

fn verdict(what: &str, got: Duration, target: Duration) {
    println!(
        "target: {what} <= {}: {} -> {}",
        fmt(target),
        fmt(got),
        if got <= target { "met" } else { "MISSED" }
    );
}

/// A duration with three significant figures.
fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

fn limit(value: u64) -> String {
    if value == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

fn read_trimmed(path: impl AsRef<OsStr>) -> String {
    fs::read_to_string(Path::new(path.as_ref()))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The last lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
