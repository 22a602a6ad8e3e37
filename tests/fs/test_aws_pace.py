"""How hard the aws provider polls SageMaker, against the fake on loopback:
aws.poll_s while a change is under way, refresh_s at rest, `refresh` in
ctl looking now, and status saying how fresh its answer is.

The counts allow for jitter and a loaded machine: at most what the pace
allows plus two, and at least one, never exact timings."""
import json
import os
import subprocess
import time
from datetime import datetime

import pytest

from conftest import Mount, read, status_of, wait_for
from test_aws import (CHAT, EP, ENDPOINT, Fake, config_text, daemon_env,
                      write_credentials)

POLL_S = 2.0
WINDOW_S = 8.0


@pytest.fixture
def fake(tmp_path):
    f = Fake(tmp_path)
    f.control("config", {"create_s": 0.3, "update_s": 0.3,
                         "delete_s": 0.3})
    yield f
    f.stop()


def start(tmp_path, fake, extra=""):
    write_credentials(tmp_path)
    m = Mount(tmp_path, env=daemon_env(tmp_path)).start()
    m.sh("mkdir dev")
    text = config_text(fake, extra).replace("aws.poll_s = 0.2\n",
                                            f"aws.poll_s = {POLL_S}\n")
    (m / "dev" / "config").write_text(text)
    return m


@pytest.fixture
def mnt(tmp_path, fake):
    m = start(tmp_path, fake, "refresh_s = 600\n")
    yield m
    m.stop()


def describes(fake, name=CHAT, since=0):
    return [c for c in fake.control(f"calls?since={since}")
            if c["op"] == "DescribeEndpoint"
            and (c["body"] or {}).get("EndpointName") == name]


def last_seq(fake):
    got = fake.control("calls")
    return got[-1]["seq"] if got else 0


def state(m, path=EP):
    return read(m / path / "state").strip()


def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def make_endpoint(m, path=EP):
    m.sh(f"mkdir -p {path}")
    (m / path / "spec").write_text(ENDPOINT)


def window_describes(m, fake, busy):
    """Describes of chat over WINDOW_S while it stays `busy`."""
    seq = last_seq(fake)
    time.sleep(WINDOW_S)
    assert state(m) == busy, read(m / EP / "status")
    return describes(fake, since=seq)


def test_creating_updating_deleting_are_described_at_poll_pace(mnt, fake):
    """About 2 Describes a second used to go out for an endpoint being
    made (every reconciler pass); aws.poll_s = 2 allows one per 2 s."""
    fake.control("config", {"create_s": 30, "update_s": 30})
    make_endpoint(mnt)
    wait_for(lambda: state(mnt) == "creating", 15, "creating")
    got = window_describes(mnt, fake, "creating")
    assert 1 <= len(got) <= WINDOW_S / POLL_S + 2, [c["time"] for c in got]

    fake.control("config", {"create_s": 0.3, "update_s": 30})
    wait_for(lambda: state(mnt) == "ready", 40, "ready")
    (mnt / EP / "replicas").write_text("2\n")
    wait_for(lambda: state(mnt) == "updating", 15, "updating")
    got = window_describes(mnt, fake, "updating")
    assert 1 <= len(got) <= WINDOW_S / POLL_S + 2, [c["time"] for c in got]

    fake.control("config", {"update_s": 0.3, "delete_s": 30})
    wait_for(lambda: state(mnt) == "ready", 40, "ready")
    mnt.sh(f"rmdir {EP}")
    wait_for(lambda: [e for e in fake.state()["endpoints"]
                      if e["EndpointStatus"] == "Deleting"], 15, "deleting")
    seq = last_seq(fake)
    time.sleep(WINDOW_S)
    assert [e["EndpointStatus"] for e in fake.state()["endpoints"]] == \
        ["Deleting"]
    got = describes(fake, since=seq)
    assert 1 <= len(got) <= WINDOW_S / POLL_S + 2, [c["time"] for c in got]


