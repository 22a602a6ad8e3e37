"""The state store: durable revisions, history, audit, ownership, one
daemon per store, integrity, schema versions."""
import errno
import os
import sqlite3
import stat
import subprocess
import threading
import time

import pytest

from conftest import BIN, BOTH_BACKENDS, Mount, read, revisions, status_of

both = pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True)


@both
def test_remount_gives_back_everything(env):
    env.sh("echo 'labels.team = nlp' >> dev/pools/train/spec && "
           "mkdir dev/pools/draft dev/endpoints/chat && "
           "echo 'replicas = 2' > dev/endpoints/chat/spec && "
           "echo 'approval = manual' >> dev/config && "
           "echo 'max_nodes_per_pool = 8' >> dev/policy && "
           "echo hunter2 > dev/secrets/token && chmod 750 dev")
    paths = ["dev/pools/train/spec", "dev/endpoints/chat/spec",
             "dev/config", "dev/policy", "dev/audit", "dev/history/3/diff",
             "dev/events", "dev/pools/train/events"]
    # The reconciler writes events as it acts; wait until it has done.
    before = {}
    for _ in range(50):
        now = {p: read(env / p) for p in paths}
        if now == before:
            break
        before = now
        time.sleep(0.6)
    revs = revisions(env)
    env.restart()
    for p, text in before.items():
        assert read(env / p) == text, p
    assert revisions(env) == revs
    assert sorted(os.listdir(env / "dev/pools")) == ["draft", "train"]
    assert "draft" in status_of(env / "dev/pools/draft/status")["reason"]
    assert os.listdir(env / "dev/secrets") == ["token"]
    assert stat.S_IMODE(os.stat(env / "dev").st_mode) == 0o750


def test_commit_is_durable_when_close_returns(env):
    """SIGKILL right after close(2): the revision must be in the store."""
    env.sh("echo 'nodes = 3' > dev/pools/train/spec")
    env.kill()
    db = sqlite3.connect(env.state)
    rows = db.execute("SELECT spec FROM resources WHERE name='train'").fetchall()
    assert rows == [("nodes = 3\n",)]
    env.start()
    assert read(env / "dev/pools/train/nodes") == "3\n"


