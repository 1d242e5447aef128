"""kill -9 of any service at any moment loses no acknowledged job: the services as real processes,
killed and restarted while jobs are queued, running and ending; and two jobs replicas sharing one
PostgreSQL database, one killed while it runs jobs, the other finishing them after the lease, none
run twice."""

from __future__ import annotations

import random
import time

import pytest
import sqlalchemy as sa
from qruntime import IBMRuntimeService
from qruntime.exceptions import ServiceUnavailableError

from qruntime_suite import launch

pytestmark = pytest.mark.slow
FINAL = ("DONE", "ERROR", "CANCELLED")
LEASE = {"QRUNTIME_LEASE_SECONDS": "2"}  # a killed replica's jobs go back to the queue after 2 s


def service(launched: launch.Launched) -> IBMRuntimeService:
    boot = launched.bootstrap
    return IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=launched.url)


def hello_worlds(s: IBMRuntimeService, count: int) -> list:
    return [s.run(program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"},
                  inputs={"iterations": 2}) for _ in range(count)]


def final_states(jobs: list, timeout: float = 120) -> dict[str, str]:
    deadline, states = time.monotonic() + timeout, {}
    for job in jobs:
        while True:
            try:
                state = job.status().name
            except ServiceUnavailableError:  # a service that just came back reconnects to its peers
                state = "UNAVAILABLE"
            if state in FINAL:
                break
            assert time.monotonic() < deadline, f"job {job.job_id} still {state}"
            time.sleep(0.2)
        states[job.job_id] = state
    return states


def test_kill_9_of_each_service_at_moments_through_jobs_lives_loses_no_acknowledged_job(tmp_path):
    rng = random.Random(6)
    # Three kills of the jobs service may each interrupt the same run: four attempts let it end DONE
    # (with two, the default, a job interrupted twice ends TOO_MANY_ATTEMPTS, as a poison job should).
    launched = launch.separate(tmp_path / "data", extra_env={**LEASE, "QRUNTIME_MAX_ATTEMPTS": "4"})
    try:
        with service(launched) as s:
            jobs = hello_worlds(s, 6)  # acknowledged: CreateJob answered
            for name in ("jobs", "devices", "jobs", "programs", "auth", "gateway", "jobs"):
                time.sleep(rng.uniform(0.1, 1.5))  # queued, running, ending: wherever they are now
                launched.kill(name)
                launched.restart(name)
                if name == "gateway":
                    jobs += hello_worlds(s, 3)
            states = final_states(jobs)
            results = [job.result() for job in jobs]
    finally:
        launched.stop()
    assert set(states.values()) == {"DONE"}, states
    assert results == ["All done!"] * len(jobs)


@pytest.mark.postgres
def test_two_jobs_replicas_on_postgres_one_killed_the_other_finishes_its_jobs_none_twice(tmp_path, postgres_database):
    launched = launch.separate(tmp_path / "data", extra_env={**LEASE, "QRUNTIME_DATABASE_URL": postgres_database})
    engine = sa.create_engine(postgres_database.replace("postgresql://", "postgresql+psycopg://"))
    try:
        launched.add_replica("jobs", "jobs-b")  # runs jobs from the shared queue; clients reach only "jobs"
        victim = f"%:{launched.processes['jobs-b'].pid}:%"
        with service(launched) as s:
            jobs = hello_worlds(s, 12)
            deadline = time.monotonic() + 60
            while True:  # until the second replica runs some of them
                with engine.connect() as conn:
                    held = set(conn.execute(sa.text(
                        "SELECT id FROM jobs_job WHERE state = 'RUNNING' AND claimed_by LIKE :victim"),
                        {"victim": victim}).scalars())
                if held:
                    break
                assert time.monotonic() < deadline, "the second replica ran no job"
                time.sleep(0.02)
            launched.kill("jobs-b")
            states = final_states(jobs)
            results = [job.result() for job in jobs]
            hellos = {job.job_id: job.logs().count("Hello, World!") for job in jobs}
        with engine.connect() as conn:
            rows = {r.id: r for r in conn.execute(sa.text(
                "SELECT j.id, j.state, j.attempts, j.claimed_by, count(r.job_id) AS results FROM jobs_job j "
                "LEFT JOIN jobs_job_result r ON r.job_id = j.id GROUP BY j.id"))}
    finally:
        engine.dispose()
        launched.stop()
    assert set(states.values()) == {"DONE"} and results == ["All done!"] * len(jobs)
    assert {job_id: (row.state, row.results) for job_id, row in rows.items()} == dict.fromkeys(rows, ("DONE", 1))
    survivor = f":{launched.processes['jobs'].pid}:"
    for job_id, row in rows.items():
        if job_id in held:  # the killed replica's: run again, once, by the survivor after the lease
            assert (row.attempts, survivor in row.claimed_by) == (2, True), row
        elif row.attempts != 1:  # every other job ran once; one the victim claimed just as it died, twice
            assert row.attempts == 2 and survivor in row.claimed_by, row
        # Each run logs its greeting first: no job ran more often than it was claimed (a run cut off
        # at once may not have logged it).
        assert 1 <= hellos[job_id] <= row.attempts, (row, hellos[job_id])
