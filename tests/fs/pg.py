"""A PostgreSQL server for the tests, from Debian's binaries.

One server per test session, started as `nobody` (the tests run as root,
and the server refuses to), with its data, its unix socket and its log in
one temporary folder, listening on a free loopback TCP port too. Each test
gets a fresh database; the superuser `ifs_admin` connects over the socket
without a password, while TCP connections need one (scram-sha-256), so
the wrong-password case is real.
"""
import itertools
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("INFRAFS_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "nobody"
ADMIN = "ifs_admin"
# A role for the TCP tests, and its password.
PW_USER = "ifs_pw"
PW = "right-horse-battery"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, top: Path):
        self.top = top
        self.data = top / "data"
        self.sock = top / "sock"
        self.port = free_port()
        self.count = itertools.count(1)

    def as_owner(self, *args):
        return subprocess.run(["runuser", "-u", RUN_AS, "--", *map(str, args)],
                              check=True, capture_output=True, text=True)

    def start(self):
        self.sock.mkdir()
        shutil.chown(self.top, RUN_AS)
        shutil.chown(self.sock, RUN_AS)
        self.as_owner(PG_BIN / "initdb", "-D", self.data, "-U", ADMIN,
                      "-E", "UTF8", "--locale=C", "--auth-local=trust",
                      "--auth-host=scram-sha-256")
        self.pg_ctl("start")
        self.psql("postgres", f"CREATE ROLE {PW_USER} LOGIN PASSWORD '{PW}'")
        return self

    def pg_ctl(self, action, *args):
        self.as_owner(PG_BIN / "pg_ctl", "-D", self.data, "-l",
                      self.top / "server.log", "-w", "-o",
                      f"-k {self.sock} -p {self.port} "
                      "-c listen_addresses=127.0.0.1", *args, action)

    def stop(self):
        subprocess.run(["runuser", "-u", RUN_AS, "--", str(PG_BIN / "pg_ctl"),
                        "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)

    def psql(self, db, sql):
        """Runs sql in db as the superuser; returns its rows, |-separated."""
        res = subprocess.run(
            ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
             "-h", str(self.sock), "-p", str(self.port), "-U", ADMIN,
             "-d", db, "-c", sql],
            capture_output=True, text=True)
        if res.returncode != 0:
            raise AssertionError(f"psql: {sql}\n{res.stderr}")
        return res.stdout

    def new_database(self, owner=ADMIN):
        name = f"t{next(self.count)}"
        self.psql("postgres", f"CREATE DATABASE {name} OWNER {owner}")
        return name

    def url(self, db, user=ADMIN):
        """The unix-socket URL of db, as a user would write it."""
        return (f"postgresql://{user}@/{db}?host={self.sock}"
                f"&port={self.port}")

    def tcp_url(self, db, user=PW_USER, password=PW):
        return (f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{db}"
                "?sslmode=disable")


def run_sql(url, sql):
    """Runs sql on the database at url; returns its rows, |-separated."""
    res = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                          "-d", url, "-c", sql],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"psql: {sql}\n{res.stderr}")
    return res.stdout


@pytest.fixture(scope="session")
def pg_server():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {PG_BIN}")
    top = Path(tempfile.mkdtemp(prefix="infrafs-pg-"))
    server = Server(top)
    try:
        server.start()
    except subprocess.CalledProcessError as e:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)
        raise AssertionError(f"PostgreSQL did not start:\n{e.stderr}")
    yield server
    server.stop()
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def pg_db(pg_server):
    """A fresh, empty database; its name."""
    return pg_server.new_database()


def shut(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class CommitCutter:
    """A TCP front for the server's unix socket that can lose the answer
    to a commit: armed, it passes on the COMMIT of the next transaction
    that claimed a revision (`infrafs_seq`), lets the server carry it out,
    then ends every session without the answer and refuses connections
    for `away_s`, as a server that crashed right after committing and
    took a while to come back."""

    def __init__(self, server: Server, away_s: float):
        self.target = str(server.sock / f".s.PGSQL.{server.port}")
        self.away_s = away_s
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.refuse_until = 0.0
        self.lock = threading.Lock()
        self.pairs = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db, user=ADMIN):
        return (f"postgresql://{user}@127.0.0.1:{self.port}/{db}"
                "?sslmode=disable")

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.refuse_until:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            muted = threading.Event()
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._to_server,
                             args=(client, upstream, muted),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, muted),
                             daemon=True).start()

    @staticmethod
    def _pipe(src, dst, muted):
        try:
            while (data := src.recv(65536)):
                if not muted.is_set():
                    dst.sendall(data)
        except OSError:
            pass
        shut(src, dst)

    def _to_server(self, client, upstream, muted):
        """Passes messages one by one, so a COMMIT can be singled out;
        the first message (startup, or a refused SSL request followed by
        the startup) carries no type byte."""
        buf, typed, claimed = b"", False, False
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    head = 5 if typed else 4
                    if len(buf) < head:
                        break
                    size = struct.unpack("!I", buf[head - 4:head])[0]
                    if len(buf) < head - 4 + size:
                        break
                    msg, buf = buf[:head - 4 + size], buf[head - 4 + size:]
                    if not typed and size >= 8 and \
                            struct.unpack("!I", msg[4:8])[0] == 196608:
                        typed = True
                    if typed and b"SET seq = seq + 1" in msg:
                        claimed = True
                    commit = typed and msg[:1] == b"Q" and \
                        msg[5:].startswith(b"COMMIT")
                    cut = commit and claimed and self.armed.is_set()
                    if cut:
                        muted.set()
                    upstream.sendall(msg)
                    if cut:
                        self._cut_everything()
                        return
                    if commit:
                        claimed = False
        except OSError:
            pass
        shut(client, upstream)

    def _cut_everything(self):
        self.armed.clear()
        time.sleep(0.5)  # the server commits; its answer goes nowhere
        self.refuse_until = time.monotonic() + self.away_s
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            shut(*pair)
        self.cut.set()

    def close(self):
        self.listener.close()
