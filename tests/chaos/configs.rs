//! The config files: valid variants (a rollout, a reload, a scale), a
//! command that cannot run, the ways to break one; and the SIGHUPs that
//! send them, each answered in the master's log.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::driver::Chaos;
use super::{ANSWER_LIMIT, CHECK_INTERVAL, GRACEFUL_TIMEOUT, STUCK_TIMEOUT, WORKERS};
use crate::harness::Sandbox;

/// Ways to break the config file: each must be refused on SIGHUP.
const BROKEN: &[&str] = &[
    "syntax",
    "zero-workers",
    "too-many-workers",
    "wrong-type",
    "unknown-key",
    "empty-command",
    "bad-duration",
    "backoff-inverted",
    "no-working-directory",
    "tiny-interval",
    "binary",
    "empty",
    "missing",
];

/// A configuration the master can load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Variant {
    /// The worker's argument, `a` or `b`; [`UNRUNNABLE`] for a command that
    /// does not exist.
    pub(super) arg: &'static str,
    /// `CHAOS_ENV` in the workers' environment.
    pub(super) env: &'static str,
    pub(super) workers: usize,
    pub(super) kill_ms: u64,
}

const UNRUNNABLE: &str = "(unrunnable)";

pub(super) const BASE: Variant = Variant {
    arg: "a",
    env: "x",
    workers: WORKERS,
    kill_ms: 500,
};

/// A config file sent with a SIGHUP, and what the master must answer.
#[derive(Debug, Clone)]
pub(super) enum Sent {
    Valid(Variant),
    Broken(&'static str),
}

impl Sent {
    pub(super) fn describe(&self) -> String {
        match self {
            Sent::Valid(v) if v.arg == UNRUNNABLE => "a command that cannot run".into(),
            Sent::Valid(v) => format!(
                "variant {}/{} with {} workers, kill_timeout {} ms",
                v.arg, v.env, v.workers, v.kill_ms
            ),
            Sent::Broken(kind) => format!("a broken file ({kind})"),
        }
    }
}

/// The config file of variant `v`, with one key changed (or added) by `tweak`.
pub(super) fn config_text(
    sandbox: &Sandbox,
    worker: &str,
    v: Variant,
    tweak: Option<(&str, &str)>,
) -> String {
    let board = sandbox.board();
    let command = if v.arg == UNRUNNABLE {
        format!("[\"{}\"]", sandbox.join("no-such-program"))
    } else {
        format!(
            "[\"{}\", \"-S\", \"{}\", \"{}\"]",
            crate::harness::python3(),
            worker,
            v.arg
        )
    };
    let mut keys: Vec<(String, String)> = vec![
        ("command".into(), command),
        ("workers".into(), v.workers.to_string()),
        ("scoreboard_dir".into(), format!("\"{}\"", board.display())),
        (
            "timeout".into(),
            format!("\"{}ms\"", STUCK_TIMEOUT.as_millis()),
        ),
        ("kill_timeout".into(), format!("\"{}ms\"", v.kill_ms)),
        (
            "check_interval".into(),
            format!("\"{}ms\"", CHECK_INTERVAL.as_millis()),
        ),
        (
            "graceful_timeout".into(),
            format!("\"{}ms\"", GRACEFUL_TIMEOUT.as_millis()),
        ),
        ("min_uptime".into(), "\"500ms\"".into()),
        ("backoff_initial".into(), "\"100ms\"".into()),
        ("backoff_max".into(), "\"1s\"".into()),
        // Ready at exec, as before readiness existed: a worker the chaos
        // silences at birth is the stuck timeout's, not the start's. Two
        // at a time, so that rollouts under fire use the surge.
        ("ready".into(), "\"immediate\"".into()),
        ("max_surge".into(), "2".into()),
        // Workers recycled for their age all along, through everything
        // else: each lives 8 to 16 s.
        ("max_lifetime".into(), "\"8s\"".into()),
        ("max_lifetime_jitter".into(), "\"8s\"".into()),
    ];
    if let Some((key, value)) = tweak {
        match keys.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => keys.push((key.to_string(), value.to_string())),
        }
    }
    let mut text: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    text += &format!(
        "\n[env]\nCHAOS_DIR = \"{}\"\nCHAOS_ENV = \"{}\"\n",
        sandbox.path().display(),
        v.env
    );
    text
}

/// The keys of a pool that sizes itself, added to every config file of a
/// spare-scaling run.
pub(super) fn spare_keys(text: &str) -> String {
    let b = super::driver::SPARE;
    let keys = format!(
        "min_workers = {}\nmax_workers = {}\nmin_spare = {}\nmax_spare = {}\n",
        b.min_workers, b.max_workers, b.min_spare, b.max_spare
    );
    // Before the [env] table, so that they are top-level keys.
    match text.find("\n[env]") {
        Some(at) => format!("{}\n{keys}{}", &text[..at], &text[at..]),
        None => format!("{keys}{text}"),
    }
}

