"""What the HTTP/JSON front door costs: creating a job and reading it back over REST against the same
two calls over gRPC, in one run against one `qruntime up` process.

Each round creates a hello-world job (iterations 0, so what it runs is trivial) and gets it: over gRPC
with the generated stubs (CreateJob, GetJob), then over HTTP with httpx on a kept-alive connection
(POST /api/v1/jobs, GET /api/v1/jobs/{id}), once with a token of the instance and once with the
account's token and the instance in Service-CRN (exchanged by the front door, then cached). The paths
take turns in an order rotated round by round, so the jobs running in the background load them
alike. The gRPC path is the baseline: the ratio is what transcoding (HTTP parsing, JSON <-> proto, one
more loopback hop inside the suite's process) adds.

    .venv/bin/python -W ignore bench/bench_http.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2, jobs_service_pb2_grpc

from qruntime_suite import launch
from qruntime_suite.rest import IAM_GRANT


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, launch.running(launch.embedded(Path(tmp) / "data")) as suite:
        bootstrap = suite.bootstrap
        channel = grpc.insecure_channel(suite.url)
        token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(auth_service_pb2.CreateTokenRequest(
            api_key=bootstrap["api_key"], instance=bootstrap["instance"])).token
        metadata = (("authorization", f"Bearer {token}"),)
        jobs = jobs_service_pb2_grpc.JobsServiceStub(channel)
        access = httpx.post(f"{suite.http_url}/identity/token", data={
            "grant_type": IAM_GRANT, "apikey": bootstrap["api_key"], "instance": bootstrap["instance"]}
        ).json()["access_token"]
        http = httpx.Client(base_url=suite.http_url, headers={
            "Authorization": f"Bearer {access}", "Service-CRN": bootstrap["instance"]})
        # Signed in as IBM Cloud users are: a token for the account, the instance named per call, for which
        # the front door exchanges it (once; then from its cache).
        account = httpx.post(f"{suite.http_url}/identity/token", data={
            "grant_type": IAM_GRANT, "apikey": bootstrap["api_key"]}).json()["access_token"]
        http_account = httpx.Client(base_url=suite.http_url, headers={
            "Authorization": f"Bearer {account}", "Service-CRN": bootstrap["instance"]})

        def over_grpc() -> None:
            created = jobs.CreateJob(jobs_service_pb2.CreateJobRequest(
                program_id="hello-world", inputs='{"iterations": 0}',
                options=job_pb2.JobOptions(backend_name="ibmq_qasm_simulator")), metadata=metadata)
            assert jobs.GetJob(jobs_service_pb2.GetJobRequest(job_id=created.job.id), metadata=metadata).job.id

        def over_http(client: httpx.Client = http) -> None:
            created = client.post("/api/v1/jobs", json={
                "program_id": "hello-world", "backend": "ibmq_qasm_simulator", "params": {"iterations": 0}})
            created.raise_for_status()
            got = client.get(f"/api/v1/jobs/{created.json()['job']['id']}")
            got.raise_for_status()

        samples: dict[str, list[float]] = {"grpc": [], "http": [], "http_account": []}
        paths = (("grpc", over_grpc), ("http", over_http), ("http_account", lambda: over_http(http_account)))
        for round_ in range(args.warmup + args.rounds):
            turn = round_ % len(paths)  # each path first, second and last in turn: none always follows the others
            for name, call in paths[turn:] + paths[:turn]:
                start = time.perf_counter()
                call()
                if round_ >= args.warmup:
                    samples[name].append((time.perf_counter() - start) * 1000)
        http.close()
        http_account.close()
        channel.close()

    base = statistics.median(samples["grpc"])
    print(f"create + get of a job, {args.rounds} rounds each, alternating; {platform.python_version()}, "
          f"{sys.platform}")
    print(f"{'path':<28}{'p50 ms':>9}{'p95 ms':>9}{'p50 / grpc':>12}")
    for name, label in (("grpc", "gRPC"), ("http", "HTTP/JSON, instance token"),
                        ("http_account", "HTTP/JSON, account token")):
        p50 = statistics.median(samples[name])
        print(f"{label:<28}{p50:9.2f}{percentile(samples[name], 0.95):9.2f}{p50 / base:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
