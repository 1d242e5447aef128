"""JobsService over a real socket, with the real auth, programs and devices services beside it."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import time

import grpc
import numpy as np
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from qiskit import QuantumCircuit
from qruntime.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
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


def test_inputs_are_checked_off_the_event_loop_unless_the_request_is_small(world, bell, monkeypatch):
    on_a_loop = []  # parsing 32 MiB of JSON would hold up every other call; a few KiB takes microseconds

    def recording(request):
        try:
            on_a_loop.append(asyncio.get_running_loop() is not None)
        except RuntimeError:
            on_a_loop.append(False)
        return check_create_request(request)

    check_create_request = servicer_module.check_create_request
    monkeypatch.setattr(servicer_module, "check_create_request", recording)
    world.me.create("sampler", {"circuits": bell})
    many = [bell] * 40
    assert len(dumps({"circuits": many})) > servicer_module.INLINE_CHECK_BYTES
    world.me.create("sampler", {"circuits": many})
    assert on_a_loop == [True, False]


@pytest.mark.parametrize(
    ("system", "program", "user", "limit"),
    [(3 * 3600, 8 * 3600, None, (3 * 3600, "SYSTEM")), (8 * 3600, 300, None, (300, "PROGRAM")),
     (0, 0, None, (DEFAULT_LIMIT_SECONDS, "SYSTEM")), (0, 1.5, None, (1.5, "PROGRAM")),
     (3 * 3600, 300, 60, (60, "USER")), (3 * 3600, 300, 600, (300, "PROGRAM")), (3 * 3600, 0, 0, (3 * 3600, "SYSTEM"))],
)
def test_the_time_limit_is_the_smallest_of_the_backends_the_programs_and_the_jobs(system, program, user, limit):
    backend = backend_pb2.Backend()
    backend.configuration.max_execution_time.FromTimedelta(dt.timedelta(seconds=system))
    program_message = program_pb2.Program()
    program_message.max_execution_time.FromTimedelta(dt.timedelta(seconds=program))
    requested = None if user is None else duration_pb2.Duration(seconds=user)
    assert time_limit(backend, program_message, requested) == limit


def test_a_job_carries_the_limit_it_asked_for_and_which_limit_applies(world, bell):
    job = world.me.CreateJob(pb.CreateJobRequest(
        program_id="sampler", inputs=dumps({"circuits": bell}),
        options=job_pb2.JobOptions(max_execution_time=duration_pb2.Duration(seconds=90)))).job
    assert (job.max_execution_time.seconds, job.time_limit_source) == (90, job_pb2.TIME_LIMIT_SOURCE_USER)
    job = world.me.create("hello-world", {"iterations": 1}, backend="simulator_statevector")
    assert (job.max_execution_time.seconds, job.time_limit_source) == (300, job_pb2.TIME_LIMIT_SOURCE_PROGRAM)
    assert world.me.wait(job.id).state == job_pb2.JOB_STATE_DONE and not world.me.get(job.id).HasField("deadline")
    err = world.me.error("CreateJob", pb.CreateJobRequest(
        program_id="sampler", inputs=dumps({"circuits": bell}),
        options=job_pb2.JobOptions(max_execution_time=duration_pb2.Duration(seconds=-1))))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TIME_LIMIT")


def test_a_retried_create_with_the_same_request_id_returns_the_first_job(world, bell):
    first = world.me.create("sampler", {"circuits": bell}, request_id="retry-1")
    again = world.me.create("sampler", {"circuits": bell}, request_id="retry-1")
    assert again.id == first.id and again.request_id == "retry-1"
    assert world.other.create("sampler", {"circuits": bell}, request_id="retry-1").id != first.id


def test_a_request_id_reused_for_a_different_request_is_refused(world, bell):
    first = world.me.create("sampler", {"circuits": bell}, request_id="once")
    for program_id, inputs, backend in (("sampler", {"circuits": bell, "shots": 7}, ""),
                                        ("hello-world", {}, ""),
                                        ("sampler", {"circuits": bell}, "ibmq_qasm_simulator")):
        err = world.me.error("CreateJob", pb.CreateJobRequest(
            program_id=program_id, inputs=dumps(inputs), options=job_pb2.JobOptions(backend_name=backend),
            request_id="once"))
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
        assert first.id in err.message and err.metadata["job_id"] == first.id
        assert [v[0] for v in err.field_violations] == ["request_id"]
    assert [j.id for j in world.me.ListJobs(pb.ListJobsRequest()).jobs] == [first.id]  # never another job


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


def ghz_with_t(width: int) -> QuantumCircuit:
    """Wide but barely entangled, and not Clifford: matrix product states hold it, state vectors cannot."""
    circuit = QuantumCircuit(width)
    circuit.h(0)
    for qubit in range(width - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.t(range(width))
    circuit.measure_all()
    return circuit


def test_a_job_naming_no_backend_goes_to_the_least_busy_one_that_accepts_its_circuits(world, bell):
    job = world.me.create("sampler", {"circuits": [ghz_with_t(40)], "shots": 10})
    assert job.backend == "simulator_mps"  # the two state-vector simulators cannot hold 40 qubits
    assert world.me.wait(job.id).state == job_pb2.JOB_STATE_DONE
    first = world.me.ListJobLogs(pb.ListJobLogsRequest(job_id=job.id)).entries[0].message
    assert first.startswith("backend simulator_mps: least busy")  # and which refused it, if any was tried first
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", inputs=dumps(
        {"circuits": [bell, ghz_with_t(70)]})))  # wider than any simulator of the plan runs
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NO_BACKEND_RUNS_CIRCUITS")
    assert err.metadata["input"] == "inputs.circuits[1]" and "simulator_mps: " in err.message
    assert [j.id for j in world.me.ListJobs(pb.ListJobsRequest()).jobs] == [job.id]  # nothing stored


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
    # A page token is bound to its filter; the next page with the same filter is the rest of it.
    first = world.me.ListJobs(pb.ListJobsRequest(page_size=1, filter="program = sampler"))
    err = world.me.error("ListJobs", pb.ListJobsRequest(page_size=1, filter="program = hello-world",
                                                        page_token=first.next_page_token))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_PAGE_TOKEN"
    rest = world.me.ListJobs(pb.ListJobsRequest(page_size=5, filter="program = sampler",
                                                page_token=first.next_page_token))
    assert [j.id for j in [*first.jobs, *rest.jobs]] == ids[::-1] and rest.next_page_token == ""
    err = world.me.error("ListJobs", pb.ListJobsRequest(state=99))  # not a JobState
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_STATE"


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


ITERATIVE = """
import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qruntime_jobs.builtin_programs.primitives import Estimator, Sampler

