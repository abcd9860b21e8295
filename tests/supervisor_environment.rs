//! The environment changes under the master (issue 11): its board's
//! directory removed (tmpfiles cleaners and logind's RemoveIPC do this to
//! /dev/shm and /run/user) or renamed away while it runs. The master makes
//! it again, says so with the path, and recovers by itself: workers start
//! again, and every worker shows on the board again.

use nix::sys::signal::Signal;

use crate::harness::{signal, Sandbox};

/// The pids with a status file on the board.
fn on_board(sandbox: &Sandbox) -> Vec<i32> {
    let mut pids: Vec<i32> = sandbox
        .board_files()
        .iter()
        .filter_map(|name| name.strip_prefix("status_")?.parse().ok())
        .collect();
    pids.sort();
    pids
}

fn recovers_after(vanish: impl FnOnce(&Sandbox)) {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let master = sandbox.start_sh_workers(2, "5s", &worker);
    let first = master.wait_ready(&sandbox, 2);
    assert_eq!(on_board(&sandbox), first);
    vanish(&sandbox);
    // A worker dies while the board is gone: it is replaced all the same.
    signal(first[0], Signal::SIGKILL);
    let board = sandbox.board().display().to_string();
    master.wait_until("the board made again, and said so", || {
        master
            .stderr()
            .lines()
            .any(|l| l.contains(&board) && l.contains("created it again"))
    });
    // Every worker shows on the new board: the survivor was rolled over.
    master.wait_until("two workers on the new board", || {
        let workers = master.workers();
        workers.len() == 2 && on_board(&sandbox) == workers && !workers.contains(&first[1])
    });
    let log = master.stderr();
    assert!(!log.contains("cannot start worker"), "{log}");
}

#[test]
fn a_removed_board_is_made_again_and_the_pool_recovers() {
    recovers_after(|sandbox| std::fs::remove_dir_all(sandbox.board()).unwrap());
}

#[test]
fn a_board_renamed_away_is_made_again_and_the_pool_recovers() {
    recovers_after(|sandbox| {
        std::fs::rename(sandbox.board(), sandbox.path().join("board.old")).unwrap()
    });
}

#[test]
fn a_second_master_on_the_same_board_is_refused_naming_the_first() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let first = sandbox.start_sh_workers(2, "5s", &worker);
    let workers = first.wait_ready(&sandbox, 2);
    let mut second = sandbox.start_sh_workers(2, "5s", &worker);
    let status = second.wait_exit();
    let said = second.stderr();
    assert_eq!(status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!(
            "the prefork master pid={} already runs",
            first.pid()
        )),
        "{said}"
    );
    assert!(second.spawned().is_empty(), "{said}");
    // The first goes on, untouched, and its file is no worker's.
    assert_eq!(first.workers(), workers);
    assert_eq!(on_board(&sandbox), workers);
    assert!(sandbox
        .board_files()
        .contains(&"prefork.master".to_string()));
}

/// A worker that leaves an escapee behind at each start: a `sleep` in a
/// session of its own, whose parent exits at once, so that it is
/// reparented to the master (a subreaper). Its pid goes to `escaped`.
fn escaping_worker(sandbox: &Sandbox) -> String {
    sandbox.script(
        "escaping.sh",
        r#"( setsid sleep 1000 & echo $! >> "$DIR/escaped" )
trap 'exit 0' TERM
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    )
}

#[test]
fn escaped_descendants_are_adopted_said_once_and_stopped_with_the_master() {
    let sandbox = Sandbox::new();
    let worker = escaping_worker(&sandbox);
    let mut master = crate::harness::Running::start(&mut sandbox.prefork(&[
        "-w",
        "2",
        "--check-interval",
        "50ms",
        "--graceful-timeout",
        "5s",
        "--",
        "sh",
        &worker,
    ]));
    // (Not `wait_ready`: an escapee leads a group of its own too, and is
    // the master's child: it would count as a worker there.)
    master.wait_until("two escapees adopted", || {
        let escaped = sandbox.pids("escaped");
        escaped.len() == 2
            && escaped.iter().all(|pid| {
                master
                    .stderr()
                    .matches(&format!("adopted pid={pid} `"))
                    .count()
                    == 1
            })
    });
    let escaped = sandbox.pids("escaped");
    // Left running while the master runs (no kill_orphans).
    assert!(escaped.iter().all(|&pid| crate::harness::alive(pid)));
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success(), "{}", master.stderr());
    for pid in escaped {
        assert!(
            !crate::harness::alive(pid),
            "escapee {pid} outlived the master"
        );
        let end = format!("adopted pid={pid} ended (SIGTERM)");
        assert!(master.stderr().contains(&end), "{}", master.stderr());
    }
}

#[test]
fn with_kill_orphans_an_escaped_descendant_is_stopped_at_once() {
    let sandbox = Sandbox::new();
    let worker = escaping_worker(&sandbox);
    let master = crate::harness::Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--check-interval",
        "50ms",
        "--kill-orphans",
        "--",
        "sh",
        &worker,
    ]));
    master.wait_until("the escapee stopped while the master runs", || {
        let escaped = sandbox.pids("escaped");
        escaped.len() == 1
            && escaped.iter().all(|&pid| {
                !crate::harness::alive(pid)
                    && master
                        .stderr()
                        .contains(&format!("adopted pid={pid} ended (SIGTERM)"))
            })
    });
    let ready: Vec<i32> = sandbox.pids("ready").into_iter().collect();
    assert_eq!(master.workers(), ready);
}
