//! SIGUSR1 storms, with `prefork status` calls running through them, and
//! the `prefork status` calls themselves: each must exit 0 in time.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::driver::{spawn_helper, Chaos};
use super::ANSWER_LIMIT;

/// A SIGUSR1 storm under way, on threads of its own, while the round's
/// other disturbances are thrown.
pub(super) struct Storm {
    pub(super) started: Instant,
    dumps_before: u64,
    sender: std::thread::JoinHandle<u64>,
    prober: std::thread::JoinHandle<Vec<Result<Duration, String>>>,
    stop: Arc<AtomicBool>,
}

impl Chaos<'_> {
    /// 150 to 250 SIGUSR1 in about a second, with `prefork status` calls
    /// running through it, both on threads of their own: the round goes on.
    pub(super) fn start_storm(&mut self) -> Storm {
        let signals = self.rng.between(150, 250) as u32;
        let (dumps_before, _) = self.count_dumps();
        let stop = Arc::new(AtomicBool::new(false));
        let master = Pid::from_raw(self.master.pid());
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            let spacing = Duration::from_secs(1) / signals;
            let mut sent = 0;
            for i in 1..=signals {
                if kill(master, Signal::SIGUSR1).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(
                    (started + spacing * i).saturating_duration_since(Instant::now()),
                );
            }
            sent
        });
        let prober = {
            let stop = Arc::clone(&stop);
            let dir = self.sandbox.path().to_path_buf();
            let board = self.sandbox.board();
            let counter = Arc::clone(&self.next_probe);
            std::thread::spawn(move || {
                let mut results = Vec::new();
                // Until the storm's end (and at least three calls), or a
                // deadline should the test fail before that end.
                let deadline = started + ANSWER_LIMIT;
                while (!stop.load(Ordering::Relaxed) || results.len() < 3)
                    && Instant::now() < deadline
                {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    results.push(status_call(&dir, &board, n, n as usize));
                    std::thread::sleep(Duration::from_millis(30));
                }
                results
            })
        };
        Storm {
            started,
            dumps_before,
            sender,
            prober,
            stop,
        }
    }

    /// The storm's end: the master dumped during it, answers after it, and
    /// every `prefork status` call exited 0 in time.
    pub(super) fn end_storm(&mut self, storm: Storm) {
        let sent = storm.sender.join().expect("the SIGUSR1 sender");
        let (during, _) = self.count_dumps();
        storm.stop.store(true, Ordering::Relaxed);
        let results = storm.prober.join().expect("the status prober");
        self.answers.storms += 1;
        self.answers.storm_signals += sent;
        *self.thrown.entry("usr1-signals".into()).or_default() += sent;
        let answered = self.sync_dump("after a SIGUSR1 storm").is_some();
        let (after, _) = self.count_dumps();
        self.answers.storm_dumps.push(after - storm.dumps_before);
        if answered && during == storm.dumps_before {
            // Not one dump while 150+ requests arrived (the one after the
            // storm was asked for separately).
            self.findings.violation(format!(
                "no dump during a storm of {sent} SIGUSR1 ({} ms)",
                storm.started.elapsed().as_millis()
            ));
        }
        for result in results {
            self.count("status-call");
            self.status_answered(result);
        }
    }

    pub(super) fn status_answered(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(took) => {
                self.answers.status_calls += 1;
                self.answers.status_longest = self.answers.status_longest.max(took);
            }
            Err(e) => self.findings.violation(format!("prefork status: {e}")),
        }
    }
}

/// One `prefork status` call, which must exit 0 within [`ANSWER_LIMIT`];
/// returns how long it took.
pub(super) fn status_call(
    dir: &Path,
    board: &Path,
    n: u64,
    flavour: usize,
) -> Result<Duration, String> {
    let out_path = dir.join(format!("probe_{n}.out"));
    let err_path = dir.join(format!("probe_{n}.err"));
    let files = std::fs::File::create(&out_path).and_then(|out| {
        let err = std::fs::File::create(&err_path)?;
        Ok((out, err))
    });
    let (out, err) = files.map_err(|e| format!("cannot create its output files: {e}"))?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_prefork"));
    cmd.arg("status").arg("-d").arg(board);
    let json = flavour % 3 == 1;
    match flavour % 3 {
        1 => drop(cmd.arg("--json")),
        2 => drop(cmd.args(["--min-workers", "1"])),
        _ => {}
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let started = Instant::now();
    let mut child = spawn_helper(&mut cmd).map_err(|e| format!("cannot start it: {e}"))?;
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > ANSWER_LIMIT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", ANSWER_LIMIT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    };
    let took = started.elapsed();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    if !status.success() {
        return Err(format!("{status}: {}", stderr.trim()));
    }
    if stderr.contains("panicked") {
        return Err(format!("panicked: {}", stderr.trim()));
    }
    if json {
        match serde_json::from_slice::<serde_json::Value>(&stdout) {
            Ok(serde_json::Value::Array(_)) => {}
            _ => return Err("--json printed no JSON array".into()),
        }
    }
    Ok(took)
}
