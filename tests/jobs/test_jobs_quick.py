"""Quick jobs (quick.py): a small sampler job on a named simulator runs within the CreateJob call that
submits it, and is stored with what a queued run would have left; anything else goes the usual way."""

from __future__ import annotations

import base64
import time

import grpc
import pytest
import structlog
from google.protobuf import duration_pb2
from qiskit import QuantumCircuit
from qruntime.encoding import dumps, loads
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2_grpc
from qruntime.jobs.v1 import jobs_service_pb2 as pb
from qruntime.primitives.v1 import primitives_pb2 as ppb

from qruntime_kit.errors import from_rpc_error

pytestmark = pytest.mark.slow  # suites with simulation workers

BACKEND = "ibmq_qasm_simulator"


class Caller:
    def __init__(self, suite) -> None:
        self.channel = suite.channel()
        self.stub = jobs_service_pb2_grpc.JobsServiceStub(self.channel)
        self.metadata = suite.metadata(suite.token())

    def create(self, inputs, backend: str = BACKEND, program_id: str = "sampler", **fields) -> job_pb2.Job:
        return self.created(inputs, backend, program_id, **fields).job

    def created(self, inputs, backend: str = BACKEND, program_id: str = "sampler", **fields) -> pb.CreateJobResponse:
        request = pb.CreateJobRequest(program_id=program_id, inputs=dumps(inputs) if inputs else "",
                                      options=job_pb2.JobOptions(backend_name=backend), **fields)
        return self.stub.CreateJob(request, metadata=self.metadata, timeout=30)

    def result(self, job_id: str) -> pb.GetJobResultResponse:
        return self.stub.GetJobResult(pb.GetJobResultRequest(job_id=job_id), metadata=self.metadata, timeout=30)

    def history(self, job_id: str) -> tuple[list[job_pb2.JobEvent], pb.GetJobResultResponse | None]:
        """The job's events, followed to its end, and the result the stream ends with."""
        request = pb.WatchJobRequest(job_id=job_id, include_result=True)
        events, result = [], None
        for message in self.stub.WatchJob(request, metadata=self.metadata, timeout=60):
            events += [e for e in message.events if not e.HasField("queue_position")]
            result = message.result if message.HasField("result") else result
        return events, result

    def get(self, job_id: str) -> job_pb2.Job:
        return self.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=self.metadata, timeout=30).job


@pytest.fixture
def quick_and_queued(start_suite):
    """A suite that runs quick jobs at once, and one that never does (a per-instance running limit
    leaves every start to the claim)."""
    callers = Caller(start_suite("programs", "devices", "jobs")), Caller(
        start_suite("programs", "devices", "jobs", max_running_per_instance=100))
    yield callers
    for caller in callers:
        caller.channel.close()


def described(events: list[job_pb2.JobEvent]) -> list[tuple]:
    """What a history says, times and numbers aside."""
    return [(e.WhichOneof("event"), e.state_change.state, e.state_change.reason, e.state_change.attempt,
             e.log.message, e.log.level) for e in events]


def wide(qubits: int) -> QuantumCircuit:
    circuit = QuantumCircuit(qubits)
    circuit.h(0)
    for qubit in range(qubits - 1):
        circuit.cx(qubit, qubit + 1)
    circuit.measure_all()
    return circuit


def test_a_quick_job_is_done_when_created_with_the_history_and_result_a_queued_run_leaves(quick_and_queued, bell):
    quick, queued = quick_and_queued
    inputs = {"circuits": [bell], "shots": 500, "seed": 11}
    answer = quick.created(inputs)
    ran = answer.job
    assert ran.state == job_pb2.JOB_STATE_DONE and ran.reason == job_pb2.JOB_REASON_UNSPECIFIED
    assert answer.result == quick.result(ran.id)  # the result came with the answer, as GetJobResult says it
    assert ran.create_time.ToDatetime() <= ran.start_time.ToDatetime() <= ran.end_time.ToDatetime()
    assert ran.metrics.usage_seconds >= 0 and ran.backend == BACKEND
    queued_answer = queued.created(inputs)
    waited = queued_answer.job
    assert waited.state == job_pb2.JOB_STATE_QUEUED and not queued_answer.HasField("result")
    (ran_events, ran_result), (waited_events, waited_result) = quick.history(ran.id), queued.history(waited.id)
    assert [e.sequence for e in ran_events] == list(range(1, len(ran_events) + 1))
    assert described(ran_events) == described(waited_events)
    assert [e.state_change.state for e in ran_events if e.HasField("state_change")] == [
        job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING, job_pb2.JOB_STATE_DONE]
    assert ran_result == waited_result  # the same seed, the same counts, the same JSON
    counts = loads(ran_result.result)["counts"][0]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 500
    assert quick.get(ran.id) == ran  # stored as answered