def main(backend, user_messenger, angles):
    theta = Parameter("theta")
    circuit = QuantumCircuit(1)
    circuit.ry(theta, 0)
    estimator, sampler = Estimator(backend), Sampler(backend)
    values = [estimator.run(circuit, [["Z", 1.0], ["X", 2.0]], parameter_values=[[a]], shots=4000, seed=3)["values"][0]
              for a in angles]
    measured = circuit.measure_all(inplace=False)
    counts = sampler.run(measured, parameter_values=[[np.pi]], shots=50, seed=3)["counts"][0]
    return {"values": values, "counts": counts}
"""


def test_an_uploaded_programs_estimator_binds_each_steps_values_and_logs_nothing_per_step(world):
    program = world.me.programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
        name="iterative", data=ITERATIVE, max_execution_time=duration_pb2.Duration(seconds=120),
        inputs=[program_pb2.ProgramInput(name="angles", type=program_pb2.INPUT_TYPE_ARRAY, required=True)],
    )), metadata=world.me.metadata).program
    angles = [0.0, 1.2, 3.0, 0.0]  # the first step again last: its circuit, decoded once, is bound afresh
    job = world.me.create(program.id, {"angles": angles})
    ended = world.me.wait(job.id, timeout=120)
    assert ended.state == job_pb2.JOB_STATE_DONE, ended.reason_message
    result = world.me.result(job.id)
    for angle, value in zip(angles, result["values"], strict=True):  # <Z + 2X> = cos + 2 sin on ry(angle)|0>
        assert value == pytest.approx(np.cos(angle) + 2 * np.sin(angle), abs=0.1)
    assert result["values"][0] == result["values"][-1]  # the same values and seed, the same numbers
    assert result["counts"] == {"1": 50}
    logs = world.me.ListJobLogs(pb.ListJobLogsRequest(job_id=job.id)).entries
    assert [e.message.split(":")[0] for e in logs] == [f"backend {ended.backend}"]  # its choice; the steps are quiet


def test_a_token_without_an_instance_cannot_create_jobs(start_suite, bell):
    suite = start_suite("programs", "devices", "jobs")
    request = pb.CreateJobRequest(program_id="sampler", inputs=dumps({"circuits": bell}))
    service = Caller(suite, suite.token(suite.service_key))  # not for the jobs service at all
    err = service.error("CreateJob", request)
    assert (err.code, err.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_WRONG_AUDIENCE")
    service.channel.close()
    with suite.channel() as channel:  # a user's token for the account (the admin API's), no instance
        token = auth_service_pb2_grpc.AuthServiceStub(channel).CreateToken(
            auth_service_pb2.CreateTokenRequest(api_key=suite.api_key, account="-", audiences=["jobs"])).token
    account = Caller(suite, token)
    err = account.error("CreateJob", request)
    assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTION_NOT_ALLOWED")
    account.channel.close()


def watch(caller: Caller, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
    stream = caller.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_sequence=after),
                                  metadata=caller.metadata, timeout=60)
    return [event for response in stream for event in response.events]


def test_watch_streams_a_jobs_life_and_a_resumed_watch_gets_the_rest(world):
    job = world.me.create("hello-world", {"iterations": 2})
    events = watch(world.me, job.id)
    history = [e for e in events if not e.HasField("queue_position")]
    assert [e.sequence for e in history] == list(range(1, len(history) + 1))
    kinds = [e.WhichOneof("event") for e in history]
    states = [e.state_change.state for e in history if e.HasField("state_change")]
    assert states == [job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_DONE]
    assert [e.state_change.attempt for e in history if e.HasField("state_change")] == [0, 1, 1]
    assert history[1].log.message.startswith("backend ")  # the least busy backend, and why
    assert kinds.count("interim_result") == 2 and "log" in kinds
    assert [loads(e.interim_result.data)["iteration"] for e in history if e.HasField("interim_result")] == [0, 1]
    rest = watch(world.me, job.id, after=history[2].sequence)  # the job has ended: a replay that closes
    assert [e.sequence for e in rest] == [e.sequence for e in history[3:]]
    assert watch(world.me, job.id, after=history[-1].sequence) == []
    for caller, after, reason in ((world.other, 0, "JOB_NOT_FOUND"), (world.me, -1, "INVALID_SEQUENCE")):
        with pytest.raises(grpc.RpcError) as caught:
            watch(caller, job.id, after=after)
        assert from_rpc_error(caught.value).reason == reason


def test_a_watch_that_asks_ends_with_the_result_of_a_done_job(world, bell):
    def messages(job_id: str, after: int = 0) -> list[pb.WatchJobResponse]:
        request = pb.WatchJobRequest(job_id=job_id, after_sequence=after, include_result=True)
        return list(world.me.stub.WatchJob(request, metadata=world.me.metadata, timeout=60))

    job = world.me.create("sampler", {"circuits": [bell], "shots": 100, "seed": 3})
    followed = messages(job.id)
    last = followed[-1]
    assert last.HasField("result") and not last.events and not any(m.HasField("result") for m in followed[:-1])
    assert followed[-2].events[-1].state_change.state == job_pb2.JOB_STATE_DONE
    assert last.result == world.me.GetJobResult(pb.GetJobResultRequest(job_id=job.id))
    replayed = messages(job.id, after=followed[-2].events[-1].sequence)  # nothing left but the result
    assert [m.HasField("result") for m in replayed] == [True] and replayed[0].result == last.result
    failed = world.me.wait(world.me.create("sampler", {"circuits": [bell], "shots": 0}).id)
    assert failed.state == job_pb2.JOB_STATE_ERROR
    assert not any(m.HasField("result") for m in messages(failed.id))  # no result to bring


def test_jobs_come_without_inputs_unless_asked(world, bell):
    inputs = {"circuits": [bell], "shots": 10}
    job = world.me.create("sampler", inputs)
    assert job.inputs == ""  # CreateJob answers with the basic view
    assert world.me.get(job.id).inputs == ""
    full = world.me.GetJob(pb.GetJobRequest(job_id=job.id, view=job_pb2.JOB_VIEW_FULL)).job
    assert loads(full.inputs)["shots"] == 10
    listed = world.me.ListJobs(pb.ListJobsRequest(view=job_pb2.JOB_VIEW_FULL)).jobs
    assert listed[0].inputs == full.inputs and world.me.ListJobs(pb.ListJobsRequest()).jobs[0].inputs == ""
    err = world.me.error("GetJob", pb.GetJobRequest(job_id=job.id, view=7))
    assert err.reason == "INVALID_VIEW"


def result_chunks(caller: Caller, job_id: str) -> tuple[list[str], pb.GetJobResultResponse]:
    """The result's chunks, following next_offset, and the last response (with the total and checksum)."""
    chunks, offset = [], 0
    while True:
        response = caller.GetJobResult(pb.GetJobResultRequest(job_id=job_id, offset=offset))
        chunks.append(response.result)
        if not (offset := response.next_offset):
            return chunks, response


