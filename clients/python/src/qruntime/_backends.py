"""Backends as users see them: what a backend is, its live status and its calibration data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from qiskit.providers import BackendV2, Options
from qiskit.transpiler import Target

from ._convert import optional_datetime, optional_seconds
from ._target import build_target
from .devices.v1 import backend_pb2, devices_service_pb2
from .exceptions import IBMRuntimeError

if TYPE_CHECKING:
    from ._channel import Transport

__all__ = [
    "BackendConfiguration",
    "BackendProperties",
    "BackendStatus",
    "GateProperties",
    "QubitProperties",
    "RuntimeBackend",
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


class RuntimeBackend(BackendV2):
    """A backend the instance may use: a simulator or a physical system, as a Qiskit ``BackendV2``.

    Its ``target`` (a Qiskit ``Target`` built from the configuration and calibration data, errors and
    durations included) lets Qiskit compile for it: ``transpile(circuit, backend=backend)`` or
    ``generate_preset_pass_manager(optimization_level=1, backend=backend)``. Jobs run on it by naming
    it: ``service.run(..., options={"backend_name": backend.name})``; ``run`` itself is not offered.
    """

    def __init__(self, backend: backend_pb2.Backend, transport: Transport | None = None) -> None:
        super().__init__(name=backend.name, description=backend.description)
        self._backend = backend
        self._transport = transport
        self._properties: BackendProperties | None = None
        self._target: Target | None = None

    @property
    def simulator(self) -> bool:
        """Whether it is a simulator."""
        return self._backend.kind == backend_pb2.BACKEND_KIND_SIMULATOR

    @property
    def num_qubits(self) -> int:
        """Number of qubits."""
        return self._backend.configuration.num_qubits

    @property
    def basis_gates(self) -> list[str]:
        """Native gates."""
        return list(self._backend.configuration.basis_gates)

    @property
    def target(self) -> Target:
        """The Qiskit ``Target``: native gates on the qubits and couplings they may act on, with the
        calibration's errors and durations, and the qubits' T1, T2 and frequency. Built on first use
        (a physical system's calibration data are fetched then)."""
        if self._target is None:
            calibrated = not self.simulator and self._transport is not None
            props = self._fetch_properties() if calibrated else backend_pb2.BackendProperties()
            self._target = build_target(self._backend, props)
        return self._target

    @property
    def max_circuits(self) -> int:
        """Most circuits per run."""
        return self._backend.configuration.max_experiments

    @classmethod
    def _default_options(cls) -> Options:
        return Options(shots=1024)

    def run(self, run_input, **options):
        """Not offered: run circuits through a job (``service.run`` or the primitives), which queue
        them, keep their results and enforce the instance's limits."""
        raise IBMRuntimeError(
            f"circuits do not run on {self.name} directly; submit a job with service.run(..., "
            f"options={{'backend_name': {self.name!r}}}) or a primitive"
        )

    @property
    def max_shots(self) -> int:
        """Most shots per circuit."""
        return self._backend.configuration.max_shots

    @property
    def proto(self) -> backend_pb2.Backend:
        """The DevicesService message it was built from, as last fetched."""
        return self._backend

    def status(self) -> BackendStatus:
        """The live status, fetched anew when the backend came from a service."""
        if self._transport is not None:
            request = devices_service_pb2.GetBackendRequest(name=self.name)
            self._backend = self._transport.call(self._transport.devices.GetBackend, request).backend
        status = self._backend.status
        return BackendStatus(self.name, status.operational, status.pending_jobs, status.status_message)

    def configuration(self) -> BackendConfiguration:
        """What the backend can run."""
        config = self._backend.configuration
        return BackendConfiguration(
            backend_name=self.name,
            simulator=self.simulator,
            num_qubits=config.num_qubits,
            basis_gates=self.basis_gates,
            coupling_map=[[e.control, e.target] for e in config.coupling_map] or None,
            max_shots=config.max_shots,
            max_experiments=config.max_experiments,
            simulation_method=config.simulation_method,
            max_execution_time=optional_seconds(config, "max_execution_time"),
            dt=config.dt or None,
        )

    def properties(self, refresh: bool = False) -> BackendProperties:
        """The calibration data, fetched on first use (or again with ``refresh=True``).

        Raises:
            IBMRuntimeError: the backend was not obtained from a service, so there is nowhere to ask.
        """
        if self._properties is None or refresh:
            self._properties = BackendProperties.from_proto(self.name, self._fetch_properties())
        return self._properties

    def _fetch_properties(self) -> backend_pb2.BackendProperties:
        if self._transport is None:
            raise IBMRuntimeError(f"backend {self.name!r} is not attached to a service")
        request = devices_service_pb2.GetBackendPropertiesRequest(name=self.name)
        return self._transport.call(self._transport.devices.GetBackendProperties, request).properties

    def __repr__(self) -> str:
        return f"<RuntimeBackend({self.name!r})>"
