"""Who may change what, with real users: the owner alice, bob in the
folder's group, carol outside it. Secrets are used only by whom the
policy allows, rollback and discard obey the same rules as edits, and
every file's mode says who may write it, so refusals come at open(2)."""
import os
import stat
import subprocess
import sys
import time

import pytest

from conftest import Mount, read, revisions, status_of, wait_for

USERS = ["tr-alice", "tr-bob", "tr-carol"]
GROUP = "tr-team"
SECRET_EP = ("command = exec sleep 1000\nreplicas = 0\n"
             "env.DB = secret:db\n")


def retry(cmd):
    """useradd and groupadd fail while another one holds their lock."""
    for _ in range(20):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0 or "lock" not in r.stderr:
            return r
        time.sleep(0.2)
    return r


@pytest.fixture
def users():
    for name in USERS:
        retry(["userdel", name])
    retry(["groupdel", GROUP])
    for name in USERS:
        assert retry(["useradd", "-M", name]).returncode == 0
    assert retry(["groupadd", GROUP]).returncode == 0
    for name in ["tr-alice", "tr-bob"]:
        assert retry(["usermod", "-aG", GROUP, name]).returncode == 0
    ids = {n.removeprefix("tr-"): int(subprocess.check_output(["id", "-u", n]))
           for n in USERS}
    ids["team"] = int(subprocess.check_output(
        ["getent", "group", GROUP]).split(b":")[2])
    yield ids
    for name in USERS:
        retry(["userdel", name])
    retry(["groupdel", GROUP])


class Trust:
    def __init__(self, m, ids):
        self.m, self.ids = m, ids

    def groups(self, who):
        return [self.ids["team"]] if who in ("alice", "bob") else []

    def run_argv(self, who, argv):
        """Runs argv as who, with their groups, in the mount's root."""
        uid = self.ids[who]
        groups = self.groups(who) + [uid]
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}",
               f"--groups={','.join(map(str, groups))}", *argv]
        return subprocess.run(cmd, cwd=self.m.path, capture_output=True,
                              text=True)

    def run(self, who, script):
        return self.run_argv(who, ["bash", "-c", script])

    def ok(self, who, script):
        r = self.run(who, script)
        assert r.returncode == 0, f"{who}: {script}: {r.stderr}"
        return r

    def refused(self, who, script):
        r = self.run(who, script)
        assert r.returncode != 0, f"{who} was allowed: {script}"
        assert "Permission denied" in r.stderr, r.stderr
        return r

    def audit(self):
        return read(self.m / "dev/audit").splitlines()


@pytest.fixture
def trust(tmp_path, users):
    m = Mount(tmp_path, extra=["-o", "allow_other"]).start()
    try:
        os.chmod(tmp_path, 0o755)
        m.sh("mkdir dev")
        os.chown(m / "dev", users["alice"], users["team"])
        os.chmod(m / "dev", 0o770)
        t = Trust(m, users)
        t.ok("alice", "printf s3cret > dev/secrets/db")
        yield t
    finally:
        m.stop()


def test_member_may_not_bring_a_secret_to_an_endpoint(trust):
    t = trust
    t.ok("bob", "mkdir dev/endpoints/leak")
    # /usr/bin/printf reports what close(2) says; bash's builtin does not.
    t.refused("bob", f"/usr/bin/printf '{SECRET_EP}' > "
              "dev/endpoints/leak/spec")
    error = status_of(t.m / "dev/endpoints/leak/status")["last_error"]
    assert "policy secrets_use" in error and "only the owner of dev" in error
    last = t.audit()[-1]
    assert "rev=-" in last and f"uid={t.ids['bob']}" in last
    assert "refused: policy secrets_use" in last
    assert read(t.m / "dev/endpoints/leak/spec") == ""
    # The owner may; then the policy opens it to the group.
    t.ok("alice", f"/usr/bin/printf '{SECRET_EP}' > "
         "dev/endpoints/leak/spec")
    assert read(t.m / "dev/endpoints/leak/spec") == SECRET_EP
    t.ok("alice", "mkdir dev/endpoints/two")
    t.ok("alice", "echo 'secrets_use = group' >> dev/policy")
    t.ok("bob", f"/usr/bin/printf '{SECRET_EP}' > dev/endpoints/two/spec")
    assert read(t.m / "dev/endpoints/two/spec") == SECRET_EP
    # The group may now set secrets too, and the modes say so.
    assert stat.S_IMODE(os.stat(t.m / "dev/secrets/db").st_mode) == 0o220
    t.ok("bob", "/usr/bin/printf v2 > dev/secrets/db")
    assert "set secret db (version 2)" in t.audit()[-1]


