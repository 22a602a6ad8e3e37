"""The daemon's log lines: structured fields to the journal with
--syslog, text fields to syslog where journald does not listen.

No journald runs here, so each test runs the daemon in a private mount
namespace (unshare -m) where a python listener stands in for journald's
native socket or for /dev/log; nothing outside the namespace changes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace")

LISTENER = r"""
import socket, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
open(out + ".ready", "w").close()
with open(out, "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536) + b"\n\x00\n")
"""

# $1: where the listener binds; the rest sets the namespace up first.
SCRIPT = r"""
set -eu
mount --make-rprivate /
{setup}
python3 "$T/listener.py" "{sock}" "$T/got" &
lpid=$!
for i in $(seq 100); do [ -e "$T/got.ready" ] && break; sleep 0.05; done
"$BIN" -f --syslog --state "sqlite:$T/state/state.db" \
    --key-file "$T/keys/secret.key" "$T/mnt" >"$T/daemon.out" 2>&1 &
dpid=$!
for i in $(seq 200); do mountpoint -q "$T/mnt" && break; sleep 0.05; done
mkdir -p "$T/mnt/dev/endpoints/chat"
printf 'command = exec sleep 300\n' > "$T/mnt/dev/endpoints/chat/spec"
for i in $(seq 400); do
    grep -qa 'replica 0 started' "$T/got" 2>/dev/null && break
    sleep 0.05
done
rpid=$(sed -n 's/^replica\.0: .*pid \([0-9]*\).*/\1/p' \
    "$T/mnt/dev/endpoints/chat/status")
fusermount3 -u "$T/mnt"
wait $dpid || true
kill $lpid
# The replica's session: it and its log keeper.
[ -n "$rpid" ] && kill -9 -- "-$rpid" 2>/dev/null || true
"""


def run(tmp_path, setup, sock):
    (tmp_path / "mnt").mkdir()
    (tmp_path / "listener.py").write_text(LISTENER)
    script = SCRIPT.format(setup=setup, sock=sock)
    env = dict(os.environ, T=str(tmp_path), BIN=BIN)
    env.pop("JOURNAL_STREAM", None)
    res = subprocess.run(["unshare", "-m", "bash", "-c", script], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    got = (tmp_path / "got").read_bytes() if (tmp_path / "got").exists() \
        else b""
    return [d for d in got.split(b"\n\x00\n") if d]


def built_with_libsystemd():
    out = subprocess.run([BIN, "--version"], capture_output=True,
                         text=True).stdout
    return "sd_notify: yes" in out


@pytest.mark.skipif(not built_with_libsystemd(),
                    reason="built without libsystemd: no journal fields")
def test_journal_gets_structured_fields(tmp_path):
    # journald's native socket, in a tmpfs only this namespace sees.
    setup = ("mount -t tmpfs tmpfs /run/systemd && "
             "mkdir /run/systemd/journal")
    got = run(tmp_path, setup, "/run/systemd/journal/socket")
    started = [d for d in got if b"replica 0 started" in d]
    assert started, got
    fields = dict(line.split(b"=", 1) for line in started[0].split(b"\n")
                  if b"=" in line)
    assert fields[b"INFRAFS_ENV"] == b"dev"
    assert fields[b"INFRAFS_RESOURCE"] == b"endpoints/chat"
    assert int(fields[b"INFRAFS_REVISION"]) >= 1
    assert fields[b"PRIORITY"] == b"6"
    assert fields[b"SYSLOG_IDENTIFIER"] == b"infrafs"
    assert fields[b"MESSAGE"].startswith(b"dev/chat: replica 0 started")
    # Lines about nothing in particular carry no empty fields.
    mounted = [d for d in got if b"MESSAGE=mounted" in d]
    assert mounted and b"INFRAFS_ENV" not in mounted[0]


def test_syslog_gets_fields_in_text_without_journald(tmp_path):
    # No journald socket; /dev/log is a listener on a private /dev that
    # keeps the devices the daemon needs.
    setup = ("mount -t tmpfs tmpfs /run/systemd && "
             "d=$(mktemp -d) && mount -t tmpfs tmpfs $d && "
             "for n in null zero random urandom fuse full tty; do "
             "touch $d/$n; mount --bind /dev/$n $d/$n; done && "
             "ln -s /proc/self/fd $d/fd && mount --move $d /dev")
    got = run(tmp_path, setup, "/dev/log")
    started = [d for d in got if b"replica 0 started" in d]
    assert started, got
    line = started[0].decode()
    # <30>: daemon facility, info.
    assert line.startswith("<30>") and "infrafs[" in line
    assert "INFRAFS_ENV=dev INFRAFS_RESOURCE=endpoints/chat " \
           "INFRAFS_REVISION=" in line


# ---- replica log rotation ---------------------------------------------------

from conftest import Mount, read, status_of, wait_for  # noqa: E402

CAP = 4096
KEEP = 2
# 590 numbered lines of 41 bytes: a cut after every 100 (4,100 bytes),
# none after the last, so the files are still once it is in.
WRITER = ("exec python3 -c 'import time; [print(f\"line {i:06d} \" + "
          "\"x\" * 28, flush=True) for i in range(590)]; time.sleep(300)'")


@pytest.fixture
def rotating(tmp_path):
    m = Mount(tmp_path).start()
    yield m
    m.stop()
    m.kill_replicas()


def test_replica_log_rotates_without_losing_lines(rotating):
    m = rotating
    m.sh("mkdir -p dev/endpoints/w")
    with open(m / "dev/config", "a") as f:
        f.write(f"local.log_max_bytes = {CAP}\nlocal.log_keep = {KEEP}\n")
    (m / "dev/endpoints/w/spec").write_text(f"command = {WRITER}\n")
    wait_for(lambda: "log.0" in status_of(m / "dev/endpoints/w/status"),
             20, "the replica to start")
    log = Path(status_of(m / "dev/endpoints/w/status")["log.0"])

    def done():
        # The current file is made again right after a cut: wait for it.
        files = list(log.parent.glob(log.name + "*"))
        try:
            return len(files) == KEEP + 1 and \
                "line 000589" in log.read_text()
        except FileNotFoundError:
            return False
    wait_for(done, 30, "the last line in a log")
    files = sorted(log.parent.glob(log.name + "*"))
    line = 41
    for f in files:
        assert f.stat().st_size <= CAP + line, (f, f.stat().st_size)
    # The newest lines, whole and in order, none lost at a cut.
    text = "".join(f.read_text() for f in
                   sorted(files, key=lambda f: -int(f.suffix[1:])
                          if f.suffix != ".log" else 0))
    nums = [int(x.split()[1]) for x in text.splitlines()]
    assert nums == list(range(nums[0], 590)), nums[:5]
    assert all(x.endswith("x" * 28) for x in text.splitlines())


def test_replica_log_without_rotation_when_cap_is_zero(rotating):
    m = rotating
    m.sh("mkdir -p dev/endpoints/w")
    with open(m / "dev/config", "a") as f:
        f.write("local.log_max_bytes = 0\n")
    (m / "dev/endpoints/w/spec").write_text(f"command = {WRITER}\n")
    wait_for(lambda: "log.0" in status_of(m / "dev/endpoints/w/status"),
             20, "the replica to start")
    log = Path(status_of(m / "dev/endpoints/w/status")["log.0"])
    wait_for(lambda: log.exists() and "line 000589" in log.read_text(), 30,
             "the last line")
    assert len(read(log).splitlines()) == 590
    assert not list(log.parent.glob(log.name + ".*"))
