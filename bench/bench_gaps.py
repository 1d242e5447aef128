"""What a gap between runs costs the next one on this machine: the same work back to back, and after the
CPU spent a while on something else.

A qruntime job hands its work from process to process (client, service, simulation worker, and back),
so each piece starts a few milliseconds after that process last ran; the in-process library runs its
whole job in one place, back to back with the last. This measures two of the job's pieces in this one
process, with nothing else of ours running:

- worker run: a Bell circuit's QPY decoded, checked and sampled (1,024 shots) as a simulation worker
              runs it (devices' decode_circuits, the simulator adapter's check and execute)
- store:      a quick job stored ended, as CreateJob stores it (JobStore.create, SQLite)

ROUNDS times back to back (the baseline) and after GAP ms of busy waiting (the core stays busy on a
small loop: no sleep, no other process), the gaps taken in turn call by call. Printed: p50 per gap,
and its ratio to the back-to-back p50 of the same run.

    .venv/bin/python -W ignore bench/bench_gaps.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GAPS_MS = (0.2, 0.5, 1, 2, 4, 8)
PRIMERS = 3  # untimed calls before the back-to-back one
SHOTS = 1024


def worker_run() -> Callable[[], object]:
    from qruntime import ReferenceCircuits
    from qruntime.encoding import dump_circuits_qpy

    from qruntime_devices.adapters import AerSimulatorAdapter
    from qruntime_devices.circuits import decode_circuits

    adapter, qpy = AerSimulatorAdapter("ibmq_qasm_simulator"), dump_circuits_qpy([ReferenceCircuits.bell()])

    def run() -> object:
        circuits = decode_circuits(qpy)
        adapter.check(circuits, SHOTS)
        return adapter.execute(circuits, SHOTS, None, False)

    return run


def store_create(data_dir: Path) -> Callable[[], object]:
    from qruntime_jobs.store import EndedRun, JobStore, ResultDigest

    store = JobStore(f"sqlite:///{data_dir / 'jobs.db'}")
    inputs = '{"circuits": {"__type__": "QuantumCircuit", "__value__": "' + "A" * 400 + '"}, "shots": 1024}'
    result = ('{"quasi_dists": [{"00": 0.5, "11": 0.5}], "counts": [{"00": 512, "11": 512}], '
              '"metadata": [{"shots": 1024}]}')

    def create() -> object:
        start = dt.datetime.now(dt.UTC)
        ended = EndedRun(runner="bench", start_time=start, end_time=dt.datetime.now(dt.UTC), state="DONE",
                         result_json=result, logs=(("INFO", "sampled 1 circuit(s)", start),))
        return store.create(instance="crn:bench", owner="user-bench", program_id="sampler", runtime="BUILTIN",
                            backend="ibmq_qasm_simulator", inputs=inputs, log_level="WARNING",
                            max_execution_seconds=10800.0, request_fingerprint="f" * 64,
                            inputs_digest=ResultDigest.of(inputs.encode()), ended=ended, audit_event="{}")

    return create


def busy(seconds: float) -> None:
    if not seconds:
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def p50s_ms(work: Callable[[], object], rounds: int) -> list[float]:
    """p50 of work back to back and after each gap, the gaps taken in turn call by call (the drift of
    the machine's speed falls on all alike): each call follows the previous one's end by its gap; the
    back-to-back one follows PRIMERS untimed calls, as in a loop of them."""
    times: list[list[float]] = [[] for _ in (0, *GAPS_MS)]
    for _ in range(rounds):
        for _ in range(PRIMERS):
            work()
        for k, gap in enumerate((0, *GAPS_MS)):
            busy(gap / 1000)
            started = time.perf_counter()
            work()
            times[k].append((time.perf_counter() - started) * 1000)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pieces = {"worker run": worker_run(), "store": store_create(Path(tmp))}
        for work in pieces.values():
            for _ in range(50):  # warm-up: imports, first compilations, the store's first pages
                work()
        print(f"each piece {args.rounds} times back to back, then after each gap; p50 ms (ratio to back to back); "
              f"Python {sys.version.split()[0]}")
        print(f"{'piece':<12}{'back to back':>14}" + "".join(f"{f'gap {g:g} ms':>17}" for g in GAPS_MS))
        for name, work in pieces.items():
            base, *cells = p50s_ms(work, args.rounds)
            print(f"{name:<12}{base:>14.3f}" + "".join(f"{c:>10.3f} ({c / base:.2f})" for c in cells))


if __name__ == "__main__":
    main()