def test_a_large_result_comes_in_checksummed_chunks(world, monkeypatch):
    monkeypatch.setattr(servicer_module, "RESULT_CHUNK_BYTES", 7)
    job = world.me.create("hello-world", {"iterations": 0})
    world.me.wait(job.id)
    chunks, response = result_chunks(world.me, job.id)
    whole = "".join(chunks).encode()
    assert len(chunks) > 1 and len(whole) == response.total_bytes
    watched = list(world.me.stub.WatchJob(pb.WatchJobRequest(job_id=job.id, include_result=True),
                                          metadata=world.me.metadata, timeout=60))[-1].result
    assert (watched.result, watched.next_offset) == (chunks[0], len(chunks[0].encode()))  # the first chunk
    assert hashlib.sha256(whole).digest() == response.sha256 and loads(whole.decode()) == "All done!"
    err = world.me.error("GetJobResult", pb.GetJobResultRequest(job_id=job.id, offset=10**6))
    assert err.reason == "INVALID_OFFSET"
    # Characters of 2, 3 and 4 bytes (stored as JSON escapes or as themselves): the chunks make them up again.
    source = "def main(backend, user_messenger):\n    return 'é€😀' * 5\n"
    program = world.me.programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
        name="wide-characters", data=source, max_execution_time=duration_pb2.Duration(seconds=60))),
        metadata=world.me.metadata).program
    job = world.me.wait(world.me.create(program.id).id, timeout=120)
    chunks, response = result_chunks(world.me, job.id)
    assert loads("".join(chunks)) == "é€😀" * 5 and all(len(c.encode()) <= 7 for c in chunks)
    assert hashlib.sha256("".join(chunks).encode()).digest() == response.sha256


