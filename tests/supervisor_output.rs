//! The master's output never stops its loop: standard output or error as a
//! pipe nobody reads (a hung `| logger`, `| less` left on a page, journald
//! under back-pressure) must not keep it from reaping, respawning or
//! stopping. Found by trying it (issue 10): before the output sinks, the
//! master sat in a pipe write with its killed workers left as zombies.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::Signal;

use crate::harness::{
    alive, counts_dropped_output, proc_stat, signal, small_pipe, Running, Sandbox,
};

/// Waits on events; generous because a loaded 2-core machine forks slowly.
const PATIENCE: Duration = Duration::from_secs(60);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many bytes wait in the pipe.
fn waiting(read: &OwnedFd) -> usize {
    let mut size: libc::c_int = 0;
    // SAFETY: FIONREAD writes the count into an int.
    unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut size) };
    size as usize
}

/// Everything the pipe holds now, without waiting.
fn drain(read: &OwnedFd) -> Vec<u8> {
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("O_NONBLOCK");
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(n @ 1..) = nix::unistd::read(read.as_raw_fd(), &mut chunk) {
        out.extend_from_slice(&chunk[..n]);
    }
    out
}

#[test]
fn an_unread_stdout_stops_no_respawn_nor_shutdown() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let (out_read, out_write) = small_pipe();
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let cmd = sandbox.prefork(&["-w", "20", "--graceful-timeout", "5s", "--", "sh", &worker]);
    let mut master = Running::start_with_output(cmd, out_write, err_write);
    // The log is read, as a terminal would be.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let mut err = std::fs::File::from(err_read);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut chunk) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
    };
    wait_for("20 ready workers", || sandbox.pids("ready").len() >= 20);
    // Boards until the pipe has no room for one more, one at a time
    // (signals coalesce), then one more, which the master must keep
    // without waiting.
    let mut sent = 0;
    let mut board = 0;
    while sent == 0 || waiting(&out_read) + board <= 4096 {
        let before = waiting(&out_read);
        signal(master.pid(), Signal::SIGUSR1);
        sent += 1;
        wait_for("a board in the pipe", || waiting(&out_read) > before);
        board = waiting(&out_read) - before;
    }
    signal(master.pid(), Signal::SIGUSR1);
    sent += 1;
    let victims: Vec<i32> = master.workers().into_iter().take(3).collect();
    assert_eq!(victims.len(), 3);
    for &pid in &victims {
        signal(pid, Signal::SIGKILL);
    }
    wait_for("the killed workers to be reaped and replaced", || {
        let log = log.lock().unwrap();
        victims
            .iter()
            .all(|pid| log.contains(&format!("worker pid={pid} ")))
            && log.matches("(restart 1)").count() >= 3
    });
    assert!(victims.iter().all(|&pid| proc_stat(pid).is_none()));
    wait_for("20 workers again", || master.workers().len() == 20);
    // The boards were kept, whole: reading the pipe lets them through.
    let mut boards = Vec::new();
    wait_for("every board", || {
        boards.extend(drain(&out_read));
        String::from_utf8_lossy(&boards)
            .matches("prefork master pid=")
            .count()
            == sent
    });
    signal(master.pid(), Signal::SIGTERM);
    let status = master.wait_exit();
    assert!(status.success(), "{status}");
    reader.join().unwrap();
}

#[test]
fn an_unread_stderr_drops_whole_lines_says_so_and_stops_nothing() {
    let sandbox = Sandbox::new();
    // Each start appends one byte to `starts` and exits at once: two log
    // lines a worker, a log burst that fills the pipe and the sink's buffer.
    let worker = sandbox.script("brief.sh", r#"printf . >> "$DIR/starts""#);
    let (err_read, err_write) = small_pipe();
    let out_write = std::fs::File::create(sandbox.path().join("stdout")).expect("create stdout");
    let args = [
        "-w",
        "20",
        "--min-uptime",
        "0",
        "--graceful-timeout",
        "5s",
        "--",
        "sh",
        &worker,
    ];
    let mut master = Running::start_with_output(sandbox.prefork(&args), out_write, err_write);
    let starts = || std::fs::metadata(sandbox.path().join("starts")).map_or(0, |m| m.len());
    // About 170 bytes of log a start: 3000 starts overflow the 256 KiB buffer.
    wait_for("3000 starts with standard error unread", || {
        starts() >= 3000
    });
    // Still turning: every zombie seen now is reaped, workers keep starting.
    let zombies = master.zombies();
    let now = starts();
    wait_for("more starts", || starts() >= now + 200);
    wait_for("the zombies seen to be reaped", || {
        zombies
            .iter()
            .all(|&pid| !alive(pid) && proc_stat(pid).is_none())
    });
    // Once read, the log says what it lost, and every line is whole.
    let mut log = Vec::new();
    wait_for("the dropped-lines notice", || {
        log.extend(drain(&err_read));
        String::from_utf8_lossy(&log).contains("were dropped: nobody read it fast enough")
    });
    let text = String::from_utf8_lossy(&log).into_owned();
    for line in text.lines() {
        assert!(
            line.starts_with('[') || line.starts_with("prefork: "),
            "a line cut short: {line:?}"
        );
    }
    // The board counts what was lost.
    signal(master.pid(), Signal::SIGUSR1);
    wait_for("a board counting the dropped lines", || {
        std::fs::read_to_string(sandbox.path().join("stdout"))
            .is_ok_and(|out| counts_dropped_output(&out))
    });
    signal(master.pid(), Signal::SIGTERM);
    let status = master.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn a_closed_stderr_is_not_fatal() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let (err_read, err_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    drop(err_read); // every write now fails with EPIPE
    let out_write = std::fs::File::create(sandbox.path().join("stdout")).expect("create stdout");
    let cmd = sandbox.prefork(&["-w", "2", "--graceful-timeout", "5s", "--", "sh", &worker]);
    let mut master = Running::start_with_output(cmd, out_write, err_write);
    wait_for("2 ready workers", || sandbox.pids("ready").len() >= 2);
    let victim = master.workers()[0];
    signal(victim, Signal::SIGKILL);
    wait_for("a replacement", || sandbox.pids("ready").len() >= 3);
    assert_eq!(master.workers().len(), 2);
    signal(master.pid(), Signal::SIGUSR1);
    wait_for("the board on standard output", || {
        std::fs::read_to_string(sandbox.path().join("stdout"))
            .is_ok_and(|out| out.contains("prefork master pid="))
    });
    signal(master.pid(), Signal::SIGTERM);
    assert!(master.wait_exit().success());
}
