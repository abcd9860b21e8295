//! Byte-for-byte compatibility with the real Parallel::Scoreboard, both ways:
//! Perl workers and a Rust reader, Rust workers and a Perl reader, and each
//! side removing the other's dead workers' files.
//!
//! Perl finds the module as its users would: installed, or through PERL5LIB.
//! Without it these tests fail (not skip), saying how to get it
//! ([`require_parallel_scoreboard`]).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Stdio};

use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use prefork::scoreboard::Scoreboard;

use crate::util::{
    block_until_killed, deadline, fork_child, fork_lock, perl, require_parallel_scoreboard,
    status_path, tempdir, wait_until, ChildGuard,
};

/// A Perl worker: updates its status (read from a file: it may be binary,
/// and too long for a command line) and keeps its file locked until its
/// stdin closes (the test ends, or dies) or it is killed.
const PERL_WORKER: &str = r#"
use Parallel::Scoreboard;
open my $in, '<:raw', $ARGV[1] or die "$ARGV[1]: $!";
my $status = do { local $/; <$in> } // '';
my $sb = Parallel::Scoreboard->new(base_dir => $ARGV[0]);
$sb->update($status);
<STDIN>;
"#;

/// A Perl reader: prints `hex(id)=hex(status)` for every live worker.
const PERL_READER: &str = r#"
use Parallel::Scoreboard;
my $all = Parallel::Scoreboard->new(base_dir => $ARGV[0])->read_all;
printf "%s=%s\n", unpack("H*", $_), unpack("H*", $all->{$_}) for sort keys %$all;
"#;

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from perl"))
        .collect()
}

/// Everything the Perl processes of a test wrote to stderr, for failure messages.
fn perl_stderr(logs: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "err") {
            text += &std::fs::read_to_string(&path).unwrap_or_default();
        }
    }
    text
}

