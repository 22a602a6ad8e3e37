"""The PostgreSQL state store: what only it does. What it shares with
SQLite (revisions, history, audit, secrets, prune) runs on both backends
in test_store.py, test_history_keep.py and test_secrets.py."""
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, Mount, read, revisions, wait_for
from pg import PW, PW_USER, RUN_AS, CommitCutter, Server


def tables(server, db):
    return server.psql(db, "SELECT tablename FROM pg_tables WHERE"
                           " schemaname = 'public' ORDER BY 1").split()


def start_fails(m):
    with pytest.raises(AssertionError) as e:
        m.start()
    assert not os.path.ismount(m.path)
    return str(e.value)


def check(m):
    res = subprocess.run([BIN, "--check", "--state", m.state_url,
                          "--key-file", str(m.key)],
                         capture_output=True, text=True, timeout=30)
    for marker in ("runtime error:", "Sanitizer"):
        assert marker not in res.stderr, res.stderr
    return res


@pytest.fixture
def pgm(tmp_path, pg_server, pg_db):
    m = Mount(tmp_path, store=pg_server.url(pg_db))
    m.db = pg_db
    yield m
    m.stop()
    m.kill_replicas()


def test_a_new_database_gets_the_schema_and_version(pgm, pg_server):
    pgm.start()
    assert pg_server.psql(pgm.db, "SELECT app, version FROM"
                                  " infrafs_schema").strip() == "infrafs|7"
    assert "revisions" in tables(pg_server, pgm.db)


def test_commits_survive_a_kill_and_restart(pgm, pg_server):
    """SIGKILL right after close(2): the revision is in the database."""
    pgm.start()
    pgm.sh("mkdir -p dev/pools/train && echo 'nodes = 3' >"
           " dev/pools/train/spec")
    pgm.kill()
    assert pg_server.psql(
        pgm.db, "SELECT convert_from(spec, 'UTF8') FROM resources"
                " WHERE name = 'train'") == "nodes = 3\n\n"
    pgm.start()
    assert read(pgm / "dev/pools/train/nodes") == "3\n"
    assert revisions(pgm) == [1, 2]
    pgm.sh("echo 4 > dev/pools/train/nodes")
    assert revisions(pgm) == [1, 2, 3]


def test_a_newer_schema_is_refused(pgm, pg_server):
    pgm.start()
    pgm.stop()
    pg_server.psql(pgm.db, "UPDATE infrafs_schema SET version = 999")
    why = start_fails(pgm)
    assert "schema version 999" in why and "use a newer infrafs" in why


def test_a_foreign_database_is_refused_and_left_alone(pgm, pg_server):
    pg_server.psql(pgm.db, "CREATE TABLE notes(x text)")
    why = start_fails(pgm)
    assert "some other program" in why
    assert "not an infrafs state store" in why
    assert tables(pg_server, pgm.db) == ["notes"]


def test_a_second_daemon_shares_the_store(pgm, tmp_path, pg_server):
    """Daemons no longer lock each other out: the second mounts the same
    environments, and leaves no lock row behind when it stops."""
    pgm.start()
    pgm.sh("mkdir dev")
    (tmp_path / "other").mkdir()
    other = Mount(tmp_path / "other", store=pgm.state_url)
    other.key = pgm.key
    try:
        other.start()
        assert "dev" in os.listdir(other.path)
    finally:
        other.stop()
    assert pg_server.psql(pgm.db, "SELECT count(*) FROM infrafs_lock") \
        == "0\n"


def test_a_wrong_password_is_said_without_echoing_it(tmp_path, pg_server):
    db = pg_server.new_database(owner=PW_USER)
    wrong = "not-the-horse-" + os.urandom(4).hex()
    m = Mount(tmp_path, store=pg_server.tcp_url(db, password=wrong))
    why = start_fails(m)
    assert "cannot connect to state store" in why
    assert "password authentication failed" in why
    assert wrong not in why
    assert "postgresql://ifs_pw:***@127.0.0.1" in why
    # The right one mounts, and the log does not show it either.
    m = Mount(tmp_path, store=pg_server.tcp_url(db))
    m.start()
    try:
        m.sh("mkdir dev")
    finally:
        m.stop()
    assert PW not in m.log.read_text()


def test_a_user_who_cannot_create_tables_is_told_why(tmp_path, pg_server):
    """PostgreSQL 15 lets only a database's owner create tables in its
    public schema: the server's reason reaches the user, nothing is
    left half made."""
    db = pg_server.new_database()
    m = Mount(tmp_path, store=pg_server.tcp_url(db))
    why = start_fails(m)
    assert "moving to schema version 6 failed" in why
    assert "permission denied for schema public" in why
    assert tables(pg_server, db) == []


