"""The spec language through the mount: line checks at write(2), whole
checks at close(2), field files, JSON, comments, errors users can read."""
import errno
import json
import os

import pytest

from conftest import read, revisions, status_of, wait_for

SPEC = "dev/pools/train/spec"


def test_bad_line_fails_the_shell_builtin_echo(env):
    res = env.sh(f"echo 'nodes = four' > {SPEC}", check=False)
    assert res.returncode != 0
    assert "Invalid argument" in res.stderr
    # The accepted spec is untouched, and the reason is shown.
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    st = status_of(env / "dev/pools/train/status")
    assert st["last_error"].endswith(
        'line 1: nodes: expected an integer >= 0, got "four"')
    assert 'got "four"' in read(env / "dev/pools/train/events")


def test_bad_line_in_the_middle_names_its_line(env):
    res = env.sh(f"printf 'nodes = 2\\n# c\\ncolour = red\\n' > {SPEC}",
                 check=False)
    assert res.returncode != 0
    err = status_of(env / "dev/pools/train/status")["last_error"]
    assert "line 3: colour: unknown key" in err
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_write_error_reaches_python(env):
    with pytest.raises(OSError) as e:
        with open(env / SPEC, "w") as f:
            f.write("accelerator = h100\n")
            f.flush()
    assert e.value.errno == errno.EINVAL
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_cross_field_rule_fails_close_and_keeps_old_spec(env):
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 3\nmin_nodes = 5\n")  # each line is fine alone
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    st = status_of(env / "dev/pools/train/status")
    assert st["last_error"] == "line 2: min_nodes: must be <= nodes (5 > 3)"
    assert "commit refused" in read(env / "dev/pools/train/events")


def test_incomplete_last_line_is_checked_at_close(env):
    fd = os.open(env / SPEC, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"nodes = 2\nnodes = x")  # no newline: checked at close
    with pytest.raises(OSError) as e:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_comments_are_kept_and_later_assignment_wins(env):
    text = ("# training pool\naccelerator = nvidia-a100-80gb  # big\n"
            "\nnodes = 2\nnodes = 3\nlabels.team = nlp\n")
    (env / SPEC).write_text(text)
    assert read(env / SPEC) == text
    assert read(env / "dev/pools/train/nodes") == "3\n"
    assert read(env / "dev/pools/train/labels") == "team = nlp\n"
    doc = json.loads(read(env / "dev/pools/train/status.json"))
    assert doc["spec"] == {"accelerator": "nvidia-a100-80gb", "nodes": 3,
                           "labels": {"team": "nlp"}}
    assert doc["effective"]["max_nodes"] == 3


def test_json_object_is_accepted_as_the_whole_spec(env):
    (env / SPEC).write_text(json.dumps(
        {"accelerator": "nvidia-l4", "nodes": 2, "zones": ["a", "b"],
         "labels": {"team": "cv"}}))
    assert read(env / "dev/pools/train/accelerator") == "nvidia-l4\n"
    assert read(env / "dev/pools/train/zones") == "a, b\n"
    # JSON is checked whole at close; coreutils' echo reports close errors.
    bad = env.sh(f"/bin/echo '{{\"nodes\": \"four\"}}' > {SPEC}",
                 check=False)
    assert bad.returncode != 0
    assert read(env / "dev/pools/train/nodes") == "2\n"


def test_field_file_changes_one_field_as_one_revision(env):
    (env / SPEC).write_text("# keep me\naccelerator = nvidia-t4\nnodes = 2\n")
    before = revisions(env)
    env.sh("echo 4 > dev/pools/train/nodes")
    assert revisions(env) == before + [before[-1] + 1]
    assert read(env / SPEC) == "# keep me\naccelerator = nvidia-t4\nnodes = 4\n"
    info = read(env / f"dev/history/{before[-1] + 1}/info")
    assert "path: dev/pools/train/nodes" in info


def test_field_file_keeps_the_comment_after_an_empty_value(env):
    (env / SPEC).write_text("nodes = # two once the quota is raised\n")
    env.sh("echo 4 > dev/pools/train/nodes")
    assert read(env / SPEC) == "nodes = 4 # two once the quota is raised\n"
    assert read(env / "dev/pools/train/nodes") == "4\n"