def test_the_create_calls_one_log_line_names_the_job_it_made(quick_and_queued, bell):
    quick, queued = quick_and_queued
    with structlog.testing.capture_logs([structlog.contextvars.merge_contextvars]) as logs:
        made = [caller.create({"circuits": [bell], "shots": 100}) for caller in (quick, queued)]
    lines = [line for line in logs if line["event"] == "rpc" and line["method"].endswith("/CreateJob")]
    assert [(line["job_id"], line["program_id"], line["backend"], line["ran_at_once"]) for line in lines] == [
        (made[0].id, "sampler", BACKEND, "DONE"), (made[1].id, "sampler", BACKEND, None)]
    assert all(line["code"] == "OK" and line["request_id"] for line in lines)


def test_circuits_that_are_not_quick_are_queued_and_run_as_usual(quick_and_queued, bell):
    quick, _ = quick_and_queued
    padded = bell.copy()
    padded.metadata = {"notes": "x" * 300_000}  # a request past quick.MAX_REQUEST_BYTES
    for inputs, backend in (({"circuits": [wide(14)], "shots": 100}, BACKEND),  # too wide to run at once
                            ({"circuits": [padded], "shots": 100}, BACKEND),  # too large a request to try
                            ({"circuits": [bell], "shots": 100}, "simulator_mps"),  # not a state vector
                            ({"circuits": [bell, bell], "shots": 100}, BACKEND)):  # two circuits: the host's
        job = quick.create(inputs, backend=backend)
        assert job.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING), inputs
        events, result = quick.history(job.id)
        assert events[-1].state_change.state == job_pb2.JOB_STATE_DONE and result.result


def test_bad_circuits_are_refused_or_end_the_job_exactly_as_when_queued(quick_and_queued, bell):
    quick, queued = quick_and_queued
    unmeasured = bell.remove_final_measurements(inplace=False)
    # Not QPY at all: CreateJob refuses it, the same way in both suites.
    bad = {"circuits": {"__type__": "QuantumCircuit", "__value__": base64.b64encode(b"QISKIT?").decode()}}
    errors = []
    for caller in (quick, queued):
        with pytest.raises(grpc.RpcError) as caught:
            caller.create(bad)
        errors.append(from_rpc_error(caught.value))
    assert errors[0].code == grpc.StatusCode.INVALID_ARGUMENT
    assert (errors[0].reason, errors[0].message, errors[0].field_violations) == (
        errors[1].reason, errors[1].message, errors[1].field_violations)
    # Nothing to sample: the job is accepted and ends INVALID_INPUT, the same way in both.
    ended = []
    for caller in (quick, queued):
        job = caller.create({"circuits": [unmeasured]})
        events, result = caller.history(job.id)
        assert result is None
        ended.append((caller.get(job.id), described(events)))
    assert ended[0][0].state == job_pb2.JOB_STATE_ERROR and ended[0][0].reason == job_pb2.JOB_REASON_INVALID_INPUT
    assert ended[0][0].reason_message == ended[1][0].reason_message and ended[0][1] == ended[1][1]


def test_a_retried_create_of_a_quick_job_returns_it_and_runs_nothing_again(quick_and_queued, bell):
    quick, _ = quick_and_queued
    first = quick.created({"circuits": [bell], "seed": 1}, request_id="quick-retry")
    again = quick.created({"circuits": [bell], "seed": 1}, request_id="quick-retry")
    assert again.job == first.job and first.job.state == job_pb2.JOB_STATE_DONE
    assert first.HasField("result") and not again.HasField("result")  # the retry's client asks for it


