"""The REST API end to end: the quick start's four calls with plain HTTP, and each bad input's
HTTP status and JSON error, against real services behind the real HTTP front door."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import httpx
import pytest

from qruntime_suite.rest import IAM_GRANT

# A suite with worker processes per module: seconds, so not in the fast set.
pytestmark = pytest.mark.slow


def error_of(response: httpx.Response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status and error["reason"] == reason, error
    assert error["message"]
    return error


def test_the_quick_starts_four_rest_calls(rest):
    with rest.client() as http:
        programs = http.get("/api/v1/programs").json()["programs"]  # List programs
        assert {"hello-world", "sampler", "estimator"} <= {p["id"] for p in programs}
        sampler = next(p for p in programs if p["id"] == "sampler")
        assert "circuits" in [i["name"] for i in sampler["inputs"]]

        backends = http.get("/api/v1/devices").json()["backends"]  # List your devices
        assert "ibmq_qasm_simulator" in [b["name"] for b in backends]
        assert http.get("/api/v1/backends").json() == {"backends": backends, "next_page_token": ""}

        created = http.post("/api/v1/jobs", json={  # Create job
            "program_id": "hello-world", "backend": "ibmq_qasm_simulator", "params": {"iterations": 1}},
            headers={"x-request-id": "quickstart-create-1"})
        assert created.status_code == 200, created.text
        assert created.headers["x-request-id"] == "quickstart-create-1"  # the services' logs carry it
        job = created.json()["job"]
        assert job["state"] == "JOB_STATE_QUEUED" and job["backend"] == "ibmq_qasm_simulator"

        deadline = time.monotonic() + 60
        while (details := http.get(f"/api/v1/jobs/{job['id']}").json()["job"])["state"] != "JOB_STATE_DONE":
            assert details["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING") and time.monotonic() < deadline
            time.sleep(0.2)  # List job details
        assert details["id"] == job["id"] and details["program_id"] == "hello-world"

        result = http.get(f"/api/v1/jobs/{job['id']}/results").json()
        assert json.loads(result["result"]) == "All done!"
        logs = http.get(f"/api/v1/jobs/{job['id']}/logs").json()["entries"]
        assert "Hello, World!" in [entry["message"] for entry in logs]
        listed = http.get("/api/v1/jobs", params={"program_id": "hello-world", "state": "JOB_STATE_DONE"}).json()
        assert job["id"] in [j["id"] for j in listed["jobs"]]


def test_a_jobs_events_stream_as_server_sent_events_until_its_final_state(rest, bell):
    from qruntime.encoding import dumps  # the client's encoding of circuits in inputs

    with rest.client() as http:
        job = http.post("/api/v1/jobs", json={"program_id": "sampler", "backend": "ibmq_qasm_simulator",
                                              "params": json.loads(dumps({"circuits": bell}))}).json()["job"]
        states, ended = [], False
        with http.stream("GET", f"/api/v1/jobs/{job['id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "end":
                    ended = True
                elif line.startswith("data: "):
                    for item in json.loads(line[6:])["events"]:
                        if "state_change" in item:
                            states.append(item["state_change"]["state"])
        assert ended and states[0] == "JOB_STATE_QUEUED" and states[-1] == "JOB_STATE_DONE"
        counts = json.loads(http.get(f"/api/v1/jobs/{job['id']}/results").json()["result"])
        assert set(counts["quasi_dists"][0]) == {"00", "11"}


def test_cancel_and_delete(rest):
    with rest.client() as http:
        job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "params": {"iterations": 30}}).json()["job"]
        cancelled = http.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["job"]["state"] == "JOB_STATE_CANCELLED"
        assert http.delete(f"/api/v1/jobs/{job['id']}").json() == {}
        gone = http.get(f"/api/v1/jobs/{job['id']}")
        error_of(gone, 404, "JOB_NOT_FOUND")
        assert gone.headers["x-request-id"]


def test_a_token_from_the_identity_endpoint_looks_like_iams(rest):
    response = httpx.post(f"{rest.url}/identity/token", data={
        "grant_type": IAM_GRANT, "apikey": rest.suite.api_key, "instance": rest.suite.instance})
    token = response.json()
    assert token["token_type"] == "Bearer" and 3000 < token["expires_in"] <= 3600
    assert abs(token["expiration"] - time.time() - token["expires_in"]) < 5
    assert token["instance"]["crn"] == rest.suite.instance


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "INVALID_JSON"),
    (b"[1, 2]", "INVALID_JSON"),
    (b'{"program_id": "hello-world", "colour": "blue"}', "INVALID_REQUEST"),  # unknown field
    (b'{"program_id": 7}', "INVALID_REQUEST"),  # wrong type
    (b'{"program_id": "hello-world", "params": {"iterations": "many"}}', "INVALID_INPUTS"),
])
def test_bad_bodies_are_400_with_a_reason(rest, body, reason):
    with rest.client() as http:
        error = error_of(http.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"}),
                         400, reason)
        if reason == "INVALID_INPUTS":
            assert error["field_violations"][0]["field"] == "inputs.iterations"


def test_bad_query_parameters_are_400(rest):
    with rest.client() as http:
        error_of(http.get("/api/v1/jobs", params={"colour": "blue"}), 400, "UNKNOWN_PARAMETER")
        error_of(http.get("/api/v1/jobs", params={"page_size": "many"}), 400, "INVALID_REQUEST")
        error_of(http.get("/api/v1/jobs", params={"filter": "state = SOMETIMES"}), 400, "INVALID_FILTER")


def test_signing_in_wrong_is_401_or_400(rest):
    assert error_of(httpx.get(f"{rest.url}/api/v1/programs"), 401, "TOKEN_MISSING")
    response = httpx.get(f"{rest.url}/api/v1/programs", headers={"Authorization": "Bearer not-a-token"})
    assert error_of(response, 401, "TOKEN_INVALID") and response.headers["WWW-Authenticate"] == "Bearer"
    token = f"{rest.url}/identity/token"
    error_of(httpx.post(token, data={"grant_type": "password", "apikey": "x"}), 400, "UNSUPPORTED_GRANT_TYPE")
    error_of(httpx.post(token, data={"grant_type": IAM_GRANT, "apikey": "qrk_nope", "instance": "x"}), 401,
             "API_KEY_INVALID")


def test_forbidden_calls_are_403(rest):
    reader_key, instance = rest.suite.make_user(role="reader", instance_name="readers")
    with rest.client(reader_key, instance) as http:
        assert http.get("/api/v1/programs").status_code == 200
        error_of(http.post("/api/v1/jobs", json={"program_id": "hello-world"}), 403, "ACTION_NOT_ALLOWED")
    with rest.client() as http:  # a Service-CRN of an instance of another account
        error_of(http.get("/api/v1/jobs", headers={"Service-CRN": instance}), 404, "INSTANCE_NOT_FOUND")


def test_unknown_things_are_404_and_wrong_methods_405(rest):
    with rest.client() as http:
        error_of(http.get("/api/v1/jobs/no-such-job"), 404, "JOB_NOT_FOUND")
        error_of(http.get("/api/v1/programs/no-such-program"), 404, "PROGRAM_NOT_FOUND")
        error_of(http.get("/api/v1/backends/no-such-backend"), 404, "BACKEND_NOT_FOUND")
        error_of(http.get("/api/v1/no/such/route"), 404, "ROUTE_NOT_FOUND")
        response = http.patch("/api/v1/jobs")
        error_of(response, 405, "METHOD_NOT_ALLOWED")
        assert set(response.headers["Allow"].split(", ")) == {"GET", "POST"}


def test_a_large_body_is_parsed_and_checked_like_a_small_one(rest):
    with rest.client() as http:  # past the size converted off the event loop
        big = {"program_id": "hello-world", "params": {"iterations": 1, "padding": "x" * 400_000}}
        error = error_of(http.post("/api/v1/jobs", json=big), 400, "INVALID_INPUTS")
        assert "padding" in json.dumps(error["field_violations"])


def test_a_body_past_the_limit_is_413(rest):
    from qruntime_suite import rest as front_door

    with rest.client() as http:
        response = http.post("/api/v1/jobs", content=b"{" + b" " * front_door.MAX_BODY_BYTES + b"}",
                             headers={"content-type": "application/json"})
        assert error_of(response, 413, "REQUEST_TOO_LARGE")["metadata"]["max_bytes"] == str(front_door.MAX_BODY_BYTES)


def test_too_many_token_requests_are_429_with_retry_after(rest):
    from qruntime_auth.keys import new_api_key

    unknown = new_api_key()  # well formed, so the per-key limit (bursts of 20) counts it
    statuses = []
    for _ in range(300):  # faster than the limit refills (5 a second)
        response = httpx.post(f"{rest.url}/identity/token",
                              data={"grant_type": IAM_GRANT, "apikey": unknown, "instance": "x"})
        statuses.append(response.status_code)
        if response.status_code == 429:
            error = error_of(response, 429, "TOO_MANY_TOKEN_REQUESTS")
            assert error["retry_after_seconds"] > 0 and int(response.headers["Retry-After"]) >= 1
            break
    assert statuses[0] == 401 and statuses[-1] == 429


def test_a_watch_of_an_unknown_job_is_a_json_404_not_a_stream(rest):
    with rest.client() as http:
        response = http.get("/api/v1/jobs/no-such-job/events")
        error_of(response, 404, "JOB_NOT_FOUND")


def test_inputs_past_one_message_go_up_in_chunks_and_come_back_over_http(rest):
    content = json.dumps({"iterations": 1}).encode() + b" " * 3000  # bytes travel as base64 in JSON

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    with rest.client() as http:
        made = http.post("/api/v1/input_uploads", json={
            "total_bytes": len(content), "sha256": b64(hashlib.sha256(content).digest()),
            "content": "INPUT_UPLOAD_CONTENT_JSON_INPUTS"})
        assert made.status_code == 200, made.text
        upload = made.json()["upload"]
        assert upload["received_bytes"] == "0" and int(upload["max_chunk_bytes"]) == 16 * 1024 * 1024
        chunks = f"/api/v1/input_uploads/{upload['id']}/chunks"
        error_of(http.post(chunks, json={"offset": 2000, "data": b64(content[2000:])}), 400, "INVALID_UPLOAD_OFFSET")
        for offset in (0, 2000):
            sent = http.post(chunks, json={"offset": offset, "data": b64(content[offset:offset + 2000])})
            assert sent.status_code == 200, sent.text
        assert sent.json()["upload"]["received_bytes"] == str(len(content))
        job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "backend": "ibmq_qasm_simulator",
                                              "input_upload_id": upload["id"]}).json()["job"]
        inputs = http.get(f"/api/v1/jobs/{job['id']}/inputs").json()
        assert inputs["inputs"].encode() == content and inputs["next_offset"] == "0"
        assert base64.b64decode(inputs["sha256"]) == hashlib.sha256(content).digest()
        error_of(http.post("/api/v1/jobs", json={"program_id": "hello-world", "input_upload_id": upload["id"]}),
                 404, "INPUT_UPLOAD_NOT_FOUND")
