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
from pg import run_sql

FSTAB_GENERATOR = Path("/usr/lib/systemd/system-generators/"
                       "systemd-fstab-generator")

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


def daemon_gone(tmp_path, store=None):
    """The daemon of the store (default: tmp_path/s.db) has exited:
    --check finds its lock free."""
    def free():
        return subprocess.run(
            [BIN, "--check", "--state", store or f"sqlite:{tmp_path}/s.db",
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


def assert_daemon_args(stderr, tmp_path, url, fsname):
    """The daemon's command line, as the helper said it (mount -v), is
    the store, the key, the local folder and FUSE's options: what mount(8)
    adds (rw), allow_other and the source as the mount's name."""
    said = [line for line in stderr.splitlines()
            if line.startswith(f"mount.fuse.infrafs: {BIN} ")]
    assert said, stderr
    args = said[-1].split()[2:]
    assert args[:6] == ["--state", url, "--key-file", f"{tmp_path}/k.key",
                        "--local-dir", f"{tmp_path}/local"]
    assert args[6] == "-o" and args[8:] == [f"{tmp_path}/mnt"], args
    fuse, name = args[7].split(",fsname=")
    assert set(fuse.split(",")) <= {"rw", "allow_other"}, args
    assert "allow_other" in fuse.split(",") and name == fsname


def test_postgresql_source_mount_write_read_umount(tmp_path, pg_server,
                                                   pg_db):
    url = pg_server.url(pg_db)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount -v -t fuse.infrafs '{url}' {mnt} >&2 \
            -o allow_other,key_file={tmp_path}/k.key,local_dir={tmp_path}/local
        findmnt -n -o SOURCE,FSTYPE {mnt}
        mkdir -p {mnt}/dev/pools/train
        echo 'nodes = 2' > {mnt}/dev/pools/train/spec
        cat {mnt}/dev/pools/train/spec
        umount {mnt}
        ! findmnt {mnt}
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [url, "fuse.infrafs"]
    assert "nodes = 2" in lines[1:]
    assert_daemon_args(res.stderr, tmp_path, url, url)
    assert (tmp_path / "local").is_dir()  # not the machine's /var/lib
    # The spec went to the database, not to a file beside the mount.
    assert "nodes = 2" in run_sql(
        url, "SELECT convert_from(spec, 'UTF8') FROM resources"
             " WHERE name = 'train'")
    assert not list(tmp_path.glob("*.db"))
    daemon_gone(tmp_path, url)


def several_hosts_url(pg_server, db):
    """The same server named twice: a libpq URL with commas in it."""
    return (f"postgresql://{pg_server.url(db).split('://')[1].split('?')[0]}"
            f"?host={pg_server.sock},{pg_server.sock}"
            f"&port={pg_server.port},{pg_server.port}")


def test_fstab_line_with_postgresql_and_automount(tmp_path, pg_server,
                                                  pg_db):
    """_netdev and x-systemd.automount are for mount(8) and systemd: the
    helper takes them and hands the daemon none of them; a URL with
    commas is still the mount's source, so mount -a sees it mounted."""
    url = several_hosts_url(pg_server, pg_db)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{url} {mnt} fuse.infrafs allow_other,key_file={tmp_path}/k.key,"
        f"local_dir={tmp_path}/local,_netdev,x-systemd.automount,nofail"
        " 0 0\n")
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount -v -a -T {fstab} >&2
        mount -a -T {fstab}   # already mounted: nothing to do
        findmnt -n -o SOURCE,FSTYPE {mnt}
        head -1 {mnt}/version
        umount {mnt}
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == [url, "fuse.infrafs"]
    assert lines[1].startswith("infrafs ")
    # Nothing of what was for mount(8) and systemd reaches the daemon.
    assert_daemon_args(res.stderr, tmp_path, url,
                       url.replace(",", "\\,"))
    daemon_gone(tmp_path, url)


def unit_settings(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if "=" in line and not line.startswith("#"))


@pytest.mark.skipif(not FSTAB_GENERATOR.exists(),
                    reason="no systemd-fstab-generator")
def test_fstab_generator_units_mount_through_the_helper(tmp_path, pg_server,
                                                        pg_db):
    """What systemd makes of the line, and the mount(8) call its .mount
    unit makes when the automount point is first touched."""
    url = pg_server.url(pg_db)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{url} {mnt} fuse.infrafs allow_other,key_file={tmp_path}/k.key,"
        f"local_dir={tmp_path}/local,_netdev,x-systemd.automount 0 0\n")
    units = tmp_path / "units"
    units.mkdir()
    subprocess.run([FSTAB_GENERATOR, units, units, units], check=True,
                   timeout=30, env={**os.environ, "SYSTEMD_FSTAB": str(fstab),
                                    "SYSTEMD_PROC_CMDLINE": "",
                                    "SYSTEMD_IN_INITRD": "0"})
    automounts = list(units.glob("*.automount"))
    assert len(automounts) == 1, list(units.iterdir())
    name = automounts[0].name
    assert unit_settings(automounts[0])["Where"] == str(mnt)
    # _netdev: a remote file system, after the network.
    assert any((units / f"remote-fs.target.{dep}" / name).exists()
               for dep in ("requires", "wants")), list(units.iterdir())
    mount = unit_settings(units / name.replace(".automount", ".mount"))
    assert (mount["What"], mount["Where"], mount["Type"]) == \
        (url, str(mnt), "fuse.infrafs")
    res = run_in_namespace(tmp_path, f"""
        set -e
        mount '{mount["What"]}' '{mount["Where"]}' -t '{mount["Type"]}' \
            -o '{mount["Options"]}'
        findmnt -n -o SOURCE {mnt}
        umount {mnt}
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.split() == [url]
    daemon_gone(tmp_path, url)


def test_password_in_the_url_is_refused(tmp_path):
    """It would show in /proc/mounts to every user."""
    (tmp_path / "mnt").mkdir()
    res = run_in_namespace(tmp_path, f"""
        mount -t fuse.infrafs 'postgresql://u:secret@127.0.0.1:1/db' \
            {tmp_path}/mnt -o key_file={tmp_path}/k.key
        echo rc=$?
        findmnt {tmp_path}/mnt || echo not mounted
    """)
    assert "holds a password" in res.stderr and "passfile=" in res.stderr
    assert "secret" not in res.stderr
    assert "rc=0" not in res.stdout and "not mounted" in res.stdout
