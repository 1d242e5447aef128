"""JobsService over a real socket, with the real auth, programs and devices services beside it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from qruntime.devices.v1 import backend_pb2
from qruntime.encoding import dumps, loads
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as pb
from qruntime.programs.v1 import program_pb2, programs_service_pb2, programs_service_pb2_grpc

from qruntime_jobs import servicer as servicer_module
from qruntime_jobs.servicer import DEFAULT_LIMIT_SECONDS, time_limit
from qruntime_kit.errors import ServiceError, from_rpc_error

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


FINAL = (job_pb2.JOB_STATE_DONE, job_pb2.JOB_STATE_ERROR, job_pb2.JOB_STATE_CANCELLED)
LITE_SIMULATORS = (
    "ibmq_qasm_simulator", "simulator_extended_stabilizer", "simulator_mps", "simulator_stabilizer",
    "simulator_statevector",
)


class Caller:
    """A JobsService stub that sends one principal's token with every call."""

    def __init__(self, suite, token: str) -> None:
        self.channel = suite.channel()
        self.stub = jobs_service_pb2_grpc.JobsServiceStub(self.channel)
        self.programs = programs_service_pb2_grpc.ProgramsServiceStub(self.channel)
        self.metadata = suite.metadata(token)

    def __getattr__(self, method):
        return lambda request: getattr(self.stub, method)(request, metadata=self.metadata, timeout=30)

    def error(self, method: str, request) -> ServiceError:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(self, method)(request)
        return from_rpc_error(caught.value)

    def create(self, program_id: str, inputs=None, backend: str = "", **fields) -> job_pb2.Job:
        request = pb.CreateJobRequest(program_id=program_id, inputs=dumps(inputs or {}),
                                      options=job_pb2.JobOptions(backend_name=backend), **fields)
        return self.CreateJob(request).job

    def get(self, job_id: str) -> job_pb2.Job:
        return self.GetJob(pb.GetJobRequest(job_id=job_id)).job

    def wait(self, job_id: str, states=FINAL, timeout: float = 60) -> job_pb2.Job:
        deadline = time.monotonic() + timeout
        while (job := self.get(job_id)).state not in states:
            assert time.monotonic() < deadline, f"job still {job_pb2.JobState.Name(job.state)}"
            time.sleep(0.05)
        return job

    def result(self, job_id: str):
        return loads(self.GetJobResult(pb.GetJobResultRequest(job_id=job_id)).result)


@dataclasses.dataclass
class World:
    me: Caller  # the bootstrap user: Manager on a Lite instance
    other: Caller  # Manager on another account's Lite instance
    reader: Caller  # Reader on a third instance
    instance: str


@pytest.fixture
def world(start_suite):
    suite = start_suite("programs", "devices", "jobs")
    other_key, other_instance = suite.make_user(instance_name="other")
    reader_key, reader_instance = suite.make_user(role="reader", instance_name="readers")
    world = World(Caller(suite, suite.token()), Caller(suite, suite.token(other_key, other_instance)),
                  Caller(suite, suite.token(reader_key, reader_instance)), suite.instance)
    yield world
    for caller in (world.me, world.other, world.reader):
        caller.channel.close()


def test_a_sampler_job_is_queued_at_once_then_done_with_its_result(world, bell):
    job = world.me.create("sampler", {"circuits": [bell], "shots": 1000, "seed": 7})
    assert job.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)
    assert job.id and job.program_id == "sampler" and job.instance == world.instance and job.owner
    assert job.backend == job.options.backend_name
    assert job.backend in ("ibmq_qasm_simulator", "simulator_mps", "simulator_statevector")  # all idle: any universal
    assert job.options.log_level == job_pb2.LOG_LEVEL_INFO
    assert job.max_execution_time.seconds == 3 * 60 * 60
    assert job.HasField("create_time") and not job.HasField("end_time")
    done = world.me.wait(job.id)
    assert done.state == job_pb2.JOB_STATE_DONE and done.reason == job_pb2.JOB_REASON_UNSPECIFIED
    assert done.HasField("start_time") and done.HasField("end_time")
    result = world.me.result(job.id)
    assert set(result["counts"][0]) == {"00", "11"} and sum(result["counts"][0].values()) == 1000
    assert result["quasi_dists"][0]["00"] == pytest.approx(0.5, abs=0.06)
    listed = world.me.ListJobs(pb.ListJobsRequest()).jobs
    assert [j.id for j in listed] == [job.id]


def test_hello_world_publishes_interim_results_and_logs(world):
    job = world.me.create("hello-world", {"iterations": 2}, backend="simulator_statevector")
    assert job.max_execution_time.seconds == 300  # the program's limit is below the backend's 3 h
    assert world.me.wait(job.id).state == job_pb2.JOB_STATE_DONE
    assert world.me.result(job.id) == "All done!"
    interim = world.me.ListJobInterimResults(pb.ListJobInterimResultsRequest(job_id=job.id)).interim_results
    assert [loads(r.data)["iteration"] for r in interim] == [0, 1]
    entries = world.me.ListJobLogs(pb.ListJobLogsRequest(job_id=job.id)).entries
    assert entries[0].message == "Hello, World!" and entries[0].level == job_pb2.LOG_LEVEL_INFO
    page = world.me.ListJobLogs(pb.ListJobLogsRequest(job_id=job.id, page_size=1))
    assert len(page.entries) == 1 and page.next_page_token


