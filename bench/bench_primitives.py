"""The V2 primitives end to end, against qiskit-ibm-runtime's local mode, and typed results against JSON.

1. Bell circuit, 1,024 shots, ROUNDS jobs one after another (p50/p95 latency of run + result):
   - ibm-runtime-local:    qiskit-ibm-runtime's SamplerV2(mode=AerSimulator()), in-process (the baseline)
   - qruntime-sampler-v2:  qruntime.SamplerV2(mode=backend) through `qruntime up` (typed PUBs and result)
   - qruntime-json:        the same job as the old JSON sampler, service.run(program_id="sampler", ...)
2. 100,000 shots of a 100-qubit circuit (H on every qubit: every shot a different bitstring), BIG_ROUNDS
   times each: the result's size on the wire and the time to run and read it, typed packed bits
   (qruntime.SamplerV2) against the old JSON counts (service.run, counts and quasi-distributions).

Ratios are against the baseline measured in the same run.

    .venv/bin/python bench/bench_primitives.py [--rounds 100] [--big-rounds 2]   # --big-rounds 0: Bell alone
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qiskit import QuantumCircuit
from qruntime import ReferenceCircuits

SHOTS = 1024
BIG_SHOTS, BIG_QUBITS = 100_000, 100
BACKEND = "ibmq_qasm_simulator"


def latencies(run_one: Callable[[], object], rounds: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: imports, first compilations, connections, workers
        run_one()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run_one()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p95_ms": times[int(0.95 * (len(times) - 1))]}


def ibm_runtime_local() -> Callable[[], object]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime import SamplerV2

    sampler, circuit = SamplerV2(mode=AerSimulator()), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def qruntime_v2(service) -> Callable[[], object]:
    from qruntime import SamplerV2

    sampler, circuit = SamplerV2(mode=service.backend(BACKEND)), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def qruntime_json(service) -> Callable[[], object]:
    circuit = ReferenceCircuits.bell()
    return lambda: service.run("sampler", {"circuits": circuit, "shots": SHOTS}, {"backend_name": BACKEND}).result()


def wide_circuit() -> QuantumCircuit:
    circuit = QuantumCircuit(BIG_QUBITS)
    circuit.h(range(BIG_QUBITS))
    circuit.measure_all()
    return circuit


def big_typed(service) -> tuple[float, int]:
    """(seconds to run and read, result bytes on the wire) of the typed sampler."""
    from qruntime import SamplerV2

    started = time.perf_counter()
    job = SamplerV2(mode=service.backend(BACKEND)).run([wide_circuit()], shots=BIG_SHOTS)
    bits = job.result(timeout=600)[0].data.meas
    elapsed = time.perf_counter() - started
    assert bits.num_shots == BIG_SHOTS and bits.num_bits == BIG_QUBITS
    return elapsed, job._fetch_typed_result().ByteSize()  # read again, only to weigh it


def big_json(service) -> tuple[float, int]:
    """(seconds to run and read, result bytes on the wire) of the old JSON sampler."""
    started = time.perf_counter()
    job = service.run("sampler", {"circuits": wide_circuit(), "shots": BIG_SHOTS}, {"backend_name": BACKEND})
    counts = job.result(timeout=600)["counts"][0]
    elapsed = time.perf_counter() - started
    assert sum(counts.values()) == BIG_SHOTS
    return elapsed, len(job._fetch_result().encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--big-rounds", type=int, default=2)
    args = parser.parse_args()
    from qruntime import IBMRuntimeService

    from qruntime_suite import launch

    bell = {"ibm-runtime-local": latencies(ibm_runtime_local(), args.rounds)}
    big: dict[str, list[tuple[float, int]]] = {"typed packed bits": [], "JSON counts": []}
    with tempfile.TemporaryDirectory() as tmp, \
            launch.running(launch.embedded(Path(tmp) / "suite", extra_env={"QRUNTIME_WARM_UP": "false"})) as suite:
        boot = suite.bootstrap
        with IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=suite.url,
                               timeout=600) as service:
            bell["qruntime-sampler-v2"] = latencies(qruntime_v2(service), args.rounds)
            bell["qruntime-json"] = latencies(qruntime_json(service), args.rounds)
            for _ in range(args.big_rounds):  # interleaved, so load changes hit both alike
                big["typed packed bits"].append(big_typed(service))
                big["JSON counts"].append(big_json(service))

    print(f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"\n## Bell circuit, {SHOTS} shots, {args.rounds} sequential jobs (run + result)")
    base = bell["ibm-runtime-local"]
    print(f"{'variant':<22}{'p50 ms':>10}{'p95 ms':>10}{'p50 / local':>14}{'p95 / local':>14}")
    for name, r in bell.items():
        print(f"{name:<22}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['p50_ms'] / base['p50_ms']:>14.2f}"
              f"{r['p95_ms'] / base['p95_ms']:>14.2f}")
    if not args.big_rounds:  # --big-rounds 0: the Bell part alone
        return
    print(f"\n## {BIG_SHOTS:,} shots of a {BIG_QUBITS}-qubit circuit (every shot distinct), median of "
          f"{args.big_rounds}: run + read the result")
    json_s = statistics.median(t for t, _ in big["JSON counts"])
    json_bytes = statistics.median(b for _, b in big["JSON counts"])
    print(f"{'result':<20}{'bytes':>14}{'seconds':>10}{'bytes / JSON':>14}{'time / JSON':>13}")
    for name, runs in big.items():
        seconds, size = statistics.median(t for t, _ in runs), statistics.median(b for _, b in runs)
        print(f"{name:<20}{size:>14,.0f}{seconds:>10.2f}{size / json_bytes:>14.3f}{seconds / json_s:>13.2f}")


if __name__ == "__main__":
    main()
