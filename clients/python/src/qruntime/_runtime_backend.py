"""The client's backend as a Qiskit BackendV2. Kept apart from _backends.py, and imported by the
package only when first used, because it imports Qiskit: importing the client stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qiskit.providers import BackendV2, Options
from qiskit.transpiler import Target

from ._backends import BackendConfiguration, BackendProperties, BackendStatus
from ._convert import optional_seconds
from ._target import build_target
from .devices.v1 import backend_pb2, devices_service_pb2
from .exceptions import IBMRuntimeError

if TYPE_CHECKING:
    from ._channel import Transport
    from ._service import IBMRuntimeService

__all__ = ["RuntimeBackend"]


class RuntimeBackend(BackendV2):
    """A backend the instance may use: a simulator or a physical system, as a Qiskit ``BackendV2``.

    Its ``target`` (a Qiskit ``Target`` built from the configuration and calibration data, errors and
    durations included) lets Qiskit compile for it: ``transpile(circuit, backend=backend)`` or
    ``generate_preset_pass_manager(optimization_level=1, backend=backend)``. Jobs run on it by naming
    it: ``service.run(..., options={"backend_name": backend.name})``; ``run`` itself is not offered.
    """

    def __init__(
        self, backend: backend_pb2.Backend, transport: Transport | None = None, *,
        service: IBMRuntimeService | None = None,
    ) -> None:
        super().__init__(name=backend.name, description=backend.description)
        self._backend = backend
        self._transport = transport
        self._service = service
        self._properties: BackendProperties | None = None
        self._target: Target | None = None

    @property
    def service(self) -> IBMRuntimeService | None:
        """The service the backend was listed by (a ``Session(backend=...)`` is created with it)."""
        return self._service

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