def test_an_estimator_job_measures_bell_correlations(world, bell):
    job = world.me.create("estimator", {"circuits": [bell], "observables": ["ZZ", "XX"], "seed": 1})
    assert world.me.wait(job.id).state == job_pb2.JOB_STATE_DONE
    assert world.me.result(job.id)["values"] == [pytest.approx(1), pytest.approx(1)]


def test_inputs_are_checked_off_the_event_loop(world, bell, monkeypatch):
    on_a_loop = []  # parsing 32 MiB of JSON would hold up every other call

    def recording(request):
        try:
            on_a_loop.append(asyncio.get_running_loop() is not None)
        except RuntimeError:
            on_a_loop.append(False)
        return check_create_request(request)

    check_create_request = servicer_module.check_create_request
    monkeypatch.setattr(servicer_module, "check_create_request", recording)
    world.me.create("sampler", {"circuits": bell})
    assert on_a_loop == [False]


@pytest.mark.parametrize(
    ("system", "program", "limit"),
    [(3 * 3600, 8 * 3600, 3 * 3600), (8 * 3600, 300, 300), (0, 0, DEFAULT_LIMIT_SECONDS), (0, 1.5, 1.5)],
)
def test_the_time_limit_is_the_smaller_of_the_backends_and_the_programs(system, program, limit):
    backend = backend_pb2.Backend()
    backend.configuration.max_execution_time.FromTimedelta(dt.timedelta(seconds=system))
    program_message = program_pb2.Program()
    program_message.max_execution_time.FromTimedelta(dt.timedelta(seconds=program))
    assert time_limit(backend, program_message) == limit


def test_a_retried_create_with_the_same_request_id_returns_the_first_job(world, bell):
    first = world.me.create("sampler", {"circuits": bell}, request_id="retry-1")
    again = world.me.create("sampler", {"circuits": bell}, request_id="retry-1")
    assert again.id == first.id and again.request_id == "retry-1"
    assert world.other.create("sampler", {"circuits": bell}, request_id="retry-1").id != first.id


def test_unknown_program_and_backends_come_back_as_the_peers_said(world, bell):
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="nope"))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "PROGRAM_NOT_FOUND")
    err = world.me.error("CreateJob", pb.CreateJobRequest(
        program_id="sampler", inputs=dumps({"circuits": bell}), options=job_pb2.JobOptions(backend_name="nope")))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "BACKEND_NOT_FOUND")
    err = world.me.error("CreateJob", pb.CreateJobRequest(
        program_id="sampler", inputs=dumps({"circuits": bell}),
        options=job_pb2.JobOptions(backend_name="ibm_manila")))  # a physical system: not in a Lite plan
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "BACKEND_NOT_IN_PLAN")
    assert world.me.ListJobs(pb.ListJobsRequest()).jobs == []


def test_malformed_inputs_are_invalid_with_field_violations(world):
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", inputs="[1, 2"))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUTS")
    assert [f for f, _ in err.field_violations] == ["inputs"]
    err = world.me.error("CreateJob", pb.CreateJobRequest(
        program_id="sampler", inputs=json.dumps({"shots": "many", "colour": "blue"})))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUTS")
    assert sorted(f for f, _ in err.field_violations) == ["inputs.circuits", "inputs.colour", "inputs.shots"]
    err = world.me.error("CreateJob", pb.CreateJobRequest(inputs="{}"))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PROGRAM_ID_MISSING")


