"""A tree written in any order converges. rsync writes endpoints/ before
pools/ (it goes by name), and a git checkout writes in any order: an
endpoint naming a pool that is not there yet is accepted at close(2),
shown pending and waiting for the pool, and started once the pool is
made. The same holds for a secret an endpoint names. Removing a pool
or secret still in use stays refused."""
import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import Mount, read, status_of, wait_for

SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1"
EP = "dev/endpoints/chat"
ENDPOINT = f"command = {SERVER}\nhealth_path = /\nreplicas = 1\npool = cpu\n"
POOL = "nodes = 1\n"
NOBODY = 65534


def source_tree(tmp_path, with_pool=True):
    src = tmp_path / "src"
    (src / "endpoints" / "chat").mkdir(parents=True)
    (src / "endpoints" / "chat" / "spec").write_text(ENDPOINT)
    if with_pool:
        (src / "pools" / "cpu").mkdir(parents=True)
        (src / "pools" / "cpu" / "spec").write_text(POOL)
    return src


def state(m, path=EP):
    return read(m / path / "state").strip()


def assert_waits(dev, why):
    """The endpoint is pending for `why` in its status, status.json, the
    plan, plan.json and both events files, and nothing of it runs."""
    wait_for(lambda: why in read(dev / EP / "status"), 10,
             "the endpoint to say what it waits for")
    st = status_of(dev / EP / "status")
    assert st["state"] == "pending"
    assert st["reason"] == why
    assert json.loads(read(dev / EP / "status.json"))["reason"] == why
    wait_for(lambda: why in read(dev / "dev/plan"), 10,
             "the plan to say what the endpoint waits for")
    assert "create endpoints/chat" in read(dev / "dev/plan")
    plan = json.loads(read(dev / "dev/plan.json"))
    assert [s.get("waiting") for s in plan["steps"]] == [why]
    for events in (dev / EP / "events", dev / "dev/events"):
        wait_for(lambda: why in read(events), 10,
                 f"{events} to say what the endpoint waits for")
    assert state(dev) == "pending"
    assert dev.replicas() == []


def assert_starts(dev):
    """The endpoint waits no more: it runs, and says so."""
    wait_for(lambda: state(dev) == "ready", 30,
             "the endpoint to be ready; status:\n" +
             read(dev / EP / "status"))
    assert "waiting" not in read(dev / EP / "status")
    assert "waiting" not in read(dev / "dev/plan")


@pytest.fixture
def dev(mnt):
    mnt.sh("mkdir dev")
    yield mnt
    mnt.kill_replicas()


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_rsync_of_a_tree_converges(dev, tmp_path):
    src = source_tree(tmp_path)
    res = subprocess.run(["rsync", "-r", "--itemize-changes", f"{src}/",
                          str(dev / "dev") + "/"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    # rsync went by name: the endpoint was written before its pool.
    out = res.stdout
    assert out.index("endpoints/chat/spec") < out.index("pools/cpu/spec")
    wait_for(lambda: state(dev) == "ready", 30,
             "the endpoint to be ready; status:\n" +
             read(dev / EP / "status"))
    assert state(dev, "dev/pools/cpu") == "ready"


def test_endpoint_waits_for_its_pool_then_starts(dev, tmp_path):
    src = source_tree(tmp_path, with_pool=False)
    # The endpoint alone: close(2) of its spec succeeds.
    dev.sh("mkdir dev/endpoints/chat")
    subprocess.run(["cp", str(src / "endpoints" / "chat" / "spec"),
                    str(dev / EP / "spec")], check=True)
    # It stays waiting: nothing is started on a pool that is not there.
    assert_waits(dev, "waiting for pools/cpu")
    dev.sh("mkdir dev/pools/cpu && echo 'nodes = 1' > dev/pools/cpu/spec")
    assert_starts(dev)


def test_removing_a_pool_in_use_is_refused(dev, tmp_path):
    src = source_tree(tmp_path, with_pool=False)
    dev.sh("mkdir dev/endpoints/chat")
    subprocess.run(["cp", str(src / "endpoints" / "chat" / "spec"),
                    str(dev / EP / "spec")], check=True)
    dev.sh("mkdir dev/pools/cpu && echo 'nodes = 1' > dev/pools/cpu/spec")
    with pytest.raises(OSError) as e:
        os.rmdir(dev / "dev/pools/cpu")
    assert e.value.errno == errno.EBUSY
    res = dev.sh("rmdir dev/pools/cpu", check=False)
    assert res.returncode != 0
    assert os.path.isdir(dev / "dev/pools/cpu")
    # A pool only named, never made, is in use as much.
    dev.sh("mkdir dev/endpoints/two")
    (dev / "dev/endpoints/two/spec").write_text(
        ENDPOINT.replace("pool = cpu", "pool = gpu"))
    dev.sh("mkdir dev/pools/gpu")
    with pytest.raises(OSError) as e:
        os.rmdir(dev / "dev/pools/gpu")
    assert e.value.errno == errno.EBUSY


# ---- secrets an endpoint names -------------------------------------------
# rsync goes by name, so endpoints/ comes before secrets/ too.

SECRET_ENDPOINT = ENDPOINT + "env.TOKEN = secret:tok\n"


def test_endpoint_waits_for_its_secret_then_starts(dev):
    dev.sh("mkdir dev/pools/cpu && echo 'nodes = 1' > dev/pools/cpu/spec "
           "&& mkdir dev/endpoints/chat")
    # close(2) of a spec naming a secret not there yet succeeds.
    (dev / EP / "spec").write_text(SECRET_ENDPOINT)
    assert read(dev / EP / "spec") == SECRET_ENDPOINT
    assert_waits(dev, "waiting for secrets/tok")
    assert status_of(dev / EP / "status")["last_error"] == ""
    dev.sh("printf s3cret > dev/secrets/tok")
    assert_starts(dev)
    # Removing a secret in use stays refused.
    with pytest.raises(OSError) as e:
        os.unlink(dev / "dev/secrets/tok")
    assert e.value.errno == errno.EBUSY
    assert "tok" in os.listdir(dev / "dev/secrets")


def test_cp_r_of_a_tree_with_secrets_converges(dev, tmp_path):
    """In whatever order cp -r finds the names."""
    src = source_tree(tmp_path)
    (src / "endpoints/chat/spec").write_text(SECRET_ENDPOINT)
    (src / "secrets").mkdir()
    (src / "secrets/tok").write_text("s3cret")
    res = dev.sh(f"cp -r {src}/. dev/", check=False)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: state(dev) == "ready", 30,
             "the endpoint to be ready; status:\n" +
             read(dev / EP / "status"))


def test_secrets_use_still_applies_to_a_secret_not_there_yet(tmp_path):
    """A secret not written yet is still a secret: with the policy's
    secrets_use = owner (the default), only the owner may declare an
    endpoint that names one."""
    m = Mount(tmp_path, extra=["-o", "allow_other"]).start()
    try:
        m.sh("mkdir dev && chmod 777 dev && mkdir dev/endpoints/chat")
        res = m.sh(f"/usr/bin/printf '{SECRET_ENDPOINT}' > {EP}/spec",
                   check=False, user=NOBODY)
        assert res.returncode != 0
        assert "Permission denied" in res.stderr
        assert "policy secrets_use" in \
            status_of(m / EP / "status")["last_error"]
        assert read(m / EP / "spec") == ""
    finally:
        m.stop()
