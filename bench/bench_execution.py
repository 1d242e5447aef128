"""The execution plane, measured in one run: what process isolation costs, and what it buys.

1. bell:        the Bell sampler job end to end through `qruntime up` (client → result), with the
                warm pool of program hosts (the default) and without one (a host started per job);
                qiskit-ibm-runtime's local mode in the same run as the baseline.
2. sandbox:     one trivial program (returns 1) through the jobs runner alone, per job: in a warm
                sandboxed host, a cold sandboxed host (started for the job), and a warm unsandboxed
                host — the cost of bubblewrap + seccomp per job, warm and cold.
3. responsive:  health Check and CreateJob latency (p50/p99) of `qruntime up` while idle, then while
                two 24-qubit statevector simulations (depth 20) run.
4. vqe:         a small VQE — 50 estimator evaluations driven by SPSA — as ONE uploaded program next
                to the devices, against the same loop driven from the client as 50 estimator jobs
                (the client waits on each job's event stream); --vqe-repeats N measures both sides N
                times in turn, each time with the CPU time all the suite's processes and the client used.

    .venv/bin/python -W ignore bench/bench_execution.py [--only bell,sandbox,responsive,vqe] [--vqe-repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cpu_meter import CpuMeter
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
from qiskit.circuit.random import random_circuit
from qruntime import ReferenceCircuits

SHOTS = 1024
SETTLE_SECONDS = 5  # after the warm-up rounds: workers started meanwhile (a spare, a refill) finish starting
VQE_EVALUATIONS = 50  # 25 SPSA steps of two evaluations each
VQE_OBSERVABLE = [["ZZ", 1.0], ["XI", 0.5], ["IX", 0.5]]


def percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]



@contextlib.contextmanager
def suite(tmp: Path, name: str, **env: str):
    from qruntime_suite import launch

    # Lazy simulation workers: with warm-up on, the devices service loads every backend (noise
    # models of the emulated systems) in the background for a minute, and the measurements with it.
    env = {"warm_up": "false", **env}
    extra = {f"QRUNTIME_{k.upper()}": v for k, v in env.items()}
    with launch.running(launch.embedded(tmp / name, extra_env=extra)) as running:
        yield running


def client(running):
    from qruntime import IBMRuntimeService

    bootstrap = running.bootstrap
    return IBMRuntimeService(auth="cloud", token=bootstrap["api_key"], instance=bootstrap["instance"],
                             url=running.url)


def timed(run_one: Callable[[], object], rounds: int, warm_up: int = 5) -> tuple[float, float]:
    for _ in range(warm_up):
        run_one()
    if warm_up:
        time.sleep(SETTLE_SECONDS)
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        run_one()
        latencies.append((time.perf_counter() - started) * 1000)
    return percentiles(latencies)


# -- 1. bell ------------------------------------------------------------------------------------

def bench_bell(tmp: Path, rounds: int) -> None:
    from qiskit_aer import AerSimulator
    from qiskit_ibm_runtime import SamplerV2

    local_sampler, circuit = SamplerV2(mode=AerSimulator()), ReferenceCircuits.bell()
    rows = {"ibm-runtime-local": timed(lambda: local_sampler.run([circuit], shots=SHOTS).result(), rounds)}
    for name, warm in (("qruntime warm pool", "2"), ("qruntime no pool", "0")):
        with suite(tmp, f"bell-{warm}", warm_hosts=warm) as running:
            service = client(running)

            def run_one(service=service):
                return service.run(program_id="sampler", inputs={"circuits": circuit, "shots": SHOTS},
                                   options={"backend_name": "ibmq_qasm_simulator"}).result()

            rows[name] = timed(run_one, rounds if warm != "0" else max(10, rounds // 10))
    base = rows["ibm-runtime-local"][0]
    print(f"\n## bell: Bell sampler job end to end, {SHOTS} shots, sequential")
    print(f"{'variant':<22}{'p50 ms':>10}{'p99 ms':>10}{'p50 / local':>14}")
    for name, (p50, p99) in rows.items():
        print(f"{name:<22}{p50:>10.1f}{p99:>10.1f}{p50 / base:>14.2f}")


# -- 2. sandbox ---------------------------------------------------------------------------------

class _NoDevices:
    async def backend(self, name, *, timeout):
        from qruntime.devices.v1 import backend_pb2

        return backend_pb2.Backend(name=name, configuration=backend_pb2.BackendConfiguration(num_qubits=5))


def bench_sandbox(tmp: Path, rounds: int) -> None:
    from qruntime_jobs.control import JobControl
    from qruntime_jobs.hosts import HostPool
    from qruntime_jobs.runner import ProgramRunner
    from qruntime_jobs.store import JobStore
    from qruntime_kit.limits import Limits

    source = "def main(backend, user_messenger):\n    return 1\n"
    store = JobStore(f"sqlite:///{tmp / 'sandbox-jobs.db'}")
    limits = Limits(memory_bytes=2 << 30, max_processes=256)

    async def measure(sandboxed: bool, warm: int) -> tuple[float, float]:
        pool = HostPool(sandboxed=sandboxed, warm=warm, limits=limits)
        pool.start()

        async def fetch(job):
            return source

        runner = ProgramRunner(store, _NoDevices(), trusted=pool, sandboxed=pool, fetch_source=fetch)
        latencies = []
        count = rounds if warm else max(10, rounds // 5)
        for i in range(count + 2):
            job, _ = store.create(instance="i", owner="u", program_id="p", runtime="PYTHON", backend="b",
                                  inputs="{}", log_level="INFO", max_execution_seconds=60)
            while warm and pool._ready.qsize() < warm:  # measure the job, not the refill
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            outcome = await runner.run(job, JobControl())
            if i >= 2:
                latencies.append((time.perf_counter() - started) * 1000)
            assert outcome.state == "DONE", outcome
        await pool.stop()
        return percentiles(latencies)

    rows = {
        "unsandboxed, warm": asyncio.run(measure(False, 1)),
        "sandboxed, warm": asyncio.run(measure(True, 1)),
        "sandboxed, cold": asyncio.run(measure(True, 0)),
    }
    store.close()
    base = rows["unsandboxed, warm"][0]
    print("\n## sandbox: a trivial program through the runner (host taken, task sent, result back, host killed)")
    print(f"{'host':<22}{'p50 ms':>10}{'p99 ms':>10}{'p50 / unsandboxed':>20}")
    for name, (p50, p99) in rows.items():
        print(f"{name:<22}{p50:>10.1f}{p99:>10.1f}{p50 / base:>20.2f}")


# -- 3. responsive ------------------------------------------------------------------------------

def bench_responsive(tmp: Path, rounds: int) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    heavy = random_circuit(24, 20, measure=True, seed=7)
    with suite(tmp, "responsive") as running:
        service = client(running)
        channel = grpc.insecure_channel(running.url)
        health = health_pb2_grpc.HealthStub(channel)

        def check():
            health.Check(health_pb2.HealthCheckRequest(), timeout=30)

        def create():
            service.run(program_id="hello-world", inputs={"iterations": 0},
                        options={"backend_name": "ibmq_qasm_simulator"})

        idle = timed(check, rounds), timed(create, rounds // 4)
        jobs = [service.run(program_id="sampler", inputs={"circuits": heavy, "shots": 1000},
                            options={"backend_name": "simulator_statevector"}) for _ in range(2)]
        while any(job.status() != "RUNNING" for job in jobs):
            time.sleep(0.05)
        time.sleep(1.0)  # the simulations have started in the devices workers
        busy = timed(check, rounds, warm_up=0), timed(create, rounds // 4, warm_up=0)
        still_running = sum(job.status() == "RUNNING" for job in jobs)
        for job in jobs:
            job.result(timeout=600)
        channel.close()
    print(f"\n## responsive: health Check and CreateJob while two 24-qubit statevector simulations run "
          f"({still_running} of 2 still running at the end of the measurement)")
    print(f"{'call':<14}{'idle p50':>10}{'idle p99':>10}{'busy p50':>10}{'busy p99':>10}  (ms)")
    for name, i, b in (("health", idle[0], busy[0]), ("CreateJob", idle[1], busy[1])):
        print(f"{name:<14}{i[0]:>10.1f}{i[1]:>10.1f}{b[0]:>10.1f}{b[1]:>10.1f}")


# -- 4. vqe -------------------------------------------------------------------------------------

SPSA = '''
import numpy as np

def spsa(energy, theta, steps, seed=0):
    """Simultaneous-perturbation stochastic approximation: two evaluations per step."""
    rng = np.random.default_rng(seed)
    theta = np.array(theta, dtype=float)
    for k in range(steps):
        a, c = 0.2 / (k + 1) ** 0.602, 0.1 / (k + 1) ** 0.101
        delta = rng.choice([-1.0, 1.0], size=theta.size)
        gradient = (energy(theta + c * delta) - energy(theta - c * delta)) / (2 * c) * delta
        theta = theta - a * gradient
    return theta
'''

VQE_PROGRAM = SPSA + '''
from qruntime_jobs.builtin_programs.primitives import Estimator

def main(backend, user_messenger, ansatz, observable, steps, shots=1024):
    import time
    started = time.perf_counter()
    estimator = Estimator(backend)
    energies = []

    def energy(theta):
        value = estimator.run(ansatz, observable, parameter_values=[list(theta)], shots=shots, seed=1)["values"][0]
        energies.append(value)
        return value

    theta = spsa(energy, [0.1] * ansatz.num_parameters, steps)
    return {"theta": theta.tolist(), "energies": energies, "seconds": time.perf_counter() - started}
'''


def ansatz() -> QuantumCircuit:
    theta = ParameterVector("t", 4)
    circuit = QuantumCircuit(2)
    circuit.ry(theta[0], 0)
    circuit.ry(theta[1], 1)
    circuit.cx(0, 1)
    circuit.ry(theta[2], 0)
    circuit.ry(theta[3], 1)
    return circuit


def settled(meter: CpuMeter, window: float = 0.5, limit: float = 20.0) -> float:
    """meter.seconds() once the processes have used under 10% of a core over `window`: what a job set
    going (the warm pool's next host, a spare simulation worker) is done, and counted."""
    deadline = time.monotonic() + limit
    before = meter.seconds()
    while True:
        time.sleep(window)
        now = meter.seconds()
        if now - before < 0.1 * window or time.monotonic() > deadline:
            return now
        before = now


def bench_vqe(tmp: Path, repeats: int = 1) -> None:
    namespace: dict = {}
    exec(SPSA, namespace)  # noqa: S102 - our own source, the same the uploaded program runs
    spsa = namespace["spsa"]
    circuit, steps = ansatz(), VQE_EVALUATIONS // 2
    rows = []
    with suite(tmp, "vqe", warm_sandboxed_hosts="1") as running:
        service = client(running)
        program_id = service.upload_program(textwrap.dedent(VQE_PROGRAM), {
            "name": "vqe", "max_execution_time": 600,
            "parameters": [{"name": "ansatz", "type": "circuits", "required": True},
                           {"name": "observable", "type": "array", "required": True},
                           {"name": "steps", "type": "integer", "required": True}],
        })
        options = {"backend_name": "ibmq_qasm_simulator"}
        service.run(program_id=program_id, inputs={"ansatz": circuit, "observable": VQE_OBSERVABLE, "steps": 1},
                    options=options).result(timeout=600)  # warm-up
        time.sleep(SETTLE_SECONDS)
        meter = CpuMeter(next(iter(running.processes.values())).pid)
        for _ in range(repeats):  # both sides in turn, so a change in the machine's load touches both
            before, own = settled(meter), time.process_time()  # own: this process's, the client's
            started = time.perf_counter()
            uploaded = service.run(program_id=program_id,
                                   inputs={"ansatz": circuit, "observable": VQE_OBSERVABLE, "steps": steps},
                                   options=options).result(timeout=600)  # the client follows the job's events
            in_service = time.perf_counter() - started
            after = settled(meter)  # with the warm pool's next sandboxed host, which the job set going
            in_service_cpu, own = after - before + time.process_time() - own, time.process_time()
            energies = []

            def energy(theta, energies=energies):
                result = service.run(program_id="estimator", options=options, inputs={
                    "circuits": circuit, "observables": VQE_OBSERVABLE, "parameter_values": [list(theta)],
                    "shots": SHOTS, "seed": 1}).result(timeout=600)
                energies.append(result["values"][0])
                return result["values"][0]

            started = time.perf_counter()
            spsa(energy, [0.1] * circuit.num_parameters, steps)
            from_client = time.perf_counter() - started
            from_client_cpu = settled(meter) - after + time.process_time() - own
            assert len(uploaded["energies"]) == len(energies) == VQE_EVALUATIONS
            rows.append((in_service, uploaded["seconds"], from_client, uploaded["energies"][-1], energies[-1],
                         in_service_cpu, from_client_cpu))
        meter.stop()
    print(f"\n## vqe: {VQE_EVALUATIONS} estimator evaluations (SPSA, 2 qubits, 3 Pauli terms, {SHOTS} shots)")
    print("seconds: the uploaded program end to end, its loop inside, the 50 jobs; then the CPU all of it used")
    print("(suite, simulation workers, program hosts, client), per evaluation, and the speed-ups")
    print(f"{'run':<4}{'uploaded':>9}{'loop':>7}{'jobs':>7}{'CPU ms/eval':>13}{'jobs':>7}"
          f"{'end to end':>12}{'loop':>7}{'CPU':>7}{'energies':>17}")
    per = 1000 / VQE_EVALUATIONS
    for k, (in_service, loop, from_client, mine, theirs, cpu_in, cpu_jobs) in enumerate(rows, 1):
        print(f"{k:<4}{in_service:>9.2f}{loop:>7.2f}{from_client:>7.2f}{cpu_in * per:>13.1f}{cpu_jobs * per:>7.1f}"
              f"{from_client / in_service:>11.1f}x{from_client / loop:>6.1f}x{cpu_jobs / cpu_in:>6.1f}x"
              f"{mine:>9.3f}{theirs:>8.3f}")
    if len(rows) > 1:
        print(f"median speed-up: {statistics.median(r[2] / r[0] for r in rows):.1f}x end to end, "
              f"{statistics.median(r[2] / r[1] for r in rows):.1f}x its loop alone, "
              f"{statistics.median(r[6] / r[5] for r in rows):.1f}x in CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="bell,sandbox,responsive,vqe")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--vqe-repeats", type=int, default=1, help="vqe: both sides this many times, in turn")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if "bell" in only:
            bench_bell(tmp, args.rounds)
        if "sandbox" in only:
            bench_sandbox(tmp, args.rounds)
        if "responsive" in only:
            bench_responsive(tmp, args.rounds)
        if "vqe" in only:
            bench_vqe(tmp, args.vqe_repeats)


if __name__ == "__main__":
    main()
