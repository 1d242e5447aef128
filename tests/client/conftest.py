"""In-process fake servers for the client tests: real gRPC on port 0, toy behaviour behind it.

The fakes are only as smart as the client tests need: they check the bearer token, record the
metadata of every call, page their lists in small pages and move jobs along on each GetJob.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from qruntime import IBMRuntimeService, encoding
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import backend_pb2, devices_service_pb2, devices_service_pb2_grpc
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2, jobs_service_pb2_grpc
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

GOOD_KEY = "good-key"
CRN = "crn:v1:qruntime:local:quantum-computing:a/acct:inst::"


def abort_rich(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str = "",
    metadata: dict[str, str] | None = None,
    violations: Sequence[tuple[str, str]] = (),
) -> None:
    """Abort the call the way the real servers do: google.rpc.Status with ErrorInfo and BadRequest."""
    details = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain="test.qruntime", metadata=metadata or {})
        details.append(any_pb2.Any())
        details[-1].Pack(info)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
        details.append(any_pb2.Any())
        details[-1].Pack(bad)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    context.abort_with_status(rpc_status.to_status(status))


@pytest.fixture(scope="session")
def rich_abort() -> Callable[..., None]:
    """:func:`abort_rich`, for tests that build their own handlers."""
    return abort_rich


@dataclass
class FakeAuth(auth_service_pb2_grpc.AuthServiceServicer):
    expire_in_s: float = 3600.0
    issued: list[str] = field(default_factory=list)
    expired: set[str] = field(default_factory=set)
    expire_all: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def CreateToken(self, request, context):
        if request.api_key != GOOD_KEY:
            abort_rich(context, grpc.StatusCode.UNAUTHENTICATED, "API key not valid", "INVALID_API_KEY")
        with self.lock:
            token = f"token-{len(self.issued) + 1}"
            self.issued.append(token)
        response = auth_service_pb2.CreateTokenResponse(
            token=token,
            instance=auth_pb2.Instance(crn=CRN, name=request.instance),
            role=auth_pb2.ROLE_MANAGER,
        )
        response.expire_time.FromNanoseconds(int((time.time() + self.expire_in_s) * 1e9))
        return response

    def check(self, context: grpc.ServicerContext) -> None:
        """The auth interceptor of the fake: valid tokens pass, expired ones get TOKEN_EXPIRED."""
        metadata = dict(context.invocation_metadata())
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued:
            abort_rich(context, grpc.StatusCode.UNAUTHENTICATED, "no valid token", "TOKEN_INVALID")
        if self.expire_all or token in self.expired:
            abort_rich(context, grpc.StatusCode.UNAUTHENTICATED, "token expired", "TOKEN_EXPIRED")


BACKENDS = [
    ("fake_lagos", backend_pb2.BACKEND_KIND_PHYSICAL, 7, True, 3),
    ("ibmq_qasm_simulator", backend_pb2.BACKEND_KIND_SIMULATOR, 32, True, 5),
    ("simulator_maintenance", backend_pb2.BACKEND_KIND_SIMULATOR, 40, False, 0),
    ("simulator_statevector", backend_pb2.BACKEND_KIND_SIMULATOR, 32, True, 1),
]


def make_backend(name: str, kind: int, qubits: int, operational: bool, pending: int) -> backend_pb2.Backend:
    config = backend_pb2.BackendConfiguration(
        num_qubits=qubits, basis_gates=["cx", "rz", "sx", "x"], max_shots=100000
    )
    if kind == backend_pb2.BACKEND_KIND_PHYSICAL:
        config.coupling_map.extend([backend_pb2.CouplingEdge(control=0, target=1)])
    config.max_execution_time.FromSeconds(10800)
    return backend_pb2.Backend(
        name=name,
        kind=kind,
        configuration=config,
        status=backend_pb2.BackendStatus(
            operational=operational, pending_jobs=pending, status_message="active"
        ),
        description=f"the {name} backend",
    )


def page(items: list, request, default_size: int) -> tuple[list, str]:
    start = int(request.page_token or 0)
    size = request.page_size or default_size
    return items[start : start + size], (str(start + size) if start + size < len(items) else "")


@dataclass
class FakeDevices(devices_service_pb2_grpc.DevicesServiceServicer):
    auth: FakeAuth

    def ListBackends(self, request, context):
        self.auth.check(context)
        request.page_size = min(request.page_size, 2)  # small pages, so the client must follow them
        items, token = page([make_backend(*b) for b in BACKENDS], request, 2)
        return devices_service_pb2.ListBackendsResponse(backends=items, next_page_token=token)

    def GetBackend(self, request, context):
        self.auth.check(context)
        for spec in BACKENDS:
            if spec[0] == request.name:
                return devices_service_pb2.GetBackendResponse(backend=make_backend(*spec))
        abort_rich(
            context, grpc.StatusCode.NOT_FOUND, f"backend {request.name!r} not found", "BACKEND_NOT_FOUND"
        )

    def GetBackendProperties(self, request, context):
        self.auth.check(context)
        properties = backend_pb2.BackendProperties(
            qubits=[
                backend_pb2.QubitProperties(qubit=0, t1=1e-4, t2=5e-5, frequency=5e9, readout_error=0.02)
            ],
            gates=[backend_pb2.GateProperties(gate="cx", qubits=[0, 1], error=0.01, duration=3e-7)],
        )
        return devices_service_pb2.GetBackendPropertiesResponse(properties=properties)


@dataclass
class FakeJobs(jobs_service_pb2_grpc.JobsServiceServicer):
    """Jobs move QUEUED -> RUNNING -> final on successive GetJob calls; program "slow" never ends."""

    auth: FakeAuth
    jobs: dict[str, job_pb2.Job] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    ids: Iterator[int] = field(default_factory=itertools.count)

    def record(self, name: str, context: grpc.ServicerContext) -> None:
        self.calls.append((name, dict(context.invocation_metadata())))
        self.auth.check(context)

    def CreateJob(self, request, context):
        self.record("CreateJob", context)
        if request.program_id == "nope":
            abort_rich(
                context,
                grpc.StatusCode.NOT_FOUND,
                "program 'nope' not found",
                "PROGRAM_NOT_FOUND",
                {"program_id": "nope"},
            )
        job = job_pb2.Job(
            id=f"job-{next(self.ids)}",
            program_id=request.program_id,
            backend=request.options.backend_name or "ibmq_qasm_simulator",
            state=job_pb2.JOB_STATE_QUEUED,
            inputs=request.inputs or "{}",
            options=request.options,
            request_id=request.request_id,
        )
        job.create_time.FromNanoseconds(time.time_ns())
        self.jobs[job.id] = job
        return jobs_service_pb2.CreateJobResponse(job=job)

    def GetJob(self, request, context):
        self.record("GetJob", context)
        job = self._job(request.job_id, context)
        if job.state == job_pb2.JOB_STATE_QUEUED:
            job.state = job_pb2.JOB_STATE_RUNNING
        elif job.state == job_pb2.JOB_STATE_RUNNING and job.program_id != "slow":
            if job.program_id == "fails":
                job.state, job.reason = job_pb2.JOB_STATE_ERROR, job_pb2.JOB_REASON_PROGRAM_ERROR
                job.reason_message = "ZeroDivisionError: division by zero"
            else:
                job.state = job_pb2.JOB_STATE_DONE
        return jobs_service_pb2.GetJobResponse(job=job)

    def CancelJob(self, request, context):
        self.record("CancelJob", context)
        job = self._job(request.job_id, context)
        job.state, job.reason = job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_REASON_CANCELLED_BY_USER
        return jobs_service_pb2.CancelJobResponse(job=job)

    def GetJobResult(self, request, context):
        self.record("GetJobResult", context)
        job = self._job(request.job_id, context)
        if job.program_id == "hello-world":
            return jobs_service_pb2.GetJobResultResponse(result=encoding.dumps("All done!"))
        return jobs_service_pb2.GetJobResultResponse(result=job.inputs)  # echo: shows what the client sent

    def ListJobs(self, request, context):
        self.record("ListJobs", context)
        jobs = sorted(self.jobs.values(), key=lambda j: j.create_time.ToNanoseconds(), reverse=True)
        jobs = [j for j in jobs if request.state in (0, j.state)]
        jobs = [j for j in jobs if request.program_id in ("", j.program_id)]
        request.page_size = min(request.page_size, 2)
        items, token = page(jobs, request, 2)
        return jobs_service_pb2.ListJobsResponse(jobs=items, next_page_token=token)

    def ListJobLogs(self, request, context):
        self.record("ListJobLogs", context)
        entries = []
        for i, (level, text) in enumerate(
            [
                (job_pb2.LOG_LEVEL_INFO, "start"),
                (job_pb2.LOG_LEVEL_WARNING, "odd"),
                (job_pb2.LOG_LEVEL_INFO, "end"),
            ]
        ):
            entry = job_pb2.LogEntry(level=level, message=text)
            entry.time.FromSeconds(1_700_000_000 + i)
            entries.append(entry)
        items, token = page(entries, request, 2)
        return jobs_service_pb2.ListJobLogsResponse(entries=items, next_page_token=token)

    def ListJobInterimResults(self, request, context):
        self.record("ListJobInterimResults", context)
        results = [job_pb2.InterimResult(data=encoding.dumps({"step": i})) for i in range(3)]
        items, token = page(results, request, 2)
        return jobs_service_pb2.ListJobInterimResultsResponse(interim_results=items, next_page_token=token)

    def _job(self, job_id: str, context: grpc.ServicerContext) -> job_pb2.Job:
        if job_id not in self.jobs:
            abort_rich(context, grpc.StatusCode.NOT_FOUND, f"job {job_id!r} not found", "JOB_NOT_FOUND")
        return self.jobs[job_id]


@dataclass
class FakePrograms(programs_service_pb2_grpc.ProgramsServiceServicer):
    auth: FakeAuth
    created: list[program_pb2.Program] = field(default_factory=list)
    updates: list[programs_service_pb2.UpdateProgramRequest] = field(default_factory=list)

    def CreateProgram(self, request, context):
        self.auth.check(context)
        program = program_pb2.Program()
        program.CopyFrom(request.program)
        program.id = f"{program.name}-abc123"
        self.created.append(program)
        return programs_service_pb2.CreateProgramResponse(program=program)

    def UpdateProgram(self, request, context):
        self.auth.check(context)
        self.updates.append(request)
        return programs_service_pb2.UpdateProgramResponse(program=request.program)

    def ListPrograms(self, request, context):
        self.auth.check(context)
        programs = [program_pb2.Program(id=f"p{i}", name=f"p{i}") for i in range(5)]
        request.page_size = min(request.page_size, 2)
        items, token = page(programs, request, 2)
        return programs_service_pb2.ListProgramsResponse(programs=items, next_page_token=token)


@dataclass
class FakeSuite:
    port: int
    auth: FakeAuth
    jobs: FakeJobs
    programs: FakePrograms

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def calls(self, name: str) -> list[dict[str, str]]:
        """The metadata of every call of JobsService method ``name``."""
        return [metadata for called, metadata in self.jobs.calls if called == name]


@pytest.fixture
def fake() -> Iterator[FakeSuite]:
    auth = FakeAuth()
    suite_jobs, programs = FakeJobs(auth), FakePrograms(auth)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    devices_service_pb2_grpc.add_DevicesServiceServicer_to_server(FakeDevices(auth), server)
    jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(suite_jobs, server)
    programs_service_pb2_grpc.add_ProgramsServiceServicer_to_server(programs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield FakeSuite(port, auth, suite_jobs, programs)
    finally:
        server.stop(grace=None)


@pytest.fixture
def service(fake: FakeSuite) -> Iterator[IBMRuntimeService]:
    with IBMRuntimeService(token=GOOD_KEY, instance="my-instance", url=fake.url) as svc:
        yield svc
