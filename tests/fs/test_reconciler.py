"""The reconciler and the local provider: real processes, real health
checks, real crashes."""
import errno
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import Mount, read, revisions, status_of, wait_for

SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1"
EP = "dev/endpoints/chat"


def endpoint_spec(replicas=1, extra=""):
    return (f"command = {SERVER}\nhealth_path = /\n"
            f"replicas = {replicas}\n{extra}")


def state(m, path=EP):
    return read(m / path / "state").strip()


def wait_state(m, want, path=EP, timeout=20):
    wait_for(lambda: state(m, path) == want, timeout,
             f"{path} to be {want}; status:\n" + read(m / path / "status"))


def replica_pids(m, path=EP):
    st = read(m / path / "status")
    return sorted(int(line.split("pid ")[1].split(",")[0])
                  for line in st.splitlines() if line.startswith("replica."))


@pytest.fixture
def ep(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / EP / "spec").write_text(endpoint_spec(1))
    wait_state(mnt, "ready")
    return mnt


def test_endpoint_created_and_ready_serves_http(ep):
    st = status_of(ep / EP / "status")
    assert st["synced"] == "yes"
    assert st["replicas"] == "1/1 ready, 1 running"
    url = st["url"]
    out = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-w",
                          "%{http_code}", url], capture_output=True,
                         text=True)
    assert out.stdout == "200"
    doc = json.loads(read(ep / EP / "status.json"))
    assert doc["state"] == "ready" and doc["synced"] is True
    assert doc["provider"]["url"] == url
    log = st["log.0"]
    assert os.path.exists(log)


def test_scale_1_3_1_starts_and_stops_only_the_difference(ep):
    first = replica_pids(ep)
    ep.sh(f"echo 3 > {EP}/replicas")
    wait_for(lambda: status_of(ep / EP / "status")["replicas"]
             == "3/3 ready, 3 running", 20, "3 replicas")
    three = replica_pids(ep)
    assert len(three) == 3 and first[0] in three
    ep.sh(f"echo 1 > {EP}/replicas")
    wait_for(lambda: status_of(ep / EP / "status")["replicas"]
             == "1/1 ready, 1 running", 20, "1 replica")
    assert replica_pids(ep) == first
    assert len(ep.replicas()) == 1


def test_replica_killed_from_outside_is_healed(ep):
    (pid,) = replica_pids(ep)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: replica_pids(ep) and replica_pids(ep) != [pid], 20,
             "a new replica")
    wait_state(ep, "ready")
    st = status_of(ep / EP / "status")
    assert "restarts 1" in st["replica.0"]
    events = read(ep / EP / "events")
    assert "drift: replica 0 gone" in events
    assert "state: ready" in events


def test_drift_report_leaves_a_killed_replica_dead(ep):
    ep.sh("echo 'drift = report' >> dev/config")
    ep.sh(f"echo 2 > {EP}/replicas")
    wait_for(lambda: len(replica_pids(ep)) == 2, 20, "2 replicas")
    wait_state(ep, "ready")
    victim = replica_pids(ep)[1]
    os.kill(victim, signal.SIGKILL)
    wait_state(ep, "degraded")
    st = status_of(ep / EP / "status")
    assert "gone" in st["drift"]
    time.sleep(2)
    assert victim not in replica_pids(ep) and len(replica_pids(ep)) == 1


def test_daemon_sigkilled_mid_apply_adopts_replicas(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat && "
           "echo 'settle_ms = 0' >> dev/config")
    (mnt / EP / "spec").write_text(endpoint_spec(3))
    # Kill the daemon as soon as the first replica runs: mid-apply.
    wait_for(lambda: len(mnt.replicas()) >= 1, 20, "a replica")
    mnt.kill()
    running = set(mnt.replicas())
    assert running
    mnt.start()
    wait_state(mnt, "ready", timeout=30)
    after = set(mnt.replicas())
    assert len(after) == 3, after
    assert running <= after, "running replicas were adopted, not replaced"
    time.sleep(1.5)
    assert set(mnt.replicas()) == after


