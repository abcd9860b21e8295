//! Real third-party servers under prefork, started as their users start
//! them, each serving a fixture app of `tests/fixtures/` on the socket the
//! master listens on:
//!
//! - gunicorn 20.1 (sync worker) reads `LISTEN_FDS` when `LISTEN_PID` is its
//!   own pid, which prefork sets to the worker's pid;
//! - Starman, through `plackup -s Starman`, which switches to
//!   Net::Server::SS::PreFork when `SERVER_STARTER_PORT` is set
//!   (Plack/Handler/Starman.pm) and then takes its socket from there.
//!
//! Each test keeps an HTTP load on the pool ([`crate::httpload`]), rewrites
//! the config file with a new `[env] APP_VERSION` and sends SIGHUP: not one
//! request may fail, and every request sent after `rolling restart complete`
//! must be answered by the new version. Neither server writes a status, so
//! the workers are ready after a delay.
//!
//! Needs the Debian packages gunicorn, starman and
//! libnet-server-ss-prefork-perl (`.ci/run` installs them).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{alive, Running, Sandbox};
use crate::httpload::{self, Load, Plan};

/// The fixture apps' directory.
fn fixtures() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .to_str()
        .expect("UTF-8 path")
        .to_string()
}

/// A rollout of two workers that start a Python or Perl interpreter each
/// and drain for up to a second takes a few seconds; a loaded CI machine
/// gets several times that.
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a test needs installed, and where it comes from.
struct Needs {
    /// A command to run, with its arguments, that succeeds when it is there.
    check: &'static [&'static str],
    package: &'static str,
}

/// Fails the test, naming the Debian package, when `needs` is not met.
fn require(needs: &[Needs]) {
    for need in needs {
        let status = {
            let _forking = crate::util::fork_lock();
            Command::new(need.check[0])
                .args(&need.check[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        assert!(
            status.is_ok_and(|s| s.success()),
            "`{}` failed: this test runs a third-party server; install it with \
             `apt-get install {}` (Debian), as .ci/run does",
            need.check.join(" "),
            need.package
        );
    }
}

/// A pool of `server` workers reloaded under load, as the module's header
/// says. `stop_signal` is the server's graceful stop.
fn reload_under_load(server: &[String], stop_signal: &str) {
    let sandbox = Sandbox::new();
    let config = sandbox.join("prefork.toml");
    let write_config = |version: &str| {
        let command: Vec<String> = server.iter().map(|a| format!("{a:?}")).collect();
        let text = format!(
            r#"listen = ["127.0.0.1:0"]
workers = 2
# Neither server writes a status: a worker counts as ready this long after
# its exec, time enough to load the app and accept.
ready = "1s"
stop_signal = "{stop_signal}"
graceful_timeout = "20s"
command = [{}]

[env]
APP_VERSION = "{version}"
"#,
            command.join(", ")
        );
        std::fs::write(&config, text).expect("write the config file");
    };
    write_config("v1");
    let master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    let addr = listening_on(&master);
    master.wait_workers(2);
    wait_for(&master, "a first answer from the workers", || {
        httpload::get(addr, "/").is_ok_and(|r| r.status == 200)
    });

    let load = Load::start(
        addr,
        Plan {
            fresh: 2,
            keepalive: 2,
            rate_per_thread: Some(100),
            path: "/",
        },
    );
    let served = load.served();
    wait_for(&master, "50 requests served before the reload", || {
        load.served() >= served + 50
    });

    let old = master.workers();
    write_config("v2");
    let hup = Instant::now();
    master.signal(Signal::SIGHUP);
    wait_for(&master, "`rolling restart complete`", || {
        master.stderr().contains("rolling restart complete")
    });
    let complete = Instant::now();
    let served = load.served();
    wait_for(&master, "50 requests served after the reload", || {
        load.served() >= served + 50
    });
    let report = load.stop();
    eprintln!(
        "{}: reload {:.2} s; {report}",
        server[0],
        (complete - hup).as_secs_f64()
    );

    let context = || master.report(&format!("load: {report}"));
    assert_eq!(report.failed, 0, "{}", context());
    let before = report.versions_from(Duration::ZERO);
    assert!(before.contains_key("v1"), "{before:?}\n{}", context());
    let after = report.versions_from(report.at(complete));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        ["v2"],
        "answers to requests sent after the rollout: {after:?}\n{}",
        context()
    );
    for pid in old {
        assert!(!alive(pid), "old worker {pid} still runs\n{}", context());
    }
}

/// The address of the master's `listening on ADDR` log line.
fn listening_on(master: &Running) -> SocketAddr {
    let mut addr = None;
    wait_for(master, "a `listening on` line", || {
        addr = master.stderr().lines().find_map(|line| {
            let rest = &line[line.find("listening on ")? + "listening on ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        });
        addr.is_some()
    });
    addr.expect("found")
}

/// Polls `done` every 20 ms for up to [`ROLLOUT_TIMEOUT`]; on timeout,
/// fails with the master's output.
fn wait_for(master: &Running, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + ROLLOUT_TIMEOUT;
    while !done() {
        if Instant::now() >= deadline {
            panic!(
                "{}",
                master.report(&format!("timed out waiting for {what}"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gunicorn_reloads_under_load_without_a_failed_request() {
    require(&[Needs {
        check: &["gunicorn", "--version"],
        package: "gunicorn",
    }]);
    let server = [
        "gunicorn",
        "--workers",
        "1",
        "--chdir",
        &fixtures(),
        // Its graceful stop waits this long for a request in progress.
        "--graceful-timeout",
        "10",
        "wsgi_app:app",
    ];
    let server: Vec<String> = server.iter().map(|s| s.to_string()).collect();
    // gunicorn's arbiter stops gracefully on TERM (its workers finish their
    // request); QUIT and INT are its quick stop.
    reload_under_load(&server, "TERM");
}

#[test]
fn starman_reloads_under_load_without_a_failed_request() {
    require(&[
        Needs {
            check: &["plackup", "--version"],
            package: "starman",
        },
        Needs {
            check: &["perl", "-MStarman", "-MNet::Server::SS::PreFork", "-e1"],
            package: "starman libnet-server-ss-prefork-perl",
        },
    ]);
    let app = format!("{}/app.psgi", fixtures());
    // `-E deployment`: no access log nor Lint middleware.
    let server = [
        "plackup",
        "-s",
        "Starman",
        "-E",
        "deployment",
        "--workers",
        "1",
        &app,
    ];
    let server: Vec<String> = server.iter().map(|s| s.to_string()).collect();
    // Starman's master stops gracefully on QUIT (it sends its workers HUP:
    // each finishes its connection, Starman::Server::server_close); TERM and
    // INT stop them at once. A Net::Server::PreFork child itself exits on
    // QUIT at once (run_child), possibly with a request in hand: which is
    // why prefork sends the stop signal to the worker alone (here Starman's
    // master), never to its whole process group.
    reload_under_load(&server, "QUIT");
}
