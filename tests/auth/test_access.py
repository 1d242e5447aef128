"""Access through the real services: every row of the role table allowed and denied, every jobs,
sessions and programs RPC scoped to the caller's instance, and the plans enforced both ways."""

from __future__ import annotations

import hashlib
import json
import time

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from qruntime.admin.v1 import admin_pb2, admin_service_pb2_grpc
from qruntime.admin.v1 import admin_service_pb2 as admin
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from qruntime.devices.v1 import devices_service_pb2, devices_service_pb2_grpc
from qruntime.encoding import dumps
from qruntime.jobs.v1 import (
    job_pb2,
    jobs_service_pb2,
    jobs_service_pb2_grpc,
    sessions_service_pb2,
    sessions_service_pb2_grpc,
)
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_kit.errors import ServiceError, from_rpc_error

pytestmark = pytest.mark.slow  # a whole suite with program hosts and simulation workers

SOURCE = "def main(backend, user_messenger, **inputs):\n    return 1\n"
FINAL = (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_ERROR, job_pb2.JOB_STATE_CANCELLED)

# The original service's table, as the issue states it (not read from the code under test).
TABLE = {
    "program.create": {"manager", "writer"},
    "program.update": {"manager", "writer"},
    "program.delete": {"manager", "writer"},
    "program.read": {"manager", "reader"},
    "job.create": {"manager", "writer"},
    "job.delete": {"manager", "writer"},
    "job.read": {"manager", "reader"},
}


class Caller:
    """Jobs, sessions, programs and devices stubs that send one token."""

    def __init__(self, suite, token: str) -> None:
        self.channel = suite.channel()
        self.stubs = {"jobs": jobs_service_pb2_grpc.JobsServiceStub(self.channel),
                      "sessions": sessions_service_pb2_grpc.SessionsServiceStub(self.channel),
                      "programs": programs_service_pb2_grpc.ProgramsServiceStub(self.channel),
                      "devices": devices_service_pb2_grpc.DevicesServiceStub(self.channel)}
        self.metadata = suite.metadata(token)

    def call(self, service: str, method: str, request):
        response = getattr(self.stubs[service], method)(request, metadata=self.metadata, timeout=60)
        return list(response) if method == "WatchJob" else response  # the stream's responses, read to the end

    def error(self, service: str, method: str, request) -> ServiceError:
        with pytest.raises(grpc.RpcError) as caught:
            self.call(service, method, request)
        return from_rpc_error(caught.value)

    def program(self, name: str) -> program_pb2.Program:
        return self.call("programs", "CreateProgram", programs_service_pb2.CreateProgramRequest(
            program=program_pb2.Program(name=name, data=SOURCE, max_execution_time=duration_pb2.Duration(seconds=60))
        )).program

    def job(self, backend: str = "", program_id: str = "hello-world") -> job_pb2.Job:
        inputs = dumps({"iterations": 1}) if program_id == "hello-world" else "{}"
        return self.call("jobs", "CreateJob", jobs_service_pb2.CreateJobRequest(
            program_id=program_id, inputs=inputs, options=job_pb2.JobOptions(backend_name=backend))).job

    def wait(self, job_id: str) -> job_pb2.Job:
        deadline = time.monotonic() + 120
        while (job := self.call("jobs", "GetJob", jobs_service_pb2.GetJobRequest(job_id=job_id)).job).state \
                not in FINAL:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return job


@pytest.fixture(scope="module")
def suite(start_module_suite):
    return start_module_suite("programs", "devices", "jobs")


def token(suite, api_key: str, instance: str) -> str:
    with suite.channel() as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return stub.CreateToken(auth_service_pb2.CreateTokenRequest(api_key=api_key, instance=instance)).token


def user_with_role(suite, role: str) -> str:
    """A new member of the bootstrap account holding role on its Lite instance; their API key."""
    with suite.channel() as channel:
        owner_token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
            auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, account="-")).token
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        metadata = suite.metadata(owner_token)
        email = f"{role}-{time.monotonic_ns()}@example.org"
        made = stub.CreateUser(admin.CreateUserRequest(email=email), metadata=metadata)
        account_id = stub.InviteUser(admin.InviteUserRequest(user=email), metadata=metadata).membership.account_id
        user_token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
            auth_service_pb2.CreateTokenRequest(api_key=made.api_key, account="-")).token
        stub.AcceptInvitation(admin.AcceptInvitationRequest(account_id=account_id), metadata=suite.metadata(user_token))
        stub.CreatePolicy(admin.CreatePolicyRequest(policy=admin_pb2.Policy(
            user_id=made.user.id, instance="lite", role=getattr(auth_pb2, f"ROLE_{role.upper()}"))), metadata=metadata)
    return made.api_key


