//! What a worker is given: its scoreboard, its own locked status file as a
//! descriptor, its slot, the master's pid; a process group of its own,
//! stdin from /dev/null, default signal dispositions and an empty mask; and
//! nothing else of the master's. Observed from /proc on workers that are
//! `sleep` itself, so that no shell in between adds or hides anything.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use prefork::scoreboard::Scoreboard;

use crate::harness::{environ, open_fds, proc_stat, status_mask, Running, Sandbox};

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

#[test]
fn a_worker_gets_its_board_its_locked_status_file_its_slot_and_the_master_pid() {
    let sandbox = Sandbox::new();
    let master = Running::start(&mut sandbox.prefork(&["-w", "3", "--", "sleep", "1000"]));
    let workers = master.wait_workers(3);
    let board = sandbox.board();
    let real_board = board.canonicalize().unwrap();

    let mut slots = BTreeSet::new();
    for pid in workers {
        let env = environ(pid);
        assert_eq!(env["PREFORK_SCOREBOARD_DIR"], board.to_str().unwrap());
        assert_eq!(env["PREFORK_MASTER_PID"], master.pid().to_string());
        let slot: usize = env["PREFORK_WORKER_SLOT"].parse().unwrap();
        assert_eq!(slot, master.slot_of(pid));
        slots.insert(slot);

        let fd: i32 = env["PREFORK_STATUS_FD"].parse().unwrap();
        let status_file = real_board.join(format!("status_{pid}"));
        assert_eq!(open_fds(pid).get(&fd), Some(&status_file), "worker {pid}");
        // Its lock says "alive" to every reader: no one else can take it.
        let other = std::fs::File::open(&status_file).unwrap();
        let ret = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let error = std::io::Error::last_os_error();
        assert_eq!(ret, -1, "the lock of worker {pid}'s file was free");
        assert_eq!(error.raw_os_error(), Some(libc::EWOULDBLOCK));
    }
    assert_eq!(slots, BTreeSet::from([0, 1, 2]));
}

#[test]
fn a_worker_inherits_nothing_else_even_from_a_careless_parent() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.prefork(&["-w", "2", "--", "sleep", "1000"]);
    // The master's own parent leaks descriptors (not close-on-exec; one
    // above 100, clear of std's spawn pipe), gives it a file as stdin,
    // ignores SIGUSR2, SIGPIPE and the last real-time signal, and blocks
    // SIGUSR2 and SIGALRM, as careless parents (or nohup) do. (This test
    // process may also ignore glibc's reserved signal 32, inherited from
    // whoever started it.)
    let null = CString::new("/dev/null").unwrap();
    let stdin = sandbox.script("stdin", "a file for the master's stdin");
    let stdin_c = CString::new(stdin.clone()).unwrap();
    // SAFETY: open, fcntl, signal, sigemptyset, sigaddset and sigprocmask
    // are async-signal-safe; the path was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(null.as_ptr(), libc::O_RDONLY);
            libc::fcntl(fd, libc::F_DUPFD, 100);
            let input = libc::open(stdin_c.as_ptr(), libc::O_RDONLY);
            libc::dup2(input, 0);
            libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            libc::signal(libc::SIGRTMAX(), libc::SIG_IGN);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let master = Running::start(&mut cmd);
    let workers = master.wait_workers(2);
    // The set-up took: the master did inherit all that.
    assert!(open_fds(master.pid()).keys().any(|&fd| fd >= 100));
    let stdin = PathBuf::from(&stdin).canonicalize().unwrap();
    assert_eq!(open_fds(master.pid())[&0], stdin);
    let ignored = bit(libc::SIGUSR2) | bit(libc::SIGRTMAX());
    assert_eq!(status_mask(master.pid(), "SigIgn") & ignored, ignored);
    assert_ne!(status_mask(master.pid(), "SigBlk") & bit(libc::SIGALRM), 0);

    for pid in workers {
        let fds = open_fds(pid);
        assert_eq!(
            fds.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "worker {pid}: {fds:?}"
        );
        assert_eq!(fds[&0], PathBuf::from("/dev/null"), "stdin");
        assert_eq!(status_mask(pid, "SigIgn"), 0, "ignored signals of {pid}");
        assert_eq!(status_mask(pid, "SigBlk"), 0, "blocked signals of {pid}");
        assert_eq!(proc_stat(pid).unwrap().pgid, pid, "its own process group");
    }
}

#[test]
fn a_status_written_straight_to_the_descriptor_is_on_the_board() {
    let sandbox = Sandbox::new();
    let worker = sandbox.status_worker(&[]);
    let master = Running::start(sandbox.prefork(&["-w", "2", "--"]).args(&worker));
    let workers = master.wait_ready(&sandbox, 2);

    let reader = Scoreboard::builder(sandbox.board()).build().unwrap();
    let all = reader.read_all().unwrap();
    let mut ids: Vec<&String> = all.keys().collect();
    ids.sort();
    let mut expected: Vec<String> = workers.iter().map(|p| p.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected.iter().collect::<Vec<_>>());
    for pid in workers {
        let status = &all[&pid.to_string()].status;
        let expected = format!("serving slot={}", master.slot_of(pid));
        assert_eq!(String::from_utf8_lossy(status), expected);
    }
}
