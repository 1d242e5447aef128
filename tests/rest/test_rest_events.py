"""A job's events as server-sent events: numbered with the job's event sequence (`id:`), resumed from
the Last-Event-ID header as a reconnecting EventSource sends it, and kept open with keep-alive
comments while nothing happens; against real services behind the real HTTP front door."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from test_rest_api import error_of

from qruntime_suite import rest as front_door

pytestmark = pytest.mark.slow  # a suite with worker processes per module


def blocks(stream: httpx.Response) -> Iterator[dict]:
    """The stream's events as {"id", "event", "data", "comment"}, one per blank-line-ended block."""
    block: dict = {}
    for line in stream.iter_lines():
        if not line:
            if block:
                yield block
            block = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            block["comment"] = value
        else:
            block[name] = block.get(name, "") + value


def follow(http: httpx.Client, job_id: str, **headers: str) -> list[dict]:
    """Every block of the job's stream until its end."""
    with http.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as stream:
        assert stream.status_code == 200, stream.read()
        return list(blocks(stream))


def sequences(block: dict) -> list[int]:
    """The numbers of the block's events; a queue position is not an event of the job's history (it
    carries the number of the last event before it, and comes when the job waited long enough)."""
    return [int(event["sequence"]) for event in json.loads(block["data"])["events"] if "queue_position" not in event]


def test_events_are_numbered_and_last_event_id_resumes_after_the_one_named(rest):
    with rest.client() as http:
        job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "backend": "ibmq_qasm_simulator",
                                              "params": {"iterations": 3}}).json()["job"]
        seen = follow(http, job["id"])
        assert seen[-1] == {"event": "end", "data": "{}"}
        numbered = [b for b in seen if "event" not in b and "comment" not in b and sequences(b)]
        assert all(int(b["id"]) == max(sequences(b)) for b in numbered)
        history = [s for b in numbered for s in sequences(b)]
        assert history == list(range(1, len(history) + 1)) and len(history) >= 6  # states, logs, results

        middle = numbered[len(numbered) // 2]["id"]
        resumed = follow(http, job["id"], **{"Last-Event-ID": middle})
        replayed = [s for b in resumed if "data" in b and b.get("event") != "end" for s in sequences(b)]
        assert replayed == history[int(middle):]  # nothing missed, nothing twice
        # A reconnecting EventSource asks the same URL again: the header wins over an older query.
        with http.stream("GET", f"/api/v1/jobs/{job['id']}/events", params={"after_sequence": 1},
                         headers={"Last-Event-ID": middle}) as stream:
            first = next(b for b in blocks(stream) if "data" in b)
        assert sequences(first)[0] == int(middle) + 1
        error_of(http.get(f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "yesterday"}), 400,
                 "INVALID_LAST_EVENT_ID")


def test_a_quiet_stream_gets_keep_alive_comments_until_its_job_ends(rest, monkeypatch):
    monkeypatch.setattr(front_door, "KEEPALIVE_SECONDS", 0.3)
    with rest.client() as http:
        status = "/api/v1/backends/simulator_mps/status"
        assert http.put(status, json={"operational": False, "reason": "keep-alive test"}).status_code == 200
        try:  # its runs wait: the job's stream goes quiet once the program has started
            job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "backend": "simulator_mps",
                                                  "params": {"iterations": 1}}).json()["job"]
            comments, states, ended = 0, [], False
            with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
                for block in blocks(stream):
                    if block.get("comment") == "keep-alive":
                        comments += 1
                        if comments == 3:
                            assert http.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200
                    elif block.get("event") == "end":
                        ended = True
                    else:
                        states += [e["state_change"]["state"] for e in json.loads(block["data"])["events"]
                                   if "state_change" in e]
        finally:
            http.put(status, json={"operational": True})
    assert comments >= 3 and ended and states[-1] == "JOB_STATE_CANCELLED"