def test_tags_batch_get_filters_and_usage(world, bell):
    tagged = world.me.create("sampler", {"circuits": [bell]}, tags=["exp-1", "bell"])
    plain = world.me.create("hello-world", {"iterations": 0})
    assert list(tagged.tags) == ["bell", "exp-1"]
    err = world.me.error("CreateJob", pb.CreateJobRequest(program_id="sampler", tags=["has space"]))
    assert err.reason == "INVALID_TAGS"
    for job_id in (tagged.id, plain.id):
        world.me.wait(job_id)
    assert list(world.me.UpdateJobTags(pb.UpdateJobTagsRequest(job_id=plain.id, tags=["exp-1"])).job.tags) == ["exp-1"]

    def ids(text: str) -> list[str]:
        return [j.id for j in world.me.ListJobs(pb.ListJobsRequest(filter=text)).jobs]

    assert ids("tags:exp-1") == [plain.id, tagged.id] and ids("tags:bell AND state = DONE") == [tagged.id]
    assert ids("program IN (hello-world) AND owner = me") == [plain.id]
    err = world.me.error("ListJobs", pb.ListJobsRequest(filter="state = SOON"))
    assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FILTER")
    page = world.me.ListJobs(pb.ListJobsRequest(filter="tags:exp-1", page_size=1))
    err = world.me.error("ListJobs", pb.ListJobsRequest(filter="tags:bell", page_token=page.next_page_token))
    assert err.reason == "INVALID_PAGE_TOKEN"

    both = world.me.BatchGetJobs(pb.BatchGetJobsRequest(job_ids=[plain.id, tagged.id])).jobs
    assert [j.id for j in both] == [plain.id, tagged.id]
    err = world.other.error("BatchGetJobs", pb.BatchGetJobsRequest(job_ids=[plain.id]))
    assert err.reason == "JOB_NOT_FOUND"
    assert world.me.error("BatchGetJobs", pb.BatchGetJobsRequest()).reason == "INVALID_BATCH_SIZE"

    metrics = world.me.get(tagged.id).metrics
    assert metrics.usage_seconds > 0 and metrics.time_running.ToTimedelta().total_seconds() == pytest.approx(
        metrics.usage_seconds, abs=1e-3)
    usage = world.me.GetUsage(pb.GetUsageRequest())
    assert usage.jobs_done == 2 and usage.usage_seconds == pytest.approx(
        sum(world.me.get(j).metrics.usage_seconds for j in (tagged.id, plain.id)))
    assert {b.backend for b in usage.backends} == {tagged.backend, plain.backend}
    assert world.other.GetUsage(pb.GetUsageRequest()).jobs_done == 0


