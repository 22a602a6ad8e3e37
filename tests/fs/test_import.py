"""`import endpoints/NAME ID` written to ctl: a SageMaker endpoint made
outside infrafs becomes a declared endpoint, kept and managed without
being made again. Against the SageMaker fake (tests/fake/aws_fake.py)."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Mount, read, status_of, wait_for
from test_aws import (AKID, SECRET, ROLE, endpoints, fake, mnt,
                      wait_synced)

sys.path.insert(0, str(ROOT / "tests" / "fake"))
from test_aws_fake import AwsClient  # noqa: E402

assert fake and mnt  # fixtures, used by name

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team-llm:7"
EP = "dev/endpoints/legacy"


def outside(fake, name="team-llm", env=None, variant="AllTraffic",
            count=2):
    """What a team made by hand: model, config and endpoint, untagged."""
    client = AwsClient(int(fake.url.rsplit(":", 1)[1]), AKID, SECRET)
    container = {"Image": IMAGE, "ModelDataUrl": "s3://team/llm/"}
    if env is not None:
        container["Environment"] = env
    for op, params in (
            ("CreateModel", {"ModelName": f"{name}-model",
                             "ExecutionRoleArn": ROLE,
                             "PrimaryContainer": container}),
            ("CreateEndpointConfig", {
                "EndpointConfigName": f"{name}-config",
                "ProductionVariants": [{
                    "VariantName": variant, "ModelName": f"{name}-model",
                    "InitialInstanceCount": count,
                    "InstanceType": "ml.g5.2xlarge"}]}),
            ("CreateEndpoint", {"EndpointName": name,
                                "EndpointConfigName": f"{name}-config"})):
        reply = client.sm(op, **params)
        assert reply.status == 200, reply
    client.close()
    wait_for(lambda: [e["EndpointStatus"] for e in endpoints(fake)
                      if e["EndpointName"] == name] == ["InService"], 30,
             f"{name} to be InService")


def ctl(m, line, env="dev"):
    with open(m / env / "ctl", "w") as f:
        f.write(line + "\n")


def events(m, env="dev"):
    return read(m / env / "events")


def wait_event(m, text, env="dev"):
    wait_for(lambda: text in events(m, env), 30, f"an event saying {text}")


def test_import_adopts_without_making_anything(mnt, fake):
    outside(fake, env={"MAX_TOKENS": "512"})
    fake.control("calls/clear", {})
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "import endpoints/legacy team-llm: adopted as revision")
    spec = read(mnt / EP / "spec")
    assert f"image = {IMAGE}" in spec
    assert "model = s3://team/llm/" in spec
    assert "instance_type = ml.g5.2xlarge" in spec
    assert "replicas = 2" in spec
    assert "env.MAX_TOKENS = 512" in spec
    wait_synced(mnt, EP)
    st = status_of(mnt / EP / "status")
    assert st["sagemaker_endpoint"] == "team-llm"
    assert st["endpoint_config"] == "team-llm-config"
    made = [c["op"] for c in fake.calls()
            if c["op"].startswith(("Create", "Update", "Delete"))]
    assert made == []
    # From now on infrafs manages it: a replica change is an update of
    # the same endpoint, never a second one.
    (mnt / EP / "replicas").write_text("3\n")
    wait_for(lambda: status_of(mnt / EP / "status").get("replicas") ==
             "3 of 3", 30, "three instances")
    assert not fake.calls("CreateEndpoint")
    assert fake.calls("UpdateEndpointWeightsAndCapacities")
    assert [e["EndpointName"] for e in endpoints(fake)] == ["team-llm"]


def test_import_by_arn_then_new_image_moves_the_same_endpoint(mnt, fake):
    outside(fake)
    [ep] = endpoints(fake)
    fake.control("calls/clear", {})
    ctl(mnt, f"import endpoints/legacy {ep['EndpointArn']}")
    wait_event(mnt, "adopted as revision")
    wait_synced(mnt, EP)
    (mnt / EP / "image").write_text(IMAGE.replace(":7", ":8") + "\n")
    wait_for(lambda: endpoints(fake)[0]["EndpointConfigName"] !=
             "team-llm-config", 30, "the endpoint to move to a new config")
    wait_synced(mnt, EP)
    assert not fake.calls("CreateEndpoint")
    assert fake.calls("UpdateEndpoint")
    # What infrafs did not make stays: the team's model and config.
    names = [m["ModelName"] for m in fake.state()["models"]]
    assert "team-llm-model" in names


def test_import_refusals_say_why(mnt, fake):
    ctl(mnt, "import endpoints/legacy no-such-endpoint")
    wait_event(mnt, "import endpoints/legacy no-such-endpoint: refused:")
    assert not (mnt / EP).exists()
    outside(fake, name="two-variants", variant="blue")
    ctl(mnt, "import endpoints/legacy two-variants")
    wait_event(mnt, "one instance-based production variant named "
                    "AllTraffic")
    assert not (mnt / EP).exists()
    with pytest.raises(OSError) as e:
        ctl(mnt, "import endpoints/legacy")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        ctl(mnt, "import endpoints/Bad_Name team-llm")
    assert e.value.errno == errno.EINVAL
    (mnt / "dev" / "endpoints" / "taken").mkdir()
    with pytest.raises(OSError) as e:
        ctl(mnt, "import endpoints/taken team-llm")
    assert e.value.errno == errno.EEXIST
    assert "exists already" in read(mnt / "dev" / "ctl")


def test_import_refuses_what_infrafs_made(mnt, fake):
    from test_aws import make_endpoint, CHAT
    make_endpoint(mnt)
    wait_synced(mnt)
    ctl(mnt, f"import endpoints/again {CHAT}")
    wait_event(mnt, "was made by infrafs")
    assert not (mnt / "dev" / "endpoints" / "again").exists()


def test_import_refused_on_local(tmp_path):
    m = Mount(tmp_path).start()
    try:
        m.sh("mkdir dev")
        with pytest.raises(OSError) as e:
            ctl(m, "import endpoints/web 1234")
        assert e.value.errno == errno.EOPNOTSUPP
        text = read(m / "dev" / "ctl")
        assert "a running process is not importable" in text
    finally:
        m.stop()


def test_adopted_endpoint_survives_a_restart(mnt, fake):
    outside(fake)
    fake.control("calls/clear", {})
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "adopted as revision")
    wait_synced(mnt, EP)
    mnt.restart()
    (mnt / EP / "replicas").write_text("1\n")
    wait_for(lambda: status_of(mnt / EP / "status").get("replicas") ==
             "1 of 1", 30, "one instance")
    wait_synced(mnt, EP)
    made = [c["op"] for c in fake.calls()
            if c["op"].startswith(("Create", "Delete", "UpdateEndpoint"))
            and c["op"] != "UpdateEndpointWeightsAndCapacities"]
    assert made == []
    assert [e["EndpointName"] for e in endpoints(fake)] == ["team-llm"]


TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))


def tfstate(resources):
    return {"version": 4, "terraform_version": "1.11.4", "serial": 3,
            "lineage": "0f6a3c2e-7d1b-4c35-9a43-3c1f0e2b9d11",
            "outputs": {}, "resources": resources, "check_results": None}


def tf_resource(type_, name, instances, mode="managed"):
    return {"mode": mode, "type": type_, "name": name,
            "provider": 'provider["registry.terraform.io/hashicorp/aws"]',
            "instances": [{"schema_version": 0, "attributes": a,
                           "sensitive_attributes": [], **extra}
                          for a, extra in instances]}


def test_import_tfstate_imports_endpoints_and_lists_the_rest(
        mnt, fake, tmp_path):
    outside(fake, name="team-llm")
    outside(fake, name="blue-0")
    [team] = [e for e in endpoints(fake) if e["EndpointName"] == "team-llm"]
    state = tfstate([
        tf_resource("aws_sagemaker_model", "team_llm",
                    [({"name": "team-llm-model"}, {})]),
        tf_resource("aws_sagemaker_endpoint", "team_llm",
                    [({"name": "team-llm", "arn": team["EndpointArn"]},
                      {})]),
        tf_resource("aws_sagemaker_endpoint", "blue",
                    [({"name": "blue-0"}, {"index_key": 0}),
                     ({"name": "gone"}, {"index_key": 1})]),
        tf_resource("aws_sagemaker_endpoint", "Not_Valid_",
                    [({"name": "x"}, {})]),
        tf_resource("aws_iam_role", "r", [({"name": "r"}, {})],
                    mode="data"),
    ])
    path = tmp_path / "terraform.tfstate"
    path.write_text(json.dumps(state))
    fake.control("calls/clear", {})
    p = subprocess.run([str(TOOLS / "infrafs-import-tfstate"), str(path),
                        str(mnt / "dev")], capture_output=True, text=True,
                       timeout=200)
    out = p.stdout
    assert p.returncode == 1, out + p.stderr
    assert "imported aws_sagemaker_endpoint.team_llm as endpoints/team-llm" \
        in out
    assert "imported aws_sagemaker_endpoint.blue[0] as endpoints/blue-0" \
        in out
    assert "skipped aws_sagemaker_endpoint.blue[1]: refused: " in out
    assert "skipped aws_sagemaker_model.team_llm: read with the endpoint" \
        in out
    assert "skipped aws_sagemaker_endpoint.Not_Valid_: its name" in out
    assert "skipped data.aws_iam_role.r: a data source" in out
    assert "image = " in read(mnt / "dev/endpoints/team-llm/spec")
    wait_synced(mnt, "dev/endpoints/blue-0")
    assert not fake.calls("CreateEndpoint")
    # Again: what is there already is skipped, nothing is made twice.
    p = subprocess.run([str(TOOLS / "infrafs-import-tfstate"), str(path),
                        str(mnt / "dev")], capture_output=True, text=True,
                       timeout=200)
    assert "skipped aws_sagemaker_endpoint.team_llm: endpoints/NAME " \
        "exists already" in p.stdout
    assert p.returncode == 1


def test_import_tfstate_refuses_other_versions(mnt, tmp_path):
    path = tmp_path / "old.tfstate"
    path.write_text(json.dumps({"version": 3, "modules": []}))
    p = subprocess.run([str(TOOLS / "infrafs-import-tfstate"), str(path),
                        str(mnt / "dev")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 64
    assert "version 3" in p.stderr and "version 4" in p.stderr


def test_import_the_policy_refuses_leaves_nothing_behind(mnt, fake):
    outside(fake)
    with open(mnt / "dev" / "config", "a") as f:
        f.write("aws.price.ml.g5.2xlarge = 1.5\n")
    (mnt / "dev" / "policy").write_text("max_hourly_cost_usd = 0.5\n")
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "import endpoints/legacy team-llm: refused: policy "
                    "max_hourly_cost_usd")
    assert not (mnt / EP).exists()
    # The record the refused import began is gone: nothing is removed as
    # undeclared, and the same import goes through once allowed.
    ctl(mnt, "refresh")
    (mnt / "dev" / "policy").write_text("max_hourly_cost_usd = 1000\n")
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "import endpoints/legacy team-llm: adopted")
    wait_synced(mnt, EP)
    assert not fake.calls("DeleteEndpoint")
    assert [e["EndpointName"] for e in endpoints(fake)] == ["team-llm"]


def autoscale(fake, name="team-llm", policy="team-scaling", metric=True):
    client = AwsClient(int(fake.url.rsplit(":", 1)[1]), AKID, SECRET)
    target = {"ServiceNamespace": "sagemaker",
              "ResourceId": f"endpoint/{name}/variant/AllTraffic",
              "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"}
    assert client.aas("RegisterScalableTarget", MinCapacity=1, MaxCapacity=5,
                      **target).status == 200
    conf = {"TargetValue": 40.0}
    if metric:
        conf["PredefinedMetricSpecification"] = {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    else:
        conf["CustomizedMetricSpecification"] = {
            "MetricName": "Queue", "Namespace": "Team", "Statistic": "Average"}
    reply = client.aas("PutScalingPolicy", PolicyName=policy,
                       PolicyType="TargetTrackingScaling",
                       TargetTrackingScalingPolicyConfiguration=conf,
                       **target)
    assert reply.status == 200, reply
    client.close()


def test_import_keeps_an_autoscaled_endpoint_and_its_policy(mnt, fake):
    outside(fake)
    autoscale(fake)
    fake.control("calls/clear", {})
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "import endpoints/legacy team-llm: adopted")
    spec = read(mnt / EP / "spec")
    assert "min_replicas = 1" in spec and "max_replicas = 5" in spec
    assert "scale_metric = invocations_per_replica" in spec
    assert "scale_target = 40" in spec
    wait_synced(mnt, EP)
    changed = [c["op"] for c in fake.calls()
               if not c["op"].startswith(("Describe", "List"))]
    assert changed == []
    # infrafs now runs the team's policy, under its name: one policy.
    (mnt / EP / "max_replicas").write_text("8\n")
    wait_for(lambda: [t["MaxCapacity"] for t in
                      fake.state()["scalable_targets"]] == [8], 30,
             "the new bound")
    wait_synced(mnt, EP)
    assert [p["PolicyName"] for p in fake.state()["scaling_policies"]] == \
        ["team-scaling"]
    assert not fake.calls("CreateEndpoint")


def test_import_refuses_a_policy_infrafs_does_not_run(mnt, fake):
    outside(fake)
    autoscale(fake, metric=False)
    ctl(mnt, "import endpoints/legacy team-llm")
    wait_event(mnt, "is autoscaled by policies infrafs does not run")
    assert not (mnt / EP).exists()
