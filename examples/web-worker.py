#!/usr/bin/env python3
"""A web-style prefork worker, with nothing but the standard library: the
worker of config/web-pool.toml.

Every worker listens on the same port itself, with SO_REUSEPORT (the kernel
spreads the connections among them; prefork handing its workers a listening
socket comes in a later version), and says on the board which request it
serves:

    prefork -c config/web-pool.toml
    curl localhost:8080/hello      # the board shows "GET /hello" while it is served
    curl localhost:8080/sleep/40   # hangs 40 s: past the 30 s timeout the worker is
                                   # replaced, and the log names the request

Idle, it writes its status again every second: with a stuck timeout every
write is a heartbeat, and a worker waiting for connections is not stuck.
PORT (default 8080) and HOST (default 127.0.0.1) say where to listen. On
SIGTERM it finishes the request in hand and exits. Run outside prefork, it
says so in one line and exits 2.
"""
import hashlib
import os
import signal
import socket
import struct
import sys
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
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8080"))


def report(status: str) -> None:
    """Writes the Parallel::Scoreboard record at offset 0, as worker.py does."""
    data = status.encode()
    os.pwrite(STATUS_FD, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)


def listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((HOST, PORT))
    except OSError as e:
        print(f"web-worker.py: cannot listen on {HOST}:{PORT}: {e.strerror} (set PORT)", file=sys.stderr)
        sys.exit(1)
    sock.listen(64)
    # Wake up every second, to write the heartbeat and to see a SIGTERM.
    sock.settimeout(1.0)
    return sock


def serve(conn: socket.socket) -> str:
    """Reads one request, answers it, and returns its request line."""
    conn.settimeout(5.0)
    request = b""
    while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 8192:
        chunk = conn.recv(4096)
        if not chunk:
            break
        request += chunk
    words = request.split(b"\n", 1)[0].decode("latin-1").split()
    method, path = (words[0], words[1]) if len(words) >= 2 else ("?", "?")
    report(f"{method} {path} slot={SLOT}")
    if path.startswith("/sleep/"):
        # A request that hangs: no heartbeat while it does.
        time.sleep(float(path[len("/sleep/"):] or 0))
    body = f"served by pid {os.getpid()} in slot {SLOT}: {method} {path}\n".encode()
    conn.sendall(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return f"{method} {path}"


stopping = False


def on_term(_signum, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
listener = listen()
port = listener.getsockname()[1]
served = 0
last = "-"
while not stopping:
    report(f"idle slot={SLOT} port={port} served={served} last={last}")
    try:
        conn, _ = listener.accept()
    except (TimeoutError, socket.timeout):
        continue
    with conn:
        try:
            last = serve(conn)
            served += 1
        except (OSError, ValueError) as e:
            last = f"error: {e}"
report(f"stopping after {served} requests")
