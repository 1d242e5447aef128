"""Input hygiene of the jobs store, on SQLite and PostgreSQL: page tokens past a BIGINT and NULs in
the messages a job ends with are the caller's problem or escaped, never a server error."""

from __future__ import annotations

import base64
import json

import pytest

from qruntime_jobs.store import ERROR, JobStore
from qruntime_kit.errors import InvalidArgument


@pytest.fixture
def jobs(database_url):
    store = JobStore(database_url)
    yield store
    store.close()


def new_job(store: JobStore):
    return store.create(instance="crn:a", owner="u", program_id="sampler", runtime="BUILTIN", backend="b",
                        inputs="{}", log_level="INFO", max_execution_seconds=60)[0]


@pytest.mark.parametrize("after", [2**63, -(2**63) - 1, 10**30])
def test_a_page_token_past_a_bigint_is_invalid_not_internal(jobs, after):
    job = new_job(jobs)
    token = base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode()
    for page in (jobs.list_logs, jobs.list_interim_results):
        with pytest.raises(InvalidArgument) as caught:
            page(job.id, page_size=10, page_token=token)
        assert caught.value.reason == "INVALID_PAGE_TOKEN"
    edge = base64.urlsafe_b64encode(json.dumps({"after": 2**63 - 1}).encode()).decode()
    assert jobs.list_logs(job.id, page_size=10, page_token=edge) == ([], "")  # the largest BIGINT is fine


def test_a_nul_in_an_ending_message_is_stored_escaped(jobs):
    first, second = new_job(jobs), new_job(jobs)
    jobs.claim_next_queued("r")
    assert jobs.end_attempt(first.id, 1, ERROR, "PROGRAM_ERROR", "circuit 'bell\x00' is not valid")
    assert jobs.finish(second.id, ERROR, "PROGRAM_ERROR", "circuit 'a\x00b'")
    assert jobs.get(first.id).reason_message == "circuit 'bell\\x00' is not valid"
    assert jobs.get(second.id).reason_message == "circuit 'a\\x00b'"
