//! `worker_output = "prefix"` through the real binary (issue 14): each line
//! a worker writes comes out on the master's stream of the same name as
//! `[slot S pid P] LINE`, or as a JSON object with `--log-format json`;
//! long lines are split, a last partial line is flushed, an unread stdout
//! drops whole lines and stops nothing, and dead workers' pipes are closed.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{
    counts_dropped_output, eventually, open_fds, signal, small_pipe, Running, Sandbox,
};

/// A worker that says who it is on both streams, then idles.
const HELLO: &str = r#"echo "out slot=$PREFORK_WORKER_SLOT pid=$$"
echo "err slot=$PREFORK_WORKER_SLOT pid=$$" >&2
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#;

#[test]
fn lines_of_two_workers_on_both_streams_carry_their_slot_and_pid() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script("hello.sh", HELLO);
    let args = ["-w", "2", "--worker-output", "prefix", "--", "sh", &worker];
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("2 ready workers", || sandbox.pids("ready").len() == 2);
    let spawned = master.spawned();
    assert_eq!(spawned.len(), 2, "{}", master.report("two spawns"));
    for (pid, slot) in spawned {
        let out = format!("[slot {slot} pid {pid}] out slot={slot} pid={pid}\n");
        let err = format!("[slot {slot} pid {pid}] err slot={slot} pid={pid}\n");
        master.wait_until("both lines", || {
            master.stdout().contains(&out) && master.stderr().contains(&err)
        });
        // Each on its own stream only.
        assert!(
            !master.stderr().contains(&out),
            "{}",
            master.report("out on stderr")
        );
        assert!(
            !master.stdout().contains(&err),
            "{}",
            master.report("err on stdout")
        );
    }
}

#[test]
fn a_partial_last_line_is_flushed_with_a_newline() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script("partial.sh", "printf 'no newline from %s' $$; exit 0");
    let args = ["-w", "1", "--worker-output", "prefix", "--", "sh", &worker];
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("a flushed partial line", || {
        master.spawned().iter().any(|(pid, _)| {
            master
                .stdout()
                .contains(&format!("[slot 0 pid {pid}] no newline from {pid}\n"))
        })
    });
}

#[test]
fn a_40_kib_line_is_split_into_16_kib_pieces() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script(
        "long.sh",
        r#"head -c 40960 /dev/zero | tr '\0' x; echo
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let args = ["-w", "1", "--worker-output", "prefix", "--", "sh", &worker];
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("the ready worker", || sandbox.pids("ready").len() == 1);
    let pid = *sandbox.pids("ready").first().unwrap();
    let prefix = format!("[slot 0 pid {pid}] ");
    let mut pieces = Vec::new();
    master.wait_until("three pieces", || {
        pieces = master
            .stdout()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::len))
            .collect();
        pieces.len() >= 3
    });
    assert_eq!(pieces, vec![16384, 16384, 8192]);
}

#[test]
fn json_logs_make_each_relayed_line_an_object() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script("hello.sh", HELLO);
    let args = [
        "-w",
        "1",
        "--worker-output",
        "prefix",
        "--log-format",
        "json",
        "--",
        "sh",
        &worker,
    ];
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("the ready worker", || sandbox.pids("ready").len() == 1);
    let pid = *sandbox.pids("ready").first().unwrap();
    let find = |text: String, stream: &str| -> Option<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "output" && v["stream"] == stream)
    };
    let mut out = None;
    let mut err = None;
    master.wait_until("an object on each stream", || {
        out = find(master.stdout(), "stdout");
        err = find(master.stderr(), "stderr");
        out.is_some() && err.is_some()
    });
    for (v, what) in [(out.unwrap(), "out"), (err.unwrap(), "err")] {
        assert_eq!(v["level"], "info");
        assert_eq!(v["slot"], 0);
        assert_eq!(v["pid"], pid);
        assert_eq!(v["line"], format!("{what} slot=0 pid={pid}"));
        let time = v["time"].as_str().expect("a time");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
}

