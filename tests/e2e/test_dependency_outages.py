"""A service the jobs need that goes down (kill -9) makes jobs wait, never fail: the four services
as real processes behind the gateway, a dependency killed while jobs are queued and running, and
every job DONE once it is back, with a line in the logs of those that waited saying why."""

from __future__ import annotations

import time

import pytest
from qruntime import IBMRuntimeService
from qruntime.exceptions import ServiceUnavailableError

from qruntime_suite import launch

pytestmark = pytest.mark.slow
JOBS = 12
FINAL = ("DONE", "ERROR", "CANCELLED")


def service(launched: launch.Launched) -> IBMRuntimeService:
    boot = launched.bootstrap
    return IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=launched.url)


def hello_worlds(s: IBMRuntimeService, count: int) -> list:
    """count jobs of a few seconds each: a device call per iteration."""
    return [s.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                  inputs={"iterations": 3}) for _ in range(count)]


def status(job) -> str:
    """The job's state; UNAVAILABLE while a service that just came back reconnects to its peers
    (within 2 s) reads as not yet final."""
    try:
        return job.status().name
    except ServiceUnavailableError:
        return "UNAVAILABLE"


def wait_all(jobs: list, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    states = {}
    for job in jobs:
        while (state := status(job)) not in FINAL:
            assert time.monotonic() < deadline, f"job {job.job_id} still {state}"
            time.sleep(0.2)
        states[job.job_id] = state
    return states


def test_jobs_wait_out_a_kill_9_of_the_devices_service_and_all_end_done(tmp_path):
    launched = launch.separate(tmp_path / "data")
    try:
        with service(launched) as s:
            jobs = hello_worlds(s, JOBS)
            launched.kill("devices")  # mid-queue: some running, most queued
            in_flight = [j for j in jobs if status(j) not in FINAL]
            time.sleep(6)
            assert not [j.job_id for j in jobs if status(j) in ("ERROR", "CANCELLED")]  # waiting, not failed
            launched.restart("devices")
            states = wait_all(jobs, timeout=120)
            logs = [j.logs() for j in jobs]
            results = [j.result() for j in jobs]
    finally:
        launched.stop()
    assert len(in_flight) >= JOBS // 2, "most jobs had ended before the outage: the test did not test it"
    assert set(states.values()) == {"DONE"}, states
    assert results == ["All done!"] * JOBS
    waited = [text for text in logs if "the job goes back to the queue" in text]
    assert waited, "no job met the outage: the test did not test it"
    assert all("devices service" in text for text in waited)


def test_jobs_restarted_while_auth_is_down_wait_for_it_and_all_end_done(tmp_path):
    # A short lease, so the restarted jobs service takes back the killed one's running jobs at once.
    launched = launch.separate(tmp_path / "data", extra_env={"QRUNTIME_LEASE_SECONDS": "2"})
    try:
        with service(launched) as s:
            jobs = hello_worlds(s, 8)
            launched.kill("jobs")
            launched.kill("auth")
            launched.restart("jobs")  # its runs need a service token, which auth cannot give now
            time.sleep(6)
            launched.restart("auth")
            states = wait_all(jobs, timeout=120)
            waited = [j.job_id for j in jobs if "the job goes back to the queue" in j.logs()]
    finally:
        launched.stop()
    assert set(states.values()) == {"DONE"}, states
    assert waited, "no job met the outage: the test did not test it"
