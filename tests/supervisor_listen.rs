//! Listening sockets: bound once by the master and handed to every worker
//! with systemd's and Server::Starter's variables; inherited through
//! socket activation; changed by a reload; refused, with the address
//! named, when they cannot be bound.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{eventually, python3, Running, Sandbox};

/// A worker that writes what it was given (its variables, what its
/// descriptors 3.. are) to `info_<pid>.json`, reports `idle`, then answers
/// every connection on descriptor 3 with its pid.
const WORKER: &str = r#"
import json, os, socket, subprocess, sys
n = int(os.environ.get("LISTEN_FDS", "0"))
keys = ("LISTEN_", "SERVER_STARTER_", "PREFORK_STATUS_FD", "APP_")
info = {
    "pid": os.getpid(),
    "env": {k: v for k, v in os.environ.items() if k.startswith(keys)},
    "fds": [],
}
for fd in range(3, 3 + n):
    s = socket.socket(fileno=os.dup(fd))
    info["fds"].append([fd, str(s.getsockname()), s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)])
    s.close()
sfd = os.environ["PREFORK_STATUS_FD"]
info["status_file"] = os.readlink("/proc/self/fd/" + sfd)
path = os.path.join(os.environ["DIR"], "info_%d.json" % os.getpid())
with open(path + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(path + ".tmp", path)
subprocess.run([os.environ["PREFORK_BIN"], "report", "idle"], check=True, pass_fds=[int(sfd)])
if n == 0:
    while True:
        os.pause()
servers = [socket.socket(fileno=fd) for fd in range(3, 3 + n)]
import selectors
sel = selectors.DefaultSelector()
for s in servers:
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        c, _ = key.fileobj.accept()
        # Read what the client sent: closing with unread bytes would reset.
        c.recv(16)
        c.sendall(b"%d\n" % os.getpid())
        c.close()
"#;

fn worker(sandbox: &Sandbox) -> String {
    let path = sandbox.join("worker.py");
    std::fs::write(&path, WORKER).unwrap();
    sandbox.script("worker.sh", &format!("exec {} {path}", python3()))
}

/// What each worker wrote of itself, by pid.
fn infos(sandbox: &Sandbox) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(sandbox.path()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("info_") && name.ends_with(".json") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            found.push(serde_json::from_str(&text).unwrap());
        }
    }
    found
}

fn info_of(sandbox: &Sandbox, pid: i32) -> Option<serde_json::Value> {
    infos(sandbox)
        .into_iter()
        .find(|i| i["pid"].as_i64() == Some(pid as i64))
}

/// The address of the `listening on ADDR (...)` line for descriptor `fd`.
fn listening(master: &Running, fd: i32) -> Option<String> {
    let tail = format!("descriptor {fd} in workers)");
    master.stderr().lines().find_map(|line| {
        let (_, rest) = line.split_once("listening on ")?;
        rest.contains(&tail)
            .then(|| rest.split(' ').next().unwrap().to_string())
    })
}

fn wait_listening(master: &Running, fd: i32) -> String {
    let mut addr = None;
    master.wait_until(&format!("a socket at descriptor {fd}"), || {
        addr = listening(master, fd);
        addr.is_some()
    });
    addr.unwrap()
}

/// What the worker that takes a connection to `addr` answers: its pid.
fn ask(addr: &str) -> std::io::Result<i32> {
    let mut answer = String::new();
    if let Some(path) = addr.strip_prefix("unix:") {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"hello")?;
        s.read_to_string(&mut answer)?;
    } else {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"hello")?;
        s.read_to_string(&mut answer)?;
    }
    answer
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other(format!("answer {answer:?}")))
}