/// Starts a Perl worker with `status`. Keep the returned stdin open for as
/// long as the worker should live.
fn spawn_perl_worker(
    board: &Path,
    status: &[u8],
    logs: &Path,
    kids: &mut ChildGuard,
) -> (Pid, ChildStdin) {
    let n = std::fs::read_dir(logs).unwrap().count();
    let status_file = logs.join(format!("worker{n}.status"));
    std::fs::write(&status_file, status).unwrap();
    let mut child = perl()
        .args(["-e", PERL_WORKER])
        .arg(board)
        .arg(&status_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(File::create(logs.join(format!("worker{n}.err"))).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn perl");
    let stdin = child.stdin.take().unwrap();
    (kids.add_group(child), stdin)
}

/// Runs PERL_READER on `board` and returns what it printed, decoded.
fn perl_read_all(board: &Path, logs: &Path, kids: &mut ChildGuard) -> HashMap<String, Vec<u8>> {
    let out_path = logs.join("reader.out");
    let child = perl()
        .args(["-e", PERL_READER])
        .arg(board)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(logs.join("reader.err")).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn perl");
    let pid = kids.add_group(child);
    let status = kids.wait_exit(pid, deadline());
    assert_eq!(
        status,
        WaitStatus::Exited(pid, 0),
        "perl reader: {}",
        perl_stderr(logs)
    );
    let out = std::fs::read_to_string(&out_path).unwrap();
    out.lines()
        .map(|line| {
            let (id, status) = line.split_once('=').expect("id=status");
            (String::from_utf8(unhex(id)).unwrap(), unhex(status))
        })
        .collect()
}

/// A reader that probes every file's lock (its own id is not a pid).
fn rust_reader(board: &Path) -> Scoreboard {
    Scoreboard::builder(board)
        .worker_id(|| "rust-reader".into())
        .build()
        .unwrap()
}

fn rust_read_all(reader: &Scoreboard) -> HashMap<String, Vec<u8>> {
    let all = reader.read_all().unwrap();
    all.into_iter().map(|(id, s)| (id, s.status)).collect()
}

/// Forks a Rust worker that writes `statuses` in turn, then waits to be killed.
fn fork_rust_worker(
    forking: &std::sync::MutexGuard<'static, ()>,
    board: &Path,
    statuses: &[&[u8]],
    kids: &mut ChildGuard,
) -> Pid {
    fork_child(forking, kids, || {
        let Ok(mut sb) = Scoreboard::new(board) else {
            return 2;
        };
        for status in statuses {
            if sb.update(status).is_err() {
                return 3;
            }
        }
        block_until_killed()
    })
}

fn every_byte() -> Vec<u8> {
    (0..=255u8).collect()
}

#[test]
fn rust_reads_exactly_what_perl_workers_write() {
    require_parallel_scoreboard();
    // Spawning, like forking, must not overlap another test's forks.
    let _forking = fork_lock();
    let (board, logs) = (tempdir(), tempdir());
    let mut kids = ChildGuard::new();
    let long: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let statuses = [b"GET /index.html".to_vec(), every_byte(), Vec::new(), long];

    let mut expected = HashMap::new();
    let mut stdins = Vec::new();
    for status in statuses {
        let (pid, stdin) = spawn_perl_worker(board.path(), &status, logs.path(), &mut kids);
        expected.insert(pid.to_string(), status);
        stdins.push(stdin);
    }

    let reader = rust_reader(board.path());
    let all_seen = wait_until(deadline(), || rust_read_all(&reader) == expected);
    let lengths = |all: &HashMap<String, Vec<u8>>| -> Vec<(String, usize)> {
        all.iter().map(|(id, s)| (id.clone(), s.len())).collect()
    };
    assert!(
        all_seen,
        "expected (id, length) {:?}, read {:?}; perl said: {}",
        lengths(&expected),
        lengths(&rust_read_all(&reader)),
        perl_stderr(logs.path())
    );
}

#[test]
fn perl_reads_exactly_what_rust_workers_write() {
    require_parallel_scoreboard();
    let forking = fork_lock();
    let (board, logs) = (tempdir(), tempdir());
    let mut kids = ChildGuard::new();
    let all_bytes = every_byte();
    let long = vec![b'x'; 100_000];
    let workers: [&[&[u8]]; 4] = [
        &[b"busy"],
        &[&all_bytes],
        // Empty: a bare 20-byte header, which Perl (listing files of at
        // least 20 bytes) must list.
        &[b""],
        // A shorter status over a longer one: Perl too reads by the length.
        &[&long, b"short"],
    ];

    let mut expected = HashMap::new();
    for statuses in workers {
        let pid = fork_rust_worker(&forking, board.path(), statuses, &mut kids);
        expected.insert(pid.to_string(), statuses.last().unwrap().to_vec());
    }
    let reader = rust_reader(board.path());
    assert!(wait_until(deadline(), || rust_read_all(&reader) == expected));

    assert_eq!(
        perl_read_all(board.path(), logs.path(), &mut kids),
        expected
    );
}

#[test]
fn rust_removes_the_file_of_a_sigkilled_perl_worker() {
    require_parallel_scoreboard();
    // Spawning, like forking, must not overlap another test's forks.
    let _forking = fork_lock();
    let (board, logs) = (tempdir(), tempdir());
    let mut kids = ChildGuard::new();
    let (pid, _stdin) = spawn_perl_worker(board.path(), b"doomed", logs.path(), &mut kids);
    let reader = rust_reader(board.path());
    let seen = wait_until(deadline(), || {
        rust_read_all(&reader).get(&pid.to_string()) == Some(&b"doomed".to_vec())
    });
    assert!(seen, "perl worker: {}", perl_stderr(logs.path()));

    kids.kill(pid);
    assert!(
        status_path(board.path(), pid).exists(),
        "SIGKILL leaves the file"
    );
    reader.cleanup().unwrap();
    assert!(!status_path(board.path(), pid).exists());
    assert!(rust_read_all(&reader).is_empty());
}

#[test]
fn perl_removes_the_file_of_a_killed_rust_worker() {
    require_parallel_scoreboard();
    let forking = fork_lock();
    let (board, logs) = (tempdir(), tempdir());
    let mut kids = ChildGuard::new();
    let pid = fork_rust_worker(&forking, board.path(), &[b"doomed"], &mut kids);
    let reader = rust_reader(board.path());
    assert!(wait_until(deadline(), || !rust_read_all(&reader).is_empty()));

    kids.kill(pid);
    assert!(
        status_path(board.path(), pid).exists(),
        "SIGKILL leaves the file"
    );
    assert_eq!(
        perl_read_all(board.path(), logs.path(), &mut kids),
        HashMap::new()
    );
    assert!(!status_path(board.path(), pid).exists());
}
