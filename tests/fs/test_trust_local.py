"""The local provider runs what a spec declares with the environment
owner's authority, never the daemon's, and writes only its own files."""
import errno
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, Mount, read, status_of, wait_for

EP = "dev/endpoints/chat"
SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1 --directory /"
USERS = ["ifs-tl-ann", "ifs-tl-ben", "ifs-tl-cat"]
GROUP = "ifs-tl-crew"


def retry(cmd):
    """useradd and groupadd fail while another test holds their lock."""
    for _ in range(50):
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode == 0:
            return
        if "lock" not in res.stderr:
            break
        time.sleep(0.1)
    raise AssertionError(f"{cmd}: {res.stderr}")


@pytest.fixture
def users():
    """Three throwaway users; the first is also in a group of its own."""
    for name in USERS:
        subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)
    for name in USERS:
        retry(["useradd", "-M", name])
    retry(["groupadd", GROUP])
    retry(["usermod", "-aG", GROUP, USERS[0]])
    ids = {n: int(subprocess.check_output(["id", "-u", n])) for n in USERS}
    ids[GROUP] = int(subprocess.check_output(
        ["getent", "group", GROUP]).split(b":")[2])
    yield ids
    for name in USERS:
        subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", GROUP], capture_output=True)


@pytest.fixture
def shared():
    """A folder every user may write: what replicas report lands here."""
    d = Path(tempfile.mkdtemp(prefix="ifs-tl-", dir="/tmp"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def spec(command, extra=""):
    return f"command = {command}\nhealth_path = /\n{extra}"


def state(m, path=EP):
    return read(m / path / "state").strip()


def wait_ready(m, path=EP, timeout=30):
    wait_for(lambda: state(m, path) == "ready", timeout,
             f"{path} to be ready; status:\n" + read(m / path / "status"))


def replica_pids(m, path=EP):
    return sorted(int(line.split("pid ")[1].split(",")[0])
                  for line in read(m / path / "status").splitlines()
                  if line.startswith("replica."))


def proc_status(pid):
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def uid_of(pid):
    try:
        return int(proc_status(pid)["Uid"].split()[0])
    except OSError:
        return None


def env_of_dev_owned_by(m, uid):
    m.sh("mkdir -p dev/endpoints/chat")
    os.chown(m / "dev", uid, uid)


def test_replica_runs_as_the_env_owner_without_privileges(tmp_path, users,
                                                         shared):
    ann = users["ifs-tl-ann"]
    m = Mount(tmp_path, env={**os.environ, "IFS_TL_SENTINEL": "daemon"})
    m.start()
    try:
        env_of_dev_owned_by(m, ann)
        probe = (f"id -G > {shared}/groups; env > {shared}/env; "
                 f"pwd > {shared}/cwd; exec sleep 600")
        (m / EP / "spec").write_text(spec(probe))
        wait_for(lambda: len(m.replicas()) == 1 and
                 (shared / "cwd").exists(), 20, "the replica")
        (pid,) = m.replicas()
        st = proc_status(pid)
        assert st["Uid"].split() == [str(ann)] * 4
        assert st["Gid"].split() == [str(ann)] * 4
        assert st["NoNewPrivs"] == "1"
        for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert int(st[caps], 16) == 0, caps
        assert sorted(map(int, read(shared / "groups").split())) == \
            sorted([ann, users[GROUP]])
        env = dict(line.split("=", 1)
                   for line in read(shared / "env").splitlines()
                   if "=" in line)
        assert "IFS_TL_SENTINEL" not in env
        assert env["USER"] == env["LOGNAME"] == "ifs-tl-ann"
        assert env["HOME"] == "/home/ifs-tl-ann"
        assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
        assert env["INFRAFS_REPLICA"] == "dev/chat/0"
        # Only stdin, stdout and stderr: no descriptor of the daemon.
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1", "2"]
        assert read(shared / "cwd").strip() == "/"
        # Its own session, as the leader.
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[3]) == pid
    finally:
        m.stop()
        m.kill_replicas()


def test_chown_of_the_env_rolls_replicas_to_the_new_owner(tmp_path, users):
    ann, ben = users["ifs-tl-ann"], users["ifs-tl-ben"]
    m = Mount(tmp_path).start()
    try:
        env_of_dev_owned_by(m, ann)
        (m / EP / "spec").write_text(spec(SERVER))
        wait_ready(m)
        (first,) = replica_pids(m)
        assert uid_of(first) == ann
        os.chown(m / "dev", ben, ben)
        wait_for(lambda: [uid_of(p) for p in m.replicas()] == [ben], 30,
                 "the replica to run as the new owner")
        wait_ready(m)
        (second,) = replica_pids(m)
        assert second != first and uid_of(second) == ben
    finally:
        m.stop()
        m.kill_replicas()


class UserMount(Mount):
    """The daemon itself run as an unprivileged user. Where /dev/fuse is
    root's alone (containers), fusermount3 cannot help it: it is given
    just what mounting takes, not as root and never passed on (replicas
    get no ambient capabilities)."""

    def __init__(self, tmp, uid, extra=()):
        super().__init__(tmp, extra)
        self.uid = uid

    def start(self, extra=()):
        caps = "+dac_override,+sys_admin"
        args = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                "--clear-groups", f"--inh-caps={caps}",
                f"--ambient-caps={caps}", BIN, "-f", "--state",
                f"sqlite:{self.state}", "--key-file", str(self.key),
                *self.extra, *extra, str(self.path)]
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.mounted() or self.proc.poll() is not None,
                 what="mount")
        if self.proc.poll() is not None:
            raise AssertionError("daemon exited: " + self.log.read_text())
        return self

    def mounted(self):
        """Without allow_other not even root may look into the mount."""
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(self.path) for line in f)

    def stop(self):
        if self.proc is None:
            return None
        if self.mounted():
            subprocess.run(["fusermount3", "-u", str(self.path)],
                           check=False)
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.logf.close()
        return None


