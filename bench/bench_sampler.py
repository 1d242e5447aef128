"""End-to-end sampler jobs through the suite, against in-process baselines, in one run.

Each variant samples the Bell circuit with 1,024 shots, ROUNDS times one after another (latency:
p50/p95), then CONCURRENT_JOBS at once from THREADS client threads (throughput: jobs/s):

- aer-sampler-v2:       qiskit-aer's SamplerV2, in-process (no service at all)
- ibm-runtime-local:    qiskit-ibm-runtime's local testing mode, SamplerV2(mode=AerSimulator())
- qruntime-embedded:    `qruntime up` (one process, SQLite), through the qruntime client (the sampler
                        program: service.run("sampler", {"circuits": ...}))
- qruntime-embedded-v2: the same suite through qruntime.SamplerV2(mode=backend): today's Qiskit code
- qruntime-v2-qiskit-counts: the same, the counts taken by Qiskit's BitArray.get_counts instead of the
                        client's CountedBitArray (what its numpy count saves)
- qruntime-separate:    four service processes behind `qruntime gateway`, through the client

Each variant runs in a process of its own (an in-process baseline leaves threads and state behind
that slowed a client sharing its process by 0.2 ms a job, measured), and the sequential jobs are taken
in turns of SEGMENT jobs a variant, so that the machine's drift, which moves the local mode by a third
from one run to the next here, falls on every variant alike: first with the embedded suite running
(the in-process variants and the embedded ones), then with the separate processes instead (the local
mode again, and them). Ratios are against ibm-runtime-local measured in the same phase.

    .venv/bin/python bench/bench_sampler.py [--rounds 200] [--concurrent 64]
"""

from __future__ import annotations

import argparse
import multiprocessing
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
SEGMENT = 20  # sequential jobs a variant runs before the next one takes its turn
BACKEND = "ibmq_qasm_simulator"


def _serve(name: str, suite: tuple[str, dict] | None, conn) -> None:
    """A variant's own process: makes its run_one, then runs what the coordinator asks."""
    run_one = VARIANTS[name](*([client(*suite)] if suite else []))
    for _ in range(3):  # warm-up: imports, first compilations, connections
        run_one()
    conn.send("ready")
    while (asked := conn.recv()) is not None:
        kind, count = asked
        if kind == "latencies":
            times = []
            for _ in range(count):
                started = time.perf_counter()
                run_one()
                times.append((time.perf_counter() - started) * 1000)
            conn.send(times)
        else:
            conn.send(jobs_per_second(run_one, count))


class Variant:
    """A variant running in its own process."""

    def __init__(self, name: str, suite=None) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.name, (self._conn, child) = name, spawn.Pipe()
        self._process = spawn.Process(target=_serve, args=(name, suite, child), daemon=True)
        self._process.start()
        if not self._conn.poll(300) or self._conn.recv() != "ready":
            raise RuntimeError(f"{name} did not start")

    def ask(self, kind: str, count: int):
        self._conn.send((kind, count))
        return self._conn.recv()

    def close(self) -> None:
        self._conn.send(None)
        self._process.join(30)


def interleaved(variants: list[Variant], rounds: int) -> dict[str, list[float]]:
    """Each variant's latencies in ms: rounds jobs one after another, in turns of SEGMENT."""
    latencies: dict[str, list[float]] = {v.name: [] for v in variants}
    for start in range(0, rounds, SEGMENT):
        for variant in variants:
            latencies[variant.name] += variant.ask("latencies", min(SEGMENT, rounds - start))
    return latencies


def jobs_per_second(run_one: Callable[[], object], concurrent: int) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda _: run_one(), range(concurrent)))
    return concurrent / (time.perf_counter() - started)


def aer_sampler() -> Callable[[], object]:
    from qiskit_aer.primitives import SamplerV2

    sampler, circuit = SamplerV2(), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def ibm_runtime_local() -> Callable[[], object]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime import SamplerV2

    sampler, circuit = SamplerV2(mode=AerSimulator()), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def client(url: str, boot: dict):
    from qruntime import IBMRuntimeService

    return IBMRuntimeService(auth="cloud", token=boot["api_key"], instance=boot["instance"], url=url)


def qruntime_program(service) -> Callable[[], object]:
    circuit = ReferenceCircuits.bell()

    def run_one():
        job = service.run(program_id="sampler", inputs={"circuits": circuit, "shots": SHOTS},
                          options={"backend_name": BACKEND})
        return job.result()

    return run_one


def qruntime_v2(service) -> Callable[[], object]:
    from qruntime import SamplerV2

    sampler, circuit = SamplerV2(mode=service.backend(BACKEND)), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


def qruntime_v2_qiskit_counts(service) -> Callable[[], object]:
    from qiskit.primitives.containers import BitArray
    from qruntime import SamplerV2

    sampler, circuit = SamplerV2(mode=service.backend(BACKEND)), ReferenceCircuits.bell()
    # Qiskit's own get_counts on the result's CountedBitArray: what the client's numpy count saves.
    return lambda: BitArray.get_counts(sampler.run([circuit], shots=SHOTS).result()[0].data.c)


# What each variant's process runs (the qruntime ones given their client).
VARIANTS: dict[str, Callable[..., Callable[[], object]]] = {
    "aer-sampler-v2": aer_sampler, "ibm-runtime-local": ibm_runtime_local, "qruntime-embedded": qruntime_program,
    "qruntime-embedded-v2": qruntime_v2, "qruntime-v2-qiskit-counts": qruntime_v2_qiskit_counts,
    "qruntime-separate": qruntime_program,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=64)
    args = parser.parse_args()
    from qruntime_suite import launch

    print(f"Bell circuit, {SHOTS} shots; {args.rounds} sequential jobs (turns of {SEGMENT}), then "
          f"{args.concurrent} from {THREADS} threads; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'variant':<26}{'p50 ms':>10}{'p95 ms':>10}{'jobs/s':>10}{'p50 / local':>14}{'jobs/s / local':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        # Lazy simulation workers: the devices service's background warm-up (loading every backend,
        # noise models included, for about a minute) would otherwise run during the measurements.
        lazy = {"QRUNTIME_WARM_UP": "false"}
        for phase, start in (("embedded", launch.embedded), ("separate", launch.separate)):
            with launch.running(start(Path(tmp) / phase, extra_env=lazy)) as suite:
                reach = (suite.url, suite.bootstrap)
                names = (["aer-sampler-v2", "ibm-runtime-local", "qruntime-embedded", "qruntime-embedded-v2",
                          "qruntime-v2-qiskit-counts"]
                         if phase == "embedded" else ["ibm-runtime-local", "qruntime-separate"])
                variants = [Variant(name, reach if name.startswith("qruntime") else None) for name in names]
                latencies = interleaved(variants, args.rounds)
                results = {}
                for variant in variants:
                    ordered = sorted(latencies[variant.name])
                    results[variant.name] = {"p50_ms": statistics.median(ordered),
                                             "p95_ms": ordered[int(0.95 * (len(ordered) - 1))],
                                             "jobs_per_s": variant.ask("throughput", args.concurrent)}
                    variant.close()
            base = results["ibm-runtime-local"]
            print(f"-- with the {phase} suite running")
            for name, r in results.items():
                print(f"{name:<26}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['jobs_per_s']:>10.1f}"
                      f"{r['p50_ms'] / base['p50_ms']:>14.2f}{r['jobs_per_s'] / base['jobs_per_s']:>16.2f}")


if __name__ == "__main__":
    main()
