"""infrafs-backup: a consistent copy of a live store, checked before it
is put in place, that mounts with everything back."""
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import Mount, read, revisions, status_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
BACKUP = TOOLS / "infrafs-backup"
VERIFY = TOOLS / "infrafs-audit-verify"
EP = "dev/endpoints/tok"


@pytest.fixture(autouse=True)
def tool_built():
    """The build makes the tool; a missing one is a failure, not a skip."""
    assert BACKUP.exists(), f"infrafs-backup not built in {TOOLS}"


def backup(state, dest, *opts):
    return subprocess.run([str(BACKUP), *opts, f"sqlite:{state}", str(dest)],
                          capture_output=True, text=True, timeout=60)


def leftovers(folder):
    return [p.name for p in Path(folder).iterdir() if ".tmp-" in p.name]


def history_of(m, env="dev"):
    return {r: (read(m / env / "history" / str(r) / "info"),
                read(m / env / "history" / str(r) / "diff"))
            for r in revisions(m, env)}


def mount_at(folder, backup_file=None, key=None):
    """A Mount in its own folder; restored from backup_file, with the key
    file given, when there is one."""
    folder.mkdir(exist_ok=True)
    m = Mount(folder)
    if backup_file is not None:
        m.state.parent.mkdir(exist_ok=True)
        shutil.copyfile(backup_file, m.state)
        m.key = key
    return m


def environ_of(pid):
    return open(f"/proc/{pid}/environ", "rb").read().split(b"\0")


@pytest.fixture
def busy(tmp_path):
    """A mount with specs, several revisions, a secret and audit lines."""
    m = mount_at(tmp_path / "live").start()
    m.sh("mkdir -p dev prod dev/pools/train dev/pools/w prod/pools/p && "
         "echo 'accelerator = nvidia-t4' > dev/pools/train/spec && "
         "echo 'labels.team = nlp' >> dev/pools/train/spec && "
         "echo 'nodes = 1' > prod/pools/p/spec && "
         "echo 'max_nodes_per_pool = 8' >> dev/policy && "
         "printf hunter2 > dev/secrets/hf")
    yield m
    m.stop()
    m.kill_replicas()


def test_backup_while_writing_restores_everything(busy, tmp_path):
    m = busy
    acked = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            (m / "dev/pools/w/spec").write_text(f"labels.step = s{i}\n")
            # close() returned: the revision is committed.
            acked.append(f"s{i}")

    t = threading.Thread(target=writer)
    t.start()
    dests = [tmp_path / f"backup{i}.db" for i in range(3)]
    try:
        wait_for(lambda: len(acked) > 5, what="the writer to commit")
        results = []
        for dest in dests:
            results.append(backup(m.state, dest))
            n = len(acked)
            wait_for(lambda: len(acked) > n + 2, what="more commits")
    finally:
        stop.set()
        t.join()
    for res in results:
        assert res.returncode == 0, res.stderr
    assert "dev: " in results[0].stdout and " revisions" in results[0].stdout
    assert "bytes" in results[0].stdout
    assert "chain intact" in results[0].stdout
    assert leftovers(tmp_path) == []
    for dest in dests:
        # Private like the store, and sealed: neither value nor key in it.
        assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
        data = dest.read_bytes()
        assert b"hunter2" not in data and m.key.read_bytes() not in data
    specs = {p: read(m / p) for p in
             ["dev/pools/train/spec", "prod/pools/p/spec", "dev/policy"]}
    hist = history_of(m)
    audit = read(m / "dev/audit")
    m.stop()
    m.kill_replicas()

    for dest in dests:
        assert subprocess.run([str(VERIFY), str(dest)]).returncode == 0
        r = mount_at(tmp_path / ("restore-" + dest.stem), dest,
                     m.key).start()
        try:
            for p, text in specs.items():
                assert read(r / p) == text, p
            revs = revisions(r)
            assert revs == list(range(1, len(revs) + 1))
            # Whole revisions only: each one as the live store had it.
            for rev in revs:
                assert hist[rev] == (
                    read(r / f"dev/history/{rev}/info"),
                    read(r / f"dev/history/{rev}/diff")), rev
            # The newest one holds a write the writer was told was done.
            step = read(r / "dev/pools/w/spec").split("= ")[1].strip()
            assert step in acked
            assert audit.startswith(read(r / "dev/audit"))
            assert os.listdir(r / "dev/secrets") == ["hf"]
        finally:
            r.stop()

    # The secret opens with the same key file: an endpoint gets it.
    r = mount_at(tmp_path / "restore-backup0", dests[0], m.key).start()
    try:
        assert "secrets_unavailable" not in status_of(r / "dev/status")
        r.sh("mkdir dev/endpoints/tok")
        (r / EP / "spec").write_text(
            "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
            "health_path = /\nenv.HF_TOKEN = secret:hf\n")
        wait_for(lambda: read(r / EP / "state") == "ready\n", 20,
                 "endpoint ready")
        (pid,) = r.replicas()
        assert b"HF_TOKEN=hunter2" in environ_of(pid)
    finally:
        r.stop()
        r.kill_replicas()