def test_bad_field_value_fails_echo(env):
    res = env.sh("echo 99 > dev/pools/train/accelerators_per_node",
                 check=False)
    assert res.returncode != 0
    assert read(env / "dev/pools/train/accelerators_per_node") == "1\n"
    err = status_of(env / "dev/pools/train/status")["last_error"]
    assert "accelerators_per_node: expected an integer from 1 to 16" in err


def test_empty_field_write_goes_back_to_the_default(env):
    env.sh("echo 3 > dev/pools/train/nodes && : > dev/pools/train/nodes")
    # Nothing was written after the truncation: it commits at release,
    # which the kernel sends after close(2) has returned.
    wait_for(lambda: read(env / "dev/pools/train/nodes") == "1\n", 10,
             "the default back")
    assert "nodes" not in read(env / SPEC)


def test_map_field_file_replaces_the_map(env):
    env.sh("printf 'team = nlp\\ncost_center = 42\\n' > dev/pools/train/labels")
    assert "labels.team = nlp" in read(env / SPEC)
    assert "labels.cost_center = 42" in read(env / SPEC)


def test_map_field_value_that_would_read_as_a_comment_is_refused(env):
    # `labels.team = #nlp` would be a comment: the label would be lost.
    env.sh("printf 'team =#nlp\\n' > dev/pools/train/labels", check=False)
    wait_for(lambda: "labels.team: a '#' at the start or after a space" in
             status_of(env / "dev/pools/train/status")["last_error"], 10,
             "the refusal in status")
    assert "labels" not in read(env / SPEC)


def test_draft_is_applied_by_its_first_write_even_empty(mnt):
    mnt.sh("mkdir -p dev/pools/gpu")
    assert revisions(mnt) == [1]
    mnt.sh(": > dev/pools/gpu/spec")
    # Nothing was written, so the commit comes at release, after close.
    wait_for(lambda: revisions(mnt) == [1, 2], what="revision 2")
    assert "create pools/gpu" in read(mnt / "dev/history/2/info")
    assert "draft" not in status_of(mnt / "dev/pools/gpu/status").get(
        "reason", "")


def test_rewriting_the_same_spec_makes_no_revision(env):
    before = revisions(env)
    env.sh(f"cat {SPEC} > /tmp/same && cat /tmp/same > {SPEC}")
    assert revisions(env) == before


def test_endpoint_pool_not_there_yet_is_accepted(mnt):
    """A tree may be written in any order (test_order.py): the endpoint
    waits for its pool instead of being refused."""
    mnt.sh("mkdir -p dev/endpoints/chat")
    mnt.sh("/bin/echo 'pool = nope' > dev/endpoints/chat/spec")
    assert status_of(mnt / "dev/endpoints/chat/status")["last_error"] == ""


def test_endpoint_secret_not_there_yet_is_accepted(mnt):
    """Like a pool (test_order.py): the endpoint waits for its secret."""
    mnt.sh("mkdir -p dev/endpoints/chat")
    mnt.sh("/bin/echo 'env.TOKEN = secret:hf' > dev/endpoints/chat/spec")
    assert "secret:hf" in read(mnt / "dev/endpoints/chat/spec")
    assert status_of(mnt / "dev/endpoints/chat/status")["last_error"] == ""


def test_config_is_checked_like_a_spec(mnt):
    mnt.sh("mkdir dev")
    res = mnt.sh("echo 'approval = sometimes' >> dev/config", check=False)
    assert res.returncode != 0
    assert "approval = sometimes" not in read(mnt / "dev/config")
    mnt.sh("echo 'approval = manual' >> dev/config")
    assert "approval = manual" in read(mnt / "dev/config")
    res = mnt.sh("/bin/echo 'provider = gcp' > dev/config", check=False)
    assert res.returncode != 0
    assert "not built into this infrafs" in status_of(
        mnt / "dev/status")["last_error"]


