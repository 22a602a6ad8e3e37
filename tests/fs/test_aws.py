"""The aws provider through the mount, against the SageMaker + Application
Auto Scaling fake on loopback (tests/fake/aws_fake.py): the real wire
format, signatures checked, lifecycles with delays, faults on demand."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import (ROOT, Mount, read, status_of, throwaway_user, wait_for,
                      write_as)

FAKE = ROOT / "tests" / "fake" / "aws_fake.py"
AKID, SECRET = "AKIDINFRAFSTEST1", "c2VjcmV0LWtleS1vbmUtZm9yLXRlc3Rz"
AKID2, SECRET2 = "AKIDINFRAFSTEST2", "c2VjcmV0LWtleS10d28tZm9yLXRlc3Rz"
ROLE = "arn:aws:iam::123456789012:role/infrafs-test"
EP = "dev/endpoints/chat"
POOL = "dev/pools/train"


def aws_name(env, kind, name, suffix=""):
    """The name infrafs gives what it makes on AWS: infrafs-ENV-NAME cut
    to fit, a hash of (env, kind, name), then the suffix."""
    digest = hashlib.sha256(f"{env}\0{kind}\0{name}".encode()).hexdigest()
    flat = f"infrafs-{env}-{name}"[:63 - len(suffix) - 9]
    return f"{flat}-{digest[:8]}{suffix}"


CHAT = aws_name("dev", "endpoint", "chat")
TRAIN = aws_name("dev", "pool", "train")


class Fake:
    """The fake server in its own process, driven over its control API."""

    def __init__(self, tmp: Path):
        port_file = tmp / "fake.port"
        self.log = open(tmp / "fake.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(FAKE), "--port", "0", "--port-file",
             str(port_file), "--key", f"{AKID}:{SECRET}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(port_file.exists, 10, "the fake to listen")
        self.url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def control(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + "/_fake/" + path, data=data,
                                     method="GET" if data is None
                                     else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read()
        return json.loads(text) if text else None

    def calls(self, op=None):
        got = self.control("calls")
        return [c for c in got if op is None or c["op"] == op]

    def state(self):
        return self.control("state")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def names(items, field):
    return sorted(i[field] for i in items)


def endpoints(fake):
    return fake.state()["endpoints"]


@pytest.fixture
def fake(tmp_path):
    f = Fake(tmp_path)
    f.control("config", {"create_s": 0.3, "update_s": 0.3, "delete_s": 0.3,
                         "cluster_create_s": 0.3, "cluster_update_s": 0.3,
                         "cluster_delete_s": 0.3})
    yield f
    f.stop()


def write_credentials(tmp, akid=AKID, secret=SECRET, rename=True):
    path = tmp / "aws" / "credentials"
    path.parent.mkdir(exist_ok=True)
    text = f"[default]\naws_access_key_id = {akid}\n" \
           f"aws_secret_access_key = {secret}\n"
    if rename:
        tmp_file = path.with_suffix(".new")
        tmp_file.write_text(text)
        os.rename(tmp_file, path)
    else:
        path.write_text(text)
    return path


def daemon_env(tmp, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"HOME": str(tmp),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws" /
                                                   "credentials"),
                "AWS_CONFIG_FILE": str(tmp / "aws" / "config"),
                "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env


def config_text(fake, extra=""):
    return ("provider = aws\nregion = us-east-1\nsettle_ms = 0\n"
            f"aws.endpoint_url = {fake.url}\naws.execution_role = {ROLE}\n"
            "aws.lifecycle_s3_uri = s3://infrafs-test/lifecycle/\n"
            "aws.poll_s = 0.2\n" + extra)


@pytest.fixture
def mnt(tmp_path, fake):
    write_credentials(tmp_path)
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    m.sh("mkdir dev")
    (m / "dev" / "config").write_text(config_text(fake))
    yield m
    m.stop()


def state(m, path=EP):
    return read(m / path / "state").strip()


def wait_state(m, want, path=EP, timeout=30):
    wait_for(lambda: state(m, path) == want, timeout,
             f"{path} to be {want}")


def wait_synced(m, path=EP, timeout=30):
    def synced():
        st = status_of(m / path / "status")
        return st.get("state") == "ready" and st.get("synced") == "yes"
    try:
        wait_for(synced, timeout, f"{path} to be ready and synced")
    except AssertionError:
        raise AssertionError(read(m / path / "status"))


ENDPOINT = ("image = 123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:1\n"
            "model = s3://models/llama/\naccelerator = nvidia-a10g\n"
            "accelerators = 1\n")


def make_endpoint(m, extra="", path=EP):
    m.sh(f"mkdir -p {path}")
    (m / path / "spec").write_text(ENDPOINT + extra)


def test_endpoint_created_with_model_config_and_endpoint(mnt, fake):
    make_endpoint(mnt)
    wait_synced(mnt)
    st = status_of(mnt / EP / "status")
    assert st["sagemaker_endpoint"] == CHAT
    assert st["arn"].startswith("arn:aws:sagemaker:us-east-1:")
    assert st["invoke_url"] == ("https://runtime.sagemaker.us-east-1."
                                f"amazonaws.com/endpoints/{CHAT}/invocations")
    assert st["instance_type"] == "ml.g5.xlarge"
    assert st["replicas"] == "1 of 1"
    assert float(st["hourly_cost_usd"]) > 0
    [ep] = endpoints(fake)
    assert ep["EndpointName"] == CHAT
    [create] = fake.calls("CreateModel")
    assert create["body"]["PrimaryContainer"]["ModelDataUrl"] == \
        "s3://models/llama/"
    assert create["body"]["ExecutionRoleArn"] == ROLE
    [cfg] = fake.calls("CreateEndpointConfig")
    variant = cfg["body"]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g5.xlarge"
    assert variant["InitialInstanceCount"] == 1
    # Every call was signed and accepted; the only refusal is the look
    # before the create, which found nothing.
    for c in fake.calls():
        assert c["access_key"] == AKID
        assert c["status"] == 200 or (c["op"] == "DescribeEndpoint" and
                                      c["error"] == "ValidationException"), c


def test_replica_change_uses_weights_and_capacities(mnt, fake):
    make_endpoint(mnt)
    wait_synced(mnt)
    fake.control("calls/clear", {})
    (mnt / EP / "replicas").write_text("3\n")
    wait_for(lambda: status_of(mnt / EP / "status").get("replicas") ==
             "3 of 3", 30, "three instances")
    wait_synced(mnt)
    [upd] = fake.calls("UpdateEndpointWeightsAndCapacities")
    assert upd["body"]["DesiredWeightsAndCapacities"][0][
        "DesiredInstanceCount"] == 3
    assert not fake.calls("CreateEndpointConfig")
    assert not fake.calls("UpdateEndpoint")


def test_update_makes_new_model_and_config_and_removes_old(mnt, fake):
    make_endpoint(mnt)
    wait_synced(mnt)
    first = endpoints(fake)[0]["EndpointConfigName"]
    (mnt / EP / "image").write_text(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/llm:2\n")
    rev = int(status_of(mnt / EP / "status")["revision"])
    wait_for(lambda: endpoints(fake)[0]["EndpointConfigName"] != first, 30,
             "the endpoint to move to a new config")
    wait_synced(mnt)
    [ep] = endpoints(fake)
    assert ep["EndpointConfigName"] == aws_name("dev", "endpoint", "chat", f"-r{rev}")
    assert fake.calls("UpdateEndpoint")
    # The old pair is deleted once nothing uses it.
    wait_for(lambda: names(fake.state()["endpoint_configs"],
                           "EndpointConfigName") ==
             [aws_name("dev", "endpoint", "chat", f"-r{rev}")], 30, "the old config to go")
    assert names(fake.state()["models"], "ModelName") == \
        [aws_name("dev", "endpoint", "chat", f"-r{rev}")]


def test_autoscaling_registered_and_removed(mnt, fake):
    make_endpoint(mnt, "min_replicas = 1\nmax_replicas = 4\n"
                       "scale_metric = invocations_per_replica\n"
                       "scale_target = 70\n")
    wait_synced(mnt)
    [reg] = fake.calls("RegisterScalableTarget")
    assert reg["body"]["ResourceId"] == \
        f"endpoint/{CHAT}/variant/AllTraffic"
    assert reg["body"]["ScalableDimension"] == \
        "sagemaker:variant:DesiredInstanceCount"
    assert (reg["body"]["MinCapacity"], reg["body"]["MaxCapacity"]) == (1, 4)
    [pol] = fake.calls("PutScalingPolicy")
    conf = pol["body"]["TargetTrackingScalingPolicyConfiguration"]
    assert conf["TargetValue"] == 70
    assert conf["PredefinedMetricSpecification"]["PredefinedMetricType"] \
        == "SageMakerVariantInvocationsPerInstance"
    assert "autoscaling" in status_of(mnt / EP / "status")
    # No longer declared: the policy and the target go.
    (mnt / EP / "spec").write_text(ENDPOINT + "replicas = 2\n")
    wait_for(lambda: fake.calls("DeregisterScalableTarget"), 30,
             "the scalable target to be removed")
    wait_synced(mnt)
    assert fake.calls("DeleteScalingPolicy")
    assert not fake.state()["scalable_targets"]
    assert not fake.state()["scaling_policies"]


def test_rmdir_deletes_endpoint_configs_and_models(mnt, fake):
    make_endpoint(mnt)
    wait_synced(mnt)
    (mnt / EP / "image").write_text("example.com/llm:2\n")
    wait_synced(mnt)
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: not endpoints(fake) and
             not fake.state()["endpoint_configs"] and
             not fake.state()["models"], 30, "everything to be deleted")
    assert fake.calls("DeleteEndpoint")


def test_failed_endpoint_shows_reason(mnt, fake):
    fake.control("fail_endpoint", {"name": CHAT,
                                   "reason": "CUDA out of memory"})
    make_endpoint(mnt)
    wait_state(mnt, "failed")
    st = read(mnt / EP / "status")
    assert "CUDA out of memory" in st
    assert "last_error: SageMaker: CUDA out of memory" in st


def test_failure_reason_with_a_newline_forges_no_status_line(mnt, fake):
    fake.control("fail_endpoint", {"name": CHAT,
                                   "reason": "oom\nstate: ready"})
    make_endpoint(mnt)
    wait_state(mnt, "failed")
    lines = read(mnt / EP / "status").splitlines()
    assert "failure_reason: oom\\nstate: ready" in lines
    assert "state: ready" not in lines


def test_settings_too_long_to_keep_are_refused_not_cut(mnt, fake):
    why = config_refused(mnt, config_text(fake) + "region = " + "x" * 40 +
                         "\n", errno.EINVAL)
    assert why.startswith("region: longer than 31 bytes")
    mnt.sh(f"mkdir -p {EP}")
    with pytest.raises(OSError) as e:
        (mnt / EP / "spec").write_text(
            ENDPOINT + "instance_type = ml." + "g" * 80 + "\n")
    assert e.value.errno == errno.EINVAL
    assert status_of(mnt / EP / "status")["last_error"].startswith(
        "instance_type: longer than 63 bytes")


def test_pool_is_a_hyperpod_cluster(mnt, fake):
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text(
        "accelerator = nvidia-h100-80gb\naccelerators_per_node = 8\n"
        "nodes = 2\n")
    wait_synced(mnt, POOL)
    [create] = fake.calls("CreateCluster")
    [group] = create["body"]["InstanceGroups"]
    assert group["InstanceType"] == "ml.p5.48xlarge"
    assert group["InstanceCount"] == 2
    assert group["ExecutionRole"] == ROLE
    assert group["LifeCycleConfig"]["SourceS3Uri"] == \
        "s3://infrafs-test/lifecycle/"
    st = status_of(mnt / POOL / "status")
    assert st["nodes"] == "2 of 2"
    assert float(st["hourly_cost_usd"]) > 100
    (mnt / POOL / "nodes").write_text("4\n")
    wait_for(lambda: status_of(mnt / POOL / "status").get("nodes") ==
             "4 of 4", 30, "four nodes")
    wait_synced(mnt, POOL)
    [upd] = fake.calls("UpdateCluster")
    assert upd["body"]["InstanceGroups"][0]["InstanceCount"] == 4
    mnt.sh(f"rmdir {POOL}")
    wait_for(lambda: not fake.state()["clusters"], 30, "the cluster to go")
    assert len(fake.calls("CreateCluster")) == 1


def test_missing_config_refused_at_commit_with_key_named(tmp_path, fake):
    write_credentials(tmp_path)
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(
            f"provider = aws\nregion = us-east-1\n"
            f"aws.endpoint_url = {fake.url}\n")
        m.sh(f"mkdir -p {EP} {POOL}")
        res = m.sh(f"cat > {EP}/spec <<'EOF'\n{ENDPOINT}EOF", check=False)
        assert res.returncode != 0
        assert "aws.execution_role" in read(m / EP / "status")
        (m / "dev" / "config").write_text(config_text(fake).replace(
            "aws.lifecycle_s3_uri", "# aws.lifecycle_s3_uri"))
        res = m.sh(f"echo 'nodes = 1' > {POOL}/spec", check=False)
        assert "aws.lifecycle_s3_uri" in read(m / POOL / "status")
        # cat reports what close(2) says; bash's builtin echo cannot.
        res = m.sh(f"echo 'command = sleep 1' | cat >> {EP}/spec",
                   check=False)
        assert res.returncode != 0
        assert "command: not supported by the aws provider" in \
            read(m / EP / "status")
        assert not fake.calls()
    finally:
        m.stop()


def test_throttling_storm_and_5xx_converge_without_duplicates(mnt, fake):
    fake.control("faults", [{"kind": "throttle", "count": 25},
                            {"kind": "status", "code": 503, "count": 6},
                            {"kind": "http429", "count": 4},
                            {"kind": "status", "code": 500, "count": 4}])
    for name in ("a", "b", "c"):
        make_endpoint(mnt, path=f"dev/endpoints/{name}")
    for name in ("a", "b", "c"):
        wait_synced(mnt, f"dev/endpoints/{name}", timeout=90)
    assert names(endpoints(fake), "EndpointName") == \
        [aws_name("dev", "endpoint", n) for n in "abc"]
    answered = [c["status"] for c in fake.calls()]
    assert answered.count(400) >= 25 and answered.count(503) == 6
    assert answered.count(429) == 4 and answered.count(500) == 4
    assert len(fake.state()["models"]) == 3


def test_success_answered_as_failure_makes_no_second_endpoint(mnt, fake):
    fake.control("faults", [{"kind": "fail_after", "op": "CreateEndpoint",
                             "count": 1},
                            {"kind": "drop", "count": 2}])
    make_endpoint(mnt)
    wait_synced(mnt, timeout=60)
    assert len(endpoints(fake)) == 1
    assert len(fake.state()["endpoint_configs"]) == 1


def test_sigkill_between_config_and_endpoint_converges_once(tmp_path, fake):
    write_credentials(tmp_path)
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    m.sh("mkdir dev")
    (m / "dev" / "config").write_text(config_text(fake))
    fake.control("faults", [{"kind": "hang", "op": "CreateEndpoint"}])
    make_endpoint(m)
    wait_for(lambda: fake.calls("CreateEndpoint"), 30,
             "CreateEndpoint to be sent")
    assert len(fake.calls("CreateEndpointConfig")) == 1
    m.kill()
    assert not endpoints(fake)
    m.start()
    try:
        wait_synced(m, timeout=60)
        assert len(endpoints(fake)) == 1
        assert len(fake.state()["endpoint_configs"]) == 1
        assert len(fake.state()["models"]) == 1
    finally:
        m.stop()


def test_rotated_credentials_used_without_restart(mnt, fake, tmp_path):
    make_endpoint(mnt)
    wait_synced(mnt)
    fake.control("keys", {"add": [{"id": AKID2, "secret": SECRET2}]})
    write_credentials(tmp_path, AKID2, SECRET2)
    fake.control("keys", {"remove": [AKID]})
    fake.control("calls/clear", {})
    (mnt / EP / "replicas").write_text("2\n")
    wait_for(lambda: status_of(mnt / EP / "status").get("replicas") ==
             "2 of 2", 60, "two instances with the new key")
    used = {c["access_key"] for c in fake.calls()}
    assert used == {AKID2}
    assert SECRET2 not in read(mnt.log) and SECRET not in read(mnt.log)


@pytest.mark.parametrize("qualified", [False, True])
def test_bad_signature_rejected_and_reported(tmp_path, fake, qualified):
    """With qualified error types the fake sends `__type` as real services
    may (com.amazon.coral.service#Code): the code is what is shown."""
    fake.control("config", {"qualified_error_types": qualified})
    write_credentials(tmp_path, AKID, "d3Jvbmctc2VjcmV0LWtleS1mb3ItdGVzdHM")
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(config_text(fake))
        make_endpoint(m)
        wait_for(lambda: "InvalidSignatureException" in
                 read(m / EP / "status"), 30, "the signature error")
        st = read(m / EP / "status")
        assert ": InvalidSignatureException: The request signature we " \
            "calculated does not match" in st
        assert "com.amazon" not in st
        assert not endpoints(fake)
        assert all(c["status"] == 400 for c in fake.calls())
        for text in (st, read(m / "dev" / "events"),
                     read(m / EP / "events"), read(m.log)):
            assert "d3Jvbmctc2VjcmV0" not in text
    finally:
        m.stop()


def test_environment_variables_point_at_the_fake(tmp_path, fake):
    """AWS_ENDPOINT_URL and the environment's keys, no config file."""
    env = daemon_env(tmp_path, AWS_ENDPOINT_URL=fake.url,
                     AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET)
    m = Mount(tmp_path, env=env).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(
            config_text(fake).replace(f"aws.endpoint_url = {fake.url}\n",
                                      ""))
        make_endpoint(m)
        wait_synced(m)
        assert len(endpoints(fake)) == 1
    finally:
        m.stop()


def test_instance_metadata_credentials(tmp_path, fake):
    fake.control("imds", {"role": "infrafs-node", "id": "ASIAIMDSTEST1",
                          "secret": "aW1kcy1zZWNyZXQ", "token": "imds-tok",
                          "expires_in_s": 3600})
    env = daemon_env(tmp_path, AWS_EC2_METADATA_DISABLED="false",
                     AWS_EC2_METADATA_SERVICE_ENDPOINT=fake.url)
    m = Mount(tmp_path, env=env).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(config_text(fake))
        make_endpoint(m)
        wait_synced(m)
        assert {c["access_key"] for c in fake.calls()
                if not c["op"].startswith("IMDS")} == {"ASIAIMDSTEST1"}
        assert "imds-tok" not in read(m.log)
    finally:
        m.stop()


def test_providers_aws_documents_itself(mnt):
    text = read(mnt / "providers" / "aws")
    assert "provider: aws" in text
    assert "aws.execution_role" in text
    assert "ml.p5.48xlarge" in text


def test_slow_and_timed_out_answers_never_slow_a_read(mnt, fake):
    (mnt / "dev" / "config").write_text(config_text(fake,
                                                    "aws.timeout_s = 1\n"))
    fake.control("faults", [{"kind": "slow", "seconds": 2.5, "count": 3}])
    make_endpoint(mnt)
    wait_for(lambda: any(c.get("fault") for c in fake.calls()), 10,
             "a slow answer to be under way")
    for _ in range(5):
        start = time.monotonic()
        read(mnt / EP / "status")
        os.listdir(mnt / "dev" / "endpoints")
        assert time.monotonic() - start < 0.5
        time.sleep(0.2)
    wait_synced(mnt, timeout=60)
    assert len(endpoints(fake)) == 1


def test_steps_of_many_endpoints_run_concurrently(mnt, fake):
    """Eight endpoints approved at once: each round of calls (models,
    then configs, then endpoints) goes out together, so eight creates
    take about one round trip, not eight."""
    (mnt / "dev" / "config").write_text(config_text(fake,
                                                    "approval = manual\n"))
    names_ = [f"e{i}" for i in range(8)]
    for name in names_:
        make_endpoint(mnt, path=f"dev/endpoints/{name}")
    # All eight in one plan: approving an earlier plan would leave the
    # last of them for a later round.
    wait_for(lambda: all(f"+ create endpoints/{n}\n" in
                         read(mnt / "dev" / "plan") for n in names_) and
             "waiting for approval" in read(mnt / "dev" / "plan"),
             10, "the plan")
    fake.control("config", {"latency_ms": 400})
    (mnt / "dev" / "ctl").write_text("approve\n")
    for name in names_:
        wait_synced(mnt, f"dev/endpoints/{name}", timeout=60)
    models = fake.calls("CreateModel")
    assert len(models) == 8
    arrived = sorted(c["time"] for c in models)
    assert arrived[-1] - arrived[0] < 0.4, arrived
    assert len(endpoints(fake)) == 8


def test_tls_certificates_are_verified(tmp_path, fake):
    """An https endpoint with a certificate nobody trusts is refused, and
    said so; nothing is sent to it."""
    import http.server
    import ssl
    import threading
    key, cert = tmp_path / "tls.key", tmp_path / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-subj", "/CN=127.0.0.1", "-days", "1",
                    "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.path)
            self.send_response(500)
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    write_credentials(tmp_path)
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(config_text(fake).replace(
            fake.url, f"https://127.0.0.1:{server.server_address[1]}"))
        make_endpoint(m)
        wait_for(lambda: "certificate" in read(m / EP / "status"), 30,
                 "the certificate error")
        assert "SSL" in read(m / EP / "status")
        assert not seen
    finally:
        m.stop()
        server.shutdown()


def console_call(fake, op, body):
    """A change made outside infrafs, as the console or the CLI would:
    a signed SageMaker call with the team's key."""
    import datetime
    import hashlib
    import hmac
    host = fake.url.split("//", 1)[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/x-amz-json-1.1", "host": host,
               "x-amz-date": amz_date, "x-amz-target": f"SageMaker.{op}"}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["POST", "/", ""] +
                          [f"{k}:{headers[k]}" for k in sorted(headers)] +
                          ["", signed, hashlib.sha256(payload).hexdigest()])
    scope = f"{day}/us-east-1/sagemaker/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET).encode()
    for part in (day, "us-east-1", "sagemaker", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={AKID}/"
                                f"{scope}, SignedHeaders={signed}, "
                                f"Signature={sig}")
    req = urllib.request.Request(fake.url + "/", data=payload,
                                 headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def desired_count(fake):
    [ep] = endpoints(fake)
    return ep["ProductionVariants"][0]["DesiredInstanceCount"]


@pytest.mark.parametrize("drift", ["heal", "report"])
def test_replicas_changed_outside_infrafs(mnt, fake, drift):
    (mnt / "dev" / "config").write_text(config_text(
        fake, f"refresh_s = 1\ndrift = {drift}\n"))
    make_endpoint(mnt)
    wait_synced(mnt)
    console_call(fake, "UpdateEndpointWeightsAndCapacities",
                 {"EndpointName": CHAT,
                  "DesiredWeightsAndCapacities": [
                      {"VariantName": "AllTraffic",
                       "DesiredInstanceCount": 3}]})
    wait_for(lambda: "drift: replicas: 1 -> 3 outside infrafs" in
             read(mnt / EP / "events"), 30, "the drift event")
    if drift == "heal":
        wait_for(lambda: desired_count(fake) == 1, 30, "the heal")
        wait_synced(mnt)
    else:
        time.sleep(2)
        assert desired_count(fake) == 3
        assert "replicas: 1 -> 3 outside infrafs" in \
            status_of(mnt / EP / "status").get("drift", "")


def test_profile_named_in_config(tmp_path, fake):
    """aws.profile picks a section of the credentials file; the default
    section's key is not used."""
    path = write_credentials(tmp_path, "AKIDDEFAULTUNUSED", "unused")
    with open(path, "a") as f:
        f.write(f"[ci]\naws_access_key_id = {AKID}\n"
                f"aws_secret_access_key = {SECRET}\n")
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(config_text(fake,
                                                      "aws.profile = ci\n"))
        make_endpoint(m)
        wait_synced(m)
        assert {c["access_key"] for c in fake.calls()} == {AKID}
    finally:
        m.stop()


def test_pool_instance_type_vpc_and_environment_cost(mnt, fake):
    (mnt / "dev" / "config").write_text(config_text(
        fake, "aws.subnets = subnet-0a1, subnet-0b2\n"
              "aws.security_groups = sg-0c3\n"
              "aws.price.ml.g5.12xlarge = 5.00\n"))
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text("instance_type = ml.g5.12xlarge\n"
                                     "nodes = 3\n")
    make_endpoint(mnt)
    wait_synced(mnt, POOL)
    wait_synced(mnt)
    [create] = fake.calls("CreateCluster")
    assert create["body"]["InstanceGroups"][0]["InstanceType"] == \
        "ml.g5.12xlarge"
    assert create["body"]["VpcConfig"] == {
        "SecurityGroupIds": ["sg-0c3"],
        "Subnets": ["subnet-0a1", "subnet-0b2"]}
    pool_cost = float(status_of(mnt / POOL / "status")["hourly_cost_usd"])
    ep_cost = float(status_of(mnt / EP / "status")["hourly_cost_usd"])
    assert pool_cost == 15.00
    env_cost = float(status_of(mnt / "dev" / "status")["hourly_cost_usd"])
    assert abs(env_cost - (pool_cost + ep_cost)) < 0.01


def test_model_environment_and_hugging_face_ids(mnt, fake):
    mnt.sh(f"mkdir -p {EP}")
    (mnt / EP / "spec").write_text(
        "image = example.com/tgi:2\nmodel = hf://meta-llama/Llama-3.1-8B\n"
        "env.MAX_INPUT_TOKENS = 4096\n")
    wait_synced(mnt)
    [create] = fake.calls("CreateModel")
    container = create["body"]["PrimaryContainer"]
    assert container["Environment"] == {
        "HF_MODEL_ID": "meta-llama/Llama-3.1-8B", "MAX_INPUT_TOKENS": "4096"}
    assert "ModelDataUrl" not in container


def test_cost_policy_counts_max_replicas_and_secrets_are_refused(mnt, fake):
    (mnt / "dev" / "policy").write_text("max_hourly_cost_usd = 10\n")
    mnt.sh(f"mkdir -p {EP}")
    with pytest.raises(OSError) as e:
        with open(mnt / EP / "spec", "w") as f:
            f.write(ENDPOINT + "min_replicas = 1\nmax_replicas = 8\n"
                    "scale_metric = invocations_per_replica\n"
                    "scale_target = 50\n")
    assert e.value.errno == errno.EDQUOT
    assert "policy max_hourly_cost_usd: 11.28 requested in dev, " \
        "limit 10.00" in read(mnt / EP / "status")
    mnt.sh("printf hunter2 > dev/secrets/hf")
    with pytest.raises(OSError) as e:
        with open(mnt / EP / "spec", "w") as f:
            f.write(ENDPOINT + "env.HF_TOKEN = secret:hf\n")
    assert e.value.errno == errno.EINVAL
    assert "env.HF_TOKEN: secret values are not passed by the aws " \
        "provider" in read(mnt / EP / "status")
    assert not fake.calls("CreateModel")


def test_failing_looks_are_paced_not_repeated_every_pass(tmp_path, fake):
    """Credentials AWS refuses: the look is retried every aws.poll_s, not
    at every reconciler pass (twice a second)."""
    write_credentials(tmp_path, AKID, "d3Jvbmctc2VjcmV0LWtleS1mb3ItdGVzdHM")
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    try:
        m.sh("mkdir dev")
        (m / "dev" / "config").write_text(
            config_text(fake).replace("aws.poll_s = 0.2", "aws.poll_s = 2"))
        make_endpoint(m)
        wait_for(lambda: "InvalidSignatureException" in
                 read(m / EP / "status"), 30, "the signature error")
        time.sleep(8)  # the step's back-off grows past the window below
        fake.control("calls/clear", {})
        time.sleep(4)
        looks = len(fake.calls("DescribeEndpoint"))
        assert looks <= 4, looks
    finally:
        m.stop()


EKS = "arn:aws:eks:us-east-1:123456789012:cluster/ml-eks"
CLUSTER_ROLE = "arn:aws:iam::123456789012:role/hyperpod-autoscaler"
SCALED_POOL = ("accelerator = nvidia-a10g\naccelerators_per_node = 4\n"
               "min_nodes = 0\nmax_nodes = 3\n")


def autoscaling_config(fake, extra=""):
    return config_text(fake, f"aws.eks_cluster_arn = {EKS}\n"
                             f"aws.cluster_role = {CLUSTER_ROLE}\n"
                             "refresh_s = 1\n" + extra)


def kube_objects(fake, kind):
    return fake.state()["kubernetes"].get("ml-eks", {}).get(kind, {})


def pool_nodes(m):
    return status_of(m / POOL / "status").get("nodes")


def refused(m, path, text):
    with pytest.raises(OSError) as e:
        with open(m / path / "spec", "w") as f:
            f.write(text)
    assert e.value.errno == errno.EINVAL
    return read(m / path / "status")


def test_pool_autoscaling_needs_eks_and_says_what_is_missing(mnt, fake):
    """What HyperPod's Karpenter autoscaling needs is checked at close,
    each refusal naming the key, and nothing reaches AWS."""
    mnt.sh(f"mkdir -p {POOL}")
    assert "config: aws.eks_cluster_arn is required for an autoscaled " \
        "pool" in refused(mnt, POOL, SCALED_POOL)
    (mnt / "dev" / "config").write_text(
        config_text(fake, f"aws.eks_cluster_arn = {EKS}\n"))
    assert "config: aws.cluster_role is required" in \
        refused(mnt, POOL, SCALED_POOL)
    (mnt / "dev" / "config").write_text(autoscaling_config(fake))
    assert "min_nodes: must be 0 for an autoscaled aws pool" in \
        refused(mnt, POOL, SCALED_POOL.replace("min_nodes = 0",
                                               "min_nodes = 1"))
    assert "max_nodes: the aws provider bounds an autoscaled pool by " \
        "its GPUs" in refused(mnt, POOL, "accelerator = cpu\n"
                              "min_nodes = 0\nmax_nodes = 4\n")
    assert not fake.calls("CreateCluster")


def make_scaled_pool(m, fake):
    fake.control("eks", {"name": "ml-eks"})
    (m / "dev" / "config").write_text(autoscaling_config(fake))
    m.sh(f"mkdir -p {POOL}")
    (m / POOL / "spec").write_text(SCALED_POOL)
    wait_synced(m, POOL)


def test_pool_autoscaled_by_karpenter_within_its_bounds(mnt, fake):
    make_scaled_pool(mnt, fake)
    [create] = fake.calls("CreateCluster")
    body = create["body"]
    assert body["Orchestrator"] == {"Eks": {"ClusterArn": EKS}}
    assert body["AutoScaling"] == {"Mode": "Enable",
                                   "AutoScalerType": "Karpenter"}
    assert body["ClusterRole"] == CLUSTER_ROLE
    assert body["NodeProvisioningMode"] == "Continuous"
    assert body["InstanceGroups"][0]["InstanceCount"] == 0
    assert body["InstanceGroups"][0]["InstanceType"] == "ml.g5.12xlarge"
    name = TRAIN
    pool = kube_objects(fake, "nodepools")[name]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "12"}
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == name
    node_class = kube_objects(fake, "hyperpodnodeclasses")[name]
    assert node_class["spec"]["instanceGroups"] == ["workers"]
    st = read(mnt / POOL / "status")
    assert "autoscaling: Karpenter Enable (InService)" in st
    assert f"karpenter_nodepool: {TRAIN} (limits " \
        "nvidia.com/gpu=12)" in st
    # Demand beyond max_nodes: Karpenter stops at the NodePool's limit.
    fake.control("karpenter", {"eks": "ml-eks", "demand_nodes": 5})
    wait_for(lambda: pool_nodes(mnt) == "3 of 3", 30, "three nodes")
    (mnt / POOL / "max_nodes").write_text("5\n")
    wait_for(lambda: kube_objects(fake, "nodepools")[name]["spec"]
             ["limits"] == {"nvidia.com/gpu": "20"}, 30, "the new limit")
    wait_for(lambda: pool_nodes(mnt) == "5 of 5", 30, "five nodes")
    fake.control("karpenter", {"eks": "ml-eks", "demand_nodes": 1})
    wait_for(lambda: pool_nodes(mnt) == "1 of 1", 30, "one node")
    wait_synced(mnt, POOL)
    # infrafs never fought Karpenter over the count.
    for upd in fake.calls("UpdateCluster"):
        assert upd["body"]["InstanceGroups"][0]["InstanceCount"] == 0
    assert len(fake.calls("CreateCluster")) == 1
    assert len([c for c in fake.calls() if c.get("service") == "eks"]) == 1
    # The EKS token is a credential: never in status, events or the log.
    for f in ("status", "events"):
        assert "k8s-aws-v1" not in read(mnt / POOL / f)
    assert "k8s-aws-v1" not in read(mnt.log)


