"""Fixtures that mount the real infrafs daemon in a temporary folder.

Every test drives the mount with real programs (bash, cat, sed, vim, ed,
jq, python's open()) and asserts on what a user would see.
"""
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from pg import pg_db, pg_server, run_sql  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("INFRAFS_BIN", str(ROOT / "build" / "infrafs"))


def wait_for(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Mount:
    """One infrafs daemon in the foreground, on its own state store: a
    SQLite file below tmp, or the URL in store (a PostgreSQL database),
    with the providers' files below tmp either way."""

    def __init__(self, tmp: Path, extra=(), env=None, store=None):
        self.tmp = tmp
        self.env = env
        self.path = tmp / "mnt"
        self.state = tmp / "state" / "state.db"
        self.state_url = store or f"sqlite:{self.state}"
        self.key = tmp / "keys" / "secret.key"
        self.log = tmp / "daemon.log"
        self.extra = list(extra)
        if store:
            self.extra += ["--local-dir", str(self.state.parent)]
        self.proc = None
        self.path.mkdir(exist_ok=True)

    def start(self, extra=()):
        args = [BIN, "-f", "--state", self.state_url,
                "--key-file", str(self.key), *self.extra, *extra,
                str(self.path)]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf,
                                     stderr=subprocess.STDOUT,
                                     env=self.env)
        wait_for(lambda: os.path.ismount(self.path) or
                 self.proc.poll() is not None, what="mount")
        if self.proc.poll() is not None:
            raise AssertionError("daemon exited: " + self.log.read_text())
        return self

    def stop(self):
        if self.proc is None:
            return
        if os.path.ismount(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)],
                           check=False)
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        self.check_log()
        return rc

    def replicas(self, leaders_only=True):
        """pids of replica processes this mount's daemon started: they
        write their output to log files below the test's folder, or to
        a pipe whose log keeper (its stdin that pipe) writes there. A
        replica is the leader of its own session; its children (a shell
        wrapper's helpers) share the marker but are not replicas."""
        procs, ours = [], set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                env = open(f"/proc/{pid}/environ", "rb").read()
                out = os.readlink(f"/proc/{pid}/fd/1")
                stat = open(f"/proc/{pid}/stat").read()
                inp = os.readlink(f"/proc/{pid}/fd/0")
            except OSError:
                continue
            if out.startswith(str(self.tmp)):
                ours.add(inp)
            procs.append((pid, env, out, stat))
        found = []
        for pid, env, out, stat in procs:
            session = int(stat.rsplit(")", 1)[1].split()[3])
            if leaders_only and session != int(pid):
                continue
            if b"INFRAFS_REPLICA=" in env and \
                    (out.startswith(str(self.tmp)) or out in ours):
                found.append(int(pid))
        return found

    @property
    def on_sqlite(self):
        return self.state_url.startswith("sqlite:")

    def sql(self, statement):
        """Runs one SQL statement on the stopped daemon's store, in what
        both backends' SQL share; returns its rows as lists of strings."""
        if not self.on_sqlite:
            out = run_sql(self.state_url, statement)
            return [line.split("|") for line in out.splitlines()]
        db = sqlite3.connect(self.state)
        try:
            rows = db.execute(statement).fetchall()
            db.commit()
        finally:
            db.close()
        return [[str(v) for v in row] for row in rows]

    def text_value(self, text):
        """text as an SQL literal of a stored string (bytea in
        PostgreSQL), for tests that change the store behind the daemon."""
        quoted = "'" + text.replace("'", "''") + "'"
        return quoted if self.on_sqlite else f"convert_to({quoted}, 'UTF8')"

    def text_column(self, column):
        """A stored string column read back as text."""
        return column if self.on_sqlite else \
            f"convert_from({column}, 'UTF8')"

    def store_arg(self):
        """The store as the tools take it."""
        return f"sqlite:{self.state}" if self.on_sqlite else self.state_url

    def store_dump(self):
        """Every byte the store holds: its files, or pg_dump's text, with
        bytea shown as hex."""
        if self.on_sqlite:
            return b"".join(p.read_bytes()
                            for p in self.state.parent.rglob("*")
                            if p.is_file())
        return subprocess.run(["pg_dump", "-d", self.state_url],
                              capture_output=True, check=True).stdout

    def kill_replicas(self):
        for pid in self.replicas(leaders_only=False):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass

    def check_log(self):
        """Sanitizer reports fail the test that caused them."""
        text = self.log.read_text(errors="replace")
        for marker in ("runtime error:", "AddressSanitizer",
                       "LeakSanitizer", "ThreadSanitizer"):
            assert marker not in text, f"daemon log:\n{text}"

    def kill(self):
        """SIGKILL the daemon, as a crash would, and clean the mount up."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.logf.close()
        subprocess.run(["fusermount3", "-u", "-z", str(self.path)],
                       check=False)

    def restart(self):
        self.stop()
        return self.start()

    def __truediv__(self, other):
        return self.path / other

    def sh(self, script, check=True, user=None):
        """Runs a bash script in the mount; returns the CompletedProcess."""
        cmd = ["bash", "-c", script]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}",
                   "--clear-groups", *cmd]
        res = subprocess.run(cmd, cwd=self.path, capture_output=True,
                             text=True)
        if check and res.returncode != 0:
            raise AssertionError(
                f"script failed ({res.returncode}):\n{script}\n"
                f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return res


# Tests that run on each state-store backend say so with
# @pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True);
# INFRAFS_TEST_BACKEND=postgresql runs every other one on PostgreSQL too.
BOTH_BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture
def backend(request):
    return getattr(request, "param",
                   os.environ.get("INFRAFS_TEST_BACKEND", "sqlite"))


@pytest.fixture
def store_url(request, backend):
    """The URL of a fresh store on the test's backend; None: SQLite in
    the test's folder, Mount's default."""
    if backend == "sqlite":
        return None
    server = request.getfixturevalue("pg_server")
    return server.url(server.new_database())


@pytest.fixture
def mnt(tmp_path, store_url):
    m = Mount(tmp_path, store=store_url).start()
    yield m
    m.stop()
    # Replicas outlive the daemon by design; tests clean up after theirs.
    m.kill_replicas()


@pytest.fixture
def env(mnt):
    """A mount with an environment `dev` and a committed pool `train`."""
    mnt.sh("mkdir dev && mkdir dev/pools/train && "
           "echo 'accelerator = nvidia-t4' > dev/pools/train/spec")
    return mnt


def read(path):
    return Path(path).read_text()


def status_of(path):
    """Parses a `key: value` status file into a dict."""
    out = {}
    for line in read(path).splitlines():
        key, _, value = line.partition(": ")
        out[key.rstrip(":")] = value
    return out


def revisions(mnt, env="dev"):
    return sorted(int(r) for r in os.listdir(mnt / env / "history"))


def have(program):
    return shutil.which(program) is not None


def throwaway_user(name):
    """A user who exists only for one test (a generator for a fixture):
    yields its uid, and deletes it afterwards."""
    subprocess.run(["userdel", name], capture_output=True)
    for _ in range(20):
        if subprocess.run(["useradd", "-M", name],
                          capture_output=True).returncode == 0:
            break
        time.sleep(0.2)
    yield int(subprocess.check_output(["id", "-u", name]))
    subprocess.run(["userdel", name], capture_output=True)


def write_as(m, uid, name, text):
    """Writes a file as uid; returns the errno close(2) or write(2) gave."""
    script = ("import os, sys\n"
              "try:\n"
              f"    with open({name!r}, 'w') as f:\n"
              "        f.write(sys.stdin.read())\n"
              "except OSError as e:\n"
              "    sys.exit(e.errno)\n")
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                           "--clear-groups", "/usr/bin/python3", "-c",
                           script], input=text, text=True,
                          cwd=m.path).returncode
