"""The backend a program sees: a blocking client of DevicesService, made for the program's thread.

Programs run in a worker thread and call backend.run(...) synchronously. The calls go out on the
jobs service's own event loop, over its async channel to the devices service and with its SERVICE
token (the user's token may have expired by the time a queued job runs), and the thread waits for
the answer, checking the job's cancellation signal while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any

import grpc
import structlog
from qiskit import QuantumCircuit
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc
from qruntime.encoding import dump_circuits_qpy

from qruntime_kit.errors import InvalidArgument, ServiceError
from qruntime_kit.outbound import Credentials, call

from .control import JobCancelled, JobControl

# Errors that mean the suite could not make the call, not that the backend refused the circuits.
_SUITE_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_SUITE_REASONS = ("UPSTREAM_UNAVAILABLE", "SHUTTING_DOWN")
_POLL_SECONDS = 0.2
_ATTEMPTS, _RETRY_SECONDS = 3, 1.0


class BackendError(Exception):
    """The devices service refused or failed the circuits; carries its reason."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(f"{error.reason}: {error.message}")
        self.reason = error.reason
        self.error = error


class SuiteError(Exception):
    """The jobs service could not reach or sign in to the devices service: not the program's fault."""


class DevicesBridge:
    """Blocking DevicesService calls from a program's thread, run on the service's event loop."""

    def __init__(
        self,
        stub: devices_service_pb2_grpc.DevicesServiceStub,
        credentials: Credentials,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._stub = stub
        self._credentials = credentials
        self._loop = loop

    def call(self, method: str, request, *, control: JobControl, job_id: str, request_id: str, timeout: float):
        """Call DevicesService.<method>; raises BackendError, SuiteError or JobCancelled."""
        future = asyncio.run_coroutine_threadsafe(
            self._call(method, request, job_id=job_id, request_id=request_id, timeout=timeout), self._loop
        )
        while True:
            try:
                return future.result(timeout=_POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                if control.cancelled:
                    future.cancel()  # cancels the RPC too
                    control.check()
            except concurrent.futures.CancelledError:  # the service is stopping
                raise JobCancelled("the service stopped while the devices service ran the circuits") from None

    async def _call(self, method: str, request, *, job_id: str, request_id: str, timeout: float):
        # The job's own request id, bound here, is the one the credentials send on: the devices
        # service's log lines about the job then match the jobs service's.
        structlog.contextvars.bind_contextvars(job_id=job_id, request_id=request_id)
        try:
            metadata = await self._credentials.metadata()
        except ServiceError as err:
            raise SuiteError(f"the jobs service could not sign in to call the devices service: {err}") from None
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await call(getattr(self._stub, method), request, metadata=metadata, timeout=timeout)
            except ServiceError as err:
                if err.code == grpc.StatusCode.UNAVAILABLE and attempt < _ATTEMPTS:
                    # The devices service restarts empty-handed, a backend comes back: running again is harmless.
                    await asyncio.sleep(_RETRY_SECONDS * attempt)
                    continue
                if err.code in _SUITE_CODES or err.reason in _SUITE_REASONS:
                    raise SuiteError(
                        f"the devices service could not be used ({err.reason}): {err.message}"
                    ) from None
                raise BackendError(err) from None


def _check_fits(name: str, value: int, bits: int, reason: str) -> None:
    # The request's int32/int64 field would raise a bare ValueError, ending the job PROGRAM_ERROR.
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        message = f"{name} {value} is out of the range of a {bits}-bit integer"
        raise BackendError(InvalidArgument(message, reason=reason))


class RemoteBackend:
    """The backend a job runs on, as its program sees it: name, num_qubits and run()."""

    def __init__(
        self, name: str, devices: DevicesBridge, control: JobControl, *, job_id: str, request_id: str = "",
        timeout: float = 3 * 60 * 60,
    ) -> None:
        self._name = name
        self._devices = devices
        self._control = control
        self._job_id = job_id
        self._request_id = request_id
        self._timeout = timeout
        self._backend: backend_pb2.Backend | None = None

    @property
    def name(self) -> str:
        """The backend's name, e.g. "ibmq_qasm_simulator"."""
        return self._name

    @property
    def num_qubits(self) -> int:
        """How many qubits the backend has."""
        return self._describe().configuration.num_qubits

    @property
    def max_shots(self) -> int:
        """The most shots per circuit the backend takes."""
        return self._describe().configuration.max_shots

    def run(
        self,
        circuits: QuantumCircuit | Sequence[QuantumCircuit],
        shots: int = 1024,
        seed: int | None = None,
        memory: bool = False,
    ) -> list[dict[str, Any]]:
        """Run the circuits in one device call; one {"counts", "memory", "register_names"} per circuit."""
        self._control.check()
        _check_fits("shots", shots, 32, "INVALID_SHOTS")
        if seed is not None:
            _check_fits("seed", seed, 64, "INVALID_SEED")
        request = devices_service_pb2.RunCircuitsRequest(
            backend=self._name, circuits_qpy=dump_circuits_qpy(circuits), shots=shots, memory=memory,
            job_id=self._job_id,
        )
        if seed is not None:
            request.seed = seed
        response = self._call("RunCircuits", request)
        return [
            {"counts": dict(r.counts), "memory": list(r.memory), "register_names": list(r.register_names)}
            for r in response.results
        ]

    def _describe(self) -> backend_pb2.Backend:
        if self._backend is None:
            self._control.check()
            response = self._call("GetBackend", devices_service_pb2.GetBackendRequest(name=self._name))
            self._backend = response.backend
        return self._backend

    def _call(self, method: str, request):
        return self._devices.call(
            method, request, control=self._control, job_id=self._job_id, request_id=self._request_id,
            timeout=self._timeout,
        )

    def __repr__(self) -> str:
        return f"<RemoteBackend {self._name!r}>"
