"""promote: `echo 'promote dev' > staging/ctl` makes staging's pools and
endpoints those of dev, as one revision under staging's own rules."""
import errno
import os
import subprocess
import time

import pytest

from conftest import Mount, read, revisions, status_of, wait_for

EP = "command = exec sleep 1000\nreplicas = 0\n"
SECRET_EP = EP + "env.TOKEN = secret:tok\n"


def ctl(m, env, line):
    """Writes one ctl command; returns 0 or the errno write(2) gave."""
    try:
        with open(m / env / "ctl", "w") as f:
            f.write(line + "\n")
    except OSError as e:
        return e.errno
    return 0


def specs(m, env):
    return {f"{kind}/{name}": read(m / env / kind / name / "spec")
            for kind in ("pools", "endpoints")
            for name in sorted(os.listdir(m / env / kind))}


@pytest.fixture
def two(mnt):
    """dev with two pools and an endpoint; staging with a pool of its own
    and one dev changed."""
    mnt.sh("mkdir dev staging && "
           "mkdir dev/pools/train dev/pools/infer dev/endpoints/chat && "
           "echo 'nodes = 1' > dev/pools/train/spec && "
           "echo 'nodes = 0' > dev/pools/infer/spec && "
           f"printf '{EP}' > dev/endpoints/chat/spec && "
           "mkdir staging/pools/train staging/pools/old && "
           "echo 'nodes = 0' > staging/pools/train/spec && "
           "echo 'nodes = 0' > staging/pools/old/spec")
    return mnt


def test_promote_makes_staging_equal_to_dev_in_one_revision(two):
    m = two
    before = revisions(m, "staging")
    dev_rev = revisions(m, "dev")[-1]
    assert ctl(m, "staging", "promote dev") == 0
    assert specs(m, "staging") == specs(m, "dev")
    # What only staging had is gone; dev is untouched.
    assert "old" not in os.listdir(m / "staging/pools")
    assert revisions(m, "dev")[-1] == dev_rev
    after = revisions(m, "staging")
    assert after == before + [before[-1] + 1]
    info = read(m / f"staging/history/{after[-1]}/info")
    assert f"promote dev revision {dev_rev} (4 changes)" in info
    diff = read(m / f"staging/history/{after[-1]}/diff")
    assert "+++ b/endpoints/chat/spec" in diff
    assert "--- a/pools/old/spec" in diff
    assert "-nodes = 0\n+nodes = 1" in diff
    last = read(m / "staging/audit").splitlines()[-1]
    assert f"promote dev revision {dev_rev}" in last
    assert "path=staging/ctl" in last and "uid=0" in last
    # Promoting again changes nothing and makes no revision.
    assert ctl(m, "staging", "promote dev") == 0
    assert revisions(m, "staging") == after
    assert "promote dev: ok" in read(m / "staging/ctl")


def test_promote_waits_in_the_plan_under_manual_approval(two):
    m = two
    wait_for(lambda: read(m / "staging/pools/old/state").strip() ==
             "ready", 20, "staging/pools/old ready")
    m.sh("echo 'approval = manual' >> staging/config")
    assert ctl(m, "staging", "promote dev") == 0
    assert specs(m, "staging") == specs(m, "dev")
    wait_for(lambda: "+ create endpoints/chat" in read(m / "staging/plan"),
             20, "the promotion in the plan")
    plan = read(m / "staging/plan")
    assert "- destroy pools/old" in plan and "pools/train" in plan
    assert "waiting for approval" in plan
    time.sleep(1)
    assert status_of(m / "staging/endpoints/chat/status")["synced"] == "no"
    assert ctl(m, "staging", "approve") == 0
    wait_for(lambda: read(m / "staging/plan") == "", 20, "an empty plan")
    wait_for(lambda: status_of(m / "staging/endpoints/chat/status")
             ["synced"] == "yes", 20, "the endpoint applied")


def test_a_policy_breach_refuses_the_whole_promotion(two):
    m = two
    m.sh("printf 'accelerator = nvidia-t4\\nnodes = 0\\n' "
         "> dev/pools/train/spec && "
         "echo 'allowed_accelerators = nvidia-a10g' >> staging/policy")
    before = revisions(m, "staging")
    had = specs(m, "staging")
    assert ctl(m, "staging", "promote dev") == errno.EACCES
    # Nothing of it landed: not even the endpoint the policy allows.
    assert specs(m, "staging") == had
    assert revisions(m, "staging") == before
    why = status_of(m / "staging/status")["last_error"]
    assert "promote dev: pools/train/spec: policy allowed_accelerators: " \
        "nvidia-t4 is not allowed in staging" in why, why
    assert "policy allowed_accelerators" in read(m / "staging/events")
    last = read(m / "staging/audit").splitlines()[-1]
    assert "rev=-" in last and "refused: promote dev" in last
    assert "refused: promote dev" in read(m / "staging/ctl")


