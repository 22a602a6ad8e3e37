#!/usr/bin/env python3
"""history/ listing benchmark: the daemon memory that concurrent listings
of a long history cost, and how long one `ls history | tail` takes.

Usage: tests/bench/history.py [BUILD_DIR] [--revisions 25000] [--readers 8]
                               [--load 1000000] [--keep 1000]

Method. One environment gets REVISIONS revisions through the mount: 16
writer threads each rewrite the `nodes` field file of their own pool, so
commits share group commits the way real writers do. Then READERS
threads each open `history/` and read it to the end, all holding their
descriptors open at once (as concurrent `ls` do), and the daemon's peak
resident size (VmHWM of /proc/PID/status) is read before and after. The
same listing is then timed once as `ls history | tail -1`.

With --load N, one writer's durable commit rate is measured first (3 s),
then the daemon stops and N more revisions are written straight into the
SQLite store, as that many field-file commits would have written them
(revision row, history text, audit line chained by SHA-256 to the one
before, so infrafs-audit-verify still passes): making a million through
the mount would take hours. The store is then mounted again (timed), the
listing figures are taken at that size, and the commit rate is measured
again, and `cat` of the diff of the newest, a middle and the oldest
revision, and of the oldest revision's pool spec, is timed. A single
writer's rate swings by a third from one run to the next on a shared
disk, so the store as it was before the load is also mounted beside the
big one and both are measured in alternating 2 s windows (7 rounds,
medians): that ratio is the figure for "commit rate at 1,000,000 within
20% of the rate at 1,000".

With --keep K, `history_keep = K` is then written to the config and the
time until history/ starts at the newest K is taken (the first prune of
a long history), then the commit rate again and infrafs-audit-verify,
which must pass from the checkpoint.
"""
import hashlib
import sqlite3
import argparse
import shutil
import statistics
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


def commit_rate(mnt, seconds=3.0):
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with open(mnt / "dev/pools/p0/nodes", "w") as f:
            f.write(f"{n % 2}\n")
        n += 1
    return n / seconds


def extend_store(db_path, count):
    """count more revisions of pools/p0's nodes, as the daemon writes
    them, in one transaction."""
    db = sqlite3.connect(db_path)
    env_id, rev, head = db.execute(
        "SELECT id, rev, audit_head FROM envs WHERE name = 'dev'").fetchone()
    text = db.execute("SELECT spec FROM resources WHERE env_id = ? AND "
                      "name = 'p0'", (env_id,)).fetchone()[0]
    t = time.time()
    for i in range(count):
        rev += 1
        old, new = text, f"nodes = {i % 7}\n"
        diff = (f"--- a/pools/p0/spec\n+++ b/pools/p0/spec\n@@ -1 +1 @@\n"
                f"-{old}+{new}")
        summary = "update pools/p0 (nodes, min_nodes, max_nodes)"
        db.execute("INSERT INTO revisions VALUES (?,?,?,0,0,1,'bench',"
                   "'dev/pools/p0/nodes',?,?)",
                   (env_id, rev, t, summary, diff))
        db.execute("INSERT INTO history VALUES (?,'pool','p0',?,?)",
                   (env_id, rev, new))
        when = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))
        line = (f"{when} rev={rev} uid=0 gid=0 pid=1 comm=bench "
                f"path=dev/pools/p0/nodes {summary} prev={head}")
        head = hashlib.sha256(line.encode()).hexdigest()
        db.execute("INSERT INTO audit(env_id, line) VALUES (?,?)",
                   (env_id, line))
        text = new
    db.execute("UPDATE envs SET rev = ?, rev_time = ?, audit_head = ?, "
               "applied_rev = ? WHERE id = ?",
               (rev, t, head, rev, env_id))
    db.execute("UPDATE resources SET spec = ?, rev = ? WHERE env_id = ? "
               "AND name = 'p0'", (text, rev, env_id))
    db.commit()
    db.close()


def timed_cat(path):
    t0 = time.monotonic()
    size = len(Path(path).read_bytes())
    return (time.monotonic() - t0) * 1000, size


