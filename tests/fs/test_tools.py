"""infrafs-wait and infrafs-plan, run against plain temporary folders.

The tools only read files, so no mount is needed: a folder holding
`state` and `status` stands in for a resource folder, one holding `plan`
and `plan.json` for an environment, and a thread plays the daemon by
changing them over time.
"""
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
WAIT = TOOLS / "infrafs-wait"
PLAN = TOOLS / "infrafs-plan"



@pytest.fixture(autouse=True)
def tools_built():
    """The build makes both tools; a missing one is a failure, not a skip."""
    assert WAIT.exists() and PLAN.exists(), f"tools not built in {TOOLS}"

# Fast polling keeps the suite quick; the defaults get their own test.
FAST = ["--interval", "10"]


def write_atomic(path, text):
    """Writes as the daemon's renders appear: never half a file."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def set_state(res, state, last_error=""):
    # status first, so that a reader seeing `failed` finds its reason.
    write_atomic(res / "status",
                 f"state: {state}\nsynced: no\nlast_error: {last_error}\n"
                 "observed_at: 2026-11-28T10:00:00Z\nrevision: 3\n")
    write_atomic(res / "state", state + "\n")


@contextlib.contextmanager
def daemon(*steps):
    """Runs (delay_s, action) steps in order in a thread, as the daemon
    would change files while a tool watches."""
    errors = []

    def run():
        try:
            for delay, action in steps:
                time.sleep(delay)
                action()
        except Exception as e:  # reported in the test, not lost
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        t.join(10)
    assert not errors, errors


def to(res, state, last_error=""):
    return lambda: set_state(res, state, last_error)


def run(tool, *args, cwd=None):
    start = time.monotonic()
    res = subprocess.run([str(tool), *map(str, args)], capture_output=True,
                         text=True, timeout=30, cwd=cwd)
    res.elapsed = time.monotonic() - start
    return res


@pytest.fixture
def res(tmp_path):
    """A resource folder dev/endpoints/chat, pending."""
    d = tmp_path / "dev" / "endpoints" / "chat"
    d.mkdir(parents=True)
    set_state(d, "pending")
    return d


# infrafs-wait


def test_wait_already_there(res):
    set_state(res, "ready")
    r = run(WAIT, res, "ready")
    assert (r.returncode, r.stderr, r.stdout) == (0, "chat: ready\n", "")


def test_wait_prints_each_change(res):
    with daemon((0.3, to(res, "creating")), (0.3, to(res, "ready"))):
        r = run(WAIT, res, "ready", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["chat: pending", "chat: creating",
                                     "chat: ready"]
    assert r.elapsed >= 0.5


def test_wait_quiet(res):
    with daemon((0.2, to(res, "creating")), (0.2, to(res, "ready"))):
        r = run(WAIT, res, "ready", "--quiet", *FAST)
    assert (r.returncode, r.stderr) == (0, "")


def test_wait_defaults(res):
    """No options: 100 ms polling, 300 s timeout."""
    with daemon((0.3, to(res, "creating")), (0.3, to(res, "ready"))):
        r = run(WAIT, res, "ready")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1] == "chat: ready"


def test_wait_any_of_several(res):
    with daemon((0.2, to(res, "creating")), (0.2, to(res, "degraded"))):
        r = run(WAIT, res, "ready,degraded", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["chat: pending", "chat: creating",
                                     "chat: degraded"]


def test_wait_failed(res):
    why = "quota exceeded: 8 accelerators > max_accelerators 4"
    with daemon((0.2, to(res, "creating")), (0.2, to(res, "failed", why))):
        r = run(WAIT, res, "ready", *FAST)
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["chat: pending", "chat: creating",
                                     "chat: failed", f"chat failed: {why}"]


def test_wait_failed_quiet(res):
    with daemon((0.2, to(res, "failed", "image not found"))):
        r = run(WAIT, res, "ready,degraded", "-q", *FAST)
    assert (r.returncode, r.stderr) == (1, "chat failed: image not found\n")


def test_wait_failed_without_last_error(res):
    set_state(res, "failed")
    r = run(WAIT, res, "ready", "-q")
    assert r.returncode == 1
    assert r.stderr.startswith("chat failed: ")
    assert "last_error" in r.stderr and "status" in r.stderr


def test_wait_failed_status_unreadable(res):
    set_state(res, "failed", "boom")
    (res / "status").unlink()
    r = run(WAIT, res, "ready", "-q")
    assert r.returncode == 1
    assert r.stderr.startswith("chat failed: ")
    assert f"{res}/status" in r.stderr


def test_wait_already_failed(res):
    set_state(res, "failed", "bad spec: line 2: nodes")
    r = run(WAIT, res, "ready", "-q")
    assert (r.returncode, r.stderr) == (1, "chat failed: bad spec: line 2: nodes\n")
    assert r.elapsed < 5


def test_wait_for_failed_is_success(res):
    with daemon((0.2, to(res, "failed", "boom"))):
        r = run(WAIT, res, "failed", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1] == "chat: failed"


def test_wait_timeout(res):
    set_state(res, "creating")
    r = run(WAIT, res, "ready", "--timeout", "0.3", *FAST)
    assert r.returncode == 2
    assert "timed out" in r.stderr
    assert "state is creating" in r.stderr
    assert 0.25 <= r.elapsed < 5


def test_wait_timeout_reports_last_state(res):
    with daemon((0.1, to(res, "creating")), (0.1, to(res, "updating"))):
        r = run(WAIT, res, "ready", "--timeout", "0.6", "-q", *FAST)
    assert r.returncode == 2
    assert "state is updating" in r.stderr


def test_wait_timeout_shorter_than_interval(res):
    """The last sleep is cut to the deadline, not a whole interval."""
    r = run(WAIT, res, "ready", "--timeout", "0.2", "--interval", "10000")
    assert r.returncode == 2
    assert "state is pending" in r.stderr
    assert r.elapsed < 5


def test_wait_timeout_zero_waits(res):
    """--timeout 0 never gives up; here the resource comes up after 1 s."""
    with daemon((1.0, to(res, "ready"))):
        r = run(WAIT, res, "ready", "--timeout", "0", *FAST)
    assert r.returncode == 0, r.stderr
    assert r.elapsed >= 0.9


def test_wait_interval_is_honoured(res):
    """With a long interval the change is seen at the next poll only."""
    with daemon((0.1, to(res, "ready"))):
        r = run(WAIT, res, "ready", "--interval", "1000")
    assert r.returncode == 0, r.stderr
    assert r.elapsed >= 0.9


def test_wait_folder_vanishes(res):
    # On the mount rmdir takes the folder and its files at once; here a
    # rename does, where rmtree would leave the folder a moment longer.
    gone = res.with_name("gone")
    with daemon((0.2, to(res, "deleting")),
                (0.2, lambda: (os.rename(res, gone), shutil.rmtree(gone)))):
        r = run(WAIT, res, "ready", *FAST)
    assert r.returncode == 3
    assert r.stderr.splitlines()[:2] == ["chat: pending", "chat: deleting"]
    assert f"{res} vanished" in r.stderr
    assert "last state: deleting" in r.stderr


def test_wait_folder_missing(tmp_path):
    missing = tmp_path / "dev" / "pools" / "nope"
    r = run(WAIT, missing, "ready", "-q")
    assert r.returncode == 3
    assert f"{missing}/state" in r.stderr
    assert "No such file or directory" in r.stderr


def test_wait_not_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("ready\n")
    r = run(WAIT, f, "ready")
    assert r.returncode == 3
    assert f"{f}/state" in r.stderr and "Not a directory" in r.stderr


def test_wait_state_unreadable(res):
    """The state file turns into something read(2) refuses. The swap is
    one rename(2) of a link to a folder: an unlink then a mkdir left a
    moment with no file at all, and a read then said ENOENT instead."""
    def break_state():
        (res / "folder").mkdir()
        (res / "state.new").symlink_to(res / "folder")
        os.replace(res / "state.new", res / "state")

    with daemon((0.2, break_state)):
        r = run(WAIT, res, "ready", *FAST)
    assert r.returncode == 3
    assert f"{res}/state" in r.stderr and "Is a directory" in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode 0 files")
def test_wait_state_permission(res):
    (res / "state").chmod(0)
    r = run(WAIT, res, "ready")
    assert r.returncode == 3
    assert "Permission denied" in r.stderr


def test_wait_name_from_trailing_slash(res):
    set_state(res, "ready")
    r = run(WAIT, f"{res}/", "ready")
    assert (r.returncode, r.stderr) == (0, "chat: ready\n")


def test_wait_name_of_dot(res):
    set_state(res, "ready")
    r = run(WAIT, ".", "ready", cwd=res)
    assert (r.returncode, r.stderr) == (0, "chat: ready\n")


def test_wait_state_without_newline(res):
    (res / "state").write_text("  ready")
    r = run(WAIT, res, "ready", "-q")
    assert r.returncode == 0, r.stderr


def test_wait_empty_state_is_transient(res):
    """An empty read (a writer between truncate and write) is not a state."""
    (res / "state").write_text("")
    with daemon((0.2, to(res, "ready"))):
        r = run(WAIT, res, "ready", *FAST)
    assert (r.returncode, r.stderr) == (0, "chat: ready\n")


def test_wait_timeout_while_empty(res):
    (res / "state").write_text("")
    r = run(WAIT, res, "ready", "--timeout", "0.1", *FAST)
    assert r.returncode == 2
    assert "state is (empty)" in r.stderr


@pytest.mark.parametrize("args", [
    [],
    ["RES"],
    ["RES", "running"],
    ["RES", "Ready"],
    ["RES", ""],
    ["RES", "ready,"],
    ["RES", ",ready"],
    ["RES", "ready,,failed"],
    ["RES", "ready,runing"],
    ["RES", "ready", "extra"],
    ["RES", "ready", "--timeout", "-1"],
    ["RES", "ready", "--timeout", "abc"],
    ["RES", "ready", "--timeout", ""],
    ["RES", "ready", "--timeout", "inf"],
    ["RES", "ready", "--timeout", "nan"],
    ["RES", "ready", "--timeout", "5s"],
    ["RES", "ready", "--timeout"],
    ["RES", "ready", "--interval", "0"],
    ["RES", "ready", "--interval", "1.5"],
    ["RES", "ready", "--interval", "-10"],
    ["RES", "ready", "--interval", "99999999999999999999"],
    ["RES", "ready", "--bogus"],
    ["RES", "ready", "-x"],
    ["", "ready"],
])
def test_wait_usage(res, args):
    set_state(res, "ready")  # so that only the arguments are wrong
    r = run(WAIT, *[str(res) if a == "RES" else a for a in args])
    assert r.returncode == 64, r.stderr
    assert r.stderr.strip()
    assert "--help" in r.stderr


def test_wait_unknown_state_named(res):
    r = run(WAIT, res, "ready,runing")
    assert r.returncode == 64
    assert "'runing'" in r.stderr and "degraded" in r.stderr


def test_wait_usage_before_reading(tmp_path):
    """A bad STATE is a usage error even when the folder is missing."""
    r = run(WAIT, tmp_path / "missing", "running")
    assert r.returncode == 64


def test_wait_every_state_word(res):
    words = ["pending", "creating", "ready", "updating", "degraded",
             "failed", "deleting"]
    for w in words:
        set_state(res, w)
        r = run(WAIT, res, w, "-q", "--timeout", "5")
        assert r.returncode == 0, (w, r.stderr)
    r = run(WAIT, res, ",".join(words), "-q", "--timeout", "5")
    assert r.returncode == 0, r.stderr


def test_wait_help():
    r = run(WAIT, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: infrafs-wait")


# infrafs-plan

NOTHING = {"environment": "dev", "plan": None, "approval": "manual",
           "steps": []}
PENDING = {"environment": "dev", "plan": 3, "approval": "manual",
           "steps": [{"action": "create", "kind": "pool", "name": "train",
                      "path": "pools/train",
                      "changes": [{"field": "replicas", "from": "1",
                                   "to": "3"}]}]}
PENDING_TEXT = ("plan 3 (approval: manual)\n"
                "  + create pool train\n"
                "      replicas: 1 -> 3\n")


@pytest.fixture
def envdir(tmp_path):
    """An environment folder dev with nothing pending."""
    d = tmp_path / "dev"
    d.mkdir()
    set_plan(d, "", NOTHING)
    return d


def set_plan(d, text, plan, raw=None):
    (d / "plan").write_text(text)
    (d / "plan.json").write_text(raw if raw is not None else
                                 json.dumps(plan, indent=2) + "\n")


def test_plan_nothing_pending(envdir):
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def test_plan_pending(envdir):
    set_plan(envdir, PENDING_TEXT, PENDING)
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout, r.stderr) == (2, PENDING_TEXT, "")


def test_plan_json_as_is(envdir):
    # Odd spacing and key order must come back untouched.
    raw = ('{ "steps":[ {"action":"update","kind":"endpoint","name":"chat",'
           '"path":"endpoints/chat","changes":[]} ],\n\t"plan": 4 ,'
           '"environment":"dev","approval":"auto"}')
    set_plan(envdir, "text that --json must not print\n", None, raw=raw)
    r = run(PLAN, envdir, "--json")
    assert (r.returncode, r.stdout, r.stderr) == (2, raw, "")


def test_plan_json_nothing_pending(envdir):
    raw = (envdir / "plan.json").read_text()
    r = run(PLAN, "--json", envdir)
    assert (r.returncode, r.stdout) == (0, raw)
    assert json.loads(r.stdout) == NOTHING


def test_plan_short_option(envdir):
    set_plan(envdir, PENDING_TEXT, PENDING)
    r = run(PLAN, "-j", envdir)
    assert r.returncode == 2
    assert json.loads(r.stdout) == PENDING


def test_plan_pending_from_json_not_text(envdir):
    set_plan(envdir, "stale words\n", NOTHING)
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout) == (0, "stale words\n")
    set_plan(envdir, "", PENDING)
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout) == (2, "")


def test_plan_large(envdir):
    """Bigger than any first buffer: every byte still comes through."""
    steps = [{"action": "create", "kind": "pool", "name": f"p{i}",
              "path": f"pools/p{i}", "changes": []} for i in range(2000)]
    plan = dict(PENDING, steps=steps)
    text = "".join(f"  + create pool p{i}\n" for i in range(2000))
    set_plan(envdir, text, plan)
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout) == (2, text)
    r = run(PLAN, envdir, "--json")
    assert r.returncode == 2
    assert r.stdout == (envdir / "plan.json").read_text()


def test_plan_not_an_environment(tmp_path):
    d = tmp_path / "pools"
    d.mkdir()
    r = run(PLAN, d)
    assert (r.returncode, r.stdout) == (1, "")
    assert str(d) in r.stderr and "plan.json" in r.stderr
    assert "not an infrafs environment" in r.stderr


def test_plan_missing_folder(tmp_path):
    r = run(PLAN, tmp_path / "nope")
    assert r.returncode == 1
    assert f"{tmp_path}/nope" in r.stderr
    assert "No such file or directory" in r.stderr


def test_plan_empty_path():
    r = run(PLAN, "")
    assert r.returncode == 1
    assert "No such file or directory" in r.stderr


def test_plan_not_a_folder(tmp_path):
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(NOTHING))
    r = run(PLAN, f)
    assert r.returncode == 1
    assert str(f) in r.stderr and "not a directory" in r.stderr


@pytest.mark.parametrize("raw", [
    "",
    "{",
    "not json",
    '{"steps": [}',
    '"steps"',
])
def test_plan_bad_json(envdir, raw):
    set_plan(envdir, PENDING_TEXT, None, raw=raw)
    for args in ([], ["--json"]):
        r = run(PLAN, envdir, *args)
        assert (r.returncode, r.stdout) == (1, ""), args
        assert f"{envdir}/plan.json" in r.stderr


@pytest.mark.parametrize("plan", [
    {},
    {"steps": None},
    {"steps": {}},
    {"steps": "create pool train"},
    [],
    [{"steps": []}],
])
def test_plan_without_steps(envdir, plan):
    set_plan(envdir, PENDING_TEXT, plan)
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout) == (1, "")
    assert f"{envdir}/plan.json" in r.stderr and "steps" in r.stderr


def test_plan_text_missing(envdir):
    set_plan(envdir, PENDING_TEXT, PENDING)
    (envdir / "plan").unlink()
    r = run(PLAN, envdir)
    assert (r.returncode, r.stdout) == (1, "")
    assert f"{envdir}/plan:" in r.stderr
    # --json does not need the text.
    assert run(PLAN, envdir, "--json").returncode == 2


def test_plan_json_unreadable(envdir):
    (envdir / "plan.json").unlink()
    (envdir / "plan.json").mkdir()
    r = run(PLAN, envdir)
    assert r.returncode == 1
    assert f"{envdir}/plan.json" in r.stderr and "Is a directory" in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode 0 files")
def test_plan_json_permission(envdir):
    (envdir / "plan.json").chmod(0)
    r = run(PLAN, envdir)
    assert r.returncode == 1
    assert "Permission denied" in r.stderr


@pytest.mark.parametrize("args", [
    [],
    ["ENV", "ENV"],
    ["ENV", "--bogus"],
    ["ENV", "-x"],
    ["ENV", "--json=yes"],
])
def test_plan_usage(envdir, args):
    r = run(PLAN, *[str(envdir) if a == "ENV" else a for a in args])
    assert r.returncode == 64, r.stderr
    assert "--help" in r.stderr
    assert r.stdout == ""


def test_plan_help():
    r = run(PLAN, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: infrafs-plan")
