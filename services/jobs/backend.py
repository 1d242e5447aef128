"""The runner's calls to the devices service on behalf of a running job.

A job outlives its user's token, so these calls carry the jobs service's SERVICE token. They run on
the service's event loop; the program that asked for them runs in its own host process and waits.
"""

from __future__ import annotations

import asyncio

import grpc
import structlog
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc

from qruntime_kit.errors import ServiceError
from qruntime_kit.outbound import Credentials, call

# Errors that mean the suite could not make the call, not that the backend refused the circuits.
_SUITE_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_SUITE_REASONS = ("UPSTREAM_UNAVAILABLE", "SHUTTING_DOWN")
_ATTEMPTS, _RETRY_SECONDS = 3, 1.0


class BackendError(Exception):
    """The devices service refused or failed the circuits; carries its error."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(f"{error.reason}: {error.message}")
        self.error = error


class SuiteError(Exception):
    """The jobs service could not reach or sign in to the devices service: not the program's fault."""


class DevicesClient:
    """DevicesService calls with the service's own credentials, for jobs that are running."""

    def __init__(self, stub: devices_service_pb2_grpc.DevicesServiceStub, credentials: Credentials) -> None:
        self._stub = stub
        self._credentials = credentials

    async def backend(self, name: str, *, timeout: float) -> backend_pb2.Backend:
        """The backend's description; BackendError or SuiteError."""
        request = devices_service_pb2.GetBackendRequest(name=name)
        return (await self._call("GetBackend", request, timeout=timeout)).backend

    async def run_circuits(
        self, request: devices_service_pb2.RunCircuitsRequest, *, timeout: float
    ) -> devices_service_pb2.RunCircuitsResponse:
        """RunCircuits; BackendError or SuiteError. Cancelling the awaiting task cancels the RPC,
        and the devices service then stops the simulation."""
        return await self._call("RunCircuits", request, timeout=timeout)

    async def _call(self, method: str, request, *, timeout: float):
        try:
            metadata = await self._credentials.metadata()
        except ServiceError as err:
            raise SuiteError(f"the jobs service could not sign in to call the devices service: {err}") from None
        log = structlog.get_logger("jobs.devices")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return await call(getattr(self._stub, method), request, metadata=metadata, timeout=timeout)
            except ServiceError as err:
                if err.code == grpc.StatusCode.UNAVAILABLE and attempt < _ATTEMPTS:
                    # The devices service restarts empty-handed, a backend comes back: running again is harmless.
                    log.warning("devices service unavailable; retrying", method=method, attempt=attempt)
                    await asyncio.sleep(_RETRY_SECONDS * attempt)
                    continue
                if err.code in _SUITE_CODES or err.reason in _SUITE_REASONS:
                    raise SuiteError(
                        f"the devices service could not be used ({err.reason}): {err.message}"
                    ) from None
                raise BackendError(err) from None
        raise AssertionError("unreachable")
