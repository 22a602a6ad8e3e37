"""Shell editing really works: each real program against the mount."""
import json
import os
import subprocess

import pytest

from conftest import have, read, revisions, status_of

RES = "dev/pools/train"
SPEC = f"{RES}/spec"


def scratch_left(mnt):
    """Files in the resource folder that are not the resource's own."""
    own = set(os.listdir(mnt / RES))
    fixed = {"spec", "status", "status.json", "state", "events"}
    fields = set(json.loads(read(mnt / RES / "status.json"))["effective"])
    fields |= {"zones", "instance_type", "labels"}  # unset, no default
    return sorted(own - fixed - fields)


def test_echo_truncate(env):
    env.sh(f"echo 'nodes = 2' > {SPEC}")
    assert read(env / SPEC) == "nodes = 2\n"


def test_printf_append(env):
    env.sh(f"printf 'nodes = 3\\n' >> {SPEC}")
    assert read(env / SPEC) == "accelerator = nvidia-t4\nnodes = 3\n"


def test_cat_heredoc(env):
    env.sh(f"cat > {SPEC} <<'EOF'\n# pool for training\n"
           "accelerator = nvidia-h100-80gb\nnodes = 2\nEOF")
    assert read(env / f"{RES}/accelerator") == "nvidia-h100-80gb\n"
    assert read(env / SPEC).startswith("# pool for training\n")


def test_cp_from_elsewhere(env, tmp_path):
    src = tmp_path / "new.spec"
    src.write_text("nodes = 5\n")
    env.sh(f"cp {src} {SPEC}")
    assert read(env / SPEC) == "nodes = 5\n"


def test_tee(env):
    env.sh(f"echo 'nodes = 6' | tee {SPEC} >/dev/null")
    assert read(env / f"{RES}/nodes") == "6\n"


def test_tee_of_a_bad_line_fails(env):
    res = env.sh(f"echo 'nodes = -1' | tee {SPEC}", check=False)
    assert res.returncode != 0
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


def test_sed_in_place(env):
    env.sh(f"sed -i 's/nvidia-t4/nvidia-l4/' {SPEC}")
    assert read(env / SPEC) == "accelerator = nvidia-l4\n"
    assert scratch_left(env) == []
    assert "update pools/train (accelerator)" in read(env / "dev/audit")


def test_sed_in_place_with_a_bad_result_keeps_the_spec(env):
    res = env.sh(f"sed -i 's/nvidia-t4/nvidia-t5/' {SPEC}", check=False)
    assert res.returncode != 0
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"


@pytest.mark.skipif(not have("ed"), reason="ed not installed")
def test_ed(env):
    env.sh(f"printf '1s/nvidia-t4/nvidia-a10g/\\n$a\\nnodes = 2\\n.\\nw\\nq\\n'"
           f" | ed -s {SPEC}")
    assert read(env / SPEC) == "accelerator = nvidia-a10g\nnodes = 2\n"


@pytest.mark.skipif(not have("vim"), reason="vim not installed")
def test_vim_with_default_settings(env):
    # -u DEFAULTS: vim's own defaults (swap file, writebackup), no vimrc.
    # The test mount lives under /tmp, which vim's default backupskip
    # exempts from backups; clearing it keeps the default backup path.
    env.sh(f"vim -u DEFAULTS -i NONE -es -c 'set backupskip=' "
           f"-c '%s/nvidia-t4/nvidia-a100-40gb/' -c 'wq' {SPEC}")
    assert read(env / SPEC) == "accelerator = nvidia-a100-40gb\n"
    assert scratch_left(env) == []
    assert revisions(env)[-1] == 3


@pytest.mark.skipif(not have("vim"), reason="vim not installed")
def test_vim_with_backup_and_rename(env):
    # backupcopy=no makes vim rename the original to spec~ and write a
    # new spec; `backup` keeps spec~ afterwards.
    env.sh(f"vim -u DEFAULTS -i NONE -es "
           f"-c 'set backupskip= backup backupcopy=no' "
           f"-c 'normal Gonodes = 2' -c 'wq' {SPEC}")
    assert read(env / SPEC) == "accelerator = nvidia-t4\nnodes = 2\n"
    # The backup vim keeps is a scratch file, never part of the spec.
    assert scratch_left(env) == ["spec~"]
    assert read(env / f"{RES}/spec~") == "accelerator = nvidia-t4\n"