def test_a_quick_job_never_passes_a_queued_one(start_suite, bell):
    caller = Caller(start_suite("programs", "devices", "jobs", workers=1))
    try:
        long = caller.create({"iterations": 1000}, backend="simulator_statevector", program_id="hello-world")
        waiting = caller.create({"iterations": 1}, backend="simulator_statevector", program_id="hello-world")
        assert waiting.state == job_pb2.JOB_STATE_QUEUED  # the one worker runs the long job
        sampled = caller.create({"circuits": [bell], "shots": 100})
        assert sampled.state == job_pb2.JOB_STATE_QUEUED  # it would pass `waiting`: it waits too
        caller.stub.CancelJob(pb.CancelJobRequest(job_id=long.id), metadata=caller.metadata, timeout=30)
        events, result = caller.history(sampled.id)
        assert events[-1].state_change.state == job_pb2.JOB_STATE_DONE and result.result
        assert caller.get(waiting.id).start_time.ToDatetime() <= caller.get(sampled.id).start_time.ToDatetime()
        # The queue drained (once the worker has looked again, a moment after its job): quick again.
        deadline = time.monotonic() + 10
        while caller.create({"circuits": [bell], "shots": 100}).state != job_pb2.JOB_STATE_DONE:
            assert time.monotonic() < deadline, "no quick job after the queue drained"
            time.sleep(0.2)
    finally:
        caller.channel.close()


BELL3 = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;'


@pytest.mark.parametrize("primitive", [
    ppb.PrimitiveInput(sampler=ppb.SamplerInput(pubs=[ppb.SamplerPub(circuit=ppb.Circuit(qasm3=BELL3))],
                                                options=ppb.SamplerOptions(default_shots=300, seed=4))),
    ppb.PrimitiveInput(estimator=ppb.EstimatorInput(
        pubs=[ppb.EstimatorPub(circuit=ppb.Circuit(qasm3=BELL3), observables=ppb.ObservablesArray(
            observables=[ppb.SparsePauliSum(paulis=["ZZ", "XX"], coeffs=[1.0, 0.5])]))],
        options=ppb.EstimatorOptions(seed=4))),
], ids=["sampler", "estimator"])
def test_a_quick_primitive_job_is_done_when_created_as_a_queued_run_would_end(quick_and_queued, primitive):
    quick, queued = quick_and_queued
    program = primitive.WhichOneof("primitive")
    answer = quick.created({}, program_id=program, primitive_input=primitive)
    assert answer.job.state == job_pb2.JOB_STATE_DONE and answer.result.HasField("primitive_result")
    assert answer.result == quick.result(answer.job.id)
    waited = queued.create({}, program_id=program, primitive_input=primitive)
    assert waited.state == job_pb2.JOB_STATE_QUEUED
    (ran_events, ran_result), (waited_events, waited_result) = quick.history(answer.job.id), queued.history(waited.id)

    def without_times(result: pb.GetJobResultResponse) -> ppb.PrimitiveResult:
        typed_result = ppb.PrimitiveResult()
        typed_result.CopyFrom(result.primitive_result)
        getattr(typed_result, program).metadata.ClearField("execution_seconds")
        return typed_result

    assert without_times(ran_result) == without_times(waited_result)  # the same seed, the same values
    assert [d[:4] for d in described(ran_events)] == [d[:4] for d in described(waited_events)]

    def lines(events: list[job_pb2.JobEvent]) -> list[str]:
        return [e.log.message.split(" in ")[0] for e in events]  # "ran 1 sampler PUB(s) in 0.001 s ..."

    assert lines(ran_events) == lines(waited_events)


def test_a_quick_job_keeps_its_time_limit(quick_and_queued, bell):
    quick, _ = quick_and_queued
    request = pb.CreateJobRequest(program_id="sampler", inputs=dumps({"circuits": [bell]}), options=job_pb2.JobOptions(
        backend_name=BACKEND, max_execution_time=duration_pb2.Duration(nanos=1000)))  # a microsecond
    job = quick.stub.CreateJob(request, metadata=quick.metadata, timeout=30).job
    assert job.state in (job_pb2.JOB_STATE_QUEUED, job_pb2.JOB_STATE_RUNNING)  # not run at once: too long
    events, result = quick.history(job.id)
    assert result is None and events[-1].state_change.reason == job_pb2.JOB_REASON_TIME_LIMIT_EXCEEDED
