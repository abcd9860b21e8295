//! Messages that name the thing and what to do (issue 11): a command that
//! cannot run is explained the same way by `prefork check` and by a master
//! that fails to start its first worker, and a relative command is found
//! where prefork was started, whatever the workers' directory.

use std::process::Command;

use crate::harness::{set_mode, Running, Sandbox};

/// `prefork check -- COMMAND` run in the sandbox: exit code and stderr.
fn check(sandbox: &Sandbox, command: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .current_dir(sandbox.path())
        .arg("check")
        .arg("--")
        .args(command)
        .output()
        .expect("run prefork check");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A master for `command` in the sandbox, expected to give up at once: its
/// exit code and stderr.
fn start(sandbox: &Sandbox, command: &[&str]) -> (Option<i32>, String) {
    let mut cmd = sandbox.prefork(&["-w", "2", "--"]);
    cmd.current_dir(sandbox.path()).args(command);
    let mut master = Running::start(&mut cmd);
    let code = master.wait_exit().code();
    assert!(master.spawned().is_empty(), "{}", master.stderr());
    (code, master.stderr())
}

/// Each broken command, with what both `check` and the master must say.
fn broken(sandbox: &Sandbox) -> Vec<(String, &'static str, i32)> {
    let no_interpreter = sandbox.script("old-script", "");
    std::fs::write(&no_interpreter, "#!/nonexistent/python9\nprint(1)\n").unwrap();
    set_mode(&no_interpreter, 0o755);
    let not_executable = sandbox.script("plain.sh", "exit 0");
    set_mode(&not_executable, 0o644);
    let directory = sandbox.join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    vec![
        (
            no_interpreter,
            "names the interpreter /nonexistent/python9 on its #! line, which does not exist",
            127,
        ),
        (not_executable, "is not executable (chmod +x", 126),
        (directory, "is a directory, not a program", 126),
        (
            "prefork-test-no-such-command".into(),
            "`prefork-test-no-such-command` is not found on PATH",
            127,
        ),
    ]
}

#[test]
fn check_explains_a_command_that_cannot_run_and_exits_2() {
    let sandbox = Sandbox::new();
    for (command, why, _) in broken(&sandbox) {
        let (code, stderr) = check(&sandbox, &[&command]);
        assert_eq!(code, Some(2), "{command}: {stderr}");
        assert!(stderr.contains(why), "{command}: {stderr}");
    }
    // And a runnable one passes.
    let (code, stderr) = check(&sandbox, &["sh", "-c", "true"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn the_master_explains_a_first_worker_that_cannot_run() {
    let sandbox = Sandbox::new();
    for (command, why, exit) in broken(&sandbox) {
        let (code, stderr) = start(&sandbox, &[&command]);
        assert_eq!(code, Some(exit), "{command}: {stderr}");
        assert!(stderr.contains(why), "{command}: {stderr}");
    }
}

#[test]
fn a_relative_command_is_found_where_prefork_started_not_in_the_working_directory() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    set_mode(&worker, 0o755);
    let elsewhere = sandbox.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let mut cmd = sandbox.prefork(&[
        "-w",
        "1",
        "--working-directory",
        &elsewhere,
        "--",
        "./worker.sh",
    ]);
    cmd.current_dir(sandbox.path());
    let master = Running::start(&mut cmd);
    let pid = master.wait_ready(&sandbox, 1)[0];
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, std::path::Path::new(&elsewhere));
}

#[test]
fn workers_find_prefork_report_without_any_path_setup() {
    let sandbox = Sandbox::new();
    // PATH without prefork's directory: `prefork report` must still be found.
    let worker = sandbox.script(
        "reporting.sh",
        r#"prefork report "hello from $$" && echo "$PREFORK_BIN" > "$DIR/bin_$$"
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let mut cmd = sandbox.prefork(&["-w", "1", "--", "sh", &worker]);
    cmd.env("PATH", "/usr/bin:/bin");
    let master = Running::start(&mut cmd);
    let pid = master.wait_ready(&sandbox, 1)[0];
    let bin = std::fs::read_to_string(sandbox.path().join(format!("bin_{pid}"))).unwrap();
    assert_eq!(bin.trim(), env!("CARGO_BIN_EXE_prefork"));
    let board = master.dump();
    assert!(board.contains(&format!("hello from {pid}")), "{board}");
}

#[test]
fn a_scoreboard_that_is_a_file_is_said_to_be_no_directory() {
    let sandbox = Sandbox::new();
    let file = sandbox.join("README.md");
    std::fs::write(&file, "not a board").unwrap();
    let mut master =
        Running::start(&mut sandbox.prefork_on_default_board(&["-d", &file, "--", "true"]));
    let code = master.wait_exit().code();
    let said = master.stderr();
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains(&format!(
            "cannot create the scoreboard directory {file}: it exists and is not a directory"
        )),
        "{said}"
    );
}

#[test]
fn the_scoreboard_option_has_its_key_too() {
    let sandbox = Sandbox::new();
    let config = sandbox.join("prefork.toml");
    std::fs::write(&config, "command = [\"true\"]\nscoreboard = \"/run/x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .args(["check", "-c", &config])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("scoreboard_dir = \"/run/x\""), "{stdout}");
}

#[test]
fn the_board_shows_why_a_live_worker_s_status_cannot_be_read() {
    let sandbox = Sandbox::new();
    // A record whose checksum is wrong (sixteen 0x01 bytes), written over
    // the worker's own status file, which it keeps locked.
    let checksum = "\\001".repeat(16);
    let worker = sandbox.script(
        "garbled.sh",
        &format!(
            r#"printf '{checksum}\000\000\000\002hi' 1<>"/proc/self/fd/$PREFORK_STATUS_FD"
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#
        ),
    );
    let master = Running::start(&mut sandbox.prefork(&["-w", "1", "--", "sh", &worker]));
    let pid = master.wait_ready(&sandbox, 1)[0];
    let board = master.dump();
    let row = board
        .lines()
        .find(|l| l.contains(&pid.to_string()))
        .unwrap_or_else(|| panic!("no row for {pid}: {board}"));
    assert!(row.contains("(unreadable: checksum mismatch"), "{board}");
}

#[test]
fn a_working_directory_that_went_away_is_named_as_such() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let workdir = sandbox.join("workdir");
    std::fs::create_dir(&workdir).unwrap();
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--working-directory",
        &workdir,
        "--",
        "sh",
        &worker,
    ]));
    let pid = master.wait_ready(&sandbox, 1)[0];
    std::fs::remove_dir(&workdir).unwrap();
    crate::harness::signal(pid, nix::sys::signal::Signal::SIGKILL);
    let expected = format!("cannot enter working directory {workdir}: No such file or directory");
    master.wait_until("the respawn's failure, naming the directory", || {
        master.stderr().contains(&expected)
    });
}