def test_pool_autoscaling_switched_off_and_on_then_destroyed(mnt, fake):
    make_scaled_pool(mnt, fake)
    fake.control("karpenter", {"eks": "ml-eks", "demand_nodes": 2})
    wait_for(lambda: pool_nodes(mnt) == "2 of 2", 30, "two nodes")
    # Fixed size again: Karpenter's objects go first, then HyperPod
    # autoscaling is switched off and the group sized by nodes.
    (mnt / POOL / "spec").write_text("accelerator = nvidia-a10g\n"
                                     "accelerators_per_node = 4\n"
                                     "nodes = 1\n")
    wait_synced(mnt, POOL)
    assert not kube_objects(fake, "nodepools")
    assert not kube_objects(fake, "hyperpodnodeclasses")
    [cluster] = fake.state()["clusters"]
    assert cluster["AutoScaling"]["Mode"] == "Disable"
    assert pool_nodes(mnt) == "1 of 1"
    (mnt / POOL / "spec").write_text(SCALED_POOL)
    wait_synced(mnt, POOL)
    assert TRAIN in kube_objects(fake, "nodepools")
    mnt.sh(f"rmdir {POOL}")
    wait_for(lambda: not fake.state()["clusters"], 30, "the cluster to go")
    assert not kube_objects(fake, "nodepools")
    assert not kube_objects(fake, "hyperpodnodeclasses")
    deletes = [c["op"] for c in fake.calls()
               if c.get("service") == "kubernetes" and
               c["op"].startswith("DELETE")]
    assert deletes.index(f"DELETE nodepools/{TRAIN}") < \
        deletes.index(f"DELETE hyperpodnodeclasses/{TRAIN}")


