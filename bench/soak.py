#!/usr/bin/env python3
"""Soak run of the prefork master (a benchmark, not a test).

Runs `prefork` for SOAK_SECS (default 600) with WORKERS (default 8) workers
that update their status as fast as they can
(crates/scoreboard/examples/hammer.rs), a stuck timeout on, and a random
worker SIGKILLed every KILL_EVERY seconds (default 2). Every second it records the master's CPU use, RSS and open descriptors;
for every kill, the respawn latency: from the SIGKILL to the replacement's
status file in the board directory (the child creates it before exec). At
the end: SIGTERM, exit 0 expected, nothing left on the board.

Writes a CSV of the samples and prints a per-minute summary.

    cargo build --release --bins --examples
    python3 bench/soak.py [--secs 600] [--csv soak.csv]
"""
import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFORK = os.path.join(ROOT, "target", "release", "prefork")
HAMMER = os.path.join(ROOT, "target", "release", "examples", "hammer")
TICKS = os.sysconf("SC_CLK_TCK")


def master_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return cpu, rss, fds


def workers_of(board):
    return {int(n[7:]) for n in os.listdir(board) if n.startswith("status_") and n[7:].isdigit()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secs", type=float, default=float(os.environ.get("SOAK_SECS", 600)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 8)))
    parser.add_argument("--kill-every", type=float, default=float(os.environ.get("KILL_EVERY", 2)))
    parser.add_argument("--csv", default="soak.csv")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    for exe in (PREFORK, HAMMER):
        if not os.path.exists(exe):
            sys.exit(f"{exe} is missing: run `cargo build --release --bins --examples` first")
    rng = random.Random(args.seed)
    board = tempfile.mkdtemp(prefix="prefork-soak-", dir="/dev/shm")
    os.rmdir(board)
    log = open(os.path.join(tempfile.gettempdir(), "prefork-soak.log"), "w")
    master = subprocess.Popen(
        [PREFORK, "-w", str(args.workers), "-d", board, "-t", "5s", "--", HAMMER],
        stderr=log, start_new_session=True,
    )
    samples, latencies = [], []
    try:
        deadline = time.time() + 10
        while len(workers_of(board) if os.path.isdir(board) else []) < args.workers:
            if time.time() > deadline:
                sys.exit("the workers did not start")
            time.sleep(0.01)
        start = time.time()
        cpu0, _, _ = master_sample(master.pid)
        next_sample, next_kill, last_cpu = start, start + args.kill_every, cpu0
        while time.time() - start < args.secs:
            now = time.time()
            if now >= next_sample:
                cpu, rss, fds = master_sample(master.pid)
                samples.append((now - start, cpu - cpu0, rss, fds))
                next_sample += 1
            if now >= next_kill:
                before = workers_of(board)
                victim = rng.choice(sorted(before))
                t0 = time.perf_counter()
                os.kill(victim, signal.SIGKILL)
                while True:
                    new = workers_of(board) - before
                    if new:
                        latencies.append((now - start, (time.perf_counter() - t0) * 1000))
                        break
                    if time.perf_counter() - t0 > 5:
                        latencies.append((now - start, float("inf")))
                        break
                    time.sleep(0.0002)
                next_kill += args.kill_every
            time.sleep(0.01)
    finally:
        os.kill(master.pid, signal.SIGTERM)
        code = master.wait(timeout=60)
        left = os.listdir(board) if os.path.isdir(board) else []
        if os.path.isdir(board) and not left:
            os.rmdir(board)  # prefork leaves a directory it was given in place
    with open(args.csv, "w") as out:
        out.write("secs,master_cpu_secs,rss_kib,fds\n")
        for t, cpu, rss, fds in samples:
            out.write(f"{t:.1f},{cpu:.3f},{rss},{fds}\n")
    print(f"seed {args.seed}, {args.workers} workers, {args.secs:.0f} s, a SIGKILL every {args.kill_every} s")
    print(f"master exit code after SIGTERM: {code}; files left on the board: {len(left)}")
    print("minute  master CPU %  RSS KiB (min-max)  fds (min-max)  respawn ms (median / p99 / max, n)")
    minutes = int(args.secs // 60) or 1
    for m in range(minutes):
        span = [s for s in samples if m * 60 <= s[0] < (m + 1) * 60]
        lats = sorted(l for t, l in latencies if m * 60 <= t < (m + 1) * 60)
        if len(span) < 2:
            continue
        cpu = (span[-1][1] - span[0][1]) / (span[-1][0] - span[0][0]) * 100
        rss = [s[2] for s in span]
        fds = [s[3] for s in span]
        lat = "-"
        if lats:
            p99 = lats[min(len(lats) - 1, int(len(lats) * 0.99))]
            lat = f"{statistics.median(lats):.2f} / {p99:.2f} / {lats[-1]:.2f}, {len(lats)}"
        print(f"{m:6d}  {cpu:11.2f}  {min(rss):7d}-{max(rss):<7d}  {min(fds):5d}-{max(fds):<5d}  {lat}")
    all_lats = sorted(l for _, l in latencies)
    if all_lats:
        print(f"all respawns: median {statistics.median(all_lats):.2f} ms, "
              f"p99 {all_lats[int(len(all_lats) * 0.99)]:.2f} ms, max {all_lats[-1]:.2f} ms, n={len(all_lats)}")
    return 0 if code == 0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