def test_backup_without_its_key_cannot_open_secrets(busy, tmp_path):
    dest = tmp_path / "b.db"
    assert backup(busy.state, dest).returncode == 0
    key = tmp_path / "other.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    r = mount_at(tmp_path / "restore", dest, key).start()
    try:
        assert "is not the key that sealed" in status_of(
            r / "dev/status")["secrets_unavailable"]
    finally:
        r.stop()


def test_existing_dest_is_refused_unless_forced(busy, tmp_path):
    dest = tmp_path / "b.db"
    dest.write_text("precious\n")
    res = backup(busy.state, dest)
    assert res.returncode == 1
    assert "exists" in res.stderr and "--force" in res.stderr
    assert dest.read_text() == "precious\n"
    res = backup(busy.state, dest, "--force")
    assert res.returncode == 0, res.stderr
    assert dest.read_bytes().startswith(b"SQLite format 3\0")
    assert leftovers(tmp_path) == []


def test_the_store_itself_is_never_the_dest(busy):
    before = busy.state.read_bytes()
    res = backup(busy.state, busy.state, "--force")
    assert res.returncode == 1
    assert "state store itself" in res.stderr
    assert busy.state.read_bytes() == before


def test_damaged_store_is_refused(busy, tmp_path):
    m = busy
    m.stop()
    with open(m.state, "r+b") as f:  # garbage over the second page
        f.seek(4096)
        f.write(b"\xa5" * 4096)
    dest = tmp_path / "b.db"
    res = backup(m.state, dest)
    assert res.returncode == 1
    assert "integrity" in res.stderr and "no backup was written" in res.stderr
    assert not dest.exists()
    assert leftovers(tmp_path) == []


def test_foreign_file_is_refused(tmp_path):
    import sqlite3
    other = tmp_path / "other.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE notes(x)")
    db.commit()
    db.close()
    res = backup(other, tmp_path / "b.db")
    assert res.returncode == 1
    assert "not an infrafs state store" in res.stderr
    assert not (tmp_path / "b.db").exists()


def test_a_broken_audit_chain_is_refused(tmp_path):
    import sqlite3
    m = Mount(tmp_path).start()
    m.sh("mkdir dev && echo 'approval = manual' >> dev/config")
    m.stop()
    db = sqlite3.connect(m.state)
    db.execute("UPDATE audit SET line = replace(line, 'uid=0', 'uid=1')"
               " WHERE id = (SELECT max(id) FROM audit)")
    db.commit()
    db.close()
    res = backup(m.state, tmp_path / "b.db")
    assert res.returncode == 1
    assert "the newest, was changed" in res.stderr
    assert "audit chain" in res.stderr
    assert not (tmp_path / "b.db").exists()
