//! A scoreboard directory is shared with other processes, so everything in it
//! is untrusted: symlinks are never followed, a directory others could tamper
//! with is refused, garbage is skipped without panicking or hanging, and
//! errors say which path and which operation failed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use prefork::scoreboard::{record, Error, Scoreboard};

use crate::util::{deadline, locked_file, names_in, status_path, tempdir};

/// What a write, truncation, chmod or unlink of a file would change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    contents: Vec<u8>,
    mode: u32,
    mtime: SystemTime,
    ino: u64,
}

fn snapshot(path: &Path) -> Snapshot {
    let meta = std::fs::metadata(path).unwrap();
    Snapshot {
        contents: std::fs::read(path).unwrap(),
        mode: meta.mode(),
        mtime: meta.modified().unwrap(),
        ino: meta.ino(),
    }
}

/// A file outside the board that a planted symlink points at: a valid record
/// (a reader that followed the link would list it), unlocked (a reader that
/// followed it would think its owner dead), with a mode and an old mtime that
/// any chmod or write would change.
fn victim(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, record::encode(b"precious")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(past)
        .unwrap();
    path
}

fn me() -> String {
    std::process::id().to_string()
}

#[test]
fn readers_and_writers_never_follow_symlinks_planted_under_status_names() {
    let outside = tempdir();
    let target = victim(outside.path(), "target");
    let before = snapshot(&target);
    let dir = tempdir();
    let symlink = |name: &str| std::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
    symlink("status_777");
    symlink("status_778.tmp");

    let mut board = Scoreboard::new(dir.path()).unwrap();
    board.update(b"mine").unwrap();
    let all = board.read_all().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), [&me()]);
    board.cleanup().unwrap();
    board.update(b"mine again").unwrap();
    drop(board);

    assert_eq!(snapshot(&target), before);
}

#[test]
fn symlinks_at_the_writers_own_names_are_replaced_not_followed() {
    let outside = tempdir();
    let tmp_target = victim(outside.path(), "tmp-target");
    let name_target = victim(outside.path(), "name-target");
    let (tmp_before, name_before) = (snapshot(&tmp_target), snapshot(&name_target));
    let dir = tempdir();
    // Planted before the writer's first update, at the names it will use.
    let tmp = dir.path().join(format!("status_{}.tmp", me()));
    let name = status_path(dir.path(), me());
    std::os::unix::fs::symlink(&tmp_target, &tmp).unwrap();
    std::os::unix::fs::symlink(&name_target, &name).unwrap();

    let mut board = Scoreboard::new(dir.path()).unwrap();
    // Planted again after construction, which removed a stale status_<pid>.
    if !name.exists() {
        std::os::unix::fs::symlink(&name_target, &name).unwrap();
    }
    board.update(b"mine").unwrap();
    assert_eq!(board.read_all().unwrap()[&me()].status, b"mine");
    assert!(std::fs::symlink_metadata(&name).unwrap().is_file());
    drop(board);

    assert_eq!(snapshot(&tmp_target), tmp_before);
    assert_eq!(snapshot(&name_target), name_before);
    assert!(
        names_in(dir.path()).is_empty(),
        "the writer removed its file on drop"
    );
}

#[test]
fn a_dangling_tmp_symlink_does_not_create_its_target() {
    let outside = tempdir();
    let nowhere = outside.path().join("created-through-a-link");
    let dir = tempdir();
    std::os::unix::fs::symlink(&nowhere, dir.path().join("status_w.tmp")).unwrap();

    let mut board = Scoreboard::builder(dir.path())
        .worker_id(|| "w".into())
        .build()
        .unwrap();
    board.update(b"mine").unwrap();
    assert_eq!(board.read_all().unwrap()["w"].status, b"mine");
    assert!(!nowhere.exists());
    assert!(names_in(outside.path()).is_empty());
}

#[test]
fn a_world_writable_base_dir_without_sticky_bit_is_refused() {
    let dir = tempdir();
    let base = dir.path().join("board");
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();

    let err = Scoreboard::new(&base).unwrap_err();
    assert!(
        matches!(&err, Error::InsecureDir { path, .. } if path == &base),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&base.display().to_string()),
        "{err}"
    );

    // The sticky bit (as on /tmp) keeps others from replacing our files.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut board = Scoreboard::new(&base).unwrap();
    board.update(b"ok").unwrap();
}

#[test]
fn a_base_dir_owned_by_another_user_is_refused_unless_allowed() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: giving a directory to another user needs root");
        return;
    }
    let dir = tempdir();
    let base = dir.path().join("board");
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();

    let err = Scoreboard::new(&base).unwrap_err();
    assert!(
        matches!(&err, Error::InsecureDir { path, .. } if path == &base),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&base.display().to_string()), "{message}");
    assert!(message.contains("65534"), "{message}");

    let monitor = Scoreboard::builder(&base)
        .allow_foreign_owner(true)
        .build()
        .unwrap();
    assert!(monitor.read_all().unwrap().is_empty());

    // Allowing a foreign owner does not allow a world-writable directory.
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Scoreboard::builder(&base)
        .allow_foreign_owner(true)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InsecureDir { .. }), "{err:?}");
}

