"""A store that infrafs refuses to start on is left exactly as it was:
the database, its -wal and -shm keep every byte, and no file appears or
goes away beside them."""
import hashlib
import os
import sqlite3
import subprocess
import sys

from conftest import BIN, Mount


def folder_state(folder):
    """Every name in the store's folder, and the sha256 of each file of the
    store (the database, its -wal and -shm). The lock file's text names the
    last daemon to start, so only its presence counts; so do the folders
    the daemon keeps beside the store."""
    state = {}
    for name in sorted(os.listdir(folder)):
        path = folder / name
        if name.startswith("state.db") and not name.endswith(".lock"):
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[name] = "present"
    return state


def refused_start(m):
    """Starts the daemon on m's store, expects it to refuse, and returns
    what it said."""
    try:
        proc = subprocess.run(
            [BIN, "-f", "--state", f"sqlite:{m.state}", "--key-file",
             str(m.key), str(m.path)], capture_output=True, text=True,
            timeout=20)
    except subprocess.TimeoutExpired:
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)])
        raise AssertionError("the daemon started on a store to refuse")
    assert proc.returncode != 0, proc.stderr
    assert not os.path.ismount(m.path)
    return proc.stderr


def assert_refused_and_untouched(m, *said):
    before = folder_state(m.state.parent)
    stderr = refused_start(m)
    assert any(s in stderr for s in said), stderr
    assert "it was left as it is" in stderr or "newer infrafs" in stderr
    assert folder_state(m.state.parent) == before
    return stderr


def store_with_data(tmp_path):
    """A store of many pages, cleanly stopped: no -wal beside it."""
    m = Mount(tmp_path).start()
    try:
        m.sh("mkdir dev && for i in $(seq 1 40); do mkdir dev/pools/p$i "
             "&& echo 'accelerator = nvidia-t4' > dev/pools/p$i/spec && "
             "echo 'nodes = 2' >> dev/pools/p$i/spec; done")
    finally:
        m.stop()
    assert not os.path.exists(f"{m.state}-wal")
    return m


def crash_with_wal(m):
    """Starts m again, changes one spec and kills the daemon: the change
    lives only in the -wal, beside its -shm."""
    m.start()
    try:
        m.sh("echo 'nodes = 3' > dev/pools/p1/spec")
    finally:
        m.kill()
    assert os.path.getsize(f"{m.state}-wal") > 0
    assert os.path.exists(f"{m.state}-shm")


def damage_pages(path, first=1):
    """Overwrites every page from `first` on (4096-byte pages)."""
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    data[first * 4096:] = b"\xa5" * (len(data) - first * 4096)
    path.write_bytes(bytes(data))


def test_damaged_page_without_wal_is_left_as_it_was(tmp_path):
    m = store_with_data(tmp_path)
    damage_pages(m.state)
    assert_refused_and_untouched(m, "integrity", "cannot be read")
    assert not os.path.exists(f"{m.state}-wal")
    assert not os.path.exists(f"{m.state}-shm")


def test_damaged_page_with_wal_after_a_crash_is_left_as_it_was(tmp_path):
    """Closing a writing connection would checkpoint the -wal into the
    damaged main file and delete the -wal, the only good copy of the
    last change."""
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    damage_pages(m.state)
    assert_refused_and_untouched(m, "integrity", "cannot be read")
    # A second refused start finds it just the same.
    assert_refused_and_untouched(m, "integrity", "cannot be read")


def test_truncated_store_is_left_as_it_was(tmp_path):
    m = store_with_data(tmp_path)
    size = m.state.stat().st_size
    os.truncate(m.state, size // 2 // 4096 * 4096)
    assert_refused_and_untouched(m, "integrity", "cannot be read")


def test_truncated_store_after_a_crash_is_left_as_it_was(tmp_path):
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    size = m.state.stat().st_size
    os.truncate(m.state, size // 2 // 4096 * 4096)
    assert_refused_and_untouched(m, "integrity", "cannot be read")


def test_emptied_store_keeps_its_wal(tmp_path):
    """SQLite deletes the -wal of an empty database file as stale; a main
    file emptied by accident must not take its -wal with it, nor be made
    into a new, empty store."""
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    os.truncate(m.state, 0)
    stderr = assert_refused_and_untouched(m, "is empty or missing")
    assert "-wal holds" in stderr


def test_foreign_database_keeps_its_journal_mode(tmp_path):
    m = Mount(tmp_path)
    m.state.parent.mkdir(parents=True)
    db = sqlite3.connect(m.state)
    db.execute("CREATE TABLE notes(x)")
    db.execute("INSERT INTO notes VALUES('mine')")
    db.commit()
    db.close()
    assert_refused_and_untouched(m, "not an infrafs state store")
    assert os.listdir(m.state.parent) == ["state.db"]
    header = m.state.read_bytes()[:20]
    assert header[18:20] == b"\x01\x01"  # rollback journal, not WAL
    db = sqlite3.connect(m.state)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert db.execute("SELECT x FROM notes").fetchall() == [("mine",)]
    db.close()


def test_newer_schema_is_left_as_it_was(tmp_path):
    m = store_with_data(tmp_path)
    db = sqlite3.connect(m.state)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    assert_refused_and_untouched(m, "schema version 999")


def test_newer_schema_after_a_crash_is_left_as_it_was(tmp_path):
    """The newer daemon crashed: its schema bump is still in the -wal."""
    m = store_with_data(tmp_path)
    subprocess.run([sys.executable, "-c",
                    "import os, sqlite3, sys\n"
                    "db = sqlite3.connect(sys.argv[1])\n"
                    "db.execute('PRAGMA user_version = 999')\n"
                    "db.commit()\n"
                    "os._exit(0)\n", str(m.state)], check=True)
    assert os.path.getsize(f"{m.state}-wal") > 0
    assert_refused_and_untouched(m, "schema version 999")


def test_a_new_path_still_makes_a_new_store(tmp_path):
    m = Mount(tmp_path)
    assert not m.state.parent.exists()
    m.start()
    try:
        m.sh("mkdir dev")
        assert os.path.isdir(m / "dev")
    finally:
        m.stop()
    db = sqlite3.connect(m.state)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA application_id").fetchone()[0] == 0x696e6672
    db.close()


def assert_starts_with_last_change(m):
    m.start()
    try:
        assert (m / "dev/pools/p1/spec").read_text() == "nodes = 3\n"
    finally:
        m.stop()


def crash_and_lose_shm(tmp_path):
    """A store whose last change is in its -wal, without the -shm: what a
    copy of the database and its -wal gives back."""
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    os.remove(f"{m.state}-shm")
    return m


def test_a_good_store_after_a_crash_starts_with_its_last_change(tmp_path):
    m = store_with_data(tmp_path)
    crash_with_wal(m)
    assert_starts_with_last_change(m)


def test_a_store_copied_without_its_shm_starts_with_its_last_change(tmp_path):
    """SQLite builds the -shm again from the -wal."""
    assert_starts_with_last_change(crash_and_lose_shm(tmp_path))


def test_damaged_store_without_its_shm_keeps_database_and_wal(tmp_path):
    """Reading a -wal needs a -shm: the one file a refused start may add,
    an index built from the -wal. The database and -wal keep every
    byte."""
    m = crash_and_lose_shm(tmp_path)
    damage_pages(m.state)
    before = folder_state(m.state.parent)
    stderr = refused_start(m)
    assert "it was left as it is" in stderr
    after = folder_state(m.state.parent)
    after.pop("state.db-shm", None)
    assert after == before