# A SQLite store is one daemon's: a second is refused. PostgreSQL stores
# are shared (test_shared_store.py).
def test_second_daemon_on_the_same_store_is_refused(env, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    res = subprocess.run(
        [env.proc.args[0], "-f", "--state", env.state_url,
         "--key-file", str(env.key), str(other)],
        capture_output=True, text=True, timeout=10)
    assert res.returncode != 0
    assert "in use by another infrafs" in res.stderr
    assert f"pid {env.proc.pid}" in res.stderr
    assert not os.path.ismount(other)
    # The first daemon is unharmed.
    env.sh("echo 'nodes = 2' > dev/pools/train/spec")


def test_background_mode_reports_start_up_errors(env, tmp_path):
    other = tmp_path / "other2"
    other.mkdir()
    res = subprocess.run(
        [env.proc.args[0], "--state", env.state_url,
         "--key-file", str(env.key), str(other)],
        capture_output=True, text=True, timeout=10)
    assert res.returncode == 1
    assert "in use by another infrafs" in res.stderr


def test_damaged_store_is_refused_and_left_alone(tmp_path):
    m = Mount(tmp_path).start()
    m.sh("mkdir -p dev/pools/a && echo 'nodes = 2' > dev/pools/a/spec")
    m.stop()
    # Overwrite the middle of the database with garbage.
    data = bytearray(m.state.read_bytes())
    assert len(data) > 8192
    data[4096:8192] = b"\xa5" * 4096
    m.state.write_bytes(bytes(data))
    damaged = m.state.read_bytes()
    proc = subprocess.run(
        [BIN, "-f", "--state", f"sqlite:{m.state}", "--key-file",
         str(m.key), str(m.path)], capture_output=True, text=True,
        timeout=10)
    assert proc.returncode != 0
    assert "integrity" in proc.stderr or "cannot be read" in proc.stderr
    assert m.state.read_bytes() == damaged
    assert not os.path.ismount(m.path)


def test_foreign_sqlite_file_is_refused(tmp_path):
    m = Mount(tmp_path)
    m.state.parent.mkdir(parents=True)
    db = sqlite3.connect(m.state)
    db.execute("CREATE TABLE notes(x)")
    db.commit()
    db.close()
    with pytest.raises(AssertionError) as e:
        m.start()
    assert "not an infrafs state store" in str(e.value)


def test_newer_schema_is_refused(tmp_path):
    m = Mount(tmp_path).start()
    m.stop()
    db = sqlite3.connect(m.state)
    db.execute("PRAGMA user_version = 999")
    db.commit()
    db.close()
    with pytest.raises(AssertionError) as e:
        m.start()
    assert "schema version 999" in str(e.value)


def test_store_is_sqlite_in_wal_mode_with_schema_version(env):
    db = sqlite3.connect(env.state)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


@both
def test_history_info_diff_and_specs_as_they_were(env):
    env.sh("echo 'nodes = 2' >> dev/pools/train/spec")
    env.sh("echo 3 > dev/pools/train/nodes")
    revs = revisions(env)
    assert revs == [1, 2, 3, 4]
    info = status_of(env / "dev/history/3/info")
    assert info["revision"] == "3" and info["uid"] == "0"
    assert info["command"] == "bash"
    assert info["path"] == "dev/pools/train/spec"
    assert info["summary"].startswith("update pools/train (nodes")
    assert read(env / "dev/history/3/diff") == (
        "--- a/pools/train/spec\n+++ b/pools/train/spec\n"
        "@@ -1 +1,2 @@\n accelerator = nvidia-t4\n+nodes = 2\n")
    assert read(env / "dev/history/2/pools/train") == "accelerator = nvidia-t4\n"
    assert read(env / "dev/history/3/pools/train") == (
        "accelerator = nvidia-t4\nnodes = 2\n")
    assert read(env / "dev/history/4/pools/train").endswith("nodes = 3\n")
    assert os.listdir(env / "dev/history/1/pools") == []
    assert "provider = local" in read(env / "dev/history/1/config")
    os.rmdir(env / "dev/pools/train")
    last = revisions(env)[-1]
    assert os.listdir(env / f"dev/history/{last}/pools") == []
    assert "+++ /dev/null" in read(env / f"dev/history/{last}/diff")
    assert "train" in os.listdir(env / f"dev/history/{last - 1}/pools")


@both
def test_audit_lines_carry_who_and_what(env):
    env.sh("python3 -c \"open('dev/pools/train/nodes','w').write('2\\n')\"")
    line = read(env / "dev/audit").splitlines()[-1]
    fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
    assert fields["rev"] == "3"
    assert fields["uid"] == "0" and fields["gid"] == "0"
    assert fields["comm"] == "python3"
    assert int(fields["pid"]) > 0
    assert fields["path"] == "dev/pools/train/nodes"
    assert line[:4].isdigit() and "T" in line.split()[0]


@both
def test_sixteen_concurrent_writers_lose_no_update(mnt):
    names = [f"p{i}" for i in range(16)]
    mnt.sh("mkdir dev && " + " && ".join(
        f"mkdir dev/pools/{n}" for n in names))
    errors = []

    def writer(name):
        try:
            for v in range(10):
                with open(mnt / f"dev/pools/{name}/spec", "w") as f:
                    f.write(f"nodes = {v}\n")
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert revisions(mnt)[-1] == 1 + 16 * 10
    for n in names:
        assert read(mnt / f"dev/pools/{n}/nodes") == "9\n"
    assert len(read(mnt / "dev/audit").splitlines()) == 1 + 16 * 10


@pytest.fixture
def users():
    """Two throwaway users and a group, made for the test."""
    made = []
    for name in ["ifs-alice", "ifs-bob"]:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["useradd", "-M", name], check=True)
        made.append(name)
    subprocess.run(["groupdel", "ifs-team"], capture_output=True)
    subprocess.run(["groupadd", "ifs-team"], check=True)
    subprocess.run(["usermod", "-aG", "ifs-team", "ifs-alice"], check=True)
    ids = {n: int(subprocess.check_output(["id", "-u", n])) for n in made}
    ids["team"] = int(subprocess.check_output(
        ["getent", "group", "ifs-team"]).split(b":")[2])
    yield ids
    for name in made:
        subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", "ifs-team"], capture_output=True)


