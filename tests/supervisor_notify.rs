//! systemd's notification protocol, against a real `AF_UNIX` datagram
//! socket the test binds as `NOTIFY_SOCKET`: every message, in order,
//! across a start, a reload, a SIGKILLed worker and a stop; the watchdog
//! only while the loop turns; the abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{environ, signal, Running, Sandbox};

/// What the socket received, with when.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(Instant, String)>>>);

impl Received {
    fn listen(socket: UnixDatagram) -> Received {
        let received = Received::default();
        let into = received.clone();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with the test: the socket's owner drops `into`'s twin.
            while Arc::strong_count(&into.0) > 1 {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    into.0.lock().unwrap().push((Instant::now(), text));
                }
            }
        });
        received
    }

    /// The messages but the watchdog's, in order.
    fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .filter(|m| m != "WATCHDOG=1")
            .collect()
    }

    fn watchdogs(&self) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m == "WATCHDOG=1")
            .map(|(t, _)| *t)
            .collect()
    }

    fn has(&self, prefix: &str) -> usize {
        self.messages()
            .iter()
            .filter(|m| m.starts_with(prefix))
            .count()
    }
}

fn write_config(path: &str, version: u32) {
    let text = format!(
        "workers = 2\nready = \"report\"\ngraceful_timeout = \"5s\"\n[env]\nAPP_VERSION = \"{version}\"\n"
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_service_manager_hears_start_reload_restart_and_stop_in_order() {
    let sandbox = Sandbox::new();
    let path = sandbox.join("notify.sock");
    let received = Received::listen(UnixDatagram::bind(&path).unwrap());
    let config = sandbox.join("pool.toml");
    write_config(&config, 1);
    let worker = sandbox.status_worker(&[]);
    let mut cmd = sandbox.prefork(&["-c", &config, "--"]);
    cmd.args(&worker)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000");
    let mut master = Running::start(&mut cmd);
    master.wait_until("READY=1", || received.has("READY=1") == 1);
    let first = master.wait_workers(2);
    // (A STATUS= may come first, while the workers start.)
    let messages = received.messages();
    let ready = messages.iter().find(|m| m.starts_with("READY=1")).unwrap();
    assert_eq!(ready, "READY=1\nSTATUS=2/2 workers, 0 stuck, 0 restarts");
    // Not passed on to the workers.
    for pid in &first {
        let env = environ(*pid);
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            assert!(
                !env.contains_key(var),
                "{var} in worker {pid}'s environment"
            );
        }
    }

    // A reload: RELOADING=1 at once, READY=1 once the rollout is over.
    write_config(&config, 2);
    master.signal(Signal::SIGHUP);
    master.wait_until("the rollout", || {
        master.stderr().contains("rolling restart complete")
    });
    master.wait_until("READY=1 after the reload", || received.has("READY=1") == 2);
    let messages = received.messages();
    let reloading = messages
        .iter()
        .position(|m| m.starts_with("RELOADING=1\nMONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {messages:?}"));
    let usec: u64 = messages[reloading]
        .rsplit('=')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(usec > 0);
    let ready_again = messages
        .iter()
        .rposition(|m| m.starts_with("READY=1"))
        .unwrap();
    assert!(reloading < ready_again, "{messages:?}");

    // A worker SIGKILLed: the summary's restarts change.
    let workers = master.wait_workers(2);
    signal(workers[0], Signal::SIGKILL);
    master.wait_until("STATUS with a restart more", || {
        received
            .messages()
            .iter()
            .any(|m| m == "STATUS=2/2 workers, 0 stuck, 3 restarts")
    });

    // The watchdog beats every 100 ms (half of WATCHDOG_USEC)...
    master.wait_until("watchdogs", || received.watchdogs().len() >= 5);
    // ...and stops while the loop does not turn.
    master.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let resumed = Instant::now();
    master.signal(Signal::SIGCONT);
    let before = received.watchdogs().len();
    master.wait_until("the watchdog again", || received.watchdogs().len() > before);
    let silent = received
        .watchdogs()
        .iter()
        .filter(|t| **t > stopped + Duration::from_millis(50) && **t < resumed)
        .count();
    assert_eq!(silent, 0, "WATCHDOG=1 from a stopped loop");

    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    master.wait_until("STOPPING=1", || received.has("STOPPING=1") == 1);
    let messages = received.messages();
    let stopping = messages.iter().position(|m| m == "STOPPING=1").unwrap();
    assert!(ready_again < stopping, "{messages:?}");
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    let sandbox = Sandbox::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("prefork-test-{}-{nanos}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let received = Received::listen(UnixDatagram::bind_addr(&address).unwrap());
    let mut cmd = sandbox.prefork(&["-w", "1", "--ready", "immediate", "--", "sleep", "1000"]);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let master = Running::start(&mut cmd);
    master.wait_until("READY=1", || received.has("READY=1") == 1);
    // No watchdog asked for: none sent.
    assert!(received.watchdogs().is_empty());
}
