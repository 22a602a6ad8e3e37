"""A folder as the source of an environment: `source = PATH` in config makes
the environment follow a Git work tree, one revision per burst of
changes, with real git, cp and rm."""
import errno
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import read, status_of, wait_for

EP = "command = exec sleep 1000\nreplicas = 0\n"
MANY = 1000  # files one git checkout changes


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t",
                    "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True, text=True)


def head(repo):
    return subprocess.check_output(["git", "-C", str(repo), "rev-parse",
                                    "HEAD"], text=True).strip()


def put(repo, rel, text):
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def pools(m, env="dev"):
    return sorted(os.listdir(m / env / "pools"))


def rev(m, env="dev"):
    """The newest revision, from status: a listing of history/ may be
    one the kernel cached a moment ago."""
    return int(status_of(m / env / "status")["revision"])


def last_error(m, env="dev"):
    return status_of(m / env / "status")["last_error"]


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    put(r, "pools/train/spec", "nodes = 0\n")
    put(r, "endpoints/chat/spec", EP)
    git(r, "add", "-A")
    git(r, "commit", "-q", "-m", "first")
    return r


@pytest.fixture
def follows(mnt, repo):
    """dev following repo, synced once."""
    mnt.sh(f"mkdir dev && echo 'source = {repo}' >> dev/config")
    wait_for(lambda: pools(mnt) == ["train"], 20, "the first sync")
    return mnt


def test_the_environment_becomes_the_folder(follows, repo):
    m = follows
    assert read(m / "dev/pools/train/spec") == "nodes = 0\n"
    assert read(m / "dev/endpoints/chat/spec") == EP
    commit = head(repo)
    wait_for(lambda: "sync from" in read(m / "dev/audit"), 10, "the audit")
    last = read(m / "dev/audit").splitlines()[-1]
    assert f"sync from {repo} at commit {commit[:7]}: first (2 changes)" \
        in last
    assert "comm=infrafs-source" in last
    assert status_of(m / "dev/status")["source"] == \
        f"managed by {repo} (commit {commit[:7]})"
    # A new commit is a new revision, audited with its id.
    put(repo, "pools/train/spec", "nodes = 1\n")
    git(repo, "commit", "-q", "-am", "grow")
    wait_for(lambda: read(m / "dev/pools/train/spec") == "nodes = 1\n", 20,
             "the change")
    wait_for(lambda: head(repo)[:7] in
             status_of(m / "dev/status")["source"], 20, "the new commit")
    # Branches packed into packed-refs, and a detached HEAD, name it too.
    git(repo, "pack-refs", "--all")
    put(repo, "pools/train/spec", "nodes = 2\n")
    git(repo, "commit", "-q", "-am", "packed")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    put(repo, "pools/packed/spec", "nodes = 0\n")
    wait_for(lambda: "packed" in os.listdir(m / "dev/pools"), 20, "a sync")
    assert head(repo)[:7] in status_of(m / "dev/status")["source"]
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    wait_for(lambda: head(repo)[:7] in
             status_of(m / "dev/status")["source"], 20, "the detached HEAD")
    wait_for(lambda: f"at commit {head(repo)[:7]}: grow (" in
             read(m / "dev/audit"), 10, "the subject of a loose commit")
    # After git gc every object is in a pack: the subject is read there.
    git(repo, "checkout", "-q", "main")
    put(repo, "pools/train/spec", "nodes = 3\n")
    git(repo, "commit", "-q", "-am", "from a pack\x07 with a bell\n\nbody")
    git(repo, "gc", "-q", "--prune=now")
    assert not any(p.name != "pack" and p.name != "info"
                   for p in (repo / ".git/objects").iterdir())
    put(repo, "pools/gc/spec", "nodes = 0\n")
    wait_for(lambda: "gc" in os.listdir(m / "dev/pools"), 20, "a sync")
    wait_for(lambda: f"at commit {head(repo)[:7]}: from a pack\\x07 with a "
             "bell (" in read(m / "dev/audit"), 10,
             "the subject from the pack, its control character escaped")
    # Only an absolute path is a source.
    res = m.sh("sed -i 's|^source = .*|source = repo|' dev/config",
               check=False)
    assert res.returncode != 0
    assert "source: repo is not an absolute path" in last_error(m)


