"""Limits instead of aborts and silent cuts.

Scratch files are capped in size (EFBIG) and in number per environment
(ENOSPC) without getting in editors' way; every text field has a maximum
length, refused at write(2) with the limit named.
"""
import errno
import json
import os
import re
import subprocess

import pytest

from conftest import have, read, status_of, wait_for
from test_bad_input import expect_errno, write_and_close

RES = "dev/pools/train"
SPEC = f"{RES}/spec"
EP = "dev/endpoints/chat"
MiB = 1024 * 1024
SCRATCH_MAX_BYTES = 4 * MiB
SCRATCH_MAX_FILES = 128
# An events or audit line starts with its time; anything else is forged.
STAMPED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def alive_and_readable(mnt):
    assert mnt.proc.poll() is None, "the daemon died"
    assert read(mnt / SPEC) == "accelerator = nvidia-t4\n"
    assert status_of(mnt / f"{RES}/status")["name"] == "train"


def lines_of(path):
    return read(path).splitlines()


def assert_stamped(path):
    for line in lines_of(path):
        assert STAMPED.match(line), f"{path}: forged line {line!r}"


# ---- scratch files ---------------------------------------------------------


def test_truncate_of_a_scratch_file_to_a_petabyte_is_efbig(env):
    res = env.sh(f"truncate -s 1P {RES}/tmp", check=False)
    assert res.returncode != 0
    assert "File too large" in res.stderr
    expect_errno(errno.EFBIG, os.truncate, env / f"{RES}/tmp", 1 << 50)
    fd = os.open(env / f"{RES}/tmp", os.O_RDWR)
    try:
        expect_errno(errno.EFBIG, os.ftruncate, fd, 1 << 50)
    finally:
        os.close(fd)
    alive_and_readable(env)
    assert os.path.getsize(env / f"{RES}/tmp") == 0


def test_scratch_file_holds_up_to_its_cap(env):
    path = env / f"{RES}/big"
    with open(path, "wb") as f:
        f.write(b"x" * SCRATCH_MAX_BYTES)
    assert os.path.getsize(path) == SCRATCH_MAX_BYTES
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        expect_errno(errno.EFBIG, os.write, fd, b"y")
    finally:
        os.close(fd)
    expect_errno(errno.EFBIG, os.truncate, path, SCRATCH_MAX_BYTES + 1)
    os.truncate(path, 10)
    assert read(path) == "x" * 10


