"""Fixtures of the jobs service's unit tests: a store on a fresh SQLite file, a local backend, circuits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_support import new_postgres_database
from qiskit import QuantumCircuit, transpile
from qiskit_aer import AerSimulator

from qruntime_devices import primitives
from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.worker import Worker
from qruntime_jobs.store import JobStore


class LocalAerBackend:
    """A TEST DOUBLE of the devices service, only for unit-testing the programs' logic.

    It has HostBackend's interface (name, num_qubits, run(circuits, shots, seed, memory) returning one
    {"counts", "memory", "register_names"} per circuit, run_primitive(PrimitiveInput) returning the
    PrimitiveResult) but runs the circuits on a local AerSimulator, and the primitives with the devices
    worker's own code in this process, instead of calling DevicesService.RunCircuits. The servicer tests
    use the real devices service.
    """

    name = "local_aer"

    def __init__(self, num_qubits: int = 8) -> None:
        self.num_qubits = num_qubits
        self.calls: list[int] = []  # circuits per run() or run_primitive() call
        self._simulator = AerSimulator()
        self._adapter = AerSimulatorAdapter("local_aer")

    def run_primitive(self, primitive):
        prepared = primitives.prepare(primitive, self._adapter)
        self.calls.append(len(prepared.circuits))
        return Worker._run_primitive(self._adapter, prepared, primitive).primitive_result

    def run(self, circuits: Any, shots: int = 1024, seed: int | None = None, memory: bool = False):
        circuits = [circuits] if isinstance(circuits, QuantumCircuit) else list(circuits)
        self.calls.append(len(circuits))
        compiled = transpile(circuits, self._simulator)
        result = self._simulator.run(compiled, shots=shots, seed_simulator=seed, memory=memory).result()
        return [
            {
                "counts": dict(result.get_counts(i)),
                "memory": result.get_memory(i) if memory else [],
                "register_names": [register.name for register in reversed(circuit.cregs)],
            }
            for i, circuit in enumerate(circuits)
        ]


class RecordingMessenger:
    """Collects what a program publishes."""

    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish(self, message: Any, final: bool = False) -> None:
        self.published.append(message)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with new_postgres_database("qruntime_jobs") as url:
        yield url


@pytest.fixture
def backend() -> LocalAerBackend:
    return LocalAerBackend()


@pytest.fixture
def messenger() -> RecordingMessenger:
    return RecordingMessenger()


@pytest.fixture
def bell_state() -> QuantumCircuit:
    """The Bell state (|00> + |11>)/sqrt(2) without measurements."""
    circuit = QuantumCircuit(2, name="bell")
    circuit.h(0)
    circuit.cx(0, 1)
    return circuit


@pytest.fixture
def local_backend_class() -> type[LocalAerBackend]:
    return LocalAerBackend
