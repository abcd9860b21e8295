//! Limits exhausted (issue 11): a soft descriptor limit too low for the
//! pool is raised by the master to the hard one, and the workers get back
//! the soft limit prefork was started with.

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::resource::{setrlimit, Resource};

use crate::harness::{limits, Running, Sandbox};

#[test]
fn a_low_soft_descriptor_limit_is_raised_for_the_master_and_kept_for_workers() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    // 100 workers hold 100 status files open in the master: far above 64.
    let mut cmd = sandbox.prefork(&["-w", "100", "--", "sh", &worker]);
    // SAFETY: setrlimit is a system call, async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            setrlimit(Resource::RLIMIT_NOFILE, 64, 20000)?;
            Ok(())
        });
    }
    let master = Running::start(&mut cmd);
    let workers = master.wait_ready(&sandbox, 100);
    assert_eq!(
        limits(master.pid(), "Max open files"),
        ("20000".into(), "20000".into())
    );
    for pid in workers.iter().take(5) {
        assert_eq!(
            limits(*pid, "Max open files"),
            ("64".into(), "20000".into())
        );
    }
    let log = master.stderr();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("cannot be checked"), "{log}");
}

#[test]
fn a_fork_refused_by_the_process_limit_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    // The limit binds a user, not root (CI runs as root): the master runs
    // as nobody, on a board nobody owns, with room for itself, two workers
    // and their `sleep`s, and not for the third worker.
    std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let board = sandbox.board();
    std::fs::create_dir(&board).unwrap();
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    nix::unistd::chown(&board, Some(nobody.uid), Some(nobody.gid)).unwrap();
    let worker = sandbox.script("idle.sh", "exec sleep 1000");
    // A copy nobody can run wherever the checkout is (under /root, say).
    let binary = sandbox.path().join("prefork");
    {
        // No other test's fork may hold the copy open for writing when it
        // is run (ETXTBSY).
        let _forking = crate::util::fork_lock();
        std::fs::copy(env!("CARGO_BIN_EXE_prefork"), &binary).unwrap();
    }
    let mut cmd = Command::new(&binary);
    cmd.env("DIR", sandbox.path()).args([
        "--scoreboard",
        board.to_str().unwrap(),
        "-w",
        "3",
        "--",
        "sh",
        &worker,
    ]);
    cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    // SAFETY: setrlimit is a system call, async-signal-safe. It runs before
    // std drops root (the uid change comes after pre_exec), which is fine:
    // the limit is counted against the user at each fork.
    unsafe {
        cmd.pre_exec(|| {
            setrlimit(Resource::RLIMIT_NPROC, 3, 3)?;
            Ok(())
        });
    }
    let master = Running::start(&mut cmd);
    master.wait_until("a fork refused for the process limit", || {
        master
            .stderr()
            .contains("fork failed: process limit reached")
    });
}
