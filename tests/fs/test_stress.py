"""Many threads and processes on the same files at once: writes racing
the flushes of dup()ed descriptors on the same open file, truncations,
renames of editors' temporaries over the spec, unlinks, secrets, field
files and ctl. Whatever the interleaving, the daemon lives, the mount
answers, the store's history has no gap, the audit chain holds, and the
sanitizers (when the daemon is built with one) report nothing."""
import errno
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from conftest import read, revisions

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
SECONDS = float(os.environ.get("INFRAFS_STRESS_SECONDS", "12"))
SPEC = "accelerator = nvidia-t4\n"
# Refusals the daemon gives on purpose; anything else is a failure.
EXPECTED = {errno.EINVAL, errno.EBADF, errno.ENOENT, errno.EFBIG,
            errno.ESTALE, errno.EPERM, errno.EACCES, errno.EEXIST,
            errno.EISDIR}


UNEXPECTED = []


def note(err):
    if err.errno not in EXPECTED:
        UNEXPECTED.append(repr(err))


class Slot:
    """The descriptor one writer publishes for its dup()ers."""

    def __init__(self):
        self.fd = -1
        self.lock = threading.Lock()


def until(deadline, step):
    while time.monotonic() < deadline:
        try:
            step()
        except OSError as err:
            note(err)


def writer(path, first, line, deadline, slot):
    """Grows one open file write after write (each growth may move the
    daemon's buffer) and starts a new open file now and then. Without a
    first line, rewrites the start of the file instead (a field file
    holds one value)."""
    def reopen():
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        if first:
            os.write(fd, first)
        with slot.lock:
            old, slot.fd = slot.fd, fd
        if old >= 0:
            try:
                os.close(old)
            except OSError as err:
                note(err)

    reopen()
    written = 0
    while time.monotonic() < deadline:
        try:
            if first is None:
                os.pwrite(slot.fd, line, 0)
                continue
            written += os.write(slot.fd, line)
            if written > 64 * 1024:
                written = 0
                reopen()
        except OSError as err:
            note(err)
            written = 0
            reopen()
    with slot.lock:
        os.close(slot.fd)
        slot.fd = -1


def dup_closer(slot, deadline):
    """Each close of a dup is a flush of the writer's open file."""
    def step():
        with slot.lock:
            fd = os.dup(slot.fd) if slot.fd >= 0 else -1
        if fd >= 0:
            os.close(fd)
    until(deadline, step)


def truncater(slot, deadline):
    def step():
        with slot.lock:
            fd = os.dup(slot.fd) if slot.fd >= 0 else -1
        if fd >= 0:
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)
    until(deadline, step)


def scratch_renamer(folder, n, deadline):
    """sed -i and vim: a temporary written, renamed over the spec, or
    removed; a backup renamed away."""
    tmp = folder / f".stress{n}"
    count = 0

    def step():
        nonlocal count
        count += 1
        with open(tmp, "w") as f:
            f.write(SPEC + f"# pass {count}\n")
            f.truncate(len(SPEC))
        if count % 3 == 0:
            os.unlink(tmp)
        else:
            os.rename(tmp, folder / "spec")
        if count % 5 == 0:
            os.rename(folder / "spec", folder / f"spec~{n}")
            os.unlink(folder / f"spec~{n}")
    until(deadline, step)


def secret_writer(env, n, deadline):
    path = env / "secrets" / f"token{n}"

    def step():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(8):
                os.write(fd, b"s3cr3t-" * 40)
                os.close(os.dup(fd))
        finally:
            os.close(fd)
    until(deadline, step)


def ctl_writer(env, deadline):
    cmds = [b"apply\n", b"approve\n", b"refresh\n", b"approve 1\n"]
    count = 0

    def step():
        nonlocal count
        count += 1
        fd = os.open(env / "ctl", os.O_WRONLY)
        try:
            os.write(fd, cmds[count % len(cmds)])
        finally:
            os.close(fd)
    until(deadline, step)


