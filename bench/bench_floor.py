"""The least a networked, durable Bell job can cost on this machine, against the local mode, in one run.

Issue 6 asks the Bell sampler job end to end for no more than qiskit-ibm-runtime's local mode
(`SamplerV2(mode=AerSimulator())`, in-process). This measures, each alone and bare (no qruntime code,
no authentication, no logging), the steps such a job cannot do without here, and adds them up:

- unary:  the client's CreateJob, as a bare gRPC unary call (600 bytes, about a Bell CreateJob) from
          a sync client to a grpc.aio server in another process
- stream: the client following the job to its result, as a bare server-streaming call of one message
- commit: the job stored before CreateJob answers, and its result before the client sees it: a row
          inserted and committed in SQLite (WAL, synchronous=NORMAL), twice
- worker: no user circuit decoded or simulated in a service's process: the check at CreateJob and the
          run each a round trip to a worker process over a socket pair (600 bytes), twice
- decode: the circuit's QPY decoded, by the check and by the run, twice
- aer:    the Bell circuit simulated, 1,024 shots (qruntime's own fastest path, devices/sampling.py)

Their sum is a floor: qruntime's job does each of these and more (tokens, validation, logs, events).
If the floor is above the local mode's time, the goal cannot be met on this machine by any code. The
same for throughput (issue 6: at least 0.2x a bare echo server's unary calls a second): the CPU the
steps use (both ends of each call) bounds the jobs a second the machine's cores can do.

    .venv/bin/python -W ignore bench/bench_floor.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import socket
import sqlite3
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from echo import STREAM, UNARY, echo_server

SHOTS = 1024
PAYLOAD = b"x" * 600


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(step: Callable[[], object], rounds: int, peer: int | None = None, warm_up: int = 20) -> tuple[float, float]:
    """(p50 ms of a step, ms of CPU per step in this process and in the peer process it talks to)."""
    for _ in range(warm_up):
        step()
    times = []
    cpu = time.process_time() + (cpu_seconds(peer) if peer else 0.0)
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    cpu = time.process_time() + (cpu_seconds(peer) if peer else 0.0) - cpu
    return statistics.median(times), cpu / rounds * 1000


# -- the baseline ---------------------------------------------------------------------------------


def local_mode() -> Callable[[], object]:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime import SamplerV2
    from qruntime import ReferenceCircuits

    sampler, circuit = SamplerV2(mode=AerSimulator()), ReferenceCircuits.bell()
    return lambda: sampler.run([circuit], shots=SHOTS).result()[0].data.c.get_counts()


# -- gRPC, bare -----------------------------------------------------------------------------------


# -- a worker process over a socket pair ------------------------------------------------------------


def _worker(sock: socket.socket) -> None:
    stream = sock.makefile("rwb")
    while header := stream.read(4):
        body = stream.read(struct.unpack("!I", header)[0])
        stream.write(header + body)
        stream.flush()


def _exchange(stream: io.BufferedRWPair) -> None:
    stream.write(struct.pack("!I", len(PAYLOAD)) + PAYLOAD)
    stream.flush()
    stream.read(struct.unpack("!I", stream.read(4))[0])


# -- the rest -------------------------------------------------------------------------------------


def sqlite_commit(path: Path) -> Callable[[], object]:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE job (id INTEGER PRIMARY KEY, data BLOB)")

    def commit() -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO job (data) VALUES (?)", (PAYLOAD,))
        db.execute("COMMIT")

    return commit


def echo_ceiling(echo: Callable[[bytes], object], seconds: float = 3.0, threads: int = 8) -> float:
    """Unary calls a second from `threads` client threads: the bare server's ceiling (bench_jobs' baseline)."""
    done, stop = [0] * threads, time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop:
            echo(PAYLOAD)
            done[i] += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    rounds, measured = args.rounds, {}
    local = measure(local_mode(), rounds)  # first: nothing of qruntime's loaded into Aer's process yet

    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: no gRPC state inherited by a fork
    ours, theirs = socket.socketpair()
    worker = spawn.Process(target=_worker, args=(theirs,), daemon=True)
    worker.start()
    theirs.close()
    try:
        with echo_server() as (address, server_pid):
            channel = grpc.insecure_channel(address)
            echo, once = channel.unary_unary(UNARY), channel.unary_stream(STREAM)
            measured["unary"] = measure(lambda: echo(PAYLOAD, timeout=10), rounds, server_pid)
            measured["stream"] = measure(lambda: list(once(PAYLOAD, timeout=10)), rounds, server_pid)
            ceiling = echo_ceiling(lambda payload: echo(payload, timeout=10))
        stream = ours.makefile("rwb")
        measured["worker"] = measure(lambda: _exchange(stream), rounds, worker.pid)
    finally:
        worker.kill()
    from qiskit import qpy
    from qiskit_aer import AerSimulator
    from qruntime import ReferenceCircuits

    from qruntime_devices.adapters import run_on_aer

    with tempfile.TemporaryDirectory() as tmp:
        measured["commit"] = measure(sqlite_commit(Path(tmp) / "floor.db"), rounds)
    bell = ReferenceCircuits.bell()
    buffer = io.BytesIO()
    qpy.dump(bell, buffer)
    data = buffer.getvalue()
    measured["decode"] = measure(lambda: qpy.load(io.BytesIO(data)), rounds)
    simulator = AerSimulator()
    measured["aer"] = measure(lambda: run_on_aer(simulator, "floor", [bell], [bell], SHOTS, None, False), rounds)

    times = {"unary": 1, "stream": 1, "commit": 2, "worker": 2, "decode": 2, "aer": 1}
    print(f"Bell job, {SHOTS} shots: each step alone, {rounds} rounds; {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}")
    print(f"{'step':<24}{'p50 ms':>9}{'CPU ms':>9}{'times':>7}{'p50 ms':>9}{'CPU ms':>9}")
    print(f"{'local mode (baseline)':<24}{local[0]:>9.3f}{local[1]:>9.3f}{'':>7}{local[0]:>9.3f}{local[1]:>9.3f}")
    floor = floor_cpu = 0.0
    for step, count in times.items():
        p50, cpu = measured[step]
        floor, floor_cpu = floor + p50 * count, floor_cpu + cpu * count
        print(f"{step:<24}{p50:>9.3f}{cpu:>9.3f}{count:>7}{p50 * count:>9.3f}{cpu * count:>9.3f}")
    print(f"{'floor (sum)':<24}{'':>25}{floor:>9.3f}{floor_cpu:>9.3f}")
    print(f"latency: floor / local mode = {floor / local[0]:.2f}   (issue 6's goal: the job <= 1.0x the local mode)")
    most = os.cpu_count() / floor_cpu * 1000
    print(f"throughput: at most {most:.0f} jobs/s on {os.cpu_count()} CPUs at the floor's CPU, against "
          f"{ceiling:.0f} echo calls/s from 8 threads: {most / ceiling:.2f}x   (goal: >= 0.2x)")


if __name__ == "__main__":
    main()