def test_pool_made_without_eks_cannot_be_autoscaled_in_place(mnt, fake):
    fake.control("eks", {"name": "ml-eks"})
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text("accelerator = nvidia-a10g\n"
                                     "accelerators_per_node = 4\n")
    wait_synced(mnt, POOL)
    (mnt / "dev" / "config").write_text(autoscaling_config(fake))
    (mnt / POOL / "spec").write_text(SCALED_POOL)
    wait_for(lambda: "made without EKS" in read(mnt / POOL / "status"), 30,
             "the orchestrator error")
    assert "rmdir the pool and make it again" in read(mnt / POOL / "status")
    assert not fake.calls("UpdateCluster")


def test_eks_token_signed_for_an_endpoint_url_with_a_trailing_slash(mnt,
                                                                    fake):
    """The token presigns STS at the endpoint's root: a configured URL
    that ends in "/" must not turn the signed path into "//"."""
    fake.control("eks", {"name": "ml-eks"})
    (mnt / "dev" / "config").write_text(autoscaling_config(fake).replace(
        f"aws.endpoint_url = {fake.url}\n",
        f"aws.endpoint_url = {fake.url}/\n"))
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text(SCALED_POOL)
    wait_synced(mnt, POOL)
    assert TRAIN in kube_objects(fake, "nodepools")