def new_envs(mnt, deadline):
    count = 0

    def step():
        nonlocal count
        count += 1
        env = mnt / f"tmp{count % 4}"
        try:
            os.mkdir(env)
            with open(env / "ctl", "w") as f:
                f.write("approve\n")
        finally:
            if env.exists():
                os.rmdir(env)
    until(deadline, step)


def reader(mnt, deadline):
    def step():
        for name in ("metrics", "dev/status", "dev/pools/train/spec",
                     "dev/pools/train/status", "dev/plan", "dev/events"):
            read(mnt / name)
        os.listdir(mnt / "dev/pools/train")
    until(deadline, step)


def shell_loops(mnt, deadline):
    """Separate processes: the shell's own open, dup2, close, write."""
    seconds = max(1, int(deadline - time.monotonic()))
    script = (f"end=$((SECONDS + {seconds})); i=0; "
              "while [ $SECONDS -lt $end ]; do i=$((i + 1)); "
              "echo $((i % 5 + 1)) > dev/pools/train/nodes; "
              "echo 'nodes = 2' >> dev/pools/train/spec; "
              ": > dev/pools/train/.shell$i; rm -f dev/pools/train/.shell$i; "
              "done 2>/dev/null; true")
    return [subprocess.Popen(["bash", "-c", script], cwd=mnt.path)
            for _ in range(2)]


def test_racing_requests_leave_the_daemon_and_store_whole(env):
    train = env / "dev/pools/train"
    deadline = time.monotonic() + SECONDS
    spec_slot, field_slot = Slot(), Slot()
    jobs = [
        (writer, (train / "spec", SPEC.encode(), b"# " + b"x" * 1000 + b"\n",
                  deadline, spec_slot)),
        (writer, (train / "nodes", None, b"3\n", deadline, field_slot)),
    ]
    jobs += [(dup_closer, (spec_slot, deadline))] * 4
    jobs += [(dup_closer, (field_slot, deadline))] * 2
    jobs += [(truncater, (spec_slot, deadline))]
    jobs += [(scratch_renamer, (train, n, deadline)) for n in range(3)]
    jobs += [(secret_writer, (env / "dev", n, deadline)) for n in range(2)]
    jobs += [(ctl_writer, (env / "dev", deadline)),
             (new_envs, (env, deadline)), (reader, (env, deadline))]
    threads = [threading.Thread(target=fn, args=args) for fn, args in jobs]
    procs = shell_loops(env, deadline)
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 120)
        assert not t.is_alive(), "a request never came back"
    for p in procs:
        assert p.wait(timeout=120) == 0

    assert env.proc.poll() is None, "the daemon died:\n" + read(env.log)
    assert not UNEXPECTED, UNEXPECTED[:10]
    # The mount answers, with the spec the newest revision holds. That
    # may be empty: a truncation followed by a close with nothing written
    # after it is an accepted commit of an empty spec.
    newest = revisions(env)[-1]
    assert read(train / "spec") == read(
        env / f"dev/history/{newest}/pools/train")
    assert "dev" in os.listdir(env.path)
    assert newest > 20, "the race barely ran"
    env.check_log()
    # The daemon stops cleanly with it all behind it.
    assert env.stop() == 0

    db = sqlite3.connect(env.state)
    env_id, rev = db.execute("SELECT id, rev FROM envs"
                             " WHERE name = 'dev' AND deleted = 0").fetchone()
    assert rev == newest
    kept = [r for (r,) in db.execute("SELECT rev FROM revisions"
                                     " WHERE env_id = ? ORDER BY rev",
                                     (env_id,))]
    assert kept == list(range(1, rev + 1)), "a gap in the revisions"
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    res = subprocess.run([str(TOOLS / "infrafs-audit-verify"),
                          f"sqlite:{env.state}", "dev"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "chain intact" in res.stdout
