//! Reading the board from outside and writing it from any language
//! (issue 6): `prefork status` (table, JSON, health check), `prefork
//! report`, and the example workers in Rust, shell, Python and Perl, each run
//! under a real master, and outside one (issue 11: one line says how to run
//! them, no traceback).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sys::signal::Signal;

use crate::harness::{Running, Sandbox};
use crate::util;

const PREFORK: &str = env!("CARGO_BIN_EXE_prefork");

fn prefork(args: &[&str]) -> Output {
    Command::new(PREFORK)
        .args(args)
        .output()
        .expect("run prefork")
}

fn status(board: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["status", "-d", board.to_str().unwrap()];
    args.extend(extra);
    prefork(&args)
}

/// A board with workers of our own making: forked children of the test
/// that hold their files' locks until the guard kills them.
fn board_with(statuses: &[&[u8]]) -> (tempfile::TempDir, PathBuf, util::ChildGuard) {
    let dir = util::tempdir();
    let board = dir.path().join("board");
    let mut guard = util::ChildGuard::new();
    {
        let lock = util::fork_lock();
        for status in statuses {
            util::fork_child(&lock, &mut guard, || {
                let mut sb = prefork::scoreboard::Scoreboard::new(&board).unwrap();
                sb.update(status).unwrap();
                util::block_until_killed();
            });
        }
    }
    let all_there = util::wait_until(util::deadline(), || {
        prefork::scoreboard::Scoreboard::builder(&board)
            .monitor()
            .build()
            .and_then(|b| b.read_all())
            .is_ok_and(|all| all.len() == statuses.len())
    });
    assert!(all_there, "the workers' statuses did not appear");
    (dir, board, guard)
}

