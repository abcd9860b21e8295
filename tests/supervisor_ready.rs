//! Readiness through the real binary: the stuck timeout counts from it, a
//! worker never ready is a failed start, and the stop signal is what
//! retires a worker.

use nix::sys::signal::Signal;

use crate::harness::{Running, Sandbox};

#[test]
fn a_slow_booting_worker_is_not_judged_stuck_before_it_is_ready() {
    let sandbox = Sandbox::new();
    // Boots for 2.5 s, twice the stuck timeout, then reports and beats.
    let worker = sandbox.script(
        "slow.sh",
        r#"sleep 2.5
prefork report idle
echo $$ >> "$DIR/reported"
while :; do sleep 0.2; prefork report idle; done"#,
    );
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--ready",
        "report",
        "--timeout",
        "1200ms",
        "--check-interval",
        "100ms",
        "--",
        "sh",
        &worker,
    ]));
    let first = master.wait_workers(1)[0];
    master.wait_until("its first report", || !sandbox.lines("reported").is_empty());
    // The worker that reported is the first one: nobody killed it while it
    // booted, though its file was silent for longer than the timeout.
    assert_eq!(sandbox.lines("reported"), [first.to_string()]);
    let log = master.stderr();
    assert!(!log.contains("is stuck"), "{log}");
    assert_eq!(master.spawned().len(), 1, "{log}");
}

#[test]
fn a_worker_never_ready_is_killed_at_the_start_timeout_and_started_again() {
    let sandbox = Sandbox::new();
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--ready",
        "report",
        "--start-timeout",
        "500ms",
        "--",
        "sleep",
        "1000",
    ]));
    master.wait_until("a second start after a start timeout", || {
        master.spawned().len() >= 2
    });
    let (first, _) = master.spawned()[0];
    let log = master.stderr();
    assert!(
        log.contains(&format!(
            "worker pid={first} slot=0 was not ready within start_timeout 500ms (ready = report): a failed start"
        )),
        "{log}"
    );
    master.wait_until("the first one's end", || {
        master
            .stderr()
            .contains(&format!("retired worker pid={first} ended (SIGTERM)"))
    });
}

#[test]
fn the_stop_signal_retires_workers_on_a_reload_and_at_shutdown() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker(
        r#"trap 'echo "$$" >> "$DIR/quit"; exit 0' QUIT
trap 'echo "$$" >> "$DIR/term"; exit 0' TERM"#,
    );
    let mut master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "2",
        "--stop-signal",
        "QUIT",
        "--ready",
        "200ms",
        "--",
        "sh",
        &worker,
    ]));
    let first = master.wait_ready(&sandbox, 2);
    // No config file: SIGHUP restarts every worker, one at a time.
    master.signal(Signal::SIGHUP);
    master.wait_until("the rollout", || {
        master.stderr().contains("rolling restart complete")
    });
    let mut quit: Vec<i32> = sandbox
        .lines("quit")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    quit.sort();
    assert_eq!(quit, first);
    let log = master.stderr();
    let in_slot_0 = first
        .iter()
        .find(|&&pid| sandbox.slot_file(pid) == Some(0))
        .unwrap();
    assert!(
        log.contains(&format!(
            "rolling restart: retiring worker pid={in_slot_0} slot=0: SIGQUIT"
        )),
        "{log}"
    );
    let second = master.wait_workers(2);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    assert!(master
        .stderr()
        .contains("graceful shutdown: SIGQUIT to 2 worker(s)"));
    let quit = sandbox.lines("quit");
    for pid in second {
        assert!(quit.contains(&pid.to_string()), "{quit:?}");
    }
    assert!(sandbox.lines("term").is_empty());
}
