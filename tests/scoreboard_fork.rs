//! Real processes: a forked child gets a file of its own and leaves the
//! parent's alone; dead workers' files go; concurrent readers and creators
//! do not trip over each other.
//!
//! Every test that forks holds the fork lock for its whole length (see
//! `util::FORK_MTX`), and its children only make library calls before `_exit`.

use std::path::Path;

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use prefork::scoreboard::{record, Scoreboard};

use crate::util::{
    block_until_killed, deadline, fork_child, fork_lock, locked_file, names_in, status_path,
    tempdir, wait_until, ChildGuard, StartGate,
};

/// A reader with an id of its own, so that it probes every pid's lock
/// (a board never probes its own id's file).
fn monitor(dir: &Path) -> Scoreboard {
    Scoreboard::builder(dir)
        .worker_id(|| "monitor".into())
        .build()
        .unwrap()
}

/// Waits until `reader` lists `pid` with `status`.
fn wait_listed(reader: &Scoreboard, pid: Pid, status: &[u8]) {
    let id = pid.to_string();
    let listed = wait_until(deadline(), || {
        reader.read_all().unwrap().get(&id).map(|s| &s.status[..]) == Some(status)
    });
    assert!(listed, "worker {pid} never showed {status:?}");
}

fn me() -> String {
    std::process::id().to_string()
}

#[test]
fn parent_and_child_each_have_their_own_file_after_fork() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"parent").unwrap();

    let child = fork_child(&forking, &mut kids, || {
        // The inherited handle notices the fork and makes the child's own file.
        if board.update(b"child").is_err() {
            return 1;
        }
        block_until_killed()
    });
    wait_listed(&board, child, b"child");

    let all = board.read_all().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[&me()].status, b"parent");
    let mut expected = vec![format!("status_{child}"), format!("status_{}", me())];
    expected.sort();
    assert_eq!(names_in(dir.path()), expected);

    // The parent keeps writing to its own file.
    board.update(b"parent again").unwrap();
    assert_eq!(board.read_all().unwrap()[&me()].status, b"parent again");
    assert_eq!(
        board.read_all().unwrap()[&child.to_string()].status,
        b"child"
    );
}

#[test]
fn a_child_that_drops_its_handle_removes_only_its_own_file() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let mut board = Some(Scoreboard::new(dir.path()).unwrap());
    board.as_mut().unwrap().update(b"parent").unwrap();

    let child = fork_child(&forking, &mut kids, || {
        // `take` empties only the child's copy of the Option.
        let mut mine = board.take().unwrap();
        let code = if mine.update(b"child").is_ok() { 0 } else { 1 };
        drop(mine);
        code
    });
    assert_eq!(
        kids.wait_exit(child, deadline()),
        WaitStatus::Exited(child, 0)
    );

    assert!(!status_path(dir.path(), child).exists());
    let all = monitor(dir.path()).read_all().unwrap();
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [&me()],
        "the parent is still locked"
    );
    assert_eq!(all[&me()].status, b"parent");
}

#[test]
fn a_child_that_exits_without_drop_is_removed_by_the_next_read_all() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"parent").unwrap();

    let child = fork_child(&forking, &mut kids, || match board.update(b"child") {
        Ok(()) => 0, // `_exit`: no destructor runs
        Err(_) => 1,
    });
    assert_eq!(
        kids.wait_exit(child, deadline()),
        WaitStatus::Exited(child, 0)
    );
    assert!(status_path(dir.path(), child).exists(), "left behind");

    let all = board.read_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [&me()]);
    assert!(!status_path(dir.path(), child).exists());
    // The parent's lock outlived the child's copy of the parent's descriptor.
    assert_eq!(
        monitor(dir.path()).read_all().unwrap()[&me()].status,
        b"parent"
    );
}

