"""The tree the contract shows, and mkdir/rmdir of environments and resources."""
import errno
import json
import os
import re
import stat

import pytest

from conftest import read, status_of


def test_root_lists_the_fixed_files(mnt):
    assert sorted(os.listdir(mnt.path)) == sorted(
        ["README", "version", "metrics", "kinds", "providers"])
    assert "mkdir" in read(mnt / "README")
    assert read(mnt / "version").startswith("infrafs ")


def test_kinds_are_rendered_from_the_schema(mnt):
    assert sorted(os.listdir(mnt / "kinds")) == [
        "config", "endpoint", "policy", "pool"]
    pool = read(mnt / "kinds" / "pool")
    for field in ["accelerator", "accelerators_per_node", "nodes",
                  "min_nodes", "max_nodes", "capacity", "zones",
                  "instance_type", "labels"]:
        assert field in pool
    assert "nvidia-h100-80gb" in pool
    endpoint = read(mnt / "kinds" / "endpoint")
    for field in ["model", "image", "command", "replicas", "scale_metric",
                  "health_path", "port", "env"]:
        assert field in endpoint
    policy = read(mnt / "kinds" / "policy")
    for field in ["max_accelerators", "protect", "secrets_use"]:
        assert field in policy
    assert "approval" in read(mnt / "kinds" / "config")


def test_providers_lists_the_built_in_providers(mnt):
    assert sorted(os.listdir(mnt / "providers")) == ["aws", "kubernetes",
                                                     "local"]
    for name in ("aws", "kubernetes", "local"):
        text = read(mnt / "providers" / name)
        assert f"provider: {name}" in text and "health:" in text
    kube = read(mnt / "providers" / "kubernetes")
    # What it supports, and what it refuses, with why.
    assert "kinds: pool endpoint" in kube
    assert "kubernetes.kubeconfig:" in kube and "exec plugins" in kube
    assert "insecure-skip-tls-verify" in kube
    # How a pool of nodes nobody labelled finds them.
    assert "  nvidia-a100-80gb: NVIDIA-A100-SXM4-80GB" in kube
    assert "nvidia.com/gpu.product" in kube


def test_metrics_is_prometheus_text(mnt):
    mnt.sh("mkdir dev")
    text = read(mnt / "metrics")
    assert "# TYPE infrafs_environments gauge" in text
    assert "infrafs_environments 1" in text
    for line in text.splitlines():
        # A label's value may hold spaces (compiler="cc 12.2.0").
        sample = re.sub(r'\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}', "", line)
        assert line.startswith("#") or len(sample.split(" ")) == 2, line


def test_environment_shape(mnt):
    os.mkdir(mnt / "dev")
    assert sorted(os.listdir(mnt / "dev")) == sorted([
        "config", "policy", "plan", "plan.json", "ctl", "status", "events",
        "audit", "history", "pools", "endpoints", "secrets", "export"])
    assert "provider = local" in read(mnt / "dev" / "config")
    assert status_of(mnt / "dev" / "status")["environment"] == "dev"
    assert json.loads(read(mnt / "dev" / "plan.json"))["steps"] == []
    mode = stat.S_IMODE(os.stat(mnt / "dev" / "ctl").st_mode)
    assert mode == 0o644, "ctl is read and written as the folder allows"
    assert read(mnt / "dev" / "ctl").startswith("# ctl takes")


def test_resource_shape_and_draft_state(mnt):
    mnt.sh("mkdir dev")
    os.mkdir(mnt / "dev" / "pools" / "train")
    names = set(os.listdir(mnt / "dev" / "pools" / "train"))
    assert {"spec", "status", "status.json", "state", "events",
            "accelerator", "nodes", "min_nodes", "labels"} <= names
    assert read(mnt / "dev" / "pools" / "train" / "state") == "pending\n"
    st = status_of(mnt / "dev" / "pools" / "train" / "status")
    assert st["state"] == "pending" and "draft" in st["reason"]
    assert read(mnt / "dev" / "pools" / "train" / "spec") == ""
    # A draft shows the defaults it would get.
    assert read(mnt / "dev" / "pools" / "train" / "accelerator") == "cpu\n"
    doc = json.loads(read(mnt / "dev" / "pools" / "train" / "status.json"))
    assert doc["draft"] is True and doc["effective"]["nodes"] == 1
    assert doc["spec"] == {}
    # Drafts make no revision.
    assert os.listdir(mnt / "dev" / "history") == ["1"]


def test_endpoints_work_like_pools(mnt):
    mnt.sh("mkdir -p dev/endpoints/chat && "
           "printf 'command = python3 -m http.server $PORT\\nreplicas = 2\\n'"
           " > dev/endpoints/chat/spec")
    assert read(mnt / "dev" / "endpoints" / "chat" / "replicas") == "2\n"
    assert read(mnt / "dev" / "endpoints" / "chat" / "port") == "8080\n"


@pytest.mark.parametrize("name", [
    "Dev", "dev_1", "-dev", "dev-", "a" * 64, "dév", "a.b", "..x"])
def test_bad_names_get_einval(mnt, name):
    with pytest.raises(OSError) as e:
        os.mkdir(mnt / name)
    assert e.value.errno == errno.EINVAL
    mnt.sh("mkdir dev")
    with pytest.raises(OSError) as e:
        os.mkdir(mnt / "dev" / "pools" / name)
    assert e.value.errno == errno.EINVAL