def test_second_pool_on_one_eks_cluster_shows_hyperpods_refusal(mnt, fake):
    """One EKS cluster orchestrates one HyperPod cluster: the second
    pool's status carries HyperPod's answer, and the first is untouched."""
    make_scaled_pool(mnt, fake)
    other = "dev/pools/infer"
    mnt.sh(f"mkdir -p {other}")
    (mnt / other / "spec").write_text(SCALED_POOL)
    wait_for(lambda: "is already associated" in read(mnt / other / "status"),
             30, "HyperPod's refusal")
    assert len(fake.state()["clusters"]) == 1
    assert read(mnt / POOL / "state").strip() == "ready"


# ---- names that cannot collide, objects that are ours ---------------------

def make_env(m, fake, env, extra=""):
    m.sh(f"mkdir {env}")
    (m / env / "config").write_text(config_text(fake, extra))


def endpoint_named(fake, name):
    return next((e for e in endpoints(fake) if e["EndpointName"] == name),
                None)


def wait_error(m, path, text):
    """The resource's last_error once it says text."""
    wait_for(lambda: text in status_of(m / path / "status").get(
        "last_error", ""), 30, f"{path}'s last_error to say {text!r}")
    return status_of(m / path / "status")["last_error"]


def test_environment_and_name_that_flatten_alike_get_their_own_endpoints(
        mnt, fake):
    # "ml" + "prod-chat" and "ml-prod" + "chat" both read infrafs-ml-prod-chat.
    make_env(mnt, fake, "ml")
    make_env(mnt, fake, "ml-prod")
    make_endpoint(mnt, path="ml/endpoints/prod-chat")
    make_endpoint(mnt, path="ml-prod/endpoints/chat")
    wait_synced(mnt, "ml/endpoints/prod-chat")
    wait_synced(mnt, "ml-prod/endpoints/chat")
    mine = aws_name("ml", "endpoint", "prod-chat")
    theirs = aws_name("ml-prod", "endpoint", "chat")
    assert mine != theirs
    assert names(endpoints(fake), "EndpointName") == sorted([mine, theirs])
    assert status_of(mnt / "ml/endpoints/prod-chat/status")[
        "sagemaker_endpoint"] == mine
    # rmdir of one deletes its own endpoint, model and config only.
    mnt.sh("rmdir ml/endpoints/prod-chat")
    wait_for(lambda: endpoint_named(fake, mine) is None, 30,
             "ml's endpoint to go")
    wait_for(lambda: len(fake.state()["models"]) == 1, 30, "ml's model")
    assert endpoint_named(fake, theirs)["EndpointStatus"] == "InService"
    assert [m["ModelName"] for m in fake.state()["models"]] == \
        [endpoints(fake)[0]["EndpointConfigName"]]
    wait_synced(mnt, "ml-prod/endpoints/chat")