def as_user(uid, script, cwd):
    """Runs script in cwd as uid: root itself may not enter the mount."""
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                           "--clear-groups", "bash", "-c",
                           f"cd {cwd} && {script}"],
                          capture_output=True, text=True)


def test_daemon_as_a_user_refuses_endpoints_of_another_owner(users, shared):
    ann, ben = users["ifs-tl-ann"], users["ifs-tl-ben"]
    base = shared / "daemon"
    base.mkdir()
    # Made by root: an environment of ben's that ann may write to.
    m = Mount(base).start()
    try:
        m.sh("mkdir -p dev/endpoints/chat mine/endpoints/web")
        os.chown(m / "dev", ben, ben)
        os.chmod(m / "dev", 0o777)
        os.chown(m / "mine", ann, ann)
    finally:
        m.stop()
    # fusermount3 is setuid root: the daemon itself runs as ann.
    subprocess.run(["chown", "-R", f"{ann}:{ann}", str(base)], check=True)
    um = UserMount(base, ann)
    try:
        um.start()
        r = as_user(ann, f"/bin/echo 'command = {SERVER}' > {EP}/spec",
                    um.path)
        assert r.returncode != 0 and "not permitted" in r.stderr
        r = as_user(ann, f"cat {EP}/status", um.path)
        assert f"last_error: " + (
            f"the daemon runs as uid {ann} and cannot run replicas as the "
            f"owner uid {ben} of dev") in r.stdout.splitlines()
        # Its own environment runs, as itself.
        r = as_user(ann, "echo 'command = exec sleep 600' > "
                    "mine/endpoints/web/spec", um.path)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: len(um.replicas()) == 1, 20, "ann's replica")
        (pid,) = um.replicas()
        assert uid_of(pid) == ann
        assert int(proc_status(pid)["CapEff"], 16) == 0
    finally:
        um.stop()
        um.kill_replicas()


def test_state_folder_writable_by_others_is_refused(tmp_path):
    m = Mount(tmp_path).start()
    m.stop()
    os.chmod(tmp_path / "state" / "local", 0o777)
    try:
        with pytest.raises(AssertionError, match="daemon exited"):
            m.start()
        assert "local: writable by others" in read(m.log)
        os.chmod(tmp_path / "state" / "local", 0o700)
        os.chown(tmp_path / "state" / "local" / "records", 1, 1)
        with pytest.raises(AssertionError, match="daemon exited"):
            m.start()
        assert "records: owned by another user" in read(m.log)
    finally:
        if m.proc is not None and m.proc.poll() is None:
            m.stop()


