//! One process, one board: what a worker writes is what a reader reads, and
//! the directory and the worker's file come and go as documented.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use prefork::scoreboard::{record, Error, Scoreboard};

use crate::util::{deadline, locked_file, names_in, status_path, tempdir, umask, wait_until};

fn my_id() -> String {
    std::process::id().to_string()
}

#[test]
fn update_then_read_all_sees_the_status_under_the_pid() {
    let dir = tempdir();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"GET /index.html").unwrap();

    let all = board.read_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [&my_id()]);
    assert_eq!(all[&my_id()].status, b"GET /index.html");
    assert!(status_path(dir.path(), my_id()).is_file());

    board.update(b"idle").unwrap();
    assert_eq!(board.read_all().unwrap()[&my_id()].status, b"idle");
}

#[test]
fn updated_advances_on_every_update_even_with_the_same_status() {
    let dir = tempdir();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"same").unwrap();
    let mut last = board.read_all().unwrap()[&my_id()].updated;

    let probe = dir.path().join("clock-probe");
    for _ in 0..3 {
        // File times come from a coarse clock (a few ms per tick): wait until
        // a write to another file gets a later time, so that one update must.
        assert!(wait_until(deadline(), || {
            std::fs::write(&probe, b"tick").unwrap();
            std::fs::metadata(&probe).unwrap().modified().unwrap() > last
        }));
        board.update(b"same").unwrap();
        let updated = board.read_all().unwrap()[&my_id()].updated;
        assert!(updated > last, "{updated:?} should be after {last:?}");
        assert!(updated <= SystemTime::now());
        last = updated;
    }
}

#[test]
fn a_worker_that_never_updated_is_not_listed() {
    let dir = tempdir();
    let board = Scoreboard::new(dir.path()).unwrap();
    assert!(board.read_all().unwrap().is_empty());
    assert!(
        names_in(dir.path()).is_empty(),
        "no file before the first update"
    );

    // A live worker between creating its file and its first write: locked, empty.
    let other = status_path(dir.path(), 4242);
    let _lock = locked_file(&other, b"");
    assert!(board.read_all().unwrap().is_empty());
    assert!(other.exists(), "a live worker's file is not removed");
}

#[test]
fn statuses_are_arbitrary_bytes() {
    let dir = tempdir();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    let big = |len: usize| -> Vec<u8> { (0..len).map(|i| (i * 7 + i / 4099) as u8).collect() };

    let statuses = [
        every_byte.clone(),
        b"\0\r\n\xff\xfe not UTF-8 \x80".to_vec(),
        Vec::new(),
        big(16 * 1024 * 1024),
        big(16 * 1024 * 1024 + 12345), // above the reader's first 64 KiB read and any round size
        every_byte,
    ];
    for status in statuses {
        board.update(&status).unwrap();
        let got = &board.read_all().unwrap()[&my_id()].status;
        assert!(got == &status, "a status of {} bytes", status.len());
    }
}

#[test]
fn a_shorter_status_after_a_longer_one_reads_back_exactly() {
    let dir = tempdir();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    let long = vec![b'x'; 100_000];
    board.update(&long).unwrap();
    board.update(b"ok").unwrap();
    assert_eq!(board.read_all().unwrap()[&my_id()].status, b"ok");

    // The file is not truncated (as in Perl): the old bytes are still there
    // and the record's length says where the status ends.
    let file = status_path(dir.path(), my_id());
    let len = std::fs::metadata(&file).unwrap().len();
    assert_eq!(len, (record::HEADER_LEN + long.len()) as u64);

    board.update(b"").unwrap();
    assert_eq!(board.read_all().unwrap()[&my_id()].status, b"");
}

#[test]
fn a_status_above_the_readers_limit_is_skipped_not_loaded() {
    let dir = tempdir();
    let mut writer = Scoreboard::builder(dir.path())
        .worker_id(|| "big".into())
        .build()
        .unwrap();
    writer.update(&[7u8; 2000]).unwrap();
    let reader = Scoreboard::builder(dir.path())
        .worker_id(|| "reader".into())
        .max_status_len(1000)
        .build()
        .unwrap();
    assert!(reader.read_all().unwrap().is_empty());
    assert!(
        status_path(dir.path(), "big").exists(),
        "skipped, not removed"
    );

    writer.update(&[7u8; 1000]).unwrap();
    assert_eq!(reader.read_all().unwrap()["big"].status, [7u8; 1000]);
}

#[test]
fn a_custom_worker_id_names_the_file_and_the_entry() {
    let dir = tempdir();
    let mut board = Scoreboard::builder(dir.path())
        .worker_id(|| "web-1".into())
        .build()
        .unwrap();
    assert_eq!(board.current_id(), "web-1");
    board.update(b"serving").unwrap();
    assert_eq!(names_in(dir.path()), ["status_web-1"]);
    assert_eq!(board.read_all().unwrap()["web-1"].status, b"serving");
}

