//! Config input that can never block or exhaust the process: a config path
//! naming a FIFO, `/dev/zero` or a huge file is refused at once with what it
//! is, also on SIGHUP in a running master; an error in a megabyte-long line
//! shows an excerpt; a bad value says what is expected. Through the real
//! binary: a hang fails the test (its guard kills it) instead of hanging it,
//! and an unbounded read fails it under a limit on its address space.

use std::os::unix::process::CommandExt;

use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;

use prefork::config::MAX_FILE_SIZE;
use prefork::duration::FORMS;

use crate::harness::{Running, Sandbox};

/// Far above what `prefork check` needs, far below what reading
/// `/dev/zero` to its end would take.
const ADDRESS_SPACE: u64 = 1 << 30;

/// What `prefork check` did: its exit code, stdout and stderr.
struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `prefork <args>` to its end, within the harness's timeout and
/// [`ADDRESS_SPACE`].
fn prefork(sandbox: &Sandbox, args: &[&str]) -> Checked {
    let mut cmd = sandbox.prefork_on_default_board(args);
    // SAFETY: setrlimit is a system call, async-signal-safe; nothing else
    // runs in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            setrlimit(Resource::RLIMIT_AS, ADDRESS_SPACE, ADDRESS_SPACE)?;
            Ok(())
        });
    }
    let mut run = Running::start(&mut cmd);
    let status = run.wait_exit();
    Checked {
        code: status.code(),
        stdout: run.stdout(),
        stderr: run.stderr(),
    }
}

fn check(sandbox: &Sandbox, config: &str) -> Checked {
    prefork(sandbox, &["check", "-c", config])
}

