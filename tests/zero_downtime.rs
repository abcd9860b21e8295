//! The zero-downtime promise, kept under load: an example HTTP worker
//! behind `--listen 127.0.0.1:0`, a bounded loopback load on it (a new
//! connection per request, and keep-alive connections, both), and five
//! SIGHUPs that change the workers' environment. No request fails, and once
//! each rollout completes, every response comes from the new generation.

use std::net::SocketAddr;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::harness::{eventually, python3, rust_example, Running, Sandbox};
use crate::httpload::{get, Load, Plan};

const RELOADS: u32 = 5;

fn write_config(path: &str, command: &[String], version: u32) {
    let command: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "command = [{}]\nworkers = 4\nlisten = [\"127.0.0.1:0\"]\nready = \"report\"\n\
         graceful_timeout = \"10s\"\n[env]\nAPP_VERSION = \"{version}\"\n",
        command.join(", ")
    );
    std::fs::write(path, text).unwrap();
}

fn completed(master: &Running) -> usize {
    master.stderr().matches("rolling restart complete").count()
}

fn reloads_under_load_fail_no_request(command: Vec<String>) {
    let sandbox = Sandbox::new();
    let config = sandbox.join("pool.toml");
    write_config(&config, &command, 1);
    let master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let addr = master.listen_addr();
    master.wait_workers(4);
    master.wait_until("a first answer", || get(addr, "/").is_ok());

    let load = Load::start(
        addr,
        Plan {
            fresh: 2,
            keepalive: 2,
            rate_per_thread: Some(250),
            path: "/",
        },
    );
    // Each generation's window: from its rollout's completion to the next
    // SIGHUP. It must have served requests, all of them its own.
    let mut windows: Vec<(String, Instant, Instant)> = Vec::new();
    let served_since = |load: &Load, from: u64, n: u64| {
        assert!(
            eventually(|| load.served() >= from + n),
            "{}",
            master.report(&format!("the load stalled at {} answers", load.served()))
        );
    };
    served_since(&load, 0, 100);
    for version in 2..=RELOADS + 1 {
        write_config(&config, &command, version);
        let hup = Instant::now();
        if let Some(last) = windows.last_mut() {
            last.2 = hup;
        }
        master.signal(Signal::SIGHUP);
        master.wait_until(&format!("rollout {}", version - 1), || {
            completed(&master) == (version - 1) as usize
        });
        let done = Instant::now();
        windows.push((version.to_string(), done, done));
        served_since(&load, load.served(), 400);
    }
    windows.last_mut().unwrap().2 = Instant::now();
    let report = load.stop();

    let said = format!(
        "{} served ({} after a retry on a new connection, as HTTP clients do), {} failed: {:?}",
        report.served(),
        report.retried,
        report.failed,
        report.failures
    );
    assert_eq!(report.failed, 0, "{}", master.report(&said));
    for (version, from, to) in &windows {
        let mut versions = report.versions_from(report.at(*from));
        // Only the window: drop what was sent after its end.
        let later = report.versions_from(report.at(*to));
        for (v, n) in later {
            let count = versions.entry(v).or_default();
            *count -= n;
        }
        versions.retain(|_, n| *n > 0);
        assert_eq!(
            versions.keys().collect::<Vec<_>>(),
            [version],
            "after rollout to {version}: {versions:?}; {said}"
        );
    }
    eprintln!("zero downtime: {said}; latency {}", report.latency());
}

#[test]
fn the_rust_example_reloads_five_times_under_load_without_a_failed_request() {
    reloads_under_load_fail_no_request(vec![rust_example("http_worker")]);
}

#[test]
fn the_python_example_reloads_five_times_under_load_without_a_failed_request() {
    let script = format!("{}/examples/web-worker.py", env!("CARGO_MANIFEST_DIR"));
    reloads_under_load_fail_no_request(vec![python3().to_string(), script]);
}

#[test]
fn an_old_worker_finishes_a_slow_request_in_hand_while_its_replacement_serves() {
    let sandbox = Sandbox::new();
    let config = sandbox.join("pool.toml");
    let worker = rust_example("http_worker");
    let text = |version: u32| {
        format!(
            "command = [{:?}]\nworkers = 1\nlisten = [\"127.0.0.1:0\"]\nready = \"report\"\n\
             [env]\nAPP_VERSION = \"{version}\"\n",
            worker
        )
    };
    std::fs::write(&config, text(1)).unwrap();
    let master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    master.wait_workers(1);
    let mut addr = None;
    master.wait_until("a first answer", || {
        addr = master.stderr().lines().find_map(|l| {
            let rest = l.split_once("listening on ")?.1;
            rest.split(' ').next()?.parse::<SocketAddr>().ok()
        });
        addr.is_some_and(|a| get(a, "/").is_ok())
    });
    let addr = addr.unwrap();
    // A request that takes 2 s, in the hands of the only worker.
    let slow = std::thread::spawn(move || get(addr, "/sleep/2"));
    master.wait_until("the slow request on the board", || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_prefork"))
            .args(["status", "-d"])
            .arg(sandbox.board())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("GET /sleep/2")
    });
    std::fs::write(&config, text(2)).unwrap();
    master.signal(Signal::SIGHUP);
    // The new worker answers while the old one still serves the slow one.
    master.wait_until("an answer from version 2", || {
        get(addr, "/").is_ok_and(|r| r.version.as_deref() == Some("2"))
    });
    let slow = slow.join().unwrap().expect("the slow request is answered");
    assert_eq!(slow.version.as_deref(), Some("1"));
    master.wait_until("the rollout", || completed(&master) == 1);
}