def test_inputs_the_program_cannot_use_end_the_job_invalid_input(world, bell):
    job = world.me.create("sampler", {"circuits": [bell], "circuit_indices": [5]})
    ended = world.me.wait(job.id)
    assert (ended.state, ended.reason) == (job_pb2.JOB_STATE_ERROR, job_pb2.JOB_REASON_INVALID_INPUT)
    err = world.me.error("GetJobResult", pb.GetJobResultRequest(job_id=job.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_DONE")
    assert err.metadata["state"] == "JOB_STATE_ERROR"


def test_circuits_the_backend_refuses_end_the_job_backend_error(world, bell):
    job = world.me.create("sampler", {"circuits": [bell], "shots": 10**6})  # over the simulator's max_shots
    ended = world.me.wait(job.id)
    assert (ended.state, ended.reason) == (job_pb2.JOB_STATE_ERROR, job_pb2.JOB_REASON_BACKEND_ERROR)
    assert "INVALID_SHOTS" in ended.reason_message


def test_cancel_then_delete(world):
    job = world.me.create("hello-world", {"iterations": 100_000})
    err = world.me.error("DeleteJob", pb.DeleteJobRequest(job_id=job.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_FINAL")
    cancelled = world.me.CancelJob(pb.CancelJobRequest(job_id=job.id)).job
    assert (cancelled.state, cancelled.reason) == (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_REASON_CANCELLED_BY_USER)
    err = world.me.error("CancelJob", pb.CancelJobRequest(job_id=job.id))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "JOB_ALREADY_FINAL")
    err = world.me.error("GetJobResult", pb.GetJobResultRequest(job_id=job.id))
    assert (err.reason, err.metadata["state"]) == ("JOB_NOT_DONE", "JOB_STATE_CANCELLED")
    time.sleep(0.3)  # the program notices at its next device call; the job stays cancelled
    assert world.me.get(job.id).state == job_pb2.JOB_STATE_CANCELLED
    world.me.DeleteJob(pb.DeleteJobRequest(job_id=job.id))
    err = world.me.error("GetJob", pb.GetJobRequest(job_id=job.id))
    assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")


def test_another_instances_job_is_not_found(world, bell):
    job = world.me.create("sampler", {"circuits": bell})
    world.me.wait(job.id)
    requests = {
        "GetJob": pb.GetJobRequest(job_id=job.id),
        "GetJobResult": pb.GetJobResultRequest(job_id=job.id),
        "ListJobLogs": pb.ListJobLogsRequest(job_id=job.id),
        "ListJobInterimResults": pb.ListJobInterimResultsRequest(job_id=job.id),
        "CancelJob": pb.CancelJobRequest(job_id=job.id),
        "DeleteJob": pb.DeleteJobRequest(job_id=job.id),
    }
    for method, request in requests.items():
        err = world.other.error(method, request)
        assert (err.code, err.reason) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND"), method
    assert world.other.ListJobs(pb.ListJobsRequest()).jobs == []
    assert world.me.get(job.id).state == job_pb2.JOB_STATE_DONE


def test_rights_follow_the_role(world):
    err = world.reader.error("CreateJob", pb.CreateJobRequest(program_id="sampler"))
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
    assert world.reader.ListJobs(pb.ListJobsRequest()).jobs == []
    err = world.reader.error("DeleteJob", pb.DeleteJobRequest(job_id="x"))
    assert err.code == grpc.StatusCode.PERMISSION_DENIED


def test_list_jobs_filters_and_pages(world, bell):
    ids = [world.me.create("sampler", {"circuits": bell}).id for _ in range(3)]
    hello = world.me.create("hello-world", {"iterations": 1}).id
    for job_id in [*ids, hello]:
        world.me.wait(job_id)
    seen, token = [], ""
    while True:
        page = world.me.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token))
        seen += [j.id for j in page.jobs]
        if not (token := page.next_page_token):
            break
    assert seen == [hello, *ids[::-1]]
    samplers = world.me.ListJobs(pb.ListJobsRequest(program_id="sampler")).jobs
    assert [j.id for j in samplers] == ids[::-1]
    done = world.me.ListJobs(pb.ListJobsRequest(state=job_pb2.JOB_STATE_DONE)).jobs
    assert len(done) == 4
    err = world.me.error("ListJobs", pb.ListJobsRequest(page_token="garbage"))
    assert err.reason == "INVALID_PAGE_TOKEN"


def test_uploaded_python_programs_run_in_their_sandbox(world):
    program = world.me.programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
        name="doubler", data="def main(backend, user_messenger, x):\n    return 2 * x\n",
        max_execution_time=duration_pb2.Duration(seconds=30),
        inputs=[program_pb2.ProgramInput(name="x", type=program_pb2.INPUT_TYPE_INTEGER, required=True)],
    )), metadata=world.me.metadata).program
    job = world.me.create(program.id, {"x": 21})
    assert job.max_execution_time.seconds == 30
    ended = world.me.wait(job.id)
    assert (ended.state, ended.reason) == (job_pb2.JOB_STATE_DONE, job_pb2.JOB_REASON_UNSPECIFIED)
    assert world.me.result(job.id) == 42
    assert (ended.program_version, ended.attempts) == (1, 1)
    world.me.programs.UpdateProgram(programs_service_pb2.UpdateProgramRequest(
        program=program_pb2.Program(id=program.id, data="def main(backend, user_messenger, x):\n    return 3 * x\n"),
        update_mask=field_mask_pb2.FieldMask(paths=["data"])), metadata=world.me.metadata)
    second = world.me.wait(world.me.create(program.id, {"x": 21}).id)
    assert (second.program_version, world.me.result(second.id)) == (2, 63)  # the job runs the version it was made for
    err = world.other.error("CreateJob", pb.CreateJobRequest(program_id=program.id, inputs='{"x": 1}'))
    assert err.reason == "PROGRAM_NOT_FOUND"  # a private program of another instance


def test_a_token_without_an_instance_cannot_create_jobs(start_suite, bell):
    suite = start_suite("programs", "devices", "jobs")
    service = Caller(suite, suite.token(suite.service_key))
    err = service.error("CreateJob", pb.CreateJobRequest(program_id="sampler", inputs=dumps({"circuits": bell})))
    assert (err.code, err.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INSTANCE_REQUIRED")
    service.channel.close()
