//! The config file (issue 5): errors that point at the file, line and key
//! with nothing started; the command line over the file; `prefork check`;
//! SIGHUP scaling, rolling restarts with no downtime, and broken files that
//! change nothing.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::harness::{self, set_mode, Running, Sandbox};

fn write_config(sandbox: &Sandbox, name: &str, text: &str) -> String {
    let path = sandbox.join(name);
    std::fs::write(&path, text).expect("write the config");
    path
}

/// A worker script that marks its start in `started` (so a test can prove
/// that none ran), then idles like the harness's worker.
fn marking_worker(sandbox: &Sandbox) -> String {
    sandbox.script(
        "marking.sh",
        r#"echo $$ >> "$DIR/started"
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    )
}

/// A master running two marking workers from a config file: the file's
/// path, the master, and its workers.
fn two_workers_from_config(sandbox: &Sandbox) -> (String, Running, Vec<i32>) {
    let worker = marking_worker(sandbox);
    let config = write_config(
        sandbox,
        "prefork.toml",
        &format!("command = [\"sh\", \"{worker}\"]\nworkers = 2\n"),
    );
    let master = Running::start(&mut sandbox.prefork(&["-c", &config, "--graceful-timeout", "1s"]));
    let workers = master.wait_ready(sandbox, 2);
    (config, master, workers)
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run prefork")
}