impl Chaos<'_> {
    pub(super) fn config_text(&self, v: Variant, tweak: Option<(&str, &str)>) -> String {
        let text = config_text(self.sandbox, &self.worker, v, tweak);
        match self.spare {
            Some(_) => spare_keys(&text),
            None => text,
        }
    }

    /// Replaces the config file at once (never half-written).
    fn write_config(&self, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                let tmp = self.config.with_extension("toml.new");
                std::fs::write(&tmp, bytes).expect("write the config");
                std::fs::rename(&tmp, &self.config).expect("replace the config");
            }
            None => {
                let _ = std::fs::remove_file(&self.config);
            }
        }
    }

    fn broken_config(&mut self, kind: &'static str) -> Option<Vec<u8>> {
        let v = self.current;
        let tweak = |key, value| Some((key, value));
        let text = match kind {
            "syntax" => self.config_text(v, tweak("command", "[\"python3\"")),
            "zero-workers" => self.config_text(v, tweak("workers", "0")),
            "too-many-workers" => self.config_text(v, tweak("workers", "100000")),
            "wrong-type" => self.config_text(v, tweak("workers", "\"many\"")),
            "unknown-key" => self.config_text(v, tweak("wrkers", "3")),
            "empty-command" => self.config_text(v, tweak("command", "[]")),
            "bad-duration" => self.config_text(v, tweak("timeout", "\"5 parsecs\"")),
            "backoff-inverted" => self.config_text(v, tweak("backoff_initial", "\"5s\"")),
            "no-working-directory" => {
                let dir = format!("\"{}\"", self.sandbox.join("no-such-dir"));
                self.config_text(v, Some(("working_directory", dir.as_str())))
            }
            "tiny-interval" => self.config_text(v, tweak("check_interval", "\"1ms\"")),
            "binary" => {
                let mut junk = vec![0xff, 0xfe];
                let n = self.rng.between(1, 400) as usize;
                junk.extend(self.rng.bytes(n));
                return Some(junk);
            }
            "empty" => String::new(),
            "missing" => return None,
            other => unreachable!("{other}"),
        };
        Some(text.into_bytes())
    }

    /// One to three config files, each with its SIGHUP, each acknowledged
    /// before the next: valid variants (a rollout, a reload, a scale),
    /// broken files, and a command that cannot run.
    pub(super) fn hup_chain(&mut self) {
        let n = self.rng.between(1, 3);
        for i in 0..n {
            if i > 0 {
                std::thread::sleep(self.rng.ms(0, 300));
            }
            let roll = self.rng.below(100);
            let (sent, bytes) = if roll < 55 {
                let v = Variant {
                    arg: self.rng.pick(&["a", "b"]),
                    env: self.rng.pick(&["x", "y"]),
                    workers: if self.rng.chance(0.15) { 12 } else { WORKERS },
                    kill_ms: self.rng.pick(&[400, 500]),
                };
                self.count("hup-valid");
                (Sent::Valid(v), Some(self.config_text(v, None).into_bytes()))
            } else if roll < 90 {
                let kind = self.rng.pick(BROKEN);
                self.count(format!("hup-broken-{kind}"));
                (Sent::Broken(kind), self.broken_config(kind))
            } else {
                let v = Variant {
                    arg: UNRUNNABLE,
                    ..self.current
                };
                self.count("hup-unrunnable");
                (Sent::Valid(v), Some(self.config_text(v, None).into_bytes()))
            };
            if !self.send_hup(sent, bytes) {
                return;
            }
        }
    }

    /// Writes the config file (or removes it), sends SIGHUP and waits for
    /// the master's answer in its log (and for an aborted rollout, when the
    /// command cannot run). False when the master is gone.
    pub(super) fn send_hup(&mut self, sent: Sent, bytes: Option<Vec<u8>>) -> bool {
        self.write_config(bytes.as_deref());
        self.scan_log();
        let before = self.answers.hups;
        let aborted = self.aborted;
        self.hups.push_back(sent.clone());
        if !self.signal_master(Signal::SIGHUP) {
            return false;
        }
        let deadline = Instant::now() + ANSWER_LIMIT;
        while self.answers.hups == before {
            if Instant::now() > deadline {
                self.findings.violation(format!(
                    "SIGHUP with {} not answered within 5 s",
                    sent.describe()
                ));
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
            self.scan_log();
        }
        if matches!(sent, Sent::Valid(v) if v.arg == UNRUNNABLE) {
            let deadline = Instant::now() + ANSWER_LIMIT;
            while self.aborted == aborted && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                self.scan_log();
            }
            if self.aborted == aborted {
                self.findings
                    .violation("a rollout to a command that cannot run was not aborted");
            }
        }
        true
    }
}
