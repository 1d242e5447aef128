"""Backends as users see them: what a backend is, its live status and its calibration data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ._convert import optional_datetime
from .devices.v1 import backend_pb2

if TYPE_CHECKING:
    from ._channel import Transport
    from ._runtime_backend import RuntimeBackend
    from ._service import IBMRuntimeService

__all__ = [
    "BackendConfiguration",
    "BackendProperties",
    "BackendStatus",
    "GateProperties",
    "QubitProperties",
]


@dataclass(frozen=True)
class BackendStatus:
    """The live state of a backend."""

    backend_name: str
    """The backend's name."""
    operational: bool
    """Whether it accepts work now."""
    pending_jobs: int
    """Circuit runs waiting for or in execution on it."""
    status_msg: str
    """A short word on the status, e.g. ``"active"``."""


@dataclass(frozen=True)
class BackendConfiguration:
    """What a backend can run; fixed for the backend."""

    backend_name: str
    """The backend's name."""
    simulator: bool
    """Whether it is a simulator."""
    num_qubits: int
    """Number of qubits."""
    basis_gates: list[str]
    """Native gates, e.g. ``["cx", "rz", "sx", "x"]``."""
    coupling_map: list[list[int]] | None
    """Allowed ``[control, target]`` pairs; None when every pair is allowed."""
    max_shots: int
    """Most shots per circuit."""
    max_experiments: int
    """Most circuits per run."""
    simulation_method: str
    """The simulation method of a simulator; empty for physical systems."""
    max_execution_time: float | None
    """The longest one job may run on it, in seconds."""
    dt: float | None
    """System time resolution of the input signals, in seconds; None when not applicable."""


@dataclass(frozen=True)
class QubitProperties:
    """Calibration data of one qubit."""

    qubit: int
    """The qubit's index."""
    t1: float
    """Relaxation time, in seconds."""
    t2: float
    """Dephasing time, in seconds."""
    frequency: float
    """Frequency, in hertz."""
    readout_error: float
    """Probability that reading the qubit out gives the wrong value."""


@dataclass(frozen=True)
class GateProperties:
    """Calibration data of one gate on a tuple of qubits."""

    gate: str
    """The gate's name, e.g. ``"cx"``."""
    qubits: tuple[int, ...]
    """The qubits it acts on."""
    error: float
    """Error rate."""
    duration: float
    """Duration, in seconds."""


@dataclass(frozen=True)
class BackendProperties:
    """Calibration data of a backend; empty for ideal simulators."""

    backend_name: str
    """The backend's name."""
    last_update_date: datetime | None
    """When the calibration was taken."""
    qubits: tuple[QubitProperties, ...]
    """Per-qubit data."""
    gates: tuple[GateProperties, ...]
    """Per-gate data."""

    @classmethod
    def from_proto(cls, backend_name: str, message: backend_pb2.BackendProperties) -> BackendProperties:
        """Build from the DevicesService message."""
        return cls(
            backend_name=backend_name,
            last_update_date=optional_datetime(message, "last_update_time"),
            qubits=tuple(
                QubitProperties(q.qubit, q.t1, q.t2, q.frequency, q.readout_error) for q in message.qubits
            ),
            gates=tuple(GateProperties(g.gate, tuple(g.qubits), g.error, g.duration) for g in message.gates),
        )

    def qubit_property(self, qubit: int) -> QubitProperties:
        """The calibration data of ``qubit``; KeyError when there is none."""
        for entry in self.qubits:
            if entry.qubit == qubit:
                return entry
        raise KeyError(f"{self.backend_name} has no calibration data for qubit {qubit}")

    def gate_property(self, gate: str, qubits: int | tuple[int, ...] | list[int]) -> GateProperties:
        """The calibration data of ``gate`` on ``qubits``; KeyError when there is none."""
        wanted = (qubits,) if isinstance(qubits, int) else tuple(qubits)
        for entry in self.gates:
            if entry.gate == gate and entry.qubits == wanted:
                return entry
        raise KeyError(f"{self.backend_name} has no calibration data for {gate} on qubits {wanted}")

    def t1(self, qubit: int) -> float:
        """T1 of ``qubit``, in seconds."""
        return self.qubit_property(qubit).t1

    def t2(self, qubit: int) -> float:
        """T2 of ``qubit``, in seconds."""
        return self.qubit_property(qubit).t2

    def readout_error(self, qubit: int) -> float:
        """Readout error of ``qubit``."""
        return self.qubit_property(qubit).readout_error

    def gate_error(self, gate: str, qubits: int | tuple[int, ...] | list[int]) -> float:
        """Error rate of ``gate`` on ``qubits``."""
        return self.gate_property(gate, qubits).error

    def gate_length(self, gate: str, qubits: int | tuple[int, ...] | list[int]) -> float:
        """Duration of ``gate`` on ``qubits``, in seconds."""
        return self.gate_property(gate, qubits).duration


def runtime_backend(
    backend: backend_pb2.Backend, transport: Transport | None = None, service: IBMRuntimeService | None = None,
) -> RuntimeBackend:
    """A RuntimeBackend; its module is imported on first use, as it imports Qiskit."""
    from ._runtime_backend import RuntimeBackend

    return RuntimeBackend(backend, transport, service=service)
