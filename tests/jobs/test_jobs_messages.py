"""Store records as proto messages: times as protobuf's own conversions make them, and ListJobs pages
that reuse ended jobs' encoded messages without ever showing a stale one."""

from __future__ import annotations

import datetime as dt
import random
import time

from google.protobuf import duration_pb2, timestamp_pb2
from qruntime.jobs.v1 import job_pb2

from qruntime_jobs.messages import JobPages, duration, job_message, timestamp
from qruntime_jobs.store import DONE, JobStore, job_record

A = "crn:a"


def new_job(store: JobStore, **fields):
    values = {"instance": A, "owner": "u", "program_id": "sampler", "runtime": "BUILTIN", "backend": "b",
              "inputs": "{}", "log_level": "INFO", "max_execution_seconds": 60.0}
    return store.create(**{**values, **fields})[0]


def test_times_and_durations_are_protobufs_own():
    rng = random.Random(7)
    for _ in range(20_000):
        moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=rng.randrange(10**17))
        expected = timestamp_pb2.Timestamp()
        expected.FromDatetime(moment)
        assert timestamp(moment) == expected == timestamp(moment.replace(tzinfo=None))  # naive means UTC
        seconds = rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-2, 2), round(rng.uniform(0, 1e5), 6), 0.0])
        expected = duration_pb2.Duration()
        expected.FromTimedelta(dt.timedelta(seconds=seconds))
        assert duration(seconds) == expected, seconds


def test_a_page_is_the_jobs_messages_and_shows_their_tags_as_they_are_now(store):
    ended, running = new_job(store, tags=["a"]), new_job(store)
    store.claim_next_queued("r")
    store.end_attempt(ended.id, 1, DONE, result_json="{}")
    store.claim_next_queued("r")
    pages = JobPages()

    def page() -> list[job_pb2.Job]:
        rows, _ = store.list_rows(A, page_size=10)
        response = pages.response(rows, "next")
        assert response.next_page_token == "next"
        return list(response.jobs)

    first = page()
    jobs, _ = store.list(A, page_size=10)
    assert [j.id for j in first] == [running.id, ended.id]
    assert first[1] == job_message(jobs[1], job_pb2.JOB_VIEW_BASIC)  # an ended job's metrics are fixed
    time.sleep(0.01)
    second = page()
    assert second[1] == first[1]
    assert second[0].metrics.time_running.ToTimedelta() > first[0].metrics.time_running.ToTimedelta()
    store.set_tags(ended.id, ["b", "c"])
    assert list(page()[1].tags) == ["b", "c"]


def test_pages_stay_right_past_the_reuse_capacity(store):
    ids = []
    for _ in range(5):
        job = new_job(store)
        store.claim_next_queued("r")
        store.end_attempt(job.id, 1, DONE, result_json="{}")
        ids.append(job.id)
    pages = JobPages(capacity=2)
    for _ in range(3):
        rows, _ = store.list_rows(A, page_size=10)
        assert [j.id for j in pages.response(rows, "").jobs] == ids[::-1]


def test_a_page_from_rows_holds_the_messages_job_message_makes_of_their_records(database_url):
    """ListJobs' BASIC pages come from the store's rows (kept messages, or records made of rows): each job's
    message is the one its record makes, whatever it holds, ended or not, first listed or kept; on SQLite
    (naive times, tags joined by group_concat) as on PostgreSQL."""
    store = JobStore(database_url)
    try:
        _page_from_rows(store)
    finally:
        store.close()


def _page_from_rows(store: JobStore) -> None:
    ended = new_job(store, tags=["z", "a", "m"], request_id="r-1", trace_id="t")
    failed, running, queued = new_job(store), new_job(store, tags=["x"]), new_job(store, log_level="DEBUG")
    for _ in range(3):  # the three oldest run
        store.claim_next_queued("r")
    store.end_attempt(ended.id, 1, DONE, result_json="{}")
    store.end_attempt(failed.id, 1, "ERROR", reason="PROGRAM_ERROR", message="it broke: ü")
    pages = JobPages()
    for _ in range(2):  # made, then kept
        rows, _ = store.list_rows(A, page_size=10)
        records, _ = store.list(A, page_size=10)
        listed = list(pages.response(rows, "").jobs)
        assert [j.id for j in listed] == [queued.id, running.id, failed.id, ended.id]
        assert [job_record(row) for row in rows] == records == [store.get(j.id) for j in listed]
        for message, record in zip(listed[2:], records[2:], strict=True):  # ended: their metrics are fixed
            assert message == job_message(record, job_pb2.JOB_VIEW_BASIC)
        assert listed[3].tags == ["a", "m", "z"] and listed[2].reason_message == "it broke: ü"
        assert listed[1].state == job_pb2.JOB_STATE_RUNNING and listed[0].options.log_level == job_pb2.LOG_LEVEL_DEBUG
