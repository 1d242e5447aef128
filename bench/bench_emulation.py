"""Emulated systems and heavy simulations through the devices service, against running them locally.

Starts the suite as separate processes (so this client's own interpreter lock plays no part), signs in
at the auth process with the jobs service's key (the one identity that may call RunCircuits, which
no front door hands out), lets start-up (warm-up of every backend in the workers) settle, then, each
with its baseline measured in the same run:

1. noisy emulation: the Bell circuit (1,024 shots), transpiled for FakeSherbrooke, run on the emulated
   127-qubit ibm_sherbrooke through RunCircuits (gRPC, token, QPY decoded and checked in a worker,
   simulated, counts back), against qiskit-ibm-runtime's local testing mode on the same fake backend
   (`SamplerV2(mode=FakeSherbrooke())`, in-process): p50 latency and the ratio;
2. a heavy circuit (random, QUBITS qubits, depth DEPTH, 1,000 shots) on simulator_statevector through
   RunCircuits, against qiskit-aer's statevector simulator called directly in this process;
3. Qiskit's transpiler (optimization level 1) for the 127-qubit target of the client's RuntimeBackend
   (built from GetBackend and GetBackendProperties), against FakeSherbrooke's own target.

    .venv/bin/python -W ignore bench/bench_emulation.py [--bell-rounds 40] [--local-rounds 5] [--heavy-rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from qiskit import QuantumCircuit, transpile
from qiskit.circuit.random import random_circuit
from qiskit.transpiler import generate_preset_pass_manager
from qiskit_aer import AerSimulator
from qiskit_ibm_runtime import SamplerV2
from qiskit_ibm_runtime.fake_provider import FakeSherbrooke
from qruntime import ReferenceCircuits, RuntimeBackend
from qruntime._target import build_target
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.devices.v1 import devices_service_pb2_grpc
from qruntime.encoding import dump_circuits_qpy

from qruntime_suite import launch

SHOTS = 1024
NICENESS = 10  # qruntime_devices.worker._NICENESS


def timed(call, rounds: int) -> list[float]:
    """Seconds each of rounds calls took."""
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return seconds


def niced_direct_run(qubits: int, depth: int) -> float:
    """Seconds the heavy circuit takes on Aer called directly in a process as nice as the service's
    simulation workers (which yield to the service, and to everything else on a busy machine)."""
    script = (
        f"import os, time; os.nice({NICENESS})\n"
        "from qiskit import transpile\nfrom qiskit.circuit.random import random_circuit\n"
        "from qiskit_aer import AerSimulator\n"
        f"c = random_circuit({qubits}, {depth}, measure=True, seed=1); aer = AerSimulator(method='statevector')\n"
        "t = time.perf_counter(); aer.run(transpile(c, aer, optimization_level=0), shots=1000, seed_simulator=1)"
        ".result(); print(time.perf_counter() - t)"
    )
    return float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)


def row(what: str, ours: list[float], baseline: list[float], unit: float = 1000.0) -> str:
    a, b = statistics.median(ours), statistics.median(baseline)
    return f"{what:<44} {a * unit:>10.2f} {b * unit:>12.2f} {b / a:>10.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bell-rounds", type=int, default=40)
    parser.add_argument("--local-rounds", type=int, default=5)
    parser.add_argument("--heavy-rounds", type=int, default=3)
    parser.add_argument("--qubits", type=int, default=24)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--settle", type=float, default=60, help="seconds to let start-up work (warm-up) finish")
    args = parser.parse_args()

    fake = FakeSherbrooke()
    bell = generate_preset_pass_manager(optimization_level=1, backend=fake, seed_transpiler=0).run(
        ReferenceCircuits.bell()
    )
    heavy = random_circuit(args.qubits, args.depth, measure=True, seed=1)

    launched = launch.separate(Path(tempfile.mkdtemp(prefix="bench-emulation-")),
                               service_env={"QRUNTIME_LOG_LEVEL": "warning"})
    env = launched.envs["jobs"]
    devices_args = launched.processes["devices"].args
    devices_url = f"127.0.0.1:{devices_args[devices_args.index('--port') + 1]}"
    try:
        with grpc.insecure_channel(env["QRUNTIME_AUTH_URL"]) as auth_channel, \
                grpc.insecure_channel(devices_url) as channel:
            time.sleep(args.settle)
            auth = auth_service_pb2_grpc.AuthServiceStub(auth_channel)
            token = auth.CreateServiceToken(auth_service_pb2.CreateServiceTokenRequest(
                service_key=env["QRUNTIME_SERVICE_KEY"])).token
            metadata = (("authorization", f"Bearer {token}"),)
            standard = auth.CreateToken(auth_service_pb2.CreateTokenRequest(  # the calibration: a user's read
                api_key=launched.bootstrap["api_key"], instance=launched.bootstrap["instances"]["standard"])).token
            devices = devices_service_pb2_grpc.DevicesServiceStub(channel)

            def run(request: pb.RunCircuitsRequest) -> pb.RunCircuitsResponse:
                return devices.RunCircuits(request, metadata=metadata, timeout=600)

            print(f"{'work':<44} {'qruntime':>10} {'baseline':>12} {'ratio':>11}")
            # 1. Noisy emulation of the 127-qubit system.
            bell_request = pb.RunCircuitsRequest(backend="ibm_sherbrooke", circuits_qpy=dump_circuits_qpy(bell),
                                                 shots=SHOTS)
            for _ in range(3):
                run(bell_request)
            ours = timed(lambda: run(bell_request), args.bell_rounds)
            local_sampler = SamplerV2(mode=fake)
            local_sampler.run([bell], shots=SHOTS).result()  # its first run, as ours had theirs
            local = timed(lambda: local_sampler.run([bell], shots=SHOTS).result(), args.local_rounds)
            print(row("Bell, 1,024 shots, emulated Sherbrooke (ms)", ours, local))

            # 2. A heavy statevector simulation.
            heavy_request = pb.RunCircuitsRequest(
                backend="simulator_statevector", circuits_qpy=dump_circuits_qpy(heavy), shots=1000, seed=1
            )
            aer = AerSimulator(method="statevector")
            service_times, direct_times, niced_times = [], [], []
            for _ in range(args.heavy_rounds):  # alternating, so that the machine's load hits all alike
                service_times += timed(lambda: run(heavy_request), 1)
                # As a user calling Aer does (and the service does): gates Aer lacks (rccx) decomposed first.
                direct_times += timed(lambda: aer.run(transpile(heavy, aer, optimization_level=0), shots=1000,
                                                      seed_simulator=1).result(), 1)
                niced_times.append(niced_direct_run(args.qubits, args.depth))
            what = f"{args.qubits} qubits, depth {args.depth}, statevector (s)"
            print(row(what, service_times, direct_times, 1))
            print(row(f"  same, Aer direct at the workers' nice {NICENESS}", service_times, niced_times, 1))

            # 3. The transpiler for the 127-qubit target.
            message = devices.GetBackend(pb.GetBackendRequest(name="ibm_sherbrooke"), metadata=metadata).backend
            properties = devices.GetBackendProperties(pb.GetBackendPropertiesRequest(name="ibm_sherbrooke"),
                                                      metadata=(("authorization", f"Bearer {standard}"),)).properties
            started = time.perf_counter()
            ours_backend = RuntimeBackend(message)
            ours_backend._target = build_target(message, properties)  # what RuntimeBackend.target does
            built = time.perf_counter() - started
            circuits = [random_circuit(8, 8, measure=True, seed=seed) for seed in range(5)]
            ghz = QuantumCircuit(20)
            ghz.h(0)
            for qubit in range(19):
                ghz.cx(qubit, qubit + 1)
            ghz.measure_all()
            circuits.append(ghz)
            ours_t, theirs_t = [], []
            for _ in range(10):  # about 0.1 s each: enough rounds to see past the machine's noise
                ours_t += timed(lambda: transpile(circuits, backend=ours_backend, optimization_level=1,
                                                  seed_transpiler=1, num_processes=1), 1)
                theirs_t += timed(lambda: transpile(circuits, backend=fake, optimization_level=1,
                                                    seed_transpiler=1, num_processes=1), 1)
            print(row("transpile 6 circuits for 127 qubits (ms)", ours_t, theirs_t))
            print(f"(building the client's Target from the two messages: {built * 1000:.0f} ms, once per backend)")
    finally:
        launched.stop()


if __name__ == "__main__":
    main()
