"""A tree written in any order converges. rsync writes endpoints/ before
pools/ (it goes by name), and a git checkout writes in any order: an
endpoint naming a pool that is not there yet is accepted at close(2),
shown pending and waiting for the pool, and started once the pool is
made. Removing a pool still in use stays refused."""
import errno
import json
import os
import shutil
import subprocess

import pytest

from conftest import read, status_of, wait_for

SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1"
EP = "dev/endpoints/chat"
ENDPOINT = f"command = {SERVER}\nhealth_path = /\nreplicas = 1\npool = cpu\n"
POOL = "nodes = 1\n"


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
    wait_for(lambda: "waiting for pools/cpu" in read(dev / EP / "status"),
             10, "the endpoint to say what it waits for")
    st = status_of(dev / EP / "status")
    assert st["state"] == "pending"
    assert st["reason"] == "waiting for pools/cpu"
    assert json.loads(read(dev / EP / "status.json"))["reason"] == \
        "waiting for pools/cpu"
    wait_for(lambda: "waiting for pools/cpu" in read(dev / "dev/plan"), 10,
             "the plan to say what the endpoint waits for")
    assert "create endpoints/chat" in read(dev / "dev/plan")
    plan = json.loads(read(dev / "dev/plan.json"))
    assert [s.get("waiting") for s in plan["steps"]] == \
        ["waiting for pools/cpu"]
    wait_for(lambda: "waiting for pools/cpu" in read(dev / EP / "events"),
             10, "an event saying what the endpoint waits for")
    assert "waiting for pools/cpu" in read(dev / "dev/events")
    # It stays waiting: nothing is started on a pool that is not there.
    assert state(dev) == "pending"
    assert dev.replicas() == []
    dev.sh("mkdir dev/pools/cpu && echo 'nodes = 1' > dev/pools/cpu/spec")
    wait_for(lambda: state(dev) == "ready", 30,
             "the endpoint to be ready; status:\n" +
             read(dev / EP / "status"))
    assert "waiting" not in read(dev / EP / "status")
    assert "waiting" not in read(dev / "dev/plan")


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
