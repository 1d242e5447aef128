"""The jobs service as the server kit serves it.

State: its own tables (jobs_*) in data_dir/jobs.db or the configured database. Peers: the programs
service (programs_url) and the devices service (devices_url); empty URLs mean this same server, as
in the embedded suite. Starting it requeues jobs whose replica died, starts the warm pools of
program hosts and the executor.
"""

from __future__ import annotations

import asyncio

import grpc
from qruntime.devices.v1 import devices_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2_grpc, sessions_service_pb2_grpc
from qruntime.programs.v1 import programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.limits import Limits
from qruntime_kit.logging import get_logger
from qruntime_kit.outbound import Credentials, call
from qruntime_kit.sandbox import sandbox_available
from qruntime_kit.server import Runtime

from .admission import AdmissionLimits
from .audit_outbox import AuditOutbox
from .backend import DevicesClient
from .executor import JobExecutor
from .hosts import HostPool
from .runner import ProgramRunner
from .servicer import JobsDependencies, JobsServicer
from .sessions import SessionsServicer
from .settings import JobsSettings
from .store import JobRecord, JobStore
from .uploads import UploadLimits
from .watch import JobWatch

log = get_logger("jobs")
SERVICE = "qruntime.jobs.v1.JobsService"
SESSIONS_SERVICE = "qruntime.jobs.v1.SessionsService"
# A program may write this much into its scratch folder and files, and hold this many open.
PROGRAM_FILE_BYTES = 256 << 20
PROGRAM_OPEN_FILES = 1024


class JobsComponent:
    name = "jobs"
    service_names = (SERVICE, SESSIONS_SERVICE)
    public_methods: frozenset[str] = frozenset()

    def __init__(self, settings: JobsSettings) -> None:
        self._settings = settings
        self._servicer = JobsServicer()  # answers UNAVAILABLE until start() attaches its dependencies
        self.store: JobStore | None = None
        self.executor: JobExecutor | None = None
        self.watch: JobWatch | None = None
        self.audit_outbox: AuditOutbox | None = None
        self._pools: list[HostPool] = []

    def register(self, server: grpc.aio.Server) -> None:
        jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(self._servicer, server)
        sessions_service_pb2_grpc.add_SessionsServiceServicer_to_server(SessionsServicer(self._servicer), server)

    async def start(self, runtime: Runtime) -> None:
        settings = self._settings
        self.store = store = await asyncio.to_thread(JobStore, settings.database_url_for("jobs"))
        programs = programs_service_pb2_grpc.ProgramsServiceStub(runtime.channel_to(settings.programs_url))
        devices = devices_service_pb2_grpc.DevicesServiceStub(runtime.channel_to(settings.devices_url))
        self.executor = JobExecutor(
            store, await self._runner(store, programs, devices, runtime.credentials),
            workers=settings.workers, lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts,
            max_running_per_instance=settings.max_running_per_instance,
        )
        self.watch = JobWatch(store, poll_seconds=settings.watch_poll_seconds)
        self.watch.start()
        self.audit_outbox = AuditOutbox(store, runtime.audit.write_at_once, self.executor.runner_id)
        self.audit_outbox.start()
        limits = AdmissionLimits(settings.max_queued_per_instance, settings.max_submissions_per_minute)
        upload_limits = UploadLimits(settings.max_input_upload_bytes, settings.max_upload_bytes_per_instance,
                                     settings.input_upload_seconds)
        self._servicer.attach(JobsDependencies(store, self.executor, self.watch, self.audit_outbox, programs,
                                               devices, runtime.credentials, limits, upload_limits))
        await self.executor.start()

    async def _runner(self, store: JobStore, programs, devices, credentials: Credentials) -> ProgramRunner:
        settings = self._settings
        limits = Limits(memory_bytes=settings.program_memory_bytes, max_processes=settings.program_processes,
                        file_bytes=PROGRAM_FILE_BYTES, open_files=PROGRAM_OPEN_FILES)
        trusted = HostPool(sandboxed=False, warm=settings.warm_hosts, limits=limits)
        problem = await asyncio.to_thread(sandbox_available) if settings.sandbox else "the sandbox is turned off"
        sandboxed = None
        if problem is None:
            sandboxed = HostPool(sandboxed=True, warm=settings.warm_sandboxed_hosts, limits=limits)
        else:
            log.warning("uploaded programs will not run", why=problem)
        self._pools = [p for p in (trusted, sandboxed) if p is not None]
        for pool in self._pools:
            pool.start()

        async def fetch_source(job: JobRecord) -> str:
            # The version the job was created for, with the service's token: the user's may have expired.
            request = programs_service_pb2.GetProgramRequest(program_id=job.program_id, version=job.program_version)
            response = await call(programs.GetProgram, request, metadata=await credentials.metadata())
            return response.program.data

        return ProgramRunner(store, DevicesClient(devices, credentials), trusted=trusted, sandboxed=sandboxed,
                             sandbox_problem=problem or "", fetch_source=fetch_source)

    async def drain(self) -> None:
        """Stop running jobs while the peers still answer: they go back to the queue, not to ERROR."""
        if self.executor is not None:
            await self.executor.stop()
            self.executor = None
        for pool in self._pools:
            await pool.stop()
        self._pools = []

    async def stop(self) -> None:
        await self.drain()
        if self.audit_outbox is not None:  # once no call can add to it, while auth still takes its events
            await self.audit_outbox.stop()
        if self.watch is not None:
            await self.watch.stop()
        if self.store is not None:
            self.store.close()


def build_component(settings: JobsSettings) -> JobsComponent:
    return JobsComponent(settings)


SETTINGS = JobsSettings