def test_rename_away_then_write_new(env):
    """What emacs and vim (backupcopy=no) do: move the original aside,
    write a new file under the old name."""
    os.rename(env / SPEC, env / f"{SPEC}~")
    with open(env / SPEC, "w") as f:
        f.write("nodes = 9\n")
    assert read(env / SPEC) == "nodes = 9\n"
    assert read(env / f"{SPEC}~") == "accelerator = nvidia-t4\n"
    os.unlink(env / f"{SPEC}~")
    assert scratch_left(env) == []


def test_python_open_write_in_with_block(env):
    with open(env / SPEC, "w") as f:
        f.write("nodes = 7\n")
        f.write("labels.team = cv\n")
    assert status_of(env / f"{RES}/status")["revision"] == "3"
    assert read(env / f"{RES}/labels") == "team = cv\n"


@pytest.mark.skipif(not have("jq"), reason="jq not installed")
def test_jq_reads_status_json(env):
    res = env.sh(f"jq -r '.spec.accelerator + \" \" + .state' "
                 f"{RES}/status.json")
    assert res.stdout == "nvidia-t4 pending\n"


@pytest.mark.skipif(not have("jq"), reason="jq not installed")
def test_jq_to_tmp_then_mv_over_spec(env):
    env.sh(f"jq '.spec | .nodes = 3' {RES}/status.json > {RES}/tmp "
           f"&& mv {RES}/tmp {SPEC}")
    spec = json.loads(read(env / SPEC))
    assert spec["nodes"] == 3 and spec["accelerator"] == "nvidia-t4"
    assert read(env / f"{RES}/nodes") == "3\n"
    assert scratch_left(env) == []


@pytest.mark.skipif(not have("jq"), reason="jq not installed")
def test_mv_of_a_bad_file_over_spec_fails_and_keeps_both(env):
    res = env.sh(f"echo '{{\"nodes\": -2}}' > {RES}/tmp && mv {RES}/tmp {SPEC}",
                 check=False)
    assert res.returncode != 0
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    assert read(env / f"{RES}/tmp") == '{"nodes": -2}\n'


def test_scratch_files_behave_like_files(env):
    p = env / RES / ".notes.swp"
    with open(p, "w") as f:
        f.write("hello")
    with open(p, "r+") as f:
        f.seek(1)
        f.write("E")
    assert read(p) == "hEllo"
    os.truncate(p, 2)
    assert read(p) == "hE"
    os.rename(p, env / RES / "notes")
    assert read(env / RES / "notes") == "hE"
    assert "notes" in os.listdir(env / RES)
    os.chmod(env / RES / "notes", 0o600)
    assert os.stat(env / RES / "notes").st_mode & 0o777 == 0o600
    os.unlink(env / RES / "notes")
    assert "notes" not in os.listdir(env / RES)
    # None of it touched the spec.
    assert read(env / SPEC) == "accelerator = nvidia-t4\n"
    assert revisions(env) == [1, 2]


def test_unlinked_scratch_file_stays_readable_while_open(env):
    p = env / RES / "t"
    p.write_text("kept")
    with open(p) as f:
        os.unlink(p)
        assert f.read() == "kept"


def test_scratch_files_are_allowed_beside_config(env):
    env.sh("sed -i 's/approval = auto/approval = manual/' dev/config")
    assert "approval = manual" in read(env / "dev/config")
    assert sorted(os.listdir(env / "dev")) == sorted([
        "config", "policy", "plan", "plan.json", "ctl", "status", "events",
        "audit", "history", "pools", "endpoints", "secrets", "export"])


def test_writes_from_another_process_do_not_leak_between_handles(env):
    a = open(env / SPEC, "w")
    b = open(env / SPEC, "w")
    a.write("nodes = 2\n")
    b.write("nodes = 3\n")
    a.close()
    b.close()
    # Each close committed its own whole content; the last one won.
    assert read(env / SPEC) == "nodes = 3\n"
    infos = [read(env / f"dev/history/{r}/diff") for r in revisions(env)[-2:]]
    assert "+nodes = 2" in infos[0] and "+nodes = 3" in infos[1]


def test_concurrent_field_writers_lose_nothing(env):
    procs = [subprocess.Popen(["bash", "-c", f"echo {v} > {RES}/{f}"],
                              cwd=env.path)
             for f, v in [("nodes", "4"), ("capacity", "on-demand"),
                          ("zones", "a, b"), ("instance_type", "g5")]]
    assert all(p.wait() == 0 for p in procs)
    spec = read(env / SPEC)
    for line in ["nodes = 4", "capacity = on-demand", "zones = a, b",
                 "instance_type = g5", "accelerator = nvidia-t4"]:
        assert line in spec
    assert revisions(env)[-1] == 6
