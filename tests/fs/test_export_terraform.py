"""ENV/export/terraform.tf.json through the mount, checked by the real
Terraform: `terraform validate` takes it, and against the SageMaker fake
`terraform import` of everything infrafs made plans no change."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Mount, read, wait_for
from test_aws import (AKID, CHAT, EP, ENDPOINT, SECRET, config_text,
                      daemon_env, endpoints, fake, make_endpoint, mnt,
                      wait_synced, write_credentials)

assert fake and mnt  # fixtures, used by name

TERRAFORM = shutil.which("terraform")
PLUGIN_DIRS = ("/opt/tf-plugins", "/usr/share/terraform/plugins",
               os.path.expanduser("~/.terraform.d/plugins"))
MIRROR = next((d for d in PLUGIN_DIRS if
               Path(d, "registry.terraform.io/hashicorp/aws").is_dir()),
              None)
needs_terraform = pytest.mark.skipif(
    not TERRAFORM or not MIRROR,
    reason="terraform and hashicorp/aws in a local filesystem mirror")

SCALED = ("min_replicas = 1\nmax_replicas = 4\n"
          "scale_metric = invocations_per_replica\nscale_target = 70\n")


def export(m, env="dev"):
    return json.loads(read(m / env / "export" / "terraform.tf.json"))


def wait_export(m, has, env="dev"):
    wait_for(lambda: has(export(m, env)), 30, "the export to show it")
    return export(m, env)


class Terraform:
    """terraform in its own folder, offline: providers come from the
    local mirror only."""

    def __init__(self, tmp: Path, fake_url=None):
        self.dir = tmp / "tf"
        self.dir.mkdir()
        rc = tmp / "terraformrc"
        rc.write_text('provider_installation {\n  filesystem_mirror {\n'
                      f'    path = "{MIRROR}"\n  }}\n}}\n')
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AWS_", "TF_"))}
        self.env.update({"TF_CLI_CONFIG_FILE": str(rc),
                         "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
                         "HOME": str(tmp), "AWS_ACCESS_KEY_ID": AKID,
                         "AWS_SECRET_ACCESS_KEY": SECRET,
                         "AWS_EC2_METADATA_DISABLED": "true"})
        if fake_url:
            # The fake stands for AWS: no account lookup, no STS.
            override = {"provider": {"aws": {
                "endpoints": [{"sagemaker": fake_url,
                               "applicationautoscaling": fake_url,
                               "sts": fake_url}],
                "skip_credentials_validation": True,
                "skip_requesting_account_id": True,
                "skip_metadata_api_check": "true",
                "skip_region_validation": True}}}
            (self.dir / "override.tf.json").write_text(json.dumps(override))

    def run(self, *args, ok=(0,)):
        p = subprocess.run([TERRAFORM, *args, "-no-color"], cwd=self.dir,
                           env=self.env, capture_output=True, text=True,
                           timeout=300)
        assert p.returncode in ok, \
            f"terraform {' '.join(args)}: {p.returncode}\n{p.stdout}\n" \
            f"{p.stderr}"
        return p

    def take(self, m, env="dev"):
        shutil.copy(m / env / "export" / "terraform.tf.json",
                    self.dir / "main.tf.json")
        self.run("init", "-input=false")


def test_export_is_read_only_and_listed(mnt):
    assert sorted(os.listdir(mnt / "dev" / "export")) == ["terraform.tf.json"]
    assert "export" in os.listdir(mnt / "dev")
    with pytest.raises(PermissionError):
        (mnt / "dev" / "export" / "terraform.tf.json").write_text("{}")
    doc = wait_export(mnt, lambda d: "terraform" in d)
    assert doc["terraform"]["required_providers"]["aws"]["source"] == \
        "hashicorp/aws"
    assert doc["provider"]["aws"]["region"] == "us-east-1"
    assert "resource" not in doc


def test_export_names_and_tags_what_infrafs_makes(mnt, fake):
    make_endpoint(mnt, SCALED)
    wait_synced(mnt)
    [ep] = endpoints(fake)
    doc = wait_export(mnt, lambda d: "resource" in d)
    res = doc["resource"]
    assert res["aws_sagemaker_endpoint"]["chat"]["name"] == CHAT
    [model] = fake.state()["models"]
    assert res["aws_sagemaker_model"]["chat"]["name"] == model["ModelName"]
    cfg = res["aws_sagemaker_endpoint_configuration"]["chat"]
    assert cfg["name"] == ep["EndpointConfigName"]
    assert cfg["production_variants"][0]["instance_type"] == "ml.g5.xlarge"
    tags = res["aws_sagemaker_endpoint"]["chat"]["tags"]
    assert tags["infrafs:environment"] == "dev"
    assert tags["infrafs:resource"] == "chat"
    [tagged] = [t for t in fake.calls("CreateEndpoint")]
    owner = {t["Key"]: t["Value"] for t in tagged["body"]["Tags"]}
    assert tags["infrafs:owner"] == owner["infrafs:owner"]
    target = res["aws_appautoscaling_target"]["chat"]
    assert (target["min_capacity"], target["max_capacity"]) == (1, 4)
    assert res["aws_appautoscaling_policy"]["chat"][
        "target_tracking_scaling_policy_configuration"]["target_value"] == 70


def test_export_keeps_user_text_literal(mnt):
    """A "${...}" in an env value is text, not a Terraform expression."""
    make_endpoint(mnt, "env.GREETING = ${var.x}%{if}\n")
    doc = wait_export(mnt, lambda d: "resource" in d)
    env = doc["resource"]["aws_sagemaker_model"]["chat"][
        "primary_container"][0]["environment"]
    assert env["GREETING"] == "$${var.x}%%{if}"


def test_local_environment_says_nothing_to_manage(tmp_path):
    m = Mount(tmp_path).start()
    try:
        m.sh("mkdir dev")
        doc = wait_export(m, lambda d: "nothing" in d.get("//", ""))
        assert "local provider" in doc["//"]
        assert "resource" not in doc
    finally:
        m.stop()


@needs_terraform
def test_terraform_validate_takes_the_export(mnt, tmp_path):
    make_endpoint(mnt, SCALED)
    wait_export(mnt, lambda d: "aws_appautoscaling_policy" in
                d.get("resource", {}))
    tf = Terraform(tmp_path)
    tf.take(mnt)
    tf.run("validate")


def import_ids(doc, fake):
    """What `terraform import` takes for each resource of the export."""
    res = doc["resource"]
    ids = {}
    for local, body in res["aws_sagemaker_model"].items():
        ids[f"aws_sagemaker_model.{local}"] = body["name"]
    for local, body in res["aws_sagemaker_endpoint_configuration"].items():
        ids[f"aws_sagemaker_endpoint_configuration.{local}"] = body["name"]
    for local, body in res["aws_sagemaker_endpoint"].items():
        ids[f"aws_sagemaker_endpoint.{local}"] = body["name"]
    for target in fake.state()["scalable_targets"]:
        local = "chat"
        base = (f"sagemaker/{target['ResourceId']}/"
                f"{target['ScalableDimension']}")
        ids[f"aws_appautoscaling_target.{local}"] = base
        policy = res["aws_appautoscaling_policy"][local]["name"]
        ids[f"aws_appautoscaling_policy.{local}"] = f"{base}/{policy}"
    return ids


@needs_terraform
@pytest.mark.parametrize("case", ["autoscaled", "replicas changed"])
def test_terraform_import_plans_no_change(mnt, fake, tmp_path, case):
    if case == "autoscaled":
        make_endpoint(mnt, SCALED)
        wait_synced(mnt)
        doc = wait_export(mnt, lambda d: "aws_appautoscaling_policy" in
                          d.get("resource", {}))
    else:
        make_endpoint(mnt)
        wait_synced(mnt)
        (mnt / EP / "replicas").write_text("2\n")
        wait_for(lambda: read(mnt / EP / "status").count("2 of 2"), 30,
                 "two instances")
        wait_synced(mnt)
        doc = wait_export(mnt, lambda d: d.get("resource", {}).get(
            "aws_sagemaker_endpoint_configuration", {}).get("chat", {}).get(
            "production_variants", [{}])[0].get(
            "initial_instance_count") == 2)
    tf = Terraform(tmp_path, fake.url)
    tf.take(mnt)
    ids = import_ids(doc, fake)
    assert len(ids) == (5 if case == "autoscaled" else 3)
    fake.control("calls/clear", {})
    for address, ident in ids.items():
        tf.run("import", "-input=false", address, ident)
    p = tf.run("plan", "-input=false", "-detailed-exitcode", ok=(0, 2))
    assert p.returncode == 0, p.stdout
    # Terraform only read: nothing was made, changed or removed.
    writes = [c["op"] for c in fake.calls()
              if not c["op"].startswith(("Describe", "List"))]
    assert not writes


def test_export_follows_what_runs_after_a_change(mnt, fake):
    make_endpoint(mnt)
    wait_synced(mnt)
    first = export(mnt)["resource"]["aws_sagemaker_model"]["chat"]["name"]
    (mnt / EP / "image").write_text("example.com/llm:2\n")
    wait_for(lambda: [m["ModelName"] for m in fake.state()["models"]] not in
             ([], [first]), 30, "a new model")
    wait_synced(mnt)
    [model] = [m["ModelName"] for m in fake.state()["models"]]
    doc = wait_export(mnt, lambda d: d["resource"]["aws_sagemaker_model"][
        "chat"]["name"] == model)
    assert doc["resource"]["aws_sagemaker_model"]["chat"][
        "primary_container"][0]["image"] == "example.com/llm:2"
    assert doc["resource"]["aws_sagemaker_endpoint_configuration"]["chat"][
        "name"] == endpoints(fake)[0]["EndpointConfigName"]
    # Replicas alone keep the model and config, and the export says so.
    (mnt / EP / "replicas").write_text("2\n")
    wait_synced(mnt)
    doc = export(mnt)
    assert doc["resource"]["aws_sagemaker_model"]["chat"]["name"] == model