def test_every_object_made_carries_the_ownership_tags(mnt, fake):
    make_endpoint(mnt)
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text("accelerator = nvidia-a10g\n"
                                     "accelerators_per_node = 1\n")
    wait_synced(mnt)
    wait_synced(mnt, POOL)
    st = fake.state()
    made = ([(m["ModelArn"], "endpoint", "chat") for m in st["models"]] +
            [(c["EndpointConfigArn"], "endpoint", "chat")
             for c in st["endpoint_configs"]] +
            [(e["EndpointArn"], "endpoint", "chat") for e in st["endpoints"]] +
            [(c["ClusterArn"], "pool", "train") for c in st["clusters"]])
    assert len(made) == 4
    owners = set()
    for arn, kind, name in made:
        tags = st["tags"][arn]
        assert tags["infrafs:environment"] == "dev", (arn, tags)
        assert tags["infrafs:kind"] == kind, (arn, tags)
        assert tags["infrafs:resource"] == name, (arn, tags)
        assert len(tags["infrafs:owner"]) == 32, (arn, tags)
        owners.add(tags["infrafs:owner"])
    assert len(owners) == 1
    # What infrafs trusts is SageMaker's ListTags, not its own notes.
    assert fake.calls("ListTags")


def precreate_untagged_endpoint(fake, name):
    console_call(fake, "CreateModel", {
        "ModelName": name, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": "123456789012.dkr.ecr.us-east-1."
                                      "amazonaws.com/someone-else:1"}})
    console_call(fake, "CreateEndpointConfig", {
        "EndpointConfigName": name, "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": name,
            "InitialInstanceCount": 1, "InstanceType": "ml.m5.xlarge"}]})
    console_call(fake, "CreateEndpoint", {"EndpointName": name,
                                          "EndpointConfigName": name})
    wait_for(lambda: endpoint_named(fake, name)["EndpointStatus"] ==
             "InService", 10, "the other endpoint")


