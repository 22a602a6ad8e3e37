"""The audit chain: each line carries the SHA-256 of the line before it,
and infrafs-audit-verify names the first line changed or removed."""
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import BOTH_BACKENDS, read

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
VERIFY = TOOLS / "infrafs-audit-verify"


def verify(state, *envs):
    return subprocess.run([str(VERIFY), f"sqlite:{state}", *envs],
                          capture_output=True, text=True)


@pytest.fixture
def chain(env):
    env.sh("echo 2 > dev/pools/train/nodes && echo 3 > dev/pools/train/nodes"
           " && echo 4 > dev/pools/train/nodes")
    lines = read(env / "dev/audit").splitlines()
    assert len(lines) == 5
    return env


def rows(state):
    db = sqlite3.connect(state)
    return db, [r for r in db.execute(
        "SELECT id, line FROM audit ORDER BY id")]


@pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True)
def test_lines_carry_the_hash_of_the_line_before(chain):
    lines = read(chain / "dev/audit").splitlines()
    assert lines[0].endswith(" prev=" + "0" * 64)
    import hashlib
    for before, line in zip(lines, lines[1:]):
        assert line.endswith(
            " prev=" + hashlib.sha256(before.encode()).hexdigest())
    chain.restart()
    assert read(chain / "dev/audit").splitlines() == lines
    if not chain.on_sqlite:
        return
    res = verify(chain.state, "dev")
    assert res.returncode == 0
    assert "dev: 5 audit lines, chain intact" in res.stdout


def test_one_changed_byte_is_named(chain):
    chain.stop()
    db, r = rows(chain.state)
    row_id, line = r[2]
    db.execute("UPDATE audit SET line = ? WHERE id = ?",
               (line.replace("uid=0", "uid=1", 1), row_id))
    db.commit()
    res = verify(chain.state)
    assert res.returncode == 1
    assert "audit line 3 " in res.stdout and "was changed" in res.stdout
    chain.start()


def test_a_removed_line_is_found(chain):
    chain.stop()
    db, r = rows(chain.state)
    db.execute("DELETE FROM audit WHERE id = ?", (r[3][0],))
    db.commit()
    res = verify(chain.state, "dev")
    assert res.returncode == 1
    assert "audit line 3 " in res.stdout and "removed" in res.stdout
    chain.start()


def test_the_newest_line_is_covered_too(chain):
    chain.stop()
    db, r = rows(chain.state)
    db.execute("UPDATE audit SET line = ? WHERE id = ?",
               (r[-1][1].replace("nodes", "NODES"), r[-1][0]))
    db.commit()
    res = verify(chain.state)
    assert res.returncode == 1
    assert "audit line 5 " in res.stdout and "newest" in res.stdout
    chain.start()
