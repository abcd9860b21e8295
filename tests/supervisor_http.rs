//! The status endpoint through the real binary: what it serves of a real
//! pool, promtool's verdict on its metrics, and that no client of it, slow,
//! silent or many, delays a respawn.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{signal, Running, Sandbox};

/// The endpoint's address, from its log line.
fn endpoint(master: &Running) -> String {
    let mut addr = None;
    master.wait_until("the status endpoint", || {
        addr = master.stderr().lines().find_map(|l| {
            let rest = l.split_once("/metrics and /healthz on ")?.1;
            Some(rest.trim().to_string())
        });
        addr.is_some()
    });
    addr.unwrap()
}

/// `GET path` on a new connection: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if let Some(socket) = addr.strip_prefix("unix:") {
        let mut s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.read_to_string(&mut answer).unwrap();
    } else {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.read_to_string(&mut answer).unwrap();
    }
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

#[test]
fn the_endpoint_serves_the_pool_and_promtool_accepts_its_metrics() {
    let sandbox = Sandbox::new();
    let worker = sandbox.status_worker(&[]);
    let mut cmd = sandbox.prefork(&[
        "-w",
        "2",
        "--status-listen",
        "127.0.0.1:0",
        "--min-workers",
        "2",
        "--ready",
        "report",
        "--",
    ]);
    cmd.args(&worker);
    let master = Running::start(&mut cmd);
    let addr = endpoint(&master);
    let workers = master.wait_ready(&sandbox, 2);
    master.wait_until("both running", || {
        let json: serde_json::Value = serde_json::from_str(&get(&addr, "/status.json").1).unwrap();
        let slots = json["slots"].as_array().unwrap();
        slots.iter().filter(|s| s["state"] == "running").count() == 2
    });

    assert_eq!(get(&addr, "/healthz").0, 200);
    let (code, text) = get(&addr, "/status");
    assert_eq!(code, 200);
    for pid in &workers {
        assert!(text.contains(&pid.to_string()), "{text}");
    }
    assert!(text.contains("serving slot=0"), "{text}");
    let (_, json) = get(&addr, "/status.json");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["master_pid"], master.pid());
    assert_eq!(json["slots"].as_array().unwrap().len(), 2);
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("prefork_workers{state=\"running\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("prefork_respawn_latency_seconds_bucket"),
        "{metrics}"
    );
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut promtool = promtool.expect("promtool (Debian's prometheus package) runs");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&addr, "/nothing").0, 404);

    // A worker fewer than min_workers: unhealthy until it is replaced.
    signal(workers[0], Signal::SIGSTOP);
    signal(workers[0], Signal::SIGKILL);
    master.wait_until("the replacement", || master.spawned().len() == 3);
    master.wait_until("the respawn in the metrics", || {
        get(&addr, "/metrics")
            .1
            .contains("prefork_worker_exits_total{reason=\"signal\"} 1")
    });
}

#[test]
fn healthz_is_503_below_min_workers() {
    let sandbox = Sandbox::new();
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "1",
        "--status-listen",
        "127.0.0.1:0",
        "--min-workers",
        "2",
        "--",
        "sleep",
        "1000",
    ]));
    let addr = endpoint(&master);
    master.wait_workers(1);
    let (code, body) = get(&addr, "/healthz");
    assert_eq!(code, 503, "{body}");
}

#[test]
fn slow_silent_and_many_clients_never_delay_a_respawn() {
    let sandbox = Sandbox::new();
    let socket = sandbox.join("status.sock");
    let addr = format!("unix:{socket}");
    let master = Running::start(&mut sandbox.prefork(&[
        "-w",
        "2",
        "--status-listen",
        &addr,
        "--ready",
        "immediate",
        "--",
        "sleep",
        "1000",
    ]));
    assert_eq!(endpoint(&master), addr);
    // Only its owner may talk to the board's endpoint.
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let workers = master.wait_workers(2);
    // A hundred clients that connect and say nothing, or half a request,
    // or ask and never read: more than the endpoint takes at once.
    let mut clients = Vec::new();
    for i in 0..100 {
        let mut c = UnixStream::connect(&socket).unwrap();
        match i % 3 {
            0 => {}
            1 => c.write_all(b"GET /sta").unwrap(),
            _ => c
                .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap(),
        }
        clients.push(c);
    }
    // A respawn is as prompt as ever.
    signal(workers[0], Signal::SIGKILL);
    master.wait_until("the replacement", || master.spawned().len() == 3);
    drop(clients);
    // And, the crowd gone, the endpoint answers again.
    master.wait_until("an answer", || get(&addr, "/healthz").0 == 200);
}

#[test]
fn a_status_address_that_cannot_be_bound_is_exit_2_naming_it() {
    let sandbox = Sandbox::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken: SocketAddr = taken.local_addr().unwrap();
    let mut master = Running::start(&mut sandbox.prefork(&[
        "--status-listen",
        &taken.to_string(),
        "--",
        "sleep",
        "1000",
    ]));
    let code = master.wait_exit().code();
    let stderr = master.stderr();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {taken}: address already in use")),
        "{stderr}"
    );
    assert!(master.spawned().is_empty(), "{stderr}");
}
