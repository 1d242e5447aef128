"""The jobs store's audit outbox (audit_outbox.py), on SQLite and PostgreSQL: a job and the event of its
creation are stored together or not at all; replicas forward each event once, and an event whose
replica died before forgetting it is forwarded by another; while auth is unreachable they wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from qruntime_jobs import audit_outbox
from qruntime_jobs.audit_outbox import AuditOutbox
from qruntime_jobs.store import JobStore
from qruntime_kit.audit import AuditEvent, event_from_json, event_json
from qruntime_kit.errors import NotFound


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def event(request_id: str) -> AuditEvent:
    return AuditEvent(time=time.time(), account_id="a", subject="u", instance="crn:a",
                      action="quantum-computing.job.create", method="/qruntime.jobs.v1.JobsService/CreateJob",
                      outcome="success", code="OK", reason="", request_id=request_id, target="sampler")


def create(store: JobStore, request_id: str, **fields):
    return store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN", backend="b",
                        inputs="{}", log_level="INFO", max_execution_seconds=60, request_id=request_id,
                        audit_event=event_json(event(request_id)), **fields)


def test_a_job_and_its_creation_event_are_stored_together_or_not_at_all(jobs):
    job, created = create(jobs, "r-1")
    assert created
    again, created = create(jobs, "r-1")  # a retry with the same request id: no new job, no new event
    assert (again.id, created) == (job.id, False)
    with pytest.raises(NotFound):  # a job the store refuses (no such upload): its event is not kept either
        create(jobs, "r-2", input_upload_id="no-such-upload")
    claimed = jobs.claim_audit_events("replica-a")
    assert [event_from_json(text).request_id for _, text in claimed] == ["r-1"]


def test_replicas_claim_apart_and_take_over_what_a_dead_one_held(jobs):
    for n in range(3):
        create(jobs, f"r-{n}")
    first = jobs.claim_audit_events("replica-a", limit=2, hold_seconds=0.5)
    assert [event_from_json(t).request_id for _, t in first] == ["r-0", "r-1"]
    second = jobs.claim_audit_events("replica-b")
    assert [event_from_json(t).request_id for _, t in second] == ["r-2"]  # not what a holds
    jobs.forget_audit_events([i for i, _ in second], "replica-b")
    assert jobs.claim_audit_events("replica-b") == []
    time.sleep(0.6)  # replica-a died holding its two: once its hold ends, b takes them
    taken = jobs.claim_audit_events("replica-b")
    assert taken == first
    jobs.forget_audit_events([i for i, _ in first], "replica-a")  # a late forget of a's removes nothing of b's
    jobs.release_audit_events([i for i, _ in taken], "replica-b")  # b could not forward them: free again
    assert jobs.claim_audit_events("replica-c") == first


def test_the_forwarder_writes_each_event_once_and_keeps_them_while_auth_is_down(jobs, monkeypatch):
    monkeypatch.setattr(audit_outbox, "RETRY_SECONDS", 0.05)
    trail: list[str] = []
    down = [2]

    async def write(events):  # the auth service's RecordAuditEvents, as the sink's write_at_once reaches it
        if down[0]:
            down[0] -= 1
            raise ConnectionError("auth is down")
        trail.extend(e.request_id for e in events)

    async def scenario():
        outbox = AuditOutbox(jobs, write, "replica-a")
        outbox.start()
        for n in range(5):
            await asyncio.to_thread(create, jobs, f"r-{n}")
            outbox.wake()
        deadline = time.monotonic() + 10
        while len(trail) < 5:
            assert time.monotonic() < deadline, trail
            await asyncio.sleep(0.02)
        create(jobs, "r-last")  # committed as the service stops: stop forwards it
        await outbox.stop()

    asyncio.run(scenario())
    assert sorted(trail) == ["r-0", "r-1", "r-2", "r-3", "r-4", "r-last"]
    assert jobs.claim_audit_events("checker") == []