def test_secrets_use_is_shown_in_the_policy_kind(trust):
    doc = read(trust.m / "kinds/policy")
    assert "secrets_use" in doc and "owner" in doc and "group" in doc


def test_member_may_not_change_what_a_secret_using_endpoint_runs(trust):
    t = trust
    t.ok("alice", "mkdir dev/endpoints/api && "
         f"printf '{SECRET_EP}' > dev/endpoints/api/spec")
    ep = "dev/endpoints/api"
    new_command = SECRET_EP.replace("sleep 1000", "echo $DB > /tmp/leak")
    t.refused("bob", f"/usr/bin/printf '{new_command}' > {ep}/spec")
    assert "policy secrets_use" in status_of(t.m / ep / "status")[
        "last_error"]
    # The field files that reach the secret refuse at open(2).
    for field in ["command", "image", "env"]:
        mode = stat.S_IMODE(os.stat(t.m / ep / field).st_mode)
        assert mode & 0o022 == 0, (field, oct(mode))
    t.refused("bob", f"echo 'echo $DB > /tmp/leak' > {ep}/command")
    t.refused("bob", f"echo 'DB = secret:db' > {ep}/env")
    assert read(t.m / ep / "spec") == SECRET_EP
    # What does not reach the secret stays the group's.
    t.ok("bob", f"echo 2 > {ep}/replicas")
    assert "replicas = 2" in read(t.m / ep / "spec")


def test_member_may_not_replace_a_secret_by_rename(trust):
    t = trust
    before = os.stat(t.m / "dev/secrets/db").st_mtime_ns
    lines = len(t.audit())
    t.refused("bob", "printf stolen > dev/tmp && mv -f dev/tmp dev/secrets/db")
    assert os.stat(t.m / "dev/secrets/db").st_mtime_ns == before
    # Refused by the rename itself, before the store had to: no refusal
    # of the store's in the audit, and no new version.
    assert t.audit()[lines:] == []
    # The same holds for the other files a rename may land on.
    for target in ["policy", "config"]:
        t.refused("bob", f"printf 'x = 1\\n' > dev/tmp && "
                  f"mv -f dev/tmp dev/{target}")
    assert "x = 1" not in read(t.m / "dev/policy") + read(t.m / "dev/config")
    # Writing it directly is refused at open, as its mode says.
    assert stat.S_IMODE(os.stat(t.m / "dev/secrets/db").st_mode) == 0o200
    t.refused("bob", "printf stolen > dev/secrets/db")
    t.refused("bob", "printf mine > dev/secrets/other")


def test_member_rollback_that_changes_policy_is_refused(trust):
    t = trust
    t.ok("alice", "echo 'max_nodes_per_pool = 10' >> dev/policy")
    policy = read(t.m / "dev/policy")
    revs = revisions(t.m)
    t.refused("bob", "echo 'rollback 1' > dev/ctl")
    assert read(t.m / "dev/policy") == policy
    assert revisions(t.m) == revs
    error = status_of(t.m / "dev/status")["last_error"]
    assert "rollback 1" in error and "only the owner of dev" in error
    assert "rev=-" in t.audit()[-1] and "policy" in t.audit()[-1]
    # The owner may.
    t.ok("alice", "echo 'rollback 1' > dev/ctl")
    assert "max_nodes_per_pool =" not in read(t.m / "dev/policy")


def test_member_discard_that_changes_config_or_policy_is_refused(trust):
    t = trust
    t.ok("alice", "mkdir dev/pools/base && "
         "echo 'nodes = 0' > dev/pools/base/spec")
    applied = str(revisions(t.m)[-1])
    wait_for(lambda: status_of(t.m / "dev/status")["applied_revision"]
             == applied, 10, "the pool applied")
    t.ok("alice", "echo 'approval = manual' >> dev/config")
    t.ok("bob", "mkdir dev/pools/p && echo 'nodes = 0' > dev/pools/p/spec")
    t.ok("alice", "echo 'max_nodes_per_pool = 10' >> dev/policy")
    policy = read(t.m / "dev/policy")
    t.refused("bob", "echo discard > dev/ctl")
    assert read(t.m / "dev/policy") == policy
    assert sorted(os.listdir(t.m / "dev/pools")) == ["base", "p"]
    error = status_of(t.m / "dev/status")["last_error"]
    assert "ctl discard" in error and "only the owner of dev" in error


def test_member_rollback_may_not_bring_back_a_secret(trust):
    t = trust
    t.ok("alice", "mkdir dev/endpoints/api && "
         f"printf '{SECRET_EP}' > dev/endpoints/api/spec")
    secret_rev = revisions(t.m)[-1]
    t.ok("alice", "echo 'command = exec sleep 1000' > dev/endpoints/api/spec")
    t.refused("bob", f"echo 'rollback {secret_rev}' > dev/ctl")
    assert "secret" not in read(t.m / "dev/endpoints/api/spec")
    assert "secrets_use" in status_of(t.m / "dev/status")["last_error"]


