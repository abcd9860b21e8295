//! The master's log for a collector: `--log-format json` is one object per
//! line, from the same typed events as the text; under journald the text
//! carries no timestamp of its own; `RUST_LOG` filters both.

use nix::sys::signal::Signal;

use crate::harness::{Running, Sandbox};

fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line_with_the_event_s_fields() {
    let sandbox = Sandbox::new();
    // Says what it serves, then hangs there: stuck, with its last status.
    let worker = sandbox.script(
        "hang.sh",
        r#"prefork report "GET /report/2026"
echo $$ >> "$DIR/ready"
exec sleep 1000"#,
    );
    let mut master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--log-format",
        "json",
        "--timeout",
        "600ms",
        "--check-interval",
        "100ms",
        "--ready",
        "immediate",
        "--",
        "sh",
        &worker,
    ]));
    master.wait_until("a stuck worker", || {
        master.stderr().contains("\"event\":\"stuck\"")
    });
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    let lines = json_lines(&master.stderr());
    for line in &lines {
        for key in ["time", "level", "event", "message"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    let of = |event: &str| {
        lines
            .iter()
            .find(|l| l["event"] == event)
            .unwrap_or_else(|| panic!("no {event} in {lines:?}"))
    };
    let spawned = of("spawned");
    assert_eq!(spawned["level"], "info");
    assert_eq!(spawned["slot"], 0);
    let pid = spawned["pid"].as_i64().unwrap();
    assert_eq!(
        spawned["message"],
        format!("spawned worker pid={pid} slot=0")
    );
    let stuck = of("stuck");
    assert_eq!(stuck["level"], "warn");
    assert_eq!(stuck["pid"], pid);
    assert_eq!(stuck["last"], "GET /report/2026");
    assert!(stuck["silent"].as_f64().unwrap() > 0.6, "{stuck}");
    assert_eq!(of("stopped")["message"], "all workers stopped; exiting");
}

#[test]
fn rust_log_filters_json_lines_and_journald_text_has_no_timestamp() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.prefork(&["-w", "1", "--log-format", "json", "--", "sleep", "1000"]);
    let mut master = Running::start(&mut cmd);
    master.wait_workers(1);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    assert!(!json_lines(&master.stderr()).is_empty());

    // RUST_LOG=warn: a clean run logs nothing at all.
    let mut cmd = sandbox.prefork(&["-w", "1", "--log-format", "json", "--", "sleep", "1000"]);
    cmd.env("RUST_LOG", "warn");
    let mut master = Running::start(&mut cmd);
    // No "spawned" line to wait for: the process itself.
    master.wait_until("its worker", || master.workers().len() == 1);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    assert_eq!(master.stderr(), "");

    // Under journald: `[INFO ] ...`, no time of our own.
    let mut cmd = sandbox.prefork(&["-w", "1", "--", "sleep", "1000"]);
    cmd.env("JOURNAL_STREAM", "8:1234");
    let mut master = Running::start(&mut cmd);
    master.wait_workers(1);
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    let stderr = master.stderr();
    assert!(
        stderr.lines().all(|l| l.starts_with("[INFO ] ")),
        "{stderr}"
    );
}
