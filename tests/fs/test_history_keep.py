"""history_keep and history_keep_days: an environment can bound its
history. The oldest revisions go, what the kept ones show stays exact, and
the audit chain still verifies from a checkpoint."""
import errno
import os
import subprocess
from pathlib import Path

import pytest

from conftest import BOTH_BACKENDS, read, revisions, status_of, wait_for

both = pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True)

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
VERIFY = TOOLS / "infrafs-audit-verify"


def verify(m):
    return subprocess.run([str(VERIFY), m.store_arg()],
                          capture_output=True, text=True)


def applied(m):
    return int(status_of(m / "dev/status")["applied_revision"])


def newest(m):
    return revisions(m)[-1]


def change_nodes(m, times):
    """Makes `times` revisions the local provider can carry out, so that
    each is applied: pruning never passes the applied revision."""
    for n in range(times):
        m.sh(f"printf 'accelerator = cpu\\nlabels.n = {n}\\n'"
             " > dev/pools/train/spec")


@pytest.fixture
def env(mnt):
    """A mount with an environment `dev` and a pool `train` of one CPU
    node, which any machine can run."""
    mnt.sh("mkdir dev && mkdir dev/pools/train && "
           "echo 'accelerator = cpu' > dev/pools/train/spec")
    return mnt


def ctl(m, command):
    try:
        (m / "dev/ctl").write_text(command + "\n")
        return 0
    except OSError as e:
        return e.errno


def keep_four(m):
    """history_keep = 4 and 12 revisions more; returns the newest once
    only the newest four are left."""
    m.sh("echo 'history_keep = 4' >> dev/config")
    change_nodes(m, 12)
    last = newest(m)
    wait_for(lambda: revisions(m)[0] == last - 3, 10, "pruning")
    return last


@both
def test_history_keep_prunes_the_oldest_revisions(env):
    env.sh("mkdir dev/pools/still && "
           "echo 'accelerator = cpu' > dev/pools/still/spec && "
           "echo 'history_keep = 5' >> dev/config")
    change_nodes(env, 20)
    last = newest(env)
    wait_for(lambda: revisions(env) == list(range(last - 4, last + 1)),
             10, "the newest 5 revisions only")
    oldest = last - 4
    # What the kernel cached of pruned revisions is dropped as soon as
    # the notification is sent, a moment after the listing changes.
    for gone in (1, oldest - 1):
        wait_for(lambda: not os.path.exists(env / f"dev/history/{gone}"),
                 5, f"history/{gone} gone from the kernel's cache")
    # A pool unchanged since long before the oldest kept revision is
    # still shown as it was at that revision.
    assert read(env / f"dev/history/{oldest}/pools/still") == \
        "accelerator = cpu\n"
    assert sorted(os.listdir(env / f"dev/history/{oldest}/pools")) == \
        ["still", "train"]
    assert "history_keep = 5" in read(env / f"dev/history/{oldest}/config")
    assert f"revision: {last}" in read(env / f"dev/history/{last}/info")
    assert "pruned: revisions" in read(env / "dev/audit")
    assert "pruned by history_keep" in read(env / "dev/events")
    # The live spec is untouched by pruning.
    assert read(env / "dev/pools/still/spec") == "accelerator = cpu\n"


@both
def test_rollback_to_a_pruned_revision_names_the_rule(env):
    env.sh("echo 'history_keep = 3' >> dev/config")
    change_nodes(env, 10)
    last = newest(env)
    wait_for(lambda: revisions(env)[0] == last - 2, 10, "pruning")
    assert ctl(env, "rollback 2") == errno.EINVAL
    assert "pruned by history_keep" in read(env / "dev/events")
    assert ctl(env, f"rollback {last - 2}") == 0
    assert newest(env) == last + 1


@both
def test_the_audit_chain_verifies_across_what_was_pruned(env):
    last = keep_four(env)
    env.stop()
    res = verify(env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "checkpoint" in res.stdout and "chain intact" in res.stdout
    # The store kept only what history/ shows.
    assert env.sql("SELECT min(rev) FROM revisions") == [[str(last - 3)]]
    env.start()
    assert revisions(env) == list(range(last - 3, last + 1))


@both
def test_removing_the_oldest_kept_audit_line_is_caught(env):
    keep_four(env)
    env.stop()
    env.sql("DELETE FROM audit WHERE id = (SELECT min(id) FROM audit)")
    res = verify(env)
    assert res.returncode == 1
    assert "does not chain to the checkpoint" in res.stdout
    env.start()


@both
def test_a_forged_checkpoint_is_caught(env):
    keep_four(env)
    env.stop()
    env.sql(f"UPDATE envs SET audit_base = '{'ab' * 32}'")
    assert verify(env).returncode == 1
    env.start()


@both
def test_history_keep_days_prunes_by_age(env):
    env.sh("echo 'history_keep_days = 1' >> dev/config")
    change_nodes(env, 6)
    last = newest(env)
    wait_for(lambda: applied(env) == last, 10, "everything applied")
    assert revisions(env)[0] == 1
    env.stop()
    # Revisions 1 to 4 made three days ago, as if the mount had been
    # quiet since; a restart looks at once.
    env.sql("UPDATE revisions SET time = time - 3 * 86400 WHERE rev <= 4")
    env.start()
    wait_for(lambda: revisions(env)[0] == 5, 10, "revisions 1-4 pruned")
    assert revisions(env)[-1] == last
    env.stop()
    assert verify(env).returncode == 0
    env.start()


@both
def test_revisions_not_yet_applied_are_kept(env):
    # The fixture's nvidia-t4 pool cannot be made here: its retries would
    # come back as steps waiting for approval once approval is manual.
    env.sh("echo 'accelerator = cpu' > dev/pools/train/spec")
    env.sh("echo 'history_keep = 2' >> dev/config")
    wait_for(lambda: applied(env) == newest(env), 10, "config applied")
    env.sh("echo 'approval = manual' >> dev/config")
    wait_for(lambda: applied(env) == newest(env), 10, "config applied")
    waiting_from = newest(env)
    change_nodes(env, 6)
    # Nothing after the applied revision may go: discard needs them.
    assert revisions(env)[0] <= waiting_from
    last = newest(env)

    def approved():
        # A plan made before the last commits settled leaves them for
        # the next plan, to be approved in turn.
        if applied(env) == last:
            return True
        ctl(env, "approve")
        return False

    wait_for(approved, 20, "every revision applied")
    wait_for(lambda: revisions(env)[0] == last - 1, 10,
             "pruned once applied")


@both
def test_without_history_keep_every_revision_stays(env):
    change_nodes(env, 30)
    assert revisions(env) == list(range(1, newest(env) + 1))
    assert "pruned" not in read(env / "dev/audit")


def test_a_bad_history_keep_is_refused_with_the_rule(env):
    before = read(env / "dev/config")
    r = env.sh("echo 'history_keep = 0' >> dev/config", check=False)
    assert r.returncode != 0
    assert "history_keep: expected an integer >= 1, got \"0\"" in \
        read(env / "dev/events")
    r = env.sh("echo 'history_keep_days = 90d' >> dev/config", check=False)
    assert r.returncode != 0
    assert "history_keep_days: expected an integer from 1 to 36500" in \
        read(env / "dev/events")
    assert read(env / "dev/config") == before
