"""Leases on the database's clock and the attempt as a fencing token, on SQLite and PostgreSQL:
once a job has moved on (re-claimed, requeued, cancelled, timed out) the runner of its earlier
attempt can write nothing to it, also from another process that was paused past its lease."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from postgres_support import new_postgres_database

from qruntime_jobs import store as store_module
from qruntime_jobs.store import CANCELLED, DONE, ERROR, QUEUED, RUNNING, JobStore

NOW = dt.datetime.now(dt.UTC)


def new_job(store: JobStore):
    job, _ = store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN",
                          backend="ibmq_qasm_simulator", inputs="{}", log_level="INFO", max_execution_seconds=60)
    return job


def writes(store: JobStore, job_id: str, attempt: int, tag: str) -> dict[str, bool]:
    """Every write a runner makes for a job, tagged; which the store took."""
    return {
        "logs": store.append_attempt_logs(job_id, attempt, [("INFO", f"{tag} log", NOW)]),
        "interim": store.add_attempt_interim_result(job_id, attempt, json.dumps(tag)),
        "end": store.end_attempt(job_id, attempt, DONE, result_json=json.dumps(tag)),
    }


def stored(store: JobStore, job_id: str) -> tuple[list[str], list[str], str | None]:
    logs, _ = store.list_logs(job_id, page_size=100)
    interim, _ = store.list_interim_results(job_id, page_size=100)
    return [line.message for line in logs], [r.data for r in interim], store.get_result(job_id)


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def test_the_runner_of_a_requeued_and_reclaimed_attempt_cannot_write(jobs):
    job = new_job(jobs)
    assert jobs.claim_next_queued("replica-a").attempts == 1
    assert jobs.requeue_running(stale_after=0)  # replica-a's lease lapsed
    assert not jobs.requeue_attempt(job.id, 1) and jobs.renew_leases("replica-a", {job.id: 1}) == {job.id}
    assert writes(jobs, job.id, 1, "zombie") == {"logs": False, "interim": False, "end": False}
    assert jobs.claim_next_queued("replica-b").attempts == 2
    assert writes(jobs, job.id, 1, "zombie") == {"logs": False, "interim": False, "end": False}
    assert not jobs.requeue_attempt(job.id, 1)
    assert jobs.get(job.id).state == RUNNING  # the zombie did not requeue attempt 2
    assert writes(jobs, job.id, 2, "live") == {"logs": True, "interim": True, "end": True}
    assert stored(jobs, job.id) == (["live log"], ['"live"'], '"live"')
    assert jobs.get(job.id).state == DONE


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
def test_an_abandoned_attempt_cannot_write_to_its_ended_job(jobs, how):
    job = new_job(jobs)
    jobs.claim_next_queued("replica-a")
    assert jobs.append_attempt_logs(job.id, 1, [("INFO", "before", NOW)])
    if how == "cancelled":
        jobs.cancel(job.id)
    else:
        assert jobs.end_attempt(job.id, 1, ERROR, "TIME_LIMIT_EXCEEDED", "too long")
    assert writes(jobs, job.id, 1, "after") == {"logs": False, "interim": False, "end": False}
    assert stored(jobs, job.id) == (["before"], [], None)
    assert jobs.get(job.id).state == (CANCELLED if how == "cancelled" else ERROR)


def test_a_renewed_lease_is_kept_and_a_lapsed_one_requeued(jobs):
    job = new_job(jobs)
    jobs.claim_next_queued("replica-a")
    time.sleep(0.3)
    assert jobs.renew_leases("replica-a", {job.id: 1}) == set()
    assert jobs.requeue_running(stale_after=0.25) == []  # renewed just now
    time.sleep(0.3)
    assert [j.id for j in jobs.requeue_running(stale_after=0.25)] == [job.id]
    assert jobs.get(job.id).state == QUEUED


@pytest.mark.postgres
def test_leases_use_the_database_clock_not_the_replicas(monkeypatch):
    # Only PostgreSQL: SQLite is a file on this machine, so its clock is the replicas' clock.
    with new_postgres_database("qruntime_jobs") as url:
        jobs = JobStore(url)
        try:
            skewed_replica_keeps_its_lease(jobs, monkeypatch)
        finally:
            jobs.close()


def skewed_replica_keeps_its_lease(jobs: JobStore, monkeypatch) -> None:
    job = new_job(jobs)
    # A replica whose clock is an hour behind claims the job and renews its lease: a replica with
    # a right clock must not think it lapsed an hour ago (it would run the job twice).
    monkeypatch.setattr(store_module, "utcnow", lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    jobs.claim_next_queued("slow-clock")
    assert jobs.renew_leases("slow-clock", {job.id: 1}) == set()
    monkeypatch.undo()
    assert jobs.requeue_running(stale_after=30) == []
    assert jobs.get(job.id).state == RUNNING


ZOMBIE = textwrap.dedent("""
    import json, os, signal, sys, datetime as dt
    from qruntime_jobs.store import DONE, JobStore
    store = JobStore(sys.argv[1])
    job = store.claim_next_queued("zombie")
    print(json.dumps({"job": job.id, "attempt": job.attempts}), flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)  # paused past its lease, as a replica in a long GC pause or cut off
    now = dt.datetime.now(dt.UTC)
    print(json.dumps({
        "lost": sorted(store.renew_leases("zombie", {job.id: job.attempts})),
        "logs": store.append_attempt_logs(job.id, job.attempts, [("INFO", "zombie log", now)]),
        "interim": store.add_attempt_interim_result(job.id, job.attempts, '"zombie"'),
        "requeue": store.requeue_attempt(job.id, job.attempts),
        "end": store.end_attempt(job.id, job.attempts, DONE, result_json='"zombie"'),
    }), flush=True)
""")


@pytest.mark.slow
def test_a_zombie_replica_process_late_writes_are_rejected(jobs, database_url):
    job = new_job(jobs)
    zombie = subprocess.Popen([sys.executable, "-c", ZOMBIE, database_url], stdout=subprocess.PIPE, text=True)
    try:
        claimed = json.loads(zombie.stdout.readline())
        assert claimed == {"job": job.id, "attempt": 1}
        while os.waitpid(zombie.pid, os.WNOHANG | os.WUNTRACED) == (0, 0):  # until it has stopped itself
            time.sleep(0.01)
        time.sleep(0.6)
        assert [j.id for j in jobs.requeue_running(stale_after=0.5)] == [job.id]  # its lease lapsed
        assert jobs.claim_next_queued("live").attempts == 2
        jobs.append_attempt_logs(job.id, 2, [("INFO", "live log", NOW)])
        os.kill(zombie.pid, signal.SIGCONT)
        late = json.loads(zombie.stdout.readline())
        assert zombie.wait(timeout=30) == 0
    finally:
        zombie.kill()
    assert late == {"lost": [job.id], "logs": False, "interim": False, "requeue": False, "end": False}
    assert jobs.get(job.id).state == RUNNING and jobs.get(job.id).attempts == 2
    assert jobs.end_attempt(job.id, 2, DONE, result_json='"live"')
    assert stored(jobs, job.id) == (["live log"], [], '"live"')
