"""mount(8) and /etc/fstab with type fuse.infrafs, through the helper
mount.fuse.infrafs. mount(8) looks for helpers in /sbin only; each test
runs in a private mount namespace where a folder holding the helper is
bound over /usr/sbin, so the real mount(8) finds it and nothing is left
on the machine."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, ROOT, wait_for

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1)")


def run_in_namespace(tmp_path, script):
    """Runs a shell script where mount(8) finds the helper, as built for
    this tree; returns the CompletedProcess."""
    sbin = tmp_path / "sbin"
    sbin.mkdir(exist_ok=True)
    helper = sbin / "mount.fuse.infrafs"
    text = (ROOT / "systemd" / "mount.fuse.infrafs.in").read_text()
    helper.write_text(text.replace("@BINDIR@", str(Path(BIN).parent)))
    helper.chmod(0o755)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mount --bind {sbin} /usr/sbin && {script}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)


def daemon_gone(tmp_path):
    """The daemon of the store at tmp_path/s.db has exited: --check finds
    its lock free."""
    def free():
        return subprocess.run(
            [BIN, "--check", "--state", f"sqlite:{tmp_path}/s.db",
             "--key-file", f"{tmp_path}/k.key"],
            capture_output=True).returncode == 0
    wait_for(free, timeout=20, what="the daemon to exit after umount")


def test_mount_t_fuse_infrafs_cat_umount(tmp_path):
    (tmp_path / "mnt").mkdir()
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount -t fuse.infrafs sqlite:{tmp_path}/s.db {tmp_path}/mnt \
            -o allow_other,key_file={tmp_path}/k.key
        findmnt -n -o SOURCE,FSTYPE,OPTIONS {tmp_path}/mnt
        head -1 {tmp_path}/mnt/version
        mkdir {tmp_path}/mnt/dev
        ls {tmp_path}/mnt
        umount {tmp_path}/mnt
        ! findmnt {tmp_path}/mnt
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    source, fstype, options = lines[0].split()
    assert (source, fstype) == (f"sqlite:{tmp_path}/s.db", "fuse.infrafs")
    assert "allow_other" in options.split(",")
    assert lines[1].startswith("infrafs ")
    assert "dev" in lines[2:]
    assert (tmp_path / "k.key").exists()  # key_file= reached the daemon
    daemon_gone(tmp_path)


def test_fstab_line_mounts_once(tmp_path):
    (tmp_path / "mnt").mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"sqlite:{tmp_path}/s.db {tmp_path}/mnt fuse.infrafs "
        f"allow_other,key_file={tmp_path}/k.key,nofail,"
        f"x-systemd.after=network-online.target 0 0\n")
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount -a -T {fstab}
        mount -a -T {fstab}   # already mounted: nothing to do
        mount -T {fstab} {tmp_path}/mnt 2>/dev/null && exit 9 || true
        findmnt -n -o FSTYPE {tmp_path}/mnt
        cat {tmp_path}/mnt/version | head -1
        umount {tmp_path}/mnt
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "fuse.infrafs" and lines[1].startswith("infrafs ")
    daemon_gone(tmp_path)


def test_unknown_option_is_refused_with_a_clear_message(tmp_path):
    (tmp_path / "mnt").mkdir()
    res = run_in_namespace(tmp_path, f"""
        mount -t fuse.infrafs sqlite:{tmp_path}/s.db {tmp_path}/mnt \
            -o allow_other,colour=blue
        echo rc=$?
        findmnt {tmp_path}/mnt || echo not mounted
    """)
    assert "unknown option 'colour=blue'" in res.stderr
    assert "rc=0" not in res.stdout and "not mounted" in res.stdout
    assert not (tmp_path / "s.db").exists()


def test_sloppy_drops_unknown_options(tmp_path):
    (tmp_path / "mnt").mkdir()
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount -s -t fuse.infrafs sqlite:{tmp_path}/s.db {tmp_path}/mnt \
            -o colour=blue,key_file={tmp_path}/k.key
        findmnt -n -o FSTYPE {tmp_path}/mnt
        umount {tmp_path}/mnt
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ignoring unknown option 'colour=blue'" in res.stderr
    daemon_gone(tmp_path)


def test_bad_store_fails_the_mount_with_the_reason(tmp_path):
    """The daemon's parent exits only once the store opened: mount(8)
    fails, with the daemon's reason."""
    (tmp_path / "mnt").mkdir()
    (tmp_path / "s.db").write_text("not a database\n" * 400)
    res = run_in_namespace(tmp_path, f"""
        mount -t fuse.infrafs sqlite:{tmp_path}/s.db {tmp_path}/mnt \
            -o key_file={tmp_path}/k.key
    """)
    assert res.returncode != 0
    assert "cannot be read" in res.stderr or "not an infrafs" in res.stderr
