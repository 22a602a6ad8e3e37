"""Several daemons on one PostgreSQL store: every mount shows every
commit, revisions stay contiguous, and exactly one daemon carries each
environment to its provider, another taking over when it dies. The
daemons here run on one machine; each has its own mount and sessions,
as daemons on different machines would."""
import errno
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT, Mount, read, revisions, status_of, wait_for

TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
EP = "dev/endpoints/chat"
SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1 --directory /"

# The promise is one second; the ceiling here leaves room for a loaded
# machine and the sanitizer builds. tests/bench/shared.sh measures it.
PROPAGATION_S = 3


@pytest.fixture
def mounts(tmp_path, pg_server, pg_db):
    """Three daemons on one database, with one key (each machine has a
    copy) and, as on one machine, one folder for the local provider."""
    made = []

    def make(n=3):
        for i in range(n):
            top = tmp_path / f"m{i}"
            top.mkdir()
            m = Mount(top, store=pg_server.url(pg_db))
            m.key = tmp_path / "keys" / "secret.key"
            m.extra = ["--local-dir", str(tmp_path / "local")]
            m.start()
            made.append(m)
        return made

    yield make
    for m in made:
        if m.proc:
            m.stop()
    for pid in running_replicas(tmp_path):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def reconciler_of(m, env="dev"):
    return status_of(m / env / "status").get("reconciler")


def test_a_commit_shows_on_every_other_mount(mounts):
    a, b, c = mounts()
    a.sh("mkdir -p dev/pools/train && echo 'accelerator = cpu' >"
         " dev/pools/train/spec")
    for m in (b, c):
        # The folder may come first: mkdir and the spec are two commits.
        wait_for(lambda m=m: (m / "dev/pools/train/spec").exists() and
                 read(m / "dev/pools/train/spec") == "accelerator = cpu\n",
                 PROPAGATION_S, "the new pool on the other mounts")
    # What b has read sits in its kernel's cache: the commit on a must
    # drop it, not only change what b would render.
    for nodes in range(2, 6):
        a.sh(f"echo 'accelerator = cpu\nnodes = {nodes}' >"
             " dev/pools/train/spec")
        want = f"accelerator = cpu\nnodes = {nodes}\n"
        for m in (b, c):
            wait_for(lambda m=m: read(m / "dev/pools/train/spec") == want,
                     PROPAGATION_S, f"nodes = {nodes} on the other mounts")
            assert read(m / "dev/pools/train/nodes") == f"{nodes}\n"
    assert revisions(a) == revisions(b) == revisions(c) == list(range(1, 7))
    assert read(c / "dev/history/6/diff") == read(a / "dev/history/6/diff")
    # A removal too.
    b.sh("rmdir dev/pools/train")
    wait_for(lambda: "train" not in os.listdir(a / "dev/pools"),
             PROPAGATION_S, "the removal on a")


def write_many(m, pool, count, errors):
    for i in range(count):
        try:
            with open(m / f"dev/pools/{pool}/spec", "w") as f:
                f.write(f"accelerator = cpu\nlabels.writer = "
                        f"{m.tmp.name}-{i}\n")
        except OSError as e:
            errors.append(f"{pool} {i}: {e}")