@pytest.mark.parametrize("role", ["manager", "writer", "reader"])
def test_every_row_of_the_role_table_allowed_and_denied(suite, role):
    manager = Caller(suite, suite.token())
    caller = Caller(suite, token(suite, user_with_role(suite, role), "lite"))
    program, doomed_program = manager.program(f"p-{role}"), manager.program(f"d-{role}")
    done = manager.wait(manager.job().id)
    attempts = {
        "program.create": lambda: caller.program(f"new-{role}"),
        "program.update": lambda: caller.call("programs", "UpdateProgram", programs_service_pb2.UpdateProgramRequest(
            program=program_pb2.Program(id=program.id, description="changed"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"]))),
        "program.delete": lambda: caller.call("programs", "DeleteProgram",
                                              programs_service_pb2.DeleteProgramRequest(program_id=doomed_program.id)),
        "program.read": lambda: caller.call("programs", "ListPrograms", programs_service_pb2.ListProgramsRequest()),
        "job.create": lambda: caller.job(),
        "job.read": lambda: caller.call("jobs", "GetJobResult", jobs_service_pb2.GetJobResultRequest(job_id=done.id)),
        "job.delete": lambda: caller.call("jobs", "DeleteJob", jobs_service_pb2.DeleteJobRequest(job_id=done.id)),
    }
    assert attempts.keys() == TABLE.keys()  # (job.read tried before job.delete takes the job away)
    for action, attempt in attempts.items():
        if role in TABLE[action]:
            attempt()
        else:
            with pytest.raises(grpc.RpcError) as caught:
                attempt()
            err = from_rpc_error(caught.value)
            assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED"), action
            assert err.metadata["action"] == f"quantum-computing.{action}"


def _other_instances(suite) -> dict[str, Caller]:
    """Callers on two other instances: the same account's Standard one, and another account's."""
    bootstrap = json.loads((suite.data_dir / "bootstrap.json").read_text())
    stranger_key, stranger_crn = suite.make_user(instance_name="strangers")
    return {"same account": Caller(suite, token(suite, suite.api_key, bootstrap["instances"]["standard"])),
            "other account": Caller(suite, token(suite, stranger_key, stranger_crn))}


def test_every_jobs_sessions_and_programs_rpc_is_scoped_to_the_caller_s_instance(suite):
    owner = Caller(suite, suite.token())
    private = owner.program("scoped")
    job = owner.wait(owner.job().id)
    session = owner.call("sessions", "CreateSession", sessions_service_pb2.CreateSessionRequest(
        backend_name="simulator_mps")).session
    upload = owner.call("jobs", "CreateInputUpload", jobs_service_pb2.CreateInputUploadRequest(
        total_bytes=2, sha256=hashlib.sha256(b"{}").digest(),
        content=jobs_service_pb2.INPUT_UPLOAD_CONTENT_JSON_INPUTS)).upload
    not_found = {
        ("jobs", "GetJob"): jobs_service_pb2.GetJobRequest(job_id=job.id),
        ("jobs", "CancelJob"): jobs_service_pb2.CancelJobRequest(job_id=job.id),
        ("jobs", "DeleteJob"): jobs_service_pb2.DeleteJobRequest(job_id=job.id),
        ("jobs", "GetJobResult"): jobs_service_pb2.GetJobResultRequest(job_id=job.id),
        ("jobs", "ListJobLogs"): jobs_service_pb2.ListJobLogsRequest(job_id=job.id),
        ("jobs", "ListJobInterimResults"): jobs_service_pb2.ListJobInterimResultsRequest(job_id=job.id),
        ("jobs", "CreateJob"): jobs_service_pb2.CreateJobRequest(program_id=private.id, inputs="{}"),
        ("jobs", "WatchJob"): jobs_service_pb2.WatchJobRequest(job_id=job.id),
        ("jobs", "BatchGetJobs"): jobs_service_pb2.BatchGetJobsRequest(job_ids=[job.id]),
        ("jobs", "UpdateJobTags"): jobs_service_pb2.UpdateJobTagsRequest(job_id=job.id, tags=["taken"]),
        ("jobs", "GetJobInputs"): jobs_service_pb2.GetJobInputsRequest(job_id=job.id),
        ("jobs", "UploadInputChunk"): jobs_service_pb2.UploadInputChunkRequest(upload_id=upload.id, offset=0,
                                                                               data=b"{}"),
        ("sessions", "GetSession"): sessions_service_pb2.GetSessionRequest(session_id=session.id),
        ("sessions", "CloseSession"): sessions_service_pb2.CloseSessionRequest(session_id=session.id),
        ("sessions", "CancelSession"): sessions_service_pb2.CancelSessionRequest(session_id=session.id),
        ("programs", "GetProgram"): programs_service_pb2.GetProgramRequest(program_id=private.id),
        ("programs", "ListProgramVersions"): programs_service_pb2.ListProgramVersionsRequest(program_id=private.id),
        ("programs", "UpdateProgram"): programs_service_pb2.UpdateProgramRequest(
            program=program_pb2.Program(id=private.id, description="mine now"),
            update_mask=field_mask_pb2.FieldMask(paths=["description"])),
        ("programs", "DeleteProgram"): programs_service_pb2.DeleteProgramRequest(program_id=private.id),
    }
    listed = {("jobs", "ListJobs"): (jobs_service_pb2.ListJobsRequest(), "jobs", job.id),
              ("sessions", "ListSessions"): (sessions_service_pb2.ListSessionsRequest(), "sessions", session.id),
              ("programs", "ListPrograms"): (programs_service_pb2.ListProgramsRequest(), "programs", private.id)}
    # CreateProgram names no instance but the caller's: what it makes belongs there (checked below).
    every_rpc = {(service, m.name) for service, descriptor in (
        ("jobs", jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"]),
        ("sessions", sessions_service_pb2.DESCRIPTOR.services_by_name["SessionsService"]),
        ("programs", programs_service_pb2.DESCRIPTOR.services_by_name["ProgramsService"]),
    ) for m in descriptor.methods}
    # GetUsage counts the caller's own instance's jobs only (checked below); CreateSession and
    # CreateInputUpload make the caller's own, and a job sent into another instance's session, or made
    # from another instance's upload, is checked below.
    assert every_rpc == set(not_found) | set(listed) | {("programs", "CreateProgram"), ("jobs", "GetUsage"),
                                                        ("sessions", "CreateSession"), ("jobs", "CreateInputUpload")}
    for who, caller in _other_instances(suite).items():
        for (service, method), request in not_found.items():
            err = caller.error(service, method, request)
            assert err.code == grpc.StatusCode.NOT_FOUND, (who, method, err.reason)
            assert job.id not in err.message or method != "CreateJob"
        for (service, method), (request, field, own_id) in listed.items():
            assert own_id not in [x.id for x in getattr(caller.call(service, method, request), field)], (who, method)
        joined = caller.error("jobs", "CreateJob", jobs_service_pb2.CreateJobRequest(
            program_id="hello-world", inputs=dumps({"iterations": 1}), session_id=session.id))
        assert (joined.code, joined.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"), who
        uploaded = caller.error("jobs", "CreateJob", jobs_service_pb2.CreateJobRequest(
            program_id="hello-world", input_upload_id=upload.id))
        assert (uploaded.code, uploaded.reason) == (grpc.StatusCode.NOT_FOUND, "INPUT_UPLOAD_NOT_FOUND"), who
        usage = caller.call("jobs", "GetUsage", jobs_service_pb2.GetUsageRequest())
        assert (usage.jobs_done, list(usage.backends)) == (0, []), who
        theirs = caller.program(f"theirs-{who.replace(' ', '-')}")
        assert theirs.owner_instance != suite.instance
        assert owner.error("programs", "GetProgram", programs_service_pb2.GetProgramRequest(
            program_id=theirs.id)).code == grpc.StatusCode.NOT_FOUND
    assert list(owner.wait(job.id).tags) == []  # nothing the others tried touched it
    assert owner.call("jobs", "UploadInputChunk", jobs_service_pb2.UploadInputChunkRequest(
        upload_id=upload.id, offset=0, data=b"{}")).upload.received_bytes == 2
    still = owner.call("sessions", "GetSession", sessions_service_pb2.GetSessionRequest(session_id=session.id))
    assert still.session.state == session.state  # neither closed nor cancelled by the others
    assert owner.call("jobs", "GetUsage", jobs_service_pb2.GetUsageRequest()).jobs_done >= 1
    assert owner.call("programs", "GetProgram", programs_service_pb2.GetProgramRequest(
        program_id=private.id)).program.description == private.description


def test_plans_are_enforced_both_ways_in_listings_and_job_creation(suite):
    bootstrap = json.loads((suite.data_dir / "bootstrap.json").read_text())
    lite = Caller(suite, token(suite, suite.api_key, bootstrap["instances"]["lite"]))
    standard = Caller(suite, token(suite, suite.api_key, bootstrap["instances"]["standard"]))
    kinds = {}
    for name, caller in (("lite", lite), ("standard", standard)):
        backends = caller.call("devices", "ListBackends", devices_service_pb2.ListBackendsRequest()).backends
        kinds[name] = {b.name for b in backends}
    assert kinds["lite"] and kinds["standard"] and not kinds["lite"] & kinds["standard"]
    assert all(name.startswith(("ibmq_qasm", "simulator")) for name in kinds["lite"])
    physical, simulator = sorted(kinds["standard"])[0], sorted(kinds["lite"])[0]
    for caller, forbidden in ((lite, physical), (standard, simulator)):
        err = caller.error("jobs", "CreateJob", jobs_service_pb2.CreateJobRequest(
            program_id="hello-world", inputs=dumps({"iterations": 1}),
            options=job_pb2.JobOptions(backend_name=forbidden)))
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "BACKEND_NOT_IN_PLAN"), forbidden
    job = standard.wait(standard.job().id)  # no backend named: the least busy one the plan allows
    assert job.backend in kinds["standard"] and job.state == job_pb2.JOB_STATE_DONE