#[test]
fn dead_workers_pipes_are_closed_after_50_respawns() {
    let sandbox = Sandbox::new();
    // Chatty; leaves a process in its group, holding its output for a
    // moment after it exits, and one out of it (setsid) holding it for
    // longer than the test; exits at once unless `calm` exists.
    let worker = sandbox.script(
        "chatty.sh",
        r#"yes "chatty $$" | head -n 2000
sleep 0.2 &
setsid sleep 60 &
if [ -e "$DIR/calm" ]; then
    echo $$ >> "$DIR/ready"
    while :; do sleep 1 & wait $!; done
fi
exit 0"#,
    );
    std::fs::write(sandbox.path().join("calm"), "").unwrap();
    let args = [
        "-w",
        "1",
        "--min-uptime",
        "0",
        "--worker-output",
        "prefix",
        "--",
        "sh",
        &worker,
    ];
    let master = Running::start(&mut sandbox.prefork(&args));
    master.wait_until("the calm worker", || sandbox.pids("ready").len() == 1);
    // Its leftovers gone, the master holds what it holds with one worker.
    std::thread::sleep(Duration::from_millis(500));
    let before = open_fds(master.pid()).len();
    std::fs::remove_file(sandbox.path().join("calm")).unwrap();
    let first = *sandbox.pids("ready").first().unwrap();
    signal(first, Signal::SIGKILL);
    master.wait_until("50 respawns", || master.spawned().len() >= 51);
    std::fs::write(sandbox.path().join("calm"), "").unwrap();
    master.wait_until("a calm worker again", || sandbox.pids("ready").len() == 2);
    let mut now = 0;
    let settled = eventually(|| {
        now = open_fds(master.pid()).len();
        now == before
    });
    assert!(
        settled,
        "{}",
        master.report(&format!(
            "{before} descriptors before, {now} after: {:?}",
            open_fds(master.pid())
        ))
    );
    assert!(master.stdout().contains("chatty "));
}

#[test]
fn an_unread_stdout_drops_relayed_lines_counts_them_and_stops_no_respawn() {
    let sandbox = Sandbox::new();
    // 2 x 500,000 lines of 13 bytes or so: more than the pipe and the
    // master's 8 MiB buffer for standard output.
    let worker = sandbox.script(
        "flood.sh",
        r#"yes "flood $$" | head -n 500000
echo $$ >> "$DIR/ready"
while :; do sleep 1 & wait $!; done"#,
    );
    let (out_read, out_write) = small_pipe();
    let args = [
        "-w",
        "2",
        "--worker-output",
        "prefix",
        "--graceful-timeout",
        "2s",
        "--",
        "sh",
        &worker,
    ];
    let master = Running::start_with_output(sandbox.prefork(&args), out_write, Stdio::piped());
    // Both floods were read whole by the master: nobody read its stdout.
    master.wait_until("2 workers past their flood", || {
        sandbox.pids("ready").len() == 2
    });
    let victim = *sandbox.pids("ready").first().unwrap();
    let killed = Instant::now();
    signal(victim, Signal::SIGKILL);
    master.wait_until("the replacement", || {
        master.stderr().matches("spawned worker").count() >= 3
    });
    let respawn = killed.elapsed();
    assert!(
        respawn < Duration::from_secs(5),
        "{}",
        master.report(&format!("respawned after {respawn:?}"))
    );
    // Read now: the notice of what was lost, then a board counting it.
    let out = Arc::new(Mutex::new(Vec::new()));
    {
        let out = Arc::clone(&out);
        let mut read = std::fs::File::from(out_read);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            while let Ok(n @ 1..) = read.read(&mut chunk) {
                out.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
    }
    let text = || String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    master.wait_until("the dropped-lines notice", || {
        text().contains("line(s) of output to standard output were dropped")
    });
    signal(master.pid(), Signal::SIGUSR1);
    master.wait_until("a board counting the dropped lines", || {
        counts_dropped_output(&text())
    });
    // Every relayed line that came through is whole. (Only lines read to
    // their newline: the reader thread may be in the middle of a line the
    // master is still writing.)
    let text = text();
    let ended = text.split_inclusive('\n').filter(|l| l.ends_with('\n'));
    for line in ended.filter(|l| l.starts_with("[slot ")) {
        assert!(line.contains("] flood "), "a line cut short: {line:?}");
    }
}

#[test]
fn changing_worker_output_on_sighup_rolls_the_workers_over() {
    let sandbox = Sandbox::new();
    let worker = sandbox.script("hello.sh", HELLO);
    let config = sandbox.join("prefork.toml");
    let write = |mode: &str| {
        let text = format!(
            "workers = 1\nready = \"immediate\"\nworker_output = \"{mode}\"\ncommand = [\"sh\", \"{worker}\"]\n"
        );
        std::fs::write(&config, text).unwrap();
    };
    write("inherit");
    let master = Running::start(&mut sandbox.prefork(&["-c", &config]));
    master.wait_until("the ready worker", || sandbox.pids("ready").len() == 1);
    let first = *sandbox.pids("ready").first().unwrap();
    master.wait_until("its unprefixed line", || {
        master
            .stdout()
            .contains(&format!("out slot=0 pid={first}\n"))
    });
    assert!(!master.stdout().contains("[slot "));
    write("prefix");
    master.signal(Signal::SIGHUP);
    master.wait_until("a replacement", || sandbox.pids("ready").len() == 2);
    let second = *sandbox.pids("ready").iter().find(|&&p| p != first).unwrap();
    master.wait_until("its prefixed line", || {
        master
            .stdout()
            .contains(&format!("[slot 0 pid {second}] out slot=0 pid={second}\n"))
    });
    master.wait_until("the first worker retired", || {
        master.end_of(first).is_some()
    });
}
