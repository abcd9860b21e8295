//! What each signal to the master does. Standard signals coalesce (two
//! SIGTTINs sent back to back may arrive as one), so each test sends one
//! signal, waits for its effect, and only then sends the next.

use std::collections::BTreeSet;

use nix::sys::signal::Signal;
use prefork::scoreboard::Scoreboard;

use crate::harness::{alive, group_exists, Running, Sandbox};

/// A trap that notes the SIGTERM and carries on running: a worker that
/// ignores the polite request, but says it got it.
const NOTE_TERM: &str = r#"trap 'echo $$ >> "$DIR/terms"' TERM"#;
const NOTE_TERM_AND_EXIT: &str = r#"trap 'echo $$ >> "$DIR/terms"; exit 0' TERM"#;

/// A row of a board dump: SLOT PID UPTIME LAST-UPDATE RESTARTS LAST-EXIT
/// STATUS, where LAST-UPDATE is `-` or like `0.2s ago`, and STATUS may hold
/// spaces.
struct Row {
    slot: String,
    pid: i32,
    status: String,
}

fn rows(board: &str) -> Vec<Row> {
    board
        .lines()
        .skip(2) // the header, the column names
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let status_at = if words[3] == "-" { 6 } else { 7 };
            Row {
                slot: words[0].to_string(),
                pid: words[1].parse().expect("a pid"),
                status: words[status_at..].join(" "),
            }
        })
        .collect()
}

#[test]
fn usr1_prints_one_line_per_worker_with_its_pid_and_status() {
    let sandbox = Sandbox::new();
    // Slot 2's worker writes no status.
    let worker = sandbox.status_worker(&[2]);
    let master = Running::start(sandbox.prefork(&["-w", "3", "--"]).args(&worker));
    let workers = master.wait_ready(&sandbox, 3);
    let reader = Scoreboard::builder(sandbox.board()).build().unwrap();
    master.wait_until("two statuses on the board", || {
        reader.read_all().is_ok_and(|all| all.len() == 2)
    });

    let board = master.dump();

    let header = board.lines().next().unwrap();
    assert!(
        header.contains(&format!("pid={}", master.pid())) && header.contains("workers=3/3"),
        "{board}"
    );
    let rows = rows(&board);
    assert_eq!(rows.len(), 3, "{board}");
    let listed: BTreeSet<i32> = rows.iter().map(|r| r.pid).collect();
    assert_eq!(listed, workers.iter().copied().collect(), "{board}");
    for row in &rows {
        let expected = match row.slot.as_str() {
            "2" => "(no status yet)".to_string(),
            slot => format!("serving slot={slot}"),
        };
        assert_eq!(row.status, expected, "{board}");
    }
}

/// Found under fire: the master read, escaped and printed the whole of every
/// status in its SIGUSR1 dump (and of a stuck worker's last status in its
/// log, keeping a copy): a multi-megabyte status held its loop up for as
/// long at every SIGUSR1 (no reaping, no respawn) and left its heap as large.
#[test]
fn the_master_shows_a_kibibyte_of_a_huge_status() {
    let sandbox = Sandbox::new();
    // The record is encoded here and the worker, a shell script, copies it
    // over the start of its status file (through a descriptor of its own:
    // offset 0, the lock left alone). It rewrites it until the test has
    // checked the dump, and only then falls silent: the stuck judgement
    // comes after, however slowly a loaded machine starts the worker (a
    // Python worker building the record took longer than the timeout, and
    // was judged stuck before it had written anything).
    let status = [b"huge ".as_slice(), &[b'x'; 4 << 20]].concat();
    let record = prefork::scoreboard::record::encode(&status);
    std::fs::write(sandbox.path().join("huge.rec"), record).expect("write the record");
    let script = sandbox.script(
        "huge.sh",
        r#"put() { cat "$DIR/huge.rec" 1<>"/proc/self/fd/$PREFORK_STATUS_FD"; }
put
echo $$ >> "$DIR/ready"
while [ ! -e "$DIR/silence" ]; do sleep 0.1; put; done
while :; do sleep 1; done"#,
    );
    let options = [
        "-w",
        "1",
        "-t",
        "1500ms",
        "--check-interval",
        "100ms",
        "--kill-timeout",
        "300ms",
        "--",
        "sh",
        &script,
    ];
    let master = Running::start(&mut sandbox.prefork(&options));
    let first = master.wait_ready(&sandbox, 1)[0];
    let whole = format!("... ({} bytes)", 5 + (4 << 20));
    let dump = master.dump();
    let row = dump.lines().nth(2).expect("the slot's line");
    assert!(
        row.len() < 1200 && row.ends_with(&whole) && row.contains("huge xxx"),
        "{} bytes: {}",
        row.len(),
        &row[..row.len().min(200)]
    );
    // It never writes again: stuck, and its last status said in a line.
    std::fs::write(sandbox.path().join("silence"), b"").expect("silence the worker");
    master.wait_until("the stuck worker's replacement", || {
        master.spawned().iter().any(|&(pid, _)| pid != first)
    });
    let log = master.stderr();
    let stuck = log
        .lines()
        .find(|l| l.contains("is stuck"))
        .expect("a stuck line");
    assert!(stuck.len() < 1500 && stuck.contains(&whole), "{stuck:.200}");
    let dump = master.dump();
    assert!(
        dump.lines().all(|l| l.len() < 2600),
        "{}",
        &dump[..dump.len().min(300)]
    );
}