/// PERL5LIB as the interop tests use it (relative entries made absolute).
fn perl_lib() -> String {
    util::perl()
        .get_envs()
        .find(|(key, _)| *key == "PERL5LIB")
        .and_then(|(_, value)| value)
        .map(|value| value.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn status_prints_a_line_per_live_worker_with_escaped_statuses() {
    let (_dir, board, _guard) = board_with(&[b"GET /index.html", b"line\nbreak \x1b[31m"]);
    let out = status(&board, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().next().unwrap().contains("2 live worker(s)"),
        "{text}"
    );
    assert!(text.contains("GET /index.html"), "{text}");
    assert!(text.contains("line\\nbreak \\u{1b}[31m"), "{text}");
    assert_eq!(
        text.lines().count(),
        4,
        "header, titles, two workers: {text}"
    );
}

#[test]
fn status_json_carries_ids_times_and_exact_bytes() {
    let (_dir, board, _guard) = board_with(&[b"idle", b"\xff\x00binary"]);
    let out = status(&board, &["--json"]);
    assert!(out.status.success());
    let workers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let workers = workers.as_array().expect("an array");
    assert_eq!(workers.len(), 2);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for w in workers {
        let id = w["id"].as_str().expect("id");
        assert_eq!(w["pid"].as_u64(), Some(id.parse().unwrap()));
        let updated = w["updated"].as_f64().expect("updated");
        assert!((now - updated).abs() < 60.0, "{w}");
        assert!(w["age_secs"].as_f64().expect("age") >= 0.0);
    }
    let idle = workers
        .iter()
        .find(|w| w["status"] == "idle")
        .expect("the idle worker");
    assert!(idle.get("status_base64").is_none());
    let binary = workers
        .iter()
        .find(|w| w["status"] != "idle")
        .expect("the binary one");
    assert_eq!(binary["status_base64"], "/wBiaW5hcnk=");
}

#[test]
fn status_min_workers_is_a_health_check() {
    let (_dir, board, _guard) = board_with(&[b"a", b"b"]);
    assert_eq!(
        status(&board, &["--min-workers", "2"]).status.code(),
        Some(0)
    );
    let out = status(&board, &["--min-workers", "3"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fewer than --min-workers 3"));
}

#[test]
fn status_of_a_missing_directory_fails_naming_it() {
    let dir = util::tempdir();
    let missing = dir.path().join("no-board");
    let out = status(&missing, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(!missing.exists(), "a reader must not create the directory");
}

#[test]
fn status_reads_a_board_written_by_perl_and_removes_only_dead_files() {
    util::require_parallel_scoreboard();
    let dir = util::tempdir();
    let board = dir.path().join("board");
    let mut guard = util::ChildGuard::new();
    let mut perl = util::perl()
        .arg("-MParallel::Scoreboard")
        .arg("-e")
        .arg("my $s = Parallel::Scoreboard->new(base_dir => $ARGV[0]); $s->update('perl busy'); $| = 1; print qq(ok\\n); <STDIN>;")
        .arg(&board)
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start perl");
    let stdout = perl.stdout.take().unwrap();
    let _stdin = perl.stdin.take();
    let pid = guard.add_group(perl);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(
        line, "ok\n",
        "the Perl worker did not start (is Parallel::Scoreboard on PERL5LIB?)"
    );
    let dead = board.join("status_999999");
    std::fs::write(&dead, prefork::scoreboard::record::encode(b"gone")).unwrap();
    let out = status(&board, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("perl busy") && !text.contains("gone"),
        "{text}"
    );
    assert!(!dead.exists(), "the dead worker's file is removed");
    assert!(board.join(format!("status_{pid}")).exists());
}

#[test]
fn report_outside_a_worker_says_it_must_run_under_prefork() {
    let out = Command::new(PREFORK)
        .args(["report", "hello"])
        .env_remove("PREFORK_STATUS_FD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must run in a worker started by prefork")
    );
    let closed = Command::new(PREFORK)
        .args(["report", "hello"])
        .env("PREFORK_STATUS_FD", "987")
        .output()
        .unwrap();
    assert_eq!(closed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&closed.stderr).contains("descriptor 987"));
}

/// Runs `command` under prefork with two workers and waits until both show
/// a status starting with one of `prefixes` on the board, then stops them
/// cleanly.
fn runs_on_the_board(command: &[String], env: &[(&str, String)], prefixes: &[&str]) {
    let sandbox = Sandbox::new();
    let mut args: Vec<&str> = vec!["-w", "2", "--graceful-timeout", "3s", "-t", "5s", "--"];
    args.extend(command.iter().map(String::as_str));
    let mut cmd = sandbox.prefork(&args);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut master = Running::start(&mut cmd);
    let board = sandbox.board();
    master.wait_until(&format!("two {prefixes:?} statuses"), || {
        let Ok(b) = prefork::scoreboard::Scoreboard::builder(&board)
            .monitor()
            .build()
        else {
            return false;
        };
        let all = b.read_all().unwrap_or_default();
        let workers = master.workers();
        workers.len() == 2
            && workers.iter().all(|pid| {
                all.get(&pid.to_string())
                    .is_some_and(|w| prefixes.iter().any(|p| w.status.starts_with(p.as_bytes())))
            })
    });
    let out = status(&board, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(prefixes.iter().any(|p| text.contains(p)), "{text}");
    master.signal(Signal::SIGTERM);
    let exit = master.wait_exit();
    assert!(exit.success(), "{}", master.report(&format!("{exit:?}")));
    assert!(
        !master.stderr().contains("stuck"),
        "{}",
        master.report("judged stuck")
    );
    assert_eq!(sandbox.board_files(), Vec::<String>::new());
}

#[test]
fn a_rust_worker_reports_through_the_library() {
    runs_on_the_board(
        &[crate::harness::rust_example("worker")],
        &[],
        &["idle slot=", "GET /items/"],
    );
}

#[test]
fn a_shell_worker_reports_with_prefork_report() {
    let script = format!("{}/examples/report-worker.sh", env!("CARGO_MANIFEST_DIR"));
    runs_on_the_board(
        &["sh".into(), script],
        &[("PREFORK_BIN", PREFORK.to_string())],
        &["sh "],
    );
}

#[test]
fn a_python_worker_writes_the_record_itself() {
    let script = format!("{}/examples/worker.py", env!("CARGO_MANIFEST_DIR"));
    runs_on_the_board(
        &[crate::harness::python3().into(), script],
        &[],
        &["python "],
    );
}

#[test]
fn a_perl_worker_uses_parallel_scoreboard() {
    util::require_parallel_scoreboard();
    let script = format!("{}/examples/worker.pl", env!("CARGO_MANIFEST_DIR"));
    let lib = perl_lib();
    runs_on_the_board(&["perl".into(), script], &[("PERL5LIB", lib)], &["perl "]);
}

/// Run outside prefork, an example worker says so in one line on stderr,
/// naming how to start it, and exits 2: no `Error: NotUnderPrefork`, no
/// Python traceback (issue 11).
#[test]
fn example_workers_outside_prefork_say_how_to_run_them_in_one_line() {
    let example = |name: &str| format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let python = crate::harness::python3().to_string();
    let cases: [(Vec<String>, &str); 8] = [
        (vec![crate::harness::rust_example("worker")], "worker: "),
        (
            vec![crate::harness::rust_example("http_worker")],
            "http_worker: ",
        ),
        (vec![crate::harness::rust_example("hammer")], "hammer: "),
        (vec![python.clone(), example("worker.py")], "worker.py: "),
        (vec![python, example("web-worker.py")], "web-worker.py: "),
        (vec!["perl".into(), example("worker.pl")], "worker.pl: "),
        (
            vec!["sh".into(), example("report-worker.sh")],
            "report-worker.sh: ",
        ),
        (
            vec!["sh".into(), example("shell-worker.sh")],
            "shell-worker.sh: ",
        ),
    ];
    for (command, name) in cases {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]).stdin(std::process::Stdio::null());
        for var in [
            "PREFORK_STATUS_FD",
            "PREFORK_SCOREBOARD_DIR",
            "PREFORK_WORKER_SLOT",
            "PREFORK_MASTER_PID",
            "PREFORK_BIN",
            "LISTEN_FDS",
            "LISTEN_PID",
            "SERVER_STARTER_PORT",
        ] {
            cmd.env_remove(var);
        }
        // Its stdout and stderr are pipes: no other test may fork meanwhile.
        let out = {
            let _forking = util::fork_lock();
            cmd.output().expect("run an example worker")
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = format!("{command:?} said {stderr:?}, exit {:?}", out.status);
        assert_eq!(out.status.code(), Some(2), "{said}");
        assert_eq!(stderr.lines().count(), 1, "{said}");
        assert!(
            stderr.starts_with(&format!("{name}run me under prefork: prefork ")),
            "{said}"
        );
        assert!(stderr.contains(" is not set)"), "{said}");
        assert!(out.stdout.is_empty(), "{said}");
    }
}

#[test]
fn a_shell_worker_that_never_reports_is_supervised_and_stops_quietly() {
    let sandbox = Sandbox::new();
    let script = format!("{}/examples/shell-worker.sh", env!("CARGO_MANIFEST_DIR"));
    let mut master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "2",
        "--graceful-timeout",
        "3s",
        "--",
        "sh",
        &script,
    ]));
    let workers = master.wait_workers(2);
    master.wait_until("each worker's start line", || {
        let out = master.stdout();
        workers
            .iter()
            .all(|pid| out.contains(&format!("shell worker {pid} started in slot ")))
    });
    master.signal(Signal::SIGTERM);
    let exit = master.wait_exit();
    assert!(exit.success(), "{}", master.report(&format!("{exit:?}")));
    for pid in workers {
        let end = master.end_of(pid).unwrap_or_default();
        assert!(end.contains("ended (exit 0)"), "{}", master.report(&end));
        assert!(
            master
                .stdout()
                .contains(&format!("shell worker {pid} (slot ")),
            "{}",
            master.report("no stopping line")
        );
    }
    // sh says "Terminated" when a command it waits for dies of the group's
    // SIGTERM, even one started in the background (dash does).
    assert!(
        !master.stderr().contains("Terminated"),
        "{}",
        master.report("stray \"Terminated\"")
    );
}