def test_write_far_past_the_end_of_a_scratch_file_is_efbig(env):
    fd = os.open(env / f"{RES}/tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        expect_errno(errno.EFBIG, os.pwrite, fd, b"x", 1 << 50)
        res = env.sh(f"dd if=/dev/zero of={RES}/tmp bs=1 count=1 "
                     "seek=1T conv=notrunc", check=False)
        assert res.returncode != 0 and "File too large" in res.stderr
    finally:
        os.close(fd)
    alive_and_readable(env)


def test_write_far_past_the_end_of_a_spec_is_efbig(env):
    fd = os.open(env / SPEC, os.O_WRONLY)
    try:
        expect_errno(errno.EFBIG, os.pwrite, fd, b"x", 1 << 50)
    finally:
        expect_errno(errno.EFBIG, os.close, fd)
    alive_and_readable(env)
    assert "limit" in status_of(env / f"{RES}/status")["last_error"]


def test_too_many_scratch_files_is_enospc(env):
    env.sh("mkdir stage")
    for i in range(SCRATCH_MAX_FILES // 2):
        open(env / f"dev/t{i}", "w").close()
        open(env / f"{RES}/t{i}", "w").close()
    # The count is the environment's, wherever in it the file would be.
    expect_errno(errno.ENOSPC, open, env / f"{RES}/one-more", "w")
    expect_errno(errno.ENOSPC, open, env / "dev/one-more", "w")
    res = env.sh(f"touch {RES}/one-more", check=False)
    assert res.returncode != 0 and "No space left" in res.stderr
    # A backup copy is a new scratch file too.
    expect_errno(errno.ENOSPC, os.rename, env / SPEC, env / f"{SPEC}~")
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    # Another environment is not affected, and cannot move files in.
    open(env / "stage/mine", "w").close()
    expect_errno(errno.ENOSPC, os.rename, env / "stage/mine",
                 env / "dev/mine")
    # Removing one makes room again.
    os.unlink(env / "dev/t0")
    open(env / f"{RES}/one-more", "w").close()
    alive_and_readable(env)


def big_spec():
    """Labels up to just under the 1 MiB a spec may be."""
    lines = ["accelerator = nvidia-t4\n"]
    size, i = len(lines[0]), 0
    while True:
        line = f"labels.k{i} = v\n"
        if size + len(line) > MiB - 64:
            return "".join(lines)
        lines.append(line)
        size += len(line)
        i += 1


@pytest.mark.skipif(not have("vim"), reason="vim not installed")
def test_vim_edits_a_spec_of_almost_one_mib(env):
    text = big_spec()
    (env / SPEC).write_text(text)
    env.sh(f"vim -u DEFAULTS -i NONE -es -c 'set backupskip=' "
           f"-c '1s/nvidia-t4/nvidia-l4/' -c 'wq' {SPEC}")
    assert read(env / SPEC) == text.replace("nvidia-t4", "nvidia-l4", 1)


def test_sed_in_place_edits_a_spec_of_almost_one_mib(env):
    text = big_spec()
    (env / SPEC).write_text(text)
    env.sh(f"sed -i 's/nvidia-t4/nvidia-l4/' {SPEC}")
    assert read(env / SPEC) == text.replace("nvidia-t4", "nvidia-l4", 1)


# ---- maximum lengths -------------------------------------------------------


def endpoint(command):
    # No replicas: nothing is started, the spec is all that matters.
    return f"replicas = 0\ncommand = {command}\n"


def test_command_of_4100_bytes_is_kept_whole(env):
    command = "exec true " + "x" * 4090
    assert len(command) == 4100
    env.sh(f"mkdir {EP}")
    (env / f"{EP}/spec").write_text(endpoint(command))
    assert read(env / f"{EP}/command") == command + "\n"
    assert read(env / f"{EP}/spec") == endpoint(command)
    assert json.loads(read(env / f"{EP}/status.json"))["spec"][
        "command"] == command
    # The field file takes it whole as well.
    longer = command + " y"
    (env / f"{EP}/command").write_text(longer + "\n")
    assert read(env / f"{EP}/command") == longer + "\n"


def test_command_over_the_limit_is_refused_at_write(env):
    env.sh(f"mkdir {EP}")
    (env / f"{EP}/spec").write_text(endpoint("exec true"))
    text = endpoint("x" * 70000).encode()
    fd = os.open(env / f"{EP}/spec", os.O_WRONLY | os.O_TRUNC)
    try:
        # The write that carries the line fails, not only the close.
        expect_errno(errno.EINVAL, os.write, fd, text)
    finally:
        expect_errno(errno.EINVAL, os.close, fd)
    assert status_of(env / f"{EP}/status")["last_error"] == (
        "write refused: line 2: command: longer than 65536 bytes "
        "(the limit), got 70000")
    assert read(env / f"{EP}/command") == "exec true\n"


def test_kinds_shows_the_maximum_lengths(mnt):
    doc = read(mnt / "kinds/endpoint")
    assert re.search(r"\n    command\n        text, at most 65536 bytes\n",
                     doc)
    assert "URI (s3://, gs://, file://, hf://), at most 2048 bytes" in doc
    assert "map: env.KEY = value; KEY at most 256 bytes" in doc
    assert "KEY at most 128 bytes, value at most 256" in read(
        mnt / "kinds/pool")
