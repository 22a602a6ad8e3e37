"""fsync(2) on an editable file commits what was written so far, with the
checks and verdict of a close, and the close after it makes no second
revision."""
import errno
import os

import pytest

from conftest import read, revisions, status_of

SPEC = "dev/pools/train/spec"


def audit_lines(mnt):
    return read(mnt / "dev/audit").splitlines()


def close_quietly(fd):
    """The daemon is gone: closing the descriptor only has to free it."""
    try:
        os.close(fd)
    except OSError:
        pass


@pytest.mark.parametrize("path, text, check, expect", [
    (SPEC, b"nodes = 3\n", SPEC, "nodes = 3\n"),
    ("dev/pools/train/nodes", b"4\n", "dev/pools/train/nodes", "4\n"),
    ("dev/config", b"approval = manual\n", "dev/config",
     "approval = manual\n"),
])
def test_fsync_is_durable_before_close(env, path, text, check, expect):
    """SIGKILL after fsync(2) and before close(2): fsync promised it."""
    before = revisions(env)
    fd = os.open(env / path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, text)
    os.fsync(fd)
    env.kill()
    close_quietly(fd)
    env.start()
    assert read(env / check) == expect
    assert revisions(env) == before + [before[-1] + 1]
    assert f"path={path}" in audit_lines(env)[-1]


def test_fsync_of_a_secret_is_durable_before_close(env):
    fd = os.open(env / "dev/secrets/token", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"hunter2\n")
    os.fsync(fd)
    env.kill()
    close_quietly(fd)
    env.start()
    assert os.listdir(env / "dev/secrets") == ["token"]


def test_fsync_history_holds_the_text_written(env):
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"labels.team = nlp\n")
    os.fdatasync(fd)
    rev = revisions(env)[-1]
    env.kill()
    close_quietly(fd)
    env.start()
    assert revisions(env)[-1] == rev
    assert read(env / f"dev/history/{rev}/pools/train") == \
        "accelerator = nvidia-t4\nlabels.team = nlp\n"


def test_refused_text_fails_fsync_and_close_once(env):
    events = read(env / "dev/pools/train/events").count("commit refused")
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 3\nmin_nodes = 5\n")  # each line is fine alone
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.EINVAL
    st = status_of(env / "dev/pools/train/status")
    assert st["last_error"] == "line 2: min_nodes: must be <= nodes (5 > 3)"
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    # The close reports the same verdict, from the same one commit.
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert read(env / "dev/pools/train/events").count("commit refused") \
        == events + 1
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_write_after_a_refused_fsync_is_committed_at_close(env):
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 3\nmin_nodes = 5\n")
    with pytest.raises(OSError):
        os.fsync(fd)
    os.write(fd, b"nodes = 6\n")
    os.close(fd)
    assert read(env / SPEC) == "nodes = 3\nmin_nodes = 5\nnodes = 6\n"


def test_fsync_after_a_bad_line_fails_like_close(env):
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    with pytest.raises(OSError):
        os.write(fd, b"nodes = four\n")
    with pytest.raises(OSError) as e:
        os.fsync(fd)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        os.close(fd)
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_fsync_then_close_makes_exactly_one_revision(env):
    revs, audit = revisions(env), audit_lines(env)
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 2\n")
    os.fsync(fd)
    # In force for every reader as soon as fsync returns.
    assert read(env / SPEC) == "nodes = 2\n"
    assert len(revisions(env)) == len(revs) + 1
    os.fsync(fd)  # nothing new: nothing to commit
    os.close(fd)
    assert len(revisions(env)) == len(revs) + 1
    assert len(audit_lines(env)) == len(audit) + 1


def test_write_fsync_write_close_makes_two_revisions(env):
    revs, audit = revisions(env), audit_lines(env)
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 2\n")
    os.fsync(fd)
    os.write(fd, b"labels.team = nlp\n")
    os.close(fd)
    new = revisions(env)[len(revs):]
    assert len(new) == 2
    assert len(audit_lines(env)) == len(audit) + 2
    assert read(env / f"dev/history/{new[0]}/pools/train") == \
        "nodes = 2\n"
    assert read(env / f"dev/history/{new[1]}/pools/train") == \
        "nodes = 2\nlabels.team = nlp\n"


def test_fsync_of_a_truncation_commits_it_once(env):
    """`: > spec` and fsync: the empty spec (all defaults) is committed
    at the fsync, not again when the file is released."""
    revs = revisions(env)
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.fsync(fd)
    assert read(env / SPEC) == ""
    assert len(revisions(env)) == len(revs) + 1
    os.close(fd)
    assert len(revisions(env)) == len(revs) + 1


def test_fsync_without_a_change_commits_nothing(env):
    revs = revisions(env)
    fd = os.open(env / SPEC, os.O_RDWR)
    os.fsync(fd)
    os.close(fd)
    assert revisions(env) == revs


def test_fsync_of_scratch_and_generated_files_succeeds(env):
    revs = revisions(env)
    with open(env / "dev/notes.tmp", "w") as f:
        f.write("draft\n")
        f.flush()
        os.fsync(f.fileno())
    with open(env / "dev/pools/train/status") as f:
        os.fsync(f.fileno())
    assert revisions(env) == revs