/// A board whose workers' records cannot be read: forked children hold the
/// locks of hand-made files (issue 11), next to one worker that reads fine.
fn board_with_damaged_records() -> (tempfile::TempDir, PathBuf, util::ChildGuard) {
    let (dir, board, mut guard) = board_with(&[b"fine"]);
    let forking = util::fork_lock();
    let mut corrupt = prefork::scoreboard::record::encode(b"busy");
    corrupt[0] ^= 0xff;
    util::held_by_child(
        &forking,
        &mut guard,
        &util::status_path(&board, 1_000_001),
        &corrupt,
    );
    util::held_by_child(
        &forking,
        &mut guard,
        &util::status_path(&board, 1_000_002),
        b"7 bytes",
    );
    (dir, board, guard)
}

#[test]
fn status_lists_live_workers_whose_records_cannot_be_read() {
    let (_dir, board, _guard) = board_with_damaged_records();
    let out = status(&board, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains("3 live worker(s), 2 with an unreadable status"),
        "{text}"
    );
    assert!(text.contains("fine"), "{text}");
    let line = |id: u32| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("no line for {id}: {text}"))
    };
    assert!(
        line(1_000_001).ends_with("(unreadable: checksum mismatch in 10 reads)"),
        "{text}"
    );
    assert!(
        line(1_000_002)
            .ends_with("(unreadable: file of 7 bytes, shorter than a record header (20))"),
        "{text}"
    );

    let out = status(&board, &["--json"]);
    assert!(out.status.success());
    let workers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let workers = workers.as_array().expect("an array");
    assert_eq!(workers.len(), 3, "{workers:?}");
    let by_pid = |pid: u64| {
        workers
            .iter()
            .find(|w| w["pid"] == pid)
            .unwrap_or_else(|| panic!("no worker {pid}: {workers:?}"))
    };
    let corrupt = by_pid(1_000_001);
    assert!(corrupt["status"].is_null(), "{corrupt}");
    assert_eq!(corrupt["unreadable"], "checksum mismatch in 10 reads");
    assert!(by_pid(1_000_002)["unreadable"]
        .as_str()
        .is_some_and(|why| why.contains("shorter than a record header")));
    let fine = workers.iter().find(|w| w["status"] == "fine").unwrap();
    assert!(fine.get("unreadable").is_none(), "{fine}");
}

