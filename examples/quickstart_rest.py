"""The quick start's REST calls (list programs, list your devices, create a job, list job details)
with nothing but the standard library, against a qruntime suite's HTTP port.

    python examples/quickstart_rest.py --bootstrap DIR/bootstrap.json
    python examples/quickstart_rest.py --apikey API_KEY --instance CRN --url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path


def call(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data else {}), **(headers or {})})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=Path, help="bootstrap.json written by `qruntime up`")
    parser.add_argument("--apikey", help="API key")
    parser.add_argument("--instance", help="instance CRN")
    parser.add_argument("--url", help="the suite's HTTP URL, e.g. http://127.0.0.1:8080")
    args = parser.parse_args()
    if args.bootstrap:
        bootstrap = json.loads(args.bootstrap.read_text())
        args.apikey, args.instance, args.url = bootstrap["api_key"], bootstrap["instance"], bootstrap["http_url"]
    if not (args.apikey and args.instance and args.url):
        parser.error("give --bootstrap, or --apikey, --instance and --url")

    # IBM Cloud IAM's exchange: the API key alone for a bearer token; each call names its instance.
    form = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": args.apikey})
    request = urllib.request.Request(f"{args.url}/identity/token", data=form.encode())
    with urllib.request.urlopen(request, timeout=60) as response:
        token = json.load(response)["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Service-CRN": args.instance}

    print("== List programs")
    print([p["id"] for p in call(f"{args.url}/api/v1/programs", headers=headers)["programs"]])
    print("== List your devices")
    print([b["name"] for b in call(f"{args.url}/api/v1/devices", headers=headers)["backends"]])
    print("== Create job")
    job = call(f"{args.url}/api/v1/jobs", "POST", {"program_id": "hello-world", "backend": "ibmq_qasm_simulator",
                                                   "params": {"iterations": 1}}, headers)["job"]
    print(f"job id: {job['id']}")
    print("== List job details")
    while job["state"] in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING"):
        time.sleep(0.2)
        job = call(f"{args.url}/api/v1/jobs/{job['id']}", headers=headers)["job"]
    print(f"state: {job['state']}")
    result = call(f"{args.url}/api/v1/jobs/{job['id']}/results", headers=headers)["result"]
    print(f"result: {json.loads(result)}")


if __name__ == "__main__":
    main()
