"""IBMRuntimeService, RuntimeJob, RuntimeBackend and RuntimeProgram against the in-process fakes."""

from __future__ import annotations

import numpy as np
import pytest
from qruntime import JobStatus, ReferenceCircuits, RuntimeOptions
from qruntime.exceptions import (
    IBMInputValueError,
    NotFoundError,
    RuntimeInvalidStateError,
    RuntimeJobFailureError,
    RuntimeJobTimeoutError,
)
from qruntime.jobs.v1 import job_pb2
from qruntime.programs.v1 import program_pb2


def test_quick_start(fake, service) -> None:
    job = service.run(
        program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"}, inputs={"iterations": 1}
    )
    assert isinstance(job.job_id, str) and job.job_id == "job-0"
    assert job.job_id() == "job-0" and type(job.job_id()) is str
    assert f"job id: {job.job_id}" == "job id: job-0"
    assert job.status() is JobStatus.RUNNING
    assert job.result() == "All done!"
    assert job.status() == "DONE" and str(job.status()) == "DONE" and job.status().final
    assert job.inputs == {"iterations": 1}
    assert job.backend_name == "ibmq_qasm_simulator" and job.program_id == "hello-world"
    assert job.creation_date is not None and job.creation_date.tzinfo is not None
    assert repr(job) == "<RuntimeJob('job-0', program_id='hello-world', backend='ibmq_qasm_simulator')>"


def test_inputs_travel_encoded(fake, service) -> None:
    inputs = {"circuits": ReferenceCircuits.bell(), "weights": np.array([0.5, 0.5]), "phase": 1j}
    job = service.run("echo", inputs)
    result = job.result(timeout=10)  # the fake echoes the inputs as the result
    assert result["circuits"] == inputs["circuits"]
    assert np.array_equal(result["weights"], inputs["weights"]) and result["phase"] == 1j
    assert job.result(decoder=lambda raw: raw.upper()).startswith('{"CIRCUITS"')

    class Decoder:  # the qiskit-ibm-runtime ResultDecoder style
        @classmethod
        def decode(cls, raw: str) -> str:
            return "decoded"

    assert job.result(decoder=Decoder) == "decoded"
    assert len(fake.calls("GetJobResult")) == 1  # the raw result is fetched once


@pytest.mark.parametrize("inputs", [None, [1, 2], "x", {1: "a"}, {"s": {1, 2}}])
def test_bad_inputs_fail_before_any_call(fake, service, inputs) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.run("hello-world", inputs)
    assert info.value.field_violations[0].field == "inputs"
    assert fake.calls("CreateJob") == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"backend_name": "x", "shots": 5}, "options.shots"),
        ({"log_level": "LOUD"}, "options.log_level"),
        ({"backend": "a", "backend_name": "b"}, "options.backend"),
        ("ibmq_qasm_simulator", "options"),
    ],
)
def test_bad_options_fail_before_any_call(fake, service, options, field) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.run("hello-world", {}, options)
    assert info.value.field_violations[0].field == field
    assert fake.calls("CreateJob") == []


def test_options_reach_the_service(fake, service) -> None:
    job = service.run(
        "hello-world", {}, RuntimeOptions(backend_name="fake_lagos", log_level="debug"), request_id="r-1"
    )
    assert fake.jobs.jobs[job.job_id].options == job_pb2.JobOptions(
        backend_name="fake_lagos", log_level=job_pb2.LOG_LEVEL_DEBUG
    )
    assert fake.jobs.jobs[job.job_id].request_id == "r-1"
    job = service.run("hello-world", {}, {"backend": service.backend("ibmq_qasm_simulator")})
    assert fake.jobs.jobs[job.job_id].options.backend_name == "ibmq_qasm_simulator"


def test_server_errors_surface(service) -> None:
    with pytest.raises(NotFoundError, match=r"^NOT_FOUND \(PROGRAM_NOT_FOUND\): program 'nope' not found$"):
        service.run("nope", {})


def test_failed_job(service) -> None:
    job = service.run("fails", {})
    with pytest.raises(RuntimeJobFailureError) as info:
        job.result()
    assert (info.value.job_id, info.value.reason) == ("job-0", "PROGRAM_ERROR")
    assert "ZeroDivisionError" in str(info.value)
    assert job.error_message() == "ZeroDivisionError: division by zero"
    assert job.in_final_state() and not job.done()


def test_cancelled_job(service) -> None:
    job = service.run("slow", {})
    assert job.error_message() is None
    job.cancel()
    assert job.cancelled()
    with pytest.raises(RuntimeInvalidStateError):
        job.result()


