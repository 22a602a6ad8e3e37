"""infrafs --check: what a start would refuse, found without mounting and
without changing a byte of the store, its -wal, -shm or key file."""
import os
import sqlite3
import subprocess

from conftest import BIN, Mount
from test_store_refusal import (crash_with_wal, damage_pages, folder_state,
                                store_with_data)


def check(m, key=None):
    return subprocess.run(
        [BIN, "--check", "--state", f"sqlite:{m.state}", "--key-file",
         str(key or m.key)], capture_output=True, text=True, timeout=60)


def checked_untouched(m, key=None):
    """Runs --check; asserts the store's folder and the key's are exactly
    as they were."""
    before = folder_state(m.state.parent) if m.state.parent.exists() else None
    keys = folder_state(m.key.parent) if m.key.parent.exists() else None
    res = check(m, key)
    after = folder_state(m.state.parent) if m.state.parent.exists() else None
    assert after == before
    assert (folder_state(m.key.parent) if m.key.parent.exists()
            else None) == keys
    return res


def test_good_store_passes_and_is_untouched(tmp_path):
    m = store_with_data(tmp_path)
    res = checked_untouched(m)
    assert res.returncode == 0, res.stderr
    assert "integrity: ok" in res.stdout
    assert "the store's" in res.stdout  # the key matches the fingerprint
    assert res.stdout.rstrip().endswith(f"ok: sqlite:{m.state}")


def test_store_after_a_crash_passes_and_keeps_its_wal(tmp_path):
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    res = checked_untouched(m)
    assert res.returncode == 0, res.stderr


def test_new_path_passes_and_makes_nothing(tmp_path):
    m = Mount(tmp_path)
    res = check(m)
    assert res.returncode == 0, res.stderr
    assert "does not exist yet" in res.stdout
    assert not m.state.parent.exists() and not m.key.exists()


def test_damaged_store_fails_with_the_reason(tmp_path):
    m = store_with_data(tmp_path)
    damage_pages(m.state)
    res = checked_untouched(m)
    assert res.returncode == 1
    assert "integrity" in res.stderr or "cannot be read" in res.stderr


def test_newer_schema_fails(tmp_path):
    m = store_with_data(tmp_path)
    db = sqlite3.connect(m.state)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    res = checked_untouched(m)
    assert res.returncode == 1 and "schema version 999" in res.stderr


def test_foreign_database_fails(tmp_path):
    m = Mount(tmp_path)
    m.state.parent.mkdir(parents=True)
    db = sqlite3.connect(m.state)
    db.execute("CREATE TABLE notes(x)")
    db.commit()
    db.close()
    res = checked_untouched(m)
    assert res.returncode == 1
    assert "not an infrafs state store" in res.stderr


def test_wrong_or_missing_key_fails(tmp_path):
    m = store_with_data(tmp_path)
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    res = checked_untouched(m, key=other)
    assert res.returncode == 1
    assert "is not the key that sealed" in res.stderr
    res = checked_untouched(m, key=tmp_path / "gone.key")
    assert res.returncode == 1 and "does not exist" in res.stderr
    assert not (tmp_path / "gone.key").exists()


def test_store_in_use_fails(tmp_path):
    m = Mount(tmp_path).start()
    try:
        res = check(m)
        assert res.returncode == 1 and "in use" in res.stderr
        assert f"pid {m.proc.pid}" in res.stderr
    finally:
        m.stop()


def test_check_takes_no_mountpoint(tmp_path):
    m = Mount(tmp_path)
    res = subprocess.run([BIN, "--check", "--state", f"sqlite:{m.state}",
                          str(m.path)], capture_output=True, text=True)
    assert res.returncode == 2 and "no MOUNTPOINT" in res.stderr