def as_user(mnt, uid, gid, script, groups=()):
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    cmd += [f"--groups={','.join(map(str, groups))}"] if groups \
        else ["--clear-groups"]
    return subprocess.run(cmd + ["bash", "-c", script], cwd=mnt.path,
                          capture_output=True, text=True)


@both
def test_chown_chmod_are_kept_and_enforced(tmp_path, users, store_url):
    m = Mount(tmp_path, extra=["-o", "allow_other"], store=store_url).start()
    try:
        os.chmod(tmp_path, 0o755)
        m.sh("mkdir dev && mkdir dev/pools/train && "
             "echo 'nodes = 1' > dev/pools/train/spec")
        alice, bob, team = users["ifs-alice"], users["ifs-bob"], users["team"]
        os.chown(m / "dev", 0, team)
        os.chmod(m / "dev", 0o770)
        st = os.stat(m / "dev/pools/train/spec")
        assert st.st_gid == team and stat.S_IMODE(st.st_mode) == 0o660
        # A member of the group may change specs.
        r = as_user(m, alice, alice, "echo 'nodes = 2' > dev/pools/train/spec",
                    groups=[team])
        assert r.returncode == 0, r.stderr
        assert f"uid={alice}" in read(m / "dev/audit").splitlines()[-1]
        # Someone outside can neither read nor change it.
        r = as_user(m, bob, bob, "cat dev/pools/train/spec")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_user(m, bob, bob, "echo 'nodes = 5' > dev/pools/train/spec")
        assert r.returncode != 0
        # Only the owner (root here) may change the mode, the policy or
        # the config: their modes say so, and the kernel refuses at open.
        r = as_user(m, alice, alice, "chmod 777 dev", groups=[team])
        assert r.returncode != 0
        assert stat.S_IMODE(os.stat(m / "dev/policy").st_mode) == 0o640
        r = as_user(m, alice, alice,
                    "/bin/echo 'max_accelerators = 100' >> dev/policy",
                    groups=[team])
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert "max_accelerators = 100" not in read(m / "dev/policy")
        # What the daemon refuses itself is audited.
        m.sh("echo 'max_accelerators = 50' >> dev/policy")
        r = as_user(m, alice, alice, "echo 'rollback 1' > dev/ctl",
                    groups=[team])
        assert r.returncode != 0
        last = read(m / "dev/audit").splitlines()[-1]
        assert f"uid={alice}" in last and "rev=-" in last
        assert "refused: revision 1 has another" in last
        assert "only the owner of dev" in last
        m.restart()
        st = os.stat(m / "dev")
        assert st.st_gid == team and stat.S_IMODE(st.st_mode) == 0o770
        assert read(m / "dev/pools/train/spec") == "nodes = 2\n"
        assert "set owner 0, group" in read(m / "dev/audit")
    finally:
        m.stop()


@both
def test_sigterm_unmounts_and_exits_zero(env):
    env.proc.terminate()
    assert env.proc.wait(timeout=10) == 0
    env.proc = None
    env.logf.close()
    assert not os.path.ismount(env.path)
    env.start()
    assert read(env / "dev/pools/train/spec") == "accelerator = nvidia-t4\n"


def test_store_files_are_private(env):
    for p in env.state.parent.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, p
    assert stat.S_IMODE(env.key.stat().st_mode) == 0o600


@both
def test_events_keep_every_line_past_what_memory_holds(env):
    """The newest 256 lines of each events file are kept in memory, the
    rest come from the store; the file shows them all, oldest first."""
    env.sh("for i in $(seq 1 300); do echo $((i % 2 + 1)) > "
           "dev/pools/train/nodes; done")
    lines = read(env / "dev/pools/train/events").splitlines()
    commits = [line for line in lines if "committed as revision" in line]
    assert len(commits) == 301  # the first commit, then one per write
    assert "declared as a draft" in lines[0]
    assert commits[0].endswith("committed as revision 2")
    assert commits[-1].endswith("committed as revision 302")
    size = os.stat(env / "dev/pools/train/events").st_size
    assert size == len(read(env / "dev/pools/train/events").encode())
    env.restart()
    assert read(env / "dev/pools/train/events").splitlines() == lines


