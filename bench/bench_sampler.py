"""End-to-end sampler jobs through the suite, against in-process baselines, in one run.

Each variant samples the Bell circuit with 1,024 shots, ROUNDS times one after another (latency:
p50/p95), then CONCURRENT_JOBS at once from THREADS client threads (throughput: jobs/s):

- aer-sampler-v2:     qiskit-aer's SamplerV2, in-process (no service at all)
- ibm-runtime-local:  qiskit-ibm-runtime's local testing mode, SamplerV2(mode=AerSimulator())
- qruntime-embedded:  `qruntime up` (one process, SQLite), through the qruntime client
- qruntime-separate:  four service processes behind `qruntime gateway`, through the client

Ratios are against ibm-runtime-local measured in the same run.

    .venv/bin/python bench/bench_sampler.py [--rounds 200] [--concurrent 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qruntime import ReferenceCircuits

SHOTS = 1024
THREADS = 8



def measure(run_one: Callable[[], object], rounds: int, concurrent: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: imports, first compilations, connections
        run_one()
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        run_one()
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: run_one(), range(concurrent)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "jobs_per_s": concurrent / elapsed,
    }


def aer_sampler() -> Callable[[], object]:
    from qiskit_aer.primitives import SamplerV2

    sampler, circuit = SamplerV2(), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def ibm_runtime_local() -> Callable[[], object]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime import SamplerV2

    sampler, circuit = SamplerV2(mode=AerSimulator()), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def qruntime_client(url: str, bootstrap: dict) -> Callable[[], object]:
    from qruntime import IBMRuntimeService

    service = IBMRuntimeService(auth="cloud", token=bootstrap["api_key"], instance=bootstrap["instance"], url=url)
    circuit = ReferenceCircuits.bell()

    def run_one():
        job = service.run(program_id="sampler", inputs={"circuits": circuit, "shots": SHOTS},
                          options={"backend_name": "ibmq_qasm_simulator"})
        return job.result()

    return run_one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=64)
    args = parser.parse_args()
    from qruntime_suite import launch

    results: dict[str, dict[str, float]] = {}
    results["aer-sampler-v2"] = measure(aer_sampler(), args.rounds, args.concurrent)
    results["ibm-runtime-local"] = measure(ibm_runtime_local(), args.rounds, args.concurrent)
    with tempfile.TemporaryDirectory() as tmp:
        # Lazy simulation workers: the devices service's background warm-up (loading every backend,
        # noise models included, for about a minute) would otherwise run during the measurements.
        lazy = {"QRUNTIME_WARM_UP": "false"}
        for name, start in (("qruntime-embedded", launch.embedded), ("qruntime-separate", launch.separate)):
            with launch.running(start(Path(tmp) / name, extra_env=lazy)) as suite:
                results[name] = measure(qruntime_client(suite.url, suite.bootstrap), args.rounds, args.concurrent)

    base = results["ibm-runtime-local"]
    print(f"Bell circuit, {SHOTS} shots; {args.rounds} sequential jobs, then {args.concurrent} from {THREADS} "
          f"threads; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'variant':<20}{'p50 ms':>10}{'p95 ms':>10}{'jobs/s':>10}{'p50 / local':>14}{'jobs/s / local':>16}")
    for name, r in results.items():
        print(f"{name:<20}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['jobs_per_s']:>10.1f}"
              f"{r['p50_ms'] / base['p50_ms']:>14.2f}{r['jobs_per_s'] / base['jobs_per_s']:>16.2f}")


if __name__ == "__main__":
    main()
