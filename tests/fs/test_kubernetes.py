"""The kubernetes provider through the mount, against the fake API server
(tests/fake/kube_fake.py: TLS, authentication, server-side apply with
managed fields and conflicts, strict validation, list+watch, a
Deployment controller and scheduler). What infrafs made is judged with
the real kubectl, not with infrafs's own view."""
import base64
import errno
import json
import os
import subprocess
import time

import pytest

from conftest import (Mount, read, status_of, throwaway_user, wait_for,
                      write_as)
from kube import KUBECTL, KubeFake

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl")

EP = "dev/endpoints/chat"
NS = "infrafs-dev"
IMAGE = "registry.example.com/llm:1"


@pytest.fixture
def kube(tmp_path):
    k = KubeFake(tmp_path)
    yield k
    k.stop()


def daemon_env(tmp):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KUBE")}
    env["HOME"] = str(tmp)
    return env


def config_text(kube, extra=""):
    return ("provider = kubernetes\nsettle_ms = 0\n"
            f"kubernetes.kubeconfig = {kube.kubeconfig}\n" + extra)


@pytest.fixture
def mnt(tmp_path, kube):
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    m.sh("mkdir dev")
    (m / "dev" / "config").write_text(config_text(kube))
    yield m
    m.stop()


def state(m, path=EP):
    return read(m / path / "state").strip()


def wait_synced(m, path=EP, timeout=30):
    def synced():
        st = status_of(m / path / "status")
        return st.get("state") == "ready" and st.get("synced") == "yes"
    try:
        wait_for(synced, timeout, f"{path} to be ready and synced")
    except AssertionError:
        raise AssertionError(read(m / path / "status"))


def make_endpoint(m, extra="", path=EP):
    m.sh(f"mkdir -p {path}")
    (m / path / "spec").write_text(f"image = {IMAGE}\n" + extra)


def container(dep):
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return c


def env_of(dep):
    return {e["name"]: e for e in container(dep).get("env", [])}


def managers(obj):
    return {f["manager"]: f for f in obj["metadata"].get("managedFields", [])}


def add_gpu_nodes(kube, n, gpus=8, labels=None, prefix="gpu", first=0):
    kube.control("nodes", {"add": [
        {"name": f"{prefix}-{i}", "labels": labels or {},
         "taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}],
         "allocatable": {"nvidia.com/gpu": str(gpus), "cpu": "96",
                         "memory": "1Ti"}} for i in range(first, n)]})


def test_endpoint_is_a_deployment_and_a_service(mnt, kube):
    add_gpu_nodes(kube, 1)
    make_endpoint(mnt, "replicas = 2\nport = 9000\nhealth_path = /ready\n"
                  "env.LOG_LEVEL = debug\naccelerators = 1\n")
    wait_synced(mnt)
    dep = kube.get("deployment", "chat")
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    assert c["image"] == IMAGE
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["readinessProbe"]["httpGet"]["port"] == 9000
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = env_of(dep)
    assert env["LOG_LEVEL"]["value"] == "debug"
    assert env["PORT"]["value"] == "9000"
    labels = dep["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "infrafs"
    assert labels["infrafs.dev/env"] == "dev"
    assert managers(dep)["infrafs"]["operation"] == "Apply"
    assert dep["status"]["readyReplicas"] == 2
    svc = kube.get("service", "chat")
    assert svc["spec"]["ports"][0]["port"] == 9000
    assert svc["spec"]["selector"]["infrafs.dev/endpoint"] == "chat"
    st = status_of(mnt / EP / "status")
    assert st["url"] == f"http://chat.{NS}.svc:9000"
    assert st["replicas"].startswith("2 ready, 2 updated, 2 available")
    assert st["namespace"] == NS
    # The namespace was made, and marked as infrafs's.
    ns = kube.get("namespace", NS, ns=None)
    assert ns["metadata"]["labels"]["app.kubernetes.io/managed-by"] == \
        "infrafs"


def test_a_field_write_is_one_apply(mnt, kube):
    make_endpoint(mnt)
    wait_synced(mnt)
    since = kube.calls()[-1]["seq"]
    (mnt / EP / "replicas").write_text("3\n")
    wait_for(lambda: (kube.get("deployment", "chat") or {})
             .get("spec", {}).get("replicas") == 3, 20, "3 replicas")
    wait_synced(mnt)
    ours = [c for c in kube.calls(since)
            if (c.get("user_agent") or "").startswith("infrafs")]
    patches = [c for c in ours if c["verb"] == "patch"]
    assert sorted(c["resource"] for c in patches) == ["deployments",
                                                      "services"]
    assert all(c.get("field_manager") == "infrafs" for c in patches)
    # Status comes from the watch: no GET of what it holds, no DELETE.
    # (Kinds the fake does not serve are asked for every 30 s: their
    # paths are unknown to it, resource None.)
    assert [c for c in ours if c["verb"] in ("get", "delete") and
            c["resource"]] == []


def test_what_a_step_applied_is_not_applied_again(mnt, kube):
    """Each write is one apply of each object, even though the pass that
    the Deployment's watch event starts may come before the Service's
    event: the daemon trusts what its own apply answered until the watch
    catches up, instead of taking the Service for unapplied."""
    for n in ("a", "b", "c"):
        make_endpoint(mnt, path=f"dev/endpoints/{n}")
    for n in ("a", "b", "c"):
        wait_synced(mnt, f"dev/endpoints/{n}")
    since = kube.calls()[-1]["seq"]
    writes = 0
    for replicas in range(2, 6):
        for n in ("a", "b", "c"):
            (mnt / f"dev/endpoints/{n}/replicas").write_text(f"{replicas}\n")
            writes += 1
        for n in ("a", "b", "c"):
            wait_synced(mnt, f"dev/endpoints/{n}")
    time.sleep(1)
    patches = [c["resource"] for c in kube.calls(since)
               if c["verb"] == "patch" and
               (c.get("user_agent") or "").startswith("infrafs")]
    assert patches.count("deployments") == writes, patches
    assert patches.count("services") == writes, patches


def test_secret_values_go_to_a_secret_and_roll_the_pods(mnt, kube):
    mnt.sh("printf hunter2 > dev/secrets/hf")
    make_endpoint(mnt, "env.HF_TOKEN = secret:hf\n")
    wait_synced(mnt)
    secret = kube.get("secret", "chat-secrets")
    assert base64.b64decode(secret["data"]["hf"]) == b"hunter2"
    ref = env_of(kube.get("deployment", "chat"))["HF_TOKEN"]
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "chat-secrets",
                                                "key": "hf"}
    before = kube.get("deployment", "chat")["spec"]["template"][
        "metadata"]["annotations"]["infrafs.dev/secrets-version"]
    mnt.sh("printf swordfish > dev/secrets/hf")
    wait_for(lambda: base64.b64decode(kube.get("secret", "chat-secrets")[
        "data"]["hf"]) == b"swordfish", 20, "the new value")
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["template"][
        "metadata"]["annotations"]["infrafs.dev/secrets-version"] != before,
        20, "the pods to roll")
    # The value is in no log, status or event.
    for text in (mnt.log.read_text(errors="replace"),
                 read(mnt / EP / "status"), read(mnt / "dev/events"),
                 read(mnt / EP / "events"),
                 json.dumps(kube.calls())):
        assert "hunter2" not in text and "swordfish" not in text


