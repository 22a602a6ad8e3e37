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
import subprocess
import tempfile
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
