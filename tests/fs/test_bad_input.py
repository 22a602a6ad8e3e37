"""Bad input gets a clear errno, the daemon stays up, and nothing already
accepted changes."""
import errno
import os
import re

import pytest

from conftest import read, revisions, status_of

SPEC = "dev/pools/train/spec"
GOOD = "accelerator = nvidia-t4\n"


@pytest.fixture
def guarded(env):
    """Checks after the test that the accepted state is intact."""
    revs = revisions(env)
    yield env
    assert env.proc.poll() is None, "the daemon died"
    assert read(env / SPEC) == GOOD
    assert revisions(env) == revs


def expect_errno(err, fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    assert e.value.errno == err, os.strerror(e.value.errno)


def write_and_close(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_spec_over_one_mib(guarded):
    line = b"labels.k%07d = v\n"
    big = b"".join(line % i for i in range(70000))
    assert len(big) > 1024 * 1024
    expect_errno(errno.EFBIG, write_and_close, guarded / SPEC, big)
    assert "limit" in status_of(guarded / "dev/pools/train/status")[
        "last_error"]


def test_nul_byte(guarded):
    expect_errno(errno.EINVAL, write_and_close, guarded / SPEC,
                 b"nodes = 1\x00\n")
    assert "NUL" in status_of(guarded / "dev/pools/train/status")[
        "last_error"]


def test_invalid_utf8(guarded):
    expect_errno(errno.EINVAL, write_and_close, guarded / SPEC,
                 b"labels.team = \xff\xfe\n")
    assert "UTF-8" in status_of(guarded / "dev/pools/train/status")[
        "last_error"]


def test_invalid_utf8_in_an_unfinished_line_fails_close(guarded):
    expect_errno(errno.EINVAL, write_and_close, guarded / SPEC,
                 b"labels.team = \xc3")


@pytest.mark.parametrize("data", [
    b'{"labels": {"x\\nforged: yes": "1"}}',
    b"\x1b[2J\rforged: yes = 1\n"])
def test_control_bytes_stay_inside_the_error_line(guarded, data):
    expect_errno(errno.EINVAL, write_and_close, guarded / SPEC, data)
    st = status_of(guarded / "dev/pools/train/status")
    assert "forged" not in st
    # Escaped as infrafs(1) says: \n, \r, \t, else \xNN.
    assert re.search(r"\\(n|r|t|x[0-9a-f]{2})", st["last_error"])
    assert not any(ord(c) < 0x20 for c in read(
        guarded / "dev/pools/train/status").replace("\n", ""))


@pytest.mark.parametrize("name", ["a/b", "..", "a" * 300])
def test_bad_resource_names(guarded, name):
    with pytest.raises(OSError) as e:
        os.mkdir(guarded / "dev/pools" / name)
    assert e.value.errno in (errno.EINVAL, errno.ENOENT, errno.EEXIST,
                             errno.ENAMETOOLONG, errno.EPERM)
    assert sorted(os.listdir(guarded / "dev/pools")) == ["train"]


@pytest.mark.parametrize("path", [
    "dev/pools/train/status", "dev/pools/train/status.json",
    "dev/pools/train/state", "dev/pools/train/events", "dev/status",
    "dev/audit", "dev/plan", "version", "README", "kinds/pool",
    "dev/history/2/info", "dev/history/2/pools/train"])
def test_writes_to_read_only_files_are_refused_even_for_root(guarded, path):
    expect_errno(errno.EACCES, write_and_close, guarded / path, b"x\n")
    # Status files change as the reconciler works; none shows the write.
    assert "x\n" != read(guarded / path)[:2]
    if path in ("version", "README", "kinds/pool", "dev/history/2/info",
                "dev/history/2/pools/train"):
        before = read(guarded / path)
        expect_errno(errno.EACCES, write_and_close, guarded / path, b"x\n")
        assert read(guarded / path) == before


def test_secrets_cannot_be_read_back_by_anyone(env):
    env.sh("printf hunter2 > dev/secrets/token")
    st = os.stat(env / "dev/secrets/token")
    assert st.st_size == 0 and st.st_mode & 0o777 == 0o200
    # Root's whole-tree readers may open it: it reads as empty.
    assert (env / "dev/secrets/token").read_bytes() == b""
    expect_errno(errno.EACCES, os.open, env / "dev/secrets/token",
                 os.O_RDWR)
    res = env.sh("grep -r hunter2 . ; true")
    assert "hunter2" not in res.stdout
    db = b"".join(p.read_bytes() for p in env.state.parent.rglob("*")
                  if p.is_file())
    assert b"hunter2" not in db
    # Rewriting makes a new version.
    env.sh("printf other > dev/secrets/token")
    assert "version 2" in read(env / "dev/audit")
    os.unlink(env / "dev/secrets/token")
    assert os.listdir(env / "dev/secrets") == []
    assert env.proc.poll() is None


def test_ctl_checks_commands_and_reads_back_results(guarded):
    expect_errno(errno.EINVAL, write_and_close, guarded / "dev/ctl",
                 b"explode\n")
    expect_errno(errno.EINVAL, write_and_close, guarded / "dev/ctl",
                 b"rollback two\x1b[2J\n")
    assert "rollback: expected a revision number" in read(
        guarded / "dev/events")
    ctl = read(guarded / "dev/ctl")
    assert "rollback REV" in ctl
    assert "explode: refused: explode: unknown command" in ctl
    # What a user wrote is escaped: one line, no terminal control.
    assert "rollback two\\x1b[2J: refused:" in ctl
    assert "\x1b" not in ctl


def test_rmdir_of_an_environment_in_use(guarded):
    expect_errno(errno.ENOTEMPTY, os.rmdir, guarded / "dev")


def test_unlink_of_fixed_files(guarded):
    # A spec may be unlinked to be replaced (test_everyday_tools.py).
    for path in ["dev/pools/train/nodes", "dev/pools/train/status",
                 "dev/config", "README"]:
        expect_errno(errno.EPERM, os.unlink, guarded / path)


def test_rename_of_a_resource_folder_is_refused(guarded):
    expect_errno(errno.EPERM, os.rename, guarded / "dev/pools/train",
                 guarded / "dev/pools/other")


def test_create_where_only_mkdir_belongs(guarded):
    for path in ["dev/pools/file", "newfile", "dev/history/x"]:
        with pytest.raises(OSError) as e:
            open(guarded / path, "w").close()
        assert e.value.errno in (errno.EPERM, errno.EACCES)


def test_chmod_of_a_spec_that_would_widen_it_is_refused(guarded):
    os.chmod(guarded / SPEC, 0o644)
    # Narrower (install(1) writes at 0600): accepted, not kept.
    os.chmod(guarded / SPEC, 0o600)
    assert os.stat(guarded / SPEC).st_mode & 0o777 == 0o644
    expect_errno(errno.EPERM, os.chmod, guarded / SPEC, 0o664)
    expect_errno(errno.EPERM, os.chmod, guarded / SPEC, 0o755)
    expect_errno(errno.EPERM, os.chmod, guarded / "dev/pools/train/status",
                 0o400)


def test_growing_a_spec_by_ftruncate_is_refused(guarded):
    fd = os.open(guarded / SPEC, os.O_RDWR)
    try:
        expect_errno(errno.EINVAL, os.ftruncate, fd, 500)
    finally:
        os.close(fd)
    expect_errno(errno.EINVAL, os.truncate, guarded / SPEC, 500)
