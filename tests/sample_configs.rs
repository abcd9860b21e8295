//! Every sample configuration in `config/` runs as written (issue 11): the
//! real binary, started from the repository's root on `config/<name>.toml`
//! as the README says, brings up all the workers the file asks for, each
//! reporting on the board; stopped with Ctrl-C (SIGINT) or SIGTERM, it exits
//! 0, every worker exits 0, and nothing reaches the terminal but the
//! master's log: no "not found", no "Terminated", no traceback.
//!
//! What differs from a user's run, each for a reason said where it is done:
//! the board is the test's own (`--scoreboard`, which wins over the file), a
//! command under `target/release/` is taken from the profile under test, and
//! a `listen` of the file's becomes `127.0.0.1:0` (any free port).

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;

use crate::harness::{Running, Sandbox};

const PREFORK: &str = env!("CARGO_BIN_EXE_prefork");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// What the test needs to know of a sample config.
struct Sample {
    /// `config/<name>.toml`, relative to the repository's root.
    path: String,
    command: Vec<String>,
    workers: usize,
    /// It sets `listen`.
    listens: bool,
}

/// Every `config/*.toml`, sorted by name.
fn samples() -> Vec<Sample> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("config"))
        .expect("list config/")
        .map(|e| e.expect("an entry of config/").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no sample config in config/");
    names
        .into_iter()
        .map(|name| {
            let path = format!("config/{name}");
            let text = std::fs::read_to_string(Path::new(ROOT).join(&path)).expect("read a config");
            let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path}: {e}"));
            let command = table["command"]
                .as_array()
                .unwrap_or_else(|| panic!("{path}: no command"))
                .iter()
                .map(|arg| arg.as_str().expect("a string argument").to_string())
                .collect();
            let workers = table
                .get("workers")
                .and_then(toml::Value::as_integer)
                .unwrap_or_else(|| panic!("{path}: the test needs a `workers` count"));
            Sample {
                path,
                command,
                workers: workers.try_into().expect("a worker count"),
                listens: table.contains_key("listen"),
            }
        })
        .collect()
}

/// The command line of a run of `sample`: the file, the test's board, and
/// the overrides the module's header lists.
fn command_line(sample: &Sample, board: &Path) -> Vec<String> {
    let mut args = vec![
        "-c".to_string(),
        sample.path.clone(),
        "--scoreboard".into(),
        board.to_str().expect("UTF-8 path").into(),
    ];
    // A port of its own: a listener elsewhere on the machine (another run of
    // this very test, say) must not fail it. (The command line's `--listen`
    // replaces the file's list.)
    if sample.listens {
        args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    }
    // The README builds the demo's workers with `--release`; the test suite
    // has them where the binary under test is (target/debug for plain
    // `cargo test`). `-- COMMAND` on the command line overrides `command`.
    if let Some(rest) = sample.command[0].strip_prefix("target/release/") {
        let built: PathBuf = Path::new(PREFORK).parent().expect("a directory").join(rest);
        assert!(
            built.exists(),
            "{}: {} is missing: plain `cargo test` at the workspace root builds it",
            sample.path,
            built.display()
        );
        args.push("--".into());
        args.push(built.to_str().expect("UTF-8 path").into());
        args.extend(sample.command[1..].iter().cloned());
    } else {
        let program = &sample.command[0];
        assert!(
            !program.contains('/') || Path::new(ROOT).join(program).exists(),
            "{}: the command {program} does not exist",
            sample.path
        );
    }
    args
}

/// Starts `sample` from the repository's root, as the README does.
fn start(sample: &Sample, sandbox: &Sandbox) -> Running {
    let mut cmd = std::process::Command::new(PREFORK);
    cmd.current_dir(ROOT)
        .args(command_line(sample, &sandbox.board()))
        // A worker finds `prefork report` with no set-up of the user's: the
        // master exports PREFORK_BIN, its own path (and prefork is on no
        // PATH here). The issue: "prefork: not found", over and over.
        .env_remove("PREFORK_BIN");
    Running::start(&mut cmd)
}

/// Waits until `sample`'s workers all run, each with a status on the board.
fn wait_all_reporting(sample: &Sample, master: &Running, board: &Path) {
    let workers = master.wait_workers(sample.workers);
    master.wait_until(
        &format!("{}: a status from each of {workers:?}", sample.path),
        || {
            let Ok(reader) = prefork::scoreboard::Scoreboard::builder(board)
                .monitor()
                .build()
            else {
                return false;
            };
            let all = reader.read_all().unwrap_or_default();
            workers.iter().all(|pid| {
                all.get(&pid.to_string())
                    .is_some_and(|w| !w.status.is_empty())
            })
        },
    );
}

/// After `sample`'s master exited: it and every worker exited 0, none was
/// replaced, and only the master's log reached the terminal.
fn assert_clean_end(sample: &Sample, master: &mut Running, sandbox: &Sandbox, how: Signal) {
    let what = format!("{} stopped with {how}", sample.path);
    let exit = master.wait_exit();
    assert!(
        exit.success(),
        "{}",
        master.report(&format!("{what}: {exit:?}"))
    );
    let spawned = master.spawned();
    assert_eq!(
        spawned.len(),
        sample.workers,
        "{}",
        master.report(&format!("{what}: a worker was replaced"))
    );
    for (pid, _) in spawned {
        let end = master.end_of(pid).unwrap_or_default();
        assert!(
            end.contains("ended (exit 0)"),
            "{}",
            master.report(&format!("{what}: worker {pid} ended: {end:?}"))
        );
    }
    let stderr = master.stderr();
    let stray: Vec<&str> = stderr
        .lines()
        .filter(|line| !(line.starts_with('[') && line.contains(" INFO ")))
        .collect();
    assert!(
        stray.is_empty(),
        "{}",
        master.report(&format!("{what}: stray output on stderr: {stray:?}"))
    );
    for word in ["not found", "Terminated", "Traceback"] {
        assert!(
            !stderr.contains(word),
            "{}",
            master.report(&format!("{what}: {word:?} on stderr"))
        );
    }
    assert_eq!(
        master.stdout(),
        "",
        "{}",
        master.report(&format!("{what}: output on stdout"))
    );
    assert_eq!(sandbox.board_files(), Vec::<String>::new(), "{what}");
}

#[test]
fn every_sample_config_runs_as_written_and_stops_cleanly() {
    let samples = samples();
    // Ctrl-C in a terminal reaches the master alone, as SIGINT; a service
    // manager sends SIGTERM. All the samples run at once, once per signal.
    for how in [Signal::SIGINT, Signal::SIGTERM] {
        let sandboxes: Vec<Sandbox> = samples.iter().map(|_| Sandbox::new()).collect();
        let mut masters: Vec<Running> = samples
            .iter()
            .zip(&sandboxes)
            .map(|(sample, sandbox)| start(sample, sandbox))
            .collect();
        for ((sample, sandbox), master) in samples.iter().zip(&sandboxes).zip(&masters) {
            wait_all_reporting(sample, master, &sandbox.board());
        }
        for master in &masters {
            master.signal(how);
        }
        for ((sample, sandbox), master) in samples.iter().zip(&sandboxes).zip(&mut masters) {
            assert_clean_end(sample, master, sandbox, how);
        }
    }
}
