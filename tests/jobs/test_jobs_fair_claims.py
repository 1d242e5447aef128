"""Fair claiming across instances, on SQLite and PostgreSQL: the next job is the oldest queued one of
the instance with the fewest running, so a flooding instance runs beside the others, not ahead."""

from __future__ import annotations

import pytest

from qruntime_jobs.store import JobStore


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def queue(store: JobStore, instance: str, count: int) -> list[str]:
    return [store.create(instance=instance, owner="u", program_id="sampler", runtime="BUILTIN", backend="b",
                         inputs="{}", log_level="INFO", max_execution_seconds=60)[0].id for _ in range(count)]


def claims(store: JobStore, count: int, **limits) -> list[str]:
    claimed = [store.claim_next_queued("r", **limits) for _ in range(count)]
    return [job.instance if job else None for job in claimed]


def test_one_job_of_a_quiet_instance_runs_next_behind_a_flood(jobs):
    flood = queue(jobs, "crn:b", 50)
    assert claims(jobs, 4) == ["crn:b"] * 4  # the flood has the queue to itself, four run
    [mine] = queue(jobs, "crn:a", 1)
    claimed = jobs.claim_next_queued("r")
    assert claimed.id == mine  # not behind the 46 queued before it
    assert jobs.claim_next_queued("r").id == flood[4]  # then the flood's, oldest first


def test_instances_take_turns(jobs):
    queue(jobs, "crn:b", 3)
    queue(jobs, "crn:a", 3)
    queue(jobs, "crn:c", 1)
    assert claims(jobs, 8) == ["crn:b", "crn:a", "crn:c", "crn:b", "crn:a", "crn:b", "crn:a", None]


def test_an_instance_at_its_running_limit_waits_and_others_run(jobs):
    queue(jobs, "crn:b", 5)
    queue(jobs, "crn:a", 1)
    assert claims(jobs, 4, max_running_per_instance=2) == ["crn:b", "crn:a", "crn:b", None]
    first_b = next(j for j in jobs.list("crn:b", page_size=10)[0] if j.state == "RUNNING")
    assert jobs.end_attempt(first_b.id, 1, "DONE", result_json="1")  # one of b's ends: b may run one more
    assert claims(jobs, 1, max_running_per_instance=2) == ["crn:b"]
    assert claims(jobs, 1, max_running_per_instance=2) == [None]