#[test]
fn workers_get_the_sockets_in_order_with_systemd_and_server_starter_variables() {
    let sandbox = Sandbox::new();
    let unix = sandbox.join("app.sock");
    let unix_addr = format!("unix:{unix}");
    let script = worker(&sandbox);
    let mut cmd = sandbox.prefork(&[
        "-w",
        "2",
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &unix_addr,
        "--socket-mode",
        "0640",
        "--ready",
        "report",
        "--",
        "sh",
        &script,
    ]);
    let mut master = Running::start(&mut cmd);
    let tcp = wait_listening(&master, 3);
    assert!(!tcp.ends_with(":0"), "the port bound, not 0: {tcp}");
    assert_eq!(wait_listening(&master, 4), unix_addr);
    let workers = master.wait_workers(2);
    master.wait_until("both workers' reports", || infos(&sandbox).len() == 2);

    for pid in &workers {
        let info = info_of(&sandbox, *pid).expect("its info");
        let env = &info["env"];
        assert_eq!(env["LISTEN_FDS"], "2", "{info}");
        // Its own pid, set after the fork.
        assert_eq!(env["LISTEN_PID"], pid.to_string(), "{info}");
        let names = env["LISTEN_FDNAMES"].as_str().unwrap();
        assert_eq!(names.split(':').count(), 2, "{info}");
        assert_eq!(
            env["SERVER_STARTER_PORT"],
            format!("{tcp}=3;{unix}=4"),
            "{info}"
        );
        assert_eq!(env["SERVER_STARTER_GENERATION"], "1", "{info}");
        assert_eq!(env["PREFORK_STATUS_FD"], "5", "{info}");
        let fds = info["fds"].as_array().unwrap();
        assert_eq!(fds[0][1], tcp_tuple(&tcp), "{info}");
        assert_eq!(fds[1][1], unix, "{info}");
        assert!(fds.iter().all(|fd| fd[2] == 1), "listening: {info}");
        let status_file = info["status_file"].as_str().unwrap();
        assert!(status_file.ends_with(&format!("/status_{pid}")), "{info}");
    }
    // Both sockets are served, by the workers.
    assert!(workers.contains(&ask(&tcp).unwrap()));
    assert!(workers.contains(&ask(&unix_addr).unwrap()));
    let mode = std::fs::metadata(&unix).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);

    // `prefork status` says where the pool listens.
    let board = sandbox.board();
    let status = Command::new(env!("CARGO_BIN_EXE_prefork"))
        .args(["status", "-d"])
        .arg(&board)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("listening on {tcp} {unix_addr}")),
        "{text}"
    );

    // The socket file goes with the master.
    master.signal(Signal::SIGTERM);
    assert!(master.wait_exit().success());
    assert!(!std::path::Path::new(&unix).exists());
}

/// `127.0.0.1:8080` as Python's getsockname() prints it.
fn tcp_tuple(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    format!("('{host}', {port})")
}

/// Runs a master expected to refuse its configuration: its exit code and
/// stderr, after checking that it started no worker.
fn refused(sandbox: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let mut all = args.to_vec();
    all.extend(["--", "sleep", "1000"]);
    let mut master = Running::start(&mut sandbox.prefork(&all));
    let code = master.wait_exit().code();
    let stderr = master.stderr();
    assert!(master.spawned().is_empty(), "{stderr}");
    assert!(
        sandbox.board_files().is_empty(),
        "{:?}",
        sandbox.board_files()
    );
    (code, stderr)
}

#[test]
fn an_address_that_cannot_be_listened_on_is_exit_2_naming_it_with_nothing_started() {
    let sandbox = Sandbox::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let live = sandbox.join("live.sock");
    let _live = UnixListener::bind(&live).unwrap();
    let file = sandbox.join("file.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let long = format!("unix:/tmp/{}", "x".repeat(120));
    let cases = [
        (taken.clone(), "address already in use"),
        (
            format!("unix:{live}"),
            "another process accepts connections",
        ),
        (format!("unix:{file}"), "not a socket"),
        (long.clone(), "at most 107"),
        ("unix:/nonexistent-dir/app.sock".into(), "does not exist"),
    ];
    for (addr, why) in cases {
        let (code, stderr) = refused(&sandbox, &["--listen", &addr]);
        assert_eq!(code, Some(2), "{addr}: {stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}: ")) && stderr.contains(why),
            "{addr}: {stderr}"
        );
    }
    // The file that is not a socket is left alone.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a socket");
    // Unparsable, on the command line and in a file.
    let (code, stderr) = refused(&sandbox, &["--listen", "localhost:http"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("\"localhost:http\""), "{stderr}");
    let config = sandbox.join("bad.toml");
    std::fs::write(
        &config,
        "command = [\"sleep\", \"9\"]\nlisten = [\"8080\"]\n",
    )
    .unwrap();
    let (code, stderr) = refused(&sandbox, &["-c", &config]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.toml:2") && stderr.contains("\"8080\""),
        "{stderr}"
    );
}

