#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Daemons sharing one PostgreSQL store: one command, one result.

    tests/bench/shared.py [BUILD_DIR]        (default BUILD_DIR: ./build)

Starts a throw-away PostgreSQL 15 server (initdb and pg_ctl as an
unprivileged user, on a loopback port, as the tests do) and three infrafs
daemons on one database, then measures:

  commits   durable commits per second with 16 writers (threads, each on
            its own pool) spread over the 3 mounts, SHARED_SECONDS (10)
            long; each commit is one open, write, close(2) of a spec;
  visible   the time from close(2) on one mount to the new content read
            back through another (read every millisecond), over
            SHARED_ROUNDS (200) commits: p50 and p99;
  failover  the time from kill -9 of the daemon that leads an environment
            to another mount's status naming a new leader, over
            SHARED_FAILOVERS (5) kills.

Run as root (FUSE mounts, the server runs as another user).
"""
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build").resolve()
os.environ["INFRAFS_BIN"] = str(BUILD / "infrafs")
sys.path.insert(0, str(ROOT / "tests" / "fs"))

from conftest import Mount, read, status_of, wait_for  # noqa: E402
from pg import Server  # noqa: E402

SECONDS = float(os.environ.get("SHARED_SECONDS", 10))
ROUNDS = int(os.environ.get("SHARED_ROUNDS", 200))
FAILOVERS = int(os.environ.get("SHARED_FAILOVERS", 5))
WRITERS = 16


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def start(top, url, key, i):
    d = top / f"m{i}"
    d.mkdir(exist_ok=True)
    m = Mount(d, store=url)
    m.key = key
    m.extra = ["--local-dir", str(top / "local")]
    return m.start()


def commits(ms):
    for i in range(WRITERS):
        ms[i % 3].sh(f"mkdir -p dev/pools/w{i}")
    for i in range(WRITERS):
        wait_for(lambda i=i: all((m / f"dev/pools/w{i}").exists()
                                 for m in ms), 10, "the pools")
    counts = [0] * WRITERS
    stop = time.monotonic() + SECONDS

    def write(i):
        spec = ms[i % 3] / f"dev/pools/w{i}/spec"
        while time.monotonic() < stop:
            with open(spec, "w") as f:
                f.write(f"accelerator = cpu\nlabels.n = {counts[i]}\n")
            counts[i] += 1

    threads = [threading.Thread(target=write, args=(i,))
               for i in range(WRITERS)]
    begin = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - begin
    total = sum(counts)
    print(f"commits: {total} in {took:.1f} s = {total / took:.0f}/s, "
          f"{WRITERS} writers over 3 daemons")


def visible(a, b):
    a.sh("mkdir -p dev/pools/seen")
    path_a, path_b = a / "dev/pools/seen/spec", b / "dev/pools/seen/spec"
    delays = []
    for n in range(ROUNDS):
        text = f"accelerator = cpu\nlabels.n = {n}\n"
        with open(path_a, "w") as f:
            f.write(text)
        closed = time.monotonic()
        while True:
            try:
                if path_b.read_text() == text:
                    break
            except OSError:
                pass
            if time.monotonic() - closed > 10:
                raise SystemExit("visible: not seen within 10 s")
            time.sleep(0.001)
        delays.append(time.monotonic() - closed)
    print(f"visible: p50 {pct(delays, 50) * 1000:.1f} ms, "
          f"p99 {pct(delays, 99) * 1000:.1f} ms, max "
          f"{max(delays) * 1000:.1f} ms over {ROUNDS} commits")


def leader_of(ms):
    for m in ms:
        if m.proc:
            who = status_of(m / "dev/status").get("reconciler", "")
            for x in ms:
                if x.proc and who.endswith(f" pid {x.proc.pid}"):
                    return x
    return None


def failover(top, url, key, ms):
    times = []
    host = socket.gethostname()
    for n in range(FAILOVERS):
        wait_for(lambda: leader_of(ms) is not None, 10, "a leader")
        dead = leader_of(ms)
        i = ms.index(dead)
        others = [m for m in ms if m is not dead]
        start_t = time.monotonic()
        dead.proc.send_signal(signal.SIGKILL)
        dead.proc.wait()
        dead.proc = None
        subprocess.run(["fusermount3", "-u", "-z", str(dead.path)],
                       check=False)
        wait_for(lambda: any(
            status_of(m / "dev/status").get("reconciler", "")
            in (f"{host} pid {o.proc.pid}" for o in others)
            for m in others), 30, "a new leader")
        times.append(time.monotonic() - start_t)
        ms[i] = start(top, url, key, i + 10 * (n + 1))
    print(f"failover: median {statistics.median(times):.2f} s, max "
          f"{max(times):.2f} s over {FAILOVERS} kills of the leader")


def main():
    if not (BUILD / "infrafs").exists():
        raise SystemExit(f"shared: build first (ninja -C {BUILD})")
    top = Path(tempfile.mkdtemp(prefix="infrafs-shared."))
    # The server's own folder: its user must reach it.
    pg_top = Path(tempfile.mkdtemp(prefix="infrafs-pg-"))
    server = Server(pg_top).start()
    ms = []
    try:
        db = server.new_database()
        url = server.url(db)
        key = top / "keys" / "secret.key"
        ms = [start(top, url, key, i) for i in range(3)]
        ms[0].sh("mkdir dev")
        wait_for(lambda: all((m / "dev").exists() for m in ms), 10, "dev")
        print(f"shared store: 3 daemons, PostgreSQL 15 on loopback, "
              f"{os.cpu_count()} CPUs")
        commits(ms)
        visible(ms[0], ms[1])
        failover(top, url, key, ms)
        return 0
    finally:
        for m in ms:
            if m.proc:
                m.stop()
        server.stop()
        subprocess.run(["rm", "-rf", str(top), str(pg_top)], check=False)


if __name__ == "__main__":
    sys.exit(main())
