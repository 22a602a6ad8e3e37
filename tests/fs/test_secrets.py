"""Secrets: sealed at rest, never readable, passed to the local provider
only when it applies them, rotated into the endpoints that use them, and
a lost or swapped key said plainly."""
import errno
import os

import pytest

from conftest import BOTH_BACKENDS, Mount, read, status_of, wait_for

both = pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True)

EP = "dev/endpoints/tok"


def environ_of(pid):
    return open(f"/proc/{pid}/environ", "rb").read().split(b"\0")


def wait_ready(m, path=EP, timeout=20):
    wait_for(lambda: read(m / path / "state") == "ready\n", timeout,
             f"{path} ready:\n" + read(m / path / "status"))


@both
def test_secret_reaches_the_replica_and_rotation_rolls_it(mnt):
    mnt.sh("mkdir -p dev/endpoints/tok && printf hunter2 > dev/secrets/hf")
    (mnt / EP / "spec").write_text(
        "command = exec python3 -m http.server $PORT --bind 127.0.0.1\n"
        "health_path = /\nenv.HF_TOKEN = secret:hf\n")
    wait_ready(mnt)
    (pid,) = mnt.replicas()
    assert b"HF_TOKEN=hunter2" in environ_of(pid)
    # Neither status, events, logs nor history show the value.
    for path in [f"{EP}/status", f"{EP}/status.json", f"{EP}/events",
                 "dev/events", "dev/audit", "dev/status"]:
        assert "hunter2" not in read(mnt / path), path
    assert b"hunter2" not in mnt.log.read_bytes()
    mnt.sh("printf swordfish > dev/secrets/hf")

    def rolled():
        pids = mnt.replicas()
        try:
            return len(pids) == 1 and pids != [pid] and \
                b"HF_TOKEN=swordfish" in environ_of(pids[0])
        except OSError:
            return False

    wait_for(rolled, 20, "a replica with the new value")
    wait_ready(mnt)
    store = mnt.store_dump()
    for value in (b"hunter2", b"swordfish"):
        assert value not in store and value.hex().encode() not in store


@both
def test_a_lost_key_is_said_plainly_not_replaced(tmp_path, store_url):
    m = Mount(tmp_path, store=store_url).start()
    try:
        m.sh("mkdir dev && printf hunter2 > dev/secrets/hf")
        m.stop()
        key = m.key.read_bytes()
        m.key.unlink()
        m.start()
        assert not m.key.exists(), "no new key made over sealed secrets"
        st = status_of(m / "dev/status")
        assert "is missing" in st["secrets_unavailable"]
        with pytest.raises(OSError) as e:
            with open(m / "dev/secrets/hf", "w") as f:
                f.write("other")
        assert e.value.errno == errno.EIO
        assert "secrets cannot be stored" in read(m / "dev/events")
        m.stop()
        # Another key is refused as well: it cannot open what is sealed.
        m.key.write_bytes(os.urandom(32))
        os.chmod(m.key, 0o600)
        m.start()
        assert "is not the key that sealed" in status_of(
            m / "dev/status")["secrets_unavailable"]
        m.stop()
        m.key.write_bytes(key)
        m.start()
        assert "secrets_unavailable" not in status_of(m / "dev/status")
        m.sh("printf again > dev/secrets/hf")
    finally:
        m.stop()


@both
def test_an_unusable_key_file_is_named_with_its_mode_or_size(tmp_path,
                                                            store_url):
    """A key file that sealed secrets but is open to others, or of the
    wrong size, is reported with what is wrong, not as missing."""
    m = Mount(tmp_path, store=store_url).start()
    try:
        m.sh("mkdir dev && printf hunter2 > dev/secrets/hf")
        m.stop()
        key = m.key.read_bytes()
        os.chmod(m.key, 0o644)
        m.start()
        why = status_of(m / "dev/status")["secrets_unavailable"]
        assert f"key file {m.key} has mode 0644" in why
        assert "chmod 600" in why and "missing" not in why
        m.stop()
        os.chmod(m.key, 0o600)
        m.key.write_bytes(key[:17])
        m.start()
        why = status_of(m / "dev/status")["secrets_unavailable"]
        assert f"key file {m.key} holds 17 bytes, expected 32" in why
        assert "missing" not in why
        assert "holds 17 bytes" in m.log.read_text()
        m.stop()
        m.key.write_bytes(key)
        m.start()
        assert "secrets_unavailable" not in status_of(m / "dev/status")
    finally:
        m.stop()
