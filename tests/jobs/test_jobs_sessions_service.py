"""SessionsService and jobs in sessions, over a real socket with the real auth, programs and devices
services: a session's jobs run back to back on its backend and carry its id; close, cancel and
max_time end it as Qiskit Runtime does; every refusal is typed."""

from __future__ import annotations

import re
import time
import uuid

import grpc
import pytest
from google.protobuf import duration_pb2
from qruntime.encoding import dumps
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc, session_pb2, sessions_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as pb
from qruntime.jobs.v1 import sessions_service_pb2 as spb

from qruntime_kit.errors import ServiceError, from_rpc_error

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow

FINAL = (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_ERROR, job_pb2.JOB_STATE_CANCELLED)
BACKEND = "simulator_statevector"
LONG = 20  # hello-world iterations that take several seconds (about 0.3 s each)


class Caller:
    """The jobs and sessions services with one principal's token."""

    def __init__(self, suite, token: str) -> None:
        self.channel = suite.channel()
        self.stubs = (sessions_service_pb2_grpc.SessionsServiceStub(self.channel),
                      jobs_service_pb2_grpc.JobsServiceStub(self.channel))
        self.metadata = suite.metadata(token)

    def __getattr__(self, method):
        stub = next(s for s in self.stubs if hasattr(s, method))
        return lambda request: getattr(stub, method)(request, metadata=self.metadata, timeout=30)

    def error(self, method: str, request) -> ServiceError:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(self, method)(request)
        return from_rpc_error(caught.value)

    def session(self, mode=session_pb2.SESSION_MODE_DEDICATED, backend: str = BACKEND, **times) -> session_pb2.Session:
        request = spb.CreateSessionRequest(backend_name=backend, mode=mode, **{
            name: duration_pb2.Duration(seconds=seconds) for name, seconds in times.items()})
        return self.CreateSession(request).session

    def job(self, session_id: str = "", iterations: int = 1, backend: str = "") -> job_pb2.Job:
        return self.CreateJob(pb.CreateJobRequest(
            program_id="hello-world", inputs=dumps({"iterations": iterations, "seed": 1}),
            options=job_pb2.JobOptions(backend_name=backend), session_id=session_id)).job

    def get(self, job_id: str) -> job_pb2.Job:
        return self.GetJob(pb.GetJobRequest(job_id=job_id)).job

    def get_session(self, session_id: str) -> session_pb2.Session:
        return self.GetSession(spb.GetSessionRequest(session_id=session_id)).session

    def wait(self, check, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while not (found := check()):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)
        return found

    def wait_job(self, job_id: str, states=FINAL) -> job_pb2.Job:
        return self.wait(lambda: (job := self.get(job_id)).state in states and job)


@pytest.fixture
def suite(start_suite):
    # A short lease: the keeper that sweeps sessions beats every second.
    return start_suite("programs", "devices", "jobs", lease_seconds=3)


@pytest.fixture
def me(suite):
    caller = Caller(suite, suite.token())
    yield caller
    caller.channel.close()


def colleague_token(suite) -> str:
    """A token of another user who is Manager on the bootstrap user's own instance."""
    account, instance_id = re.search(r":a/([^:]+):([^:]+)::$", suite.instance).groups()
    store = suite.auth_store
    user = store.create_user(f"{uuid.uuid4().hex[:12]}@example.org")
    store.invite(account, user)
    store.answer_invitation(account, user, True)
    store.create_policy(account, "user", user, instance_id, "manager")
    return suite.token(store.create_user_key(user)[0], suite.instance)


def test_a_sessions_jobs_run_back_to_back_on_its_backend_and_carry_its_id(me):
    session = me.session(interactive_timeout=30)
    assert (session.state, session.mode, session.backend, session.accepting_jobs) == (
        session_pb2.SESSION_STATE_OPEN, session_pb2.SESSION_MODE_DEDICATED, BACKEND, True)
    assert (session.max_time.seconds, session.interactive_timeout.seconds) == (8 * 3600, 30)
    jobs = [me.job(session.id, iterations=2) for _ in range(3)]
    assert all(j.session_id == session.id and j.backend == BACKEND for j in jobs)
    ended = [me.wait_job(j.id) for j in jobs]
    assert all(j.state == job_pb2.JOB_STATE_DONE for j in ended)
    for before, after in zip(ended, ended[1:], strict=False):  # one at a time, in order
        assert after.start_time.ToDatetime() >= before.end_time.ToDatetime()
    active = me.get_session(session.id)
    assert active.state == session_pb2.SESSION_STATE_ACTIVE and active.HasField("start_time")
    assert active.expire_time.ToDatetime() > active.start_time.ToDatetime()
    last_end = max(j.end_time.ToDatetime() for j in ended)
    assert abs((active.last_job_end_time.ToDatetime() - last_end).total_seconds()) < 1
    listed = me.ListJobs(pb.ListJobsRequest(filter=f"session = {session.id}")).jobs
    assert sorted(j.id for j in listed) == sorted(j.id for j in jobs)
    closed = me.CloseSession(spb.CloseSessionRequest(session_id=session.id)).session
    assert (closed.state, closed.accepting_jobs) == (session_pb2.SESSION_STATE_CLOSED, False)
    assert closed.usage_seconds > 0
    err = me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", session_id=session.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACCEPTING_JOBS")
    assert err.metadata == {"session_id": session.id, "state": "SESSION_STATE_CLOSED"}
    assert [s.id for s in me.ListSessions(spb.ListSessionsRequest()).sessions] == [session.id]


