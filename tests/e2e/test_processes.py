"""The suite as real OS processes: `qruntime up`, and four services behind the gateway."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from qruntime import IBMRuntimeService

from qruntime_suite import launch

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run_quickstart(launched: launch.Launched, home: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"),
         "--bootstrap", str(launched.data_dir / "bootstrap.json")],
        env={**os.environ, "HOME": str(home)}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_quickstart_output(out: str) -> None:
    assert "ibmq_qasm_simulator" in out
    assert out.count("job id: ") == 2
    assert "All done!" in out
    assert "'00'" in out and "'11'" in out


def test_embedded_suite_runs_the_quick_start_and_stops_cleanly(tmp_path):
    launched = launch.embedded(tmp_path / "data")
    try:
        assert stat.S_IMODE((launched.data_dir / "bootstrap.json").stat().st_mode) == 0o600
        check_quickstart_output(run_quickstart(launched, tmp_path / "home"))
    finally:
        codes = launched.stop()
    assert codes == {"suite": 0}


def test_four_processes_behind_the_gateway_run_the_quick_start(tmp_path):
    launched = launch.separate(tmp_path / "data")
    try:
        assert launched.bootstrap["url"] == launched.url
        check_quickstart_output(run_quickstart(launched, tmp_path / "home"))
    finally:
        codes = launched.stop()
    assert codes == dict.fromkeys(["auth", "programs", "devices", "jobs", "gateway"], 0)


def test_a_finished_job_survives_kill_9_of_the_suite(tmp_path):
    data = tmp_path / "data"
    launched = launch.embedded(data)
    try:
        boot = launched.bootstrap
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=launched.url) as s:
            job = s.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                        inputs={"iterations": 2})
            assert job.result() == "All done!"
            job_id = job.job_id
        os.killpg(launched.processes["suite"].pid, signal.SIGKILL)
    finally:
        launched.stop()
    restarted = launch.embedded(data)
    try:
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=restarted.url) as s:
            again = s.job(job_id)
            assert again.status().name == "DONE"
            assert again.result() == "All done!"
    finally:
        restarted.stop()
