"""Sessions over the REST API, as plain JSON: create one, run a job in it, find the job by it, close it."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.slow


def test_a_session_over_http(rest):
    with rest.client() as http:
        created = http.post("/api/v1/sessions", json={"backend_name": "simulator_statevector",
                                                      "mode": "SESSION_MODE_DEDICATED", "max_time": "600s"})
        assert created.status_code == 200, created.text
        session = created.json()["session"]
        assert (session["state"], session["max_time"], session["accepting_jobs"]) == (
            "SESSION_STATE_OPEN", "600s", True)
        job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "inputs": '{"iterations": 1}',
                                              "session_id": session["id"]}).json()["job"]
        assert (job["session_id"], job["backend"]) == (session["id"], "simulator_statevector")
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/jobs/{job['id']}").json()["job"]["state"] != "JOB_STATE_DONE":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert http.get(f"/api/v1/sessions/{session['id']}").json()["session"]["state"] == "SESSION_STATE_ACTIVE"
        listed = http.get("/api/v1/jobs", params={"filter": f"session = {session['id']}"}).json()["jobs"]
        assert [j["id"] for j in listed] == [job["id"]]
        assert session["id"] in [s["id"] for s in http.get("/api/v1/sessions").json()["sessions"]]
        closed = http.post(f"/api/v1/sessions/{session['id']}/close").json()["session"]
        assert (closed["state"], closed["accepting_jobs"]) == ("SESSION_STATE_CLOSED", False)
        refused = http.post("/api/v1/jobs", json={"program_id": "hello-world", "session_id": session["id"]})
        assert refused.status_code != 200 and refused.json()["error"]["reason"] == "SESSION_NOT_ACCEPTING_JOBS"
        missing = http.get("/api/v1/sessions/nope")
        assert missing.status_code == 404 and missing.json()["error"]["reason"] == "SESSION_NOT_FOUND"
