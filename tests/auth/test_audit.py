"""The audit trail of a scripted session: what changed things and what was refused, in order, with
who, which instance, the action's full name, the outcome and the request id; filtered and paged."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import duration_pb2
from qruntime.admin.v1 import admin_pb2, admin_service_pb2_grpc
from qruntime.admin.v1 import admin_service_pb2 as admin
from qruntime.auth.v1 import auth_pb2, auth_service_pb2, auth_service_pb2_grpc
from qruntime.encoding import dumps
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as jobs_pb2
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_auth.keys import key_id_of

BACKEND = "ibmq_qasm_simulator"
SOURCE = "def main(backend, user_messenger, **inputs):\n    return 1\n"


def account_token(suite, api_key: str) -> str:
    with suite.channel() as channel:
        return auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
            auth_service_pb2.CreateTokenRequest(api_key=api_key, account="-")).token


def events(suite, filter_: str = "", page_size: int = 100, page_token: str = ""):
    with suite.channel() as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        return stub.ListAuditEvents(admin.ListAuditEventsRequest(filter=filter_, page_size=page_size,
                                                                 page_token=page_token),
                                    metadata=suite.metadata(account_token(suite, suite.api_key)))


def test_a_scripted_session_leaves_its_audit_trail(start_suite):
    suite = start_suite("programs")
    owner_id = suite.auth_store.api_key(key_id_of(suite.api_key))["user_id"]
    with suite.channel() as channel:
        programs = programs_service_pb2_grpc.ProgramsServiceStub(channel)
        admin_stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        me = suite.metadata(suite.token())

        def as_me(request_id: str):
            return (*me, ("x-request-id", request_id))

        created = programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
            name="audited", data=SOURCE, max_execution_time=duration_pb2.Duration(seconds=60))),
            metadata=as_me("step-1-create")).program
        programs.GetProgram(programs_service_pb2.GetProgramRequest(program_id=created.id),
                            metadata=as_me("step-2-read"))  # a read that is allowed: not audited
        programs.DeleteProgram(programs_service_pb2.DeleteProgramRequest(program_id=created.id),
                               metadata=as_me("step-3-delete"))
        reader_key, reader_crn = suite.make_user(role="reader", instance_name="audit-readers")
        with pytest.raises(grpc.RpcError):  # refused: in the reader's account's trail, not ours
            programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
                name="nope", data=SOURCE)), metadata=suite.metadata(suite.token(reader_key, reader_crn)))
        with pytest.raises(grpc.RpcError):  # refused: no account at all
            programs.ListPrograms(programs_service_pb2.ListProgramsRequest(),
                                  metadata=(("authorization", "Bearer forged"), ("x-request-id", "step-5-forged")))
        owner = suite.metadata(account_token(suite, suite.api_key))
        admin_stub.CreateInstance(admin.CreateInstanceRequest(name="audited-instance", plan=auth_pb2.PLAN_LITE),
                                  metadata=(*owner, ("x-request-id", "step-6-instance")))
        with pytest.raises(grpc.RpcError):  # refused inside our account: a Lite instance named twice
            admin_stub.CreateInstance(admin.CreateInstanceRequest(name="audited-instance", plan=auth_pb2.PLAN_LITE),
                                      metadata=(*owner, ("x-request-id", "step-7-again")))
        with pytest.raises(grpc.RpcError):  # a reader token on our account's own instance is refused
            programs.DeleteProgram(programs_service_pb2.DeleteProgramRequest(program_id="sampler"),
                                   metadata=(*suite.metadata(suite.token(suite.api_key, "standard")),
                                             ("x-request-id", "step-8-builtin")))

    # Each call was answered only once its event was written: the trail is complete at once.
    trail = [e for e in events(suite).events if e.request_id.startswith("step-")]
    got = [(e.request_id, e.action, admin_pb2.AuditOutcome.Name(e.outcome), e.code) for e in reversed(trail)]
    assert got == [
        ("step-1-create", "quantum-computing.program.create", "AUDIT_OUTCOME_SUCCESS", "OK"),
        ("step-3-delete", "quantum-computing.program.delete", "AUDIT_OUTCOME_SUCCESS", "OK"),
        ("step-6-instance", "qruntime.admin.instance.create", "AUDIT_OUTCOME_SUCCESS", "OK"),
        ("step-7-again", "qruntime.admin.instance.create", "AUDIT_OUTCOME_FAILURE", "ALREADY_EXISTS"),
        ("step-8-builtin", "quantum-computing.program.delete", "AUDIT_OUTCOME_DENIED", "PERMISSION_DENIED"),
    ]
    first = trail[-1]
    assert (first.subject, first.instance, first.target) == (owner_id, suite.instance, "audited")
    assert first.method == "/qruntime.programs.v1.ProgramsService/CreateProgram"
    assert abs(first.time.ToNanoseconds() / 1e9 - time.time()) < 60
    assert trail[0].reason == "BUILTIN_PROGRAM_READ_ONLY"  # the refusal's own reason

    denied = events(suite, "outcome=denied").events
    assert [e.request_id for e in denied if e.request_id.startswith("step-")] == ["step-8-builtin"]
    admin_only = events(suite, "action=qruntime.admin.*").events
    assert {e.action for e in admin_only} == {"qruntime.admin.instance.create"}
    page = events(suite, "action=quantum-computing.program.*", page_size=1)
    rest = events(suite, "action=quantum-computing.program.*", page_size=10, page_token=page.next_page_token)
    assert [e.request_id for e in [*page.events, *rest.events]] == ["step-8-builtin", "step-3-delete",
                                                                    "step-1-create"]
    # The forged call is kept too, in no account's trail; the reader's refusal is in theirs only.
    stored = suite.auth_store.audit_events("", where={"request_id": "step-5-forged"}, before_id=None, limit=5)
    assert [(e["outcome"], e["code"]) for e in stored] == [("denied", "UNAUTHENTICATED")]


@pytest.mark.slow  # a suite with a simulation worker
def test_a_created_job_reaches_the_trail_once_from_the_jobs_store(start_suite, bell):
    """CreateJob stores its success event with the job, in one transaction, and the jobs service
    forwards it to the trail (audit_outbox.py), not the sink; a refused CreateJob's event goes through
    the sink, before the call is answered."""
    suite = start_suite("programs", "devices", "jobs")
    sink = suite.suite.runtime.audit
    through_sink: list[str] = []
    add = sink.add

    def observed(event):  # the sink as it is, each event it is given noted
        through_sink.append(event.request_id)
        return add(event)

    sink.add = observed
    calls = (("job-1-quick", "sampler", {"circuits": bell, "shots": 100}),
             ("job-2-queued", "hello-world", {"iterations": 1}))
    with suite.channel() as channel:
        jobs = jobs_service_pb2_grpc.JobsServiceStub(channel)
        me = suite.metadata(suite.token())
        for request_id, program, inputs in calls:
            jobs.CreateJob(jobs_pb2.CreateJobRequest(
                program_id=program, inputs=dumps(inputs), options=job_pb2.JobOptions(backend_name=BACKEND)),
                metadata=(*me, ("x-request-id", request_id)), timeout=60)
        with pytest.raises(grpc.RpcError):
            jobs.CreateJob(jobs_pb2.CreateJobRequest(program_id="no-such-program"),
                           metadata=(*me, ("x-request-id", "job-3-refused")), timeout=60)
    assert through_sink == ["job-3-refused"]
    deadline = time.monotonic() + 10
    while len(trail := events(suite, "action=quantum-computing.job.create").events) < 3:
        assert time.monotonic() < deadline, [e.request_id for e in trail]
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more comes: each event once
    trail = events(suite, "action=quantum-computing.job.create").events
    assert sorted((e.request_id, admin_pb2.AuditOutcome.Name(e.outcome), e.target) for e in trail) == [
        ("job-1-quick", "AUDIT_OUTCOME_SUCCESS", "sampler"),
        ("job-2-queued", "AUDIT_OUTCOME_SUCCESS", "hello-world"),
        ("job-3-refused", "AUDIT_OUTCOME_FAILURE", "no-such-program"),
    ]
    assert {e.method for e in trail} == {"/qruntime.jobs.v1.JobsService/CreateJob"}
    assert not suite.suite.components[-1].store.claim_audit_events("checker")  # the outbox is empty


def test_the_audit_trail_is_for_account_administrators_with_a_checked_filter(start_suite):
    suite = start_suite()
    member_key, _crn = suite.make_user(instance_name="audit-members")
    store = suite.auth_store
    user_id = store.api_key(key_id_of(member_key))["user_id"]
    account_id = store.memberships_of(user_id)[0]["account_id"]
    with store.engine.begin() as conn:  # make them a plain member of their account
        from qruntime_auth.store import memberships
        conn.execute(memberships.update().where(memberships.c.user_id == user_id).values(role="member"))
    with suite.channel() as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListAuditEvents(admin.ListAuditEventsRequest(),
                                 metadata=suite.metadata(account_token(suite, member_key)))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED and account_id
        for bad in ("outcome=maybe", "colour=blue", "since=yesterday", "action=DROP TABLE"):
            with pytest.raises(grpc.RpcError) as caught:
                events(suite, bad)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


@pytest.mark.postgres
def test_the_audit_trail_and_the_admin_model_work_on_postgresql(start_suite, postgres_database):
    suite = start_suite(database_url=postgres_database)
    with suite.channel() as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        owner = suite.metadata(account_token(suite, suite.api_key))
        stub.CreateInstance(admin.CreateInstanceRequest(name="pg", plan=auth_pb2.PLAN_STANDARD),
                            metadata=(*owner, ("x-request-id", "pg-1")))
        group = stub.CreateAccessGroup(admin.CreateAccessGroupRequest(name="g"), metadata=owner).access_group
        stub.CreatePolicy(admin.CreatePolicyRequest(policy=admin_pb2.Policy(
            access_group_id=group.id, role=auth_pb2.ROLE_READER)), metadata=owner)
    deadline = time.monotonic() + 5
    while len(recorded := events(suite, "action=qruntime.admin.*").events) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert recorded[-1].request_id == "pg-1"
    assert [e.action for e in recorded] == [
        "qruntime.admin.policy.create", "qruntime.admin.access-group.create", "qruntime.admin.instance.create"]