def test_autoscaled_endpoint_gets_a_horizontal_pod_autoscaler(mnt, kube):
    kube.control("config", {"custom_metrics": True})
    make_endpoint(mnt, "replicas = 2\nmin_replicas = 1\nmax_replicas = 4\n"
                  "scale_metric = rps\nscale_target = 20\n")
    wait_synced(mnt)
    hpa = kube.get("hpa", "chat")
    assert hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["maxReplicas"] == 4
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "http_requests_per_second"
    assert metric["pods"]["target"]["averageValue"] == "20"
    # Replicas are the autoscaler's: infrafs does not own them.
    fields = managers(kube.get("deployment", "chat"))["infrafs"]["fieldsV1"]
    assert "f:replicas" not in fields.get("f:spec", {})
    # Back to a fixed size: the autoscaler goes.
    (mnt / EP / "spec").write_text(f"image = {IMAGE}\nreplicas = 2\n")
    wait_for(lambda: kube.get("hpa", "chat") is None, 20, "no hpa")
    wait_synced(mnt)
    assert kube.get("deployment", "chat")["spec"]["replicas"] == 2


def test_rmdir_deletes_in_the_foreground(mnt, kube):
    mnt.sh("printf x > dev/secrets/hf")
    make_endpoint(mnt, "env.T = secret:hf\n")
    wait_synced(mnt)
    kube.control("config", {"delete_s": 1.0})
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: kube.get("deployment", "chat") is None and
             kube.get("service", "chat") is None and
             kube.get("secret", "chat-secrets") is None, 30,
             "every object gone")
    deletes = [c for c in kube.calls() if c["verb"] == "delete"]
    assert {c["resource"] for c in deletes} >= {"deployments", "services",
                                                "secrets"}
    wait_for(lambda: not (mnt / EP).exists(), 20, "the endpoint to go")


