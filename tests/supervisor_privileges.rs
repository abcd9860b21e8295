//! Least privilege and limits (issue 14): workers run as another user, with
//! its groups, a umask, resource limits and a nice value, all read back from
//! `/proc`; an unknown user or group, or a switch the master may not make,
//! starts nothing and reloads nothing.
//!
//! CI runs as root, where the workers really become `nobody`. On a machine
//! where the tests run as another user, the same tests check that the
//! switch is refused as not permitted: they never skip.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};

use crate::harness::{limits, Running, Sandbox};

fn is_root() -> bool {
    Uid::effective().is_root()
}

fn nobody() -> User {
    User::from_name("nobody")
        .expect("the user database")
        .expect("a nobody user")
}

/// A sandbox `nobody` can enter and write in, with a copy of prefork it can
/// run wherever the checkout is (under /root, say): the workers call it as
/// `$PREFORK_BIN report`.
fn open_sandbox() -> (Sandbox, PathBuf) {
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let binary = sandbox.path().join("prefork");
    {
        // No other test's fork may hold the copy open for writing when it
        // is run (ETXTBSY).
        let _forking = crate::util::fork_lock();
        std::fs::copy(env!("CARGO_BIN_EXE_prefork"), &binary).unwrap();
    }
    (sandbox, binary)
}

/// `binary` (a copy of prefork) on the sandbox's board with `args`.
fn prefork(sandbox: &Sandbox, binary: &PathBuf, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env("DIR", sandbox.path())
        .arg("--scoreboard")
        .arg(sandbox.board())
        .args(args);
    cmd
}

/// A worker that reports its uid through its status descriptor, appends
/// its pid to `ready`, and idles.
fn reporting_worker(sandbox: &Sandbox) -> String {
    sandbox.script(
        "worker.sh",
        r#""$PREFORK_BIN" report "serving as uid $(id -u)"
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    )
}

/// The value of `field` in `/proc/<pid>/status`.
fn status_line(pid: i32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {field} in {text}"))
        .trim()
        .to_string()
}

/// Runs the master of `cmd`, which must exit 2 having started no worker,
/// and returns its log, for the caller to check what it said.
fn refused_at_start(cmd: &mut Command) -> String {
    let mut master = Running::start(cmd);
    let code = master.wait_exit().code();
    let stderr = master.stderr();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(master.spawned().is_empty(), "{stderr}");
    stderr
}

/// Field 19 of `/proc/<pid>/stat`: the nice value.
fn nice_of(pid: i32) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name's closing parenthesis start at field 3.
    let rest = &text[text.rfind(')').expect("a command name") + 2..];
    rest.split(' ')
        .nth(19 - 3)
        .expect("field 19")
        .parse()
        .unwrap()
}

/// As root (CI) the worker becomes nobody. Anyone else may not, and is
/// refused at start; it may name its own user, which changes nothing,
/// and still set the umask, the limits within its own and a higher nice
/// value: that is what runs then.
#[test]
fn a_worker_runs_as_nobody_with_its_groups_umask_limits_and_nice_value() {
    let (sandbox, binary) = open_sandbox();
    let worker = reporting_worker(&sandbox);
    let nobody = nobody();
    let me = User::from_uid(Uid::current())
        .expect("the user database")
        .expect("an entry for the user running the tests");
    let (user, core) = match is_root() {
        true => (&nobody, "unlimited"),
        false => (&me, "0"),
    };
    let args = |user: &str| {
        let mut cmd = prefork(&sandbox, &binary, &["-w", "1", "--user", user]);
        cmd.args(["--umask", "0027", "--rlimit-nofile", "256"])
            .args(["--rlimit-core", core, "--nice", "7", "--", "sh", &worker]);
        cmd
    };
    if !is_root() && me.uid != nobody.uid {
        let stderr = refused_at_start(&mut args("nobody"));
        assert!(
            stderr.contains("cannot switch to user nobody")
                && stderr.contains("Operation not permitted"),
            "{stderr}"
        );
    }
    let master = Running::start(&mut args(&user.name));
    let pid = master.wait_ready(&sandbox, 1)[0];
    let uid = user.uid.as_raw();
    let gid = user.gid.as_raw();
    assert_eq!(
        status_line(pid, "Uid"),
        format!("{uid}\t{uid}\t{uid}\t{uid}")
    );
    assert_eq!(
        status_line(pid, "Gid"),
        format!("{gid}\t{gid}\t{gid}\t{gid}")
    );
    let groups = |pid: i32| -> BTreeSet<u32> {
        status_line(pid, "Groups")
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect()
    };
    if is_root() {
        // As initgroups sets them: every group listing nobody, and its own.
        let name = std::ffi::CString::new(nobody.name.as_str()).unwrap();
        let expected: BTreeSet<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
            .unwrap()
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        assert_eq!(groups(pid), expected);
        // The master keeps its own user.
        assert_eq!(status_line(master.pid(), "Uid"), "0\t0\t0\t0");
    } else {
        assert_eq!(groups(pid), groups(std::process::id() as i32));
    }
    assert_eq!(status_line(pid, "Umask"), "0027");
    assert_eq!(limits(pid, "Max open files"), ("256".into(), "256".into()));
    assert_eq!(
        limits(pid, "Max core file size"),
        (core.to_string(), core.to_string())
    );
    assert_eq!(nice_of(pid), 7);
    // Its status file was opened before the drop: it still writes to it.
    let board = sandbox.board();
    let mut shown = String::new();
    master.wait_until("the worker's status on the board", || {
        let out = Command::new(&binary)
            .args(["status", "-d", board.to_str().unwrap()])
            .output()
            .expect("run prefork status");
        shown = String::from_utf8_lossy(&out.stdout).into_owned();
        shown.contains(&format!("serving as uid {uid}"))
    });
    assert!(shown.contains(&pid.to_string()), "{shown}");
}

