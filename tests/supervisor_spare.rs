//! A pool that sizes itself from the board, through the real binary: the
//! example HTTP worker as a classic prefork worker (one connection at a
//! time, `HTTP_WORKER_CONNECTIONS=1`) behind `--listen`, a bounded burst of
//! slow requests on loopback, and the pool's size read from the master's
//! log and `prefork status`. It grows to serve the burst, shrinks back once
//! the burst is over, stays within its bounds, and fails no request.

use std::process::Command;

use nix::sys::signal::Signal;

use crate::harness::{eventually, rust_example, Running, Sandbox};
use crate::httpload::{get, Load, Plan};

/// The sizes the log said the pool went to, in order ("-> N worker(s)"
/// of each scaling line).
fn sizes(master: &Running) -> Vec<usize> {
    master
        .stderr()
        .lines()
        .filter(|l| l.contains("spare scaling: "))
        .filter_map(|l| {
            let to = l.split(" -> ").nth(1)?;
            to.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// `prefork status --json`'s master figures, through the real binary.
fn status_header(board: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .args(["status", "-d", board])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_pool_grows_for_a_burst_and_shrinks_after_it_without_a_failed_request() {
    let sandbox = Sandbox::new();
    let board = sandbox.board().display().to_string();
    let config = sandbox.join("pool.toml");
    std::fs::write(
        &config,
        format!(
            "command = [{:?}]\nworkers = 2\nmin_workers = 2\nmax_workers = 12\n\
             min_spare = 2\nmax_spare = 3\nlisten = [\"127.0.0.1:0\"]\nready = \"report\"\n\
             check_interval = \"100ms\"\ngraceful_timeout = \"10s\"\n\
             [env]\nHTTP_WORKER_CONNECTIONS = \"1\"\n",
            rust_example("http_worker")
        ),
    )
    .unwrap();
    let master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let addr = master.listen_addr();
    master.wait_until("a first answer", || get(addr, "/").is_ok());
    // Idle, two workers: two idle, within 2..3 spare. (Three workers at
    // most while the first answers come.)
    master.wait_until("two idle workers", || {
        status_header(&board).contains("2 idle 0 busy 0 starting")
    });

    // The burst: 6 requests of a second each in flight at all times. Six
    // busy workers and two spare: the pool needs 8, ramping 1, 2, 4.
    let burst = Load::start(
        addr,
        Plan {
            fresh: 6,
            keepalive: 0,
            rate_per_thread: None,
            path: "/sleep/1",
        },
    );
    master.wait_until("the pool to grow to 8 workers", || {
        sizes(&master).last().is_some_and(|&n| n >= 8)
    });
    let grown_at = burst.served();
    master.wait_until("the burst served by the grown pool", || {
        burst.served() >= grown_at + 12
    });
    let report = burst.stop();
    assert_eq!(
        report.failed,
        0,
        "{}",
        master.report(&format!("failed requests: {:?}", report.failures))
    );
    let grown = sizes(&master);
    assert!(grown.iter().all(|&n| (2..=12).contains(&n)), "{grown:?}");

    // After the burst, with a light load still on: every worker idle, the
    // pool shrinks one per check to max_spare idle (3 workers), retiring
    // idle workers only, and no request fails.
    let light = Load::start(
        addr,
        Plan {
            fresh: 1,
            keepalive: 0,
            rate_per_thread: Some(20),
            path: "/",
        },
    );
    master.wait_until("the pool back to 3 workers", || {
        sizes(&master).last() == Some(&3) && master.workers().len() == 3
    });
    let report = light.stop();
    assert_eq!(
        report.failed,
        0,
        "{}",
        master.report(&format!("failed requests: {:?}", report.failures))
    );
    assert!(report.served() > 0);
    let log = master.stderr();
    let shrinks: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("spare scaling: ") && l.contains("above max_spare"))
        .collect();
    assert!(shrinks.len() >= 5, "{}", master.report("too few shrinks"));
    assert!(
        shrinks
            .iter()
            .all(|l| l.contains("retiring worker") && l.contains("idle for")),
        "{shrinks:#?}"
    );
    // Retired gracefully: each exited on its stop signal, none was killed.
    assert!(
        !log.contains("SIGKILL"),
        "{}",
        master.report("a worker was killed")
    );
    let header = status_header(&board);
    assert!(
        header.contains("sizes itself: workers 2..12, spare 2..3"),
        "{header}"
    );
    assert!(header.contains("workers=3/3"), "{header}");
    eprintln!("spare scaling: sizes {:?}", sizes(&master));
}

#[test]
fn sigttin_and_sigttou_move_the_bounds_and_the_dump_shows_them() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script("idle.sh", "prefork report idle\nexec sleep 1000");
    let master = Running::start(&mut sandbox.prefork(&[
        "--max-workers",
        "3",
        "--min-workers",
        "2",
        "--min-spare",
        "0",
        "--max-spare",
        "5",
        "--check-interval",
        "100ms",
        "--ready",
        "report",
        "--",
        "sh",
        &worker,
    ]));
    // Each signal moves both bounds by one, and the log says where to.
    let move_bounds = |signal: Signal, bounds: &str| {
        master.signal(signal);
        let said = format!("{}: the pool now keeps {bounds} workers", signal.as_str());
        master.wait_until(&said, || master.stderr().contains(&said));
    };
    master.wait_workers(2);
    move_bounds(Signal::SIGTTIN, "3 to 4");
    master.wait_workers(3);
    move_bounds(Signal::SIGTTOU, "2 to 3");
    move_bounds(Signal::SIGTTOU, "1 to 2");
    master.wait_workers(2);
    let board = sandbox.board().display().to_string();
    master.wait_until("two idle workers", || {
        status_header(&board).contains("2 idle 0 busy 0 starting")
    });
    master.signal(Signal::SIGUSR1);
    master.wait_until("the dump", || {
        master
            .stdout()
            .contains("idle=2 busy=0 starting=0 bounds=workers:1..2,spare:0..5")
    });
    assert!(eventually(|| master.workers().len() == 2));
}

#[test]
fn bounds_that_contradict_each_other_are_refused_naming_them() {
    let sandbox = Sandbox::new();
    let cases: &[(&str, &str)] = &[
        ("min_spare = 2\n", "set max_workers too"),
        (
            "max_workers = 4\nmin_workers = 5\n",
            "min_workers (5) is above max_workers (4)",
        ),
        (
            "max_workers = 8\nmin_spare = 4\nmax_spare = 2\n",
            "max_spare (2) is below min_spare (4)",
        ),
        (
            "max_workers = 8\nmin_workers = 2\nworkers = 9\n",
            "workers (9) is the starting size of a pool that sizes itself",
        ),
        ("max_workers = 0\n", "at least 1"),
        ("max_workers = 8\nmin_spare = -1\n", "from 0 to 4096"),
        ("idle_status = \"(idle\"\n", "not a regular expression"),
    ];
    for (i, (body, message)) in cases.iter().enumerate() {
        let path = sandbox.join(&format!("bad{i}.toml"));
        std::fs::write(&path, format!("command = [\"true\"]\n{body}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
            .args(["check", "-c", &path])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body}: {stderr}");
        assert!(stderr.contains(&path), "{body}: {stderr}");
        assert!(stderr.contains(message), "{body}: {stderr}");
    }
    // What `check` prints reads back, with the defaults filled in.
    let path = sandbox.join("good.toml");
    std::fs::write(
        &path,
        "command = [\"true\"]\nmax_workers = 8\nidle_status = \"^(waiting|_)$\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .args(["check", "-c", &path])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "workers = 1\n",
        "min_workers = 1\n",
        "max_workers = 8\n",
        "min_spare = 1\n",
        "max_spare = 3\n",
        "idle_status = \"^(waiting|_)$\"\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
}

/// Idle by the default rule's JSON form (Plack::Middleware::ServerStatus::
/// Lite's records), and by a pattern that replaces the rule: both seen by
/// the pool (it neither grows nor shrinks) and by `prefork status`.
#[test]
fn the_idle_rule_reads_server_status_lite_json_and_a_pattern_replaces_it() {
    let sandbox = Sandbox::new();
    let board = sandbox.board().display().to_string();
    let lite = sandbox.script(
        "lite.sh",
        r#"prefork report "{\"pid\":$$,\"status\":\"_\",\"uptime\":1}"
exec sleep 1000"#,
    );
    let common = [
        "--workers",
        "2",
        "--max-workers",
        "4",
        "--min-spare",
        "2",
        "--max-spare",
        "2",
        "--check-interval",
        "100ms",
        "--ready",
        "report",
    ];
    let mut args = common.to_vec();
    args.extend(["--", "sh", &lite]);
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("two idle JSON workers", || {
        status_header(&board).contains("2 idle 0 busy 0 starting")
    });
    drop(master);

    // "waiting" is not idle by the default rule: the pool grows to its
    // ceiling; with a pattern that says it is, it stays at two.
    let waiting = sandbox.script("waiting.sh", "prefork report waiting\nexec sleep 1000");
    let mut args = common.to_vec();
    args.extend(["--", "sh", &waiting]);
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("the pool at its ceiling", || {
        status_header(&board).contains("workers=4/4, 0 idle 4 busy 0 starting")
    });
    drop(master);
    let mut args = common.to_vec();
    args.extend(["--idle-status", "^wait", "--", "sh", &waiting]);
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("two idle workers by the pattern", || {
        status_header(&board).contains("workers=2/2, 2 idle 0 busy 0 starting")
    });
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .args(["status", "--json", "-d", &board])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let idle: Vec<bool> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["idle"].as_bool().unwrap())
        .collect();
    assert_eq!(idle, [true, true], "{json}");
    assert!(
        !master.stderr().contains("spare scaling"),
        "{}",
        master.report("the pool scaled")
    );
}