def test_daemons_committing_at_once_make_contiguous_revisions(mounts,
                                                               pg_server):
    """Each close(2) is one revision, numbered after every other daemon's,
    and the audit chain holds across daemons."""
    ms = mounts()
    ms[0].sh("mkdir dev")
    for i, m in enumerate(ms):
        wait_for(lambda m=m: (m / "dev").exists(), PROPAGATION_S, "dev")
        m.sh(f"mkdir dev/pools/p{i}")
    per_writer, errors, threads = 25, [], []
    for i, m in enumerate(ms):
        for pool in ("p0", "p1", "p2"):
            wait_for(lambda m=m, pool=pool: (m / "dev/pools" / pool).exists(),
                     PROPAGATION_S, "the pools on every mount")
        # Two writers per daemon: one on its own pool, one on a pool
        # another daemon writes to as well.
        for pool in (f"p{i}", f"p{(i + 1) % 3}"):
            t = threading.Thread(target=write_many,
                                 args=(m, pool, per_writer, errors))
            threads.append(t)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Every writer's texts differ from every other's: each close(2) is a
    # change, and a revision.
    total = 1 + 6 * per_writer
    for m in ms:
        wait_for(lambda m=m: len(revisions(m)) == total, PROPAGATION_S,
                 "every revision on every mount")
        assert revisions(m) == list(range(1, total + 1))
    res = subprocess.run([str(TOOLS / "infrafs-audit-verify"),
                          ms[0].state_url, "dev"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "chain intact" in res.stdout


def endpoint(m):
    m.sh(f"mkdir -p {EP}")
    (m / EP / "spec").write_text(f"command = {SERVER}\nhealth_path = /\n")


def running_replicas(tmp):
    """Replica processes of the daemons of this test, wherever started:
    session leaders carrying the marker whose output goes below tmp,
    directly or through a log keeper's pipe."""
    procs, pipes = [], set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = open(f"/proc/{pid}/environ", "rb").read()
            out = os.readlink(f"/proc/{pid}/fd/1")
            inp = os.readlink(f"/proc/{pid}/fd/0")
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if out.startswith(str(tmp)):
            pipes.add(inp)
        session = int(stat.rsplit(")", 1)[1].split()[3])
        if session == int(pid) and b"INFRAFS_REPLICA=" in env:
            procs.append((int(pid), out))
    return sorted(pid for pid, out in procs
                  if out.startswith(str(tmp)) or out in pipes)


def state_of(m):
    """The endpoint's state word; "" until its folder reached this mount
    (it may have been made through another)."""
    try:
        return read(m / EP / "state").strip()
    except OSError:
        return ""


def replica_pids(m):
    try:
        status = read(m / EP / "status")
    except OSError:
        return []
    return sorted(int(line.split("pid ")[1].split(",")[0])
                  for line in status.splitlines()
                  if line.startswith("replica."))


def leader_and_follower(a, b):
    host = socket.gethostname()
    wait_for(lambda: reconciler_of(a) not in (None, "none"), PROPAGATION_S,
             "a reconciler for dev")
    who = reconciler_of(a)
    assert who in (f"{host} pid {a.proc.pid}", f"{host} pid {b.proc.pid}")
    wait_for(lambda: reconciler_of(b) == who, PROPAGATION_S,
             "both mounts to name it")
    return (a, b) if who.endswith(f" {a.proc.pid}") else (b, a)


def two_daemons_on_dev(mounts):
    """Two daemons, and dev made through the first: (leader, follower)."""
    a, b = mounts(2)
    a.sh("mkdir dev")
    wait_for(lambda: (b / "dev").exists(), PROPAGATION_S, "dev on b")
    return leader_and_follower(a, b)


def test_one_daemon_reconciles_and_another_takes_over(mounts, tmp_path):
    leader, follower = two_daemons_on_dev(mounts)
    endpoint(follower)
    wait_for(lambda: state_of(leader) == "ready", 30,
             "the leader to run the endpoint")
    (pid,) = replica_pids(leader)
    assert running_replicas(tmp_path) == [pid], "one replica, started once"
    # kill -9: the leader's sessions end, and with them its lease.
    gone = leader.proc.pid
    start = time.monotonic()
    leader.proc.send_signal(signal.SIGKILL)
    leader.proc.wait()
    leader.proc = None
    subprocess.run(["fusermount3", "-u", "-z", str(leader.path)],
                   check=False)
    host = socket.gethostname()
    wait_for(lambda: reconciler_of(follower) ==
             f"{host} pid {follower.proc.pid}", 10,
             f"the survivor to take over from pid {gone}")
    took = time.monotonic() - start
    assert took < 10
    # It adopts what runs: the same replica, nothing made twice.
    wait_for(lambda: replica_pids(follower) == [pid], 10,
             "the survivor to report the running replica")
    time.sleep(1)
    assert running_replicas(tmp_path) == [pid]
    assert state_of(follower) == "ready"


def test_only_the_leader_acts(mounts, tmp_path):
    """The follower's reconciler takes no step: replicas scale once."""
    leader, follower = two_daemons_on_dev(mounts)
    endpoint(leader)
    wait_for(lambda: state_of(leader) == "ready", 30,
             "ready")
    follower.sh(f"echo 2 > {EP}/replicas")
    wait_for(lambda: len(replica_pids(leader)) == 2, 30, "2 replicas")
    time.sleep(1)
    assert running_replicas(tmp_path) == replica_pids(leader)


def test_every_mount_shows_the_leaders_observations(mounts):
    """Status, state and plan read alike on the follower: the leader
    publishes what it observes to the store."""
    leader, follower = two_daemons_on_dev(mounts)
    endpoint(follower)
    wait_for(lambda: state_of(leader) == "ready", 30,
             "ready on the leader")
    wait_for(lambda: state_of(follower) == "ready",
             PROPAGATION_S, "ready on the follower")
    wait_for(lambda: replica_pids(follower) == replica_pids(leader),
             PROPAGATION_S, "the same replicas on the follower")
    assert status_of(follower / EP / "status")["url"] == \
        status_of(leader / EP / "status")["url"]
    assert status_of(follower / "dev/status")["ready"] == "1"
    # A plan too.
    leader.sh("echo 'approval = manual' >> dev/config")
    follower.sh(f"echo 2 > {EP}/replicas")
    wait_for(lambda: "waiting for approval" in read(follower / "dev/plan"),
             PROPAGATION_S + 2, "the leader's plan on the follower")
    assert read(follower / "dev/plan") == read(leader / "dev/plan")
    # A removal: the follower forgets what the leader stopped.
    follower.sh("echo approve > dev/ctl")
    wait_for(lambda: len(replica_pids(follower)) == 2, 30,
             "2 replicas seen on the follower")


def test_losing_the_database_stops_the_leader_and_keeps_reads(mounts,
                                                              pg_server):
    (a,) = mounts(1)
    a.sh("mkdir -p dev/pools/train && echo 'accelerator = cpu' >"
         " dev/pools/train/spec")
    host = socket.gethostname()
    wait_for(lambda: reconciler_of(a) == f"{host} pid {a.proc.pid}",
             PROPAGATION_S, "the lease")
    assert status_of(a / "dev/status")["state_store"] == "reachable"
    pg_server.pg_ctl("stop", "-m", "fast")
    try:
        wait_for(lambda: status_of(a / "dev/status")["state_store"]
                 .startswith("unreachable since "), 5, "unreachable")
        assert read(a / "dev/pools/train/spec") == "accelerator = cpu\n"
        assert reconciler_of(a) == "unknown"
        assert "stops acting on providers" in a.log.read_text()
        # A write is refused at close(2), not accepted and then lost; the
        # daemon waits a few seconds for a server that restarts only.
        start = time.monotonic()
        with pytest.raises(OSError) as e:
            with open(a / "dev/pools/train/spec", "w") as f:
                f.write("accelerator = cpu\nnodes = 9\n")
        assert e.value.errno == errno.EIO, e.value
        assert time.monotonic() - start < 15
        assert read(a / "dev/pools/train/spec") == "accelerator = cpu\n"
        assert "the state store could not record the change" in \
            status_of(a / "dev/pools/train/status")["last_error"]
    finally:
        pg_server.pg_ctl("start")
    wait_for(lambda: reconciler_of(a) == f"{host} pid {a.proc.pid}", 10,
             "the lease back")
    assert status_of(a / "dev/status")["state_store"] == "reachable"
    a.sh("echo 'accelerator = cpu\nnodes = 2' > dev/pools/train/spec")
    assert revisions(a) == [1, 2, 3]


def events_of(m, env="dev"):
    return read(m / env / "events")


def test_approve_and_refresh_through_any_mount_reach_the_leader(mounts,
                                                                 tmp_path):
    a, b = mounts(2)
    a.sh("mkdir dev && echo 'approval = manual' >> dev/config")
    wait_for(lambda: (b / "dev").exists(), PROPAGATION_S, "dev on b")
    leader, follower = leader_and_follower(a, b)
    endpoint(follower)
    wait_for(lambda: "+ create endpoints/chat" in read(leader / "dev/plan"),
             10, "the leader's plan")
    time.sleep(1)
    assert running_replicas(tmp_path) == [], "nothing runs before approval"
    # The plan is the leader's; approving it through the follower's ctl
    # reaches the leader, which carries it out and says so in events.
    follower.sh("echo approve > dev/ctl")
    wait_for(lambda: state_of(leader) == "ready", 30,
             "the approved endpoint to be ready")
    assert len(running_replicas(tmp_path)) == 1
    wait_for(lambda: "ctl approve (uid 0, through another mount): carried"
             " out" in events_of(follower), PROPAGATION_S,
             "the outcome in events on the follower")
    # What the leader refuses, it says in events too.
    follower.sh("echo 'approve 99' > dev/ctl")
    wait_for(lambda: "ctl approve 99 (uid 0, through another mount): "
             "approve: dev has no pending plan" in events_of(leader),
             PROPAGATION_S, "the refusal in events")
    follower.sh("echo refresh > dev/ctl")
    wait_for(lambda: "ctl refresh (uid 0, through another mount): carried"
             " out" in events_of(follower), PROPAGATION_S, "the refresh")


def test_ctl_without_the_store_says_so(mounts, pg_server):
    (a,) = mounts(1)
    a.sh("mkdir dev")
    host = socket.gethostname()
    wait_for(lambda: reconciler_of(a) == f"{host} pid {a.proc.pid}",
             PROPAGATION_S, "the lease")
    pg_server.pg_ctl("stop", "-m", "fast")
    try:
        wait_for(lambda: reconciler_of(a) == "unknown", 5, "unknown")
        res = a.sh("echo approve > dev/ctl", check=False)
        assert res.returncode != 0
        assert "Resource temporarily unavailable" in res.stderr
    finally:
        pg_server.pg_ctl("start")


def test_server_restarts_mid_traffic_lose_and_duplicate_nothing(mounts,
                                                                pg_server,
                                                                pg_db):
    """Writers on two daemons while the server restarts (a clean stop, then
    a crash): every close(2) that returned 0 is exactly one revision, one
    that failed is none, and the numbers stay contiguous."""
    a, b = mounts(2)
    a.sh("mkdir dev && mkdir dev/pools/p0 dev/pools/p1")
    wait_for(lambda: (b / "dev/pools/p1").exists(), PROPAGATION_S, "pools")
    done, told = threading.Event(), {"ok": [], "failed": []}

    def writer(m, pool):
        n = 0
        while not done.is_set():
            text = f"accelerator = cpu\nlabels.n = {pool}-{n}\n"
            n += 1
            try:
                with open(m / f"dev/pools/{pool}/spec", "w") as f:
                    f.write(text)
                told["ok"].append(text)
            except OSError:
                told["failed"].append(text)
                time.sleep(0.05)

    threads = [threading.Thread(target=writer, args=(m, p))
               for m, p in ((a, "p0"), (b, "p1"))]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        pg_server.pg_ctl("restart", "-m", "fast")
        time.sleep(1)
        pg_server.pg_ctl("restart", "-m", "immediate")
        time.sleep(2)
    finally:
        done.set()
        for t in threads:
            t.join()
    assert len(told["ok"]) > 20
    stored = pg_server.psql(pg_db, "SELECT encode(text, 'escape') FROM"
                                   " history WHERE name IN ('p0', 'p1')")
    for text in told["ok"]:
        assert stored.count(text.splitlines()[1] + "\n") == 1, text
    for text in told["failed"]:
        assert text.splitlines()[1] + "\n" not in stored, text
    revs = [int(r) for r in pg_server.psql(
        pg_db, "SELECT rev FROM revisions ORDER BY rev").split()]
    assert revs == list(range(1, len(revs) + 1))
    wait_for(lambda: revisions(a) == revisions(b) == revs, 10,
             "both mounts to show every revision")
