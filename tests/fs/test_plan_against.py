"""infrafs-plan --against DIR: what a Git work tree would change in an
environment, read through the real mount, nothing committed."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Mount, read, revisions, status_of, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
PLAN = str(TOOLS / "infrafs-plan")
# A user of this file's own, so that it clashes with no other test's.
READER = "ifs-planreader"

pytestmark = pytest.mark.skipif(shutil.which("git") is None,
                                reason="git is not installed")


@pytest.fixture
def prod(tmp_path):
    """A mount others may read, with prod: two pools applied, changes
    then held for approval so that the reconciler's plan can be compared,
    and a Git work tree `infra` holding the same specs."""
    m = Mount(tmp_path, extra=["-o", "allow_other"]).start()
    try:
        m.sh("mkdir -p prod/pools/train prod/pools/old && "
             "echo 'local.price.cpu = 0.5' >> prod/config && "
             "printf 'accelerator = cpu\\nnodes = 1\\n' "
             "> prod/pools/train/spec && "
             "echo 'nodes = 0' > prod/pools/old/spec")
        for name in ["train", "old"]:
            wait_for(lambda: status_of(
                m / f"prod/pools/{name}/status").get("synced") == "yes",
                30, f"pools/{name} applied")
        m.sh("echo 'approval = manual' >> prod/config")
        infra = tmp_path / "infra"
        for name in ["train", "old"]:
            (infra / "pools" / name).mkdir(parents=True)
            shutil.copy(m / f"prod/pools/{name}/spec",
                        infra / f"pools/{name}/spec")
        git(infra, "init", "-q")
        commit(infra, "as deployed")
        yield m, infra
    finally:
        m.stop()
        m.kill_replicas()


def git(tree, *args):
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=ci",
                    "-c", "user.email=ci@example.com", *args], check=True)


def commit(tree, message):
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", message)


def write(infra, rel, text):
    path = infra / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def put(infra, rel, text, message="change"):
    """Writes one file of the tree and commits it, as a pull request
    would bring it."""
    write(infra, rel, text)
    commit(infra, message)


def plan(m, infra, *args, user=None):
    """Runs infrafs-plan --against from the test's folder, by relative
    paths (so that a user who cannot reach the test's folder by name
    still can from inside it)."""
    cmd = [PLAN, "--against", os.path.relpath(infra, m.tmp), *args,
           "mnt/prod"]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}",
               "--clear-groups", *cmd]
    return subprocess.run(cmd, cwd=m.tmp, capture_output=True, text=True)


def change_everything(infra):
    """An added endpoint, a changed pool and a removed pool."""
    write(infra, "endpoints/chat/spec", "command = sleep 1000\npool = train\n")
    write(infra, "pools/train/spec", "accelerator = cpu\nnodes = 2\n")
    shutil.rmtree(infra / "pools/old")
    commit(infra, "grow")


def test_no_change_exits_0(prod):
    m, infra = prod
    res = plan(m, infra)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "changes: no changes" in res.stdout
    assert "steps:" not in res.stdout


def test_changes_show_diffs_steps_and_cost_and_commit_nothing(prod):
    m, infra = prod
    before = revisions(m, "prod")
    change_everything(infra)
    res = plan(m, infra)
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout
    assert ("--- a/pools/train/spec\n+++ b/pools/train/spec\n"
            "@@ -1,2 +1,2 @@\n accelerator = cpu\n-nodes = 1\n+nodes = 2\n"
            in out)
    assert "--- /dev/null\n+++ b/endpoints/chat/spec\n" in out
    assert "--- a/pools/old/spec\n+++ /dev/null\n@@ -1 +0,0 @@\n" in out
    steps = out.split("steps:\n")[1].split("\n\n")[0].splitlines()
    assert steps == [
        "+ create endpoints/chat",
        "- destroy pools/old",
        "~ update pools/train: nodes: 1 -> 2, min_nodes: 1 -> 2, "
        "max_nodes: 1 -> 2",
    ]
    assert "changes: 1 to create, 1 to update, 1 to destroy" in out
    assert "cost: 0.50 -> 1.00 USD an hour (provider local)" in out
    assert "policy: ok (prod/policy, from the environment)" in out
    # Nothing was committed: no revision, the specs as they were.
    assert revisions(m, "prod") == before
    assert read(m / "prod/pools/train/spec") == "accelerator = cpu\nnodes = 1\n"
    assert (m / "prod/pools/old").is_dir()
    assert not (m / "prod/endpoints/chat").exists()
    # The same change made through the mount: the reconciler's plan
    # names each step as infrafs-plan did, to the byte.
    m.sh("mkdir prod/endpoints/chat && "
         f"cp {infra}/endpoints/chat/spec prod/endpoints/chat/spec && "
         f"cp {infra}/pools/train/spec prod/pools/train/spec && "
         "rmdir prod/pools/old")

    def held():
        lines = read(m / "prod/plan").splitlines()
        return sorted(line for line in lines if line[:2] in ("+ ", "~ ", "- "))
    wait_for(lambda: held() == sorted(steps), 30,
             f"the reconciler's plan to be {steps}, not {held()}")
    # ...and against the tree it now matches, there is nothing to do.
    res = plan(m, infra)
    assert res.returncode == 0, res.stdout + res.stderr


def test_revision_without_effect_is_a_change_without_a_step(prod):
    m, infra = prod
    put(infra, "pools/train/spec",
        "# the training pool\naccelerator = cpu\nnodes = 1\n")
    res = plan(m, infra)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "+# the training pool\n" in res.stdout
    assert "steps:" not in res.stdout
    assert "changes: 1 to revise" in res.stdout


def test_bad_line_names_file_line_and_rule(prod):
    m, infra = prod
    put(infra, "pools/train/spec", "accelerator = cpu\nnodes = four\n")
    res = plan(m, infra)
    assert res.returncode == 1
    assert ('infra/pools/train/spec:2: nodes: expected an integer >= 0, '
            'got "four" [spec]') in res.stdout
    assert "infra does not check: 1 problem" in res.stderr
    # The same through JSON: file, line, key and rule apart.
    res = plan(m, infra, "--format", "json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["valid"] is False
    assert doc["problems"] == [{
        "file": "pools/train/spec", "line": 2, "key": "nodes",
        "rule": "spec",
        "message": 'nodes: expected an integer >= 0, got "four"'}]
    assert "infra/pools/train/spec:2: nodes: expected" in res.stderr


def test_endpoint_on_a_pool_the_folder_lacks(prod):
    m, infra = prod
    write(infra, "endpoints/chat/spec", "command = sleep 1000\npool = old\n")
    shutil.rmtree(infra / "pools/old")
    commit(infra, "dangling")
    res = plan(m, infra)
    assert res.returncode == 1
    assert ("infra/endpoints/chat/spec:2: pool: no pools/old in the folder; "
            "prod has it, and applying the folder would destroy it under "
            "this endpoint [reference]") in res.stdout


def test_stray_file_is_refused_with_its_path(prod):
    m, infra = prod
    put(infra, "pools/train/nodes", "3\n")
    res = plan(m, infra)
    assert res.returncode == 1
    assert "infra/pools/train/nodes: a resource folder holds only its spec" \
        in res.stdout
    assert "[layout]" in res.stdout
    assert "changes: not compared: the folder does not fit the layout" \
        in res.stdout


def test_breach_of_the_environments_policy(prod):
    m, infra = prod
    m.sh("echo 'max_nodes_per_pool = 2' >> prod/policy")
    put(infra, "pools/train/spec", "accelerator = cpu\nnodes = 5\n")
    res = plan(m, infra)
    assert res.returncode == 1
    line = [x for x in res.stdout.splitlines()
            if x.startswith("infra/pools/train/spec:2:")]
    assert line == [
        "infra/pools/train/spec:2: policy max_nodes_per_pool: 5 requested "
        "for pools/train, limit 2 (prod/policy line 5) "
        "[policy max_nodes_per_pool]"], res.stdout
    assert "policy: 1 breach (prod/policy, from the environment)" \
        in res.stdout


def test_a_protected_destroy_is_noted(prod):
    m, infra = prod
    m.sh("echo 'protect = destroy' >> prod/policy")
    shutil.rmtree(infra / "pools/old")
    commit(infra, "drop old")
    res = plan(m, infra)
    assert res.returncode == 2, res.stdout + res.stderr
    assert ("note: pools/old/spec: protect = destroy: the destroy waits "
            "for the owner's approval (echo approve > ctl)") in res.stdout
    doc = json.loads(plan(m, infra, "--format", "json").stdout)
    assert doc["policy"]["verdicts"] == [{
        "path": "pools/old/spec", "verdict": "approval",
        "rule": "policy protect", "message": None}]


def test_the_folders_policy_is_the_one_judged(prod):
    m, infra = prod
    put(infra, "policy", "allowed_capacity = spot\n")
    res = plan(m, infra, "--format", "json")
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    assert doc["policy"]["from"] == "folder"
    assert doc["policy"]["file"] == "policy"
    # The policy itself is a change shown like the specs.
    assert [r["path"] for r in doc["resources"]] == ["policy"]
    assert "+allowed_capacity = spot\n" in doc["resources"][0]["diff"]
    assert doc["problems"] == []  # nothing else changed, nothing judged
    # A spec committed under it is judged by it.
    put(infra, "pools/train/spec", "accelerator = cpu\nnodes = 2\n")
    doc = json.loads(plan(m, infra, "--format", "json").stdout)
    assert [(p["file"], p["rule"]) for p in doc["problems"]] == [
        ("pools/train/spec", "policy allowed_capacity")]
    assert doc["policy"]["verdicts"][0]["verdict"] == "breach"


def test_json_for_python_and_jq(prod):
    m, infra = prod
    change_everything(infra)
    res = plan(m, infra, "--format", "json")
    assert res.returncode == 2, res.stderr
    doc = json.loads(res.stdout)
    assert doc["environment"] == "prod"
    assert doc["changes"] is True and doc["valid"] is True
    assert doc["compared"] is True
    assert doc["counts"] == {"create": 1, "update": 1, "destroy": 1,
                             "revise": 0, "remove-draft": 0}
    assert doc["cost"] == {"provider": "local", "currency": "USD",
                           "hourly_before": 0.5, "hourly_after": 1.0,
                           "hourly_limit": None}
    update = [s for s in doc["steps"] if s["action"] == "update"][0]
    assert update["path"] == "pools/train"
    assert {"field": "nodes", "from": "1", "to": "2"} in update["changes"]
    if shutil.which("jq"):
        jq = subprocess.run(
            ["jq", "-r", '.steps[] | "\\(.action) \\(.path)"'],
            input=res.stdout, capture_output=True, text=True, check=True)
        assert jq.stdout.splitlines() == [
            "create endpoints/chat", "destroy pools/old",
            "update pools/train"]
        jq = subprocess.run(["jq", "-e", ".valid and .changes"],
                            input=res.stdout, capture_output=True, text=True)
        assert jq.returncode == 0


def test_markdown_for_a_pull_request(prod):
    m, infra = prod
    change_everything(infra)
    res = plan(m, infra, "--format", "markdown")
    assert res.returncode == 2, res.stderr
    md = res.stdout
    assert md.startswith("### infrafs plan for `prod`\n")
    assert "**checks**" in md
    assert "| step | resource | changes |" in md
    assert "| update | `pools/train` | nodes: 1 -\\> 2<br>" in md
    assert ("<details><summary><code>pools/train/spec</code>: update"
            "</summary>\n\n```diff\n--- a/pools/train/spec\n") in md
    # A value cannot break out of the fence or the table.
    write(infra, "endpoints/chat/spec",
          "command = echo '```' | x\npool = train\n")
    put(infra, "pools/train/spec",
        "accelerator = cpu\nnodes = 2\nlabels.team = a|<b>\n")
    md = plan(m, infra, "--format", "markdown").stdout
    assert "````diff\n" in md and "+command = echo '```' | x\n" in md
    assert "labels: (unset) -\\> team = a\\|\\<b\\> |" in md


@pytest.fixture
def reader():
    subprocess.run(["userdel", READER], capture_output=True)
    subprocess.run(["useradd", "-M", READER], check=True)
    uid = int(subprocess.check_output(["id", "-u", READER]))
    yield uid
    subprocess.run(["userdel", READER], capture_output=True)


def test_runs_as_an_unprivileged_user_from_the_mount_alone(prod, reader):
    m, infra = prod
    change_everything(infra)
    os.chmod(m.tmp, 0o755)
    subprocess.run(["chmod", "-R", "a+rX", str(infra)], check=True)
    # The state store is the daemon's alone: the user cannot open it.
    probe = subprocess.run(
        ["setpriv", f"--reuid={reader}", f"--regid={reader}",
         "--clear-groups", "cat", os.path.relpath(m.state, m.tmp)],
        cwd=m.tmp, capture_output=True)
    assert probe.returncode != 0
    as_root = plan(m, infra, "--format", "json")
    res = plan(m, infra, "--format", "json", user=reader)
    assert res.returncode == 2, res.stderr
    assert json.loads(res.stdout) == json.loads(as_root.stdout)


def test_a_draft_is_created_or_removed_without_a_destroy(prod):
    m, infra = prod
    m.sh("mkdir prod/pools/sketch prod/pools/idea")
    put(infra, "pools/idea/spec", "nodes = 0\n")
    doc = json.loads(plan(m, infra, "--format", "json").stdout)
    changes = {r["path"]: r["change"] for r in doc["resources"]}
    assert changes == {"pools/idea/spec": "create",
                       "pools/sketch/spec": "remove-draft"}
    assert [s["line"] for s in doc["steps"]] == ["+ create pools/idea"]


def test_bad_command_lines(prod):
    m, infra = prod
    res = plan(m, infra, "--format", "yaml")
    assert res.returncode == 64
    assert 'want text, json or markdown, got "yaml"' in res.stderr
    res = subprocess.run([PLAN, "--against", str(infra), str(infra)],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert "is not an infrafs environment folder (no plan.json)" \
        in res.stderr
