"""fsync(2) on an editable file commits what was written so far, with the
checks and verdict of a close, and the close after it makes no second
revision."""
import contextlib
import errno
import os

import pytest

from conftest import BOTH_BACKENDS, read, revisions, status_of

# What fsync(2) promises is the store's promise: both backends keep it.
pytestmark = pytest.mark.parametrize("backend", BOTH_BACKENDS,
                                     indirect=True)

SPEC = "dev/pools/train/spec"


def audit_lines(mnt):
    return read(mnt / "dev/audit").splitlines()


@contextlib.contextmanager
def opened(path, mode):
    """An unbuffered file, so each write(2) and fsync(2) is the test's own.
    A test closes it itself to see the verdict; this only frees it when
    the test stopped early or the daemon is gone, so that no descriptor
    keeps the mount busy."""
    f = open(path, mode, buffering=0)
    try:
        yield f
    finally:
        with contextlib.suppress(OSError):
            f.close()


@pytest.mark.parametrize("path, text", [
    (SPEC, b"nodes = 3\n"),
    ("dev/pools/train/nodes", b"4\n"),
    ("dev/config", b"approval = manual\n"),
])
def test_fsync_is_durable_before_close(env, path, text):
    """SIGKILL after fsync(2) and before close(2): fsync promised it."""
    before = revisions(env)
    with opened(env / path, "wb") as f:
        f.write(text)
        os.fsync(f.fileno())
        env.kill()
    env.start()
    assert read(env / path) == text.decode()
    assert revisions(env) == before + [before[-1] + 1]
    assert f"path={path}" in audit_lines(env)[-1]


def test_fsync_of_a_secret_is_durable_before_close(env):
    with opened(env / "dev/secrets/token", "wb") as f:
        f.write(b"hunter2\n")
        os.fsync(f.fileno())
        env.kill()
    env.start()
    assert os.listdir(env / "dev/secrets") == ["token"]


def test_fdatasync_history_holds_the_text_written(env):
    with opened(env / SPEC, "ab") as f:
        f.write(b"labels.team = nlp\n")
        os.fdatasync(f.fileno())
        rev = revisions(env)[-1]
        env.kill()
    env.start()
    assert revisions(env)[-1] == rev
    assert read(env / f"dev/history/{rev}/pools/train") == \
        "accelerator = nvidia-t4\nlabels.team = nlp\n"


def test_refused_text_fails_fsync_and_close_once(env):
    events = read(env / "dev/pools/train/events").count("commit refused")
    with opened(env / SPEC, "wb") as f:
        f.write(b"nodes = 3\nmin_nodes = 5\n")  # each line is fine alone
        with pytest.raises(OSError) as e:
            os.fsync(f.fileno())
        assert e.value.errno == errno.EINVAL
        st = status_of(env / "dev/pools/train/status")
        assert st["last_error"] == \
            "line 2: min_nodes: must be <= nodes (5 > 3)"
        assert read(env / SPEC) == "accelerator = nvidia-t4\n"
        # The close reports the same verdict, from that one commit.
        with pytest.raises(OSError) as e:
            f.close()
        assert e.value.errno == errno.EINVAL
    assert read(env / "dev/pools/train/events").count("commit refused") \
        == events + 1
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_write_after_a_refused_fsync_is_committed_at_close(env):
    with opened(env / SPEC, "wb") as f:
        f.write(b"nodes = 3\nmin_nodes = 5\n")
        with pytest.raises(OSError):
            os.fsync(f.fileno())
        f.write(b"nodes = 6\n")
        f.close()
    assert read(env / SPEC) == "nodes = 3\nmin_nodes = 5\nnodes = 6\n"


def test_fsync_after_a_bad_line_fails_like_close(env):
    with opened(env / SPEC, "wb") as f:
        with pytest.raises(OSError):
            f.write(b"nodes = four\n")
        with pytest.raises(OSError) as e:
            os.fsync(f.fileno())
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError):
            f.close()
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_fsync_then_close_makes_exactly_one_revision(env):
    revs, audit = revisions(env), audit_lines(env)
    with opened(env / SPEC, "wb") as f:
        f.write(b"nodes = 2\n")
        os.fsync(f.fileno())
        # In force for every reader as soon as fsync returns.
        assert read(env / SPEC) == "nodes = 2\n"
        assert len(revisions(env)) == len(revs) + 1
        os.fsync(f.fileno())  # nothing new: nothing to commit
        f.close()
    assert len(revisions(env)) == len(revs) + 1
    assert len(audit_lines(env)) == len(audit) + 1


def test_write_fsync_write_close_makes_two_revisions(env):
    revs, audit = revisions(env), audit_lines(env)
    with opened(env / SPEC, "wb") as f:
        f.write(b"nodes = 2\n")
        os.fsync(f.fileno())
        f.write(b"labels.team = nlp\n")
        f.close()
    new = revisions(env)[len(revs):]
    assert len(new) == 2
    assert len(audit_lines(env)) == len(audit) + 2
    assert read(env / f"dev/history/{new[0]}/pools/train") == "nodes = 2\n"
    assert read(env / f"dev/history/{new[1]}/pools/train") == \
        "nodes = 2\nlabels.team = nlp\n"


def test_fsync_of_a_truncation_commits_it_once(env):
    """`: > spec` and fsync: the empty spec (all defaults) is committed
    at the fsync, not again when the file is released."""
    revs = revisions(env)
    with opened(env / SPEC, "wb") as f:
        os.fsync(f.fileno())
        assert read(env / SPEC) == ""
        assert len(revisions(env)) == len(revs) + 1
        f.close()
    assert len(revisions(env)) == len(revs) + 1


def test_fsync_without_a_change_commits_nothing(env):
    revs = revisions(env)
    with opened(env / SPEC, "r+b") as f:
        os.fsync(f.fileno())
        f.close()
    assert revisions(env) == revs


def test_fsync_of_scratch_and_generated_files_succeeds(env):
    revs = revisions(env)
    with opened(env / "dev/notes.tmp", "wb") as f:
        f.write(b"draft\n")
        os.fsync(f.fileno())
    with opened(env / "dev/pools/train/status", "rb") as f:
        os.fsync(f.fileno())
    assert revisions(env) == revs
    assert read(env / "dev/notes.tmp") == "draft\n"