def test_an_object_infrafs_did_not_make_is_left_alone(mnt, kube):
    kube.kubectl("create", "namespace", NS)
    manifest = kube.dir / "theirs.json"
    manifest.write_text(json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "chat", "namespace": NS},
        "spec": {"replicas": 1,
                 "selector": {"matchLabels": {"app": "theirs"}},
                 "template": {"metadata": {"labels": {"app": "theirs"}},
                              "spec": {"containers": [
                                  {"name": "x",
                                   "image": "someone/else:1"}]}}}}))
    kube.kubectl("apply", "--server-side", "--field-manager=someone",
                 "-f", str(manifest))
    make_endpoint(mnt)
    wait_for(lambda: "not made by infrafs" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the refusal")
    dep = kube.get("deployment", "chat")
    assert container(dep)["image"] == "someone/else:1"
    mnt.sh(f"rmdir {EP}")
    time.sleep(1.5)
    assert kube.get("deployment", "chat") is not None


def test_drift_heal_takes_the_field_back(mnt, kube):
    make_endpoint(mnt, "replicas = 2\n")
    wait_synced(mnt)
    kube.kubectl("-n", NS, "scale", "deployment", "chat", "--replicas=5")
    wait_for(lambda: "spec.replicas" in read(mnt / EP / "events"), 20,
             "the drift event")
    events = read(mnt / EP / "events")
    assert "kubectl" in events, events
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["replicas"] == 2,
             20, "the heal")
    assert managers(kube.get("deployment", "chat"))["infrafs"]


def test_drift_report_shows_the_manager_and_leaves_it(mnt, kube):
    (mnt / "dev" / "config").write_text(config_text(kube, "drift = report\n"))
    make_endpoint(mnt, "replicas = 2\n")
    wait_synced(mnt)
    kube.kubectl("-n", NS, "scale", "deployment", "chat", "--replicas=5")
    wait_for(lambda: "spec.replicas" in status_of(
        mnt / EP / "status").get("drift", ""), 20, "drift in status")
    assert "kubectl" in status_of(mnt / EP / "status")["drift"]
    assert "drift: .spec.replicas changed by kubectl" in read(
        mnt / EP / "events")
    time.sleep(1.5)
    assert kube.get("deployment", "chat")["spec"]["replicas"] == 5