#[test]
fn an_unknown_user_or_group_is_exit_2_naming_it_with_nothing_started() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    for (option, name, said) in [
        (
            "--user",
            "no-such-user-prefork",
            "unknown user no-such-user-prefork",
        ),
        (
            "--group",
            "no-such-group-prefork",
            "unknown group no-such-group-prefork",
        ),
    ] {
        let stderr = refused_at_start(&mut sandbox.prefork(&[option, name, "--", "sh", &worker]));
        assert!(stderr.contains(said), "{stderr}");
        assert!(sandbox.lines("ready").is_empty());
    }
}

#[test]
fn a_master_that_is_not_root_may_not_switch_to_root() {
    let (sandbox, binary) = open_sandbox();
    let worker = sandbox.worker("");
    let mut cmd = prefork(&sandbox, &binary, &["--user", "root", "--", "sh", &worker]);
    if is_root() {
        // As root (CI), the master itself runs as nobody.
        use std::os::unix::process::CommandExt;
        let nobody = nobody();
        cmd.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let stderr = refused_at_start(&mut cmd);
    assert!(
        stderr.contains("cannot switch to user root (uid 0)")
            && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
}

/// Root passes every check made before the fork; what the kernel still
/// refuses comes back from the worker's set-up through the exec-status
/// pipe, and names the option. (A descriptor limit above fs.nr_open is
/// refused even to root; to anyone else it is above the hard limit.)
#[test]
fn a_limit_the_kernel_refuses_names_the_option() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let mut master = Running::start(&mut sandbox.prefork(&[
        "--rlimit-nofile",
        "unlimited",
        "--",
        "sh",
        &worker,
    ]));
    let status = master.wait_exit();
    let stderr = master.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("rlimit_nofile")
            && stderr.contains("unlimited")
            && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
    assert!(sandbox.lines("ready").is_empty(), "{stderr}");
}

fn write_config(sandbox: &Sandbox, text: &str) -> String {
    let path = sandbox.join("prefork.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

#[test]
fn sighup_to_an_unknown_group_changes_nothing() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let command = format!("command = [\"sh\", \"{worker}\"]\nworkers = 2\n");
    let config = write_config(&sandbox, &command);
    let mut master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let before = master.wait_ready(&sandbox, 2);
    write_config(
        &sandbox,
        &format!("{command}group = \"no-such-group-prefork\"\n"),
    );
    master.signal(Signal::SIGHUP);
    master.wait_until("the refused reload", || {
        master.stderr().contains("configuration not reloaded")
    });
    let log = master.stderr();
    assert!(log.contains("unknown group no-such-group-prefork"), "{log}");
    assert_eq!(master.workers(), before);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

/// The limits are part of what a worker is: a reload that changes one rolls
/// the workers over. (Raising the nice value is allowed to anyone.)
#[test]
fn sighup_with_a_new_nice_value_rolls_the_workers_over() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("");
    let command = format!("command = [\"sh\", \"{worker}\"]\nworkers = 2\n");
    let config = write_config(&sandbox, &format!("{command}nice = 18\n"));
    let master = Running::start(&mut sandbox.prefork(&["-c", &config, "--ready", "immediate"]));
    let before = master.wait_ready(&sandbox, 2);
    assert!(before.iter().all(|&pid| nice_of(pid) == 18));
    write_config(&sandbox, &format!("{command}nice = 19\n"));
    master.signal(Signal::SIGHUP);
    let mut after = Vec::new();
    master.wait_until("two new workers", || {
        after = master.workers();
        after.len() == 2 && after.iter().all(|p| !before.contains(p))
    });
    assert!(after.iter().all(|&pid| nice_of(pid) == 19), "{after:?}");
}
