"""The devices service as the server kit serves it.

State: none of its own in a database (yet). What it serves is the adapters' configuration and
calibration data, loaded from the code and the calibration snapshots at start-up, and the
in-memory queues of runs waiting for or in execution; a restart empties the queues, so the jobs
service, which owns the jobs, retries or fails runs that were in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import grpc
from qruntime.devices.v1 import devices_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings, setting

from .adapters import BackendAdapter, default_backends
from .queues import ExecutionQueues
from .servicer import DevicesServicer

log = get_logger("devices")
SERVICE = "qruntime.devices.v1.DevicesService"


@dataclasses.dataclass(frozen=True)
class DevicesSettings(ServerSettings):
    """Settings of the devices service."""

    backends: str = setting("", "comma-separated names of the backends to serve; empty: all of them")
    warm_up: bool = setting(True, "build noise models and run a first circuit at start-up, in the background")


class DevicesComponent:
    name = "devices"
    service_names = (SERVICE,)
    public_methods: frozenset[str] = frozenset()

    def __init__(
        self, settings: DevicesSettings, backends: Mapping[str, BackendAdapter] | None = None
    ) -> None:
        self._settings = settings
        if backends is None:
            backends = _selected(default_backends(), settings.backends)
        self.backends = dict(backends)
        self.queues = ExecutionQueues(self.backends)
        self._warm_up: asyncio.Task | None = None

    def register(self, server: grpc.aio.Server) -> None:
        devices_service_pb2_grpc.add_DevicesServiceServicer_to_server(
            DevicesServicer(self.backends, self.queues), server
        )

    async def start(self, runtime: Runtime) -> None:
        log.info("backends", backends=list(self.backends))
        if self._settings.warm_up:
            # In the background: the service answers at once, and a run that comes first builds what
            # it needs itself (the adapters build lazily, under a lock).
            warm_up = asyncio.to_thread(self.queues.warm_up)
            self._warm_up = asyncio.create_task(warm_up, name="devices-warm-up")

    async def stop(self) -> None:
        if self._warm_up is not None and not self._warm_up.done():
            self._warm_up.cancel()
        self.queues.close()


def _selected(backends: dict[str, BackendAdapter], names: str) -> dict[str, BackendAdapter]:
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(backends))
    if unknown:
        raise ValueError(f"invalid settings: unknown backends {unknown}; known: {sorted(backends)}")
    return {name: backends[name] for name in backends if not wanted or name in wanted}


def build_component(
    settings: DevicesSettings, backends: Mapping[str, BackendAdapter] | None = None
) -> DevicesComponent:
    """The devices component; backends replaces the default ones (e.g. to add real hardware)."""
    return DevicesComponent(settings, backends)


SETTINGS = DevicesSettings