@pytest.mark.parametrize("policy,spec,err,message,compliant", [
    ("max_nodes_per_pool = 4", "nodes = 8", errno.EDQUOT,
     "policy max_nodes_per_pool: 8 requested for pools/train, limit 4",
     "nodes = 4"),
    ("max_accelerators = 8", "accelerator = nvidia-t4\nnodes = 3\n"
     "accelerators_per_node = 4", errno.EDQUOT,
     "policy max_accelerators: 12 requested in dev, limit 8",
     "accelerator = nvidia-t4\nnodes = 2\naccelerators_per_node = 4"),
    ("allowed_accelerators = cpu, nvidia-t4", "accelerator = nvidia-b200",
     errno.EACCES, "policy allowed_accelerators: nvidia-b200 is not allowed",
     "accelerator = nvidia-t4"),
    ("allowed_capacity = on-demand", "capacity = spot", errno.EACCES,
     "policy allowed_capacity: spot is not allowed", "capacity = on-demand"),
    ("require_labels = team", "nodes = 1", errno.EACCES,
     "policy require_labels: pools/train lacks label team",
     "nodes = 1\nlabels.team = nlp"),
])
def test_policy_refuses_at_close(env, policy, spec, err, message, compliant):
    env.sh(f"echo '{policy}' >> dev/policy")
    before = read(env / SPEC)
    with pytest.raises(OSError) as e:
        with open(env / SPEC, "w") as f:
            f.write(spec + "\n")
    assert e.value.errno == err
    assert read(env / SPEC) == before
    assert message in status_of(env / "dev/pools/train/status")["last_error"]
    # The same rule accepts a spec that keeps it.
    with open(env / SPEC, "w") as f:
        f.write(compliant + "\n")
    assert read(env / SPEC) == compliant + "\n"
    assert "policy" not in status_of(env / "dev/pools/train/status")[
        "last_error"]


def test_policy_accepts_a_compliant_spec(env):
    env.sh("echo 'max_nodes_per_pool = 4' >> dev/policy && "
           "echo 'nodes = 4' > dev/pools/train/spec")
    assert read(env / "dev/pools/train/nodes") == "4\n"


def test_require_labels_applies_to_kinds_with_labels(env):
    env.sh("echo 'require_labels = team' >> dev/policy && "
           "mkdir dev/endpoints/chat && "
           "echo 'replicas = 1' > dev/endpoints/chat/spec")
    assert read(env / "dev/endpoints/chat/replicas") == "1\n"


def test_tightened_policy_marks_and_holds_but_lets_shrink(env):
    env.sh("printf 'accelerator = nvidia-t4\\nnodes = 4\\n' > "
           "dev/pools/train/spec")
    env.sh("echo 'max_accelerators = 2' >> dev/policy")
    st = status_of(env / "dev/pools/train/status")
    assert st["policy"] == "violates max_accelerators"
    # Growth is held...
    with pytest.raises(OSError) as e:
        with open(env / "dev/pools/train/nodes", "w") as f:
            f.write("5\n")
    assert e.value.errno == errno.EDQUOT
    # ...shrinking is not, even while still over the limit.
    env.sh("echo 3 > dev/pools/train/nodes")
    assert read(env / "dev/pools/train/nodes") == "3\n"
    env.sh("echo 2 > dev/pools/train/nodes")
    assert "policy" not in status_of(env / "dev/pools/train/status")


def test_max_hourly_cost_uses_the_providers_estimate(mnt):
    mnt.sh("mkdir -p dev/pools/cpu && "
           "echo 'local.price.cpu = 0.5' >> dev/config && "
           "echo 'max_hourly_cost_usd = 1.5' >> dev/policy")
    with pytest.raises(OSError) as e:
        with open(mnt / "dev/pools/cpu/spec", "w") as f:
            f.write("nodes = 4\n")
    assert e.value.errno == errno.EDQUOT
    assert status_of(mnt / "dev/pools/cpu/status")["last_error"] == (
        "policy max_hourly_cost_usd: 2.00 requested in dev, limit 1.50")
    mnt.sh("echo 'nodes = 1' > dev/pools/cpu/spec")
    wait_for(lambda: status_of(mnt / "dev/pools/cpu/status").get(
        "hourly_cost_usd") == "0.50", 10, "the cost in status")
