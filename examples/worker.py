#!/usr/bin/env python3
"""A prefork worker in Python, with nothing but the standard library.

prefork hands every worker an open, locked status file as descriptor
$PREFORK_STATUS_FD; a status is the Parallel::Scoreboard record written at
offset 0: MD5(status) (16 bytes), len(status) as a big-endian u32, status.
Every write is a heartbeat for the stuck-worker timeout. Run outside
prefork, it says so in one line and exits 2.
"""
import hashlib
import os
import signal
import struct
import sys
import time

if "PREFORK_STATUS_FD" not in os.environ:
    print(
        "worker.py: run me under prefork: prefork -- python3 examples/worker.py "
        "(PREFORK_STATUS_FD is not set)",
        file=sys.stderr,
    )
    sys.exit(2)
STATUS_FD = int(os.environ["PREFORK_STATUS_FD"])
SLOT = os.environ.get("PREFORK_WORKER_SLOT", "?")


def report(status: str) -> None:
    data = status.encode()
    os.pwrite(STATUS_FD, hashlib.md5(data).digest() + struct.pack(">I", len(data)) + data, 0)


stopping = False


def on_term(_signum, _frame):
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, on_term)
served = 0
while not stopping:
    report(f"python idle slot={SLOT} served={served}")
    time.sleep(0.2)
    report(f"python working on job {served} slot={SLOT}")
    time.sleep(0.2)
    served += 1
report(f"python stopping after {served} jobs")