def time_reads(mnt, made):
    revs = sorted(int(r) for r in os.listdir(mnt / "dev/history"))
    for what, rev in (("newest", revs[-1]), ("middle", revs[len(revs) // 2]),
                      ("oldest", revs[1])):
        ms, size = timed_cat(mnt / f"dev/history/{rev}/diff")
        print(f"cat history/{rev}/diff ({what}, {size} bytes): {ms:.1f} ms")
    ms, size = timed_cat(mnt / f"dev/history/{revs[1]}/config")
    print(f"cat history/{revs[1]}/config: {ms:.1f} ms")
    ms, size = timed_cat(mnt / f"dev/history/{revs[-1]}/pools/p0")
    print(f"cat history/{revs[-1]}/pools/p0: {ms:.1f} ms")


def oldest(mnt):
    with os.scandir(mnt / "dev/history") as it:
        return int(next(it).name)


def prune(mnt, keep):
    """Times the first prune of the long history, from the config's
    close(2) until history/ stops shrinking, and one commit made while it
    runs. Revisions after the newest applied one stay, so more than keep
    may be left."""
    with open(mnt / "dev/config", "a") as f:
        f.write(f"history_keep = {keep}\n")
    t0 = time.monotonic()
    with open(mnt / "dev/pools/p0/nodes", "w") as f:
        f.write("1\n")
    during = time.monotonic() - t0
    last, since = oldest(mnt), time.monotonic()
    while time.monotonic() - since < 3:
        now = oldest(mnt)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.05)
    took = since - t0
    print(f"history_keep = {keep}: pruned to {last}.. in {took:.1f} s, "
          f"{len(os.listdir(mnt / 'dev/history'))} revisions kept; "
          f"a commit made meanwhile: {during * 1000:.0f} ms")


def side_by_side(tmp, big, start, stop, made, rounds=7, seconds=2.0):
    """Commit rates of the small and the big store, mounted at once and
    measured in alternating windows, so that the disk's and the CPUs'
    drift over a run falls on both alike; medians of each."""
    small = tmp / "mnt-small"
    small.mkdir()
    proc = start("small", small)
    try:
        revs = len(os.listdir(small / "dev/history"))
        rates = {"small": [], "big": []}
        for _ in range(rounds):
            rates["small"].append(commit_rate(small, seconds))
            rates["big"].append(commit_rate(big, seconds))
        lo = statistics.median(rates["small"])
        hi = statistics.median(rates["big"])
        print(f"durable commits, 1 writer, alternating {rounds} x "
              f"{seconds:.0f} s: {lo:.0f} /s at {revs}, {hi:.0f} /s at "
              f"{made} ({hi / lo:.2f})")
    finally:
        stop(proc, small)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build", nargs="?", default=str(ROOT / "build"))
    ap.add_argument("--revisions", type=int, default=25000)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--load", type=int, default=0)
    ap.add_argument("--keep", type=int, default=0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="infrafs-hist-"))
    mnt = tmp / "mnt"
    mnt.mkdir()
    def start(state="state", where=mnt):
        p = subprocess.Popen(
            [f"{a.build}/infrafs", "-f", "--state",
             f"sqlite:{tmp}/{state}/state.db", "--key-file",
             str(tmp / "key"), str(where)], stdout=subprocess.DEVNULL,
            stderr=open(tmp / "log", "ab"))
        wait_for(lambda: os.path.ismount(where), 600, "the mount")
        return p

    def stop(p, where=mnt):
        subprocess.run(["fusermount3", "-u", str(where)], check=False)
        p.wait(timeout=600)

    proc = start()
    try:
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

        began = time.monotonic()
        ts = [threading.Thread(target=write, args=(p,)) for p in pools]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        made = len(os.listdir(mnt / "dev/history"))
        print(f"revisions: {made} in {time.monotonic() - began:.1f} s")
        if a.load:
            rate = commit_rate(mnt)
            print(f"durable commits, 1 writer, at {made}: {rate:.0f} /s")
            stop(proc)
            # The store as it was, mounted again beside the big one for
            # the side-by-side commit rates.
            shutil.copytree(tmp / "state", tmp / "small")
            t0 = time.monotonic()
            extend_store(tmp / "state/state.db", a.load)
            print(f"loaded {a.load} more in {time.monotonic() - t0:.0f} s")
            t0 = time.monotonic()
            proc = start()
            took = time.monotonic() - t0
            made = len(os.listdir(mnt / "dev/history"))
            print(f"mount at {made}: {took * 1000:.0f} ms")
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
        if a.load:
            time_reads(mnt, made)
            side_by_side(tmp, mnt, start, stop, made)
            rate = commit_rate(mnt)
            print(f"durable commits, 1 writer, at {made}: {rate:.0f} /s")
            print("daemon VmRSS now: "
                  f"{kib(proc.pid, 'VmRSS') / 1024:.1f} MiB")
        if a.keep:
            prune(mnt, a.keep)
            rate = commit_rate(mnt)
            kept = len(os.listdir(mnt / "dev/history"))
            print(f"durable commits, 1 writer, {kept} kept: {rate:.0f} /s")
        subprocess.run([f"{a.build}/tools/infrafs-audit-verify",
                        f"sqlite:{tmp}/state/state.db", "dev"], check=True)
    finally:
        stop(proc)


if __name__ == "__main__":
    sys.exit(main())
