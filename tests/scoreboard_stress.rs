//! Torn reads: writers rewrite their files in place as fast as they can while
//! a reader loops over `read_all`. Every status the reader returns must be one
//! a writer wrote whole: each carries its writer's pid, a sequence number and
//! a checksum of its own, independent of the record's MD5.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use prefork::scoreboard::Scoreboard;

use crate::util::{fork_child, fork_lock, tempdir, ChildGuard};

const WRITERS: usize = 4;
const MAX_STATUS: usize = 64 * 1024;
const RUN_FOR: Duration = Duration::from_millis(2500);

/// A status is `pid: u32 | seq: u64 | fnv1a(payload): u64 | payload`, all
/// little-endian, or empty.
const HEAD: usize = 4 + 8 + 8;

/// xorshift64*: random enough for lengths and payloads, and needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The status number `seq` of writer `pid`, of a random length up to 64 KiB.
fn make_status(buf: &mut Vec<u8>, pid: u32, seq: u64, rng: &mut Rng) {
    buf.clear();
    if seq % 64 == 63 {
        return; // the empty status, now and then
    }
    let len = HEAD + rng.next() as usize % (MAX_STATUS - HEAD + 1);
    buf.extend_from_slice(&pid.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    while buf.len() < len {
        buf.extend_from_slice(&rng.next().to_le_bytes());
    }
    buf.truncate(len);
    let sum = fnv1a(&buf[HEAD..]);
    buf[12..HEAD].copy_from_slice(&sum.to_le_bytes());
}

/// The sequence number of a status read under `id` (`None` for the empty
/// status), or what is wrong with it.
fn check(id: &str, status: &[u8]) -> Result<Option<u64>, String> {
    if status.is_empty() {
        return Ok(None);
    }
    if status.len() < HEAD {
        return Err(format!(
            "{} bytes, shorter than any status written",
            status.len()
        ));
    }
    let pid = u32::from_le_bytes(status[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(status[4..12].try_into().unwrap());
    let sum = u64::from_le_bytes(status[12..HEAD].try_into().unwrap());
    if pid.to_string() != id {
        return Err(format!("written by {pid}, found in status_{id}"));
    }
    if fnv1a(&status[HEAD..]) != sum {
        return Err(format!(
            "seq {seq} of {} bytes: checksum mismatch",
            status.len()
        ));
    }
    Ok(Some(seq))
}

/// A writer process's life: update until killed.
fn writer(dir: &Path) -> i32 {
    let Ok(mut board) = Scoreboard::new(dir) else {
        return 2;
    };
    let pid = std::process::id();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(pid));
    let mut buf = Vec::with_capacity(MAX_STATUS);
    let mut seq = 0;
    loop {
        make_status(&mut buf, pid, seq, &mut rng);
        if board.update(&buf).is_err() {
            return 3;
        }
        seq += 1;
    }
}

#[test]
fn a_reader_racing_busy_writers_only_sees_whole_statuses() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| fork_child(&forking, &mut kids, || writer(dir.path())))
        .collect();
    let reader = Scoreboard::builder(dir.path())
        .worker_id(|| "reader".into())
        .build()
        .unwrap();

    let mut latest: HashMap<String, u64> = HashMap::new();
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let end = Instant::now() + RUN_FOR;
    while Instant::now() < end {
        for (id, entry) in reader.read_all().unwrap() {
            let seq = match check(&id, &entry.status) {
                Ok(Some(seq)) => seq,
                Ok(None) => continue,
                Err(problem) => panic!("torn or foreign status in status_{id}: {problem}"),
            };
            // A file is rewritten in place, never rolled back: a later read
            // cannot return an older status.
            let last = latest.entry(id.clone()).or_insert(seq);
            assert!(
                seq >= *last,
                "status_{id} went back from seq {last} to {seq}"
            );
            *last = seq;
            seen.insert((id, seq));
        }
    }

    for pid in &writers {
        assert_eq!(kids.try_wait(*pid), None, "writer {pid} stopped early");
        let distinct = seen.iter().filter(|(id, _)| *id == pid.to_string()).count();
        // The test must be able to fail: it has to have watched each writer
        // through many rewrites.
        assert!(
            distinct >= 20,
            "saw only {distinct} statuses of writer {pid}"
        );
    }
    assert!(latest
        .keys()
        .all(|id| writers.iter().any(|p| p.to_string() == *id)));
}
