//! A master's life: N workers start, a dead one is replaced in its slot, and
//! a shutdown stops every worker and what it started, leaving no process
//! and no file behind.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{alive, group_exists, names_in, Running, Sandbox};

const TERM_AND_EXIT: &str = r#"trap 'echo $$ >> "$DIR/terms"; exit 0' TERM"#;

#[test]
fn starts_the_requested_number_of_workers_each_in_its_own_slot_and_group() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let master = Running::start(&mut sandbox.prefork(&["-w", "3", "--", "sh", &worker]));

    let workers = master.wait_ready(&sandbox, 3);
    let mut slots: Vec<usize> = workers
        .iter()
        .map(|&pid| sandbox.slot_file(pid).expect("a slot file"))
        .collect();
    slots.sort();
    assert_eq!(slots, [0, 1, 2], "{}", master.report("one worker per slot"));
    for &pid in &workers {
        assert_eq!(sandbox.slot_file(pid), Some(master.slot_of(pid)));
    }
    // `workers()` counts only group leaders: each worker leads its own.
    assert_eq!(master.workers(), workers);
}

#[test]
fn a_killed_worker_is_replaced_in_the_same_slot_and_reaped() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let master = Running::start(&mut sandbox.prefork(&["-w", "3", "--", "sh", &worker]));
    let first = master.wait_ready(&sandbox, 3);

    let victim = first[1];
    let victim_slot = sandbox.slot_file(victim).expect("a slot file");
    crate::harness::signal(victim, Signal::SIGKILL);
    // Dead first (SIGKILL is not instantaneous), then replaced.
    master.wait_until("the victim to die", || !alive(victim));
    let after = master.wait_ready(&sandbox, 3);
    let replacement: Vec<i32> = after
        .iter()
        .copied()
        .filter(|p| !first.contains(p))
        .collect();
    assert_eq!(replacement.len(), 1, "{}", master.report("one replacement"));
    assert_eq!(sandbox.slot_file(replacement[0]), Some(victim_slot));
    assert!(!after.contains(&victim));

    // All at once, now: every slot is refilled, and none of the dead (nor
    // the `sleep` each left behind) stays a zombie.
    for &pid in &after {
        crate::harness::signal(pid, Signal::SIGKILL);
    }
    master.wait_until("the victims to die", || after.iter().all(|&p| !alive(p)));
    let refilled = master.wait_ready(&sandbox, 3);
    assert!(refilled.iter().all(|p| !after.contains(p)));
    let mut slots: Vec<usize> = refilled
        .iter()
        .map(|&p| sandbox.slot_file(p).expect("a slot file"))
        .collect();
    slots.sort();
    assert_eq!(slots, [0, 1, 2]);
    master.wait_until("no zombie child of the master", || {
        master.zombies().is_empty()
    });
    let dead: Vec<i32> = first.iter().chain(&after).copied().collect();
    master.wait_until("the dead workers' groups to be gone", || {
        dead.iter().all(|&p| !group_exists(p))
    });
}

#[test]
fn term_stops_every_worker_with_sigterm_and_exits_0_leaving_nothing() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker(TERM_AND_EXIT);
    let mut master = sandbox.start_sh_workers(3, "5s", &worker);
    let workers = master.wait_ready(&sandbox, 3);
    let status_files = sandbox
        .board_files()
        .into_iter()
        .filter(|n| n.starts_with("status_"));
    assert_eq!(status_files.count(), 3, "one status file per worker");

    master.signal(Signal::SIGTERM);
    let status = master.wait_exit();

    assert_eq!(status.code(), Some(0), "{}", master.report("exit status"));
    assert_eq!(
        sandbox.pids("terms"),
        workers.iter().copied().collect(),
        "every worker's trap ran"
    );
    for pid in workers {
        assert!(!alive(pid) && !group_exists(pid), "worker {pid} survives");
    }
    // A directory given with --scoreboard stays, emptied.
    assert!(sandbox.board().is_dir());
    assert_eq!(sandbox.board_files(), Vec::<String>::new());
}