def test_untagged_endpoint_under_our_name_is_not_adopted_or_deleted(mnt,
                                                                    fake):
    precreate_untagged_endpoint(fake, CHAT)
    make_endpoint(mnt)
    err = wait_error(mnt, EP, "not this resource's")
    assert f"SageMaker endpoint {CHAT} exists" in err
    assert "it carries no infrafs tags" in err
    assert "neither adopts nor deletes it" in err
    assert state(mnt) != "ready"
    time.sleep(1)
    ep = endpoint_named(fake, CHAT)
    assert ep["EndpointConfigName"] == CHAT and \
        ep["EndpointStatus"] == "InService"
    assert not fake.calls("UpdateEndpoint")
    # rmdir removes what infrafs made for it and leaves the endpoint.
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: not (mnt / EP).exists(), 30, "the endpoint to go")
    wait_for(lambda: names(fake.state()["models"], "ModelName") == [CHAT],
             30, "infrafs's own model to go")
    assert endpoint_named(fake, CHAT)["EndpointStatus"] == "InService"
    assert not fake.calls("DeleteEndpoint")
    assert names(fake.state()["endpoint_configs"], "EndpointConfigName") == \
        [CHAT]


def test_untagged_model_under_our_name_is_not_used_or_deleted(mnt, fake):
    # Held for approval, the endpoint's revision is known before any call.
    (mnt / "dev" / "config").write_text(config_text(fake,
                                                    "approval = manual\n"))
    make_endpoint(mnt)
    rev = int(status_of(mnt / EP / "status")["revision"])
    name = aws_name("dev", "endpoint", "chat", f"-r{rev}")
    console_call(fake, "CreateModel", {
        "ModelName": name, "ExecutionRoleArn": ROLE,
        "PrimaryContainer": {"Image": "123456789012.dkr.ecr.us-east-1."
                                      "amazonaws.com/someone-else:1"}})
    # Approval back to auto: the endpoint is applied as revision rev.
    (mnt / "dev" / "config").write_text(config_text(fake))
    assert f"model/{name} exists" in wait_error(mnt, EP,
                                                "not this resource's")
    assert not fake.calls("CreateEndpointConfig")
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: not (mnt / EP).exists(), 30, "the endpoint to go")
    assert names(fake.state()["models"], "ModelName") == [name]
    assert not fake.calls("DeleteModel")