@both
def test_protected_destroy_needs_the_owner_to_approve(tmp_path, users,
                                                     store_url):
    m = Mount(tmp_path, extra=["-o", "allow_other"], store=store_url).start()
    try:
        os.chmod(tmp_path, 0o755)
        alice, team = users["ifs-alice"], users["team"]
        m.sh("mkdir dev && mkdir dev/pools/keep && "
             "echo 'nodes = 0' > dev/pools/keep/spec && "
             "echo 'protect = destroy' >> dev/policy")
        os.chown(m / "dev", 0, team)
        os.chmod(m / "dev", 0o770)
        r = as_user(m, alice, alice, "rmdir dev/pools/keep", groups=[team])
        assert r.returncode != 0 and "in progress" in r.stderr
        wait_for_plan = time.monotonic() + 10
        while "- destroy" not in read(m / "dev/plan"):
            assert time.monotonic() < wait_for_plan, read(m / "dev/plan")
            time.sleep(0.05)
        r = as_user(m, alice, alice, "echo approve > dev/ctl",
                    groups=[team])
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert "only the owner of dev" in read(m / "dev/events")
        time.sleep(1)
        assert os.listdir(m / "dev/pools") == ["keep"]
        m.sh("echo approve > dev/ctl")
        deadline = time.monotonic() + 10
        while os.listdir(m / "dev/pools"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        m.stop()


def big_spec(tag):
    """A valid pool spec of about 256 KiB that no other one repeats."""
    noise = os.urandom(128 * 1024).hex()
    lines = [f"# {tag} {noise[i:i + 100]}" for i in range(0, len(noise), 100)]
    return "\n".join(lines) + "\naccelerator = nvidia-t4\n"


def write_spec(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_a_full_disk_says_enospc_and_loses_nothing(tmp_path):
    """The store on a 4 MiB tmpfs filled up: a commit fails with ENOSPC,
    status and events say the disk is full, every earlier revision and
    other objects' last_error stay, and once space is freed the same
    daemon commits again."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs",
                    str(state)], check=True)
    m = Mount(tmp_path)
    filler = state / "filler"
    try:
        m.start()
        m.sh("mkdir dev && mkdir dev/pools/train && "
             "echo 'accelerator = nvidia-t4' > dev/pools/train/spec")
        m.sh("mkdir dev/pools/other")
        with pytest.raises(OSError):
            write_spec(m / "dev/pools/other/spec", "nodes = many\n")
        refused = status_of(m / "dev/pools/other/status")["last_error"]
        assert "nodes" in refused
        spec = m / "dev/pools/train/spec"
        accepted = big_spec("accepted")
        write_spec(spec, accepted)
        # Unbuffered: a buffered file would try the failed bytes again at
        # close and raise ENOSPC out of the with statement.
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        errors = []
        for i in range(8):
            try:
                write_spec(spec, big_spec(f"refused {i}"))
                accepted = read(spec)
            except OSError as e:
                errors.append(e.errno)
                break
        assert errors == [errno.ENOSPC]
        assert os.path.ismount(m.path), "the daemon survived"
        assert read(spec) == accepted
        why = status_of(m / "dev/pools/train/status")["last_error"]
        assert "disk holding it is full (ENOSPC)" in why
        assert "commit failed: the state store could not record" in read(
            m / "dev/pools/train/events")
        # What only memory holds survives the reload after the failure.
        assert status_of(m / "dev/pools/other/status")["last_error"] == \
            refused
        before = revisions(m)
        filler.unlink()
        m.sh("echo 'nodes = 2' >> dev/pools/train/spec")
        assert read(spec) == accepted + "nodes = 2\n"
        assert revisions(m) == before + [before[-1] + 1]
        events = read(m / "dev/pools/train/events")
        m.restart()
        assert read(spec) == accepted + "nodes = 2\n"
        assert revisions(m) == before + [before[-1] + 1]
        assert read(m / "dev/pools/train/events") == events
        assert "disk holding it is full" in events
    finally:
        m.stop()
        subprocess.run(["umount", "-l", str(state)], check=False)
