"""The jobs service as the server kit serves it.

State: its own tables (jobs_*) in data_dir/jobs.db or the configured database. Peers: the programs
service (programs_url) and the devices service (devices_url); empty URLs mean this same server, as
in the embedded suite. Starting it requeues jobs whose replica died and starts the executor.
"""

from __future__ import annotations

import asyncio

import grpc
from qruntime.devices.v1 import devices_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2_grpc

from qruntime_kit.logging import get_logger
from qruntime_kit.server import Runtime

from .backend import DevicesBridge, RemoteBackend
from .control import JobControl
from .executor import JobExecutor
from .runner import ProgramRunner
from .servicer import DEFAULT_LIMIT_SECONDS, JobsDependencies, JobsServicer
from .settings import JobsSettings
from .store import JobRecord, JobStore

log = get_logger("jobs")
SERVICE = "qruntime.jobs.v1.JobsService"


class JobsComponent:
    name = "jobs"
    service_names = (SERVICE,)
    public_methods: frozenset[str] = frozenset()

    def __init__(self, settings: JobsSettings) -> None:
        self._settings = settings
        self._servicer = JobsServicer()  # answers UNAVAILABLE until start() attaches its dependencies
        self.store: JobStore | None = None
        self.executor: JobExecutor | None = None

    def register(self, server: grpc.aio.Server) -> None:
        jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(self._servicer, server)

    async def start(self, runtime: Runtime) -> None:
        settings = self._settings
        self.store = store = await asyncio.to_thread(JobStore, settings.database_url_for("jobs"))
        programs = programs_service_pb2_grpc.ProgramsServiceStub(runtime.channel_to(settings.programs_url))
        devices = devices_service_pb2_grpc.DevicesServiceStub(runtime.channel_to(settings.devices_url))
        bridge = DevicesBridge(devices, runtime.credentials, asyncio.get_running_loop())

        def backend_for(job: JobRecord, control: JobControl) -> RemoteBackend:
            return RemoteBackend(
                job.backend, bridge, control, job_id=job.id, request_id=job.trace_id,
                timeout=job.max_execution_seconds or DEFAULT_LIMIT_SECONDS,
            )

        self.executor = JobExecutor(
            store, ProgramRunner(store, backend_for), workers=settings.workers, lease_seconds=settings.lease_seconds
        )
        self._servicer.attach(JobsDependencies(store, self.executor, programs, devices, runtime.credentials))
        await self.executor.start()

    async def drain(self) -> None:
        """Stop running jobs while the peers still answer: they go back to the queue, not to ERROR."""
        if self.executor is not None:
            await self.executor.stop()
            self.executor = None

    async def stop(self) -> None:
        await self.drain()
        if self.store is not None:
            self.store.close()


def build_component(settings: JobsSettings) -> JobsComponent:
    return JobsComponent(settings)


SETTINGS = JobsSettings