#[test]
fn status_min_workers_counts_workers_whose_records_cannot_be_read() {
    let (_dir, board, _guard) = board_with_damaged_records();
    assert_eq!(
        status(&board, &["--min-workers", "3"]).status.code(),
        Some(0)
    );
    let out = status(&board, &["--min-workers", "4"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 live worker(s)"));

    // One live worker, with nothing readable: the pod is alive.
    let dir = util::tempdir();
    let mut guard = util::ChildGuard::new();
    let forking = util::fork_lock();
    let mut torn = prefork::scoreboard::record::encode(&[b'x'; 4096]);
    torn.truncate(1000);
    util::held_by_child(
        &forking,
        &mut guard,
        &util::status_path(dir.path(), 77),
        &torn,
    );
    drop(forking);
    let out = status(dir.path(), &["--min-workers", "1"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(
        "(unreadable: record cut short: its header announces 4116 bytes, the file has 1000)"
    ));
}

#[test]
fn status_lists_a_worker_whose_status_is_above_the_readers_limit() {
    let dir = util::tempdir();
    let mut guard = util::ChildGuard::new();
    let forking = util::fork_lock();
    // A real 100 MiB record, sparse: the reader must not read it, only say so.
    let len: u64 = 100 << 20;
    let path = util::status_path(dir.path(), 88);
    let mut header = prefork::scoreboard::record::encode(b"");
    header[16..20].copy_from_slice(&(len as u32).to_be_bytes());
    std::fs::write(&path, &header).unwrap();
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_len(20 + len).unwrap();
    util::hold_in_child(&forking, &mut guard, file);
    drop(forking);

    let out = status(dir.path(), &["--min-workers", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(
            "(unreadable: status of 104857600 bytes, above the reader's limit of 67108864)"
        ),
        "{text}"
    );
}

/// A board directory given to another user (`nobody`), with a live worker
/// and a dead worker's file in it.
fn foreign_board(guard: &mut util::ChildGuard) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = util::tempdir();
    let board = dir.path().join("board");
    std::fs::create_dir(&board).unwrap();
    std::fs::set_permissions(&board, std::fs::Permissions::from_mode(0o755)).unwrap();
    let forking = util::fork_lock();
    let record = prefork::scoreboard::record::encode;
    util::held_by_child(
        &forking,
        guard,
        &util::status_path(&board, 501),
        &record(b"up"),
    );
    std::fs::write(util::status_path(&board, 502), record(b"gone")).unwrap();
    std::os::unix::fs::chown(&board, Some(65534), Some(65534)).unwrap();
    (dir, board)
}

#[test]
fn status_reads_another_users_board_read_only_which_the_master_refuses() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let mut guard = util::ChildGuard::new();
    let (_dir, board) = foreign_board(&mut guard);

    let out = status(&board, &["--min-workers", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let header = text.lines().next().unwrap();
    assert!(header.contains("1 live worker(s)"), "{text}");
    assert!(
        header.contains("read-only: it is owned by uid 65534 and we run as uid 0"),
        "{text}"
    );
    assert!(text.contains("up") && !text.contains("gone"), "{text}");
    assert_eq!(
        util::names_in(&board),
        ["status_501", "status_502"],
        "nothing is removed from another user's board"
    );

    // The master, which writes, refuses the same directory, and says why.
    let mut master = Command::new(PREFORK)
        .args([
            "-w",
            "1",
            "-d",
            board.to_str().unwrap(),
            "--",
            "sleep",
            "30",
        ])
        .process_group(0)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start prefork");
    let mut err = master.stderr.take().unwrap();
    let pid = guard.add_group(master);
    let ended = guard.wait_exit(pid, util::deadline());
    assert!(
        matches!(ended, nix::sys::wait::WaitStatus::Exited(_, code) if code != 0),
        "{ended:?}"
    );
    let mut message = String::new();
    std::io::Read::read_to_string(&mut err, &mut message).unwrap();
    assert!(message.contains("owned by uid 65534"), "{message}");
    assert_eq!(util::names_in(&board), ["status_501", "status_502"]);

    // Our own again: status removes the dead worker's file, as before.
    std::os::unix::fs::chown(&board, Some(0), Some(0)).unwrap();
    let out = status(&board, &[]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("read-only"));
    assert_eq!(util::names_in(&board), ["status_501"]);
}

#[test]
fn status_shows_what_the_master_says_of_its_slots() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let master = sandbox.start_sh_workers(2, "5s", &worker);
    let workers = master.wait_ready(&sandbox, 2);
    // One restart, to see it counted.
    crate::harness::signal(workers[0], Signal::SIGKILL);
    master.wait_until("the replacement", || master.spawned().len() == 3);
    let replacement = master.spawned()[2].0;
    // The master rewrites its file within a tenth of a second of a change.
    let mut table = String::new();
    master.wait_until("status to show the restart", || {
        let out = status(&sandbox.board(), &[]);
        table = String::from_utf8_lossy(&out.stdout).into_owned();
        table.contains(&format!("master pid={} running", master.pid()))
            && table.contains("restarts=1")
    });
    let row = table
        .lines()
        .find(|l| l.contains(&replacement.to_string()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" SIGKILL "), "the slot's last exit: {row}");
    let out = status(&sandbox.board(), &["--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["pid"] == replacement)
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(entry["master_pid"], master.pid());
    assert_eq!(entry["restarts"], 1);
    assert_eq!(entry["state"], "running");
    assert!(
        entry["slot"].is_u64() && entry["uptime_secs"].is_f64(),
        "{entry}"
    );
}
