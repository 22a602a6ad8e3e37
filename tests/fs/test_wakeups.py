"""Waiting for the daemon without polling in a loop, and the small edges
where the mount must answer as a disk folder would (or with the errno the
call's own manual documents).

The daemon changes `state`, `status`, `plan` and `events` from inside, so
no inotify event is ever raised for them; poll(2), select(2) and epoll
wake instead, sysfs style: POLLPRI once the content moved on, then
lseek(fd, 0) and read again.
"""
import errno
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import Mount, read, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))

POOL = "dev/pools/train"
WAKE = 10.0  # seconds: generous, this is no latency test


def reread(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    out = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return out.decode()
        out += chunk


def pri_poll(fd, timeout):
    p = select.poll()
    p.register(fd, select.POLLPRI)
    return p.poll(timeout * 1000)


def test_poll_wakes_on_status_change_then_rereads(env):
    # A file that never changes is readable at once and has no news.
    still = os.open(env / "kinds/pool", os.O_RDONLY)
    p = select.poll()
    p.register(still, select.POLLIN | select.POLLPRI)
    assert p.poll(200) == [(still, select.POLLIN)]
    os.close(still)
    fd = os.open(env / POOL / "status", os.O_RDONLY)
    try:
        before = reread(fd)
        (env / POOL / "spec").write_text("accelerator = nvidia-a10g\n")
        events = pri_poll(fd, WAKE)
        assert events, "poll did not wake on a status change"
        assert events[0][1] & select.POLLPRI
        # Not POLLERR as sysfs: less +F would stop following.
        assert not events[0][1] & select.POLLERR
        after = reread(fd)
        assert after != before
        assert "revision: 3" in after
    finally:
        os.close(fd)


def test_fstat_then_reread_shows_the_newest_whole(env):
    """Without poll(2): after fstat(2) of the open file, a read from the
    start gets the newest version, whole."""
    fd = os.open(env / POOL / "status.json", os.O_RDONLY)
    try:
        before = json.loads(reread(fd))
        (env / POOL / "spec").write_text(
            "accelerator = cpu\nlabels.team = " + "x" * 50 + "\n")
        wait_for(lambda: "x" * 50 in read(env / POOL / "status.json"),
                 WAKE, "the change in a new open")
        size = os.fstat(fd).st_size
        text = reread(fd)
        assert len(text) == size
        after = json.loads(text)
        assert after["spec"]["labels"]["team"] == "x" * 50
        assert after != before
    finally:
        os.close(fd)


def test_news_read_through_the_page_cache_is_told_once(env):
    """Two readers of one file share the kernel's page cache, so most of
    their reads never reach the daemon: each change is reported once per
    open file, and a reader that read it polls without spinning."""
    path = env / POOL / "status"
    a, b = os.open(path, os.O_RDONLY), os.open(path, os.O_RDONLY)
    try:
        reread(a)
        reread(b)
        (env / POOL / "spec").write_text("accelerator = nvidia-a10g\n")
        assert pri_poll(a, WAKE), "poll did not wake on a status change"
        first = reread(a)
        assert pri_poll(b, WAKE), "the second reader was not told"
        assert "revision: 3" in reread(b)
        # Told once: until the next change, both wait.
        settled = first
        deadline = time.monotonic() + WAKE
        while time.monotonic() < deadline:
            if not pri_poll(a, 0.5) and not pri_poll(b, 0.5):
                break
            settled = reread(a)  # the reconciler's own follow-up
            reread(b)
        else:
            raise AssertionError("poll kept reporting news: " + settled)
    finally:
        os.close(a)
        os.close(b)


def test_select_and_epoll_wake_on_state_change(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat")
    state = mnt / "dev/endpoints/chat/state"
    fds = [os.open(state, os.O_RDONLY) for _ in range(2)]
    try:
        first = [reread(fd) for fd in fds]
        ep = select.epoll()
        ep.register(fds[1], select.EPOLLPRI)
        (mnt / "dev/endpoints/chat/spec").write_text(
            "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
            "health_path = /\nreplicas = 1\n")
        # select: a change is an exceptional condition, like sysfs.
        _, _, exc = select.select([], [], [fds[0]], WAKE)
        assert exc == [fds[0]], "select did not wake on a state change"
        got = ep.poll(WAKE)
        assert got and got[0][0] == fds[1] and got[0][1] & select.EPOLLPRI
        assert reread(fds[0]).strip() != first[0].strip()
        assert reread(fds[1]).strip() != first[1].strip()
        ep.close()
    finally:
        for fd in fds:
            os.close(fd)
        mnt.kill_replicas()


def test_first_commit_of_a_draft_never_reads_deleting(mnt):
    """A draft endpoint the reconciler has looked at, then committed:
    its state goes from pending to creating, never through deleting
    (which once woke pollers for a change that was not one)."""
    mnt.sh("mkdir -p dev/endpoints/chat")
    state = mnt / "dev/endpoints/chat/state"
    time.sleep(1.5)  # a few reconciler passes see the draft
    (mnt / "dev/endpoints/chat/spec").write_text(
        "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
        "health_path = /\nreplicas = 1\n")
    seen = []
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            word = read(state).strip()
            if not seen or seen[-1] != word:
                seen.append(word)
    finally:
        mnt.kill_replicas()
    assert "deleting" not in seen, seen


def test_poll_wakes_on_env_plan_and_events(env):
    fds = {name: os.open(env / "dev" / name, os.O_RDONLY)
           for name in ("plan", "events", "status")}
    try:
        for fd in fds.values():
            reread(fd)
        p = select.poll()
        for fd in fds.values():
            p.register(fd, select.POLLPRI)
        env.sh("mkdir dev/pools/eval && echo 'nodes = 2' > dev/pools/eval/spec")
        woke = set()
        deadline = time.monotonic() + WAKE
        while len(woke) < len(fds) and time.monotonic() < deadline:
            for fd, ev in p.poll(200):
                assert ev & select.POLLPRI
                woke.add(fd)
                reread(fd)
        names = {n for n, fd in fds.items() if fd in woke}
        assert names == set(fds), f"only {names} woke"
    finally:
        for fd in fds.values():
            os.close(fd)


def test_tail_f_follows_new_events(env):
    """GNU tail sees a FUSE mount as remote and follows by fstat(2)ing the
    size every second, so the size of an open events file must grow."""
    events = env / POOL / "events"
    tail = subprocess.Popen(["tail", "-n", "0", "-f", str(events)],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)  # tail has read to the end and waits
        (env / POOL / "spec").write_text("accelerator = nvidia-l4\n")
        os.set_blocking(tail.stdout.fileno(), False)
        seen = ""
        deadline = time.monotonic() + 10
        while "revision 3" not in seen and time.monotonic() < deadline:
            r, _, _ = select.select([tail.stdout], [], [], 0.5)
            if r:
                seen += tail.stdout.read() or ""
        assert "committed as revision 3" in seen, seen
    finally:
        tail.kill()
        tail.wait()


def followers_of(path):
    """pids of processes whose command line names path."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if str(path).encode() in cmd.split(b"\0"):
            found.append(int(pid))
    return found


@pytest.mark.skipif(not shutil.which("less"), reason="needs less")
def test_less_f_follows_new_events(env, tmp_path):
    """less +F polls the file it follows for POLLERR|POLLHUP and stops at
    the first one: a change must not raise POLLERR. less runs on a
    terminal of its own (pty.fork makes it a session leader there), so
    killing its process group ends it: under script(1) it ran in a
    session script made and outlived the test, spinning on the dead
    mount."""
    events = env / POOL / "events"
    pid, master = pty.fork()
    if pid == 0:
        os.execvpe("less", ["less", "+F", str(events)],
                   {**os.environ, "TERM": "xterm", "LESS": ""})
    shown = bytearray()

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            shown.extend(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for(lambda: b"revision 2" in shown, 10,
                 "less to show the events")
        (env / POOL / "spec").write_text("accelerator = nvidia-l4\n")
        wait_for(lambda: b"committed as revision 3" in shown, 10,
                 "less +F to show the new event")
    finally:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(master)
        reader.join(5)
    assert followers_of(events) == [], "less outlived the test"


def test_links_are_refused_with_eperm(env):
    """link(2) and symlink(2) document EPERM for a file system that does
    not support them; ENOSYS is for a kernel without the call."""
    target = str(env / POOL / "spec")
    link = env / "dev" / "link"
    for cmd in (["ln", "-s"], ["ln"]):
        res = subprocess.run([*cmd, target, str(link)],
                             capture_output=True, text=True)
        assert res.returncode != 0
        assert "Operation not permitted" in res.stderr, res.stderr
    for call in (os.symlink, os.link):
        with pytest.raises(OSError) as e:
            call(target, link)
        assert e.value.errno == errno.EPERM, call
    assert not os.path.lexists(link)


def jq(expr, path):
    res = subprocess.run(["jq", "-e", expr, str(path)], capture_output=True,
                         text=True)
    assert res.returncode == 0, f"jq {expr}: {res.stdout}{res.stderr}"
    return json.loads(res.stdout)


def test_status_json_provider_fields_are_typed(mnt):
    mnt.sh("mkdir -p dev/pools/cpu dev/endpoints/chat && "
           "echo 'nodes = 1' > dev/pools/cpu/spec")
    (mnt / "dev/endpoints/chat/spec").write_text(
        "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
        "health_path = /\nreplicas = 1\npool = cpu\n")
    try:
        pool = mnt / "dev/pools/cpu/status.json"
        ep = mnt / "dev/endpoints/chat/status.json"
        wait_for(lambda: json.loads(read(ep))["state"] == "ready", 20,
                 "the endpoint to be ready")
        # Free slots, by arithmetic on the numbers themselves.
        free = jq(".provider.cpu_slots.total - .provider.cpu_slots.used",
                  pool)
        assert isinstance(free, int) and free >= 0
        assert jq(".provider.replicas_ready + .provider.replicas_running",
                  ep) == 2
        replica = jq(".provider.replicas[0]", ep)
        assert isinstance(replica["pid"], int) and replica["pid"] > 0
        assert isinstance(replica["port"], int)
        assert replica["healthy"] is True
        assert replica["revision"] == jq(".revision", ep)
        assert replica["log"].startswith("/")
    finally:
        mnt.kill_replicas()


def test_first_start_prints_no_migration_lines(tmp_path):
    m = Mount(tmp_path).start()
    try:
        m.sh("mkdir dev")
    finally:
        m.stop()
    log = m.log.read_text(errors="replace")
    assert "migrat" not in log.lower(), log


def test_infrafs_wait_wakes_on_the_change_not_the_interval(mnt):
    """With an hour between reads, only poll(2) can see the state move."""
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / "dev/endpoints/chat/spec").write_text(
        "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
        "health_path = /\nreplicas = 1\n")
    try:
        res = subprocess.run(
            [str(TOOLS / "infrafs-wait"), str(mnt / "dev/endpoints/chat"),
             "ready", "--interval", "3600000", "--timeout", "0"],
            capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        assert res.stderr.strip().endswith("chat: ready")
    finally:
        mnt.kill_replicas()
