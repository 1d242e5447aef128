"""`qruntime up` and `qruntime gateway` serve the REST API, its document and the console on their HTTP port."""

from __future__ import annotations

import json
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qruntime_suite import launch
from qruntime_suite.rest import IAM_GRANT, OPENAPI_FILE

pytestmark = pytest.mark.slow  # real processes
EXAMPLE = Path(__file__).parents[2] / "examples" / "quickstart_rest.py"


def list_backends(http_url: str, bootstrap: dict) -> list[str]:
    token = httpx.post(f"{http_url}/identity/token",  # the API key alone; the instance named per call
                       data={"grant_type": IAM_GRANT, "apikey": bootstrap["api_key"]}).json()
    response = httpx.get(f"{http_url}/api/v1/backends", headers={
        "Authorization": f"Bearer {token['access_token']}", "Service-CRN": bootstrap["instance"]})
    assert response.status_code == 200, response.text
    return [b["name"] for b in response.json()["backends"]]


def test_qruntime_up_serves_http_and_writes_its_url_to_bootstrap_json(tmp_path):
    launched = launch.embedded(tmp_path / "data")
    try:
        bootstrap = launched.bootstrap
        assert bootstrap["http_url"].startswith("http://127.0.0.1:") and bootstrap["http_url"] == launched.http_url
        assert stat.S_IMODE((launched.data_dir / "bootstrap.json").stat().st_mode) == 0o600
        assert "ibmq_qasm_simulator" in list_backends(launched.http_url, bootstrap)
        assert httpx.get(f"{launched.http_url}/api/openapi.json").json() == json.loads(OPENAPI_FILE.read_text())
        for page, marker in [("/api/docs", "swagger-ui-bundle.js"), ("/console/", "alpine.min.js")]:
            response = httpx.get(f"{launched.http_url}{page}")
            assert response.status_code == 200 and marker in response.text
        assert httpx.get(f"{launched.http_url}/static/vendor/alpine.min.js").status_code == 200
        bootstrap_file = str(launched.data_dir / "bootstrap.json")
        example = subprocess.run([sys.executable, str(EXAMPLE), "--bootstrap", bootstrap_file],
                                 capture_output=True, text=True, timeout=120)
        assert example.returncode == 0, example.stderr
        assert "ibmq_qasm_simulator" in example.stdout and "state: JOB_STATE_DONE" in example.stdout
        assert "result: All done!" in example.stdout
    finally:
        codes = launched.stop()
    assert codes == {"suite": 0}


def test_qruntime_up_stops_cleanly_while_a_browser_follows_a_job(tmp_path):
    launched = launch.embedded(tmp_path / "data")
    bootstrap = launched.bootstrap
    token = httpx.post(f"{launched.http_url}/identity/token", data={
        "grant_type": IAM_GRANT, "apikey": bootstrap["api_key"], "instance": bootstrap["instance"]}).json()
    http = httpx.Client(base_url=launched.http_url, headers={"Authorization": f"Bearer {token['access_token']}"})
    job = http.post("/api/v1/jobs", json={"program_id": "hello-world", "params": {"iterations": 100000}}).json()["job"]
    lines: list[str] = []
    with http.stream("GET", f"/api/v1/jobs/{job['id']}/events", timeout=30) as stream:
        lines.append(next(stream.iter_lines()))  # the stream is open and the job's history arrived
        start = time.monotonic()
        codes = launched.stop()
    assert codes == {"suite": 0} and time.monotonic() - start < 20
    assert lines[0].startswith("id: ")  # the first event's number, then its data


def test_the_gateway_serves_the_rest_api_of_the_services_behind_it(tmp_path):
    launched = launch.separate(tmp_path / "data")
    try:
        bootstrap = launched.bootstrap  # written by auth, which is told the gateway's HTTP URL
        assert bootstrap["http_url"] == launched.http_url and bootstrap["url"] == launched.url
        assert "ibmq_qasm_simulator" in list_backends(bootstrap["http_url"], bootstrap)
    finally:
        launched.stop()


def test_with_a_certificate_the_http_port_serves_https(tmp_path):
    from e2e.test_tls import make_ca_and_certificate  # the TLS tests' CA and certificate for 127.0.0.1

    pki = make_ca_and_certificate(tmp_path / "pki")
    env = {"QRUNTIME_TLS_CERT_FILE": str(pki["cert"]), "QRUNTIME_TLS_KEY_FILE": str(pki["key"]),
           "QRUNTIME_TLS_CA_FILE": str(pki["ca"])}
    launched = launch.embedded(tmp_path / "data", extra_env=env)
    trusted = ssl.create_default_context(cafile=str(pki["ca"]))
    try:
        assert launched.http_url.startswith("https://127.0.0.1:")
        token = httpx.post(f"{launched.http_url}/identity/token", verify=trusted, data={
            "grant_type": IAM_GRANT, "apikey": launched.bootstrap["api_key"],
            "instance": launched.bootstrap["instance"]}).json()["access_token"]
        response = httpx.get(f"{launched.http_url}/api/v1/programs", verify=trusted,
                             headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200 and response.json()["programs"]
        with pytest.raises(httpx.HTTPError):  # never plaintext beside it
            httpx.get(launched.http_url.replace("https:", "http:") + "/api/v1/programs")
    finally:
        launched.stop()