#[test]
fn bad_files_name_file_line_and_key_and_start_nothing() {
    let sandbox = Sandbox::new();
    let worker = marking_worker(&sandbox);
    let command = format!("command = [\"sh\", \"{worker}\"]\n");
    // (file body, the line, the key, a piece of the message)
    let cases: &[(&str, usize, &str, &str)] = &[
        ("wrkers = 2\n", 2, "wrkers", "unknown field `wrkers`"),
        ("workers = \"four\"\n", 2, "workers", "invalid type"),
        ("workers = 0\n", 2, "workers", "at least 1"),
        ("workers = 100000\n", 2, "workers", "ceiling of 4096"),
        (
            "timeout = \"5 parsecs\"\n",
            2,
            "timeout",
            "invalid duration \"5 parsecs\"",
        ),
        (
            "graceful_timeout = -1\n",
            2,
            "graceful_timeout",
            "invalid duration -1",
        ),
        (
            "check_interval = \"0s\"\n",
            2,
            "check_interval",
            "at least 10ms",
        ),
        ("env = \"PATH=/bin\"\n", 2, "env", "invalid type"),
        (
            "workers = 2\nkill_timeout = [1]\n",
            3,
            "kill_timeout",
            "a duration",
        ),
    ];
    for (i, (body, line, key, message)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let path = write_config(&sandbox, &name, &format!("{command}{body}"));
        let out = run(sandbox.prefork(&["-c", &path]).env("RUST_LOG", "info"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let located = format!("{path}:{line}:");
        assert!(
            stderr.contains(&located),
            "{name}: no {located} in {stderr}"
        );
        assert!(
            stderr.contains(&format!("key `{key}`")),
            "{name}: no key in {stderr}"
        );
        assert!(
            stderr.contains(message),
            "{name}: no {message:?} in {stderr}"
        );
        assert!(!stderr.contains("spawned worker"), "{name}: {stderr}");
    }
    // An empty command, a syntax error, a missing file, no command at all.
    let empty = write_config(&sandbox, "empty.toml", "command = []\n");
    let broken = write_config(&sandbox, "broken.toml", "command = [\"sh\"\nworkers = 2\n");
    let no_command = write_config(&sandbox, "none.toml", "workers = 2\n");
    let missing = sandbox.join("missing.toml");
    let expectations = [
        (&empty, format!("{empty}:1:"), "the command is empty"),
        (&broken, format!("{broken}:"), "invalid array"),
        (
            &missing,
            format!("cannot read config file {missing}"),
            "No such file",
        ),
        (&no_command, format!("{no_command}:"), "no worker command"),
    ];
    for (path, located, message) in expectations {
        let out = run(&mut sandbox.prefork(&["-c", path]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path}: {stderr}");
        assert!(
            stderr.contains(&located) && stderr.contains(message),
            "{path}: {stderr}"
        );
    }
    assert!(sandbox.lines("started").is_empty(), "a worker started");
}

#[test]
fn the_command_line_overrides_the_file() {
    let sandbox = Sandbox::new();
    let worker = marking_worker(&sandbox);
    let config = write_config(
        &sandbox,
        "prefork.toml",
        "command = [\"false\"]\nworkers = 2\ngraceful_timeout = \"1s\"\n",
    );
    let mut master =
        Running::start(&mut sandbox.prefork(&["-c", &config, "-w", "3", "--", "sh", &worker]));
    master.wait_ready(&sandbox, 3);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

#[test]
fn check_prints_the_effective_configuration() {
    let sandbox = Sandbox::new();
    let config = write_config(
        &sandbox,
        "prefork.toml",
        "command = [\"./worker\", \"--port\", \"80\"]\nworkers = 2\ntimeout = 3\n[env]\nMODE = \"a\"\n",
    );
    // The command is checked as a spawn would find it, relative to where
    // prefork starts.
    let worker = sandbox.script("worker", "exit 0");
    set_mode(&worker, 0o755);
    let out = run(Command::new(env!("CARGO_BIN_EXE_prefork"))
        .current_dir(sandbox.path())
        .args(["check", "-c", &config, "-w", "5", "-e", "EXTRA=b"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "command = [\"./worker\", \"--port\", \"80\"]",
        "workers = 5",
        "timeout = \"3s\"",
        "graceful_timeout = \"30s\"",
        "\"MODE\" = \"a\"",
        "\"EXTRA\" = \"b\"",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in\n{stdout}");
    }
    // What it prints is a config that reads back the same.
    let again = write_config(&sandbox, "again.toml", &stdout);
    let out2 = run(Command::new(env!("CARGO_BIN_EXE_prefork"))
        .current_dir(sandbox.path())
        .args(["check", "-c", &again]));
    assert_eq!(String::from_utf8_lossy(&out2.stdout), stdout);

    let bad = write_config(&sandbox, "bad.toml", "workers = 0\n");
    let out = run(Command::new(env!("CARGO_BIN_EXE_prefork")).args(["check", "-c", &bad]));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_sample_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    for sample in ["prefork.toml", "web-pool.toml", "shell-worker.toml"] {
        let path = format!("{root}/config/{sample}");
        // Their workers are built by the README's run command, not by
        // `cargo test`: the file alone is checked here, under a command
        // that exists. (tests/sample_configs.rs runs them for real.)
        let out =
            run(Command::new(env!("CARGO_BIN_EXE_prefork"))
                .args(["check", "-c", &path, "--", "true"]));
        assert!(
            out.status.success(),
            "{sample}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn sighup_scales_to_the_new_worker_count() {
    let sandbox = Sandbox::new();
    let worker = marking_worker(&sandbox);
    let body = |n: usize| {
        format!("command = [\"sh\", \"{worker}\"]\nworkers = {n}\ngraceful_timeout = \"1s\"\n")
    };
    let config = write_config(&sandbox, "prefork.toml", &body(2));
    let mut master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    master.wait_ready(&sandbox, 2);
    write_config(&sandbox, "prefork.toml", &body(4));
    master.signal(Signal::SIGHUP);
    master.wait_workers(4);
    write_config(&sandbox, "prefork.toml", &body(1));
    master.signal(Signal::SIGHUP);
    master.wait_workers(1);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

#[test]
fn sighup_rolls_a_changed_command_over_without_downtime() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script(
        "versioned.sh",
        r#"echo "$1 $$" >> "$DIR/versions"
trap 'exit 0' TERM
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let body = |version: &str| {
        format!("command = [\"sh\", \"{worker}\", \"{version}\"]\nworkers = 3\ngraceful_timeout = \"2s\"\n")
    };
    let config = write_config(&sandbox, "prefork.toml", &body("v1"));
    let mut master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let old: BTreeSet<i32> = master.wait_ready(&sandbox, 3).into_iter().collect();

    write_config(&sandbox, "prefork.toml", &body("v2"));
    master.signal(Signal::SIGHUP);
    // Sample the number of live workers all through the rollout, each
    // sample as the workers were at one moment.
    let (mut fewest, mut most) = (usize::MAX, 0);
    let started = Instant::now();
    let mut done = false;
    while !done && started.elapsed() < harness::TIMEOUT {
        let alive = master.workers_at_one_moment();
        fewest = fewest.min(alive.len());
        most = most.max(alive.len());
        done = master.stderr().contains("rolling restart complete")
            && alive.iter().all(|p| !old.contains(p));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(done, "{}", master.report("the rollout did not complete"));
    assert!(
        fewest >= 3 && most <= 4,
        "{}",
        master.report(&format!("{fewest}..{most} workers alive"))
    );
    let new: BTreeSet<i32> = master.workers().into_iter().collect();
    assert_eq!(new.len(), 3);
    // The master does not wait for a worker to run its first line: the last
    // one may not have said which version it runs yet.
    let mut versions = Vec::new();
    master.wait_until("each new worker's version line", || {
        versions = sandbox.lines("versions");
        new.iter().all(|pid| {
            let suffix = format!(" {pid}");
            versions.iter().any(|line| line.ends_with(&suffix))
        })
    });
    for pid in &new {
        assert!(
            versions.contains(&format!("v2 {pid}")),
            "{pid} is not v2: {versions:?}"
        );
    }
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

#[test]
fn sighup_without_a_config_file_restarts_every_worker() {
    let sandbox = Sandbox::new();
    let worker = sandbox.worker("trap 'exit 0' TERM");
    let mut master = Running::start(&mut sandbox.prefork(&["-w", "2", "--", "sh", &worker]));
    let old = master.wait_ready(&sandbox, 2);
    master.signal(Signal::SIGHUP);
    master.wait_until("two new workers", || {
        let now = master.workers();
        now.len() == 2 && now.iter().all(|p| !old.contains(p))
    });
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

#[test]
fn sighup_with_a_broken_file_changes_nothing() {
    let sandbox = Sandbox::new();
    let (config, mut master, before) = two_workers_from_config(&sandbox);
    write_config(
        &sandbox,
        "prefork.toml",
        "command = [\"sh\"]\nworkers = \"many\"\n",
    );
    master.signal(Signal::SIGHUP);
    master.wait_until("the error in the log", || {
        master.stderr().contains("configuration not reloaded")
    });
    let log = master.stderr();
    assert!(
        log.contains(&format!("{config}:2:")) && log.contains("key `workers`"),
        "{log}"
    );
    assert_eq!(master.workers(), before);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

#[test]
fn a_rollout_to_a_command_that_cannot_run_keeps_the_old_workers() {
    let sandbox = Sandbox::new();
    let (config, mut master, before) = two_workers_from_config(&sandbox);
    let missing = sandbox.join("no-such-program");
    std::fs::write(&config, format!("command = [\"{missing}\"]\nworkers = 2\n")).unwrap();
    master.signal(Signal::SIGHUP);
    master.wait_until("the aborted rollout", || {
        master.stderr().contains("rolling restart aborted")
    });
    // A master that learns of the failed exec from the child's report, not
    // by waiting for the child, logs the abort while that child may still
    // be on its way out: what must hold is that the old workers stay, every
    // one of them all along, and that nothing else is left running.
    let mut kept = true;
    master.wait_until("only the old workers", || {
        let now = master.workers();
        kept &= before.iter().all(|p| now.contains(p));
        now == before
    });
    assert!(kept, "{}", master.report("an old worker ended"));
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}

/// Found under fire: a rollout interrupted by a SIGHUP whose command cannot
/// run went back to the command from before the rollout, but left the
/// workers the rollout had already started running the command in between,
/// for good: the pool stayed mixed.
#[test]
fn an_aborted_rollout_leaves_no_worker_of_the_interrupted_one() {
    let sandbox = Sandbox::new();
    // Slow to stop: the rollout waits a second for each old worker.
    let worker = sandbox.script(
        "versioned.sh",
        r#"echo "$1 $$" >> "$DIR/versions"
trap 'sleep 1; exit 0' TERM
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let body =
        |command: &str| format!("command = {command}\nworkers = 3\ngraceful_timeout = \"5s\"\n");
    let version = |v: &str| format!("[\"sh\", \"{worker}\", \"{v}\"]");
    let config = write_config(&sandbox, "prefork.toml", &body(&version("v1")));
    let mut master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    master.wait_ready(&sandbox, 3);
    write_config(&sandbox, "prefork.toml", &body(&version("v2")));
    master.signal(Signal::SIGHUP);
    master.wait_until("the rollout's first step", || {
        master.stderr().contains("rolling restart: retiring worker")
    });
    let missing = sandbox.join("no-such-program");
    write_config(&sandbox, "prefork.toml", &body(&format!("[\"{missing}\"]")));
    master.signal(Signal::SIGHUP);
    master.wait_until("the abort", || {
        master.stderr().contains("rolling restart aborted")
    });
    let runs = |pid: i32, v: &str| sandbox.lines("versions").contains(&format!("{v} {pid}"));
    master.wait_until("every worker back on v1", || {
        let workers = master.workers();
        workers.len() == 3 && workers.iter().all(|&pid| runs(pid, "v1"))
    });
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
}