def test_longest_valid_name_is_accepted(mnt):
    name = "a" + "-" * 61 + "z"
    os.mkdir(mnt / name)
    assert name in os.listdir(mnt.path)


def test_name_of_300_characters(mnt):
    with pytest.raises(OSError) as e:
        os.mkdir(mnt / ("a" * 300))
    assert e.value.errno in (errno.ENAMETOOLONG, errno.EINVAL)


def test_rmdir_environment_refused_while_it_holds_resources(env):
    with pytest.raises(OSError) as e:
        os.rmdir(env / "dev")
    assert e.value.errno == errno.ENOTEMPTY
    assert "train" in os.listdir(env / "dev" / "pools")
    os.rmdir(env / "dev" / "pools" / "train")
    os.rmdir(env / "dev")
    assert "dev" not in os.listdir(env.path)


def test_mkdir_twice_is_eexist(mnt):
    os.mkdir(mnt / "dev")
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "dev")
    # To its maker the new environment is empty, as a new folder on
    # ext4 is: pools/ is there once it makes it (the one the
    # environment came with).
    with pytest.raises(FileNotFoundError):
        os.mkdir(mnt / "dev" / "pools" / "a")
    os.mkdir(mnt / "dev" / "pools")
    os.mkdir(mnt / "dev" / "pools" / "a")
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "dev" / "pools")
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "dev" / "pools" / "a")


def test_mkdir_outside_kind_folders_is_refused(mnt):
    mnt.sh("mkdir dev")
    for where in ["dev/history/x", "dev/plan-x/y", "kinds/x"]:
        with pytest.raises(OSError) as e:
            os.mkdir(mnt / where)
        assert e.value.errno in (errno.EPERM, errno.ENOENT, errno.EACCES)
    with pytest.raises(OSError) as e:
        os.mkdir(mnt / "dev" / "history" / "x")
    assert e.value.errno in (errno.EPERM, errno.EACCES)


def test_rmdir_of_a_pool_used_by_an_endpoint_is_ebusy(env):
    env.sh("mkdir dev/endpoints/chat && "
           "echo 'pool = train' > dev/endpoints/chat/spec")
    with pytest.raises(OSError) as e:
        os.rmdir(env / "dev" / "pools" / "train")
    assert e.value.errno == errno.EBUSY
    assert "train" in os.listdir(env / "dev" / "pools")


def test_recreated_resource_gets_a_new_inode(env):
    before = os.stat(env / "dev" / "pools" / "train" / "spec").st_ino
    os.rmdir(env / "dev" / "pools" / "train")
    os.mkdir(env / "dev" / "pools" / "train")
    # The process that made a folder sees it empty until it lists it
    # (what cp -r expects); any other process sees its files at once.
    after = int(env.sh("stat -c %i dev/pools/train/spec").stdout)
    assert before != after
    assert not (env / "dev" / "pools" / "train" / "spec").exists()
    assert "spec" in os.listdir(env / "dev" / "pools" / "train")
    assert read(env / "dev" / "pools" / "train" / "spec") == ""


def test_ls_l_and_find_walk_the_tree(env):
    res = env.sh("ls -lR . >/dev/null && find . -type f | sort")
    files = res.stdout.splitlines()
    assert "./dev/pools/train/spec" in files
    assert "./dev/history/2/pools/train" in files
    assert "./README" in files


def test_large_folders_list_every_entry(mnt):
    """readdir(3) drops entries with inode number 0: every one of many
    pools must show in os.listdir, ls, find and shell globs."""
    mnt.sh("mkdir dev && cd dev/pools && mkdir $(seq -f 'p%g' 1 450)")
    names = os.listdir(mnt / "dev/pools")
    assert len(names) == 450 and len(set(names)) == 450
    assert mnt.sh("ls dev/pools | wc -l").stdout.strip() == "450"
    assert mnt.sh("find dev/pools -mindepth 1 -maxdepth 1 | wc -l"
                  ).stdout.strip() == "450"
    assert mnt.sh("echo dev/pools/* | wc -w").stdout.strip() == "450"
    assert mnt.sh("ls -l dev/pools | grep -c '^d'").stdout.strip() == "450"


def vm_hwm_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_open_listings_of_history_hold_no_entry_per_revision(mnt):
    """history/ may hold millions of revisions: an open listing of it
    costs the daemon nothing per revision, yet lists every one, and a
    revision made after opendir shows in the next listing, not this one."""
    mnt.sh("mkdir dev && mkdir dev/pools/a && echo 'nodes = 0' > "
           "dev/pools/a/spec")
    script = ("for i in $(seq 3000); do echo $((i % 7)) > "
              "dev/pools/a/nodes; done")
    mnt.sh(script)
    revs = len(os.listdir(mnt / "dev/history"))
    assert revs >= 3000
    before = vm_hwm_kib(mnt.proc.pid)
    fds = [os.open(mnt / "dev/history", os.O_RDONLY | os.O_DIRECTORY)
           for _ in range(16)]
    try:
        mnt.sh("echo 1 > dev/pools/a/nodes")
        for fd in fds:
            names = os.listdir(fd)
            assert sorted(map(int, names)) == list(range(1, revs + 1))
        grown = vm_hwm_kib(mnt.proc.pid) - before
        # Before: about 350 bytes per revision per open listing (16 MiB
        # here); now only the names read out at a time.
        assert grown < 4 * 1024, f"{grown} KiB for 16 open listings"
    finally:
        for fd in fds:
            os.close(fd)
    assert len(os.listdir(mnt / "dev/history")) == revs + 1
