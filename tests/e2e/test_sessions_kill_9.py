"""kill -9 of the jobs service in the middle of a session loses nothing of it: the session and its
queue are in the store, the interrupted job runs again first, and its jobs still run one at a time."""

from __future__ import annotations

import time

import pytest
from qruntime import IBMRuntimeService, Session

from qruntime_suite import launch

pytestmark = pytest.mark.slow


def test_a_session_survives_kill_9_of_the_jobs_service(tmp_path):
    launched = launch.separate(tmp_path / "data", extra_env={"QRUNTIME_LEASE_SECONDS": "2"})
    try:
        boot = launched.bootstrap
        with IBMRuntimeService(token=boot["api_key"], instance=boot["instance"], url=launched.url) as service:
            session = Session("ibmq_qasm_simulator", service=service)
            # The first runs a few seconds (about 0.3 s an iteration): the kill finds it running.
            jobs = [session.run("hello-world", {"iterations": n}) for n in (10, 2, 2, 2)]
            deadline = time.monotonic() + 60
            while not jobs[0].running():
                assert time.monotonic() < deadline, "the session's first job never started"
                time.sleep(0.05)
            launched.kill("jobs")
            launched.restart("jobs")
            assert [job.wait_for_final_state(timeout=120) for job in jobs] == ["DONE"] * 4
            ended = [service.job(job.job_id).proto for job in jobs]
            details = Session.from_id(session.session_id, service).details()
    finally:
        launched.stop()
    assert ended[0].attempts == 2  # interrupted by the kill, run again
    for before, after in zip(ended, ended[1:], strict=False):  # still one at a time, in order
        assert after.start_time.ToDatetime() >= before.end_time.ToDatetime()
    assert (details["state"], details["accepting_jobs"], details["mode"]) == ("active", True, "dedicated")
    assert all(job.session_id == session.session_id for job in ended)