#[test]
fn quit_kills_every_worker_at_once_even_those_ignoring_term() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap '' TERM");
    // A 60 s graceful timeout, far beyond the harness's 10 s wait for the
    // exit: only an immediate stop passes.
    let mut master = sandbox.start_sh_workers(2, "60s", &worker);
    let workers = master.wait_ready(&sandbox, 2);

    master.signal(Signal::SIGQUIT);

    assert_eq!(master.wait_exit().code(), Some(0), "{}", master.stderr());
    master.assert_killed(&workers);
}

#[test]
fn a_second_term_during_a_graceful_shutdown_is_immediate() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker(NOTE_TERM);
    let mut master = sandbox.start_sh_workers(2, "60s", &worker);
    let workers = master.wait_ready(&sandbox, 2);

    master.signal(Signal::SIGTERM);
    master.wait_until("both workers to get SIGTERM", || {
        sandbox.pids("terms").len() == 2
    });
    assert!(
        master.try_exit().is_none(),
        "still in its graceful shutdown"
    );
    master.signal(Signal::SIGTERM);

    // Well within the 60 s graceful timeout (see above).
    assert_eq!(master.wait_exit().code(), Some(0), "{}", master.stderr());
    for pid in workers {
        assert!(!alive(pid) && !group_exists(pid));
    }
}

#[test]
fn ttin_adds_one_worker_in_a_new_slot() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", "sh", &worker]));
    let before = master.wait_ready(&sandbox, 2);

    master.signal(Signal::SIGTTIN);

    let after = master.wait_ready(&sandbox, 3);
    let added: Vec<i32> = after.into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(added.len(), 1);
    assert_eq!(sandbox.slot_file(added[0]), Some(2));
    master.signal(Signal::SIGTTIN);
    master.wait_ready(&sandbox, 4);
}

#[test]
fn ttou_retires_the_last_slot_s_worker_with_sigterm() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker(NOTE_TERM_AND_EXIT);
    let master = Running::start(&mut sandbox.prefork(&["-w", "3", "--", "sh", &worker]));
    let before = master.wait_ready(&sandbox, 3);
    let last = *before
        .iter()
        .find(|&&p| sandbox.slot_file(p) == Some(2))
        .unwrap();

    master.signal(Signal::SIGTTOU);

    let after = master.wait_workers(2);
    assert_eq!(
        after,
        before
            .iter()
            .copied()
            .filter(|&p| p != last)
            .collect::<Vec<_>>()
    );
    master.wait_until("the retired worker to be reaped", || {
        master
            .stderr()
            .contains(&format!("retired worker pid={last} ended"))
    });
    assert_eq!(
        sandbox.pids("terms"),
        BTreeSet::from([last]),
        "only it got SIGTERM"
    );
    // It is not replaced: the dump is printed on a later turn of the loop
    // than the one that reaped it, where a replacement would have started.
    assert!(master.dump().contains("workers=2/2"));
    assert_eq!(master.spawned().len(), 3, "{}", master.stderr());
}

#[test]
fn ttou_never_leaves_fewer_than_one_worker() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker(NOTE_TERM_AND_EXIT);
    let master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", "sh", &worker]));
    master.wait_ready(&sandbox, 2);
    master.signal(Signal::SIGTTOU);
    let survivor = master.wait_workers(1);

    master.signal(Signal::SIGTTOU);

    master.wait_until("the second SIGTTOU to be handled", || {
        master.stderr().contains("SIGTTOU ignored")
    });
    assert_eq!(master.workers(), survivor);
    assert!(!sandbox.pids("terms").contains(&survivor[0]));
    assert!(master.dump().contains("workers=1/1"));
}
