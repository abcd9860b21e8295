//! What is planted on the board: stale files of dead processes, `.tmp`
//! files, foreign names, symlinks (to a file, a directory, nowhere, where the
//! next workers' files will be), a FIFO, a directory; and foreign programs
//! holding live files of their own.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::driver::{spawn_helper, Chaos};
use super::programs::FOREIGN;
use super::sampler::{lstat, snapshot, Fate, Foreign, Outside, Planted};
use super::{ANSWER_LIMIT, FAKE_PID_BASE};

impl Chaos<'_> {
    fn fake_pid(&mut self) -> u64 {
        self.next_fake += 1;
        FAKE_PID_BASE + self.next_fake
    }

    fn plant(&mut self, name: OsString, kind: &'static str, fate: Fate) {
        let Some(meta) = lstat(&self.sandbox.board(), &name) else {
            return; // a worker took the name already: nothing to expect
        };
        self.count(format!("garbage-{kind}"));
        self.shared.lock().unwrap().planted.push(Planted {
            name,
            kind,
            at: Instant::now(),
            fate,
            ino: meta.ino(),
            done: false,
        });
    }

    fn outside(&mut self, path: PathBuf) {
        let was = snapshot(&path);
        self.shared
            .lock()
            .unwrap()
            .outside
            .push(Outside { path, was });
    }

    pub(super) fn garbage(&mut self) {
        let board = self.sandbox.board();
        let outside = self.sandbox.path().join("outside");
        let n = self.rng.between(1, 4);
        for _ in 0..n {
            let id = self.fake_pid();
            let kind = self.rng.below(15);
            let name = format!("status_{id}");
            let path = board.join(&name);
            match kind {
                0 => {
                    let record = prefork::scoreboard::record::encode(b"a stale worker");
                    std::fs::write(&path, record).unwrap();
                    self.plant(name.into(), "stale-record", Fate::Removed);
                }
                1 => {
                    let len = self.rng.between(0, 200) as usize;
                    std::fs::write(&path, self.rng.bytes(len)).unwrap();
                    self.plant(name.into(), "stale-junk", Fate::Removed);
                }
                2 => {
                    let mut lie = vec![0u8; 16];
                    lie.extend(u32::MAX.to_be_bytes());
                    lie.extend(b"short");
                    std::fs::write(&path, lie).unwrap();
                    self.plant(name.into(), "stale-lying-header", Fate::Removed);
                }
                3 => {
                    // A dead worker of ours: a stale file after a crash.
                    let dead: Vec<i32> = self
                        .spawned_pids
                        .iter()
                        .copied()
                        .filter(|&p| crate::harness::proc_stat(p).is_none())
                        .collect();
                    if dead.is_empty() {
                        continue;
                    }
                    let pid = self.rng.pick(&dead);
                    let name = format!("status_{pid}");
                    let record = prefork::scoreboard::record::encode(b"before the crash");
                    std::fs::write(board.join(&name), record).unwrap();
                    self.plant(name.into(), "stale-dead-worker", Fate::Removed);
                }
                4 => {
                    let name = format!("status_worker-{id}");
                    std::fs::write(board.join(&name), b"").unwrap();
                    self.plant(name.into(), "stale-named", Fate::Removed);
                }
                5 => {
                    let name = format!("{name}.tmp");
                    let record = prefork::scoreboard::record::encode(b"being written");
                    std::fs::write(board.join(&name), record).unwrap();
                    self.plant(name.into(), "tmp", Fate::Kept);
                }
                6 => {
                    let name = match self.rng.below(4) {
                        0 => format!("garbage_{id}"),
                        1 => format!(".hidden_{id}"),
                        2 => format!("STATUS_{id}"),
                        _ => format!("status_w{id}.tmp"),
                    };
                    let len = self.rng.between(0, 64) as usize;
                    std::fs::write(board.join(&name), self.rng.bytes(len)).unwrap();
                    self.plant(name.into(), "foreign-name", Fate::Kept);
                }
                7 | 8 => {
                    let target = outside.join(format!("target_{id}"));
                    std::fs::write(&target, b"outside the board: never touched").unwrap();
                    let link = if kind == 7 {
                        name
                    } else {
                        format!("{name}.tmp")
                    };
                    symlink(&target, board.join(&link)).unwrap();
                    self.plant(link.into(), "symlink-to-file", Fate::Kept);
                    self.outside(target);
                }
                9 => {
                    let target = outside.join(format!("missing_{id}"));
                    symlink(&target, &path).unwrap();
                    self.plant(name.into(), "symlink-dangling", Fate::Kept);
                    self.outside(target);
                }
                10 => {
                    let target = outside.join(format!("dir_{id}"));
                    std::fs::create_dir(&target).unwrap();
                    std::fs::write(target.join("inside"), b"x").unwrap();
                    symlink(&target, &path).unwrap();
                    self.plant(name.into(), "symlink-to-dir", Fate::Kept);
                    self.outside(target);
                }
                11 => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .unwrap();
                    self.plant(name.into(), "fifo", Fate::Kept);
                }
                12 => {
                    std::fs::create_dir(&path).unwrap();
                    std::fs::write(path.join("inside"), b"x").unwrap();
                    self.plant(name.into(), "directory", Fate::Kept);
                }
                13 => {
                    // Where the next workers' files will be: their
                    // registration replaces these, and never follows them.
                    let last = self.spawned_pids.iter().copied().max().unwrap_or(1000);
                    let target = outside.join(format!("ambushed_{id}"));
                    std::fs::write(&target, b"outside the board: never touched").unwrap();
                    for next in last + 1..last + 4 {
                        for name in [format!("status_{next}"), format!("status_{next}.tmp")] {
                            if symlink(&target, board.join(&name)).is_ok() {
                                self.plant(name.into(), "symlink-ambush", Fate::Any);
                            }
                        }
                    }
                    self.outside(target);
                }
                _ => {
                    let mut name = b"status_\xff\xfe".to_vec();
                    name.extend(id.to_string().bytes());
                    let name = OsString::from_vec(name);
                    std::fs::write(board.join(&name), b"").unwrap();
                    self.plant(name, "non-utf8-name", Fate::Any);
                }
            }
        }
        // Take some back, so the directory does not only grow. Never an
        // ambush: its name is a future worker's, and once a worker has taken
        // it, removing the name removes that worker's live file (found under
        // fire: "pid=... has no status file", and no convergence). Nor
        // anything that is no longer what was planted.
        if self.rng.chance(0.3) {
            let mut shared = self.shared.lock().unwrap();
            let candidates: Vec<usize> = (0..shared.planted.len())
                .filter(|&i| {
                    let p = &shared.planted[i];
                    !p.done && p.fate != Fate::Removed && p.kind != "symlink-ambush"
                })
                .collect();
            let k = self.rng.between(1, 3) as usize;
            for i in self.rng.sample(&candidates, k) {
                let p = &mut shared.planted[i];
                p.done = true;
                let path = board.join(&p.name);
                let entry = lstat(&board, &p.name);
                if entry.as_ref().is_none_or(|m| m.ino() != p.ino) {
                    continue;
                }
                if entry.is_some_and(|m| m.is_dir()) {
                    let _ = std::fs::remove_dir_all(&path);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }

    pub(super) fn start_foreign(&mut self) {
        let id = self.fake_pid();
        let ready = self.sandbox.path().join(format!("foreign_ready_{id}"));
        let secs = self.rng.between(300, 2500) as f64 / 1000.0;
        let mut cmd = Command::new(crate::harness::python3());
        cmd.args(["-S", "-c", FOREIGN])
            .arg(self.sandbox.board())
            .arg(&ready)
            .arg(secs.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let child = match spawn_helper(&mut cmd) {
            Ok(child) => child,
            Err(e) => panic!("cannot start a foreign program: {e}"),
        };
        let pid = child.id() as i32;
        self.foreign.push(child);
        self.count("foreign-holder");
        let deadline = Instant::now() + ANSWER_LIMIT;
        while !ready.exists() {
            if Instant::now() > deadline {
                return; // a slow machine: nothing to check for this one
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.lock().unwrap().foreign.push(Foreign {
            pid,
            name: format!("status_{pid}"),
            misses: 0,
            reported: false,
        });
    }

    /// Reaps the foreign programs that are done (all of them with `all`).
    pub(super) fn reap_foreign(&mut self, all: bool) {
        self.foreign.retain_mut(|child| {
            if all {
                return child.wait().is_err();
            }
            !matches!(child.try_wait(), Ok(Some(_)))
        });
    }
}