def test_manual_approval_holds_then_applies(mnt):
    mnt.sh("mkdir dev && echo 'approval = manual' >> dev/config && "
           "mkdir dev/endpoints/chat")
    (mnt / EP / "spec").write_text(endpoint_spec(1))
    wait_for(lambda: read(mnt / "dev/plan") != "", 10, "a plan")
    plan = read(mnt / "dev/plan")
    assert "+ create endpoints/chat" in plan
    doc = json.loads(read(mnt / "dev/plan.json"))
    assert doc["steps"][0]["action"] == "create"
    number = doc["plan"]
    time.sleep(1.5)
    assert mnt.replicas() == [], "nothing runs before approval"
    assert "approval" in status_of(mnt / EP / "status")["reason"]
    # An old plan number is refused.
    with pytest.raises(OSError) as e:
        with open(mnt / "dev/ctl", "w") as f:
            f.write(f"approve {number + 7}\n")
    assert e.value.errno == errno.ESTALE
    mnt.sh(f"echo 'approve {number}' > dev/ctl")
    wait_state(mnt, "ready")
    wait_for(lambda: read(mnt / "dev/plan") == "", 10, "an empty plan")
    assert json.loads(read(mnt / "dev/plan.json"))["steps"] == []


def test_update_plan_names_the_field(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / EP / "spec").write_text(endpoint_spec(1))
    wait_state(mnt, "ready")
    mnt.sh("echo 'approval = manual' >> dev/config && "
           f"echo 2 > {EP}/replicas")
    wait_for(lambda: "~ update" in read(mnt / "dev/plan"), 10, "a plan")
    assert "replicas: 1 -> 2" in read(mnt / "dev/plan")


def test_rollback_restores_a_revision_as_a_new_one(ep):
    ep.sh(f"echo 2 > {EP}/replicas")
    wait_for(lambda: len(replica_pids(ep)) == 2, 20, "2 replicas")
    before = revisions(ep)[-1]
    target = before - 1
    ep.sh(f"echo 'rollback {target}' > dev/ctl")
    assert revisions(ep)[-1] == before + 1
    info = read(ep / f"dev/history/{before + 1}/info")
    assert f"rollback to revision {target}" in info
    assert read(ep / EP / "replicas") == "1\n"
    wait_for(lambda: len(replica_pids(ep)) == 1, 20, "1 replica")
    assert read(ep / f"dev/history/{before + 1}/diff").count("-replicas") == 1


