"""Per-instance limits of CreateJob (jobs queued, submissions per minute), each refused with
RESOURCE_EXHAUSTED and a RetryInfo, and the dry run (validate_only), through a real suite."""

from __future__ import annotations

import grpc
import pytest
from qruntime.encoding import dumps
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as pb

from qruntime_kit.errors import ServiceError, from_rpc_error

pytestmark = pytest.mark.slow
QUEUED, PER_MINUTE = 2, 4


@pytest.fixture(scope="module")
def suite(start_module_suite):
    # One job of an instance runs at a time, so the others stay queued while a long one runs.
    return start_module_suite("programs", "devices", "jobs", max_running_per_instance=1,
                              max_queued_per_instance=QUEUED, max_submissions_per_minute=PER_MINUTE)


class Caller:
    """CreateJob, CancelJob and ListJobs as a new instance's manager."""

    def __init__(self, suite, name: str) -> None:
        key, instance = suite.make_user(instance_name=name)
        self.channel = suite.channel()
        self.stub = jobs_service_pb2_grpc.JobsServiceStub(self.channel)
        self.metadata = suite.metadata(suite.token(key, instance))

    def create(self, program_id: str, inputs: dict, **fields) -> job_pb2.Job:
        request = pb.CreateJobRequest(program_id=program_id, inputs=dumps(inputs), **fields)
        return self.stub.CreateJob(request, metadata=self.metadata, timeout=30).job

    def refused(self, program_id: str, inputs: dict, **fields) -> ServiceError:
        with pytest.raises(grpc.RpcError) as caught:
            self.create(program_id, inputs, **fields)
        return from_rpc_error(caught.value)

    def cancel(self, job_id: str) -> None:
        self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=self.metadata, timeout=30)

    def listed(self) -> list[str]:
        return [j.id for j in self.stub.ListJobs(pb.ListJobsRequest(), metadata=self.metadata, timeout=30).jobs]


LONG = {"iterations": 200}  # hello-world: a device call per iteration, seconds in all


def test_past_the_queued_limit_create_job_is_refused_with_a_retry_delay(suite):
    me = Caller(suite, "queued")
    created = []
    for _ in range(QUEUED + 2):
        try:
            created.append(me.create("hello-world", LONG))
        except grpc.RpcError as err:
            error = from_rpc_error(err)
            break
    else:
        raise AssertionError("no submission was refused")
    assert len(created) in (QUEUED, QUEUED + 1)  # the first may have left the queue to run
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_QUEUED_JOBS")
    assert error.retry_after == 30 and error.metadata["limit"] == str(QUEUED)
    assert sorted(me.listed()) == sorted(j.id for j in created)  # nothing stored for the refusal
    for job in created:
        me.cancel(job.id)
    me.cancel(me.create("hello-world", LONG).id)  # room again once they left the queue


def test_past_the_submissions_per_minute_create_job_is_refused_with_a_retry_delay(suite):
    me = Caller(suite, "rate")
    for _ in range(PER_MINUTE):
        me.cancel(me.create("hello-world", LONG).id)  # none stays queued: only the rate counts
    error = me.refused("hello-world", LONG)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_SUBMISSIONS")
    assert 0 < error.retry_after <= 60 and f"retry in {error.retry_after:.0f} s" in error.message
    assert len(me.listed()) == PER_MINUTE


def test_a_dry_run_answers_as_create_job_would_and_stores_nothing(suite, bell):
    me = Caller(suite, "dry")
    job = me.create("sampler", {"circuits": bell}, validate_only=True)
    assert job.id == "" and job.state == job_pb2.JOB_STATE_QUEUED
    assert job.backend and job.max_execution_time.seconds == 3 * 60 * 60  # the least busy simulator's limit
    assert job.time_limit_source == job_pb2.TIME_LIMIT_SOURCE_SYSTEM
    job = me.create("hello-world", {"iterations": 1}, options=job_pb2.JobOptions(backend_name="simulator_statevector"),
                    validate_only=True)
    assert (job.backend, job.max_execution_time.seconds) == ("simulator_statevector", 300)  # the program's
    bad = me.refused("hello-world", {}, validate_only=True)  # iterations is required
    assert (bad.code, bad.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUTS")
    for _ in range(PER_MINUTE * 2):  # dry runs are not submissions
        me.create("hello-world", LONG, validate_only=True)
    assert me.listed() == []
    for _ in range(QUEUED + 1):  # fill the queue (the first runs, or stays queued)
        try:
            me.create("hello-world", LONG)
        except grpc.RpcError:
            break
    full = me.refused("hello-world", LONG, validate_only=True)  # would not be admitted, and why
    assert (full.code, full.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_QUEUED_JOBS")
    for job_id in me.listed():
        me.cancel(job_id)
