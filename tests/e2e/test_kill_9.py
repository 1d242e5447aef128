"""kill -9 of any service at any moment loses no acknowledged job: the services as real processes,
killed and restarted while jobs are queued, running and ending; and two jobs replicas sharing one
PostgreSQL database, one killed while it runs jobs, the other finishing them after the lease, none
run twice."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from qruntime import IBMRuntimeService, ReferenceCircuits
from qruntime.exceptions import ServiceUnavailableError
from qruntime.jobs.v1 import jobs_service_pb2

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


def test_kill_9_amid_quick_jobs_loses_none_that_was_answered(tmp_path):
    """Quick jobs (jobs/quick.py) run within CreateJob: one the suite answered is stored DONE with the
    result it answered, whenever the suite dies; one it did not answer left nothing half done."""
    launched = launch.embedded(tmp_path / "data", extra_env={"QRUNTIME_WARM_UP": "false"})
    answered: list = []  # (job, the result that came with the answer)
    stop = threading.Event()

    def submit(s: IBMRuntimeService) -> None:
        while not stop.is_set():
            try:
                job = s.run(program_id="sampler", options={"backend_name": "ibmq_qasm_simulator"},
                            inputs={"circuits": ReferenceCircuits.bell(), "shots": 100})
            except Exception:  # noqa: BLE001 - the suite is down: not answered, nothing to find
                time.sleep(0.05)
                continue
            answered.append((job, job._first_result))

    try:
        with service(launched) as s:
            threads = [threading.Thread(target=submit, args=(s,)) for _ in range(4)]
            for thread in threads:
                thread.start()

            def until_quick(count: int) -> None:
                deadline = time.monotonic() + 60
                while sum(first is not None for _, first in answered) < count:
                    assert time.monotonic() < deadline, f"{len(answered)} answered"
                    time.sleep(0.05)

            until_quick(20)
            launched.kill("suite")  # amid runs, stores and answers
            before = len(answered)
            launched.restart("suite")
            until_quick(before + 20)  # the threads' jobs run quick again after the restart
            stop.set()
            for thread in threads:
                thread.join(60)
            quick = [(job, first) for job, first in answered if first is not None]
            for job, first in quick:  # answered DONE with their result: stored so
                assert job.status().name == "DONE"
                request = jobs_service_pb2.GetJobResultRequest(job_id=job.job_id)
                assert job._transport.call(job._transport.jobs.GetJobResult, request) == first
            queued = [job for job, first in answered if first is None]  # right after the restart, say
            assert set(final_states(queued).values()) <= {"DONE"}
            assert all(sum(job.result()["counts"][0].values()) == 100 for job in queued)
            stored = s.jobs(limit=None)  # those answered, and any stored whose answer the kill cut off
            assert len(stored) >= len(answered)
            assert set(final_states(stored).values()) == {"DONE"}
            assert all(sum(job.result()["counts"][0].values()) == 100 for job in stored)
    finally:
        launched.stop()


def audit_trail(launched: launch.Launched, action: str) -> list[dict]:
    """The account's audit events for action, as an administrator lists them (`qruntime admin audit list`)."""
    env = {**os.environ, "QRUNTIME_URL": launched.url, "QRUNTIME_API_KEY": launched.bootstrap["api_key"]}
    listed = subprocess.run([str(Path(sys.executable).with_name("qruntime")), "admin", "--json", "audit", "list",
                             "--filter", f"action={action}"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["events"]


def test_job_creation_events_survive_auth_down_and_kill_9_of_jobs_before_they_reach_the_trail(tmp_path):
    """CreateJob stores its audit event with the job (the jobs store's outbox) and answers without auth:
    with auth down, the events wait there; jobs killed -9 before forwarding them loses none."""
    launched = launch.separate(tmp_path / "data")
    try:
        with service(launched) as s:
            circuit = ReferenceCircuits.bell()
            jobs = [s.run("sampler", {"circuits": circuit, "shots": 100}, {"backend_name": "ibmq_qasm_simulator"})]
            launched.kill("auth")  # the trail is unreachable: the events can only wait in the jobs store
            for _ in range(4):
                jobs.append(s.run("sampler", {"circuits": circuit, "shots": 100},
                                  {"backend_name": "ibmq_qasm_simulator"}))
            assert all(job.status().name == "DONE" for job in jobs)
            launched.kill("jobs")
            launched.restart("auth")
            launched.restart("jobs")  # forwards what its previous life left
            deadline = time.monotonic() + 60
            while len(created := audit_trail(launched, "quantum-computing.job.create")) < len(jobs):
                assert time.monotonic() < deadline, created
                time.sleep(0.5)
    finally:
        launched.stop()
    assert len(created) == len(jobs)  # each once: none had reached auth before the kill
    assert {(e["outcome"], e["target"]) for e in created} == {("AUDIT_OUTCOME_SUCCESS", "sampler")}