def test_member_rollback_of_a_protected_resource_waits_for_approval(trust):
    t = trust
    t.ok("alice", "echo 'protect = destroy' >> dev/policy")
    protected_rev = revisions(t.m)[-1]
    t.ok("bob", "mkdir dev/pools/keep && "
         "echo 'nodes = 0' > dev/pools/keep/spec")
    t.ok("bob", f"echo 'rollback {protected_rev}' > dev/ctl")
    wait_for(lambda: "- destroy pools/keep" in read(t.m / "dev/plan"), 10,
             "the destroy in the plan")
    time.sleep(1)
    assert os.listdir(t.m / "dev/pools") == ["keep"]
    assert "destroy requested" in read(t.m / "dev/pools/keep/events")
    t.refused("bob", "echo approve > dev/ctl")
    t.ok("alice", "echo approve > dev/ctl")
    wait_for(lambda: not os.listdir(t.m / "dev/pools"), 10, "the destroy")


def test_policy_write_by_member_fails_at_open(trust):
    t = trust
    for target in ["policy", "config"]:
        mode = stat.S_IMODE(os.stat(t.m / "dev" / target).st_mode)
        assert mode == 0o640, oct(mode)
        t.refused("bob", f"sh -c 'echo max_accelerators = 1 > "
                  f"dev/{target}'")
    assert "max_accelerators =" not in read(t.m / "dev/policy")


def can_write(st, uid, gids):
    if st.st_uid == uid:
        return bool(st.st_mode & 0o200)
    if st.st_gid in gids:
        return bool(st.st_mode & 0o020)
    return bool(st.st_mode & 0o002)


WRITE = """import sys
with open(sys.argv[1], "wb") as f:
    f.write(sys.argv[2].encode())
"""


def test_modes_say_who_may_write_each_file(trust):
    """For every file of an environment: a member's and an outsider's
    write succeeds exactly when the mode says they may write."""
    t = trust
    os.chmod(t.m / "dev", 0o775)
    t.ok("alice", "mkdir dev/pools/p dev/endpoints/api dev/endpoints/web && "
         "echo 'nodes = 0' > dev/pools/p/spec && "
         f"printf '{SECRET_EP}' > dev/endpoints/api/spec && "
         "printf 'command = exec sleep 1000\\nreplicas = 0\\n' > "
         "dev/endpoints/web/spec")
    assert read(t.m / "dev/endpoints/api/spec") == SECRET_EP
    # Relative paths: the users may not pass the folders above the mount.
    files = []
    for root, dirs, names in os.walk(t.m / "dev"):
        files += [os.path.relpath(os.path.join(root, n), t.m.path)
                  for n in names]
    assert len(files) > 60
    for who in ["bob", "carol"]:
        uid = t.ids[who]
        for path in files:
            st = os.stat(t.m / path)
            name = os.path.basename(path)
            if name == "ctl":
                text = "refresh\n"
            elif "/secrets/" in path:
                text = "v"
            elif st.st_mode & 0o444:
                text = read(t.m / path)
            else:
                text = "x"
            r = t.run_argv(who, [sys.executable, "-c", WRITE, path, text])
            want = can_write(st, uid, set(t.groups(who) + [uid]))
            assert (r.returncode == 0) == want, \
                (who, path, oct(st.st_mode), r.stderr)


def test_chown_owner_and_group_is_one_revision(trust):
    t = trust
    t.m.sh("mkdir qa")
    revs, lines = revisions(t.m, "qa"), read(t.m / "qa/audit").splitlines()
    t.m.sh(f"chown tr-alice:{GROUP} qa")
    assert len(revisions(t.m, "qa")) == len(revs) + 1
    new = read(t.m / "qa/audit").splitlines()[len(lines):]
    assert len(new) == 1 and f"set owner {t.ids['alice']}, group " \
        f"{t.ids['team']}" in new[0]
    # Only root gives a folder away; its owner may change its group only
    # to one they are in.
    r = t.run("bob", "chown tr-bob dev")
    assert r.returncode != 0 and "not permitted" in r.stderr
    r = t.run("alice", "chown tr-bob dev")
    assert r.returncode != 0 and "not permitted" in r.stderr
    r = t.run("alice", "chgrp tr-carol dev")
    assert r.returncode != 0 and "not permitted" in r.stderr
    t.ok("alice", "chgrp tr-alice dev")
    st = os.stat(t.m / "dev")
    assert (st.st_uid, st.st_gid) == (t.ids["alice"], t.ids["alice"])