/// Runs `read_all` on another thread, failing the test if it does not return
/// in time: a reader that opened a FIFO for reading would block forever.
fn read_all_in_time(board: Scoreboard) -> HashMap<String, Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = board.read_all().map(|all| {
            all.into_iter()
                .map(|(id, s)| (id, s.status))
                .collect::<HashMap<_, _>>()
        });
        let cleaned = board.cleanup();
        let _ = tx.send((result, cleaned));
    });
    let timeout = deadline().saturating_duration_since(Instant::now());
    let (result, cleaned) = rx.recv_timeout(timeout).expect("read_all hung");
    cleaned.unwrap();
    result.unwrap()
}

#[test]
fn read_all_skips_garbage_without_panicking_or_hanging() {
    let dir = tempdir();
    let at = |name: &str| dir.path().join(name);
    // Held locked, as a live worker's file would be, so that the reader has
    // to read and parse each one instead of removing it as dead.
    let mut live = Vec::new();
    for len in 0..record::HEADER_LEN {
        live.push(locked_file(
            &at(&format!("status_short{len}")),
            &vec![0xa5; len],
        ));
    }
    let mut too_long = record::encode(&[b'x'; 1000]);
    too_long.truncate(record::HEADER_LEN + 10);
    live.push(locked_file(&at("status_toolong"), &too_long));
    // The same beyond the reader's first read, which makes it look at the file's size.
    let mut far_too_long = record::encode(&[b'y'; 200_000]);
    far_too_long.truncate(100_000);
    live.push(locked_file(&at("status_fartoolong"), &far_too_long));
    let mut huge = record::encode(b"tiny");
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    live.push(locked_file(&at("status_huge"), &huge));
    let mut corrupt = record::encode(b"checksum will not match");
    corrupt[0] ^= 0xff;
    live.push(locked_file(&at("status_corrupt"), &corrupt));
    live.push(locked_file(&at("status_abc"), b"not a record"));
    // Names that carry no usable id, even with a valid record.
    live.push(locked_file(&at("status_"), &record::encode(b"no id")));
    let not_utf8 = dir.path().join(OsStr::from_bytes(b"status_\xff\xfe"));
    live.push(locked_file(&not_utf8, &record::encode(b"bad name")));
    // Not files at all.
    std::fs::create_dir(at("status_x")).unwrap();
    std::fs::write(at("status_x/status_1"), record::encode(b"inside")).unwrap();
    nix::unistd::mkfifo(
        &at("status_9"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    // And one real worker among them.
    live.push(locked_file(&at("status_good"), &record::encode(b"fine")));

    let board = Scoreboard::builder(dir.path())
        .worker_id(|| "reader".into())
        .build()
        .unwrap();
    let all = read_all_in_time(board);
    assert_eq!(all, HashMap::from([("good".to_string(), b"fine".to_vec())]));
    assert!(at("status_x/status_1").exists());
    assert!(at("status_9").exists());
    assert!(not_utf8.exists());
    drop(live);
}

#[test]
fn read_all_tolerates_files_that_vanish_while_it_reads() {
    let dir = tempdir();
    let reader = Scoreboard::builder(dir.path())
        .worker_id(|| "reader".into())
        .build()
        .unwrap();
    let reads = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            // Live workers coming and going, and dead workers' files that
            // the reader may or may not get to remove first.
            for n in 0..2000 {
                let id = (n % 7).to_string();
                if n % 2 == 0 {
                    let mut live = Scoreboard::builder(dir.path())
                        .worker_id(move || id.clone())
                        .build()
                        .unwrap();
                    live.update(b"brief").unwrap();
                } else {
                    let path = status_path(dir.path(), id);
                    std::fs::write(&path, record::encode(b"dead")).unwrap();
                    let _ = std::fs::remove_file(&path);
                }
            }
        });
        let mut reads = 0;
        let end = deadline();
        // Until the churn ends (or fails: then `join` below reports why).
        while !churn.is_finished() && Instant::now() < end {
            for (id, status) in reader.read_all().unwrap() {
                assert_eq!((id.len(), &status.status[..]), (1, &b"brief"[..]));
            }
            reads += 1;
        }
        churn.join().expect("a writer failed while the reader ran");
        reads
    });
    assert!(reads > 0);
}

#[test]
fn errors_name_the_path_and_the_operation() {
    let dir = tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    for base in [file.clone(), file.join("below")] {
        let err = Scoreboard::new(&base).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(message.contains(&base.display().to_string()), "{message}");
        assert!(message.contains("directory"), "{message}");
    }

    // The directory removed under a worker: its first update cannot create its file.
    let base = dir.path().join("gone");
    let mut board = Scoreboard::new(&base).unwrap();
    std::fs::remove_dir(&base).unwrap();
    let err = board.update(b"x").unwrap_err();
    let message = err.to_string();
    let tmp = base.join(format!("status_{}.tmp", std::process::id()));
    assert!(message.contains(&tmp.display().to_string()), "{message}");
    assert!(message.contains("create"), "{message}");
}