def test_check_reads_a_database_without_writing(pgm, pg_server):
    res = check(pgm)
    assert res.returncode == 0, res.stderr
    assert "does not exist yet" in res.stdout
    assert tables(pg_server, pgm.db) == []
    pgm.start()
    # Other daemons may share the store: one running is no reason to
    # refuse (a second machine's unit checks before it starts).
    res = check(pgm)
    assert res.returncode == 0, res.stderr
    assert "schema: version 7" in res.stdout
    pgm.stop()
    res = check(pgm)
    assert res.returncode == 0, res.stderr
    assert "schema: version 7" in res.stdout
    assert "key: " in res.stdout and "the store's" in res.stdout
    assert res.stdout.rstrip().endswith("ok: " + pgm.state_url)


def test_check_refuses_a_foreign_database(pgm, pg_server):
    pg_server.psql(pgm.db, "CREATE TABLE notes(x text)")
    res = check(pgm)
    assert res.returncode == 1
    assert "not an infrafs state store" in res.stderr
    assert tables(pg_server, pgm.db) == ["notes"]


def test_durability_is_asked_for_whatever_the_server_default(pgm, pg_server):
    """A database whose default is synchronous_commit = off still gets
    durable commits: the daemon's sessions set it on and read it back."""
    pg_server.psql("postgres", f"ALTER DATABASE {pgm.db}"
                               " SET synchronous_commit = off")
    pgm.start()
    pgm.sh("mkdir dev")
    pgm.kill()
    pgm.start()
    assert "dev" in os.listdir(pgm.path)
    pgm.stop()
    assert "durability: synchronous_commit on" in check(pgm).stdout


def test_a_server_restart_loses_no_commit(pgm, pg_server):
    """The sessions end with the server; the daemon connects again, and
    takes its lease back."""
    pgm.start()
    pgm.sh("mkdir -p dev/pools/train && echo 'nodes = 1' >"
           " dev/pools/train/spec")
    pg_server.pg_ctl("restart", "-m", "fast")
    pgm.sh("echo 'nodes = 2' > dev/pools/train/spec")
    assert read(pgm / "dev/history/3/pools/train") == "nodes = 2\n"
    wait_for(lambda: f"reconciler: {socket.gethostname()} pid "
             f"{pgm.proc.pid}\n" in read(pgm / "dev/status"), 10,
             "the lease taken again")
    assert pg_server.psql(
        "postgres", "SELECT count(*) FROM pg_locks WHERE"
                    " locktype = 'advisory' AND granted").strip() == "1"
    pgm.restart()
    assert read(pgm / "dev/pools/train/spec") == "nodes = 2\n"
    assert revisions(pgm) == [1, 2, 3]


def test_both_backends_keep_the_same_columns(tmp_path, pg_server, pg_db):
    """A schema change lands in both backends under one version number
    (a build-time check); here, the columns it made must match too."""
    (tmp_path / "lite").mkdir()
    lite = Mount(tmp_path / "lite")
    lite.start()
    lite.stop()
    sqlite_cols = set()
    for (table,) in lite.sql("SELECT name FROM sqlite_master WHERE"
                             " type = 'table'"):
        for row in lite.sql(f"PRAGMA table_info({table})"):
            sqlite_cols.add((table, row[1]))
    (tmp_path / "pg").mkdir()
    m = Mount(tmp_path / "pg", store=pg_server.url(pg_db))
    m.start()
    m.stop()
    pg_cols = {tuple(r.split("|")) for r in pg_server.psql(
        pg_db, "SELECT table_name, column_name FROM"
               " information_schema.columns WHERE table_schema = 'public'"
               " AND table_name NOT LIKE 'infrafs\\_%'"
               " AND table_name NOT IN ('leases', 'observations')"
               ).split()}
    sqlite_cols = {c for c in sqlite_cols if c[0] != "sqlite_sequence"}
    assert pg_cols == sqlite_cols


def test_a_daemon_whose_sessions_were_ended_catches_up_before_writing(
        pgm, pg_server, tmp_path):
    """Its sessions ended (an administrator) while another daemon
    committed: the first reconnects, sees the other's revision and
    numbers its own after it."""
    pgm.start()
    pgm.sh("mkdir dev")
    pg_server.psql("postgres", "SELECT pg_terminate_backend(pid) FROM"
                               " pg_stat_activity WHERE application_name"
                               f" = 'infrafs' AND datname = '{pgm.db}'")
    (tmp_path / "other").mkdir()
    other = Mount(tmp_path / "other", store=pgm.state_url)
    other.key = pgm.key
    try:
        other.start()
        other.sh("mkdir dev/pools/mine && echo 'accelerator = cpu' >"
                 " dev/pools/mine/spec")
        pgm.sh("mkdir dev/pools/late && echo 'accelerator = cpu' >"
               " dev/pools/late/spec")
        assert sorted(os.listdir(pgm / "dev/pools")) == ["late", "mine"]
        assert revisions(pgm) == [1, 2, 3]
        # The folder and the spec are two commits: wait for the second.
        wait_for(lambda: revisions(other) == [1, 2, 3], 5,
                 "the other daemon to see it")
        assert sorted(os.listdir(other / "dev/pools")) == ["late", "mine"]
        assert "reloading the model failed" not in pgm.log.read_text()
    finally:
        other.stop()


