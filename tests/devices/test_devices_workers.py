"""The devices service's simulation workers through a real server: whatever a request does to its
worker (out of memory, a crash, a hostile QPY file, a caller that gives up), that one call fails
with a typed error and the service goes on answering."""

from __future__ import annotations

import os
import signal
import struct
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from plugged import CrashingAdapter, HungryAdapter, PluggedAdapter
from process_support import alive
from qiskit import QuantumCircuit
from qiskit.circuit.random import random_circuit
from qruntime.devices.v1 import devices_service_pb2 as pb
from qruntime.devices.v1 import devices_service_pb2_grpc
from qruntime.encoding import dump_circuits_qpy
from systems import isa

from qruntime_devices.adapters import default_backends
from qruntime_kit.errors import from_rpc_error
from qruntime_kit.limits import Limits, create_cgroup

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


GiB, MiB = 1 << 30, 1 << 20
needs_cgroups = pytest.mark.skipif(
    create_cgroup("probe", Limits(memory_bytes=GiB)) is None, reason="no usable memory cgroup here"
)


class Devices:
    """The devices service of a running suite, called with one principal's token."""

    def __init__(self, suite, api_key: str | None = None, instance: str | None = None) -> None:
        self.suite = suite
        self.channel = suite.channel()
        self.stub = devices_service_pb2_grpc.DevicesServiceStub(self.channel)
        self.metadata = suite.metadata(suite.token(api_key, instance))
        self.component = next(c for c in suite.suite.components if c.name == "devices")

    def __call__(self, method: str, request, timeout: float = 60):
        return getattr(self.stub, method)(request, metadata=self.metadata, timeout=timeout)

    def error(self, method: str, request, timeout: float = 60):
        with pytest.raises(grpc.RpcError) as caught:
            self(method, request, timeout)
        return from_rpc_error(caught.value)

    def serving(self) -> bool:
        health = health_pb2_grpc.HealthStub(self.channel)
        return health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING


def run_request(backend: str, circuits, **fields) -> pb.RunCircuitsRequest:
    return pb.RunCircuitsRequest(backend=backend, circuits_qpy=dump_circuits_qpy(circuits), **fields)


def check_request(backend: str, circuits_qpy: bytes, shots: int = 0) -> pb.CheckCircuitsRequest:
    return pb.CheckCircuitsRequest(backend=backend, circuits_qpy=circuits_qpy, shots=shots)