def test_planted_symlink_at_a_replica_log_is_not_followed(mnt, tmp_path):
    target = tmp_path / "victim"
    target.write_text("untouched\n")
    logs = tmp_path / "state" / "local" / "logs" / "dev" / "chat"
    logs.mkdir(parents=True, mode=0o700)
    (logs / "replica-0.log").symlink_to(target)
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / EP / "spec").write_text(spec("echo started; " + SERVER))
    wait_ready(mnt)
    assert read(target) == "untouched\n"
    log = logs / "replica-0.log"
    assert not log.is_symlink() and "started" in read(log)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_marked_process_of_another_user_is_not_adopted(mnt, users):
    cat = users["ifs-tl-cat"]
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / EP / "spec").write_text(spec(SERVER))
    wait_ready(mnt)
    (real,) = replica_pids(mnt)
    marks = dict(e.split(b"=", 1) for e in
                 Path(f"/proc/{real}/environ").read_bytes().split(b"\0")
                 if e.startswith(b"INFRAFS_"))
    port = free_port()
    fake_env = {k.decode(): v.decode() for k, v in marks.items()}
    fake_env.update(INFRAFS_REPLICA="dev/chat/1", PORT=str(port))
    # The marks are set by env(1) after setpriv has dropped to cat: a
    # marked process still running as root (the owner of dev) would be
    # root's own replica, which the daemon rightly stops.
    fake = subprocess.Popen(
        ["setpriv", f"--reuid={cat}", f"--regid={cat}", "--clear-groups",
         "/usr/bin/env", *(f"{k}={v}" for k, v in fake_env.items()),
         "/usr/bin/python3", "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", "/"], env={"PATH": "/usr/bin:/bin"},
        start_new_session=True, cwd="/",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: fake.poll() is not None or
                 (uid_of(fake.pid) == cat and b"INFRAFS_REPLICA" in
                  Path(f"/proc/{fake.pid}/environ").read_bytes()),
                 10, "the fake replica")
        assert fake.poll() is None, "the fake replica exited"
        mnt.sh(f"echo 2 > {EP}/replicas")
        wait_for(lambda: status_of(mnt / EP / "status")["replicas"]
                 == "2/2 ready, 2 running", 30, "2 replicas")
        assert fake.pid not in replica_pids(mnt)
        assert f":{port}" not in read(mnt / EP / "status")
        mnt.sh(f"echo 1 > {EP}/replicas")
        wait_for(lambda: replica_pids(mnt) == [real], 30, "1 replica")
        time.sleep(1)
        assert fake.poll() is None, "the daemon killed another's process"
    finally:
        fake.kill()
        fake.wait()


@pytest.mark.parametrize("line", ["env.PORT = 80",
                                  "env.INFRAFS_REPLICA = dev/other/0",
                                  "env.CUDA_VISIBLE_DEVICES = 0"])
def test_env_cannot_set_what_infrafs_sets(mnt, line):
    mnt.sh("mkdir -p dev/endpoints/chat")
    with pytest.raises(OSError) as e:
        with open(mnt / EP / "spec", "w") as f:
            f.write(f"command = {SERVER}\n{line}\n")
            f.flush()
    assert e.value.errno == errno.EINVAL
    key = line.split(" ")[0]
    assert status_of(mnt / EP / "status")["last_error"] == (
        f"write refused: line 2: {key}: env.* cannot set PORT, CUDA_VISIBLE_DEVICES or "
        "INFRAFS_*, which infrafs sets itself")


def test_a_long_command_runs_whole_or_is_refused(mnt, tmp_path):
    done = tmp_path / "done"
    command = f": {'x' * 4100}; echo whole > {done}; {SERVER}"
    assert len(command) > 4100
    mnt.sh("mkdir -p dev/endpoints/chat")
    try:
        (mnt / EP / "spec").write_text(spec(command))
    except OSError as e:
        assert e.errno == errno.EINVAL
        assert "command" in status_of(mnt / EP / "status")["last_error"]
        return
    wait_ready(mnt)
    assert read(done) == "whole\n"


def test_replicas_of_a_daemon_that_ran_them_as_itself_are_replaced(
        tmp_path, users):
    """A record written before owners were kept: its replicas ran as the
    daemon's user, and are replaced by ones of the owner, not left
    running unseen."""
    ann = users["ifs-tl-ann"]
    m = Mount(tmp_path).start()
    old = None
    try:
        env_of_dev_owned_by(m, ann)
        (m / EP / "spec").write_text(spec(SERVER))
        wait_ready(m)
        (pid,) = replica_pids(m)
        environ = dict(e.split(b"=", 1) for e in
                       Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if b"=" in e)
        m.stop()
        m.kill_replicas()
        record = tmp_path / "state/local/records/endpoint@dev@chat.json"
        record.write_text('{"rev": %d}' % int(environ[b"INFRAFS_REV"]))
        # What the daemon before ran: the same replica, as root, from a
        # template that did not hold the owner.
        environ[b"INFRAFS_TEMPLATE"] = b"0123456789abcdef"
        with open(tmp_path / "old.log", "wb") as out:
            old = subprocess.Popen(
                ["sh", "-c", SERVER], env=environ, cwd="/",
                start_new_session=True, stdout=out, stderr=out)
        m.start()
        wait_for(lambda: old.poll() is not None, 30,
                 "the old replica to be stopped")
        # Status may still name a replica that is on its way out while
        # the new one starts: look until the one left runs as ann.
        wait_for(lambda: [uid_of(p) for p in replica_pids(m)] == [ann], 30,
                 "one replica, running as ann")
        wait_ready(m)
    finally:
        if old is not None and old.poll() is None:
            old.kill()
        m.stop()
        m.kill_replicas()
