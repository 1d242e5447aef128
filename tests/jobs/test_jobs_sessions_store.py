"""Sessions and batches in the JobStore, on SQLite and PostgreSQL: how their jobs are claimed (a
dedicated session's one at a time and ahead of the queue while it is active, a batch's in parallel),
and how they move on (idle timeout, max_time, close, cancel)."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import time

import pytest

from qruntime_jobs import store as store_module
from qruntime_jobs.filters import parse_filter
from qruntime_jobs.store import (
    ACTIVE,
    BATCH,
    CANCELLED,
    CLOSED,
    DEDICATED,
    DONE,
    INACTIVE,
    OPEN,
    QUEUED,
    RUNNING,
    JobStore,
)
from qruntime_kit.errors import FailedPrecondition, NotFound

A, B = "crn:a", "crn:b"


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def session(store: JobStore, mode: str = DEDICATED, max_seconds: float = 3600, idle_seconds: float = 60,
            instance: str = A):
    return store.create_session(instance=instance, owner="u", backend="b", mode=mode, max_seconds=max_seconds,
                                idle_seconds=idle_seconds)


def queue(store: JobStore, instance: str = A, count: int = 1, session_id: str = "") -> list[str]:
    return [store.create(instance=instance, owner="u", program_id="sampler", runtime="BUILTIN", backend="b",
                         inputs="{}", log_level="INFO", max_execution_seconds=60, session_id=session_id)[0].id
            for _ in range(count)]


def claim(store: JobStore) -> str | None:
    job = store.claim_next_queued("r")
    return job.id if job else None


def end(store: JobStore, job_id: str) -> None:
    assert store.end_attempt(job_id, store.get(job_id).attempts, DONE, result_json="1")


def test_a_new_session_is_open_and_accepts_jobs(jobs):
    s = session(jobs, max_seconds=600, idle_seconds=30)
    assert (s.state, s.accepting_jobs, s.mode, s.backend, s.owner) == (OPEN, True, DEDICATED, "b", "u")
    assert (s.max_seconds, s.idle_seconds, s.start_time, s.expire_time, s.usage_seconds) == (600, 30, None, None, 0)
    [job_id] = queue(jobs, session_id=s.id)
    assert jobs.get(job_id).session_id == s.id
    assert jobs.get_session(s.id, instance=A).queued_jobs == 1
    with pytest.raises(NotFound) as caught:
        jobs.get_session(s.id, instance=B)
    assert caught.value.reason == "SESSION_NOT_FOUND"


def test_a_dedicated_session_runs_its_jobs_one_at_a_time_in_order(jobs):
    s = session(jobs)
    first, second, third = queue(jobs, count=3, session_id=s.id)
    assert claim(jobs) == first
    started = jobs.get_session(s.id)
    assert started.state == ACTIVE and started.start_time is not None
    assert started.expire_time == started.start_time + dt.timedelta(seconds=3600)
    assert (started.queued_jobs, started.running_jobs) == (2, 1)
    assert claim(jobs) is None  # the next waits for the first to end
    end(jobs, first)
    assert claim(jobs) == second
    assert claim(jobs) is None
    end(jobs, second)
    assert claim(jobs) == third


def test_an_active_sessions_jobs_run_ahead_of_the_queue_but_its_first_waits_its_turn(jobs):
    s = session(jobs)
    flood = queue(jobs, B, 5)
    [first] = queue(jobs, session_id=s.id)
    # Its first job starts in turn, fairly: instance A has nothing running, so it is next anyway;
    # the point is that an OPEN session has no priority over jobs of its own instance queued before.
    [older_mine] = queue(jobs, A, 1)
    assert claim(jobs) == flood[0]
    assert claim(jobs) == first  # A's oldest job is the session's
    more = queue(jobs, B, 3)
    [second] = queue(jobs, session_id=s.id)
    end(jobs, first)
    assert claim(jobs) == second  # the session is ACTIVE: ahead of the 7 older jobs of B and A's own
    assert claim(jobs) == flood[1]  # then fairly again: A and B run one each, B's job waited longest
    assert claim(jobs) == older_mine and more


def test_a_batch_runs_its_jobs_in_parallel_without_priority(jobs):
    b = session(jobs, BATCH)
    [other] = queue(jobs, B, 1)
    mine = queue(jobs, count=3, session_id=b.id)
    assert [claim(jobs) for _ in range(4)] == [other, *mine]  # all four at once, in fair order
    assert jobs.get_session(b.id).running_jobs == 3
    for job_id in mine:
        end(jobs, job_id)
    assert jobs.get_session(b.id).usage_seconds >= 0  # the sum of its jobs' usage


def test_an_idle_session_loses_its_priority_and_becomes_inactive_until_its_next_job_starts(jobs):
    s = session(jobs, idle_seconds=0.3)
    [first] = queue(jobs, session_id=s.id)
    assert claim(jobs) == first
    end(jobs, first)
    assert jobs.sweep_sessions() == 0  # within its idle time: still ACTIVE
    assert jobs.get_session(s.id).state == ACTIVE
    time.sleep(0.4)
    [others] = queue(jobs, B, 1)
    [late] = queue(jobs, session_id=s.id)  # came after the idle deadline: no priority
    assert jobs.sweep_sessions() == 1
    inactive = jobs.get_session(s.id)
    assert inactive.state == INACTIVE and inactive.accepting_jobs
    assert inactive.usage_seconds == pytest.approx(
        (inactive.last_job_end_time - inactive.activate_time).total_seconds() + 0.3, abs=0.05)
    assert claim(jobs) == others  # B's job was queued first and B runs nothing
    assert claim(jobs) == late
    assert jobs.get_session(s.id).state == ACTIVE


def test_past_max_time_queued_jobs_are_cancelled_running_ones_run_on_and_no_job_is_accepted(jobs):
    s = session(jobs, max_seconds=0.3, idle_seconds=0.3)
    first, second = queue(jobs, count=2, session_id=s.id)
    assert claim(jobs) == first
    time.sleep(0.4)
    end(jobs, first)
    assert claim(jobs) is None  # past max_time, its queued job never starts
    assert jobs.sweep_sessions() == 1
    closed = jobs.get_session(s.id)
    assert (closed.state, closed.accepting_jobs) == (CLOSED, False) and closed.close_time == closed.expire_time
    assert "max_time" in closed.close_reason
    job = jobs.get(second)
    assert (job.state, job.reason) == (CANCELLED, "SESSION_EXPIRED") and s.id in job.reason_message
    with pytest.raises(FailedPrecondition) as caught:
        queue(jobs, session_id=s.id)
    assert caught.value.reason == "SESSION_NOT_ACCEPTING_JOBS"


def test_a_running_job_of_an_expired_session_runs_to_its_end(jobs):
    s = session(jobs, max_seconds=0.2, idle_seconds=0.2)
    [running] = queue(jobs, session_id=s.id)
    assert claim(jobs) == running
    time.sleep(0.3)
    assert jobs.sweep_sessions() == 1
    assert jobs.get(running).state == RUNNING
    end(jobs, running)
    assert jobs.get(running).state == DONE


def test_close_refuses_new_jobs_runs_the_queued_ones_then_closes(jobs):
    s = session(jobs)
    first, second = queue(jobs, count=2, session_id=s.id)
    assert claim(jobs) == first
    closing = jobs.close_session(s.id, instance=A)
    assert (closing.state, closing.accepting_jobs, closing.close_reason) == (ACTIVE, False, "closed by the user")
    with pytest.raises(FailedPrecondition) as caught:
        queue(jobs, session_id=s.id)
    assert caught.value.reason == "SESSION_NOT_ACCEPTING_JOBS" and caught.value.metadata["session_id"] == s.id
    end(jobs, first)
    assert claim(jobs) == second  # queued before the close: it still runs
    assert jobs.sweep_sessions() == 0
    end(jobs, second)
    assert jobs.sweep_sessions() == 1
    closed = jobs.get_session(s.id)
    assert closed.state == CLOSED and closed.close_time is not None and closed.usage_seconds > 0
    assert jobs.close_session(s.id).close_time == closed.close_time  # closing again changes nothing


def test_closing_an_unused_session_closes_it_at_once(jobs):
    s = session(jobs)
    closed = jobs.close_session(s.id)
    assert (closed.state, closed.accepting_jobs) == (CLOSED, False) and closed.close_time is not None


def test_cancel_ends_the_session_and_its_queued_and_running_jobs(jobs):
    b = session(jobs, BATCH)
    first, second, third = queue(jobs, count=3, session_id=b.id)
    assert claim(jobs) == first and claim(jobs) == second
    cancelled, running = jobs.cancel_session(b.id, instance=A)
    assert (cancelled.state, cancelled.accepting_jobs, cancelled.close_reason) == (CLOSED, False,
                                                                                   "cancelled by the user")
    assert sorted(running) == sorted([first, second])
    for job_id in (first, second, third):
        job = jobs.get(job_id)
        assert (job.state, job.reason, job.reason_message) == (CANCELLED, "CANCELLED_BY_USER",
                                                               "the session was cancelled")
    assert not jobs.end_attempt(first, 1, DONE, result_json="1")  # the cancelled attempt writes nothing
    assert (cancelled.queued_jobs, cancelled.running_jobs) == (0, 0)


def test_sessions_are_listed_newest_first_by_page_and_filter(jobs):
    made = [session(jobs).id for _ in range(3)] + [session(jobs, instance=B).id]
    jobs.close_session(made[0])
    page, token = jobs.list_sessions(A, page_size=2)
    assert [s.id for s in page] == made[2:0:-1] and token
    rest, token = jobs.list_sessions(A, page_size=2, page_token=token)
    assert [s.id for s in rest] == [made[0]] and not token
    assert [s.id for s in jobs.list_sessions(A, page_size=10, state=CLOSED)[0]] == [made[0]]
    assert [s.id for s in jobs.list_sessions(None, page_size=10, backend="b")[0]][0] == made[3]


@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_sessions_created_together_are_paged_apart_without_repeats_or_gaps(jobs, monkeypatch, page_size):
    start, now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), [None]
    monkeypatch.setattr(store_module, "utcnow", lambda: now[0])
    made = []
    for i in range(8):  # three in each of the first two microseconds, then two
        now[0] = start + dt.timedelta(microseconds=i // 3)
        made.append(session(jobs))
        session(jobs, instance=B)  # another instance's, created with them
    newest = [s.id for s in sorted(made, key=lambda s: (s.create_time, s.id), reverse=True)]
    seen, token = [], ""
    while True:
        page, token = jobs.list_sessions(A, page_size=page_size, page_token=token)
        assert len(page) <= page_size
        seen.extend(s.id for s in page)
        if not token:
            break
    assert seen == newest


def test_jobs_are_listed_by_session(jobs):
    s = session(jobs)
    mine = queue(jobs, count=2, session_id=s.id)
    queue(jobs, count=2)
    for text in (f"session = {s.id}", f'session_id IN ("{s.id}", other)'):
        listed, _ = jobs.list(A, page_size=10, where=parse_filter(text, caller="u"))
        assert sorted(j.id for j in listed) == sorted(mine)


def test_concurrent_claimers_never_run_two_jobs_of_a_dedicated_session(jobs):
    s = session(jobs)
    mine = queue(jobs, count=6, session_id=s.id)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        claimed = [f.result() for f in [pool.submit(claim, jobs) for _ in range(8)]]
    assert [job_id for job_id in claimed if job_id] == [mine[0]]
    assert [j.state for j in jobs.get_many(mine)] == [RUNNING] + [QUEUED] * 5


def test_a_session_job_whose_replica_died_runs_again_first_and_alone(jobs):
    s = session(jobs)
    first, second = queue(jobs, count=2, session_id=s.id)
    assert claim(jobs) == first
    [waiting] = queue(jobs, B, 1)
    assert [j.id for j in jobs.requeue_running()] == [first]  # its replica died: back to the queue
    assert jobs.get_session(s.id).state == ACTIVE
    assert claim(jobs) == first  # ahead of B's job, and before its own second
    assert claim(jobs) == waiting and claim(jobs) is None


def test_replicas_sweeping_together_move_a_session_once(database_url):
    replicas = [JobStore(database_url) for _ in range(3)]
    try:
        s = session(replicas[0], max_seconds=0.2, idle_seconds=0.2)
        first, *rest = queue(replicas[0], count=4, session_id=s.id)
        assert claim(replicas[0]) == first
        time.sleep(0.3)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            moved = [f.result() for f in [pool.submit(r.sweep_sessions) for r in replicas]]
        assert sum(moved) == 1
        assert [replicas[1].get(job_id).reason for job_id in rest] == ["SESSION_EXPIRED"] * 3
        assert [e.state for e in replicas[2].events_after(rest[0], 0)] == [QUEUED, CANCELLED]  # ended once
    finally:
        for replica in replicas:
            replica.close()


def test_a_sessions_priority_stays_within_its_instances_running_limit(jobs):
    s = session(jobs)
    [first] = queue(jobs, session_id=s.id)
    assert claim(jobs) == first
    end(jobs, first)  # the session is ACTIVE
    [own] = queue(jobs, A, 1)
    assert claim(jobs) == own  # A runs one job
    [second] = queue(jobs, session_id=s.id)
    assert jobs.claim_next_queued("r", max_running_per_instance=1) is None
    assert claim(jobs) == second  # without the limit it goes first
