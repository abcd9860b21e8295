//! Recycling through the real binary: a worker past `max_lifetime`, or over
//! `max_rss`, is replaced by a worker that is ready first; the pool never
//! drops below its size for it.

use std::time::{Duration, Instant};

use crate::harness::{python3, Running, Sandbox};

/// Waits until the log says `what` `n` times, checking all the while that
/// the pool never has fewer than `floor` workers.
fn wait_with_floor(master: &Running, what: &str, n: usize, floor: usize) -> usize {
    let mut lowest = usize::MAX;
    master.wait_until(what, || {
        lowest = lowest.min(master.workers().len());
        master.stderr().matches(what).count() >= n
    });
    assert!(
        lowest >= floor,
        "{}",
        master.report(&format!("{lowest} workers at one point"))
    );
    lowest
}

#[test]
fn workers_past_their_lifetime_are_replaced_without_a_gap() {
    let sandbox = Sandbox::new();
    let worker = sandbox.status_worker(&[]);
    let mut cmd = sandbox.prefork(&[
        "-w",
        "2",
        "--ready",
        "report",
        "--max-lifetime",
        "1s",
        "--max-lifetime-jitter",
        "500ms",
        "--",
    ]);
    cmd.args(&worker);
    let master = Running::start(&mut cmd);
    let first = master.wait_ready(&sandbox, 2);
    let started = Instant::now();
    wait_with_floor(&master, "rolling restart complete", 1, 2);
    let log = master.stderr();
    for pid in &first {
        assert!(
            log.contains(&format!("recycling worker pid={pid} "))
                && log.contains("max_lifetime reached"),
            "{log}"
        );
    }
    // Not before the lifetime (the master counts from each worker's fork,
    // a little before the test saw it ready).
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_worker_over_max_rss_is_replaced() {
    let sandbox = Sandbox::new();
    // 64 MiB touched, so resident, then a status.
    let script = sandbox.join("big.py");
    std::fs::write(
        &script,
        r#"import os, hashlib, struct, time
block = bytearray(64 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
status = b"big"
record = hashlib.md5(status).digest() + struct.pack(">I", len(status)) + status
os.pwrite(int(os.environ["PREFORK_STATUS_FD"]), record, 0)
while True:
    time.sleep(1)
"#,
    )
    .unwrap();
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--ready",
        "report",
        "--max-rss",
        "32MiB",
        "--check-interval",
        "200ms",
        "--",
        python3(),
        &script,
    ]));
    master.wait_workers(1);
    wait_with_floor(&master, "rolling restart complete", 1, 1);
    let log = master.stderr();
    assert!(log.contains("is over max_rss (32.0 MiB)"), "{log}");
}
