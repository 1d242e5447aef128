"""Qiskit's V2 primitives over the REST API: a sampler PUB in OpenQASM 3 as plain JSON, its typed result
back as JSON (packed bits in base64), and a bad PUB's error."""

from __future__ import annotations

import base64
import time

import pytest

pytestmark = pytest.mark.slow

BELL = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;'


def test_a_sampler_pub_in_openqasm_3_as_json_and_its_typed_result(rest):
    with rest.client() as http:
        created = http.post("/api/v1/jobs", json={"program_id": "sampler", "backend": "ibmq_qasm_simulator",
                                                  "primitive_input": {"sampler": {"pubs": [
                                                      {"circuit": {"qasm3": BELL}, "shots": 300}]}}})
        assert created.status_code == 200, created.text
        job = created.json()["job"]
        deadline = time.monotonic() + 60
        while http.get(f"/api/v1/jobs/{job['id']}").json()["job"]["state"] != "JOB_STATE_DONE":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        result = http.get(f"/api/v1/jobs/{job['id']}/results").json()
        [register] = result["primitive_result"]["sampler"]["pub_results"][0]["registers"]
        assert register["name"] == "c" and register["bits"]["num_shots"] == 300
        shots = base64.b64decode(register["bits"]["packed"])  # one byte a shot: 2 bits
        assert len(shots) == 300 and set(shots) <= {0b00, 0b11} and len(set(shots)) == 2

        bad = http.post("/api/v1/jobs", json={"program_id": "sampler", "backend": "ibmq_qasm_simulator",
                                              "primitive_input": {"sampler": {"pubs": [
                                                  {"circuit": {"qasm3": "OPENQASM 3.0; qubit q; nope q;"}}]}}})
        assert bad.status_code == 400, bad.text
        error = bad.json()["error"]
        assert error["reason"] == "INVALID_QASM" and "PUB 0" in error["message"]
