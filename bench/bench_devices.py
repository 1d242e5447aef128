"""The devices service under load: Bell latency, and health checks while heavy simulations run.

Starts the auth and devices services as separate processes (so this client's own interpreter lock
plays no part; the embedded suite's port, a front door, exchanges no service keys), signs in with
the jobs service's key on auth's internal address, then:

1. runs the Bell circuit (1,024 shots) on ibmq_qasm_simulator ROUNDS times one after another
   through RunCircuits: latency p50/p99;
2. starts two heavy simulations at once (random QUBITS-qubit circuits of depth DEPTH on
   simulator_statevector) and, while they run, calls the gRPC health check and GetBackend every
   50 ms: p50/p99/max latency of each, and how many took longer than one second.

    .venv/bin/python -W ignore bench/bench_devices.py [--rounds 200] [--qubits 22] [--depth 40] [--settle 20]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qiskit.circuit.random import random_circuit
from qruntime import ReferenceCircuits
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc
from qruntime.encoding import dump_circuits_qpy

from qruntime_auth.keys import new_api_key

SHOTS = 1024



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(channel: grpc.Channel, timeout: float = 120) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the suite did not start")


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
    return f"p50 {statistics.median(values):.2f} ms, p99 {p99:.2f} ms, max {values[-1]:.2f} ms (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--qubits", type=int, default=22)
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--settle", type=float, default=20, help="seconds to let start-up work (warm-up) finish")
    parser.add_argument("--extra", nargs="*", default=[], help="more flags for `qruntime-devices`")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    port, auth_port = free_port(), free_port()
    service_key = new_api_key()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QRUNTIME_")}
    env.update(QRUNTIME_DATA_DIR=str(data_dir), QRUNTIME_LOG_LEVEL="warning")
    binaries = Path(sys.executable).parent
    auth_server = subprocess.Popen([str(binaries / "qruntime-auth"), "--port", str(auth_port)],
                                   env={**env, "QRUNTIME_SERVICE_KEYS": f"jobs={service_key}"})
    server = subprocess.Popen([str(binaries / "qruntime-devices"), "--port", str(port), *args.extra],
                              env={**env, "QRUNTIME_AUTH_URL": f"127.0.0.1:{auth_port}"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, \
                grpc.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel:
            wait_serving(auth_channel)
            wait_serving(channel)
            time.sleep(args.settle)
            auth = auth_service_pb2_grpc.AuthServiceStub(auth_channel)
            token = auth.CreateServiceToken(auth_service_pb2.CreateServiceTokenRequest(service_key=service_key)).token
            metadata = (("authorization", f"Bearer {token}"),)
            devices = devices_service_pb2_grpc.DevicesServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            request = devices_service_pb2.RunCircuitsRequest(
                backend="ibmq_qasm_simulator", circuits_qpy=dump_circuits_qpy(ReferenceCircuits.bell()), shots=SHOTS
            )
            for _ in range(5):  # warm-up: first runs, connections
                devices.RunCircuits(request, metadata=metadata, timeout=120)
            latencies = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                devices.RunCircuits(request, metadata=metadata, timeout=60)
                latencies.append((time.perf_counter() - started) * 1000)
            print(f"Bell RunCircuits: {percentiles(latencies)}")

            heavy = random_circuit(args.qubits, args.depth, measure=True, seed=1)
            heavy_request = devices_service_pb2.RunCircuitsRequest(
                backend="simulator_statevector", circuits_qpy=dump_circuits_qpy(heavy), shots=100, seed=1
            )
            durations: list[float] = []

            def simulate() -> None:
                started = time.perf_counter()
                devices.RunCircuits(heavy_request, metadata=metadata, timeout=600)
                durations.append(time.perf_counter() - started)

            heavy_threads = [threading.Thread(target=simulate) for _ in range(2)]
            for thread in heavy_threads:
                thread.start()
            time.sleep(0.3)  # both under way
            checks, gets = [], []
            get_request = devices_service_pb2.GetBackendRequest(name="simulator_statevector")
            while any(thread.is_alive() for thread in heavy_threads):
                for samples, call in ((checks, lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=30)),
                                      (gets, lambda: devices.GetBackend(get_request, metadata=metadata, timeout=30))):
                    started = time.perf_counter()
                    call()
                    samples.append((time.perf_counter() - started) * 1000)
                time.sleep(0.05)
            for thread in heavy_threads:
                thread.join()
            print(f"two {args.qubits}-qubit depth-{args.depth} simulations took "
                  + ", ".join(f"{d:.1f} s" for d in durations))
            for name, samples in (("health Check", checks), ("GetBackend", gets)):
                slow = sum(1 for s in samples if s > 1000)
                print(f"{name} meanwhile: {percentiles(samples)}; over 1 s: {slow}")
    finally:
        for process in (server, auth_server):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
