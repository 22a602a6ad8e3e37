#!/usr/bin/env python3
"""Reconciler benchmark: planning cost for one changed resource in
environments of 100, 10,000 and 100,000 resources, and the time from
close(2) of a spec to the provider's step starting (settle excluded).

Usage: tests/bench/reconcile.py [BUILD_DIR] [--sizes 100,10000,100000]

Method. For each size N the store is populated directly with SQLite (one
environment, N pools with `nodes = 0`, each already reserved in the local
provider's state file, so nothing needs applying), then mounted. Once the
start-up pass has looked at everything, one pool's spec is committed
through the mount, 15 times; after each, the reconciler's own figures are
read from `metrics`: how long its last pass took and how many resources it
looked at. refresh_s is set to a day so that no periodic refresh lands in
the measurement. The latency figure uses an endpoint whose command writes
the wall-clock time it started, with settle_ms = 0, in a small environment.
"""
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise SystemExit(f"reconcile bench: timed out waiting for {what}")


class Daemon:
    def __init__(self, binary, tmp):
        self.binary, self.tmp = binary, tmp
        self.mnt = tmp / "mnt"
        self.mnt.mkdir(exist_ok=True)
        self.state = tmp / "state" / "state.db"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "-f", "--state", f"sqlite:{self.state}",
             "--key-file", str(self.tmp / "key"), str(self.mnt)],
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / "log", "ab"))
        wait_for(lambda: os.path.ismount(self.mnt), 60, "the mount")

    def stop(self):
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        self.proc.wait(timeout=60)


def metrics(mnt):
    out = {}
    for line in (mnt / "metrics").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def populate(d, n):
    """N committed pools, written straight into the store and marked as
    reserved in the local provider's state: an environment at rest."""
    d.start()
    os.mkdir(d.mnt / "dev")
    (d.mnt / "dev" / "config").write_text(
        "provider = local\nrefresh_s = 86400\nsettle_ms = 0\n")
    d.stop()
    db = sqlite3.connect(d.state)
    env_id, rev = db.execute("SELECT id, rev FROM envs").fetchone()
    now = time.time()
    db.executemany(
        "INSERT INTO resources(env_id, kind, name, spec, rev, ctime, mtime)"
        " VALUES(?, 'pool', ?, 'nodes = 0\n', ?, ?, ?)",
        ((env_id, f"p{i:06d}", rev, now, now) for i in range(n)))
    db.executemany(
        "INSERT INTO history(env_id, kind, name, rev, text)"
        " VALUES(?, 'pool', ?, ?, 'nodes = 0\n')",
        ((env_id, f"p{i:06d}", rev) for i in range(n)))
    db.execute("UPDATE envs SET applied_rev = rev")
    db.commit()
    db.close()
    records = d.state.parent / "local" / "records"
    records.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"rev": rev, "accelerator": "cpu", "devices": [0]})
    for i in range(n):
        (records / f"pool@dev@p{i:06d}.json").write_text(body)


def planning_cost(binary, n):
    with tempfile.TemporaryDirectory(prefix="infrafs-rbench.") as t:
        d = Daemon(binary, Path(t))
        populate(d, n)
        t0 = time.monotonic()
        d.start()
        spec = d.mnt / "dev" / "pools" / "p000000" / "spec"
        # The start-up pass looks at everything; wait until it is done.
        last = d.mnt / "dev" / "pools" / f"p{n - 1:06d}" / "status"
        wait_for(lambda: "synced: yes" in last.read_text(), 900, "start-up")
        startup = time.monotonic() - t0
        costs, looked = [], []
        for i in range(15):
            before = metrics(d.mnt)["infrafs_commits_total"]
            spec.write_text(f"nodes = 0\nlabels.run = r{i}\n")
            status = spec.parent / "status"
            wait_for(lambda: "synced: yes" in status.read_text() and
                     metrics(d.mnt)["infrafs_commits_total"] > before,
                     30, "the change")
            m = metrics(d.mnt)
            costs.append(m["infrafs_reconcile_pass_seconds"])
            looked.append(m["infrafs_reconcile_pass_resources"])
        d.stop()
        return startup, statistics.median(costs), max(looked)


def step_latency(binary):
    with tempfile.TemporaryDirectory(prefix="infrafs-rbench.") as t:
        d = Daemon(binary, Path(t))
        d.start()
        env = d.mnt / "dev"
        os.mkdir(env)
        # Its maker sees a new environment empty until it looks.
        os.listdir(env)
        (env / "config").write_text("provider = local\nsettle_ms = 0\n")
        stamp = Path(t) / "started"
        lat = []
        for i in range(10):
            os.mkdir(env / "endpoints" / f"e{i}")
            spec = env / "endpoints" / f"e{i}" / "spec"
            fd = os.open(spec, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, f"command = date +%s.%N > {stamp}{i}; "
                         f"exec sleep 600\n".encode())
            os.close(fd)
            closed = time.time()
            wait_for(lambda: Path(f"{stamp}{i}").exists() and
                     Path(f"{stamp}{i}").read_text().strip(), 10, "start")
            lat.append(float(Path(f"{stamp}{i}").read_text()) - closed)
            os.rmdir(env / "endpoints" / f"e{i}")
        wait_for(lambda: "sleep 600" not in subprocess.run(
            ["ps", "-eo", "args"], capture_output=True, text=True).stdout,
            30, "replicas to stop")
        d.stop()
        return statistics.median(lat), max(lat)


def main():
    build = Path(sys.argv[1]) if len(sys.argv) > 1 and \
        not sys.argv[1].startswith("--") else ROOT / "build"
    sizes = [100, 10000, 100000]
    if "--sizes" in sys.argv:
        sizes = [int(x) for x in
                 sys.argv[sys.argv.index("--sizes") + 1].split(",")]
    binary = str(build / "infrafs")
    print("reconciler benchmark")
    med, worst = step_latency(binary)
    print(f"close(2) -> replica started (settle 0): median "
          f"{med * 1000:.1f} ms, worst {worst * 1000:.1f} ms")
    rows = []
    for n in sizes:
        startup, cost, looked = planning_cost(binary, n)
        rows.append((n, cost))
        print(f"N={n:>7}: pass after one change {cost * 1e3:8.3f} ms, "
              f"resources looked at {looked:.0f}, start-up pass "
              f"{startup:.1f} s")
    ratio = rows[-1][1] / rows[0][1] if rows[0][1] else float("inf")
    print(f"largest / smallest: {ratio:.2f}x "
          f"(target <= 2x: {'met' if ratio <= 2 else 'MISSED'})")


if __name__ == "__main__":
    main()
