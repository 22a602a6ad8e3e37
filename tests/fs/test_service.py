"""infrafs as a systemd service: the unit file, and the daemon's side of
Type=notify (READY=1, WATCHDOG=1, STOPPING=1) checked on a notify socket
this test listens on, as systemd would."""
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, ROOT, wait_for

UNIT_IN = ROOT / "systemd" / "infrafs@.service.in"


def unit_text(bindir):
    return UNIT_IN.read_text().replace("@BINDIR@", str(bindir))


def unit_setting(key):
    return [m.group(1) for m in
            re.finditer(rf"^{key}=(.*)$", UNIT_IN.read_text(), re.M)]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze missing (apt-get install systemd)")
def test_unit_verifies(tmp_path):
    """systemd-analyze verify finds nothing to say: no unknown keys, the
    programs exist and the man page it names is there."""
    unit = tmp_path / "infrafs@dev.service"
    unit.write_text(unit_text(Path(BIN).parent))
    man = tmp_path / "man" / "man1"
    man.mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "infrafs.1", man)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)],
                         capture_output=True, text=True,
                         env={**os.environ, "MANPATH": str(tmp_path / "man")})
    assert res.returncode == 0 and res.stderr == "", res.stderr
    text = unit.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text
    assert "EnvironmentFile=/etc/infrafs/%i.conf" in text
    assert re.search(r"^ExecStartPre=\S+/infrafs --check ", text, re.M)
    # The example configuration sets only what the unit reads.
    example = (ROOT / "systemd" / "example.conf").read_text()
    names = re.findall(r"^#?(INFRAFS_[A-Z_]+)=", example, re.M)
    defaults = re.findall(r"^Environment=(INFRAFS_[A-Z_]+)=", text, re.M)
    assert names and sorted(set(names)) == sorted(defaults)
    for name in defaults:
        assert "${%s}" % name in text or "$" + name in text


class Notify:
    """The service manager's end of $NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout=10.0):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def until(self, word, timeout=10.0):
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {word}; got {seen}"
            try:
                msg = self.next(left)
            except socket.timeout:
                raise AssertionError(f"no {word}; got {seen}")
            seen.append(msg)
            if word in msg:
                return seen


def start_as_unit(tmp_path, notify, watchdog_usec=None, journal=False):
    """The daemon as ExecStart= runs it: in the foreground, with
    $NOTIFY_SOCKET (and $WATCHDOG_USEC when WatchdogSec= is set; and
    $JOURNAL_STREAM naming its stderr, as the journal would)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                        "JOURNAL_STREAM")}
    env["NOTIFY_SOCKET"] = notify.path
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    log = open(tmp_path / "daemon.log", "wb")
    if journal:
        st = os.fstat(log.fileno())
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    proc = subprocess.Popen(
        [BIN, "-f", "--state", f"sqlite:{tmp_path}/state.db",
         "--key-file", str(tmp_path / "secret.key"), str(mnt)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, mnt


def stop(proc, mnt):
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False,
                   capture_output=True)


def test_ready_after_mount_answers_stopping_on_sigterm(tmp_path):
    notify = Notify(tmp_path / "notify.sock")
    proc, mnt = start_as_unit(tmp_path, notify)
    try:
        seen = notify.until("READY=1")
        # At READY=1 the mount is there and answers at once.
        assert os.path.ismount(mnt), seen
        assert os.listdir(mnt) is not None
        assert (mnt / "version").read_text().startswith("infrafs ")
        assert len([m for m in seen if "READY=1" in m]) == 1
        # No watchdog asked for: no pings.
        notify.sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            notify.sock.recv(4096)
        proc.send_signal(signal.SIGTERM)
        notify.until("STOPPING=1")
        assert proc.wait(timeout=20) == 0
        assert not os.path.ismount(mnt)
    finally:
        stop(proc, mnt)


def test_watchdog_pings(tmp_path):
    notify = Notify(tmp_path / "notify.sock")
    proc, mnt = start_as_unit(tmp_path, notify, watchdog_usec=200000)
    try:
        notify.until("READY=1")
        pings = 0
        for _ in range(3):
            notify.until("WATCHDOG=1")
            pings += 1
        assert pings == 3
        # A stopped request loop (the daemon frozen) stops the pings:
        # the manager then restarts it.
        proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)
            while True:  # drain what was sent before the stop
                notify.sock.settimeout(0.05)
                try:
                    notify.sock.recv(4096)
                except socket.timeout:
                    break
            notify.sock.settimeout(1.0)
            with pytest.raises(socket.timeout):
                notify.sock.recv(4096)
        finally:
            proc.send_signal(signal.SIGCONT)
        notify.until("WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop(proc, mnt)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv")
def test_daemon_runs_under_unit_hardening(tmp_path):
    """NoNewPrivileges= and CapabilityBoundingSet= as the unit sets them:
    the daemon still mounts and commits."""
    assert unit_setting("NoNewPrivileges") == ["yes"]
    caps = unit_setting("CapabilityBoundingSet")[0].split()
    bounding = "-all," + ",".join(
        "+" + c.removeprefix("CAP_").lower() for c in caps)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen(
        ["setpriv", "--no-new-privs", f"--bounding-set={bounding}",
         f"--inh-caps=-all", BIN, "-f",
         "--state", f"sqlite:{tmp_path}/state.db",
         "--key-file", str(tmp_path / "secret.key"), str(mnt)],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.ismount(mnt) or proc.poll() is not None,
                 what="mount")
        assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
        status = open(f"/proc/{proc.pid}/status").read()
        assert "NoNewPrivs:\t1" in status
        subprocess.run(["bash", "-c", "mkdir -p dev/pools/cpu && "
                        "echo 'nodes = 1' > dev/pools/cpu/spec && "
                        "grep -q 'nodes = 1' dev/pools/cpu/spec"],
                       cwd=mnt, check=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        stop(proc, mnt)


def test_version_file_and_option_show_the_build(tmp_path):
    """What a bug report needs: the commit, the build and the libraries
    the daemon runs with, in the mount's version file and --version."""
    out = subprocess.run([BIN, "--version"], capture_output=True,
                         text=True, check=True).stdout
    keys = [line.split(":", 1)[0] for line in out.splitlines()[1:]]
    for key in ("commit", "build", "sd_notify", "libfuse", "sqlite",
                "libpq", "openssl"):
        assert key in keys, out
    assert "sd_notify: yes" in out
    notify = Notify(tmp_path / "notify.sock")
    proc, mnt = start_as_unit(tmp_path, notify)
    try:
        notify.until("READY=1")
        assert (mnt / "version").read_text() == out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        stop(proc, mnt)


def test_log_lines_carry_priorities_for_the_journal(tmp_path):
    """On the journal's stream each line starts with its syslog priority
    (<6> info, <3> error), so journalctl -p err finds the errors."""
    notify = Notify(tmp_path / "notify.sock")
    proc, mnt = start_as_unit(tmp_path, notify, journal=True)
    try:
        notify.until("READY=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        stop(proc, mnt)
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    assert f"<6>mounted sqlite:{tmp_path}/state.db on {mnt}" in lines, lines
    assert not [line for line in lines if line.startswith("infrafs: ")]
