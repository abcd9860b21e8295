//! `prefork top` (issue 15) in a real terminal: each test runs the binary
//! in a tmux server of its own (its own socket), types into it with
//! `send-keys` and reads the screen with `capture-pane`, as a person at a
//! terminal would. Waits poll the screen until what is expected shows, up to
//! a bounded timeout, never a bare sleep; a guard kills the tmux server (and
//! with it what runs in it) and the workers, whether the test passes or not.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use prefork::scoreboard::record;

use crate::harness::{eventually, Running, Sandbox};
use crate::util::{self, fork_lock, status_path, ChildGuard};

const PREFORK: &str = env!("CARGO_BIN_EXE_prefork");

/// A tmux server of the test's own (its socket in a directory of its own,
/// removed with it), with one window running `sh`.
struct Tmux {
    socket: String,
    _dir: tempfile::TempDir,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Tmux {
        let dir = util::tempdir();
        let tmux = Tmux {
            socket: dir.path().join("tmux").to_str().expect("UTF-8").into(),
            _dir: dir,
        };
        let (w, h) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &w,
            "-y",
            &h,
            "env PS1='$ ' sh",
        ]);
        tmux.wait_for("the shell's prompt", |s| s.trim_end().ends_with('$'));
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("tmux");
        cmd.args(["-S", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .stdin(Stdio::null());
        // Its output is read through pipes: no other test may fork meanwhile.
        let out = {
            let _forking = fork_lock();
            cmd.output().expect("run tmux (is it installed?)")
        };
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Sends keys by their tmux names (`Enter`, `Escape`, `Down`, `C-c`, `q`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend(keys);
        self.run(&args);
    }

    /// Types `text` literally, then Enter.
    fn line(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
        self.keys(&["Enter"]);
    }

    /// The screen with its colours and attributes, as escape sequences.
    fn screen_with_escapes(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-e", "-t", "t"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Whether the pane shows the alternate screen (a full-screen program).
    fn alternate(&self) -> bool {
        let out = self.run(&["display-message", "-p", "-t", "t", "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    fn resize(&self, width: u16, height: u16) {
        let (w, h) = (width.to_string(), height.to_string());
        self.run(&["resize-window", "-t", "t", "-x", &w, "-y", &h]);
    }

    /// Waits until the screen satisfies `done`, and returns it; fails the
    /// test with the screen on timeout.
    fn wait_for(&self, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
        let mut screen = String::new();
        if eventually(|| {
            screen = self.screen();
            done(&screen)
        }) {
            return screen;
        }
        panic!("timed out waiting for {what}; the screen:\n{screen}");
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), |s| s.contains(text))
    }

    /// Waits for `n` more frames: the screen changes (the ages tick).
    fn wait_frames(&self, n: usize) {
        for _ in 0..n {
            let before = self.screen();
            self.wait_for("the next frame", |s| s != before);
        }
    }

    /// Waits until the shell is back: its prompt on the main screen, in a
    /// terminal whose mode is restored (`stty` says canonical mode and echo),
    /// and `$?` was `code`.
    fn wait_shell_back(&self, code: u8) {
        static CHECKS: AtomicUsize = AtomicUsize::new(0);
        self.wait_for("the shell's prompt on the main screen", |s| {
            !self.alternate() && s.trim_end().lines().last() == Some("$")
        });
        let n = CHECKS.fetch_add(1, Ordering::SeqCst);
        self.line(&format!(
            "printf 'rc=%s %s check-%s\\n' $? \"$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | sort | tr '\\n' ' ')\" {n}"
        ));
        let end = format!("check-{n}");
        let screen = self.wait_for(&end, |s| {
            s.lines().any(|l| l.starts_with("rc=") && l.ends_with(&end))
        });
        let line = screen
            .lines()
            .find(|l| l.starts_with("rc=") && l.ends_with(&end))
            .expect("found above");
        assert!(
            line.starts_with(&format!("rc={code} echo icanon ")),
            "not exit {code} with canonical mode and echo: {screen}"
        );
        assert!(
            !screen.contains("live worker(s)"),
            "top's frame left: {screen}"
        );
    }
}

impl Tmux {
    /// Ends the server: its windows' terminals hang up.
    fn kill_server(&self) {
        self.run(&["kill-server"]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // Ends the server and everything in its windows (SIGHUP).
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "-f", "/dev/null", "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The command line that runs `prefork top ARGS` in the pane, its pid
/// written to `pidfile` first (the shell execs it).
fn top_line(pidfile: &Path, args: &str) -> String {
    format!(
        "sh -c 'echo $$ > {}; exec {PREFORK} top {args}'",
        pidfile.display()
    )
}

fn pid_in(file: &Path) -> i32 {
    let mut pid = None;
    assert!(
        eventually(|| {
            pid = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            pid.is_some()
        }),
        "no pid in {}",
        file.display()
    );
    pid.expect("read")
}

/// The table's lines: after the titles, up to the first blank line.
fn rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("SLOT"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// The long status of slot 1, whose end a table row cannot show.
const LONG_END: &str = "END-OF-STATUS";

/// Creates the directory `dir` of a board with the mode the scoreboard
/// gives its own.
fn create_board_dir(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
}

/// A board with a real master's three workers (slot 0 idle, 1 busy with a
/// long status, 2 busy) and, first, a Perl Parallel::Scoreboard worker.
struct MixedBoard {
    sandbox: Sandbox,
    master: Running,
    _perl: ChildGuard,
}

impl MixedBoard {
    fn start() -> MixedBoard {
        util::require_parallel_scoreboard();
        let sandbox = Sandbox::new();
        let board = sandbox.board();
        create_board_dir(&board);
        let mut perl_guard = ChildGuard::new();
        let mut perl = {
            let _forking = fork_lock();
            util::perl()
                .arg("-MParallel::Scoreboard")
                .arg("-e")
                .arg("my $s = Parallel::Scoreboard->new(base_dir => $ARGV[0]); $s->update('perl busy'); $| = 1; print qq(ok\\n); <STDIN>;")
                .arg(&board)
                .process_group(0)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start perl")
        };
        let stdout = perl.stdout.take().unwrap();
        // Its stdin stays open (in the child struct, forgotten below) for
        // as long as the test: it waits on it.
        let stdin = perl.stdin.take();
        perl_guard.add_group(perl);
        std::mem::forget(stdin);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        assert_eq!(line, "ok\n", "the Perl worker did not start");
        let worker = sandbox.script(
            "worker.sh",
            &format!(
                r#"case "$PREFORK_WORKER_SLOT" in
0) prefork report idle ;;
1) prefork report "GET /report BEGIN $(seq -s ' ' 1 400) {LONG_END}" ;;
*) prefork report "POST /upload" ;;
esac
exec sleep 100000"#
            ),
        );
        let master = Running::start(&mut sandbox.prefork(&[
            "-w",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--",
            "sh",
            &worker,
        ]));
        MixedBoard {
            sandbox,
            master,
            _perl: perl_guard,
        }
    }

    /// Runs `prefork top` on the board in `tmux` and waits for all four
    /// workers.
    fn top(&self, tmux: &Tmux, args: &str) -> String {
        let pidfile = self.sandbox.path().join("top.pid");
        tmux.line(&top_line(
            &pidfile,
            &format!("-d {} {args}", self.sandbox.board().display()),
        ));
        // The master's snapshot, rewritten at its board checks, may lag
        // behind the board: wait for both.
        tmux.wait_for("four workers, three in the master's slots", |s| {
            let table = rows(s);
            s.contains("4 live worker(s)")
                && s.contains("workers 3/3")
                && table.len() == 4
                && table.iter().filter(|r| r.starts_with("   - ")).count() == 1
                && s.contains("POST /upload")
                && s.contains("perl busy")
                && s.contains("GET /report")
        })
    }
}

/// The inside of the detail view's box.
fn body(screen: &str) -> String {
    let inside = screen.lines().filter(|l| l.starts_with('│'));
    inside.collect::<Vec<_>>().join("\n")
}

/// The position in `rows` of the row containing `text`.
fn at(rows: &[&str], text: &str) -> usize {
    rows.iter()
        .position(|r| r.contains(text))
        .unwrap_or_else(|| panic!("no row with {text:?} in {rows:#?}"))
}

#[test]
fn top_shows_prefork_and_perl_workers_sorts_them_and_quits_on_q() {
    let board = MixedBoard::start();
    let tmux = Tmux::start(120, 30);
    let screen = board.top(&tmux, "--interval 200ms");
    let header = format!("master pid={} ", board.master.pid());
    assert!(screen.contains(&header), "{screen}");
    assert!(
        screen.contains("4 live worker(s): 1 idle, 3 busy"),
        "{screen}"
    );
    assert!(
        screen.contains("workers 3/3, restarts 0, listening on 127.0.0.1:"),
        "{screen}"
    );
    assert!(tmux.alternate());
    // By slot: the master's workers in their slots, then the Perl one,
    // which has no slot nor restarts.
    let table = rows(&screen);
    assert_eq!(table.len(), 4, "{screen}");
    assert!(table[0].starts_with("   0 ") && table[0].contains(" idle "));
    assert!(table[1].starts_with("   1 ") && table[1].contains(" busy "));
    assert!(table[2].starts_with("   2 ") && table[2].contains("POST /upload"));
    assert!(table[3].starts_with("   - ") && table[3].contains("perl busy"));
    let perl: Vec<&str> = table[3].split_whitespace().collect();
    assert_eq!(
        perl[6], "-",
        "no restarts for a worker without a master: {screen}"
    );
    assert!(!table[1].contains(LONG_END), "cut to the width: {screen}");

    // RSS: perl, with its interpreter, is larger than `sleep`.
    tmux.keys(&["m"]);
    let screen = tmux.wait_text("sort: rss");
    assert_eq!(at(&rows(&screen), "perl busy"), 0, "{screen}");
    tmux.keys(&["s"]);
    let screen = tmux.wait_text("sort: slot");
    assert_eq!(at(&rows(&screen), "perl busy"), 3, "{screen}");
    // Age: the Perl worker wrote first, before the master started.
    tmux.keys(&["a"]);
    let screen = tmux.wait_text("sort: age");
    assert_eq!(at(&rows(&screen), "perl busy"), 0, "{screen}");
    tmux.keys(&["c"]);
    let screen = tmux.wait_text("sort: cpu");
    assert_eq!(rows(&screen).len(), 4, "{screen}");

    tmux.keys(&["q"]);
    tmux.wait_shell_back(0);
    assert!(crate::harness::alive(board.master.pid()));
}

#[test]
fn top_filters_shows_a_whole_status_and_redraws_on_resize() {
    let board = MixedBoard::start();
    let tmux = Tmux::start(70, 20);
    board.top(&tmux, "--interval 200ms");

    // The filter: typed after `/`, applied as it is typed.
    tmux.keys(&["/", "P", "O", "S", "T"]);
    let screen = tmux.wait_text("filter: \"POST\" (1 of 4)");
    let table = rows(&screen);
    assert!(
        table.len() == 1 && table[0].contains("POST /upload"),
        "{screen}"
    );
    tmux.keys(&["Enter"]);
    tmux.wait_text("q quit");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| {
        !s.contains("filter:") && rows(s).len() == 4
    });

    // The whole status of the worker whose status matches its end.
    tmux.keys(&["/"]);
    tmux.wait_text("filter: \"\"");
    tmux.keys(&["-l", LONG_END]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_text("(1 of 4)");
    assert!(rows(&screen)[0].contains("GET /report"), "{screen}");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_text("slot 1, busy");
    assert!(screen.contains("GET /report BEGIN 1 2 3"), "{screen}");
    assert!(
        !body(&screen).contains(LONG_END),
        "longer than the screen: {screen}"
    );
    tmux.keys(&["End"]);
    let screen = tmux.wait_for("the end of the status", |s| body(s).contains(LONG_END));
    assert!(
        body(&screen).contains(" 400 "),
        "wrapped, not cut: {screen}"
    );
    tmux.keys(&["Escape"]);
    tmux.wait_text("SLOT");
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", |s| rows(s).len() == 4);

    // Wider: the rows are drawn again, to the new width (tmux cannot make
    // up what was cut before).
    let before = tmux.screen();
    assert!(before.lines().all(|l| l.chars().count() <= 70), "{before}");
    tmux.resize(160, 30);
    let screen = tmux.wait_for("a row drawn to 160 columns", |s| {
        s.lines()
            .any(|l| l.contains("GET /report") && l.chars().count() > 120)
    });
    assert!(screen.contains("sort: slot"), "{screen}");
    // Tiny: still a frame, no crash.
    tmux.resize(20, 5);
    tmux.wait_for("a tiny frame", |s| {
        s.lines().count() <= 5 && s.contains("score")
    });
    // Back to a room for every row: all of them shown again.
    tmux.resize(100, 20);
    tmux.wait_for("all four rows again", |s| rows(s).len() == 4);
    tmux.keys(&["q"]);
    tmux.wait_shell_back(0);
}

/// A board in `dir` (created) of forked children of the test, one per
/// status; returns once every status is on it.
fn simple_board(dir: &Path, statuses: &[&[u8]], kids: &mut ChildGuard) {
    create_board_dir(dir);
    {
        let forking = fork_lock();
        for status in statuses {
            util::fork_child(&forking, kids, || {
                let mut sb = prefork::scoreboard::Scoreboard::new(dir).unwrap();
                sb.update(status).unwrap();
                util::block_until_killed();
            });
        }
    }
    let all_there = util::wait_until(util::deadline(), || {
        prefork::scoreboard::Scoreboard::builder(dir)
            .read_only("a test")
            .build()
            .and_then(|b| b.read_all())
            .is_ok_and(|all| all.len() == statuses.len())
    });
    assert!(all_there, "the workers' statuses did not appear");
}

/// One serving worker on a board of its own, and a terminal for `prefork
/// top` on it. The fields drop in their order: top, with its terminal,
/// before the worker it watches, and the directory last.
struct OneWorker {
    tmux: Tmux,
    kids: ChildGuard,
    board: PathBuf,
    pidfile: PathBuf,
    _dir: tempfile::TempDir,
}

impl OneWorker {
    fn start() -> OneWorker {
        let dir = util::tempdir();
        let board = dir.path().join("board");
        let mut kids = ChildGuard::new();
        simple_board(&board, &[b"serving"], &mut kids);
        OneWorker {
            tmux: Tmux::start(100, 20),
            kids,
            board,
            pidfile: dir.path().join("top.pid"),
            _dir: dir,
        }
    }

    /// Runs `prefork top -d BOARD ARGS` and waits for it to show the worker.
    fn top(&self, args: &str) {
        let args = format!("-d {} {args}", self.board.display());
        self.tmux.line(&top_line(&self.pidfile, &args));
        self.tmux.wait_text("1 live worker(s)");
    }
}

#[test]
fn top_gives_the_terminal_back_on_ctrl_c_sigint_and_sigterm() {
    let one = OneWorker::start();
    let (tmux, pidfile) = (&one.tmux, &one.pidfile);
    for (how, code) in [("C-c", 0), ("SIGINT", 130), ("SIGTERM", 143)] {
        let _ = std::fs::remove_file(pidfile);
        one.top("");
        assert!(tmux.alternate());
        match how {
            "C-c" => tmux.keys(&["C-c"]),
            "SIGINT" => crate::harness::signal(pid_in(pidfile), nix::sys::signal::SIGINT),
            _ => crate::harness::signal(pid_in(pidfile), nix::sys::signal::SIGTERM),
        }
        tmux.wait_shell_back(code);
    }
}

/// Whether `screen` (with escapes) sets a foreground colour: `ESC[3Nm` or
/// `ESC[38;...m` (not `ESC[39m`, the default colour).
fn coloured(screen: &str) -> bool {
    screen.split('\x1b').any(|seq| {
        let b = seq.as_bytes();
        b.len() > 3 && b[0] == b'[' && b[1] == b'3' && (b'0'..=b'8').contains(&b[2])
    })
}

#[test]
fn top_colours_the_states_unless_no_color_is_set() {
    let one = OneWorker::start();
    let tmux = &one.tmux;
    for (env, colours) in [("", true), ("env NO_COLOR=1 ", false)] {
        tmux.line(&format!(
            "sh -c 'echo $$ > {}; exec {env}{PREFORK} top -d {}'",
            one.pidfile.display(),
            one.board.display()
        ));
        tmux.wait_text("1 live worker(s)");
        let screen = tmux.screen_with_escapes();
        assert_eq!(coloured(&screen), colours, "{env:?}: {screen:?}");
        tmux.keys(&["q"]);
        tmux.wait_shell_back(0);
    }
}

#[test]
fn top_ends_when_its_terminal_hangs_up() {
    let one = OneWorker::start();
    one.top("");
    let pid = pid_in(&one.pidfile);
    one.tmux.kill_server();
    assert!(
        eventually(|| !crate::harness::alive(pid)),
        "prefork top (pid {pid}) still runs without its terminal"
    );
}

#[test]
fn top_waits_for_a_board_that_vanishes_and_removes_no_file() {
    let mut one = OneWorker::start();
    let board = one.board.clone();
    // A dead worker's file: any other reader of ours would remove it.
    let dead = status_path(&board, 999_999_999u32);
    std::fs::write(&dead, record::encode(b"dead and gone")).unwrap();
    one.top("--interval 100ms");
    let tmux = &one.tmux;
    tmux.wait_frames(3);
    assert!(dead.exists(), "top removed a dead worker's file");

    std::fs::remove_dir_all(&board).unwrap();
    let gone = format!("scoreboard {} is gone", board.display());
    tmux.wait_text(&gone);
    assert!(tmux.alternate(), "top still runs");
    assert!(crate::harness::alive(pid_in(&one.pidfile)));

    // Back, with another worker: picked up again.
    std::fs::create_dir(&board).unwrap();
    let forking = fork_lock();
    util::held_by_child(
        &forking,
        &mut one.kids,
        &status_path(&board, 4321),
        &record::encode(b"back again"),
    );
    drop(forking);
    std::fs::write(&dead, record::encode(b"dead again")).unwrap();
    let screen = tmux.wait_text("back again");
    assert!(!screen.contains("is gone"), "{screen}");
    tmux.wait_frames(2);
    assert!(dead.exists(), "top removed a dead worker's file");
    tmux.keys(&["q"]);
    tmux.wait_shell_back(0);
}

fn top(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(PREFORK);
    cmd.arg("top").args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let _forking = fork_lock();
    cmd.output().expect("run prefork top")
}

#[test]
fn top_once_or_into_a_pipe_prints_one_plain_frame() {
    let dir = util::tempdir();
    let board = dir.path().join("board");
    let mut kids = ChildGuard::new();
    simple_board(&board, &[b"serving \x1b[31mred", b"_"], &mut kids);
    let b = board.to_str().unwrap();
    assert!(util::wait_until(util::deadline(), || {
        let out = top(&["-d", b, "--once"], &[]);
        String::from_utf8_lossy(&out.stdout).contains("2 live worker(s)")
    }));
    for (args, env) in [
        (&["-d", b, "--once"][..], &[][..]),
        (&["-d", b], &[][..]),
        (&["-d", b, "--once"], &[("NO_COLOR", "1")][..]),
    ] {
        let out = top(args, env);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains('\x1b'), "an escape code: {text:?}");
        assert!(
            text.starts_with(&format!("scoreboard {b}: 2 live worker(s): 1 idle, 1 busy")),
            "{text}"
        );
        assert!(text.contains("serving \\u{1b}[31mred"), "{text}");
        assert_eq!(text.lines().count(), 4, "header, titles, two rows: {text}");
    }
    // The board named by a config file.
    let config = dir.path().join("prefork.toml");
    std::fs::write(&config, format!("scoreboard_dir = {b:?}\n")).unwrap();
    let out = top(&["-c", config.to_str().unwrap(), "--once"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("scoreboard {b}: 2 live")),
        "{text}"
    );
    // Another idle rule: both idle.
    let out = top(&["-d", b, "--once", "--idle-status", "^(serving|_)"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 idle, 0 busy"), "{text}");
    let out = top(&["-d", b, "--once", "--idle-status", "(bad"], &[]);
    assert_eq!(out.status.code(), Some(2));
    // A board that does not exist: exit 2, naming it.
    let missing = dir.path().join("no-board");
    let out = top(&["-d", missing.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    assert!(!missing.exists(), "a reader must not create the directory");
}
