//! Stuck workers (issue 4): the master reads the board every check interval
//! and replaces a worker whose status file has not been written for longer
//! than `--timeout`, in the same slot; silent workers are left alone when the
//! timeout is off; the board stays clean of dead files.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{self, Running, Sandbox};

/// A worker that writes `beat <n> slot=<slot>` every `period` seconds,
/// `beats` times (forever when negative: `beat slot=<slot>`), then only
/// idles. It notes its pid in `ready` after its first beat.
///
/// A shell script, not Python: the stuck timeout counts from the fork, and
/// on a loaded machine Python took longer than the timeout to boot, so the
/// master rightly judged it stuck before it had written a thing. `sh` writes
/// its first beat within milliseconds of the exec. The records (MD5,
/// big-endian length, status) are encoded here, one file per beat and slot
/// for `slots` slots, and the script copies one over the start of its status
/// file: through a descriptor of its own (offset 0, as a `pwrite(.., 0)`),
/// so that the shared descriptor keeps its lock and nothing is appended.
fn beating_worker(sandbox: &Sandbox, slots: usize, period: f64, beats: i64) -> Vec<String> {
    let records = sandbox.path().join("records");
    std::fs::create_dir_all(&records).expect("create the records directory");
    for slot in 0..slots {
        let mut statuses = vec![(format!("beat_0_{slot}"), format!("beat 0 slot={slot}"))];
        if beats < 0 {
            statuses.push((format!("beat_{slot}"), format!("beat slot={slot}")));
        }
        for n in 1..=beats.max(0) {
            statuses.push((format!("beat_{n}_{slot}"), format!("beat {n} slot={slot}")));
        }
        for (name, status) in statuses {
            let record = prefork::scoreboard::record::encode(status.as_bytes());
            std::fs::write(records.join(name), record).expect("write a record");
        }
    }
    let script = sandbox.script(
        "beat.sh",
        r#"slot=$PREFORK_WORKER_SLOT period=$1 beats=$2
put() { cat "$DIR/records/$1" 1<>"/proc/self/fd/$PREFORK_STATUS_FD"; }
n=0
put "beat_0_$slot"
echo $$ >> "$DIR/ready"
while :; do
    sleep "$period"
    if [ "$beats" -lt 0 ]; then
        put "beat_$slot"
    elif [ "$n" -lt "$beats" ]; then
        n=$((n + 1))
        put "beat_${n}_$slot"
    fi
done"#,
    );
    vec!["sh".into(), script, period.to_string(), beats.to_string()]
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
    let worker = beating_worker(&sandbox, 2, 0.1, -1);
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

    // Only a spawn after the stop replaces the victim: one before it (a
    // worker replaced while it started) would end the wait at once.
    let spawns_before = master.spawned().len();
    let stopped = Instant::now();
    harness::signal(victim, Signal::SIGSTOP);
    master.wait_until("the stopped worker's replacement", || {
        master.spawned()[spawns_before..]
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
    // SIGTERM (with SIGCONT, so that it can act on it) ends the stopped
    // worker. Dead is not enough: its group, the `sleep` it left included,
    // must be reaped, or it would be the zombie found below.
    master.wait_until("the stuck worker's group reaped", || {
        !harness::group_exists(victim)
    });
    assert_eq!(master.workers().len(), 2);
    assert!(master.zombies().is_empty());
    stop_cleanly(master, &sandbox);
}

#[test]
fn a_worker_that_stops_updating_is_replaced_and_the_dump_says_why() {
    let sandbox = Sandbox::new();
    let worker = beating_worker(&sandbox, 1, 0.1, 3);
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
    let worker = beating_worker(&sandbox, 2, 0.1, -1);
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
    // It keeps its file fresh by name (`-c`: never creating it again) until
    // the reader removes it, so that its silence starts only then: however
    // slow the machine, the judgement comes after the removal, not before it.
    let closer = sandbox.script(
        "closer.sh",
        r#"exec 3>&-
file="$PREFORK_SCOREBOARD_DIR/status_$$"
echo $$ >> "$DIR/ready"
while :; do touch -c "$file"; sleep 0.1; done"#,
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
