"""Fixtures of the devices service's tests: the default backends, built once per session."""

from __future__ import annotations

import pytest
from qiskit import QuantumCircuit

from qruntime_devices.adapters import BackendAdapter, default_backends


@pytest.fixture(scope="session")
def backends() -> dict[str, BackendAdapter]:
    return default_backends()


@pytest.fixture
def bell() -> QuantumCircuit:
    circuit = QuantumCircuit(2, 2, name="bell")
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    return circuit
