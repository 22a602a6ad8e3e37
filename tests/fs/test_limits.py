"""Limits instead of aborts and silent cuts, and output nobody can forge.

Scratch files are capped in size (EFBIG) and in number per environment
(ENOSPC) without getting in editors' way; every text field has a maximum
length, refused at write(2) with the limit named; and control characters
that users (or a process's comm) put into keys, values and messages are
escaped in status, events, audit and plan.
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


# ---- nothing forged --------------------------------------------------------


def test_json_key_with_a_newline_is_refused_and_forges_nothing(env):
    text = json.dumps({"labels.a\nstate: ready": "x"}).encode()
    expect_errno(errno.EINVAL, write_and_close, env / SPEC, text)
    status = lines_of(env / f"{RES}/status")
    assert [line for line in status if line.startswith("state:")] == [
        "state: " + status_of(env / f"{RES}/status")["state"]]
    error = status_of(env / f"{RES}/status")["last_error"]
    assert error.startswith("labels.a\\nstate: ready: expected labels.KEY")
    assert_stamped(env / f"{RES}/events")
    assert_stamped(env / "dev/audit")
    assert "refused: labels.a\\nstate: ready:" in lines_of(
        env / "dev/audit")[-1]


def test_control_characters_of_a_refused_value_are_escaped(env):
    expect_errno(errno.EINVAL, write_and_close, env / SPEC,
                 b"nodes = 1\x1b[2J\x7f\xc2\x85\n")
    error = status_of(env / f"{RES}/status")["last_error"]
    assert error == ("write refused: line 1: nodes: expected an integer "
                     ">= 0, got \"1\\x1b[2J\\x7f\\xc2\\x85\"")
    for path in (f"{RES}/status", f"{RES}/events", "dev/events"):
        assert not re.search("[\x1b\x7f\x85]", read(env / path))
    assert_stamped(env / f"{RES}/events")


def test_ctl_line_with_control_characters_is_escaped(env):
    expect_errno(errno.EINVAL, write_and_close, env / "dev/ctl",
                 b"bogus\x1b]0;title\x07\n")
    error = status_of(env / "dev/status")["last_error"]
    assert error.startswith("write refused: ctl bogus\\x1b]0;title\\x07: ")
    assert "\x1b" not in read(env / "dev/events")
    assert_stamped(env / "dev/events")


def test_plan_escapes_control_characters_of_values(mnt):
    mnt.sh("mkdir dev && echo 'approval = manual' >> dev/config && "
           "mkdir dev/pools/cpu && echo 'nodes = 0' > dev/pools/cpu/spec")
    wait_for(lambda: "+ create pools/cpu" in read(mnt / "dev/plan"), 10,
             "a plan")
    mnt.sh("echo approve > dev/ctl")
    wait_for(lambda: read(mnt / "dev/plan") == "", 10, "the plan applied")
    # Values may hold ESC (only \n and \r are refused): a label from JSON.
    (mnt / "dev/pools/cpu/spec").write_text(json.dumps(
        {"nodes": 0, "labels": {"team": "a\x1b[2J\u009bb"}}))
    wait_for(lambda: "~ update" in read(mnt / "dev/plan"), 10, "a plan")
    plan = read(mnt / "dev/plan")
    assert "labels: (unset) -> team = a\\x1b[2J\\xc2\\x9bb" in plan
    assert "\x1b" not in plan and "\u009b" not in plan
    # plan.json is JSON: jansson writes the value with its own escapes.
    steps = json.loads(read(mnt / "dev/plan.json"))["steps"]
    assert steps[0]["changes"][0]["to"] == "team = a\x1b[2J\u009bb"


def write_with_comm(path, comm, data):
    """Writes path from a child whose comm (what /proc/PID/comm says, and
    so the audit line) is comm, as prctl(PR_SET_NAME) lets anyone set."""
    script = (
        "import ctypes, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"assert libc.prctl(15, {comm!r}, 0, 0, 0) == 0\n"
        f"open({str(path)!r}, 'w').write({data!r})\n")
    subprocess.run(["python3", "-c", script], check=True)


def test_comm_with_a_newline_is_escaped_in_audit(env):
    write_with_comm(env / SPEC, b"a\nb c", "nodes = 2\n")
    audit = lines_of(env / "dev/audit")
    assert_stamped(env / "dev/audit")
    assert " comm=a\\nb\\x20c path=dev/pools/train/spec update " in audit[-1]
    events = lines_of(env / "dev/events")
    assert_stamped(env / "dev/events")
    assert events[-1].endswith(f"(uid {os.getuid()}, a\\nb\\x20c)")
    rev = sorted(int(r) for r in os.listdir(env / "dev/history"))[-1]
    assert "command: a\\nb\\x20c\n" in read(env / f"dev/history/{rev}/info")