def test_a_checkout_of_many_files_is_one_revision(follows, repo):
    m = follows
    git(repo, "checkout", "-q", "-b", "big")
    for i in range(MANY):
        put(repo, f"pools/p{i:04}/spec", f"nodes = 0\n# {i}\n")
    shutil.rmtree(repo / "endpoints")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many")
    wait_for(lambda: len(pools(m)) == MANY + 1, 60, "the branch synced")
    git(repo, "checkout", "-q", "main")
    wait_for(lambda: pools(m) == ["train"], 30, "main again")
    before = rev(m)
    git(repo, "checkout", "-q", "big")
    wait_for(lambda: len(pools(m)) == MANY + 1 and
             not os.listdir(m / "dev/endpoints"), 60, "the checkout synced")
    assert rev(m) == before + 1
    # The revision is durable once its audit line shows.
    done = f"at commit {head(repo)[:7]}: many ({MANY + 1} changes)"
    wait_for(lambda: done in read(m / "dev/audit").splitlines()[-1], 10,
             "the audit")
    info = read(m / f"dev/history/{before + 1}/info")
    assert f"({MANY + 1} changes)" in info and head(repo)[:7] in info


def test_a_sync_killed_midway_is_all_or_nothing(follows, repo):
    """SIGKILL of the daemon while it applies a checkout of MANY files:
    every revision holds the old folder or the new one, never part, and
    the restarted daemon converges on the folder."""
    m = follows
    git(repo, "checkout", "-q", "-b", "big")
    for i in range(MANY):
        put(repo, f"pools/p{i:04}/spec", "nodes = 0\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "many")
    git(repo, "checkout", "-q", "main")
    before = rev(m)
    for delay in (0.30, 0.45, 0.6):
        git(repo, "checkout", "-q", "big")
        time.sleep(delay)
        m.kill()
        m.start()
        wait_for(lambda: len(pools(m)) == MANY + 1, 60, "the new folder")
        git(repo, "checkout", "-q", "main")
        wait_for(lambda: pools(m) == ["train"], 60, "the old folder")
    last = rev(m)
    # status shows a revision as soon as it is accepted; history/ only
    # once it is durable, a moment later.
    wait_for(lambda: (m / f"dev/history/{last}/pools").is_dir(), 10,
             f"revision {last} durable")
    for r in range(before + 1, last + 1):
        held = os.listdir(m / f"dev/history/{r}/pools")
        assert len(held) in (1, MANY + 1), (r, len(held))


def test_cp_of_a_folder_into_the_source_is_followed(follows, repo, tmp_path):
    m = follows
    other = tmp_path / "other"
    put(other, "pools/copied/spec", "nodes = 0\n")
    subprocess.run(["cp", "-r", str(other / "pools/copied"),
                    str(repo / "pools/")], check=True)
    wait_for(lambda: pools(m) == ["copied", "train"], 20, "the copy")
    # A rename into place, as editors and git do.
    put(repo, "pools/copied/spec.tmp", "nodes = 0\nmin_nodes = 0\n")
    os.rename(repo / "pools/copied/spec.tmp", repo / "pools/copied/spec")
    wait_for(lambda: "min_nodes" in read(m / "dev/pools/copied/spec"), 20,
             "the renamed spec")


def test_a_bad_folder_is_refused_whole(follows, repo):
    m = follows
    good = rev(m)
    put(repo, "pools/more/spec", "nodes = 0\n")
    put(repo, "pools/bad/spec", "nodes = 0\nnodes = lots\n")
    wait_for(lambda: "pools/bad/spec" in last_error(m), 20, "the refusal")
    why = last_error(m)
    assert why.startswith(f"source {repo}: pools/bad/spec: line 2"), why
    assert pools(m) == ["train"] and rev(m) == good
    assert "sync refused" in read(m / "dev/events")
    wait_for(lambda: "rev=-" in read(m / "dev/audit").splitlines()[-1], 10,
             "the refusal audited")
    # A layout the reader refuses, with its path.
    shutil.rmtree(repo / "pools/bad")
    put(repo, "pool/typo/spec", "nodes = 0\n")
    wait_for(lambda: "pool" in last_error(m) and
             "pools/bad" not in last_error(m), 20, "the layout refusal")
    assert pools(m) == ["train"]
    # Fixed, it lands.
    shutil.rmtree(repo / "pool")
    wait_for(lambda: pools(m) == ["more", "train"], 20,
             "the fixed folder: " + last_error(m))


def test_a_policy_breach_or_missing_secret_is_refused(follows, repo):
    m = follows
    m.sh("echo 'allowed_accelerators = nvidia-a10g' >> dev/policy")
    put(repo, "pools/gpu/spec", "accelerator = nvidia-t4\nnodes = 0\n")
    wait_for(lambda: "policy allowed_accelerators" in last_error(m), 20,
             "the policy refusal")
    assert "pools/gpu/spec" in last_error(m)
    assert pools(m) == ["train"]
    os.remove(repo / "pools/gpu/spec")
    os.rmdir(repo / "pools/gpu")
    put(repo, "endpoints/chat/spec", EP + "env.TOKEN = secret:tok\n")
    wait_for(lambda: "no secret named" in last_error(m), 20,
             "the secret refusal")
    assert "endpoints/chat/spec: line 3" in last_error(m)
    m.sh("printf v > dev/secrets/tok")
    put(repo, "endpoints/chat/spec", EP + "env.TOKEN = secret:tok\n")
    wait_for(lambda: "secret:tok" in read(m / "dev/endpoints/chat/spec"), 20,
             "the endpoint with its secret")


def test_the_mount_refuses_spec_changes_while_managed(follows, repo):
    m = follows
    with pytest.raises(OSError) as e:
        with open(m / "dev/pools/train/spec", "w") as f:
            f.write("nodes = 3\n")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.mkdir(m / "dev/pools/new")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        with open(m / "dev/pools/train/nodes", "a") as f:
            f.write("3\n")
    assert e.value.errno == errno.EROFS
    # Refused at open: O_TRUNC emptied nothing.
    assert read(m / "dev/pools/train/spec") == "nodes = 0\n"
    assert re.fullmatch(rf"managed by {repo} \(commit [0-9a-f]{{7}}\)",
                        status_of(m / "dev/status")["source"])
    # A rename of an editor's temporary file is refused at commit.
    (m / "dev/pools/train/.spec.swp").write_text("nodes = 4\n")
    with pytest.raises(OSError) as e:
        os.rename(m / "dev/pools/train/.spec.swp", m / "dev/pools/train/spec")
    assert e.value.errno == errno.EROFS
    assert read(m / "dev/pools/train/spec") == "nodes = 0\n"
    why = status_of(m / "dev/pools/train/status")["last_error"]
    assert re.search(rf"managed by {repo} \(commit [0-9a-f]{{7}}\)", why)
    res = m.sh("echo 'rollback 1' > dev/ctl", check=False)
    assert res.returncode != 0 and "Read-only" in res.stderr
    assert "managed by" in last_error(m)
    m.sh("mkdir other")
    res = m.sh("echo 'promote other' > dev/ctl", check=False)
    assert res.returncode != 0 and "Read-only" in res.stderr
    assert pools(m) == ["train"]
    m.sh("echo refresh > dev/ctl && echo apply > dev/ctl")


def test_unsetting_source_stops_following_and_changes_nothing(follows, repo):
    m = follows
    m.sh("sed -i '/^source = /d' dev/config")
    revs = rev(m)
    assert "source" not in status_of(m / "dev/status")
    put(repo, "pools/later/spec", "nodes = 0\n")
    time.sleep(1.5)
    assert pools(m) == ["train"] and rev(m) == revs
    # The mount takes changes again.
    m.sh("echo 'nodes = 2' > dev/pools/train/spec")


def test_removing_the_folder_changes_nothing(follows, repo):
    m = follows
    revs = rev(m)
    shutil.rmtree(repo)
    wait_for(lambda: "cannot open it" in last_error(m), 20, "the note")
    assert pools(m) == ["train"] and rev(m) == revs


def test_the_folder_is_read_with_the_owners_authority(follows, repo,
                                                      tmp_path):
    """The owner of dev may not read a folder only root reads: the daemon,
    root, does not read it for them."""
    m = follows
    secret = tmp_path / "private"
    put(secret, "pools/hidden/spec", "nodes = 0\n")
    os.chmod(secret, 0o700)
    os.chown(m / "dev", 65534, 65534)
    # Root sets the source; the owner's authority reads it.
    m.sh(f"sed -i 's|^source = .*|source = {secret}|' dev/config")
    wait_for(lambda: "cannot open it as uid 65534" in last_error(m), 20,
             "the refusal")
    assert pools(m) == ["train"]


def test_a_folder_the_owner_may_read_is_followed_as_them(mnt):
    # pytest's folders are root's alone: this one is open to all.
    top = tempfile.mkdtemp(prefix="infrafs-source-")
    try:
        os.chmod(top, 0o755)
        repo = Path(top)
        put(repo, "pools/train/spec", "nodes = 0\n")
        subprocess.run(["chmod", "-R", "a+rX", top], check=True)
        mnt.sh("mkdir dev")
        os.chown(mnt / "dev", 65534, 65534)
        mnt.sh(f"echo 'source = {repo}' >> dev/config")
        wait_for(lambda: pools(mnt) == ["train"], 20, "the first sync")
        wait_for(lambda: "uid=65534" in read(mnt / "dev/audit"), 10,
                 "the audit line")
        # Its watches work under the owner's credentials too.
        put(repo, "pools/more/spec", "nodes = 0\n")
        wait_for(lambda: pools(mnt) == ["more", "train"], 20, "the change")
    finally:
        shutil.rmtree(top)