def test_a_result_larger_than_a_message_arrives_intact_in_chunks(world, monkeypatch):
    # Chunks of 3 MiB: this test's channel takes gRPC's default 4 MiB messages (the client's take 64 MiB).
    monkeypatch.setattr(servicer_module, "RESULT_CHUNK_BYTES", 3 * 1024 * 1024)
    source = ("def main(backend, user_messenger):\n"
              "    import random\n"
              "    rng = random.Random(7)\n"
              "    return [format(rng.getrandbits(100), '0100b') for _ in range(400_000)]\n")  # ~42 MB of JSON
    program = world.me.programs.CreateProgram(programs_service_pb2.CreateProgramRequest(program=program_pb2.Program(
        name="bitstrings", data=source, max_execution_time=duration_pb2.Duration(seconds=120))),
        metadata=world.me.metadata).program
    job = world.me.wait(world.me.create(program.id).id, timeout=120)
    assert job.state == job_pb2.JOB_STATE_DONE, job.reason_message
    chunks, response = result_chunks(world.me, job.id)
    whole = "".join(chunks)
    assert len(chunks) == 14 and hashlib.sha256(whole.encode()).digest() == response.sha256
    shots = loads(whole)
    assert len(shots) == 400_000 and all(len(s) == 100 for s in shots[:10])
