"""A worker's CPU priority where the kernel groups tasks by session (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="this kernel has no autogroup")

SET_AND_READ = """
import sys
from qruntime_kit.priority import set_session_niceness
set_session_niceness(int(sys.argv[1]))
print(open("/proc/self/autogroup").read().split()[-1])
"""


def _in_own_session(*niceness: int) -> list[str]:
    outputs = []
    for value in niceness:
        done = subprocess.run([sys.executable, "-c", SET_AND_READ, str(value)], capture_output=True, text=True,
                              start_new_session=True, timeout=60, check=True)
        outputs.append(done.stdout.strip())
    return outputs


def test_a_worker_in_its_own_session_lowers_its_sessions_priority():
    assert _in_own_session(10, 19) == ["10", "19"]


def test_the_service_session_is_left_alone():
    before = Path("/proc/self/autogroup").read_text()
    _in_own_session(10)
    assert Path("/proc/self/autogroup").read_text() == before


def test_a_nice_value_outside_0_to_19_is_refused():
    from qruntime_kit.priority import set_session_niceness

    with pytest.raises(ValueError, match="0 to 19"):
        set_session_niceness(-5)