/// Asserts that `check -c path` exits 2 with `cannot read config file
/// <path>: <why>`.
fn refused(sandbox: &Sandbox, path: &str, why: &str) {
    let out = check(sandbox, path);
    let expected = format!("cannot read config file {path}: {why}");
    assert_eq!(out.code, Some(2), "{path}: {}", out.stderr);
    assert!(
        out.stderr.contains(&expected),
        "no {expected:?} in {}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

fn make_fifo(sandbox: &Sandbox, name: &str) -> String {
    let path = sandbox.join(name);
    mkfifo(path.as_str(), Mode::S_IRUSR | Mode::S_IWUSR).expect("mkfifo");
    path
}

fn symlink(sandbox: &Sandbox, name: &str, to: &str) -> String {
    let path = sandbox.join(name);
    std::os::unix::fs::symlink(to, &path).expect("symlink");
    path
}

#[test]
fn a_fifo_is_refused_at_once_not_waited_on() {
    let sandbox = Sandbox::new();
    let fifo = make_fifo(&sandbox, "prefork.toml");
    refused(&sandbox, &fifo, "it is a FIFO, not a regular file");
    // Through a symlink, the same.
    let link = symlink(&sandbox, "link.toml", &fifo);
    refused(&sandbox, &link, "it is a FIFO, not a regular file");
}

#[test]
fn a_symlink_to_a_regular_file_is_read() {
    let sandbox = Sandbox::new();
    let file = sandbox.join("real.toml");
    std::fs::write(&file, "command = [\"true\"]\nworkers = 3\n").unwrap();
    let link = symlink(&sandbox, "prefork.toml", &file);
    let out = check(&sandbox, &link);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("workers = 3\n"), "{}", out.stdout);
}

#[test]
fn devices_and_directories_are_refused() {
    let sandbox = Sandbox::new();
    refused(
        &sandbox,
        "/dev/zero",
        "it is a character device, not a regular file",
    );
    let link = symlink(&sandbox, "zero.toml", "/dev/zero");
    refused(
        &sandbox,
        &link,
        "it is a character device, not a regular file",
    );
    refused(
        &sandbox,
        sandbox.path().to_str().unwrap(),
        "it is a directory, not a regular file",
    );
}

#[test]
fn a_file_over_the_limit_is_refused_and_one_at_it_is_read() {
    let sandbox = Sandbox::new();
    let limit = MAX_FILE_SIZE as usize;
    assert_eq!(limit, 1 << 20, "the README says 1 MiB");
    // A valid config padded with a comment to exactly the limit, then one byte more.
    let head = "command = [\"true\"]\n#";
    let at_limit = format!("{head}{}\n", "x".repeat(limit - head.len() - 1));
    assert_eq!(at_limit.len(), limit);
    let path = sandbox.join("at-limit.toml");
    std::fs::write(&path, &at_limit).unwrap();
    let out = check(&sandbox, &path);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let path = sandbox.join("over.toml");
    std::fs::write(&path, format!("{at_limit} ")).unwrap();
    let too_large = "it is larger than 1 MiB, the limit for a config file";
    refused(&sandbox, &path, too_large);

    // 4 GiB (sparse: no disk needed), refused without reading it.
    let path = sandbox.join("huge.toml");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(4 << 30).unwrap();
    refused(&sandbox, &path, too_large);
}

#[test]
fn an_error_in_a_huge_line_shows_an_excerpt_of_it() {
    let sandbox = Sandbox::new();
    let path = sandbox.join("deep.toml");
    let deep = format!("a = {}1{}", "{b = ".repeat(10_000), "}".repeat(10_000));
    std::fs::write(&path, format!("command = [\"x\"]\n{deep}\n")).unwrap();
    let out = check(&sandbox, &path);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains(&format!("{path}:2:")), "{}", out.stderr);
    assert!(out.stderr.len() < 1000, "{} bytes", out.stderr.len());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines[1].contains("| …{b = ") && lines[2].ends_with('^'),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_values_say_what_is_expected() {
    let sandbox = Sandbox::new();
    let path = sandbox.join("prefork.toml");
    std::fs::write(&path, "command = [\"x\"]\nworkers = \"x\"\n").unwrap();
    let out = check(&sandbox, &path);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains(
            "key `workers`: invalid type: string \"x\", expected a whole number from 1 to 4096"
        ),
        "{}",
        out.stderr
    );
    // A duration in a form --help does not list is refused with the list,
    // in the file and on the command line.
    std::fs::write(&path, "command = [\"x\"]\ntimeout = \"5 sec\"\n").unwrap();
    let out = check(&sandbox, &path);
    assert_eq!(out.code, Some(2));
    let expected = format!("key `timeout`: invalid duration \"5 sec\": expected {FORMS}");
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
    let out = prefork(
        &sandbox,
        &["check", "--kill-timeout", "5 seconds", "--", "x"],
    );
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains(FORMS), "{}", out.stderr);
    let help = prefork(&sandbox, &["--help"]);
    assert!(
        help.stdout.contains(&format!("Durations: {FORMS}")),
        "{}",
        help.stdout
    );
    // What --help lists is accepted.
    let out = prefork(
        &sandbox,
        &[
            "check",
            "-t",
            "1.5m",
            "--kill-timeout",
            "500ms",
            "--graceful-timeout",
            "0.25",
            "--",
            "true",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for line in [
        "timeout = \"90s\"",
        "kill_timeout = \"500ms\"",
        "graceful_timeout = \"250ms\"",
    ] {
        assert!(out.stdout.contains(line), "no {line} in {}", out.stdout);
    }
}

/// The master reads the file on SIGHUP inside its loop: a FIFO put in place
/// of the file is refused, and the master goes on serving signals.
#[test]
fn sighup_with_a_fifo_in_place_of_the_file_changes_nothing_and_blocks_nothing() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let real = sandbox.join("real.toml");
    std::fs::write(
        &real,
        format!("command = [\"sh\", \"{worker}\"]\nworkers = 2\ngraceful_timeout = \"2s\"\n"),
    )
    .unwrap();
    let config = symlink(&sandbox, "prefork.toml", &real);
    let mut master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let before = master.wait_ready(&sandbox, 2);

    let fifo = make_fifo(&sandbox, "fifo");
    let swap = symlink(&sandbox, "prefork.toml.new", &fifo);
    std::fs::rename(&swap, &config).unwrap();
    master.signal(Signal::SIGHUP);
    master.wait_until("the reload refused", || {
        master.stderr().contains("configuration not reloaded")
    });
    let log = master.stderr();
    assert!(
        log.contains(&format!("{config}: it is a FIFO, not a regular file")),
        "{log}"
    );
    assert_eq!(master.workers(), before);
    // Still serving signals: one worker more.
    master.signal(Signal::SIGTTIN);
    master.wait_workers(3);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success(), "{}", master.report("exit"));
}