#[test]
fn the_default_scoreboard_directory_is_removed_at_exit() {
    let sandbox = Sandbox::new();
    let runtime = sandbox.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let worker = sandbox.worker(TERM_AND_EXIT);
    // No --scoreboard: a private directory under $XDG_RUNTIME_DIR.
    let mut master = Running::start(
        sandbox
            .prefork_on_default_board(&["-w", "2", "--graceful-timeout", "5s", "--", "sh", &worker])
            .env("XDG_RUNTIME_DIR", &runtime),
    );
    let workers = master.wait_ready(&sandbox, 2);

    let private = names_in(&runtime);
    assert_eq!(private.len(), 1, "one private directory: {private:?}");
    assert!(private[0].starts_with("prefork-"));
    let board = runtime.join(&private[0]);
    let mut expected: Vec<String> = workers.iter().map(|p| format!("status_{p}")).collect();
    expected.sort();
    // The status files, and the master's own file.
    expected.push("prefork.master".to_string());
    expected.sort();
    assert_eq!(names_in(&board), expected);

    master.signal(Signal::SIGTERM);
    assert_eq!(master.wait_exit().code(), Some(0));
    assert_eq!(names_in(&runtime), Vec::<String>::new(), "removed at exit");
}

#[test]
fn a_worker_ignoring_term_is_killed_after_the_graceful_timeout() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap '' TERM");
    let mut master = sandbox.start_sh_workers(2, "500ms", &worker);
    let workers = master.wait_ready(&sandbox, 2);

    let asked = Instant::now();
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit();

    assert_eq!(status.code(), Some(0), "{}", master.report("exit status"));
    // A lower bound, not a performance assertion: it did wait.
    assert!(asked.elapsed() >= Duration::from_millis(500));
    master.assert_killed(&workers);
}

#[test]
fn shutdown_stops_what_a_worker_started_in_its_group() {
    let sandbox = Sandbox::new();
    // A wrapper that dies of SIGTERM at once, its child with it.
    let worker = sandbox.script(
        "wrapper.sh",
        r#"sleep 1000 &
echo $! >> "$DIR/children"
echo $$ >> "$DIR/ready"
wait"#,
    );
    let mut master = sandbox.start_sh_workers(2, "5s", &worker);
    let workers = master.wait_ready(&sandbox, 2);
    let children = sandbox.pids("children");
    assert_eq!(children.len(), 2);
    assert!(children.iter().all(|&c| alive(c)));

    master.signal(Signal::SIGTERM);
    assert_eq!(master.wait_exit().code(), Some(0));
    for pid in children.into_iter().chain(workers) {
        assert!(!alive(pid), "{}", master.report(&format!("{pid} survives")));
    }
}

#[test]
fn shutdown_waits_for_and_then_kills_a_leftover_that_ignores_term() {
    let sandbox = Sandbox::new();
    // The worker itself exits on SIGTERM; the child it leaves in its group
    // notes the signal and carries on, until the graceful timeout's SIGKILL.
    sandbox.script(
        "child.sh",
        r#"trap 'echo $$ >> "$DIR/child-terms"' TERM
echo $$ >> "$DIR/children"
while :; do sleep 1 & wait $!; done"#,
    );
    let worker = sandbox.script(
        "wrapper.sh",
        r#"sh "$DIR/child.sh" &
trap 'exit 0' TERM
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let mut master = sandbox.start_sh_workers(1, "500ms", &worker);
    let worker_pid = master.wait_ready(&sandbox, 1)[0];
    master.wait_until("the worker's child", || sandbox.pids("children").len() == 1);
    let child = *sandbox.pids("children").first().unwrap();

    let asked = Instant::now();
    master.signal(Signal::SIGTERM);
    assert_eq!(master.wait_exit().code(), Some(0));

    assert!(
        sandbox.pids("child-terms").contains(&child),
        "{}",
        master.report("the leftover got SIGTERM")
    );
    assert!(!alive(child) && !alive(worker_pid) && !group_exists(worker_pid));
    // The master did not exit while the leftover ran: it waited for the
    // graceful timeout, then killed it.
    assert!(asked.elapsed() >= Duration::from_millis(500));
}