def bellish(qubits: int) -> QuantumCircuit:
    circuit = QuantumCircuit(qubits, name=f"bellish-{qubits}")
    circuit.h(0)
    for qubit in range(qubits - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def until(condition, timeout: float) -> float:
    """Seconds it took condition to hold; fails past timeout."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not reached"
        time.sleep(0.005)
    return time.monotonic() - started


def test_check_circuits_summarises_each_circuit_and_follows_the_plans(start_suite, bell):
    suite = start_suite("devices")
    service, lite = Devices(suite, suite.service_key), Devices(suite)
    wide = QuantumCircuit(40, 2, name="wide")  # 38 idle qubits: Aer drops them
    wide.h(0)
    wide.t(0)
    wide.cx(0, 1)
    wide.measure([0, 1], [0, 1])
    qpy = dump_circuits_qpy([bell, wide])
    summaries = lite("CheckCircuits", check_request("ibmq_qasm_simulator", qpy)).circuits
    assert [(s.name, s.num_qubits, s.num_clbits, s.simulated_qubits, s.simulation_method) for s in summaries] == [
        (bell.name, 2, 2, 2, "stabilizer"), ("wide", 40, 2, 2, "statevector")
    ]
    assert summaries[1].estimated_memory_bytes == 448  # the stabilizer's tableau, the larger below 8 qubits
    isa_bell = dump_circuits_qpy(isa(bell, "ibm_manila"))
    (manila,) = service("CheckCircuits", check_request("ibm_manila", isa_bell)).circuits
    assert (manila.simulation_method, manila.simulated_qubits) == ("density_matrix", 2)  # 1,024 shots > 2²
    error = lite.error("CheckCircuits", check_request("ibm_manila", qpy))
    assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, "BACKEND_NOT_IN_PLAN")


def test_a_circuit_that_cannot_fit_in_memory_is_refused_by_check_and_run(start_suite):
    suite = start_suite("devices", simulation_memory_bytes=4 * GiB)
    service = Devices(suite, suite.service_key)
    backend = service("GetBackend", pb.GetBackendRequest(name="simulator_statevector")).backend
    assert backend.configuration.num_qubits == 28  # 16·2²⁸ bytes = 4 GiB
    big = bellish(29)
    for method, request in (("CheckCircuits", check_request("simulator_statevector", dump_circuits_qpy(big))),
                            ("RunCircuits", run_request("simulator_statevector", big))):
        error = service.error(method, request)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CIRCUIT_NEEDS_TOO_MUCH_MEMORY")
        assert error.metadata["estimated_bytes"] == str(8 * GiB) and error.metadata["limit_bytes"] == str(4 * GiB)
        assert error.metadata["circuit_name"] == "bellish-29" and error.metadata["method"] == "statevector"
        assert "8 GiB" in error.message and "4 GiB" in error.message
        assert [field for field, _ in error.field_violations] == ["circuits_qpy"]
    assert service.component.queues.pending("simulator_statevector") == 0


def ten_million_qubits(bell: QuantumCircuit) -> bytes:
    """A real QPY file whose circuit header claims 10,000,000 qubits."""
    data = bytearray(dump_circuits_qpy(bell))
    name = bell.name.encode()
    # The circuit header: name size, global phase type and size, then num_qubits and num_clbits.
    header = struct.pack(">HcHII", len(name), b"f", 8, bell.num_qubits, bell.num_clbits)
    where = data.index(header)
    struct.pack_into(">I", data, where + 5, 10_000_000)
    return bytes(data)


def test_a_qpy_file_claiming_ten_million_qubits_costs_a_worker_not_the_service(start_suite, bell):
    suite = start_suite("devices", circuit_check_seconds=1, simulation_memory_bytes=256 * MiB)
    service = Devices(suite, suite.service_key)
    hostile = ten_million_qubits(bell)
    assert len(hostile) < 1000
    run = pb.RunCircuitsRequest(backend="ibmq_qasm_simulator", circuits_qpy=hostile)
    for method, request in (("CheckCircuits", check_request("ibmq_qasm_simulator", hostile)), ("RunCircuits", run)):
        error = service.error(method, request)
        assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CIRCUITS_EXCEED_CHECK_LIMITS")
        assert "could not be decoded and checked within the limits" in error.message
        assert service.serving()
    assert service("RunCircuits", run_request("ibmq_qasm_simulator", bell, shots=100)).results[0].counts


@needs_cgroups
def test_a_worker_killed_for_memory_fails_only_its_call(start_suite, bell):
    backends = {"hungry": HungryAdapter("hungry"), "plugged": PluggedAdapter("plugged")}
    suite = start_suite("devices", backends=backends, simulation_memory_bytes=64 * MiB)
    service = Devices(suite, suite.service_key)
    limit = service.component.pool.worker_memory
    error = service.error("RunCircuits", run_request("hungry", bell, shots=10, seed=(limit + GiB) // MiB))
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SIMULATION_OUT_OF_MEMORY")
    assert error.metadata["memory_limit_bytes"] == str(limit) and "1.06 GiB" in error.message  # 64 MiB + 1 GiB
    assert service.serving()
    assert service("RunCircuits", run_request("plugged", bell, shots=7)).results[0].counts["0"] == 7
    assert service.component.queues.pending("hungry") == 0


def test_a_crashing_simulator_fails_only_its_call(start_suite, bell):
    backends = {"crashing": CrashingAdapter("crashing"), "plugged": PluggedAdapter("plugged")}
    suite = start_suite("devices", backends=backends)
    service = Devices(suite, suite.service_key)
    error = service.error("RunCircuits", run_request("crashing", bell, shots=10))
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, "SIMULATOR_CRASHED")
    assert error.metadata["worker_end"] == "killed by signal SIGABRT" and "SIGABRT" in error.message
    assert service.serving()
    assert service("RunCircuits", run_request("plugged", bell, shots=7)).results[0].counts["0"] == 7


# -- long simulations (seconds each here): slow


@pytest.fixture(scope="module")
def busy_suite(start_module_suite):
    """A suite with two warm simulation workers, for long simulations; each test leaves it settled."""
    # Not the 127- and 133-qubit systems, whose noise models take each worker seconds of CPU to build.
    large = ("ibm_sherbrooke", "ibm_torino")
    small = {name: adapter for name, adapter in default_backends().items() if name not in large}
    suite = start_module_suite("devices", backends=small, simulation_workers=2, warm_up=True)
    service = Devices(suite, suite.service_key)
    settled(service)
    yield service
    service.channel.close()


def settled(service: Devices) -> None:
    """Wait until both workers are started, idle and have every backend loaded (warm-up is over)."""
    pool, everything = service.component.pool, frozenset(service.component.backends)
    until(lambda: len(pool.pids(busy=False)) == 2 and set(pool.loaded().values()) == {everything}, timeout=120)


def heavy(qubits: int = 24, depth: int = 30, seed: int = 1) -> QuantumCircuit:
    """A random circuit whose state vector takes seconds to simulate here (24 qubits: 256 MiB)."""
    return random_circuit(qubits, depth, measure=True, seed=seed)


def simulating_worker(service: Devices, backend: str) -> int:
    """The pid of the worker simulating on backend, once it is simulating."""
    until(lambda: service.component.queues.running(backend) == 1 and service.component.pool.pids(busy=True), 30)
    [pid] = service.component.pool.pids(busy=True)
    time.sleep(0.5)  # decoded and checked: simulating
    return pid


@pytest.mark.slow
def test_a_cancelled_run_kills_its_worker_within_a_second_and_the_next_run_starts_at_once(busy_suite, bell):
    service = busy_suite
    call = service.stub.RunCircuits.future(run_request("simulator_statevector", heavy(), shots=10),
                                           metadata=service.metadata, timeout=120)
    pid = simulating_worker(service, "simulator_statevector")
    call.cancel()
    assert until(lambda: not alive(pid), timeout=1.0) < 1.0
    until(lambda: service.component.queues.pending("simulator_statevector") == 0, timeout=1.0)
    started = time.monotonic()
    assert service("RunCircuits", run_request("simulator_statevector", bell, shots=10)).results[0].counts
    assert time.monotonic() - started < 2.0  # the other warm worker; a fresh one starts meanwhile
    settled(service)


@pytest.mark.slow
def test_a_run_past_its_deadline_kills_its_worker(busy_suite):
    service = busy_suite
    call = service.stub.RunCircuits.future(run_request("simulator_statevector", heavy(seed=2), shots=10),
                                           metadata=service.metadata, timeout=3)
    pid = simulating_worker(service, "simulator_statevector")
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert until(lambda: not alive(pid), timeout=1.0) < 1.0
    settled(service)


@pytest.mark.slow
def test_a_worker_killed_mid_simulation_fails_only_its_call(busy_suite, bell):
    service = busy_suite
    call = service.stub.RunCircuits.future(run_request("simulator_statevector", heavy(seed=3), shots=10),
                                           metadata=service.metadata, timeout=120)
    os.kill(simulating_worker(service, "simulator_statevector"), signal.SIGKILL)
    with pytest.raises(grpc.RpcError) as caught:
        call.result()
    error = from_rpc_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INTERNAL, "SIMULATOR_CRASHED")
    assert error.metadata["worker_end"] == "killed by signal SIGKILL"
    assert service("RunCircuits", run_request("simulator_statevector", bell, shots=10)).results[0].counts
    settled(service)


@pytest.mark.slow
def test_health_and_get_backend_answer_within_a_second_while_two_heavy_simulations_run(busy_suite):
    service = busy_suite
    runs = [service.stub.RunCircuits.future(run_request("simulator_statevector", heavy(23, 40, seed), shots=10),
                                            metadata=service.metadata, timeout=300) for seed in (4, 5)]
    until(lambda: service.component.queues.running("simulator_statevector") == 2, timeout=30)
    health = health_pb2_grpc.HealthStub(service.channel)
    latencies = []
    measuring = time.monotonic() + 4  # a few seconds of both simulations is the point; their end is not
    while time.monotonic() < measuring:
        for call in (lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
                     lambda: service("GetBackend", pb.GetBackendRequest(name="simulator_statevector"), timeout=5)):
            started = time.perf_counter()
            call()
            latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    assert service.component.queues.running("simulator_statevector") == 2  # measured under both, to the end
    for run in runs:
        run.cancel()  # the callers give up: their workers are killed
    until(lambda: service.component.queues.running("simulator_statevector") == 0, timeout=10)
    settled(service)
    latencies.sort()
    print(f"health and GetBackend under two simulations: n={len(latencies)}, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert len(latencies) > 20 and latencies[-1] < 1.0
