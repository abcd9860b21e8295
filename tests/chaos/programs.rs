//! The programs the test writes into its sandbox: the one worker program
//! (a normal beat, or a mode the test leaves for it) and a foreign program
//! sharing the board; and the one-shot modes a worker can be given.

/// The one worker program. Its behaviour is chosen at each start: a one-shot
/// mode the test leaves in `ctl/once_<slot>` (taken by exactly one worker,
/// which renames it to `ctl/taken_<pid>`), else a standing mode in
/// `ctl/mode_<slot>`, else it beats: a status every 100 ms, busy when its
/// slot is below the number in `ctl/busy_below` (none: every slot), idle
/// (`idle ...`, by the default idle rule) otherwise: the load the chaos
/// puts on a pool that sizes itself.
pub(super) const WORKER: &str = r#"import hashlib, os, signal, struct, sys, time
ctl = os.path.join(os.environ["CHAOS_DIR"], "ctl")
fd = int(os.environ["PREFORK_STATUS_FD"])
slot = os.environ["PREFORK_WORKER_SLOT"]
tag = f"{sys.argv[1]}/{os.environ.get('CHAOS_ENV', '?')} slot={slot}"
pid = os.getpid()
mode = "normal"
try:
    os.rename(os.path.join(ctl, f"once_{slot}"), os.path.join(ctl, f"taken_{pid}"))
    with open(os.path.join(ctl, f"taken_{pid}")) as f:
        mode = f.read().strip()
except OSError:
    try:
        with open(os.path.join(ctl, f"mode_{slot}")) as f:
            mode = f.read().strip()
    except OSError:
        pass

def record(data):
    return hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data

def beat(period, status):
    n = 0
    while True:
        os.pwrite(fd, record(status(n)), 0)
        n += 1
        time.sleep(period)

if mode == "crash":
    os._exit(1)
if mode.startswith("orphan"):
    child = os.fork()
    if child == 0:
        if mode == "orphan-stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if mode != "orphan-zombie":
            time.sleep(30)
        os._exit(0)
    with open(os.path.join(ctl, f"grandchild_{pid}"), "w") as f:
        f.write(f"{child}\n")
    time.sleep(0.3)
    os._exit(0)
if mode == "closer":
    os.pwrite(fd, record(b"closing my status descriptor"), 0)
    os.close(fd)
    while True:
        time.sleep(1)
if mode == "term-ignorer":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if mode.startswith("huge"):
    tail = b"x" * int(mode.split()[1])
    beat(0.5, lambda n: f"huge {tag} n={n} ".encode() + tail)
if mode == "binary":
    beat(0.1, lambda n: os.urandom(1 + n % 300) + b"\n\x00\xff\x1b[31m")
if mode == "liar":
    while True:
        os.pwrite(fd, b"\0" * 16 + struct.pack(">I", 0xFFFFFFF0) + b"lies", 0)
        time.sleep(0.1)
def busy():
    try:
        with open(os.path.join(ctl, "busy_below")) as f:
            return int(slot) < int(f.read().strip())
    except (OSError, ValueError):
        return True

beat(0.1, lambda n: (f"{tag} {mode} beat {n}" if busy() else f"idle {tag} beat {n}").encode())
"#;

/// A program sharing the board: it puts a live file of its own there (as
/// Parallel::Scoreboard does: `.tmp`, lock, rename), holds it, and exits.
pub(super) const FOREIGN: &str = r#"import fcntl, hashlib, os, struct, sys, time
board, ready, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
name = os.path.join(board, f"status_{os.getpid()}")
fd = os.open(name + ".tmp", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.rename(name + ".tmp", name)
data = b"a foreign program sharing the board"
os.pwrite(fd, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)
open(ready, "w").close()
time.sleep(secs)
"#;

/// The one-shot modes a worker can be given.
pub(super) const ONCE_MODES: &[&str] = &[
    "orphan",
    "orphan-stubborn",
    "orphan-zombie",
    "closer",
    "huge",
    "binary",
    "liar",
    "term-ignorer",
];