def test_jobs_in_sessions_are_refused_typed(suite, me):
    session = me.session()
    other = Caller(suite, suite.token(*suite.make_user(instance_name="elsewhere")))
    colleague = Caller(suite, colleague_token(suite))
    reader = Caller(suite, suite.token(*suite.make_user(role="reader", instance_name="readers")))
    try:
        cases = [
            (other, pb.CreateJobRequest(program_id="hello-world", session_id=session.id),
             grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
            (me, pb.CreateJobRequest(program_id="hello-world", session_id="nope"),
             grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND"),
            (colleague, pb.CreateJobRequest(program_id="hello-world", session_id=session.id),
             grpc.StatusCode.PERMISSION_DENIED, "SESSION_NOT_OWNED"),
            (me, pb.CreateJobRequest(program_id="hello-world", session_id=session.id,
                                     options=job_pb2.JobOptions(backend_name="simulator_mps")),
             grpc.StatusCode.INVALID_ARGUMENT, "SESSION_BACKEND_MISMATCH"),
        ]
        for caller, request, code, reason in cases:
            err = caller.error("CreateJob", request)
            assert (err.code, err.reason) == (code, reason), reason
        assert colleague.get_session(session.id).id == session.id  # colleagues see it, but add nothing
        err = other.error("GetSession", spb.GetSessionRequest(session_id=session.id))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        err = other.error("CancelSession", spb.CancelSessionRequest(session_id=session.id))
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        err = reader.error("CreateSession", spb.CreateSessionRequest(backend_name=BACKEND))
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
        for times, field in (({"max_time": 9 * 3600}, "max_time"), ({"max_time": -1}, "max_time"),
                             ({"max_time": 60, "interactive_timeout": 61}, "interactive_timeout")):
            err = me.error("CreateSession", spb.CreateSessionRequest(backend_name=BACKEND, **{
                name: duration_pb2.Duration(seconds=seconds) for name, seconds in times.items()}))
            assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SESSION_TIME")
            assert [v[0] for v in err.field_violations] == [field]
        err = me.error("CreateSession", spb.CreateSessionRequest(backend_name=BACKEND, mode=7))
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_SESSION_MODE")
        err = me.error("CreateSession", spb.CreateSessionRequest(backend_name="ibm_lima"))  # not in a Lite plan
        assert err.code == grpc.StatusCode.PERMISSION_DENIED
        err = me.error("CreateSession", spb.CreateSessionRequest(backend_name="nope"))
        assert err.code == grpc.StatusCode.NOT_FOUND
        assert me.ListJobs(pb.ListJobsRequest()).jobs == []  # nothing was stored
    finally:
        for caller in (other, colleague, reader):
            caller.channel.close()


def test_a_session_without_a_backend_gets_the_least_busy_one(me):
    session = me.session(backend="")
    assert session.backend
    job = me.job(session.id)
    assert job.backend == session.backend


def test_cancelling_a_session_cancels_its_running_and_queued_jobs(me):
    session = me.session()
    running = me.job(session.id, iterations=LONG)
    queued = me.job(session.id)
    me.wait_job(running.id, (job_pb2.JOB_STATE_RUNNING,))
    cancelled = me.CancelSession(spb.CancelSessionRequest(session_id=session.id)).session
    assert (cancelled.state, cancelled.close_reason) == (session_pb2.SESSION_STATE_CLOSED, "cancelled by the user")
    for job in (running, queued):
        ended = me.wait_job(job.id)
        assert (ended.state, ended.reason) == (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_REASON_CANCELLED_BY_USER)
    assert not me.get(running.id).HasField("deadline")


def test_past_max_time_the_queued_jobs_are_cancelled_and_the_running_one_runs_to_its_end(me):
    session = me.session(max_time=1, interactive_timeout=1)
    first = me.job(session.id, iterations=LONG)  # runs past the session's max_time
    second = me.job(session.id)  # waits for the first, which is still running at max_time
    me.wait_job(first.id, (job_pb2.JOB_STATE_RUNNING,))
    closed = me.wait(lambda: (s := me.get_session(session.id)).state == session_pb2.SESSION_STATE_CLOSED and s,
                     timeout=10)
    assert "max_time" in closed.close_reason and not closed.accepting_jobs
    assert me.get(first.id).state == job_pb2.JOB_STATE_RUNNING
    ended = me.get(second.id)
    assert (ended.state, ended.reason) == (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_REASON_SESSION_EXPIRED)
    err = me.error("CreateJob", pb.CreateJobRequest(program_id="hello-world", session_id=session.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SESSION_NOT_ACCEPTING_JOBS")
    assert me.wait_job(first.id).state == job_pb2.JOB_STATE_DONE


def test_a_batch_takes_jobs_in_parallel(me):
    batch = me.session(mode=session_pb2.SESSION_MODE_BATCH)
    jobs = [me.job(batch.id) for _ in range(3)]
    assert all(me.wait_job(j.id).state == job_pb2.JOB_STATE_DONE for j in jobs)
    done = me.get_session(batch.id)
    assert done.mode == session_pb2.SESSION_MODE_BATCH and done.state == session_pb2.SESSION_STATE_ACTIVE
    assert done.usage_seconds == pytest.approx(sum(me.get(j.id).metrics.usage_seconds for j in jobs))
