//! Liveness comes from the lock, not from the record (issue 11): a file
//! whose lock a live process holds is a live worker whatever it holds, and
//! `live_workers` lists it with why its record cannot be read, where
//! `read_all` (as Parallel::Scoreboard) leaves it out. Every bad record here
//! is held by a real process, a forked child, and is gone once it dies.
//! A board owned by another user is read but never written.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use prefork::scoreboard::{record, Error, LiveWorker, Scoreboard, Status, Unreadable};

use crate::util::{fork_lock, held_by_child, names_in, status_path, tempdir, ChildGuard};

/// A reader with an id of its own, so that it probes every file's lock.
fn monitor(dir: &Path) -> Scoreboard {
    Scoreboard::builder(dir)
        .worker_id(|| "monitor".into())
        .build()
        .unwrap()
}

fn find<'a>(workers: &'a [LiveWorker], id: &str) -> &'a LiveWorker {
    workers
        .iter()
        .find(|w| w.id == id)
        .unwrap_or_else(|| panic!("worker {id} is not listed: {workers:?}"))
}

/// A record whose checksum cannot match.
fn bad_md5(status: &[u8]) -> Vec<u8> {
    let mut record = record::encode(status);
    record[0] ^= 0xff;
    record
}

/// `record` of `status`, cut short to `len` bytes.
fn cut(status: &[u8], len: usize) -> Vec<u8> {
    let mut record = record::encode(status);
    record.truncate(len);
    record
}

#[test]
fn a_live_worker_with_a_wrong_md5_is_listed_as_unreadable() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let holder = held_by_child(
        &forking,
        &mut kids,
        &status_path(dir.path(), "corrupt"),
        &bad_md5(b"busy"),
    );
    held_by_child(
        &forking,
        &mut kids,
        &status_path(dir.path(), "good"),
        &record::encode(b"fine"),
    );
    let reader = monitor(dir.path());

    let live = reader.live_workers().unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    let corrupt = find(&live, "corrupt");
    assert_eq!(
        corrupt.status,
        Status::Unreadable(Unreadable::ChecksumMismatch)
    );
    assert_eq!(
        corrupt.status.unreadable().unwrap().to_string(),
        "checksum mismatch in 10 reads"
    );
    assert_eq!(
        find(&live, "good").status,
        Status::Written(b"fine".to_vec())
    );

    // read_all stays what Parallel::Scoreboard returns: the readable ones.
    let all = reader.read_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["good"]);
    assert!(status_path(dir.path(), "corrupt").exists());

    // Its liveness was the child's lock: once the child is gone, so is it.
    kids.kill(holder);
    let live = reader.live_workers().unwrap();
    assert_eq!(live.iter().map(|w| &w.id[..]).collect::<Vec<_>>(), ["good"]);
    assert!(!status_path(dir.path(), "corrupt").exists());
}

#[test]
fn a_record_cut_short_is_unreadable_not_gone() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    // Within the reader's first read, and beyond it (where it looks at the
    // file's size before reading more).
    let short = cut(&[b'x'; 1000], record::HEADER_LEN + 10);
    let far = cut(&[b'y'; 200_000], 100_000);
    held_by_child(
        &forking,
        &mut kids,
        &status_path(dir.path(), "torn"),
        &short,
    );
    held_by_child(&forking, &mut kids, &status_path(dir.path(), "far"), &far);

    let live = monitor(dir.path()).live_workers().unwrap();
    assert_eq!(live.len(), 2, "{live:?}");
    assert_eq!(
        find(&live, "torn").status,
        Status::Unreadable(Unreadable::Truncated {
            len: 1000,
            file_len: 30
        })
    );
    assert_eq!(
        find(&live, "far").status,
        Status::Unreadable(Unreadable::Truncated {
            len: 200_000,
            file_len: 100_000
        })
    );
    assert_eq!(
        find(&live, "torn").status.unreadable().unwrap().to_string(),
        "record cut short: its header announces 1020 bytes, the file has 30"
    );
    assert!(monitor(dir.path()).read_all().unwrap().is_empty());
}

#[test]
fn a_status_above_the_readers_limit_is_unreadable_with_its_size() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    held_by_child(
        &forking,
        &mut kids,
        &status_path(dir.path(), "big"),
        &record::encode(&[7u8; 1000]),
    );
    held_by_child(
        &forking,
        &mut kids,
        &status_path(dir.path(), "small"),
        &record::encode(&[1u8; 100]),
    );
    let reader = Scoreboard::builder(dir.path())
        .worker_id(|| "monitor".into())
        .max_status_len(100)
        .build()
        .unwrap();

    let live = reader.live_workers().unwrap();
    let big = find(&live, "big");
    assert_eq!(
        big.status,
        Status::Unreadable(Unreadable::TooLarge {
            len: 1000,
            limit: 100
        })
    );
    assert_eq!(
        big.status.unreadable().unwrap().to_string(),
        "status of 1000 bytes, above the reader's limit of 100"
    );
    assert_eq!(find(&live, "small").status, Status::Written(vec![1; 100]));
    let all = reader.read_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["small"]);
}