#[test]
fn a_worker_id_that_changes_moves_the_status_to_the_new_name() {
    let dir = tempdir();
    let n = Arc::new(AtomicUsize::new(1));
    let id = n.clone();
    let mut board = Scoreboard::builder(dir.path())
        .worker_id(move || format!("slot-{}", id.load(Ordering::SeqCst)))
        .build()
        .unwrap();
    board.update(b"first").unwrap();
    n.store(2, Ordering::SeqCst);
    board.update(b"second").unwrap();

    assert_eq!(names_in(dir.path()), ["status_slot-2"]);
    let all = board.read_all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all["slot-2"].status, b"second");
}

#[test]
fn worker_ids_that_are_not_file_names_are_refused() {
    let dir = tempdir();
    for bad in ["", "../escape", "a/b", "x.tmp"] {
        let err = Scoreboard::builder(dir.path().join("board"))
            .worker_id(move || bad.to_string())
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::BadWorkerId { .. }), "{bad:?}: {err}");
    }
    assert_eq!(names_in(&dir.path().join("board")), Vec::<String>::new());
}

#[test]
fn a_stale_file_of_our_own_id_is_removed_at_construction() {
    let dir = tempdir();
    // Left by an earlier process that had our pid, or our custom id.
    let stale = status_path(dir.path(), my_id());
    let stale_custom = status_path(dir.path(), "w7");
    let other = status_path(dir.path(), "w8");
    for path in [&stale, &stale_custom, &other] {
        std::fs::write(path, record::encode(b"from a previous life")).unwrap();
    }

    let board = Scoreboard::new(dir.path()).unwrap();
    assert!(!stale.exists());
    let _custom = Scoreboard::builder(dir.path())
        .worker_id(|| "w7".into())
        .build()
        .unwrap();
    assert!(!stale_custom.exists());
    assert!(
        other.exists(),
        "only our own id's file goes at construction"
    );
    drop(board);
}

#[test]
fn the_base_dir_is_created_with_its_parents_mode_0700() {
    let dir = tempdir();
    let base = dir.path().join("a/b/board");
    let board = Scoreboard::new(&base).unwrap();
    assert_eq!(board.base_dir(), base);
    for created in ["a", "a/b", "a/b/board"] {
        let meta = std::fs::metadata(dir.path().join(created)).unwrap();
        assert!(meta.is_dir());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o700 & !umask(),
            "{created}"
        );
    }
}

#[test]
fn the_builders_dir_mode_is_honoured() {
    let dir = tempdir();
    let base = dir.path().join("shared/board");
    let _board = Scoreboard::builder(&base).dir_mode(0o750).build().unwrap();
    for created in ["shared", "shared/board"] {
        let meta = std::fs::metadata(dir.path().join(created)).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o750 & !umask(),
            "{created}"
        );
    }
}

#[test]
fn an_existing_base_dir_keeps_its_mode() {
    let dir = tempdir();
    let base = dir.path().join("board");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _board = Scoreboard::new(&base).unwrap();
    let mode = std::fs::metadata(&base).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
}

#[test]
fn drop_removes_the_owners_file() {
    let dir = tempdir();
    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"bye").unwrap();
    assert!(status_path(dir.path(), my_id()).exists());
    drop(board);
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn drop_leaves_a_successors_file_with_the_same_id() {
    let dir = tempdir();
    let mut old = Scoreboard::builder(dir.path())
        .worker_id(|| "w".into())
        .build()
        .unwrap();
    old.update(b"old").unwrap();
    // A successor with the same id takes over the name (removing the old file).
    let mut new = Scoreboard::builder(dir.path())
        .worker_id(|| "w".into())
        .build()
        .unwrap();
    new.update(b"new").unwrap();

    drop(old);
    assert_eq!(names_in(dir.path()), ["status_w"]);
    assert_eq!(new.read_all().unwrap()["w"].status, b"new");
}

#[test]
fn remove_unfinished_removes_only_that_registration_s_tmp_file() {
    let dir = tempdir();
    let board = Scoreboard::new(dir.path()).unwrap();
    std::fs::write(dir.path().join("status_4242.tmp"), "").unwrap();
    std::fs::write(dir.path().join("status_4243.tmp"), "").unwrap();
    board.remove_unfinished("4242").unwrap();
    // Absent already: no error.
    board.remove_unfinished("4242").unwrap();
    assert_eq!(names_in(dir.path()), ["status_4243.tmp"]);
}