def test_record_of_an_earlier_daemon_keeps_its_names(mnt, fake, tmp_path):
    """A daemon from before the hashed names made infrafs-dev-chat and
    tagged it without an owner; its record says so. The endpoint is still
    the resource's, under its old names, until it is removed."""
    (mnt / "dev" / "config").write_text(config_text(fake,
                                                    "approval = manual\n"))
    make_endpoint(mnt)
    rev = int(status_of(mnt / EP / "status")["revision"])
    mnt.stop()
    old, old_rev = "infrafs-dev-chat", f"infrafs-dev-chat-r{rev}"
    tags = [{"Key": "infrafs:environment", "Value": "dev"},
            {"Key": "infrafs:resource", "Value": "chat"},
            {"Key": "infrafs:revision", "Value": str(rev)}]
    console_call(fake, "CreateModel", {
        "ModelName": old_rev, "ExecutionRoleArn": ROLE, "Tags": tags,
        "PrimaryContainer": {"Image": ENDPOINT.split()[2],
                             "ModelDataUrl": "s3://models/llama/"}})
    console_call(fake, "CreateEndpointConfig", {
        "EndpointConfigName": old_rev, "Tags": tags, "ProductionVariants": [{
            "VariantName": "AllTraffic", "ModelName": old_rev,
            "InitialInstanceCount": 1, "InstanceType": "ml.g5.xlarge"}]})
    console_call(fake, "CreateEndpoint", {"EndpointName": old,
                                          "EndpointConfigName": old_rev,
                                          "Tags": tags})
    records = tmp_path / "state" / "aws" / "records"
    records.mkdir(parents=True, exist_ok=True)
    (records / "endpoint@dev@chat.json").write_text(json.dumps({
        "name": old, "last_rev": 0, "config_rev": rev, "config_fp": "",
        "scaling": "", "eks": "",
        "made": [f"model/{old_rev}", f"endpoint-config/{old_rev}"],
        "poll_s": 0.2, "refresh_s": 30.0,
        "settings": {"region": "us-east-1", "endpoint_url": fake.url,
                     "profile": "", "requests_per_second": 100.0,
                     "max_connections": 64, "timeout_s": 15.0}}))
    mnt.start()
    (mnt / "dev" / "config").write_text(config_text(fake))
    wait_synced(mnt)
    assert status_of(mnt / EP / "status")["sagemaker_endpoint"] == old
    assert not fake.calls("CreateEndpoint")[1:]
    # A new resource gets the new names; removing the old one removes
    # what its record lists.
    make_endpoint(mnt, path="dev/endpoints/next")
    wait_synced(mnt, "dev/endpoints/next")
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: names(endpoints(fake), "EndpointName") ==
             [aws_name("dev", "endpoint", "next")], 30, "the old one to go")
    wait_for(lambda: old_rev not in names(fake.state()["models"],
                                          "ModelName"), 30, "its model")