#[test]
fn a_port_below_1024_is_refused_to_a_master_without_the_privilege() {
    // As root (CI), the master runs as nobody; the lowest port such a user
    // may not bind is just below the kernel's unprivileged start.
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    assert!(
        start > 1,
        "net.ipv4.ip_unprivileged_port_start is {start}: every port is open to everyone here, \
         so this refusal cannot happen"
    );
    let port = start - 1;
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = sandbox.prefork(&["--listen", &addr, "--", "sleep", "1000"]);
    if nix::unistd::geteuid().is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let mut master = Running::start(&mut cmd);
    let code = master.wait_exit().code();
    let stderr = master.stderr();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: permission denied"))
            && stderr.contains("CAP_NET_BIND_SERVICE"),
        "{stderr}"
    );
    assert!(master.spawned().is_empty(), "{stderr}");
}

#[test]
fn a_stale_unix_socket_left_by_a_dead_master_is_replaced() {
    let sandbox = Sandbox::new();
    let path = sandbox.join("stale.sock");
    // Bound and closed: the file stays, and nobody accepts on it.
    drop(UnixListener::bind(&path).unwrap());
    assert!(UnixStream::connect(&path).is_err());
    let addr = format!("unix:{path}");
    let script = worker(&sandbox);
    let master =
        Running::start(&mut sandbox.prefork(&["-w", "1", "--listen", &addr, "--", "sh", &script]));
    let workers = master.wait_workers(1);
    assert!(master.stderr().contains("removing the stale socket"));
    let mut answer = None;
    master.wait_until("an answer on the replaced socket", || {
        answer = ask(&addr).ok();
        answer.is_some()
    });
    assert_eq!(answer, Some(workers[0]));
}

#[test]
fn sockets_from_socket_activation_are_adopted_and_passed_on() {
    let sandbox = Sandbox::new();
    let script = worker(&sandbox);
    // A free port for systemd-socket-activate to bind.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let board = sandbox.board();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.env("DIR", sandbox.path())
        .args(["-l", &addr, "--fdname=web", env!("CARGO_BIN_EXE_prefork")])
        .arg("--scoreboard")
        .arg(&board)
        .args(["-w", "2", "--ready", "report", "--", "sh", &script]);
    let master = Running::start(&mut cmd);
    // It waits for a first connection before it starts prefork: this one,
    // queued meanwhile, is answered by a worker.
    let mut first = None;
    assert!(
        eventually(|| {
            first = TcpStream::connect(&addr).ok();
            first.is_some()
        }),
        "{}",
        master.report("systemd-socket-activate does not listen")
    );
    let mut answer = String::new();
    let mut first = first.unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    first.write_all(b"hello").unwrap();
    first.read_to_string(&mut answer).unwrap();
    let workers = master.wait_workers(2);
    let pid: i32 = answer.trim().parse().unwrap();
    assert!(workers.contains(&pid), "{answer}");
    let line = listening(&master, 3).unwrap();
    assert_eq!(line, addr);
    assert!(master.stderr().contains("inherited from socket activation"));
    master.wait_until("both workers' reports", || infos(&sandbox).len() == 2);
    for pid in &workers {
        let info = info_of(&sandbox, *pid).unwrap();
        // Passed on as the worker's own, not as prefork received them.
        assert_eq!(info["env"]["LISTEN_PID"], pid.to_string(), "{info}");
        assert_eq!(info["env"]["LISTEN_FDS"], "1", "{info}");
        assert_eq!(info["env"]["LISTEN_FDNAMES"], "web", "{info}");
        assert_eq!(info["env"]["PREFORK_STATUS_FD"], "4", "{info}");
    }
}