#[test]
fn a_sigkilled_workers_file_is_removed_by_read_all() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let reader = monitor(dir.path());

    let worker = fork_child(&forking, &mut kids, || {
        match Scoreboard::new(dir.path()).and_then(|mut b| b.update(b"working").map(|()| b)) {
            Ok(_board) => block_until_killed(),
            Err(_) => 1,
        }
    });
    wait_listed(&reader, worker, b"working");
    kids.kill(worker);
    assert!(
        status_path(dir.path(), worker).exists(),
        "SIGKILL leaves the file"
    );

    assert!(reader.read_all().unwrap().is_empty());
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn a_sigkilled_workers_file_is_removed_by_cleanup() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let reader = monitor(dir.path());

    let mut workers = Vec::new();
    for n in 0..3 {
        let status = format!("worker {n}");
        workers.push(fork_child(&forking, &mut kids, || {
            let board = Scoreboard::new(dir.path())
                .and_then(|mut b| b.update(status.as_bytes()).map(|()| b));
            match board {
                Ok(_board) => block_until_killed(),
                Err(_) => 1,
            }
        }));
    }
    for (n, worker) in workers.iter().enumerate() {
        wait_listed(&reader, *worker, format!("worker {n}").as_bytes());
    }
    kids.kill(workers[1]);

    reader.cleanup().unwrap();
    let mut expected = vec![
        format!("status_{}", workers[0]),
        format!("status_{}", workers[2]),
    ];
    expected.sort();
    assert_eq!(names_in(dir.path()), expected, "only the dead one goes");
}

#[test]
fn dropping_an_inherited_handle_in_a_child_removes_nothing_of_the_parents() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let mut board = Some(Scoreboard::new(dir.path()).unwrap());
    board.as_mut().unwrap().update(b"parent").unwrap();

    let child = fork_child(&forking, &mut kids, || {
        drop(board.take());
        0
    });
    assert_eq!(
        kids.wait_exit(child, deadline()),
        WaitStatus::Exited(child, 0)
    );

    assert_eq!(names_in(dir.path()), [format!("status_{}", me())]);
    assert_eq!(
        monitor(dir.path()).read_all().unwrap()[&me()].status,
        b"parent"
    );
    let mut board = board.unwrap();
    board.update(b"still mine").unwrap();
    assert_eq!(
        monitor(dir.path()).read_all().unwrap()[&me()].status,
        b"still mine"
    );
}

// Races.

#[test]
fn readers_never_touch_a_writers_tmp_file() {
    let dir = tempdir();
    // A writer between creating its .tmp and locking it (unlocked), and one
    // between locking and renaming it (locked): Parallel::Scoreboard 0.08
    // removed the first and listed the second as "<pid>.tmp".
    let unlocked = dir.path().join("status_1001.tmp");
    std::fs::write(&unlocked, record::encode(b"starting")).unwrap();
    let locked = dir.path().join("status_1002.tmp");
    let _writer = locked_file(&locked, &record::encode(b"starting"));

    let reader = monitor(dir.path());
    assert!(reader.read_all().unwrap().is_empty());
    reader.cleanup().unwrap();
    assert!(unlocked.exists());
    assert!(locked.exists());
    assert_eq!(
        std::fs::read(&unlocked).unwrap(),
        record::encode(b"starting")
    );
}

#[test]
fn concurrent_cleanups_of_the_same_dead_files_all_succeed() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    // Dead workers' files: a valid record that nobody holds locked.
    for pid in 100_000..100_300 {
        std::fs::write(status_path(dir.path(), pid), record::encode(b"dead")).unwrap();
    }
    let gate = StartGate::new();
    let mut cleaners = Vec::new();
    for _ in 0..3 {
        cleaners.push(fork_child(&forking, &mut kids, || {
            let Ok(board) = Scoreboard::new(dir.path()) else {
                return 2;
            };
            gate.wait();
            match board.cleanup() {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }));
    }
    // And one more reader in this process, in a thread.
    let reader = monitor(dir.path());
    let in_thread = std::thread::scope(|s| {
        let t = s.spawn(|| reader.cleanup());
        gate.open();
        t.join().unwrap()
    });

    in_thread.unwrap();
    for pid in cleaners {
        assert_eq!(kids.wait_exit(pid, deadline()), WaitStatus::Exited(pid, 0));
    }
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn processes_creating_the_base_dir_at_once_all_succeed() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let base = dir.path().join("a/b/c/board");
    let gate = StartGate::new();
    let mut creators = Vec::new();
    for _ in 0..8 {
        creators.push(fork_child(&forking, &mut kids, || {
            gate.wait();
            match Scoreboard::new(&base).and_then(|mut b| b.update(b"up")) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }));
    }
    gate.open();
    for pid in creators {
        assert_eq!(kids.wait_exit(pid, deadline()), WaitStatus::Exited(pid, 0));
    }
    assert!(base.is_dir());
}
