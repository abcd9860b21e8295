#!/usr/bin/env python3
"""A web-style prefork worker, with nothing but the standard library: the
worker of config/web-pool.toml.

It serves HTTP on the listening socket prefork hands it (`--listen ADDR`,
key `listen`): descriptor 3, announced by LISTEN_FDS and LISTEN_PID
(systemd's socket activation), or else by the first entry of
SERVER_STARTER_PORT. Handed none, it listens on HOST:PORT itself (default
127.0.0.1:8080), with SO_REUSEPORT, so that the workers of a pool can share
the port. It says on the board which request it serves:

    prefork -c config/web-pool.toml
    curl localhost:8080/           # hello from pid P slot S version V
    curl localhost:8080/sleep/40   # hangs 40 s: past the 30 s timeout the worker is
                                   # replaced, and the log names the request

Its first status, "idle", written once it can accept connections, tells
prefork it is ready (`ready = "report"`). Idle, it writes its status again
every second: with a stuck timeout every write is a heartbeat, and a worker
waiting for connections is not stuck; one hanging on a request is, and its
status says which ("GET /sleep/40").

HTTP/1.1 with keep-alive, a thread per connection, at most 64 at once.
GET / answers "hello from pid P slot S version V" (V is APP_VERSION),
GET /sleep/N the same after N seconds; other paths get 404; a request head
over 8 KiB, malformed, or other than a GET without a body gets 400. On
SIGTERM, SIGINT or SIGQUIT it closes its copy of the listener at once (the
master keeps the socket open, so the connections queued there go to other
workers), finishes the requests in hand, answers at most one more request
per keep-alive connection, with "Connection: close", if it comes within
2 s, and exits 0. Run outside prefork, it says so in one line and exits 2.
"""
import errno
import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time

if "PREFORK_STATUS_FD" not in os.environ:
    print(
        "web-worker.py: run me under prefork: prefork -c config/web-pool.toml "
        "(PREFORK_STATUS_FD is not set)",
        file=sys.stderr,
    )
    sys.exit(2)
STATUS_FD = int(os.environ["PREFORK_STATUS_FD"])
SLOT = os.environ.get("PREFORK_WORKER_SLOT", "?")
VERSION = os.environ.get("APP_VERSION", "1")
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8080"))
HELLO = f"hello from pid {os.getpid()} slot {SLOT} version {VERSION}\n"

MAX_CONNECTIONS = 64
MAX_HEAD = 8 * 1024
TICK = 0.1  # how soon a thread waiting on a socket notices a stop
KEEP_ALIVE = 60.0  # an idle keep-alive connection is closed after this long
LAST_CALL = 2.0  # after a stop: time left to a connection for one more request
GRACE = 5.0  # after a stop: how long we wait for the connections to finish

stop = threading.Event()


class Board:
    """What the worker says on the board: "idle", or the oldest request in hand."""

    def __init__(self):
        self.lock = threading.Lock()
        self.in_hand = []
        self.written = 0.0

    def write(self):
        """Writes the Parallel::Scoreboard record at offset 0, as worker.py does."""
        data = (self.in_hand[0] if self.in_hand else "idle").encode()
        os.pwrite(STATUS_FD, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)
        self.written = time.monotonic()

    def begin(self, request):
        with self.lock:
            self.in_hand.append(request)
            self.write()

    def end(self, request):
        with self.lock:
            self.in_hand.remove(request)
            self.write()

    def heartbeat(self):
        with self.lock:
            if not self.in_hand and time.monotonic() - self.written >= 1.0:
                self.write()


board = Board()


def inherited_socket():
    """The socket prefork handed down, or None. Like sd_listen_fds(3), unsets
    the LISTEN_* variables, which would mislead a program we started."""
    fds, pid = os.environ.pop("LISTEN_FDS", ""), os.environ.pop("LISTEN_PID", "")
    os.environ.pop("LISTEN_FDNAMES", None)
    if fds.isdecimal() and int(fds) >= 1 and pid == str(os.getpid()):
        fd = 3
    elif "SERVER_STARTER_PORT" in os.environ:  # "127.0.0.1:8080=3;/run/app.sock=4"
        fd = os.environ["SERVER_STARTER_PORT"].split(";")[0].rpartition("=")[2]
        if not fd.isdecimal():
            print(f"web-worker.py: SERVER_STARTER_PORT={os.environ['SERVER_STARTER_PORT']!r} names no descriptor", file=sys.stderr)
            sys.exit(1)
        fd = int(fd)
    else:
        return None
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)  # family and type are the descriptor's


