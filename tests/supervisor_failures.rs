//! When things go wrong: a command that cannot run, a master killed
//! outright, a worker that crashes as soon as it starts, a worker's orphan,
//! and a mistyped command line.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{alive, proc_stat, set_mode, Running, Sandbox};

/// Runs a master that is expected to exit by itself: its exit code, its
/// stderr, and whether it ever started a worker.
fn run_to_exit(master: &mut Running) -> (Option<i32>, String, bool) {
    let code = master.wait_exit().code();
    (code, master.stderr(), !master.spawned().is_empty())
}

#[test]
fn a_command_that_does_not_exist_exits_127_at_once_without_starting_a_worker() {
    for command in [
        "/nonexistent/prefork-test-command",
        "prefork-test-no-such-command",
    ] {
        let sandbox = Sandbox::new();
        let started = Instant::now();
        let mut master = Running::start(&mut sandbox.prefork(&["-w", "3", "--", command]));
        let (code, stderr, spawned) = run_to_exit(&mut master);

        assert_eq!(code, Some(127), "{stderr}");
        // Generous: the point is that it does not retry with a backoff.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(stderr.contains(command), "{stderr}");
        assert!(!spawned, "{stderr}");
        // Not even the status file the failed child registered is left.
        assert_eq!(sandbox.board_files(), Vec::<String>::new());
    }
}

#[test]
fn a_file_that_is_not_executable_exits_126() {
    let sandbox = Sandbox::new();
    let program = sandbox.script("not-executable.sh", "exit 0");
    set_mode(&program, 0o644);
    let mut master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", &program]));
    let (code, stderr, spawned) = run_to_exit(&mut master);

    assert_eq!(code, Some(126), "{stderr}");
    assert!(stderr.contains(&program), "{stderr}");
    assert!(!spawned, "{stderr}");
    assert_eq!(sandbox.board_files(), Vec::<String>::new());
}

#[test]
fn a_master_killed_with_sigkill_takes_its_workers_with_it() {
    let sandbox = Sandbox::new();
    let mut master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", "sleep", "1000"]));
    let workers = master.wait_workers(2);

    // The bound runs from the kill, and ends when the workers are first seen
    // dead. (Not from the master's exit as `wait_exit` sees it: that waits
    // for its stderr to close too, which the workers hold open, so by then
    // they were dead already and the bound could never fail.)
    let killed = Instant::now();
    crate::harness::signal(master.pid(), Signal::SIGKILL);
    let mut died_after = Duration::MAX;
    master.wait_until("the workers to die with the master", || {
        let dead = workers.iter().all(|&p| !alive(p));
        if dead {
            died_after = killed.elapsed();
        }
        dead
    });
    // The issue's bound; PR_SET_PDEATHSIG makes it immediate in practice.
    assert!(
        died_after < Duration::from_secs(1),
        "{}",
        master.report(&format!(
            "the workers died {died_after:?} after the master's kill"
        ))
    );
    master.wait_exit();
}

#[test]
fn a_crash_looping_command_is_respawned_with_a_backoff_and_the_master_stays_responsive() {
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let master = Running::start(&mut sandbox.prefork(&["-w", "1", "--", "sh", "-c", "exit 1"]));

    // Five spawns take 0.3 s of backoff (0, 0, 100, 200 ms); the sixth
    // comes 400 ms after the fifth, so the master is now backing off.
    master.wait_until("five spawns", || master.spawned().len() >= 5);
    let board = master.dump();
    assert!(board.contains("workers="), "{board}");
    assert!(board.contains("exit 1"), "the last exit is shown: {board}");

    // The point here is what does not happen over a period: a hot loop.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    // Spawns at about 0, 0, 0.1, 0.3, 0.7, 1.5 s (then 3.1 s): 6 within
    // 3 s; 10 leaves room for a slow machine, far from a hot loop's hundreds.
    let spawns = master.spawned().len();
    assert!(
        (5..=10).contains(&spawns),
        "{}",
        master.report(&format!("{spawns} spawns"))
    );
    assert!(alive(master.pid()));
}

#[test]
fn an_orphan_reparented_to_the_master_is_reaped_without_disturbing_the_workers() {
    let sandbox = Sandbox::new();
    // The subshell exits at once, orphaning its `sleep`: the master, a
    // subreaper, becomes its parent.
    let worker = sandbox.script(
        "worker.sh",
        r#"(sleep 1000 & echo $! > "$DIR/orphan_$$")
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", "sh", &worker]));
    let workers = master.wait_ready(&sandbox, 2);
    let orphans: Vec<i32> = workers
        .iter()
        .flat_map(|w| sandbox.pids(&format!("orphan_{w}")))
        .collect();
    assert_eq!(orphans.len(), 2);
    master.wait_until("the orphans to be the master's children", || {
        orphans
            .iter()
            .all(|&o| proc_stat(o).is_some_and(|p| p.ppid == master.pid()))
    });

    for &orphan in &orphans {
        crate::harness::signal(orphan, Signal::SIGTERM);
    }

    // Gone altogether, not zombies: reaped.
    master.wait_until("the orphans to be reaped", || {
        orphans.iter().all(|&o| proc_stat(o).is_none())
    });
    assert!(master.zombies().is_empty());
    assert_eq!(master.workers(), workers, "{}", master.stderr());
    // The master took them for no worker of its: no worker ended, none
    // was started in its place.
    assert!(master.ended().is_empty(), "{}", master.stderr());
    assert!(master.dump().contains("workers=2/2"));
    assert_eq!(master.spawned().len(), 2, "{}", master.stderr());
}

/// Runs `prefork` with `args`: it must refuse them as a usage error (exit 2,
/// before starting anything), with a message naming `culprit`.
fn assert_usage_error(args: &[&str], culprit: &str) {
    let sandbox = Sandbox::new();
    let mut master = Running::start(&mut sandbox.prefork(args));
    let (code, stderr, spawned) = run_to_exit(&mut master);
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(culprit), "{args:?}: {stderr}");
    assert!(!spawned);
    assert!(!sandbox.board().exists(), "nothing done before the check");
}

#[test]
fn zero_workers_is_a_usage_error() {
    assert_usage_error(&["-w", "0", "--", "true"], "--workers");
}

#[test]
fn a_missing_command_is_a_usage_error() {
    // Neither `-- COMMAND` nor a config file's `command`.
    assert_usage_error(&["-w", "2"], "no worker command: give one after `--`");
}

#[test]
fn a_malformed_duration_is_a_usage_error() {
    assert_usage_error(
        &["--graceful-timeout", "5parsecs", "--", "true"],
        "--graceful-timeout",
    );
}
