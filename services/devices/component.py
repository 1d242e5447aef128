"""The devices service as the server kit serves it.

State: none of its own in a database (yet). What it serves is the adapters' configuration and
calibration data, loaded from the code and the calibration snapshots at start-up, and the
in-memory queues of runs waiting for or in execution; a restart empties the queues, so the jobs
service, which owns the jobs, retries or fails runs that were in flight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import grpc
from qruntime.devices.v1 import devices_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime
from qruntime_kit.settings import ServerSettings, setting

from .adapters import BackendAdapter, default_backends
from .memory import default_simulation_memory, describe_bytes
from .pool import WorkerPool
from .queues import ExecutionQueues
from .servicer import DevicesServicer

log = get_logger("devices")
SERVICE = "qruntime.devices.v1.DevicesService"


@dataclasses.dataclass(frozen=True)
class DevicesSettings(ServerSettings):
    """Settings of the devices service."""

    backends: str = setting("", "comma-separated names of the backends to serve; empty: all of them")
    warm_up: bool = setting(
        True, "start the simulation workers at start-up and load every backend into them (noise models, a "
        "first run), in the background; off: workers start on first use"
    )
    simulation_workers: int = setting(
        2, "worker processes kept started to decode, check and simulate circuits (about 400 MB each when "
        "idle); more start while all are busy"
    )
    simulation_memory_bytes: int = setting(
        0, "memory all simulations together may use, in bytes; circuits that cannot fit are refused, and each "
        "worker's hard limit is this plus its interpreter; 0: half the memory available at start"
    )
    circuit_check_seconds: float = setting(
        20.0, "longest a worker may take to decode and check one request's circuits; past it they are refused"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problems = []
        if self.simulation_workers < 1:
            problems.append(f"simulation_workers must be at least 1, got {self.simulation_workers}")
        if self.simulation_memory_bytes < 0:
            problems.append(f"simulation_memory_bytes must be 0 or more, got {self.simulation_memory_bytes}")
        if not self.circuit_check_seconds > 0:
            problems.append(f"circuit_check_seconds must be positive, got {self.circuit_check_seconds}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))


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
        self.simulation_memory = settings.simulation_memory_bytes or default_simulation_memory()
        for adapter in self.backends.values():
            adapter.limit_memory(self.simulation_memory)
        self.pool = WorkerPool(
            self.backends, size=settings.simulation_workers, simulation_memory=self.simulation_memory,
            check_seconds=settings.circuit_check_seconds, warm=settings.warm_up,
            log_format=settings.log_format, log_level=settings.log_level,
        )
        self.queues = ExecutionQueues(self.backends, self.pool, self.simulation_memory)

    def register(self, server: grpc.aio.Server) -> None:
        devices_service_pb2_grpc.add_DevicesServiceServicer_to_server(
            DevicesServicer(self.backends, self.queues), server
        )

    async def start(self, runtime: Runtime) -> None:
        log.info("backends", backends=list(self.backends), simulation_memory=describe_bytes(self.simulation_memory),
                 worker_memory_limit=describe_bytes(self.pool.worker_memory),
                 simulation_workers=self._settings.simulation_workers)
        # In the background: the service answers at once, and a request that comes first waits for a
        # worker (or starts one), which loads what it needs itself.
        await self.pool.start()

    async def stop(self) -> None:
        await self.pool.close()


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
