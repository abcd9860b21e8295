//! What the benchmarks share (each says `mod common;`: a directory, so that cargo does not take it for a bench of its own): the
//! binary under test, the example HTTP worker, child processes that die
//! with the benchmark, the machine's description in each report, and the
//! clock that /proc's start times are read against.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The prefork binary: `PREFORK_BENCH_BIN` when set (a plain release build,
/// say), else the one cargo built for this bench.
#[allow(dead_code)]
pub fn prefork() -> String {
    std::env::var("PREFORK_BENCH_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_prefork").to_string())
}

/// The example HTTP worker beside the prefork binary (`env_var` names
/// another), if it has been built.
#[allow(dead_code)]
pub fn http_worker(env_var: &str) -> Result<String, String> {
    let default = Path::new(&prefork())
        .parent()
        .map(|dir| dir.join("examples/http_worker"))
        .unwrap_or_default();
    let path = std::env::var(env_var)
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default);
    if path.is_file() {
        Ok(path.to_string_lossy().into_owned())
    } else {
        Err(format!(
            "{} is missing: run `cargo build --release --examples -p prefork-scoreboard` first",
            path.display()
        ))
    }
}

/// `cmd`'s process dies with this one (`PR_SET_PDEATHSIG`), even when this
/// one is killed by SIGKILL: a benchmark that fails half-way leaves no
/// master behind (and a master's workers die with it).
pub fn dies_with_this_process(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe, and the closure touches nothing
    // else.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// The CPU's model name from /proc/cpuinfo, "?" when there is none (some
/// architectures do not give one).
#[allow(dead_code)]
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The 1, 5 and 15 minute load averages: a figure taken on a busy machine
/// says so beside it.
#[allow(dead_code)]
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A fresh directory for a master's files, on tmpfs when there is one, so
/// that the disk's latency stays out of the figures.
#[allow(dead_code)]
pub fn bench_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("create a temporary directory")
}

/// When a process started, in clock ticks since boot (field 22 of
/// /proc/<pid>/stat): with `uptime_ticks` before and after, it tells a
/// process started in that window from one whose pid was reused.
#[allow(dead_code)]
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after
    // it may not.
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Now, in the clock ticks of `start_ticks`.
#[allow(dead_code)]
pub fn uptime_ticks() -> u64 {
    let secs: f64 = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (secs * clock_ticks() as f64) as u64
}

/// The kernel's clock ticks per second (USER_HZ), 100 if it will not say.
#[allow(dead_code)]
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

/// Sleeps until `at`, at once if it has passed: a schedule that fell behind
/// catches up instead of drifting.
#[allow(dead_code)]
pub fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}