def test_a_conflict_on_update_in_report_mode_names_the_manager(mnt, kube):
    (mnt / "dev" / "config").write_text(config_text(kube, "drift = report\n"))
    make_endpoint(mnt, "replicas = 2\n")
    wait_synced(mnt)
    kube.kubectl("-n", NS, "scale", "deployment", "chat", "--replicas=5")
    (mnt / EP / "replicas").write_text("3\n")
    wait_for(lambda: "Conflict" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the 409")
    err = status_of(mnt / EP / "status")["last_error"]
    assert ".spec.replicas" in err and "kubectl" in err, err


def test_a_refused_request_says_the_rbac_rule(mnt, kube):
    kube.control("rbac", {"deny": [{"verb": "patch",
                                    "resource": "deployments"}]})
    make_endpoint(mnt)
    wait_for(lambda: "Forbidden" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the 403")
    err = status_of(mnt / EP / "status")["last_error"]
    assert 'cannot patch resource "deployments"' in err, err
    kube.control("rbac", {"deny": []})
    wait_synced(mnt, timeout=60)


def test_pod_failures_reach_status_from_the_watch(mnt, kube):
    kube.control("config", {"image_failures": {"registry.example.com/bad*":
                                               "ImagePullBackOff"}})
    make_endpoint(mnt)
    wait_synced(mnt)
    (mnt / EP / "image").write_text("registry.example.com/bad:2\n")
    wait_for(lambda: "ImagePullBackOff" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the pull failure")
    kube.control("config", {"image_failures": {"registry.example.com/crash*":
                                               "CrashLoopBackOff"}})
    (mnt / EP / "image").write_text("registry.example.com/crash:3\n")
    wait_for(lambda: "CrashLoopBackOff" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the crash loop")
    # The old replica still serves while the new one crashes.
    assert state(mnt) in ("updating", "degraded"), state(mnt)


def test_unschedulable_pods_say_the_schedulers_message(mnt, kube):
    make_endpoint(mnt, "accelerators = 8\n")
    wait_for(lambda: "Unschedulable" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "unschedulable")
    err = status_of(mnt / EP / "status")["last_error"]
    assert "Insufficient nvidia.com/gpu" in err, err
    assert state(mnt) in ("creating", "degraded")


def test_watch_survives_410_and_dropped_streams(mnt, kube):
    make_endpoint(mnt, "replicas = 1\n")
    wait_synced(mnt)
    kube.control("compact", {})
    kube.control("watches/close", {})
    kube.kubectl("-n", NS, "scale", "deployment", "chat", "--replicas=4")
    wait_for(lambda: "spec.replicas" in read(mnt / EP / "events"), 30,
             "the change seen after a relist")
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["replicas"] == 1,
             30, "the heal")


def test_client_certificate_and_exec_plugin(tmp_path, kube):
    plugin = tmp_path / "get-token"
    token = "exec-token-0123456789"
    kube.control("tokens", {"add": [{"token": token, "user": "exec-user",
                                     "groups": ["system:masters"]}]})
    plugin.write_text(
        "#!/bin/sh\n"
        "echo run >> \"$(dirname \"$0\")/plugin.runs\"\n"
        "cat <<EOF\n"
        '{"apiVersion": "client.authentication.k8s.io/v1", '
        '"kind": "ExecCredential", '
        f'"status": {{"token": "{token}", '
        '"expirationTimestamp": "2099-01-01T00:00:00Z"}}\n'
        "EOF\n")
    plugin.chmod(0o755)
    doc = json.loads(kube.kubectl("config", "view", "--raw", "-o",
                                  "json").stdout)
    doc["users"].append({"name": "exec", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": str(plugin), "interactiveMode": "Never"}}})
    doc["contexts"].append({"name": "fake-exec", "context": {
        "cluster": "fake", "user": "exec"}})
    (tmp_path / "kubeconfig").write_text(json.dumps(doc))
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev prod")
        (m / "dev/config").write_text(config_text(
            kube, "kubernetes.context = fake-cert\n"))
        (m / "prod/config").write_text(config_text(
            kube, "kubernetes.context = fake-exec\n"))
        make_endpoint(m)
        make_endpoint(m, path="prod/endpoints/chat")
        wait_synced(m)
        wait_synced(m, "prod/endpoints/chat")
        users = {c["user"] for c in kube.calls() if c.get("user")}
        assert {"cert-admin", "exec-user"} <= users, users
        # The plugin ran once: its credential is kept until it expires.
        runs = (tmp_path / "plugin.runs").read_text().count("run")
        assert runs == 1, runs
    finally:
        m.stop()


def test_a_bad_kubeconfig_is_a_status_line_not_a_hang(tmp_path, kube):
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev/config").write_text(
            "provider = kubernetes\nsettle_ms = 0\n"
            f"kubernetes.kubeconfig = {tmp_path}/missing\n")
        make_endpoint(m)
        wait_for(lambda: "missing" in status_of(
            m / EP / "status").get("last_error", ""), 20, "the reason")
        start = time.monotonic()
        for _ in range(20):
            read(m / EP / "status")
            os.listdir(m / "dev")
        assert time.monotonic() - start < 2
        (m / "dev/config").write_text(config_text(kube))
        wait_synced(m)
    finally:
        m.stop()


def test_unknown_context_and_config_keys_are_refused(mnt, kube):
    with pytest.raises(OSError) as e:
        with open(mnt.path / "dev/config", "a") as f:
            f.write("kubernetes.flavour = x\n")
    assert e.value.errno == errno.EINVAL
    why = status_of(mnt / "dev/status")["last_error"]
    assert "kubernetes.flavour: unknown key" in why, why
    (mnt / "dev" / "config").write_text(config_text(
        kube, "kubernetes.context = nowhere\n"))
    make_endpoint(mnt)
    wait_for(lambda: "nowhere" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "unknown context")


@pytest.fixture
def owner():
    """A throwaway user who owns an environment but is not root."""
    yield from throwaway_user("ifs-kube-owner")


def test_only_root_picks_the_kubeconfig_and_context(tmp_path, kube, owner):
    """An exec plugin in a kubeconfig runs as the daemon: choosing the
    file or the context is choosing the daemon's credentials."""
    os.chmod(tmp_path, 0o755)
    m = Mount(tmp_path, extra=["-o", "allow_other"],
              env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        base = config_text(kube)
        (m / "dev" / "config").write_text(base)
        os.chown(m / "dev", owner, owner)
        assert write_as(m, owner, "dev/config",
                        base + "kubernetes.namespace = team-a\n") == 0
        for key, value in (("kubernetes.kubeconfig", "/tmp/evil"),
                           ("kubernetes.context", "fake-cert")):
            text = base.replace(f"kubernetes.kubeconfig = {kube.kubeconfig}",
                                "") + f"{key} = {value}\n"
            assert write_as(m, owner, "dev/config", text) == errno.EACCES
            why = status_of(m / "dev" / "status")["last_error"]
            assert why.startswith(f"{key}: chooses the daemon's "
                                  "credentials"), why
    finally:
        m.stop()


def test_labelled_nodes_make_a_pool_and_a_quota(mnt, kube):
    mnt.sh("mkdir dev/pools/gpu")
    (mnt / "dev/pools/gpu/spec").write_text(
        "accelerator = nvidia-h100-80gb\naccelerators_per_node = 8\n"
        "nodes = 2\n")
    wait_for(lambda: "insufficient capacity" in status_of(
        mnt / "dev/pools/gpu/status").get("last_error", ""), 20,
        "insufficient capacity")
    quota = kube.get("resourcequota", "infrafs-gpus")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "16"
    kube.control("nodes", {"add": [
        {"name": f"gpu-{i}", "labels": {"infrafs.dev/pool": "gpu"},
         "allocatable": {"nvidia.com/gpu": "8", "cpu": "96",
                         "memory": "1Ti"}} for i in range(2)]})
    wait_synced(mnt, "dev/pools/gpu")
    st = status_of(mnt / "dev/pools/gpu/status")
    assert st["nodes"].startswith("2 ready of 2"), st
    assert st["gpus"].startswith("16 allocatable"), st
    make_endpoint(mnt, "pool = gpu\naccelerators = 8\n")
    wait_synced(mnt)
    dep = kube.get("deployment", "chat")
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {
        "infrafs.dev/pool": "gpu"}
    wait_for(lambda: "8 requested" in status_of(
        mnt / "dev/pools/gpu/status").get("gpus", ""), 20, "usage")


def pod_nodes(kube, endpoint="chat"):
    pods = json.loads(kube.kubectl(
        "get", "pods", "-n", NS, "-l", f"infrafs.dev/endpoint={endpoint}",
        "-o", "json").stdout)["items"]
    return {p["spec"].get("nodeName") for p in pods
            if p["status"].get("phase") == "Running"}


def test_gpu_feature_discovery_nodes_make_a_pool_nobody_labelled(mnt, kube):
    a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    add_gpu_nodes(kube, 2, labels=a100, prefix="a100")
    # Another model, and an A100 an administrator gave another pool.
    add_gpu_nodes(kube, 1, labels={"nvidia.com/gpu.product": "Tesla-T4"},
                  prefix="t4")
    add_gpu_nodes(kube, 1, labels=dict(a100, **{"infrafs.dev/pool": "x"}),
                  prefix="kept")
    mnt.sh("mkdir dev/pools/gpu")
    (mnt / "dev/pools/gpu/spec").write_text(
        "accelerator = nvidia-a100-80gb\naccelerators_per_node = 8\n"
        "nodes = 3\n")
    wait_for(lambda: "insufficient capacity" in status_of(
        mnt / "dev/pools/gpu/status").get("last_error", ""), 20,
        "insufficient capacity")
    st = status_of(mnt / "dev/pools/gpu/status")
    assert st["nodes"] == "2 ready of 2 (a100-0, a100-1)", st
    assert st["gpu_product"] == "NVIDIA-A100-SXM4-80GB", st
    assert st["node_selector"].startswith(
        "nvidia.com/gpu.product in (NVIDIA-A100-SXM4-80GB,"), st
    assert "no node is labelled infrafs.dev/pool=gpu" in st["last_error"]
    assert "GPU feature discovery found nvidia-a100-80gb" in st["last_error"]
    assert kube.get("resourcequota", "infrafs-gpus")["spec"]["hard"][
        "requests.nvidia.com/gpu"] == "24"
    add_gpu_nodes(kube, 3, labels=a100, prefix="a100", first=2)
    wait_synced(mnt, "dev/pools/gpu")
    assert status_of(mnt / "dev/pools/gpu/status")["nodes"].startswith(
        "3 ready of 3"), read(mnt / "dev/pools/gpu/status")
    # The endpoint's pods go to those nodes, and only those.
    make_endpoint(mnt, "pool = gpu\naccelerators = 8\nreplicas = 2\n")
    wait_synced(mnt)
    dep = kube.get("deployment", "chat")
    pod_spec = dep["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec
    [term] = pod_spec["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    exprs = {e["key"]: e for e in term["matchExpressions"]}
    assert "NVIDIA-A100-SXM4-80GB" in exprs["nvidia.com/gpu.product"]["values"]
    assert exprs["infrafs.dev/pool"]["operator"] == "DoesNotExist"
    wait_for(lambda: len(pod_nodes(kube)) == 2, 20, "two pods running")
    assert pod_nodes(kube) <= {"a100-0", "a100-1", "a100-2"}
    wait_for(lambda: "16 requested" in status_of(
        mnt / "dev/pools/gpu/status").get("gpus", ""), 20, "usage")
    # The first node an administrator labels for the pool makes it a pool
    # of labelled nodes: its status and its pods follow, without waiting
    # for a refresh.
    kube.kubectl("label", "node", "a100-2", "infrafs.dev/pool=gpu")
    wait_for(lambda: status_of(mnt / "dev/pools/gpu/status").get(
        "node_selector") == "infrafs.dev/pool=gpu", 10, "the label to count")
    st = status_of(mnt / "dev/pools/gpu/status")
    assert st["nodes"] == "1 ready of 1 (a100-2)", st
    assert "1 of 3 nodes labelled infrafs.dev/pool=gpu" in st["last_error"]
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["template"][
        "spec"].get("nodeSelector") == {"infrafs.dev/pool": "gpu"}, 10,
        "the pods to follow the label")
    dep = kube.get("deployment", "chat")
    assert "affinity" not in dep["spec"]["template"]["spec"]
    assert dep["metadata"]["annotations"]["infrafs.dev/pool-nodes"] == "label"
    # The label taken off again: back to GPU feature discovery's nodes.
    kube.kubectl("label", "node", "a100-2", "infrafs.dev/pool-")
    wait_for(lambda: status_of(mnt / "dev/pools/gpu/status").get(
        "nodes", "").startswith("3 ready of 3"), 10, "the nodes back")
    wait_synced(mnt)
    assert "affinity" in kube.get("deployment", "chat")["spec"]["template"][
        "spec"]


def test_an_endpoint_that_names_its_gpu_runs_on_that_model(mnt, kube):
    """No pool, accelerator = nvidia-l4: the pods go to the nodes GPU
    feature discovery found an L4 on, though an A10G node has more room;
    without a node of that model the scheduler's reason is in status."""
    add_gpu_nodes(kube, 1, labels={"nvidia.com/gpu.product": "NVIDIA-A10G"},
                  prefix="a10g", gpus=8)
    make_endpoint(mnt, "accelerator = nvidia-l4\naccelerators = 1\n")
    wait_for(lambda: "didn't match Pod's node affinity/selector" in
             status_of(mnt / EP / "status").get("last_error", ""), 20,
             "the scheduler's reason")
    add_gpu_nodes(kube, 1, labels={"nvidia.com/gpu.product": "NVIDIA-L4"},
                  prefix="l4", gpus=1)
    wait_synced(mnt)
    assert pod_nodes(kube) == {"l4-0"}
    [term] = kube.get("deployment", "chat")["spec"]["template"]["spec"][
        "affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"][0]["values"] == ["NVIDIA-L4"]


def test_karpenter_pool_is_a_nodepool(mnt, kube):
    kube.control("config", {"karpenter": True})
    time.sleep(0.1)
    # The watch asks again for a kind that was not served; a restart of
    # the environment's connection is not needed, but the retry is 30 s:
    # a new config connects at once.
    (mnt / "dev" / "config").write_text(config_text(
        kube, "kubernetes.node_class = karpenter.k8s.aws/EC2NodeClass/gpu\n"))
    mnt.sh("mkdir dev/pools/gpu")
    (mnt / "dev/pools/gpu/spec").write_text(
        "accelerator = nvidia-a10g\naccelerators_per_node = 1\n"
        "nodes = 1\nmax_nodes = 3\ncapacity = spot\n")
    wait_synced(mnt, "dev/pools/gpu")
    np = kube.get("nodepool", "infrafs-dev-gpu", ns=None)
    tmpl = np["spec"]["template"]
    reqs = {r["key"]: r["values"] for r in tmpl["spec"]["requirements"]}
    assert reqs["karpenter.sh/capacity-type"] == ["spot"]
    assert reqs["karpenter.k8s.aws/instance-gpu-name"] == ["a10g"]
    assert tmpl["spec"]["nodeClassRef"]["name"] == "gpu"
    assert tmpl["metadata"]["labels"]["infrafs.dev/pool"] == "gpu"
    assert np["spec"]["limits"]["nvidia.com/gpu"] == "3"
    make_endpoint(mnt, "pool = gpu\naccelerators = 1\n")
    wait_synced(mnt)
    wait_for(lambda: status_of(mnt / "dev/pools/gpu/status").get(
        "nodes", "").startswith("1 ready"), 20, "a node launched")
    mnt.sh("rmdir dev/endpoints/chat dev/pools/gpu")
    wait_for(lambda: kube.get("nodepool", "infrafs-dev-gpu", ns=None)
             is None, 30, "the NodePool gone")


def test_kserve_serving_makes_an_inference_service(mnt, kube):
    (mnt / "dev" / "config").write_text(config_text(
        kube, "kubernetes.serving = kserve\n"))
    make_endpoint(mnt, "min_replicas = 1\nmax_replicas = 3\n"
                  "scale_metric = concurrency\nscale_target = 4\n")
    # Without KServe installed, status says so plainly.
    wait_for(lambda: "KServe is not installed" in status_of(
        mnt / EP / "status").get("last_error", "") and
        state(mnt) == "failed", 20, "the refusal")
    assert kube.get("deployment", "chat") is None
    kube.control("config", {"kserve": True})
    mnt.sh("echo refresh > dev/ctl")
    wait_synced(mnt, timeout=60)
    isvc = kube.get("inferenceservice", "chat")
    pred = isvc["spec"]["predictor"]
    assert pred["minReplicas"] == 1 and pred["maxReplicas"] == 3
    assert pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] == 4
    assert pred["containers"][0]["image"] == IMAGE
    assert status_of(mnt / EP / "status")["url"] == \
        f"http://chat.{NS}.example.com"
    assert kube.get("deployment", "chat") is None
    # gpu_utilization is not a KServe metric: refused at close(2).
    with pytest.raises(OSError) as e:
        (mnt / EP / "scale_metric").write_text("gpu_utilization\n")
    assert e.value.errno == errno.EINVAL
    assert "KServe scales on concurrency or rps" in status_of(
        mnt / EP / "status")["last_error"]
    # Back to a Deployment (and an autoscaler, on a metrics adapter):
    # the InferenceService goes.
    kube.control("config", {"custom_metrics": True})
    (mnt / "dev" / "config").write_text(config_text(kube))
    wait_for(lambda: kube.get("inferenceservice", "chat") is None and
             kube.get("deployment", "chat") is not None, 30,
             "a Deployment instead")
    wait_synced(mnt)


def test_deleting_shows_until_the_objects_are_gone(mnt, kube):
    make_endpoint(mnt)
    wait_synced(mnt)
    kube.control("config", {"delete_s": 2.0})
    mnt.sh(f"rmdir {EP}")
    # The destroy stays in the plan while the cluster finishes it.
    wait_for(lambda: (kube.get("deployment", "chat") or {}).get(
        "metadata", {}).get("deletionTimestamp"), 10, "foreground deletion")
    assert "- destroy endpoints/chat" in read(mnt / "dev/plan")
    wait_for(lambda: "destroy endpoints/chat" not in read(mnt / "dev/plan"),
             30, "the destroy to finish")
    assert kube.get("deployment", "chat") is None
    # Each object was asked to go once, not at every pass.
    deletes = [c for c in kube.calls() if c["verb"] == "delete" and
               c["resource"] == "deployments"]
    assert len(deletes) == 1, deletes


def test_a_server_that_stops_answering_blocks_no_read(mnt, kube):
    make_endpoint(mnt)
    wait_synced(mnt)
    os.kill(kube.proc.pid, 19)  # SIGSTOP: connections hang, none refused
    try:
        (mnt / EP / "replicas").write_text("2\n")
        start = time.monotonic()
        for _ in range(50):
            read(mnt / EP / "status")
            os.listdir(mnt / "dev" / "endpoints")
        assert time.monotonic() - start < 2.5
        wait_for(lambda: "Kubernetes:" in status_of(
            mnt / EP / "status").get("last_error", ""), 45,
            "the time-out in status")
    finally:
        os.kill(kube.proc.pid, 18)  # SIGCONT
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["replicas"]
             == 2, 60, "the write applied once the server answers")


def test_a_malformed_or_unreadable_kubeconfig_says_why(tmp_path, kube):
    bad = tmp_path / "broken"
    bad.write_text("apiVersion: v1\nclusters: [ {\n")
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev/config").write_text(
            "provider = kubernetes\nsettle_ms = 0\n"
            f"kubernetes.kubeconfig = {bad}\n")
        make_endpoint(m)
        wait_for(lambda: "broken" in status_of(
            m / EP / "status").get("last_error", ""), 20, "the reason")
        assert state(m) == "failed"
        # A fixed file is used without a restart (the file is watched).
        bad.write_text(kube.kubeconfig.read_text())
        wait_synced(m)
    finally:
        m.stop()


def test_an_expired_exec_credential_is_said(tmp_path, kube):
    plugin = tmp_path / "get-token"
    plugin.write_text(
        "#!/bin/sh\ncat <<EOF\n"
        '{"apiVersion": "client.authentication.k8s.io/v1", '
        '"kind": "ExecCredential", "status": {"token": "t", '
        '"expirationTimestamp": "2001-01-01T00:00:00Z"}}\nEOF\n')
    plugin.chmod(0o755)
    doc = json.loads(kube.kubectl("config", "view", "--raw", "-o",
                                  "json").stdout)
    doc["users"] = [{"name": "exec", "user": {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": str(plugin), "interactiveMode": "Never"}}}]
    doc["contexts"] = [{"name": "x", "context": {"cluster": "fake",
                                                 "user": "exec"}}]
    doc["current-context"] = "x"
    cfg = tmp_path / "expired"
    cfg.write_text(json.dumps(doc))
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev/config").write_text(
            "provider = kubernetes\nsettle_ms = 0\n"
            f"kubernetes.kubeconfig = {cfg}\n")
        make_endpoint(m)
        wait_for(lambda: "expired" in status_of(
            m / "dev/endpoints/chat/status").get("last_error", ""), 20,
            "the expired credential")
    finally:
        m.stop()


def test_a_metric_the_cluster_cannot_serve_is_refused(mnt, kube):
    """Without custom.metrics.k8s.io no autoscaler can read pod metrics:
    the first time it is found out by the step (status says why); once
    known, the write is refused at close(2)."""
    make_endpoint(mnt, "replicas = 2\n")
    wait_synced(mnt)
    (mnt / EP / "spec").write_text(
        f"image = {IMAGE}\nreplicas = 2\nmin_replicas = 1\n"
        "max_replicas = 4\nscale_metric = rps\nscale_target = 20\n")
    wait_for(lambda: "custom.metrics.k8s.io" in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the reason")
    assert kube.get("hpa", "chat") is None
    with pytest.raises(OSError) as e:
        (mnt / EP / "max_replicas").write_text("5\n")
    assert e.value.errno == errno.EINVAL
    assert "prometheus-adapter" in status_of(
        mnt / EP / "status")["last_error"]


def test_throttling_and_5xx_are_retried_within_the_step(mnt, kube):
    make_endpoint(mnt)
    wait_synced(mnt)
    since = kube.calls()[-1]["seq"]
    kube.control("faults", [
        {"kind": "status", "code": 429, "verb": "patch",
         "resource": "deployments"},
        {"kind": "status", "code": 503, "verb": "patch",
         "resource": "deployments"},
    ])
    start = time.monotonic()
    (mnt / EP / "replicas").write_text("2\n")
    wait_for(lambda: kube.get("deployment", "chat")["spec"]["replicas"] == 2,
             30, "the apply after the retries")
    patches = [c for c in kube.calls(since) if c["verb"] == "patch" and
               c["resource"] == "deployments"]
    assert [c["status"] for c in patches[:3]] == [429, 503, 200], patches
    # Retry-After: 1 was waited for, not hammered.
    t = [c["time"] for c in patches[:2]]
    assert t[1] - t[0] >= 0.9, t
    assert time.monotonic() - start < 20
    wait_synced(mnt)
    assert "last_error: \n" in read(mnt / EP / "status") or \
        not status_of(mnt / EP / "status").get("last_error")


def test_an_invalid_answer_names_the_field(mnt, kube):
    kube.control("faults", {"kind": "status", "code": 422, "verb": "patch",
                            "resource": "deployments", "message":
                            'Deployment.apps "chat" is invalid: '
                            'spec.template.spec.containers[0].image: '
                            'Required value'})
    make_endpoint(mnt)
    wait_for(lambda: "Kubernetes: Invalid: " in status_of(
        mnt / EP / "status").get("last_error", ""), 20, "the 422")
    assert "containers[0].image: Required value" in status_of(
        mnt / EP / "status")["last_error"]
    wait_synced(mnt)


def test_another_environment_in_the_same_namespace_takes_nothing(mnt, kube):
    """kubernetes.namespace is any owner's to set: an environment that
    names another's namespace must neither change nor delete its
    objects, though they carry infrafs's label."""
    make_endpoint(mnt, "replicas = 2\n")
    wait_synced(mnt)
    mnt.sh("mkdir prod")
    (mnt / "prod" / "config").write_text(config_text(
        kube, f"kubernetes.namespace = {NS}\n"))
    make_endpoint(mnt, "replicas = 5\n", path="prod/endpoints/chat")
    wait_for(lambda: "not made by infrafs for this environment" in
             status_of(mnt / "prod/endpoints/chat/status").get(
                 "last_error", ""), 20, "the refusal")
    dep = kube.get("deployment", "chat")
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["labels"]["infrafs.dev/env"] == "dev"
    mnt.sh("rmdir prod/endpoints/chat")
    time.sleep(1.5)
    assert kube.get("deployment", "chat")["spec"]["replicas"] == 2


def metric(m, name):
    for line in read(m / "metrics").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in metrics")


def test_the_refresh_looks_at_each_endpoint_at_a_moment_of_its_own(mnt,
                                                                   kube):
    """The watch tells of every change, so refresh_s is only a safety net:
    each endpoint is looked at once per period, spread over it, never all
    in one pass that a write would wait behind."""
    (mnt / "dev" / "config").write_text(config_text(kube, "refresh_s = 4\n"))
    names = [f"e{i}" for i in range(6)]
    for n in names:
        make_endpoint(mnt, path=f"dev/endpoints/{n}")
    for n in names:
        wait_synced(mnt, f"dev/endpoints/{n}")
    time.sleep(1)
    looks, last = [], metric(mnt, "infrafs_reconcile_pass_seconds")
    end = time.time() + 10
    while time.time() < end:
        seconds = metric(mnt, "infrafs_reconcile_pass_seconds")
        if seconds != last:
            looks.append(metric(mnt, "infrafs_reconcile_pass_resources"))
            last = seconds
        time.sleep(0.05)
    # Two and a half periods: every endpoint looked at, never all six at
    # once.
    assert sum(looks) >= len(names), looks
    assert max(looks) < len(names), looks


def test_a_change_in_the_cluster_looks_only_at_what_it_bears_on(mnt, kube):
    """A watch event about one endpoint's Deployment costs a look at that
    endpoint, not at every resource of the environment: with a thousand
    endpoints, that is the difference between 1 and 1,000 observations
    per change."""
    (mnt / "dev" / "config").write_text(config_text(kube,
                                                    "refresh_s = 3600\n"))
    names = ["a", "b", "c", "d", "e"]
    for n in names:
        make_endpoint(mnt, path=f"dev/endpoints/{n}")
    for n in names:
        wait_synced(mnt, f"dev/endpoints/{n}")
    # Quiet: nothing left to do but what the watch brings.
    time.sleep(2)
    before = metric(mnt, "infrafs_reconcile_pass_seconds")
    kube.kubectl("-n", NS, "annotate", "deployment", "c", "team=search")
    wait_for(lambda: metric(mnt, "infrafs_reconcile_pass_seconds")
             != before, 10, "a pass after the change")
    assert metric(mnt, "infrafs_reconcile_pass_resources") == 1
    # A relist may have changed anything: everything is looked at.
    kube.control("compact", {})
    kube.control("watches/close", {})
    wait_for(lambda: metric(mnt, "infrafs_reconcile_pass_resources")
             == len(names), 30, "every endpoint looked at after a relist")
