//! `prefork top`'s cost per frame on a board of 1000 live workers (issue
//! 15: at most 5 ms): one `Reader::read`, what the view does every interval
//! (list the board, probe each file's lock and read its record, read the
//! master's snapshot, read `/proc/<pid>/stat` of each worker, the files
//! kept open from frame to frame), and its parts, each also the way that
//! opens every file every time; in the same run, the peer: Perl's Parallel::Scoreboard `read_all`
//! of the same board (bench/perl_scoreboard.pl), which reads the records
//! only.
//!
//! The board is a real master's: `prefork -w 1000 -- sh -c 'prefork report
//! ...; exec sleep 100000'`, on /dev/shm, in its own process group, with
//! `PR_SET_PDEATHSIG` (it dies with this process, and its workers with it).
//!
//! `cargo bench --bench top` prints the median, 99th percentile and worst
//! of each; `PREFORK_BENCH_QUICK=1` does fewer rounds,
//! `PREFORK_BENCH_WORKERS=N` another board size.

mod common;

use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use prefork::scoreboard::Scoreboard;
use prefork::supervisor::master_file;

use prefork::top::snapshot::MasterInfo;
use prefork::top::{procfs, reader::Reader};

const TARGET: Duration = Duration::from_millis(5);

fn main() {
    let quick = std::env::var_os("PREFORK_BENCH_QUICK").is_some();
    let workers: usize = std::env::var("PREFORK_BENCH_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let rounds = if quick { 50 } else { 300 };
    let spaced = if quick { 10 } else { 50 };
    println!("# prefork top: one frame of a board of {workers} live workers");
    println!(
        "machine: {} CPU(s), load average before: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        common::loadavg()
    );
    let master = Master::start(workers);
    let board = master.board();
    let mut reader = Reader::open(&board, None).expect("open the board");
    master.wait_until_all_reported(&mut reader, workers);

    let mut results = Vec::new();
    let cpu_before = cpu_time();
    let frame = time(rounds, Duration::ZERO, || {
        let frame = reader.read();
        assert_eq!(frame.rows.len(), workers, "a frame missed workers");
        assert!(frame.master.is_some(), "no master snapshot");
    });
    // The 3 untimed warm-up frames count too.
    let cpu_per_frame = (cpu_time() - cpu_before) / (rounds as u32 + 3);
    results.push(("frame (Reader::read), back to back", frame));
    let frame_spaced = time(spaced, Duration::from_millis(100), || {
        assert_eq!(reader.read().rows.len(), workers);
    });
    results.push(("frame, one every 100 ms", frame_spaced));

    let handle = Scoreboard::builder(&board)
        .read_only("a benchmark")
        .build()
        .expect("open the board");
    let mut files = prefork::top::board::BoardFiles::default();
    results.push((
        "part: the board, files kept open (as a frame reads it)",
        time(rounds, Duration::ZERO, || {
            assert_eq!(files.live_workers(&handle).expect("read").len(), workers);
        }),
    ));
    results.push((
        "part: the board, scanned (`Scoreboard::live_workers`)",
        time(rounds, Duration::ZERO, || {
            assert_eq!(handle.live_workers().expect("read").len(), workers);
        }),
    ));
    results.push((
        "part: the master's snapshot (read, and the fields top shows parsed)",
        time(rounds, Duration::ZERO, || {
            let json = master_file::read_json(&board).expect("a snapshot");
            assert!(MasterInfo::from_json(&json, 0.0).is_some());
        }),
    ));
    let pids: Vec<Option<u32>> = handle
        .live_workers()
        .expect("read")
        .iter()
        .map(|w| w.id.parse().ok())
        .collect();
    let mut proc_files = procfs::ProcFiles::new();
    results.push((
        "part: /proc/<pid>/stat of each worker, kept open (as a frame reads them)",
        time(rounds, Duration::ZERO, || {
            let n = pids
                .iter()
                .flatten()
                .filter_map(|&p| proc_files.sample(p))
                .count();
            proc_files.end_frame();
            assert_eq!(n, workers);
        }),
    ));
    results.push((
        "part: the same, opened and closed each time",
        time(rounds, Duration::ZERO, || {
            let n = pids
                .iter()
                .flatten()
                .filter_map(|&p| procfs::sample(p))
                .count();
            assert_eq!(n, workers);
        }),
    ));

    println!();
    println!("| what ({workers} workers) | median | p99 | max | rounds |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (what, figures) in &results {
        figures.row(what);
    }
    let perl = perl_read_all(&board, workers, if quick { 5 } else { 20 });
    match &perl {
        Ok(per_op) => println!(
            "| peer: Perl Parallel::Scoreboard `read_all` (median of samples) | {} | | | |",
            fmt(*per_op)
        ),
        Err(why) => println!("| peer: Perl `read_all` | skipped: {why} | | | |"),
    }
    println!(
        "| CPU time of a frame (getrusage, back to back) | {} (mean) | | | |",
        fmt(cpu_per_frame)
    );
    println!();
    let median = results[0].1.at(0.5);
    if let Ok(perl) = perl {
        println!(
            "a frame of prefork top costs {:.2}x a Perl `read_all` of the same board \
             (which reads no /proc and no master snapshot)",
            median.as_secs_f64() / perl.as_secs_f64()
        );
    }
    println!(
        "target: a frame of {workers} workers in at most {} ms: median {} -> {}",
        TARGET.as_millis(),
        fmt(median),
        if median <= TARGET { "met" } else { "MISSED" }
    );
    println!("load average after: {}", common::loadavg());
}

struct Figures(Vec<Duration>);

impl Figures {
    fn at(&self, q: f64) -> Duration {
        self.0[((self.0.len() - 1) as f64 * q) as usize]
    }

    fn row(&self, what: &str) {
        println!(
            "| {what} | {} | {} | {} | {} |",
            fmt(self.at(0.5)),
            fmt(self.at(0.99)),
            fmt(self.at(1.0)),
            self.0.len()
        );
    }
}

/// `rounds` timed calls of `f` (after 3 untimed ones), `spacing` apart.
fn time(rounds: usize, spacing: Duration, mut f: impl FnMut()) -> Figures {
    for _ in 0..3 {
        f();
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::sleep(spacing);
        let t0 = Instant::now();
        f();
        times.push(t0.elapsed());
    }
    times.sort();
    Figures(times)
}

fn fmt(d: Duration) -> String {
    match d.as_micros() {
        0..1000 => format!("{} µs", d.as_micros()),
        _ => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}

/// This process's user plus system time, all threads.
fn cpu_time() -> Duration {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Perl's `read_all` of `board`: the median time per call, from
/// bench/perl_scoreboard.pl (Parallel::Scoreboard found through PERL5LIB,
/// relative entries taken from the package root, as the tests do).
fn perl_read_all(board: &Path, workers: usize, samples: usize) -> Result<Duration, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("perl");
    if let Some(lib) = std::env::var_os("PERL5LIB") {
        let paths: Vec<PathBuf> = std::env::split_paths(&lib)
            .map(|p| if p.is_relative() { root.join(p) } else { p })
            .collect();
        cmd.env(
            "PERL5LIB",
            std::env::join_paths(paths).map_err(|e| e.to_string())?,
        );
    }
    let out = cmd
        .arg(root.join("bench/perl_scoreboard.pl"))
        .arg("read_all")
        .arg(board)
        .arg(workers.to_string())
        .arg("5")
        .arg(samples.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run perl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    // "perl read_all N <ns/op>..." sorted.
    let text = String::from_utf8_lossy(&out.stdout);
    let ns: Vec<f64> = text
        .split_whitespace()
        .skip(3)
        .filter_map(|t| t.parse().ok())
        .collect();
    let median = ns.get(ns.len() / 2).ok_or("no figures from perl")?;
    Ok(Duration::from_nanos(*median as u64))
}

/// A prefork master of `n` workers that report once, then sleep holding
/// their status files; stopped when dropped.
struct Master {
    child: Child,
    dir: tempfile::TempDir,
}

impl Master {
    fn start(n: usize) -> Master {
        let base = Path::new("/dev/shm");
        let dir = tempfile::Builder::new()
            .prefix("prefork-bench-top-")
            .tempdir_in(if base.is_dir() {
                base.to_path_buf()
            } else {
                std::env::temp_dir()
            })
            .expect("create a temporary directory");
        let board = dir.path().join("board");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&board)
            .expect("create the board");
        let prefork = env!("CARGO_BIN_EXE_prefork");
        let mut cmd = Command::new(prefork);
        cmd.arg("--workers")
            .arg(n.to_string())
            .arg("--scoreboard")
            .arg(&board)
            .args(["--listen", "127.0.0.1:0", "--"])
            .args(["sh", "-c"])
            .arg(r#""$0" report "GET /items/$PREFORK_WORKER_SLOT HTTP/1.1" && exec sleep 100000"#)
            .arg(prefork)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        common::dies_with_this_process(&mut cmd);
        let child = cmd.spawn().expect("start prefork");
        Master { child, dir }
    }

    fn board(&self) -> PathBuf {
        self.dir.path().join("board")
    }

    /// Waits until every worker is on the board with its status.
    fn wait_until_all_reported(&self, reader: &mut Reader, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let frame = reader.read();
            let reported = frame
                .rows
                .iter()
                .filter(|r| r.status.written().is_some())
                .count();
            if reported == n && frame.master.is_some() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {reported} of {n} workers reported in time"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill(pid, Signal::SIGQUIT);
        std::thread::sleep(Duration::from_secs(2));
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
