//! Benchmarks of the scoreboard: `update()` with 16 B, 256 B and 4 KiB
//! statuses, and `read_all()` over 10, 100 and 1000 live workers, each a real
//! process holding the lock on its status file.
//!
//! `cargo bench --bench scoreboard` forks the workers itself (from this
//! process, before any timing starts). With `SCOREBOARD_BENCH_BOARDS=BASE` it
//! instead reads the boards `BASE/board_<N>` that someone else keeps alive:
//! `bench/scoreboard.sh` points it at the boards of Perl workers, so that the
//! Rust library, the Perl module and the C floor read the very same files.
//!
//! The scratch directories are on `/dev/shm` (tmpfs) when it exists, or under
//! `SCOREBOARD_BENCH_TMPDIR` when that is set. See BENCHMARKS.md.

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use prefork::scoreboard::Scoreboard;

/// The status sizes of the update benchmarks.
const UPDATE_SIZES: [usize; 3] = [16, 256, 4096];
/// The numbers of live workers of the read_all benchmarks.
const WORKER_COUNTS: [usize; 3] = [10, 100, 1000];
/// What every live worker has written (the same in bench/perl_scoreboard.pl).
const WORKER_STATUS: &[u8] = b"busy: GET /index.html HTTP/1.1";

/// Where scratch directories go: tmpfs, like the Perl and C runs of the script.
fn scratch_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("SCOREBOARD_BENCH_TMPDIR") {
        return dir.into();
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("scoreboard-bench.")
        .tempdir_in(scratch_root())
        .expect("create a scratch directory")
}

fn bench_update(c: &mut Criterion) {
    let scratch = scratch_dir();
    let mut board = Scoreboard::new(scratch.path().join("board")).expect("open the board");
    let mut group = c.benchmark_group("update");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    for size in UPDATE_SIZES {
        let status = vec![b'x'; size];
        // The first update creates and locks the file: keep it out of the timing.
        board.update(&status).expect("first update");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &status, |b, status| {
            b.iter(|| board.update(black_box(status)).expect("update"))
        });
    }
    group.finish();
}

fn bench_read_all(c: &mut Criterion) {
    let shared = std::env::var_os("SCOREBOARD_BENCH_BOARDS").map(PathBuf::from);
    let mut group = c.benchmark_group("read_all");
    group
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    for n in WORKER_COUNTS {
        // Set up on first use, so that a filter that skips this benchmark
        // forks no workers. Criterion calls the closure on the main thread,
        // and times only what runs inside `iter`.
        let mut state: Option<(Scoreboard, Workers)> = None;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let (reader, _workers) = state.get_or_insert_with(|| live_board(shared.as_deref(), n));
            b.iter(|| {
                let all = reader.read_all().expect("read_all");
                assert_eq!(all.len(), n);
                all
            })
        });
    }
    group.finish();
}

/// A reader on a board of `n` live workers, checked to see all of them.
fn live_board(shared: Option<&Path>, n: usize) -> (Scoreboard, Workers) {
    let workers = match shared {
        Some(base) => Workers::shared(base.join(format!("board_{n}"))),
        None => Workers::spawn(n),
    };
    let reader = Scoreboard::new(workers.dir()).expect("open the workers' board");
    let found = reader.read_all().expect("read_all").len();
    assert_eq!(
        found,
        n,
        "{} holds {found} live workers, expected {n}",
        workers.dir().display()
    );
    (reader, workers)
}

/// A board of live workers: either forked here (and ended on drop) or kept
/// by another process.
struct Workers {
    dir: PathBuf,
    pids: Vec<libc::pid_t>,
    /// The write end of the pipe the workers block on: closing it ends them.
    hold: Option<OwnedFd>,
    _scratch: Option<tempfile::TempDir>,
}

impl Workers {
    fn shared(dir: PathBuf) -> Self {
        Workers {
            dir,
            pids: Vec::new(),
            hold: None,
            _scratch: None,
        }
    }

    /// Forks `n` workers that each open the board, update their status (and
    /// so hold their lock), report ready and block until the hold pipe closes.
    fn spawn(n: usize) -> Self {
        let scratch = scratch_dir();
        let dir = scratch.path().join("board");
        std::fs::create_dir(&dir).expect("create the workers' board");
        let (hold_r, hold_w) = pipe();
        let (ready_r, ready_w) = pipe();
        let mut workers = Workers {
            dir,
            pids: Vec::with_capacity(n),
            hold: Some(hold_w),
            _scratch: Some(scratch),
        };
        for _ in 0..n {
            // SAFETY: this process is single-threaded here (criterion runs the
            // benchmarks on the main thread, and this is before any timing);
            // the child only makes library calls and then leaves with _exit.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
            if pid == 0 {
                let hold_w = workers.hold.take().expect("hold pipe");
                drop(hold_w);
                let code = worker(&workers.dir, ready_w.as_raw_fd(), hold_r.as_raw_fd());
                unsafe { libc::_exit(code) };
            }
            workers.pids.push(pid);
        }
        drop(ready_w);
        drop(hold_r);
        wait_ready(ready_r.as_raw_fd(), n);
        workers
    }

    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the hold pipe lets every worker leave through its Drop
        // (which unlinks its file); any that does not is killed.
        drop(self.hold.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left: Vec<libc::pid_t> = std::mem::take(&mut self.pids);
        while !left.is_empty() && Instant::now() < deadline {
            left.retain(|&pid| {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 }
            });
            if !left.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for &pid in &left {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// A worker's life, in the forked child. Returns its exit code.
fn worker(dir: &Path, ready: RawFd, hold: RawFd) -> i32 {
    let run = || -> Result<(), prefork::scoreboard::Error> {
        let mut board = Scoreboard::new(dir)?;
        board.update(WORKER_STATUS)?;
        write_byte(ready, b'r');
        // Blocks until every write end of the hold pipe is closed.
        let mut byte = 0u8;
        loop {
            let got = unsafe { libc::read(hold, (&mut byte as *mut u8).cast(), 1) };
            let interrupted = got < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
            if !interrupted {
                break;
            }
        }
        drop(board);
        Ok(())
    };
    match std::panic::catch_unwind(run) {
        Ok(Ok(())) => 0,
        _ => {
            write_byte(ready, b'E');
            1
        }
    }
}

fn write_byte(fd: RawFd, byte: u8) {
    unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
}

/// Waits until `n` workers have reported ready; panics if one failed, or if
/// they take longer than a minute.
fn wait_ready(fd: RawFd, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {seen} of {n} workers came up");
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = left.as_millis().min(i32::MAX as u128) as i32;
        if unsafe { libc::poll(&mut pfd, 1, timeout) } <= 0 {
            continue;
        }
        let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        assert!(got != 0, "the workers went away: {seen} of {n} came up");
        if got < 0 {
            continue;
        }
        let got = &buf[..got as usize];
        assert!(!got.contains(&b'E'), "a worker failed to update its status");
        seen += got.len();
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(ret, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_update(&mut criterion);
    bench_read_all(&mut criterion);
    criterion.final_summary();
}
