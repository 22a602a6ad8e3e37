#!/usr/bin/env python3
"""history/ listing benchmark: the daemon memory that concurrent listings
of a long history cost, and how long one `ls history | tail` takes.

Usage: tests/bench/history.py [BUILD_DIR] [--revisions 25000] [--readers 8]

Method. One environment gets REVISIONS revisions through the mount: 16
writer threads each rewrite the `nodes` field file of their own pool, so
commits share group commits the way real writers do. Then READERS
threads each open `history/` and read it to the end, all holding their
descriptors open at once (as concurrent `ls` do), and the daemon's peak
resident size (VmHWM of /proc/PID/status) is read before and after. The
same listing is then timed once as `ls history | tail -1`.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit(f"history bench: timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=str(ROOT / "build"))
    ap.add_argument("--revisions", type=int, default=25000)
    ap.add_argument("--readers", type=int, default=8)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="infrafs-hist-"))
    mnt = tmp / "mnt"
    mnt.mkdir()
    proc = subprocess.Popen(
        [f"{a.build}/infrafs", "-f", "--state",
         f"sqlite:{tmp}/state/state.db", "--key-file", str(tmp / "key"),
         str(mnt)], stdout=subprocess.DEVNULL,
        stderr=open(tmp / "log", "ab"))
    try:
        wait_for(lambda: os.path.ismount(mnt), 60, "the mount")
        subprocess.run(["mkdir", str(mnt / "dev")], check=True)
        pools = [f"p{i}" for i in range(16)]
        for p in pools:
            os.mkdir(mnt / "dev/pools" / p)
            (mnt / "dev/pools" / p / "spec").write_text("nodes = 0\n")
        per = max(1, (a.revisions - 1 - 2 * len(pools)) // len(pools))

        def write(p):
            for i in range(per):
                with open(mnt / "dev/pools" / p / "nodes", "w") as f:
                    f.write(f"{i % 7}\n")

        start = time.monotonic()
        ts = [threading.Thread(target=write, args=(p,)) for p in pools]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        made = len(os.listdir(mnt / "dev/history"))
        print(f"revisions: {made} in {time.monotonic() - start:.1f} s")
        before = kib(proc.pid, "VmHWM")
        barrier = threading.Barrier(a.readers)
        fds = []

        def reader():
            fd = os.open(mnt / "dev/history", os.O_RDONLY | os.O_DIRECTORY)
            fds.append(fd)
            barrier.wait()
            n = len(os.listdir(fd))
            assert n == made, (n, made)
            barrier.wait()

        rs = [threading.Thread(target=reader) for _ in range(a.readers)]
        for t in rs:
            t.start()
        for t in rs:
            t.join()
        after = kib(proc.pid, "VmHWM")
        for fd in fds:
            os.close(fd)
        t0 = time.monotonic()
        out = subprocess.run(f"ls {mnt}/dev/history | tail -1", shell=True,
                             capture_output=True, text=True).stdout.strip()
        took = time.monotonic() - t0
        print(f"{a.readers} open listings of {made}: daemon peak RSS "
              f"{before / 1024:.1f} -> {after / 1024:.1f} MiB "
              f"(+{(after - before) / 1024:.1f} MiB)")
        print(f"ls history | tail -1: {out} in {took * 1000:.0f} ms")
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        proc.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