def test_metrics_count_calls_per_resource_per_minute(mnt, fake):
    fake.control("config", {"create_s": 30})
    make_endpoint(mnt)
    wait_for(lambda: state(mnt) == "creating", 15, "creating")
    time.sleep(3)
    metrics = read(mnt / "metrics")
    lines = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                 if line.startswith("infrafs_provider_"))
    total = int(lines['infrafs_provider_calls_total{provider="aws"}'])
    minute = int(lines['infrafs_provider_calls_last_minute{provider="aws"}'])
    per = float(lines['infrafs_provider_calls_per_resource_minute'
                      '{provider="aws"}'])
    made = len(fake.calls())
    # Sampled once a second: the figures trail the fake's log a little.
    assert 1 <= total <= made
    assert 1 <= minute <= total
    assert per == pytest.approx(minute, abs=0.01)  # one resource


def test_refresh_looks_now_and_lists_once(mnt, fake):
    """refresh_s = 600: without `refresh` nothing is looked at again for
    ten minutes; with it, the endpoints are read at once, from one
    ListEndpoints page, with no Describe for what did not change."""
    paths = [f"dev/endpoints/e{i}" for i in range(3)]
    for p in paths:
        make_endpoint(mnt, p)
    for p in paths:
        wait_for(lambda p=p: state(mnt, p) == "ready", 30, f"{p} ready")
    time.sleep(1.5)
    before = [when(status_of(mnt / p / "status")["observed_at"])
              for p in paths]
    seq = last_seq(fake)
    # The write only leaves a note for the reconciler: it returns at
    # once even when every call takes seconds.
    fake.control("config", {"latency_ms": 3000})
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", f"echo refresh > {mnt.path}/dev/ctl"],
                   check=True, timeout=10)
    assert time.monotonic() - t0 < 2.5
    wait_for(lambda: any(c["op"] == "ListEndpoints" and c["status"]
                         for c in fake.control(f"calls?since={seq}")),
             20, "a ListEndpoints after refresh")
    fake.control("config", {"latency_ms": 0})
    wait_for(lambda: all(
        when(status_of(mnt / p / "status")["observed_at"]) > before[i]
        for i, p in enumerate(paths)), 20, "observed_at to move")
    calls = fake.control(f"calls?since={seq}")
    lists = [c for c in calls if c["op"] == "ListEndpoints"]
    assert len(lists) == 1, [c["op"] for c in calls]
    assert not [c for c in calls if c["op"] == "DescribeEndpoint"], \
        [c["op"] for c in calls]


def test_infrafs_wait_refresh(tmp_path, mnt, fake):
    make_endpoint(mnt)
    wait_for(lambda: state(mnt) == "ready", 30, "ready")
    time.sleep(1.5)
    seq = last_seq(fake)
    tools = os.environ.get("INFRAFS_TOOLS_DIR")
    wait_bin = f"{tools}/infrafs-wait" if tools else "infrafs-wait"
    t0 = time.time()
    subprocess.run([wait_bin, str(mnt / EP), "ready", "--refresh",
                    "--timeout", "20", "--quiet"], check=True, timeout=30)
    # It returned on a state observed after it asked, which took a look.
    assert when(status_of(mnt / EP / "status")["observed_at"]) >= t0 - 0.01
    assert describes(fake, since=seq)


def test_status_says_when_observed_and_when_changed(tmp_path, fake):
    """observed_at moves with every look; changed_at only when what was
    seen changed; the environment's status shows the oldest look."""
    m = start(tmp_path, fake, "refresh_s = 2\n")
    try:
        make_endpoint(m)
        wait_for(lambda: state(m) == "ready", 30, "ready")
        time.sleep(1)
        first = status_of(m / EP / "status")
        changed = when(first["changed_at"])
        assert changed <= when(first["observed_at"])
        seq = last_seq(fake)
        wait_for(lambda: when(status_of(m / EP / "status")["observed_at"])
                 > when(first["observed_at"]), 15, "a later look")
        now = status_of(m / EP / "status")
        # It moved because AWS was asked, at that moment.
        looks = [c for c in fake.control(f"calls?since={seq}")
                 if c["op"] in ("DescribeEndpoint", "ListEndpoints")]
        assert looks
        assert min(abs(c["time"] - when(now["observed_at"]))
                   for c in looks) < 1.0
        assert when(now["changed_at"]) == changed
        doc = json.loads(read(m / EP / "status.json"))
        assert when(doc["changed_at"]) == changed
        assert doc["observed_at"] and when(doc["observed_at"]) > changed
        env = status_of(m / "dev" / "status")
        assert env["observed_at"] != "never"
        assert abs(when(env["observed_at"]) -
                   when(status_of(m / EP / "status")["observed_at"])) < 5
    finally:
        m.stop()
