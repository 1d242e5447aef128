"""Store records as proto messages: times as protobuf's own conversions make them, and ListJobs pages
that reuse ended jobs' encoded messages without ever showing a stale one."""

from __future__ import annotations

import datetime as dt
import random
import time

from google.protobuf import duration_pb2, timestamp_pb2
from qruntime.jobs.v1 import job_pb2

from qruntime_jobs.messages import JobPages, duration, job_message, timestamp
from qruntime_jobs.store import DONE, JobStore

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
        jobs, _ = store.list(A, page_size=10)
        response = pages.response(jobs, "next")
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
        jobs, _ = store.list(A, page_size=10)
        assert [j.id for j in pages.response(jobs, "").jobs] == ids[::-1]