#[test]
fn a_file_shorter_than_a_header_with_its_lock_held_is_a_live_worker() {
    let forking = fork_lock();
    let dir = tempdir();
    let mut kids = ChildGuard::new();
    let empty = held_by_child(&forking, &mut kids, &status_path(dir.path(), "empty"), b"");
    for len in [1, 7, record::HEADER_LEN - 1] {
        let path = status_path(dir.path(), format!("short{len}"));
        held_by_child(&forking, &mut kids, &path, &vec![0xa5; len]);
    }

    let live = monitor(dir.path()).live_workers().unwrap();
    assert_eq!(live.len(), 4, "{live:?}");
    assert_eq!(find(&live, "empty").status, Status::NotYet);
    for len in [1, 7, record::HEADER_LEN - 1] {
        assert_eq!(
            find(&live, &format!("short{len}")).status,
            Status::Unreadable(Unreadable::ShortHeader {
                file_len: len as u64
            })
        );
    }
    assert_eq!(
        find(&live, "short7")
            .status
            .unreadable()
            .unwrap()
            .to_string(),
        "file of 7 bytes, shorter than a record header (20)"
    );
    assert!(monitor(dir.path()).read_all().unwrap().is_empty());

    // An empty file is a worker that has not written yet, and is as dead
    // as any other once its holder is.
    kids.kill(empty);
    let live = monitor(dir.path()).live_workers().unwrap();
    assert!(live.iter().all(|w| w.id != "empty"), "{live:?}");
}

#[test]
fn a_watched_file_says_why_it_cannot_be_read() {
    let dir = tempdir();
    std::fs::write(status_path(dir.path(), "w"), bad_md5(b"busy")).unwrap();
    let board = monitor(dir.path());
    let watched = board.watch("w").unwrap();
    assert_eq!(
        watched.status(),
        Status::Unreadable(Unreadable::ChecksumMismatch)
    );
    assert_eq!(
        watched.try_status_head(4),
        Err(Unreadable::ChecksumMismatch)
    );
    assert_eq!(watched.status_head(4), None);

    std::fs::write(status_path(dir.path(), "n"), b"").unwrap();
    let never = board.watch("n").unwrap();
    assert_eq!(never.status(), Status::NotYet);
    assert_eq!(never.try_status_head(4), Ok(None));

    // A head too long to check needs the file to hold what its header says.
    std::fs::write(
        status_path(dir.path(), "t"),
        cut(&[b'z'; 100], record::HEADER_LEN + 50),
    )
    .unwrap();
    let torn = board.watch("t").unwrap();
    assert_eq!(
        torn.try_status_head(10),
        Err(Unreadable::Truncated {
            len: 100,
            file_len: 70
        })
    );
}

/// A board as the master's user would leave it: a live worker, and the file
/// of a dead one, in a directory given to `nobody`.
fn foreign_board(
    forking: &std::sync::MutexGuard<'static, ()>,
    kids: &mut ChildGuard,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let base = dir.path().join("board");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    held_by_child(
        forking,
        kids,
        &status_path(&base, "live"),
        &record::encode(b"serving"),
    );
    std::fs::write(status_path(&base, "dead"), record::encode(b"gone")).unwrap();
    std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
    (dir, base)
}

#[test]
fn another_users_board_is_read_but_never_written() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let forking = fork_lock();
    let mut kids = ChildGuard::new();
    let (_dir, base) = foreign_board(&forking, &mut kids);

    // A writer refuses it...
    let err = Scoreboard::new(&base).unwrap_err();
    assert!(matches!(err, Error::InsecureDir { .. }), "{err:?}");

    // ...a monitor reads it, and removes nothing, though root could.
    let reader = Scoreboard::builder(&base).monitor().build().unwrap();
    let why = reader.read_only().expect("a read-only handle");
    assert!(why.contains("uid 65534"), "{why}");
    let live = reader.live_workers().unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        find(&live, "live").status,
        Status::Written(b"serving".to_vec())
    );
    assert_eq!(reader.read_all().unwrap().len(), 1);
    assert_eq!(names_in(&base), ["status_dead", "status_live"]);

    // Writing through it fails as opening it for writing does.
    let err = reader.cleanup().unwrap_err();
    assert!(matches!(err, Error::InsecureDir { .. }), "{err:?}");
    let mut reader = reader;
    let err = reader.update(b"x").unwrap_err();
    assert!(matches!(err, Error::InsecureDir { .. }), "{err:?}");
    assert!(reader.fork_registrar().is_none());
    assert_eq!(names_in(&base), ["status_dead", "status_live"]);

    // Given back to us, the same monitor removes the dead worker's file.
    std::os::unix::fs::chown(&base, Some(0), Some(0)).unwrap();
    let reader = Scoreboard::builder(&base).monitor().build().unwrap();
    assert_eq!(reader.read_only(), None);
    assert_eq!(reader.live_workers().unwrap().len(), 1);
    assert_eq!(names_in(&base), ["status_live"]);
}

#[test]
fn a_board_of_our_own_is_writable_for_a_monitor() {
    let dir = tempdir();
    let reader = Scoreboard::builder(dir.path()).monitor().build().unwrap();
    assert_eq!(reader.read_only(), None);
    std::fs::write(status_path(dir.path(), "dead"), record::encode(b"x")).unwrap();
    reader.cleanup().unwrap();
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn a_read_only_reader_removes_nothing_even_on_its_own_board() {
    let forking = fork_lock();
    let mut kids = ChildGuard::new();
    let dir = tempdir();
    let base = dir.path();
    held_by_child(
        &forking,
        &mut kids,
        &status_path(base, "live"),
        &record::encode(b"serving"),
    );
    std::fs::write(status_path(base, "dead"), record::encode(b"gone")).unwrap();
    let mut reader = Scoreboard::builder(base)
        .read_only("a viewer")
        .build()
        .unwrap();
    assert_eq!(reader.read_only(), Some("a viewer"));
    let live = reader.live_workers().unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(reader.read_all().unwrap().len(), 1);
    assert!(matches!(reader.cleanup(), Err(Error::InsecureDir { .. })));
    assert!(reader.update(b"x").is_err());
    assert_eq!(names_in(base), ["status_dead", "status_live"]);
    // Nor does it create a missing directory.
    let missing = base.join("missing");
    assert!(Scoreboard::builder(&missing)
        .read_only("a viewer")
        .build()
        .is_err());
    assert!(!missing.exists());
}