def test_karpenter_objects_of_someone_else_are_not_taken_over(mnt, fake):
    fake.control("eks", {"name": "ml-eks"})
    theirs = {"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
              "metadata": {"name": TRAIN, "labels": {"team": "search"}},
              "spec": {"template": {"spec": {
                  "nodeClassRef": {"group": "karpenter.sagemaker.amazonaws.com",
                                   "kind": "HyperpodNodeClass",
                                   "name": "search"},
                  "requirements": [{"key": "node.kubernetes.io/instance-type",
                                    "operator": "Exists"}]}},
                  "limits": {"nvidia.com/gpu": "64"}}}
    fake.control("kubectl_apply", {"eks": "ml-eks", "body": theirs})
    (mnt / "dev" / "config").write_text(autoscaling_config(fake))
    mnt.sh(f"mkdir -p {POOL}")
    (mnt / POOL / "spec").write_text(SCALED_POOL)
    err = wait_error(mnt, POOL, "not this pool's")
    assert f"Kubernetes nodepool/{TRAIN} in EKS cluster ml-eks exists" in err
    assert "it carries no infrafs/owner label" in err
    pool = kube_objects(fake, "nodepools")[TRAIN]
    assert pool["spec"]["limits"] == {"nvidia.com/gpu": "64"}
    assert pool["metadata"]["labels"] == {"team": "search"}
    assert not [c for c in fake.calls() if c.get("service") == "kubernetes"
                and c["op"].startswith("PATCH")]
    mnt.sh(f"rmdir {POOL}")
    wait_for(lambda: not fake.state()["clusters"], 30, "the cluster to go")
    assert kube_objects(fake, "nodepools")[TRAIN]["spec"]["limits"] == \
        {"nvidia.com/gpu": "64"}
    assert not [c for c in fake.calls() if c.get("service") == "kubernetes"
                and c["op"].startswith("DELETE")]


def test_karpenter_objects_carry_the_owner_label(mnt, fake):
    make_scaled_pool(mnt, fake)
    owner = fake.state()["tags"][fake.state()["clusters"][0]["ClusterArn"]][
        "infrafs:owner"]
    for kind in ("nodepools", "hyperpodnodeclasses"):
        meta = kube_objects(fake, kind)[TRAIN]["metadata"]
        assert meta["labels"]["infrafs/owner"] == owner
        assert meta["annotations"]["infrafs/resource"] == "dev/pool/train"


# ---- whose credentials, sent where ---------------------------------------

def config_refused(m, text, err):
    with pytest.raises(OSError) as e:
        with open(m / "dev" / "config", "w") as f:
            f.write(text)
    assert e.value.errno == err
    return status_of(m / "dev" / "status")["last_error"]


def test_endpoint_url_plain_http_only_on_loopback(mnt, fake):
    why = config_refused(mnt, config_text(fake).replace(
        fake.url, "http://10.1.2.3"), errno.EINVAL)
    assert why.startswith("aws.endpoint_url: must be https://, or http:// "
                          "only on loopback")
    for url in ("https://10.1.2.3", "https://sagemaker.example.com:8443",
                "http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1",
                fake.url):
        (mnt / "dev" / "config").write_text(
            config_text(fake).replace(fake.url, url))
    make_endpoint(mnt)
    wait_synced(mnt)


@pytest.fixture
def aws_owner():
    """A throwaway user who owns an environment but is not root."""
    yield from throwaway_user("ifs-aws-owner")


@pytest.fixture
def shared(tmp_path, fake):
    """A mount others may use (allow_other), with an aws environment."""
    write_credentials(tmp_path)
    os.chmod(tmp_path, 0o755)
    m = Mount(tmp_path, extra=["-o", "allow_other"],
              env=daemon_env(tmp_path)).start()
    m.sh("mkdir dev")
    (m / "dev" / "config").write_text(config_text(fake))
    yield m
    m.stop()


def test_only_root_chooses_the_daemons_credentials(shared, fake, aws_owner):
    m = shared
    os.chown(m / "dev", aws_owner, aws_owner)
    base = config_text(fake)
    # The owner may change the environment's own settings...
    assert write_as(m, aws_owner, "dev/config",
                    base + "aws.poll_s = 0.5\n") == 0
    # ...but not pick another profile, URL or EKS cluster.
    for key, value in (("aws.profile", "prod-admin"),
                       ("aws.eks_cluster_arn",
                        "arn:aws:eks:us-east-1:123456789012:cluster/x")):
        assert write_as(m, aws_owner, "dev/config",
                        base + f"{key} = {value}\n") == errno.EACCES
        why = status_of(m / "dev" / "status")["last_error"]
        assert why.startswith(f"{key}: chooses the daemon's "
                              "credentials"), why
        assert f"--allow-config-key {key}" in why
    assert write_as(m, aws_owner, "dev/config", base.replace(
        fake.url, "https://sagemaker.example.com")) == errno.EACCES
    assert "aws.profile" not in read(m / "dev" / "config")
    # Root may.
    (m / "dev" / "config").write_text(base + "aws.profile = default\n")
    # Keeping what root set is no change of it.
    assert write_as(m, aws_owner, "dev/config",
                    base + "aws.profile = default\n"
                    "aws.poll_s = 0.3\n") == 0
    m.stop()
    m.start(extra=["--allow-config-key", "aws.profile"])
    assert write_as(m, aws_owner, "dev/config",
                    base + "aws.profile = other\n") == 0
    assert "aws.profile = other" in read(m / "dev" / "config")
    assert write_as(m, aws_owner, "dev/config", base.replace(
        fake.url, "https://sagemaker.example.com")) == errno.EACCES


def test_rollback_restores_no_privileged_key_for_an_owner(shared, fake,
                                                         aws_owner):
    m = shared
    (m / "dev" / "config").write_text(config_text(fake) +
                                      "aws.profile = prod-admin\n")
    with_profile = max(int(r) for r in os.listdir(m / "dev/history"))
    (m / "dev" / "config").write_text(config_text(fake))
    os.chown(m / "dev", aws_owner, aws_owner)
    assert write_as(m, aws_owner, "dev/ctl",
                    f"rollback {with_profile}\n") == errno.EACCES
    assert "aws.profile" not in read(m / "dev" / "config")
    # Root may roll it back.
    (m / "dev" / "ctl").write_text(f"rollback {with_profile}\n")
    assert "aws.profile = prod-admin" in read(m / "dev" / "config")


def test_allow_config_key_takes_only_privileged_keys(tmp_path):
    m = Mount(tmp_path, extra=["--allow-config-key", "aws.poll_s"])
    with pytest.raises(AssertionError, match="not a config key that only "
                                             "root may set"):
        m.start()
