//! Stuck workers (issue 4): the master reads the board every check interval
//! and replaces a worker whose status file has not been written for longer
//! than `--timeout`, in the same slot; silent workers are left alone when the
//! timeout is off; the board stays clean of dead files.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{self, Running, Sandbox};

/// A Python worker that writes `beat <n> slot=<slot>` every `period`
/// seconds, `beats` times (forever when negative), then only idles. It notes
/// its pid in `ready` after its first beat.
fn beating_worker(sandbox: &Sandbox, period: f64, beats: i64) -> Vec<String> {
    let script = sandbox.join("beat.py");
    let body = r#"import hashlib, os, struct, sys, time
fd = int(os.environ["PREFORK_STATUS_FD"])
slot = os.environ["PREFORK_WORKER_SLOT"]
period, beats = float(sys.argv[1]), int(sys.argv[2])
def report(text):
    data = text.encode()
    os.pwrite(fd, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)
n = 0
report(f"beat {n} slot={slot}")
with open(os.path.join(os.environ["DIR"], "ready"), "a") as ready:
    ready.write(f"{os.getpid()}\n")
while True:
    time.sleep(period)
    if beats < 0 or n < beats:
        n += 1
        report(f"beat {n} slot={slot}" if beats >= 0 else f"beat slot={slot}")
"#;
    std::fs::write(&script, body).expect("write the worker");
    vec![
        "python3".into(),
        script,
        period.to_string(),
        beats.to_string(),
    ]
}

fn start(sandbox: &Sandbox, options: &[&str], command: &[String]) -> Running {
    let mut args: Vec<&str> = options.to_vec();
    args.push("--");
    args.extend(command.iter().map(String::as_str));
    Running::start(&mut sandbox.prefork(&args))
}

/// A `prefork status` run: its exit code must be 0.
fn status_of(sandbox: &Sandbox) {
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .arg("status")
        .arg("-d")
        .arg(sandbox.board())
        .stdin(Stdio::null())
        .output()
        .expect("run prefork status");
    assert!(out.status.success(), "{out:?}");
}

/// Stops the master gracefully and checks that nothing is left: no
/// process, no zombie, no file on the board.
fn stop_cleanly(mut master: Running, sandbox: &Sandbox) {
    master.signal(Signal::SIGTERM);
    let status = master.wait_exit();
    assert!(
        status.success(),
        "{}",
        master.report(&format!("exit {status:?}"))
    );
    assert_eq!(
        sandbox.board_files(),
        Vec::<String>::new(),
        "{}",
        master.report("files left")
    );
}

#[test]
fn a_stopped_worker_is_replaced_within_timeout_and_interval() {
    let sandbox = Sandbox::new();
    let worker = beating_worker(&sandbox, 0.1, -1);
    let options = [
        "-w",
        "2",
        "-t",
        "1s",
        "--check-interval",
        "200ms",
        "--kill-timeout",
        "500ms",
    ];
    let master = start(&sandbox, &options, &worker);
    let workers = master.wait_ready(&sandbox, 2);
    let victim = workers[0];
    let slot = master.slot_of(victim);

    let stopped = Instant::now();
    harness::signal(victim, Signal::SIGSTOP);
    master.wait_until("the stopped worker's replacement", || {
        master
            .spawned()
            .iter()
            .any(|&(pid, s)| s == slot && !workers.contains(&pid))
    });
    let replaced_after = stopped.elapsed();
    // Timeout + check interval, and a margin for a loaded machine; the
    // benchmark, not this test, measures how fast it really is.
    assert!(
        replaced_after < Duration::from_millis(1000 + 200 + 1500),
        "{}",
        master.report(&format!("replaced after {replaced_after:?}"))
    );
    let log = master.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("worker pid={victim} slot={slot} is stuck")))
        .unwrap_or_else(|| panic!("{}", master.report("no stuck line")));
    assert!(line.contains("its last status: \"beat "), "{line}");
    // SIGTERM (with SIGCONT, so that it can act on it) ends the stopped worker.
    master.wait_until("the stuck worker's end", || !harness::alive(victim));
    assert_eq!(master.workers().len(), 2);
    assert!(master.zombies().is_empty());
    stop_cleanly(master, &sandbox);
}