def test_a_quantity_counts_everything_promoted(two):
    """Each pool is under the limit alone; together they are not."""
    m = two
    m.sh("printf 'accelerator = nvidia-t4\\nnodes = 1\\n' "
         "> dev/pools/train/spec && "
         "echo 'nodes = 3' > dev/pools/infer/spec && "
         "echo 'accelerator = nvidia-t4' >> dev/pools/infer/spec && "
         "echo 'max_accelerators = 3' >> staging/policy")
    had = specs(m, "staging")
    assert ctl(m, "staging", "promote dev") == errno.EDQUOT
    assert specs(m, "staging") == had
    why = status_of(m / "staging/status")["last_error"]
    assert "policy max_accelerators: 4 requested in staging, limit 3" in why


def test_a_secret_staging_lacks_refuses_the_promotion(two):
    m = two
    m.sh("printf s3cret > dev/secrets/tok && "
         f"printf '{SECRET_EP}' > dev/endpoints/chat/spec")
    before = revisions(m, "staging")
    assert ctl(m, "staging", "promote dev") == errno.EINVAL
    assert revisions(m, "staging") == before
    assert "chat" not in os.listdir(m / "staging/endpoints")
    why = status_of(m / "staging/status")["last_error"]
    assert "promote dev: endpoints/chat/spec: line 3: env.TOKEN: no secret " \
        "named \"tok\" in staging" in why, why
    # A secret goes by name: staging's own value, never dev's.
    m.sh("printf other > staging/secrets/tok")
    assert ctl(m, "staging", "promote dev") == 0
    assert read(m / "staging/endpoints/chat/spec") == SECRET_EP
    assert "s3cret" not in read(m / f"staging/history/"
                                f"{revisions(m, 'staging')[-1]}/diff")


def test_protected_resources_only_in_staging_wait_for_approval(two):
    m = two
    m.sh("echo 'protect = destroy' >> staging/policy")
    assert ctl(m, "staging", "promote dev") == 0
    assert sorted(os.listdir(m / "staging/pools")) == \
        ["infer", "old", "train"]
    info = read(m / f"staging/history/{revisions(m, 'staging')[-1]}/info")
    assert "protected destroys wait for approval" in info
    assert "destroy requested" in read(m / "staging/pools/old/events")
    wait_for(lambda: "- destroy pools/old" in read(m / "staging/plan"), 20,
             "the destroy in the plan")
    assert ctl(m, "staging", "approve") == 0
    wait_for(lambda: sorted(os.listdir(m / "staging/pools")) ==
             ["infer", "train"], 20, "the protected pool to go")


def test_unknown_or_same_environment_is_refused(two):
    m = two
    assert ctl(m, "staging", "promote nosuch") == errno.ENOENT
    assert "no environment nosuch" in \
        status_of(m / "staging/status")["last_error"]
    assert ctl(m, "staging", "promote staging") == errno.EINVAL
    assert ctl(m, "staging", "promote") == errno.EINVAL


USER = "ifs-promoter"


@pytest.fixture
def promoter():
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(["useradd", "-M", USER], check=True)
    yield int(subprocess.check_output(["id", "-u", USER]))
    subprocess.run(["userdel", USER], capture_output=True)


def as_user(m, uid, script):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}",
                           "--clear-groups", "bash", "-c", script],
                          cwd=m.path, capture_output=True, text=True)


def test_who_may_promote(tmp_path, promoter):
    m = Mount(tmp_path, extra=["-o", "allow_other"]).start()
    try:
        os.chmod(tmp_path, 0o755)
        m.sh("mkdir dev staging && mkdir dev/pools/train && "
             "echo 'nodes = 0' > dev/pools/train/spec")
        os.chmod(m / "dev", 0o700)
        os.chmod(m / "staging", 0o755)
        before = revisions(m, "staging")
        # Who may not write staging's specs may not open its ctl.
        r = as_user(m, promoter, "echo 'promote dev' > staging/ctl")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        # Who may write staging but not read dev learns nothing of dev.
        os.chown(m / "staging", promoter, promoter)
        before = revisions(m, "staging")
        r = as_user(m, promoter, "echo 'promote dev' > staging/ctl")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert os.listdir(m / "staging/pools") == []
        assert revisions(m, "staging") == before
        why = status_of(m / "staging/status")["last_error"]
        assert f"uid {promoter} may not read dev" in why, why
        # Once dev is readable to them, they may.
        os.chmod(m / "dev", 0o755)
        r = as_user(m, promoter, "echo 'promote dev' > staging/ctl")
        assert r.returncode == 0, r.stderr
        assert os.listdir(m / "staging/pools") == ["train"]
        last = read(m / "staging/audit").splitlines()[-1]
        assert f"uid={promoter}" in last and "promote dev" in last
    finally:
        m.stop()