def make_ca_and_server_cert(d):
    """A CA of the test's own, and a server certificate it signed for
    localhost; and a second CA that signed nothing of the server's."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=infrafs test {ca}", "-keyout", d / f"{ca}.key",
            "-out", d / f"{ca}.crt")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", d / "server.key", "-out", d / "server.csr")
    (d / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt",
        "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", d / "ext", "-out", d / "server.crt")


def test_tls_with_verify_full(tmp_path):
    """sslmode=verify-full against a server whose certificate a CA of the
    test signed: the daemon's sessions are encrypted; a CA that did not
    sign it is refused with libpq's reason, and nothing mounts."""
    top = Path(tempfile.mkdtemp(prefix="infrafs-pg-tls-"))
    server = Server(top)
    try:
        server.start()
        certs = top / "certs"
        certs.mkdir()
        make_ca_and_server_cert(certs)
        for f in ("server.crt", "server.key"):
            shutil.chown(certs / f, RUN_AS)
        os.chmod(certs / "server.key", 0o600)
        shutil.chown(certs, RUN_AS)
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write(f"ssl = on\nssl_cert_file = '{certs}/server.crt'\n"
                       f"ssl_key_file = '{certs}/server.key'\n")
        server.pg_ctl("restart")
        db = server.new_database(owner=PW_USER)
        url = (f"postgresql://{PW_USER}:{PW}@localhost:{server.port}/{db}"
               f"?sslmode=verify-full&sslrootcert={certs}/ca.crt")
        (tmp_path / "ok").mkdir()
        m = Mount(tmp_path / "ok", store=url)
        m.start()
        try:
            m.sh("mkdir dev")
            rows = server.psql("postgres", "SELECT s.ssl FROM pg_stat_ssl s"
                               " JOIN pg_stat_activity a USING (pid) WHERE"
                               " a.application_name = 'infrafs'").split()
            assert rows and set(rows) == {"t"}, rows
        finally:
            m.stop()
        (tmp_path / "bad").mkdir()
        bad = Mount(tmp_path / "bad",
                    store=url.replace("ca.crt", "other-ca.crt"))
        why = start_fails(bad)
        assert "cannot connect to state store" in why
        assert "certificate verify failed" in why
        assert PW not in why
    finally:
        server.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_pgpass_and_pg_variables_are_honoured(tmp_path, pg_server):
    """The URL goes to libpq unchanged: a password from PGPASSFILE (the
    ~/.pgpass format), and host, port and user from PG* variables, as
    psql takes them."""
    db = pg_server.new_database(owner=PW_USER)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{db}:{PW_USER}:{PW}\n")
    os.chmod(passfile, 0o600)
    env = {**os.environ, "PGPASSFILE": str(passfile), "PGHOST": "127.0.0.1",
           "PGPORT": str(pg_server.port), "PGUSER": PW_USER,
           "PGSSLMODE": "disable"}
    m = Mount(tmp_path, store=f"postgresql:///{db}", env=env)
    m.start()
    try:
        m.sh("mkdir dev")
        assert "dev" in os.listdir(m.path)
    finally:
        m.stop()
    assert PW not in m.log.read_text()
    # Without the file, the server's refusal is told.
    env.pop("PGPASSFILE")
    env["HOME"] = str(tmp_path)
    (tmp_path / "again").mkdir()
    bad = Mount(tmp_path / "again", store=f"postgresql:///{db}", env=env)
    why = start_fails(bad)
    assert "cannot connect to state store" in why
    assert "password" in why


def test_a_commit_whose_answer_was_lost_is_reported_as_kept(tmp_path,
                                                            pg_server, pg_db):
    """The server commits, the answer never arrives, and the server is
    away longer than the daemon's watcher waits for it (5 s). close(2)
    must still say what the store holds: the daemon asks the server
    about the transaction once it is back, and the revision is there
    once, with the writer told it succeeded."""
    cutter = CommitCutter(pg_server, away_s=7)
    m = Mount(tmp_path, store=cutter.url(pg_db))
    try:
        m.start()
        m.sh("mkdir -p dev/pools/train && echo 'nodes = 1' >"
             " dev/pools/train/spec")
        cutter.armed.set()
        with open(m / "dev/pools/train/spec", "w") as f:
            f.write("nodes = 2\n")
        assert cutter.cut.is_set(), "the answer was not cut"
        assert "the answer to a commit was lost; the server had committed" \
            in m.log.read_text()
        assert pg_server.psql(
            pg_db, "SELECT count(*) FROM history WHERE name = 'train' AND"
                   " encode(text, 'escape') = 'nodes = 2\n'").strip() == "1"
        assert read(m / "dev/pools/train/spec") == "nodes = 2\n"
        assert revisions(m) == [1, 2, 3]
    finally:
        m.stop()
        cutter.close()