fn write_config(path: &str, listen: &[&str], version: u32) {
    let listen: Vec<String> = listen.iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        "workers = 2\nready = \"report\"\nlisten = [{}]\n[env]\nAPP_VERSION = \"{version}\"\n",
        listen.join(", ")
    );
    std::fs::write(path, text).unwrap();
}

/// The count of `rolling restart complete` lines.
fn rollouts(master: &Running) -> usize {
    master.stderr().matches("rolling restart complete").count()
}

#[test]
fn a_reload_binds_new_addresses_first_and_closes_those_no_longer_listed() {
    let sandbox = Sandbox::new();
    let script = worker(&sandbox);
    let config = sandbox.join("pool.toml");
    let unix = format!("unix:{}", sandbox.join("app.sock"));
    write_config(&config, &["127.0.0.1:0"], 1);
    let master = Running::start(&mut sandbox.prefork(&["-c", &config, "--", "sh", &script]));
    let tcp = wait_listening(&master, 3);
    master.wait_workers(2);

    // A second address: the first keeps its socket (and its port).
    write_config(&config, &["127.0.0.1:0", &unix], 2);
    master.signal(Signal::SIGHUP);
    master.wait_until("the first rollout", || rollouts(&master) == 1);
    assert_eq!(listening(&master, 4).as_deref(), Some(unix.as_str()));
    let workers = master.wait_workers(2);
    for pid in &workers {
        let info = info_of(&sandbox, *pid).unwrap();
        assert_eq!(info["env"]["SERVER_STARTER_GENERATION"], "2", "{info}");
        assert_eq!(info["env"]["LISTEN_FDS"], "2", "{info}");
    }
    assert!(workers.contains(&ask(&tcp).unwrap()));
    assert!(workers.contains(&ask(&unix).unwrap()));

    // An address that cannot be bound: nothing changes.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    write_config(&config, &[&taken], 3);
    master.signal(Signal::SIGHUP);
    master.wait_until("the refusal", || {
        master
            .stderr()
            .contains(&format!("not reloaded; the workers keep running as they are: cannot listen on {taken}: address already in use"))
    });
    assert_eq!(master.workers(), workers);
    assert!(workers.contains(&ask(&tcp).unwrap()));

    // The TCP address dropped: once the last worker holding it is gone,
    // it refuses connections.
    write_config(&config, &[&unix], 4);
    master.signal(Signal::SIGHUP);
    master.wait_until("the second rollout", || rollouts(&master) == 2);
    let workers = master.wait_workers(2);
    assert!(workers.contains(&ask(&unix).unwrap()));
    master.wait_until("the dropped address to close", || {
        matches!(TcpStream::connect(&tcp), Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    for pid in &workers {
        let info = info_of(&sandbox, *pid).unwrap();
        assert_eq!(info["env"]["LISTEN_FDS"], "1", "{info}");
        assert_eq!(info["env"]["SERVER_STARTER_GENERATION"], "3", "{info}");
    }
}

#[test]
fn socket_activation_with_a_descriptor_that_is_not_a_listening_socket_is_exit_2() {
    let sandbox = Sandbox::new();
    // LISTEN_PID must be prefork's own: the shell's, which execs it.
    let script = format!(
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec {} --scoreboard {} -- sleep 1000 3</dev/null",
        env!("CARGO_BIN_EXE_prefork"),
        sandbox.board().display()
    );
    let mut master = Running::start(Command::new("sh").args(["-c", &script]));
    let code = master.wait_exit().code();
    let stderr = master.stderr();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "socket activation (LISTEN_FDS=1): descriptor 3 is not a listening stream socket"
        ),
        "{stderr}"
    );
    assert!(master.spawned().is_empty(), "{stderr}");
}