def listen():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((HOST, PORT))
    except OSError as e:
        print(f"web-worker.py: cannot listen on {HOST}:{PORT}: {e.strerror} (set PORT)", file=sys.stderr)
        sys.exit(1)
    sock.listen(64)
    return sock


def read_head(conn, buf):
    """The next request head (or, past MAX_HEAD, what came, for parse() to
    refuse) and what followed it; None for a connection to close: the client
    closed it, or was idle too long, or sent no request within LAST_CALL of
    a stop."""
    deadline = time.monotonic() + KEEP_ALIVE
    stopping = False
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            return buf[: end + 4], buf[end + 4 :]
        if len(buf) > MAX_HEAD:
            return buf, b""
        if stop.is_set() and not stopping:
            stopping = True
            deadline = min(deadline, time.monotonic() + LAST_CALL)
        if time.monotonic() >= deadline:
            return None, buf
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        if not chunk:
            return None, buf
        buf += chunk


def parse(head):
    """("GET /path", keep-alive?) for a GET request; None for a head that is
    too large, malformed, not a GET, or announces a body (not read here)."""
    try:
        lines = head.decode().split("\r\n")
    except UnicodeDecodeError:
        return None
    words = lines[0].split(" ")
    if len(head) > MAX_HEAD or len(words) != 3 or words[0] != "GET" or not words[1].startswith("/"):
        return None
    if words[2] not in ("HTTP/1.0", "HTTP/1.1"):
        return None
    keep_alive = words[2] == "HTTP/1.1"
    for line in filter(None, lines[1:]):
        name, colon, value = line.partition(":")
        name, value = name.lower(), value.strip().lower()
        options = [option.strip() for option in value.split(",")]
        if not colon or name == "transfer-encoding" or name == "content-length" and value != "0":
            return None
        if name == "connection" and "close" in options:
            keep_alive = False
        elif name == "connection" and "keep-alive" in options:
            keep_alive = True
    return f"GET {words[1]}", keep_alive


def respond(conn, status, body, keep_alive):
    conn.sendall(
        (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"X-Worker-Pid: {os.getpid()}\r\nX-App-Version: {VERSION}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n{body}"
        ).encode()
    )


def serve(conn):
    """Answers requests until the client closes or asks to, or we stop."""
    buf = b""
    conn.settimeout(TICK)
    while True:
        head, buf = read_head(conn, buf)
        if head is None:
            return
        request = parse(head)
        if request is None:
            respond(conn, "400 Bad Request", "bad request\n", False)
            return
        line, keep_alive = request
        board.begin(line)
        try:
            route = line.split(" ")[1].split("?")[0]
            seconds = route[len("/sleep/") :] if route.startswith("/sleep/") else ""
            if route == "/":
                status, body = "200 OK", HELLO
            elif seconds.isdecimal():
                time.sleep(int(seconds))
                status, body = "200 OK", HELLO
            else:
                status, body = "404 Not Found", "not found\n"
            # Once we stop, every answer closes its connection.
            keep_alive = keep_alive and not stop.is_set()
            respond(conn, status, body, keep_alive)
        finally:
            board.end(line)
        if not keep_alive:
            return


def connection(conn):
    with conn:
        try:
            serve(conn)
        except (OSError, OverflowError):
            pass  # the client went away, or asked for a sleep past time.sleep's range


def main():
    listener = inherited_socket() or listen()
    # Another worker may take a connection we were told of: the socket is
    # non-blocking (for every process sharing it), accept() waits up to TICK.
    listener.settimeout(TICK)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, lambda _signum, _frame: stop.set())
    with board.lock:
        board.write()  # the first "idle": ready
    threads = []
    while not stop.is_set():
        board.heartbeat()
        threads = [thread for thread in threads if thread.is_alive()]
        if len(threads) >= MAX_CONNECTIONS:
            time.sleep(TICK)
            continue
        try:
            conn, _ = listener.accept()
        except (TimeoutError, BlockingIOError, ConnectionAbortedError, InterruptedError):
            continue
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            print(f"web-worker.py: {e}", file=sys.stderr)
            time.sleep(TICK)
            continue
        thread = threading.Thread(target=connection, args=(conn,), daemon=True)
        thread.start()
        threads.append(thread)
    listener.close()  # what is queued there now goes to the other workers
    deadline = time.monotonic() + GRACE
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        board.heartbeat()
        time.sleep(0.02)
    left = sum(thread.is_alive() for thread in threads)
    if left:
        print(f"web-worker.py: {left} connection(s) still busy {GRACE:.0f} s after the stop", file=sys.stderr)
        sys.exit(1)


main()