def test_discard_goes_back_to_what_was_applied(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat")
    (mnt / EP / "spec").write_text(endpoint_spec(1))
    wait_state(mnt, "ready")
    applied = status_of(mnt / "dev/status")["applied_revision"]
    mnt.sh("echo 'approval = manual' >> dev/config")
    wait_for(lambda: status_of(mnt / "dev/status")["applied_revision"]
             != applied, 10, "config applied")
    mnt.sh(f"echo 5 > {EP}/replicas")
    wait_for(lambda: read(mnt / "dev/plan") != "", 10, "a plan")
    mnt.sh("echo discard > dev/ctl")
    assert read(mnt / EP / "replicas") == "1\n"
    wait_for(lambda: read(mnt / "dev/plan") == "", 10, "no plan")
    assert "rollback to revision" in read(mnt / "dev/audit").splitlines()[-1]


def test_failing_command_leaves_the_endpoint_failed_with_its_exit(mnt):
    mnt.sh("mkdir -p dev/endpoints/bad && "
           "printf 'command = exit 3\\n' > dev/endpoints/bad/spec")
    wait_state(mnt, "failed", "dev/endpoints/bad", timeout=30)
    err = status_of(mnt / "dev/endpoints/bad/status")["last_error"]
    assert "exited with status 3" in err


def test_unsupported_field_is_refused_at_commit(mnt):
    mnt.sh("mkdir -p dev/pools/p dev/endpoints/e")
    with pytest.raises(OSError) as e:
        with open(mnt / "dev/pools/p/spec", "w") as f:
            f.write("capacity = spot\n")
    assert e.value.errno == errno.EINVAL
    assert "spot is not supported by the local provider" in status_of(
        mnt / "dev/pools/p/status")["last_error"]
    with pytest.raises(OSError):
        with open(mnt / "dev/endpoints/e/spec", "w") as f:
            f.write("image = nginx\n")
    assert "image" in read(mnt / "providers/local")


def test_rmdir_stops_every_replica(ep):
    ep.sh(f"echo 2 > {EP}/replicas")
    wait_for(lambda: len(ep.replicas()) == 2, 20, "2 replicas")
    os.rmdir(ep / EP)
    wait_for(lambda: ep.replicas() == [], 20, "no replicas")


def test_cpu_pool_reserves_slots_and_endpoint_runs_on_it(mnt):
    mnt.sh("mkdir -p dev/pools/cpu dev/endpoints/chat && "
           "echo 'nodes = 1' > dev/pools/cpu/spec")
    wait_state(mnt, "ready", "dev/pools/cpu")
    assert status_of(mnt / "dev/pools/cpu/status")["cpu_slots"].startswith(
        "1 of ")
    (mnt / EP / "spec").write_text(endpoint_spec(1, "pool = cpu\n"))
    wait_state(mnt, "ready")


@pytest.fixture
def gpus(tmp_path):
    data = os.path.join(os.path.dirname(__file__), "..", "data",
                        "nvidia-smi", "h100x1.csv")
    os.environ["INFRAFS_NVIDIA_SMI"] = os.path.abspath(data)
    m = Mount(tmp_path).start()
    yield m
    m.stop()
    m.kill_replicas()
    del os.environ["INFRAFS_NVIDIA_SMI"]


def test_gpu_pool_reserves_devices_and_reports_insufficient_capacity(gpus):
    gpus.sh("mkdir -p dev/pools/one dev/pools/two && "
            "printf 'accelerator = nvidia-h100-80gb\\n' > dev/pools/one/spec")
    wait_state(gpus, "ready", "dev/pools/one")
    st = status_of(gpus / "dev/pools/one/status")
    assert st["devices"] == "0"
    assert "NVIDIA H100 80GB HBM3" in st["device.0"]
    assert "GPU-" in st["device.0"]
    gpus.sh("printf 'accelerator = nvidia-h100-80gb\\nnodes = 2\\n' "
            "> dev/pools/two/spec")
    wait_state(gpus, "failed", "dev/pools/two")
    assert status_of(gpus / "dev/pools/two/status")["last_error"] == (
        "insufficient capacity: 2 nvidia-h100-80gb requested, 0 free")
    os.rmdir(gpus / "dev/pools/one")
    gpus.sh("echo 1 > dev/pools/two/nodes")
    wait_state(gpus, "ready", "dev/pools/two")


def test_endpoint_on_a_gpu_pool_gets_cuda_visible_devices(gpus):
    gpus.sh("mkdir -p dev/pools/gpu dev/endpoints/env && "
            "printf 'accelerator = nvidia-h100-80gb\\n' > dev/pools/gpu/spec")
    wait_state(gpus, "ready", "dev/pools/gpu")
    (gpus / "dev/endpoints/env/spec").write_text(
        "command = exec python3 -m http.server $PORT "
        "--bind 127.0.0.1\nhealth_path = /\npool = gpu\n"
        "env.LOG_LEVEL = debug\n")
    wait_state(gpus, "ready", "dev/endpoints/env")
    (pid,) = gpus.replicas()
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=0" in environ
    assert b"LOG_LEVEL=debug" in environ


def test_infrafs_wait_and_plan_against_the_mount(mnt):
    tools = os.environ.get("INFRAFS_TOOLS_DIR",
                           os.path.join(os.path.dirname(__file__), "..", "..",
                                        "build", "tools"))
    mnt.sh("mkdir -p dev/endpoints/chat && "
           "echo 'approval = manual' >> dev/config")
    (mnt / EP / "spec").write_text(endpoint_spec(1))
    wait_for(lambda: read(mnt / "dev/plan") != "", 10, "a plan")
    res = subprocess.run([f"{tools}/infrafs-plan", str(mnt / "dev")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "+ create endpoints/chat" in res.stdout
    mnt.sh("echo approve > dev/ctl")
    res = subprocess.run([f"{tools}/infrafs-wait", str(mnt / EP), "ready",
                          "--timeout", "30"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: read(mnt / "dev/plan") == "", 10, "an empty plan")
    res = subprocess.run([f"{tools}/infrafs-plan", str(mnt / "dev")],
                         capture_output=True, text=True)
    assert res.returncode == 0


def test_protected_destroy_waits_for_approval(mnt):
    mnt.sh("mkdir -p dev/pools/keep && echo 'nodes = 0' > dev/pools/keep/spec"
           " && echo 'protect = destroy' >> dev/policy")
    wait_state(mnt, "ready", "dev/pools/keep")
    with pytest.raises(OSError) as e:
        os.rmdir(mnt / "dev/pools/keep")
    assert e.value.errno == errno.EINPROGRESS
    assert os.listdir(mnt / "dev/pools") == ["keep"]
    assert "request destroy of pools/keep" in read(mnt / "dev/audit")
    wait_for(lambda: "- destroy pools/keep" in read(mnt / "dev/plan"), 10,
             "the destroy in the plan")
    time.sleep(1)
    assert os.listdir(mnt / "dev/pools") == ["keep"], "not before approval"
    mnt.sh("echo approve > dev/ctl")
    wait_for(lambda: os.listdir(mnt / "dev/pools") == [], 10,
             "the pool to go")
    wait_for(lambda: " destroy pools/keep " in read(mnt / "dev/audit"), 10,
             "the destroy in the audit:\n" + read(mnt / "dev/audit"))
    wait_for(lambda: read(mnt / "dev/plan") == "", 10, "an empty plan")


def test_approve_on_a_new_environment_is_refused(mnt):
    """Before the reconciler has looked at a new environment, there is no
    plan of it at all: approve is refused as for an empty plan, and the
    daemon lives on."""
    for i in range(10):
        res = mnt.sh(f"mkdir fresh{i} && echo approve > fresh{i}/ctl",
                     check=False)
        assert res.returncode == 1
        assert "Invalid argument" in res.stderr
        assert mnt.proc.poll() is None, "the daemon died"
    assert "has no pending plan" in read(mnt / "fresh0/events")
    names = os.listdir(mnt.path)
    assert all(f"fresh{i}" in names for i in range(10))


def applied_and_newest(m, env="dev"):
    return (int(status_of(m / env / "status")["applied_revision"]),
            revisions(m, env)[-1])


def test_config_commits_in_a_burst_are_each_applied(mnt):
    """A commit that changes only the config is applied even when the
    reconciler read that config while carrying out the commit before it.
    It used to wait for the next refresh (refresh_s) to be marked."""
    mnt.sh("mkdir -p dev/pools/p && echo 'accelerator = cpu' > dev/pools/p/spec"
           " && echo 'refresh_s = 3600' >> dev/config")
    wait_for(lambda: len(set(applied_and_newest(mnt))) == 1, 10,
             "the pool applied")
    for n in range(40):
        mnt.sh(f"sed -i 's/^refresh_s = .*/refresh_s = {3601 + n}/' "
               f"dev/config && echo 'settle_ms = {n}' >> dev/config && "
               "sed -i '/^settle_ms/d' dev/config")
        wait_for(lambda: len(set(applied_and_newest(mnt))) == 1, 10,
                 f"config commit {n} applied: {applied_and_newest(mnt)}")


def test_an_empty_environment_applies_its_config(mnt):
    mnt.sh("mkdir dev && echo 'refresh_s = 3600' >> dev/config")
    wait_for(lambda: len(set(applied_and_newest(mnt))) == 1, 10,
             f"the config applied: {applied_and_newest(mnt)}")


def test_a_shorter_refresh_s_counts_from_now(mnt):
    """refresh_s lowered from an hour to a second: the looks come every
    second from then on, not once the hour set before has run out."""
    mnt.sh("mkdir -p dev/pools/p && echo 'accelerator = cpu' > dev/pools/p/spec"
           " && echo 'refresh_s = 3600' >> dev/config")
    wait_for(lambda: len(set(applied_and_newest(mnt))) == 1, 10,
             "the pool applied")
    mnt.sh("sed -i 's/^refresh_s = .*/refresh_s = 1/' dev/config")
    # The new config is looked at once; the looks after it are the
    # refresh's.
    time.sleep(2.5)
    seen = status_of(mnt / "dev/pools/p/status")["observed_at"]
    wait_for(lambda: status_of(mnt / "dev/pools/p/status")["observed_at"]
             != seen, 6, "a look within a few refresh_s")