def test_result_timeout(fake, service) -> None:
    job = service.run("slow", {})
    with pytest.raises(RuntimeJobTimeoutError) as info:
        job.result(timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    # Backoff from 10 ms by x1.5: about 7 checks fit in 0.2 s, not hundreds.
    assert 3 <= len(fake.calls("GetJob")) <= 12


def test_logs_and_interim_results_follow_pages(service) -> None:
    job = service.run("hello-world", {})
    assert job.logs().splitlines() == [
        "2023-11-14T22:13:20.000+00:00 INFO start",
        "2023-11-14T22:13:21.000+00:00 WARNING odd",
        "2023-11-14T22:13:22.000+00:00 INFO end",
    ]
    assert job.interim_results() == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_jobs_listing(fake, service) -> None:
    created = [service.run("hello-world" if i % 2 else "slow", {}) for i in range(5)]
    created[1].result()
    created[3].result()
    assert [j.job_id for j in service.jobs()] == ["job-4", "job-3", "job-2", "job-1", "job-0"]
    assert [j.job_id for j in service.jobs(limit=3)] == ["job-4", "job-3", "job-2"]
    assert [j.job_id for j in service.jobs(program_id="hello-world")] == ["job-3", "job-1"]
    assert [j.job_id for j in service.jobs(pending=True)] == ["job-4", "job-2", "job-0"]
    assert [j.job_id for j in service.jobs(pending=False)] == ["job-3", "job-1"]
    assert service.jobs(limit=0) == []
    with pytest.raises(IBMInputValueError):
        service.jobs(limit=-1)


def test_backends(service) -> None:
    backends = service.backends()
    assert [b.name for b in backends] == [
        "fake_lagos",
        "ibmq_qasm_simulator",
        "simulator_maintenance",
        "simulator_statevector",
    ]
    assert "ibmq_qasm_simulator" in str(backends)
    assert repr(backends[1]) == "<RuntimeBackend('ibmq_qasm_simulator')>"
    assert [b.name for b in service.backends(simulator=False)] == ["fake_lagos"]
    assert [b.name for b in service.backends(operational=False)] == ["simulator_maintenance"]
    assert [b.name for b in service.backends(min_num_qubits=33)] == ["simulator_maintenance"]
    assert [b.name for b in service.backends(name="fake_lagos")] == ["fake_lagos"]
    assert service.least_busy().name == "simulator_statevector"
    assert service.least_busy(simulator=False).name == "fake_lagos"
    with pytest.raises(NotFoundError):
        service.least_busy(min_num_qubits=1000)


def test_backend_details(service) -> None:
    lagos = service.backend("fake_lagos")
    assert (lagos.simulator, lagos.num_qubits, lagos.coupling_map) == (False, 7, [[0, 1]])
    assert service.backend("ibmq_qasm_simulator").coupling_map is None
    status = lagos.status()
    assert (status.operational, status.pending_jobs, status.status_msg) == (True, 3, "active")
    config = lagos.configuration()
    assert config.max_execution_time == 10800 and config.basis_gates == ["cx", "rz", "sx", "x"]
    props = lagos.properties()
    assert props.t1(0) == 1e-4 and props.gate_error("cx", [0, 1]) == 0.01
    with pytest.raises(KeyError):
        props.t1(5)
    with pytest.raises(NotFoundError):
        service.backend("nope")


def test_programs_listing(service) -> None:
    assert [p.program_id for p in service.programs()] == ["p0", "p1", "p2", "p3", "p4"]
    assert [p.program_id for p in service.programs(limit=3)] == ["p0", "p1", "p2"]


def test_upload_program_translates_metadata(fake, service) -> None:
    metadata = {
        "name": "my-prog",
        "description": "does things",
        "max_execution_time": 300,
        "parameters": [
            {"name": "circuits", "type": "circuits", "required": True, "description": "what to run"},
            {"name": "shots", "type": "integer"},
        ],
        "is_public": True,
    }
    assert (
        service.upload_program("def main(backend, user_messenger):\n    return 1\n", metadata)
        == "my-prog-abc123"
    )
    sent = fake.programs.created[0]
    assert sent.max_execution_time.seconds == 300
    assert (
        sent.visibility == program_pb2.VISIBILITY_PUBLIC
        and sent.runtime == program_pb2.PROGRAM_RUNTIME_PYTHON
    )
    assert [(i.name, i.type, i.required) for i in sent.inputs] == [
        ("circuits", program_pb2.INPUT_TYPE_CIRCUITS, True),
        ("shots", program_pb2.INPUT_TYPE_INTEGER, False),
    ]


@pytest.mark.parametrize(
    ("data", "metadata"),
    [
        ("", {"name": "x"}),
        ("code", {"description": "no name"}),
        ("code", {"name": "x", "spec": {}}),
        ("code", {"name": "x", "max_execution_time": -1}),
        ("code", {"name": "x", "parameters": [{"name": "a", "type": "qubits"}]}),
    ],
)
def test_upload_program_refuses_bad_metadata(fake, service, data, metadata) -> None:
    with pytest.raises(IBMInputValueError):
        service.upload_program(data, metadata)
    assert fake.programs.created == []


def test_update_program_sends_a_mask_of_what_changed(fake, service) -> None:
    program = service.update_program("my-prog-abc123", metadata={"description": "new"}, is_public=False)
    request = fake.programs.updates[0]
    assert list(request.update_mask.paths) == ["description", "visibility"]
    assert program.description == "new" and not program.is_public
    with pytest.raises(IBMInputValueError):
        service.update_program("my-prog-abc123")
