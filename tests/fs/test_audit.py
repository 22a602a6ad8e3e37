"""The audit chain: each line carries the SHA-256 of the line before it,
and infrafs-audit-verify names the first line changed or removed."""
import os
import subprocess
from pathlib import Path

import pytest

from conftest import BOTH_BACKENDS, read

ROOT = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("INFRAFS_TOOLS_DIR", ROOT / "build" / "tools"))
VERIFY = TOOLS / "infrafs-audit-verify"


both = pytest.mark.parametrize("backend", BOTH_BACKENDS, indirect=True)


def verify(m, *envs):
    return subprocess.run([str(VERIFY), m.store_arg(), *envs],
                          capture_output=True, text=True)



@pytest.fixture
def chain(env):
    env.sh("echo 2 > dev/pools/train/nodes && echo 3 > dev/pools/train/nodes"
           " && echo 4 > dev/pools/train/nodes")
    lines = read(env / "dev/audit").splitlines()
    assert len(lines) == 5
    return env


def rows(m):
    """The audit lines as (id, line), oldest first."""
    return [(int(r[0]), "|".join(r[1:])) for r in m.sql(
        f"SELECT id, {m.text_column('line')} FROM audit ORDER BY id")]


def set_line(m, row_id, line):
    m.sql(f"UPDATE audit SET line = {m.text_value(line)}"
          f" WHERE id = {row_id}")


@both
def test_lines_carry_the_hash_of_the_line_before(chain):
    lines = read(chain / "dev/audit").splitlines()
    assert lines[0].endswith(" prev=" + "0" * 64)
    import hashlib
    for before, line in zip(lines, lines[1:]):
        assert line.endswith(
            " prev=" + hashlib.sha256(before.encode()).hexdigest())
    chain.restart()
    assert read(chain / "dev/audit").splitlines() == lines
    res = verify(chain, "dev")
    assert res.returncode == 0
    assert "dev: 5 audit lines, chain intact" in res.stdout


@both
def test_one_changed_byte_is_named(chain):
    chain.stop()
    row_id, line = rows(chain)[2]
    set_line(chain, row_id, line.replace("uid=0", "uid=1", 1))
    res = verify(chain)
    assert res.returncode == 1
    assert "audit line 3 " in res.stdout and "was changed" in res.stdout
    chain.start()


@both
def test_a_removed_line_is_found(chain):
    chain.stop()
    chain.sql(f"DELETE FROM audit WHERE id = {rows(chain)[3][0]}")
    res = verify(chain, "dev")
    assert res.returncode == 1
    assert "audit line 3 " in res.stdout and "removed" in res.stdout
    chain.start()


@both
def test_the_newest_line_is_covered_too(chain):
    chain.stop()
    row_id, line = rows(chain)[-1]
    set_line(chain, row_id, line.replace("nodes", "NODES"))
    res = verify(chain)
    assert res.returncode == 1
    assert "audit line 5 " in res.stdout and "newest" in res.stdout
    chain.start()