#[test]
fn a_worker_that_stops_updating_is_replaced_and_the_dump_says_why() {
    let sandbox = Sandbox::new();
    let worker = beating_worker(&sandbox, 0.1, 3);
    let options = [
        "-w",
        "1",
        "-t",
        "700ms",
        "--check-interval",
        "100ms",
        "--kill-timeout",
        "300ms",
    ];
    let master = start(&sandbox, &options, &worker);
    let first = master.wait_ready(&sandbox, 1)[0];
    master.wait_until("the silent worker's replacement", || {
        master.spawned().iter().any(|&(pid, _)| pid != first)
    });
    let log = master.stderr();
    assert!(
        log.contains(&format!("worker pid={first} slot=0 is stuck"))
            && log.contains("its last status: \"beat 3 slot=0\""),
        "{}",
        master.report("no stuck line with the last status")
    );
    let dump = master.dump();
    let row = dump.lines().nth(2).expect("the slot's line");
    // RESTARTS (1), then LAST-EXIT: why the slot's last worker ended.
    assert!(row.contains(" 1 stuck in \"beat 3 slot=0\""), "{dump}");
    stop_cleanly(master, &sandbox);
}

#[test]
fn a_worker_writing_the_same_status_every_100ms_is_never_stuck() {
    let sandbox = Sandbox::new();
    let worker = beating_worker(&sandbox, 0.1, -1);
    let options = ["-w", "2", "-t", "1s", "--check-interval", "100ms"];
    let master = start(&sandbox, &options, &worker);
    let workers = master.wait_ready(&sandbox, 2);
    // The point is that nothing happens for five seconds.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        master.workers(),
        workers,
        "{}",
        master.report("workers changed")
    );
    assert!(
        !master.stderr().contains("stuck"),
        "{}",
        master.report("a worker was judged stuck")
    );
    stop_cleanly(master, &sandbox);
}

#[test]
fn silent_workers_are_never_killed_with_the_timeout_off() {
    let sandbox = Sandbox::new();
    let worker = sandbox.status_worker(&[0, 1]);
    let master = start(&sandbox, &["-w", "2", "--check-interval", "100ms"], &worker);
    let workers = master.wait_ready(&sandbox, 2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        master.workers(),
        workers,
        "{}",
        master.report("workers changed")
    );
    assert!(!master.stderr().contains("stuck"));
    stop_cleanly(master, &sandbox);
}

#[test]
fn dead_files_of_unknown_processes_are_removed_and_tmp_files_left_alone() {
    let sandbox = Sandbox::new();
    let worker = sandbox.status_worker(&[]);
    let master = start(&sandbox, &["-w", "1", "--check-interval", "100ms"], &worker);
    master.wait_ready(&sandbox, 1);
    // A dead process's file (a valid record, nobody holds its lock), and a
    // writer's temporary file, which readers must never touch.
    let record = prefork::scoreboard::record::encode(b"a dead worker");
    std::fs::write(sandbox.board().join("status_999999"), &record).unwrap();
    std::fs::write(sandbox.board().join("status_999998.tmp"), &record).unwrap();
    master.wait_until("the dead file's removal", || {
        !sandbox.board().join("status_999999").exists()
    });
    assert!(sandbox.board().join("status_999998.tmp").exists());
    std::fs::remove_file(sandbox.board().join("status_999998.tmp")).unwrap();
    stop_cleanly(master, &sandbox);
}

#[test]
fn a_worker_that_closes_its_descriptor_is_reported_not_killed() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script(
        "closer.sh",
        r#"exec 3>&-
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let master = start(
        &sandbox,
        &["-w", "1", "--check-interval", "100ms"],
        &["sh".into(), worker],
    );
    let workers = master.wait_ready(&sandbox, 1);
    master.wait_until("the warning", || {
        master.stderr().contains("holds no live status file")
    });
    assert_eq!(master.workers(), workers);
    stop_cleanly(master, &sandbox);
}

/// Found under fire: a worker that closed its status descriptor (releasing
/// its lock) had its file removed by the next reader, which takes it for a
/// dead worker's; the master then lost sight of the worker and never judged
/// it stuck, though it never wrote again.
#[test]
fn a_worker_whose_file_a_reader_removed_is_still_judged_stuck() {
    let sandbox = Sandbox::new();
    let closer = sandbox.script(
        "closer.sh",
        r#"exec 3>&-
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let options = [
        "-w",
        "1",
        "-t",
        "1s",
        "--check-interval",
        "100ms",
        "--kill-timeout",
        "300ms",
    ];
    let master = start(&sandbox, &options, &["sh".into(), closer]);
    let first = master.wait_ready(&sandbox, 1)[0];
    master.wait_until("the warning", || {
        master.stderr().contains("holds no live status file")
    });
    // The lock is free: a reader removes the file as a dead worker's.
    status_of(&sandbox);
    assert!(!sandbox.board().join(format!("status_{first}")).exists());
    master.wait_until("the closer to be judged stuck and replaced", || {
        master
            .stderr()
            .contains(&format!("worker pid={first} slot=0 is stuck"))
            && master.spawned().iter().any(|&(pid, _)| pid != first)
    });
}
