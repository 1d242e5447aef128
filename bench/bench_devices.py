"""The devices service under load: Bell latency, and health checks while heavy simulations run.

Starts `qruntime up` as a separate process (so this client's own interpreter lock plays no part),
signs in with the suite's service key, then:

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
    parser.add_argument("--extra", nargs="*", default=[], help="more flags for `qruntime up`")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    port = free_port()
    qruntime = Path(sys.executable).with_name("qruntime")
    server = subprocess.Popen(
        [str(qruntime), "up", "--data-dir", str(data_dir), "--port", str(port), "--log-level", "warning",
         *args.extra],
        env={k: v for k, v in os.environ.items() if not k.startswith("QRUNTIME_")},
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_serving(channel)
            time.sleep(args.settle)
            service_key = (data_dir / "service.key").read_text().strip()
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            token = auth.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=service_key)).token
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
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
