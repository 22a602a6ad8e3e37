"""The metrics file and --metrics-listen: what a Prometheus scraper reads."""
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import Mount, read, wait_for

SERVER = "exec python3 -m http.server $PORT --bind 127.0.0.1"
need_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                   reason="promtool (prometheus) absent")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def promtool_ok(text):
    res = subprocess.run(["promtool", "check", "metrics"], input=text,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def sample(text, metric, **labels):
    """The value of the one sample of name with at least these labels."""
    for line in text.splitlines():
        m = re.match(r"([a-z_]+)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return None


@pytest.fixture
def served(tmp_path):
    port = free_port()
    m = Mount(tmp_path, extra=["--metrics-listen", str(port)])
    try:
        m.start()
    except AssertionError:
        if "built without libmicrohttpd" in m.log.read_text():
            pytest.skip("built without libmicrohttpd")
        raise
    m.port = port
    yield m
    m.stop()
    m.kill_replicas()


def get(port, path, host="127.0.0.1"):
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}",
                                    timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_resource_series_with_labels(served):
    served.sh("mkdir -p dev/pools/train dev/endpoints/chat && "
              "echo 'nodes = 1' > dev/pools/train/spec")
    (served / "dev/endpoints/chat/spec").write_text(
        f"command = {SERVER}\nhealth_path = /\nreplicas = 2\n")

    def ready():
        t = read(served / "metrics")
        return (sample(t, "infrafs_resource_state", env="dev",
                       kind="endpoint", name="chat", state="ready") == 1
                and sample(t, "infrafs_resource_state", env="dev",
                           kind="pool", name="train", state="ready") == 1)
    wait_for(ready, 30, "pool and endpoint ready in metrics")
    t = read(served / "metrics")
    ep = dict(env="dev", kind="endpoint", name="chat")
    assert sample(t, "infrafs_resource_replicas_desired", **ep) == 2
    wait_for(lambda: sample(read(served / "metrics"),
                            "infrafs_resource_replicas_ready", **ep) == 2,
             30, "two replicas ready")
    assert sample(t, "infrafs_resource_last_reconcile_success", **ep) == 1
    assert sample(t, "infrafs_resource_last_reconcile_age_seconds",
                  **ep) >= 0
    assert sample(t, "infrafs_resource_hourly_cost_usd", env="dev",
                  kind="pool", name="train") is not None
    assert sample(t, "infrafs_env_resources", env="dev", state="ready") == 2
    assert sample(t, "infrafs_env_resources_unlisted", env="dev") == 0
    # Earlier series stay.
    assert "# TYPE infrafs_provider_calls_total counter" in t
    assert sample(t, "infrafs_fuse_request_duration_seconds_count",
                  op="lookup") > 0


@need_promtool
def test_promtool_accepts_file_and_http(served):
    served.sh("mkdir -p dev/pools/train && "
              "echo 'nodes = 1' > dev/pools/train/spec")
    promtool_ok(read(served / "metrics"))
    status, body = get(served.port, "/metrics")
    assert status == 200
    promtool_ok(body)
    assert "infrafs_resource_state{" in body
    assert "infrafs_build_info{" in body


def test_build_info_names_the_running_build(mnt):
    version = read(mnt / "version").splitlines()
    name, number = version[0].split(" ", 1)
    assert name == "infrafs"
    facts = dict(line.split(": ", 1) for line in version[1:])
    t = read(mnt / "metrics")
    assert "# TYPE infrafs_build_info gauge" in t
    assert sample(t, "infrafs_build_info", version=number,
                  commit=facts["commit"]) == 1
    # The build line is "TYPE, sanitize WHAT, COMPILER".
    buildtype, sanitize, compiler = facts["build"].split(", ", 2)
    assert sample(t, "infrafs_build_info", buildtype=buildtype,
                  sanitize=sanitize.removeprefix("sanitize "),
                  compiler=compiler) == 1
    assert len([line for line in t.splitlines()
                if line.startswith("infrafs_build_info")]) == 1


def test_commit_histogram_grows(mnt):
    before = sample(read(mnt / "metrics"),
                    "infrafs_commit_duration_seconds_count")
    mnt.sh("mkdir dev && for i in 1 2 3; do "
           "echo \"nodes = $i\" > dev/pools/p$i/spec 2>/dev/null || "
           "{ mkdir dev/pools/p$i && echo \"nodes = $i\" > "
           "dev/pools/p$i/spec; }; done")

    def grown():
        after = sample(read(mnt / "metrics"),
                       "infrafs_commit_duration_seconds_count")
        return after is not None and after >= (before or 0) + 3
    wait_for(grown, 5, "commit histogram count to grow")
    t = read(mnt / "metrics")
    inf = sample(t, "infrafs_commit_duration_seconds_bucket", le="+Inf")
    assert inf == sample(t, "infrafs_commit_duration_seconds_count")
    assert sample(t, "infrafs_commit_duration_seconds_sum") > 0


def test_http_only_get_metrics_on_loopback(served):
    assert get(served.port, "/")[0] == 404
    assert get(served.port, "/metrics/../etc")[0] == 404
    assert get(served.port, "/other")[0] == 404
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}/metrics",
                                 data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405
    # Listening on loopback only: the socket's address says so.
    ss = subprocess.run(["ss", "-Hltn", f"sport = :{served.port}"],
                        capture_output=True, text=True).stdout
    local = [line.split()[3] for line in ss.splitlines()]
    assert local == [f"127.0.0.1:{served.port}"]


def test_bad_listen_address_refused(tmp_path):
    m = Mount(tmp_path, extra=["--metrics-listen", "nowhere:99999"])
    with pytest.raises(AssertionError):
        m.start()
    assert "metrics-listen" in m.log.read_text()


def test_aws_errors_and_throttles_by_service_and_operation(tmp_path):
    from test_aws import (Fake, config_text, daemon_env, make_endpoint,
                          write_credentials)
    fake = Fake(tmp_path)
    try:
        fake.control("config", {"create_s": 0.3})
        fake.control("faults", [
            {"kind": "throttle", "count": 3, "op": "CreateEndpoint"},
            {"kind": "status", "code": 400, "error": "ValidationException",
             "message": "refused for the test", "op": "CreateModel"}])
        write_credentials(tmp_path)
        m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
        try:
            m.sh("mkdir dev")
            (m / "dev" / "config").write_text(config_text(fake))
            make_endpoint(m)
            labels = dict(provider="aws", service="SageMaker")

            def counted():
                t = read(m / "metrics")
                thr = sample(t, "infrafs_provider_throttles_total",
                             operation="CreateEndpoint", **labels)
                err = sample(t, "infrafs_provider_errors_total",
                             operation="CreateModel", **labels)
                return thr is not None and thr >= 3 and err is not None \
                    and err >= 1
            wait_for(counted, 60, "throttles and errors in metrics")
            if shutil.which("promtool"):
                promtool_ok(read(m / "metrics"))
        finally:
            m.stop()
    finally:
        fake.stop()
