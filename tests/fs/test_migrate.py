"""infrafs-migrate moves a team's store from SQLite to PostgreSQL and
back: everything a mount shows comes across (revisions, history and
diffs, the audit chain, events, sealed secrets, owners and modes), the
tool proves the copy, and it refuses what it must not touch."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, Mount, read, revisions, wait_for

TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
MIGRATE = TOOLS / "infrafs-migrate"
VERIFY = TOOLS / "infrafs-audit-verify"


def migrate(src, dst):
    return subprocess.run([str(MIGRATE), src, dst], capture_output=True,
                          text=True, timeout=120)


def fill(m, users=None):
    """A store with a bit of everything a mount shows."""
    m.sh("mkdir dev staging && mkdir dev/pools/train dev/endpoints/chat")
    m.sh("echo 'accelerator = cpu' > dev/pools/train/spec")
    m.sh("echo 'nodes = 2' >> dev/pools/train/spec")
    m.sh("printf hunter2 > dev/secrets/token")
    m.sh("echo 'max_hourly_cost_usd = 50' > dev/policy")
    m.sh("chmod 750 staging")
    m.sh("rmdir dev/endpoints/chat")


def view(m):
    """What a user reads back: the same on any backend."""
    out = {}
    for env in ("dev", "staging"):
        out[env] = {
            "revisions": revisions(m, env),
            "audit": read(m / env / "audit"),
            "mode": oct(os.stat(m / env).st_mode & 0o777),
        }
        for rev in revisions(m, env):
            out[env][f"diff {rev}"] = read(m / env / f"history/{rev}/diff")
    out["spec"] = read(m / "dev/pools/train/spec")
    out["events"] = read(m / "dev/pools/train/events")
    out["policy"] = read(m / "dev/policy")
    out["pools"] = sorted(os.listdir(m / "dev/pools"))
    out["endpoints"] = sorted(os.listdir(m / "dev/endpoints"))
    return out


def secret_opens(m, tmp_path):
    """The sealed value opens with the same key on the copy (it is bound
    to its environment's id, which must not change): a replica that
    names it gets the value."""
    out = tmp_path / "token.out"
    m.sh("mkdir dev/endpoints/reader")
    (m / "dev/endpoints/reader/spec").write_text(
        f"command = echo $TOKEN > {out}; exec sleep 60\n"
        "env.TOKEN = secret:token\n")
    wait_for(lambda: out.exists() and read(out) == "hunter2\n", 30,
             "the replica to get the secret; status:\n" +
             read(m / "dev/endpoints/reader/status"))
    m.sh("rmdir dev/endpoints/reader")


def test_sqlite_to_postgresql_and_back(tmp_path, pg_server, pg_db):
    (tmp_path / "lite").mkdir()
    lite = Mount(tmp_path / "lite")
    lite.start()
    fill(lite)
    before = view(lite)
    lite.stop()
    url = pg_server.url(pg_db)

    res = migrate(lite.state_url, url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"copied and verified: {lite.state_url} -> {url}" in res.stdout
    assert "revisions: " in res.stdout and "chain intact" in res.stdout
    res = subprocess.run([str(VERIFY), url], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    (tmp_path / "pg").mkdir()
    pg = Mount(tmp_path / "pg", store=url)
    pg.key = lite.key
    pg.start()
    try:
        assert view(pg) == before
        assert "secrets_unavailable" not in read(pg / "dev/status")
        secret_opens(pg, tmp_path)
        # It goes on numbering where the source stopped.
        pg.sh("echo 'nodes = 3' >> dev/pools/train/spec")
        last = before["dev"]["revisions"][-1]
        assert revisions(pg)[-1] == last + 3  # the reader, its rmdir, this
        pg.sh("mkdir dev/pools/more")
        after = view(pg)
    finally:
        pg.stop()

    # And back, for a backup.
    back = tmp_path / "back" / "state.db"
    back.parent.mkdir()
    res = migrate(url, f"sqlite:{back}")
    assert res.returncode == 0, res.stdout + res.stderr
    (tmp_path / "back" / "m").mkdir()
    again = Mount(tmp_path / "back" / "m")
    again.state = back
    again.state_url = f"sqlite:{back}"
    again.key = lite.key
    again.start()
    try:
        assert view(again) == after
    finally:
        again.stop()


def test_a_destination_that_holds_a_store_is_refused(tmp_path, pg_server,
                                                     pg_db):
    (tmp_path / "a").mkdir()
    a = Mount(tmp_path / "a")
    a.start()
    a.sh("mkdir dev")
    a.stop()
    url = pg_server.url(pg_db)
    assert migrate(a.state_url, url).returncode == 0
    res = migrate(a.state_url, url)
    assert res.returncode == 2
    assert "already holds a state store" in res.stderr


def test_a_mounted_store_is_refused(tmp_path, pg_server, pg_db):
    """A daemon committing during the copy would be lost: either side in
    use is refused, and nothing is written."""
    m = Mount(tmp_path).start()
    try:
        m.sh("mkdir dev")
        res = migrate(m.state_url, pg_server.url(pg_db))
        assert res.returncode == 2
        assert "while mounted" in res.stderr or "in use" in res.stderr
    finally:
        m.stop()
    assert pg_server.psql(pg_db, "SELECT count(*) FROM pg_tables WHERE"
                                 " schemaname = 'public'") == "0\n"
    (tmp_path / "pg").mkdir()
    pg = Mount(tmp_path / "pg", store=pg_server.url(pg_db)).start()
    try:
        pg.sh("mkdir dev")
        res = migrate(pg.state_url, f"sqlite:{tmp_path}/copy.db")
        assert res.returncode == 2
        assert "is mounted by 1 infrafs daemon" in res.stderr
    finally:
        pg.stop()


@pytest.mark.parametrize("bad", ["mysql://x/y", "sqlite:"])
def test_an_unknown_store_is_refused(tmp_path, bad):
    res = migrate(bad, f"sqlite:{tmp_path}/x.db")
    assert res.returncode == 2
    assert "use sqlite:PATH or postgresql://" in res.stderr
