"""IBMRuntimeService, RuntimeJob, RuntimeBackend and RuntimeProgram against the real suite."""

from __future__ import annotations

import re

import numpy as np
import pytest
from client_support import (
    BUILTIN_PROGRAMS,
    LITE_SIMULATORS,
    STANDARD_SYSTEMS,
    WORKERS,
    busy,
    component,
    wait_until,
)
from qiskit import transpile
from qiskit.circuit import Parameter, QuantumCircuit
from qiskit.transpiler import generate_preset_pass_manager
from qruntime import (
    IBMRuntimeService,
    JobStatus,
    ProgramParameter,
    ReferenceCircuits,
    RuntimeJob,
    RuntimeOptions,
)
from qruntime.exceptions import (
    FailedPreconditionError,
    IBMInputValueError,
    IBMNotAuthorizedError,
    NotFoundError,
    RuntimeInvalidStateError,
    RuntimeJobFailureError,
    RuntimeJobTimeoutError,
)
from qruntime.jobs.v1 import job_pb2

# They start worker processes (program hosts, simulation workers): seconds each, so not in the fast set.
pytestmark = pytest.mark.slow


SOURCE = "def main(backend, user_messenger, **inputs):\n    return 1\n"
FAILING_SOURCE = "def main(backend, user_messenger, **inputs):\n    raise ValueError(f\"phase {inputs['phase']}\")\n"
LOG_LINE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 "


def other_service(suite, plan: str = "lite", name: str = "elsewhere") -> IBMRuntimeService:
    """A service object of a new instance of another account."""
    key, crn = suite.make_user(plan=plan, instance_name=name)
    return IBMRuntimeService(token=key, instance=crn, url=suite.address)


def rx_circuit() -> QuantumCircuit:
    theta = Parameter("theta")
    circuit = QuantumCircuit(1, 1, name="rx")
    circuit.rx(theta, 0)
    circuit.measure(0, 0)
    return circuit


# Jobs


def test_quick_start(service) -> None:
    job = service.run(
        program_id="hello-world", options={"backend_name": "ibmq_qasm_simulator"}, inputs={"iterations": 1}
    )
    assert isinstance(job.job_id, str) and re.fullmatch(r"[0-9a-f]{20}", job.job_id)
    assert job.job_id() == job.job_id and type(job.job_id()) is str
    assert f"job id: {job.job_id}" == f"job id: {job.job_id()}"
    assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE)
    assert job.result() == "All done!"
    assert job.status() == "DONE" and str(job.status()) == "DONE" and job.status().final
    assert job.done() and job.in_final_state() and not job.running() and not job.cancelled()
    assert job.error_message() is None
    assert job.inputs == {"iterations": 1}
    assert job.backend_name == "ibmq_qasm_simulator" and job.program_id == "hello-world"
    assert job.backend().name == "ibmq_qasm_simulator"
    assert job.creation_date is not None and job.creation_date.tzinfo is not None
    assert repr(job) == f"<RuntimeJob('{job.job_id}', program_id='hello-world', backend='ibmq_qasm_simulator')>"


def test_a_quick_jobs_result_comes_with_its_creation(service, recorder) -> None:
    # A small sampler job on a named simulator runs within CreateJob (jobs/quick.py): one call in all.
    job = service.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 100, "seed": 2},
                      {"backend_name": "ibmq_qasm_simulator"})
    counts = job.result()["counts"][0]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 100 and job.status() == "DONE"
    assert [c.method for c in recorder.log].count("CreateJob") == 1
    assert recorder.calls("WatchJob") == [] and recorder.calls("GetJobResult") == []


def test_inputs_travel_encoded_and_results_decode(service, recorder) -> None:
    circuits = [rx_circuit(), ReferenceCircuits.bell()]
    # Run circuits[0] with theta = pi: the flat parameter values of the one circuit run.
    inputs = {"circuits": circuits, "circuit_indices": [0], "parameter_values": np.array([np.pi]), "seed": 3}
    job = service.run("sampler", inputs, {"backend_name": "simulator_statevector"})
    assert job.result(timeout=30)["quasi_dists"] == [{"1": 1.0}]  # RX(pi) flips the qubit: the array arrived

    stored = service.job(job.job_id).inputs  # decoded from what the service stored
    assert stored["circuits"] == circuits
    assert isinstance(stored["parameter_values"], np.ndarray)
    assert np.array_equal(stored["parameter_values"], inputs["parameter_values"])
    assert (stored["circuit_indices"], stored["seed"]) == ([0], 3)

    assert '"QUASI_DISTS"' in job.result(decoder=lambda raw: raw.upper())

    class Decoder:  # the qiskit-ibm-runtime ResultDecoder style
        @classmethod
        def decode(cls, raw: str) -> str:
            return "decoded"

    assert job.result(decoder=Decoder) == "decoded"
    # The raw result came once, at the end of the job's event stream: no GetJobResult call at all.
    assert len(recorder.calls("WatchJob")) == 1 and recorder.calls("GetJobResult") == []
    assert service.run("sampler", {"circuits": circuits[1]}, result_decoder=Decoder).result() == "decoded"


@pytest.fixture
def one_message_of_4_kib(monkeypatch) -> None:
    """Inputs past 4 KiB do not fit one message here (the client's limit and the service's), go up in
    chunks of 3,000 bytes and come back from GetJobInputs in chunks of 2,000."""
    from qruntime import _uploads

    from qruntime_jobs import servicer, uploads, validation

    monkeypatch.setattr(_uploads, "MAX_MESSAGE_INPUTS_BYTES", 4096)
    monkeypatch.setattr(validation, "MAX_INPUTS_BYTES", 4096)
    monkeypatch.setattr(uploads, "MAX_CHUNK_BYTES", 3000)
    monkeypatch.setattr(servicer, "INPUTS_CHUNK_BYTES", 2000)


def numbered_circuits(count: int) -> list[QuantumCircuit]:
    """Circuits whose outcome is their number in 3 bits."""
    circuits = []
    for index in range(count):
        circuit = QuantumCircuit(3, 3, name=f"number-{index}")
        for bit in range(3):
            if (index % 8) >> bit & 1:
                circuit.x(bit)
        circuit.measure(range(3), range(3))
        circuits.append(circuit)
    return circuits


def test_inputs_past_one_message_go_up_in_chunks_and_come_back_whole(service, recorder, one_message_of_4_kib):
    circuits = numbered_circuits(16)
    job = service.run("sampler", {"circuits": circuits, "shots": 30}, {"backend_name": "ibmq_qasm_simulator"})
    created = recorder.calls("CreateJob")[-1].request
    assert created.inputs == "" and created.input_upload_id
    chunks = recorder.calls("UploadInputChunk")
    assert len(chunks) > 2 and all(len(c.request.data) <= 3000 for c in chunks)
    assert [c.request.offset for c in chunks] == [3000 * i for i in range(len(chunks))]
    assert job.result(timeout=60)["counts"] == [{format(i % 8, "03b"): 30} for i in range(16)]
    stored = service.job(job.job_id).inputs  # left out of the full view: read in chunks, checked, decoded
    assert stored == {"circuits": circuits, "shots": 30} and len(recorder.calls("GetJobInputs")) > 2

    calls, reads = len(recorder.log), len(recorder.calls("GetJobInputs"))
    small = service.run("hello-world", {"iterations": 1})  # usual inputs: one message, as ever
    assert [c.method for c in recorder.log[calls:]] == ["CreateJob"]
    assert small.inputs == {"iterations": 1} and len(recorder.calls("GetJobInputs")) == reads


def test_a_circuit_compiled_with_the_backends_target_runs_on_the_emulated_127_qubit_system(suite) -> None:
    with other_service(suite, plan="standard", name="eagle") as standard:
        backend = standard.backend("ibm_sherbrooke")
        isa = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=0).run(
            ReferenceCircuits.bell())
        job = standard.run("sampler", {"circuits": isa, "shots": 2000, "seed": 4}, {"backend_name": backend.name})
        quasi = job.result(timeout=120)["quasi_dists"][0]
        assert 0.85 < quasi.get("00", 0) + quasi.get("11", 0) < 1.0  # correlated, with the system's noise
        with pytest.raises(IBMInputValueError) as info:  # as on IBM's service: ISA circuits only
            standard.run("sampler", {"circuits": ReferenceCircuits.bell()}, {"backend_name": backend.name})
        assert info.value.reason == "CIRCUIT_NOT_IN_ISA" and "generate_preset_pass_manager" in info.value.message


@pytest.mark.parametrize("inputs", [None, [1, 2], "x", {1: "a"}, {"s": {1, 2}}])
def test_bad_inputs_fail_before_any_call(service, recorder, inputs) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.run("hello-world", inputs)
    assert info.value.field_violations[0].field == "inputs"
    assert recorder.calls("CreateJob") == []


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"backend_name": "x", "shots": 5}, "options.shots"),
        ({"log_level": "LOUD"}, "options.log_level"),
        ({"backend": "a", "backend_name": "b"}, "options.backend"),
        ("ibmq_qasm_simulator", "options"),
    ],
)
def test_bad_options_fail_before_any_call(service, recorder, options, field) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.run("hello-world", {"iterations": 1}, options)
    assert info.value.field_violations[0].field == field
    assert recorder.calls("CreateJob") == []


def test_options_and_request_id_reach_the_service(service) -> None:
    options = RuntimeOptions(backend_name="simulator_statevector", log_level="debug")
    job = service.run("hello-world", {"iterations": 0}, options, request_id="r-1")
    stored = service.job(job.job_id).proto
    assert (stored.options.backend_name, stored.options.log_level) == (
        "simulator_statevector",
        job_pb2.LOG_LEVEL_DEBUG,
    )
    assert stored.backend == "simulator_statevector" and stored.request_id == "r-1"
    assert service.run("hello-world", {"iterations": 0}, options, request_id="r-1").job_id == job.job_id

    job = service.run("hello-world", {"iterations": 0}, {"backend": service.backend("simulator_mps")})
    assert service.job(job.job_id).backend_name == "simulator_mps"
    job = service.run("hello-world", {"iterations": 0})  # no backend: the service picks one the plan allows
    assert job.backend_name in LITE_SIMULATORS
    job.result()


def test_server_errors_surface(service) -> None:
    with pytest.raises(NotFoundError, match=r"^NOT_FOUND \(PROGRAM_NOT_FOUND\): program 'nope' not found$") as info:
        service.run("nope", {})
    # The programs service's ErrorInfo, passed on by the jobs service.
    assert info.value.domain == "programs.qruntime" and info.value.metadata == {"program_id": "nope"}
    with pytest.raises(NotFoundError) as info:
        service.run("hello-world", {"iterations": 1}, {"backend_name": "nope"})
    assert info.value.reason == "BACKEND_NOT_FOUND"
    with pytest.raises(IBMNotAuthorizedError) as info:  # a physical system: not in a Lite plan
        service.run("hello-world", {"iterations": 1}, {"backend_name": "ibm_manila"})
    assert info.value.reason == "BACKEND_NOT_IN_PLAN"
    with pytest.raises(IBMInputValueError) as info:
        service.run("hello-world", {"iterations": "many", "colour": 1})
    assert info.value.reason == "INVALID_INPUTS"
    assert {v.field for v in info.value.field_violations} == {"inputs.iterations", "inputs.colour"}
    with pytest.raises(NotFoundError) as info:
        service.job("0123456789abcdef0123")
    assert info.value.reason == "JOB_NOT_FOUND"
    assert service.jobs() == []  # nothing was created


def test_failed_jobs(service) -> None:
    job = service.run("sampler", {"circuits": ReferenceCircuits.bell(), "circuit_indices": [5]})
    with pytest.raises(RuntimeJobFailureError) as info:
        job.result(timeout=30)
    assert (info.value.job_id, info.value.reason) == (job.job_id, "INVALID_INPUT")
    assert "circuit_indices" in str(info.value)
    assert "circuit_indices" in job.error_message()
    assert job.status() is JobStatus.ERROR and job.in_final_state() and not job.done()

    # An uploaded program that raises: its job ends PROGRAM_ERROR with the exception, its inputs kept.
    program_id = service.upload_program(
        FAILING_SOURCE,
        {"name": "echo", "max_execution_time": 60,
         "parameters": [{"name": "circuits", "type": "circuits"}, {"name": "weights", "type": "array"},
                        {"name": "phase"}]},
    )
    inputs = {"circuits": ReferenceCircuits.bell(), "weights": np.array([0.5, 0.5]), "phase": 1j}
    job = service.run(program_id, inputs)
    assert job.wait_for_final_state(timeout=60) is JobStatus.ERROR
    with pytest.raises(RuntimeJobFailureError) as info:
        job.result()
    assert info.value.reason == "PROGRAM_ERROR" and "ValueError: phase 1j" in job.error_message()
    stored = service.job(job.job_id).inputs
    assert stored["circuits"] == inputs["circuits"] and stored["phase"] == 1j
    assert np.array_equal(stored["weights"], inputs["weights"])


def test_a_running_job_is_cancelled(suite, service) -> None:
    with busy(suite, "ibmq_qasm_simulator"):
        job = service.run("hello-world", {"iterations": 1}, {"backend_name": "ibmq_qasm_simulator"})
        wait_until(job.running, what="job RUNNING")  # its one circuit waits for the busy backend
        assert job.error_message() is None
        job.cancel()
        assert job.cancelled() and job.status() is JobStatus.CANCELLED and job.in_final_state()
        with pytest.raises(RuntimeInvalidStateError):
            job.result()
        with pytest.raises(FailedPreconditionError) as info:
            job.cancel()
        assert info.value.reason == "JOB_ALREADY_FINAL"
    assert job.status() is JobStatus.CANCELLED  # it stays so once the backend is free


def test_a_queued_job_is_cancelled(suite, service) -> None:
    done = service.run("hello-world", {"iterations": 0})
    done.result()
    with pytest.raises(FailedPreconditionError) as info:
        done.cancel()
    assert info.value.reason == "JOB_ALREADY_FINAL"
    assert done.status() is JobStatus.DONE
    with busy(suite, "simulator_mps"):
        # Fill every worker with a job waiting for the busy backend: the next one stays QUEUED.
        running = [service.run("hello-world", {"iterations": 1}, {"backend_name": "simulator_mps"})
                   for _ in range(WORKERS)]
        wait_until(lambda: all(j.running() for j in running), what="workers busy")
        queued = service.run("hello-world", {"iterations": 1})
        assert queued.status() is JobStatus.QUEUED
        queued.cancel()
        assert queued.status() is JobStatus.CANCELLED
        for job in running:
            job.cancel()


def test_result_timeout(suite, service, recorder, monkeypatch) -> None:
    with busy(suite, "ibmq_qasm_simulator"):
        job = service.run("hello-world", {"iterations": 1}, {"backend_name": "ibmq_qasm_simulator"})
        with pytest.raises(RuntimeJobTimeoutError) as info:
            job.result(timeout=0.2)
        assert isinstance(info.value, TimeoutError) and not job.status().final

        checks, watches = len(recorder.calls("GetJob")), len(recorder.calls("WatchJob"))
        with pytest.raises(RuntimeJobTimeoutError):
            job.wait_for_final_state(timeout=0.5)
        assert len(recorder.calls("GetJob")) == checks  # no polling: it follows the job's event stream
        assert len(recorder.calls("WatchJob")) == watches + 1
        job.cancel()


def test_logs_and_interim_results(service) -> None:
    job = service.run("hello-world", {"iterations": 2}, {"backend_name": "simulator_statevector"})
    assert job.result(timeout=30) == "All done!"
    lines = job.logs().splitlines()
    assert [re.sub(LOG_LINE, "", line) for line in lines] == [
        "INFO Hello, World!",
        "INFO iteration 1 of 2 done",
        "INFO iteration 2 of 2 done",
    ]
    assert all(re.match(LOG_LINE, line) for line in lines)
    interim = job.interim_results()
    assert [r["iteration"] for r in interim] == [0, 1]
    assert all(sum(r["counts"].values()) == 1024 for r in interim)
    assert job.interim_results(decoder=len) == [len(r) for r in job.interim_results(decoder=lambda raw: raw)]


def test_interim_results_stream_to_a_callback_without_polling(service, recorder) -> None:
    heard = []
    job = service.run("hello-world", {"iterations": 3}, {"backend_name": "simulator_statevector"},
                      callback=lambda job_id, result: heard.append((job_id, result["iteration"])))
    assert job.result(timeout=60) == "All done!"
    wait_until(lambda: len(heard) == 3, what="every interim result heard")
    assert heard == [(job.job_id, 0), (job.job_id, 1), (job.job_id, 2)]
    assert recorder.calls("GetJob") == [] and len(recorder.calls("WatchJob")) == 2  # the callback's, the wait's
    with pytest.raises(RuntimeInvalidStateError):
        job.stream_results(print)  # it has ended


def test_streaming_can_be_cancelled_and_events_resume_where_asked(suite, service) -> None:
    with busy(suite, "simulator_mps"):
        job = service.run("hello-world", {"iterations": 1}, {"backend_name": "simulator_mps"})
        heard = []
        job.stream_results(lambda job_id, result: heard.append(result))
        job.cancel_result_streaming()
        job.cancel()
    history = list(job.events())
    assert [e.sequence for e in history if not e.HasField("queue_position")][0] == 1
    assert history[-1].state_change.state == job_pb2.JOB_STATE_CANCELLED
    assert [e.sequence for e in job.events(after=history[0].sequence)] == [e.sequence for e in history[1:]]
    assert job.status() is JobStatus.CANCELLED


def test_a_large_result_is_reassembled_from_chunks(service, monkeypatch) -> None:
    from qruntime_jobs import servicer

    monkeypatch.setattr(servicer, "RESULT_CHUNK_BYTES", 64)
    job = service.run("sampler", {"circuits": ReferenceCircuits.bell(), "shots": 100})
    result = job.result(timeout=60)
    assert sum(result["counts"][0].values()) == 100
    assert job.tags == [] and job.update_tags(["b", "a", "b"]) == ["a", "b"]
    metrics = job.metrics()
    assert metrics["usage"]["seconds"] > 0 and metrics["timestamps"]["end"] >= metrics["timestamps"]["create"]


def test_jobs_listing(suite, service) -> None:
    def waiting() -> RuntimeJob:  # a job whose circuit waits for the busy backend
        return service.run("hello-world", {"iterations": 1}, {"backend_name": "simulator_mps"})

    def done() -> RuntimeJob:  # on the free simulator
        job = service.run("sampler", {"circuits": ReferenceCircuits.bell()}, {"backend_name": "ibmq_qasm_simulator"})
        job.result(timeout=30)
        return job

    with busy(suite, "simulator_mps"):
        created = [waiting(), done(), waiting(), done(), waiting(), waiting()]  # 4 RUNNING: every worker
        wait_until(lambda: all(created[i].running() for i in (0, 2, 4, 5)), what="workers busy")
        created += [waiting(), waiting()]  # no worker free: QUEUED
        assert [j.status() for j in created[6:]] == [JobStatus.QUEUED] * 2
        ids = [j.job_id for j in created]
        assert [j.job_id for j in service.jobs()] == ids[::-1]
        assert [j.job_id for j in service.jobs(limit=3)] == ids[:4:-1]
        assert [j.job_id for j in service.jobs(limit=None)] == ids[::-1]
        assert [j.job_id for j in service.jobs(program_id="sampler")] == [ids[3], ids[1]]
        # Pending: QUEUED and RUNNING ones, listed by state and merged newest first.
        pending = [ids[i] for i in (7, 6, 5, 4, 2, 0)]
        assert [j.job_id for j in service.jobs(pending=True)] == pending
        assert [j.job_id for j in service.jobs(pending=True, limit=3)] == pending[:3]
        assert [j.job_id for j in service.jobs(pending=False)] == [ids[3], ids[1]]
        assert [j.job_id for j in service.jobs(program_id="hello-world", pending=False)] == []
        assert service.jobs(limit=0) == []
        with pytest.raises(IBMInputValueError):
            service.jobs(limit=-1)
        with other_service(suite) as other:
            assert other.jobs() == []
        for job in created[::-1]:
            if not job.status().final:
                job.cancel()


def test_delete_job(service) -> None:
    job = service.run("hello-world", {"iterations": 0})
    job.result(timeout=30)
    service.delete_job(job.job_id)
    with pytest.raises(NotFoundError) as info:
        service.job(job.job_id)
    assert info.value.reason == "JOB_NOT_FOUND"
    with pytest.raises(NotFoundError):
        service.delete_job(job.job_id)
    assert service.jobs() == []


def test_a_job_that_has_not_ended_is_not_deleted(suite, service) -> None:
    with busy(suite, "ibmq_qasm_simulator"):
        job = service.run("hello-world", {"iterations": 1}, {"backend_name": "ibmq_qasm_simulator"})
        with pytest.raises(FailedPreconditionError) as info:
            service.delete_job(job.job_id)
        assert info.value.reason == "JOB_NOT_FINAL"
        job.cancel()
    service.delete_job(job.job_id)


# Backends


def test_backends(service) -> None:
    backends = service.backends()
    assert [b.name for b in backends] == LITE_SIMULATORS  # a Lite plan sees the simulators only
    assert "ibmq_qasm_simulator" in str(backends)
    assert repr(backends[0]) == "<RuntimeBackend('ibmq_qasm_simulator')>"
    assert service.backends(simulator=False) == []
    assert [b.name for b in service.backends(operational=True)] == LITE_SIMULATORS
    assert service.backends(operational=False) == []
    assert [b.name for b in service.backends(min_num_qubits=31)] == [
        "simulator_extended_stabilizer", "simulator_mps", "simulator_stabilizer"
    ]
    assert [b.name for b in service.backends(name="simulator_mps")] == ["simulator_mps"]
    assert service.backends(name="ibm_manila") == []
    with pytest.raises(NotFoundError):
        service.least_busy(min_num_qubits=100_000)
    with pytest.raises(NotFoundError):
        service.least_busy(simulator=False)


def test_backend_details(suite, service) -> None:
    simulator = service.backend("ibmq_qasm_simulator")
    # The qubits whose state vector fits in the suite's simulation memory (4 GiB).
    assert (simulator.simulator, simulator.num_qubits, simulator.coupling_map) == (True, 28, None)
    config = simulator.configuration()
    assert config.max_execution_time == 3 * 3600 and "cx" in config.basis_gates
    status = simulator.status()
    assert (status.backend_name, status.operational, status.status_msg) == ("ibmq_qasm_simulator", True, "active")
    # Runs of earlier tests' jobs may still be ending; the count goes back to 0 when they have.
    wait_until(lambda: simulator.status().pending_jobs == 0, what="no runs pending")
    with pytest.raises(NotFoundError) as info:
        service.backend("nope")
    assert info.value.reason == "BACKEND_NOT_FOUND"

    with other_service(suite, plan="standard") as standard:  # a Standard plan sees the systems
        assert [b.name for b in standard.backends()] == STANDARD_SYSTEMS
        assert [b.name for b in standard.backends(simulator=False)] == STANDARD_SYSTEMS
        manila = standard.backend("ibm_manila")
        assert (manila.simulator, manila.num_qubits) == (False, 5)
        edges = manila.coupling_map.get_edges()
        assert (0, 1) in edges and (0, 4) not in edges
        assert manila.target["cx"][(0, 1)].error == pytest.approx(manila.properties().gate_error("cx", [0, 1]))
        assert manila.target.qubit_properties[0].t1 == pytest.approx(manila.properties().t1(0))
        sherbrooke = standard.backend("ibm_sherbrooke")
        assert "emulated" in sherbrooke.description and sherbrooke.num_qubits == 127
        assert transpile(ReferenceCircuits.bell(), backend=sherbrooke).count_ops().keys() <= {"ecr", "rz", "sx", "x",
                                                                                                "measure", "barrier"}
        config = manila.configuration()
        assert config.max_execution_time == 8 * 3600 and config.basis_gates == ["cx", "id", "rz", "sx", "x"]
        props = manila.properties()
        assert 1e-5 < props.t1(0) < 1e-3 and 0 < props.gate_error("cx", [0, 1]) < 0.1
        with pytest.raises(KeyError):
            props.t1(5)
        with pytest.raises(IBMNotAuthorizedError) as info:
            standard.backend("ibmq_qasm_simulator")
        assert info.value.reason == "BACKEND_NOT_IN_PLAN"


def test_least_busy(start_suite) -> None:
    suite = start_suite("programs", "devices", "jobs", workers=6)  # its own: the test fills queues
    key, crn = suite.make_user(instance_name="busy")
    devices = component(suite, "devices")
    with IBMRuntimeService(token=key, instance=crn, url=suite.address) as service, \
            busy(suite, "ibmq_qasm_simulator"), busy(suite, "simulator_mps"):
        waiting = [service.run("hello-world", {"iterations": 1}, {"backend_name": name})
                   for name in ("ibmq_qasm_simulator", "ibmq_qasm_simulator", "simulator_mps", "simulator_mps")]
        wait_until(lambda: [b.status().pending_jobs for b in service.backends()] == [2, 0, 2, 0, 0],
                   what="runs waiting")
        assert service.least_busy().name == "simulator_extended_stabilizer"
        assert service.least_busy(min_num_qubits=64).name == "simulator_stabilizer"

        # Jobs that name no backend go to the idle one that runs any circuit (while it has fewer jobs queued
        # and runs pending than the two busy ones), and say why.
        placed = [service.run("hello-world", {"iterations": 1}) for _ in range(2)]
        assert {job.backend_name for job in placed} == {"simulator_statevector"}
        first_line = re.sub(LOG_LINE, "", placed[0].logs().splitlines()[0])
        assert first_line.startswith(f"INFO backend {placed[0].backend_name}: least busy of 3 operational backends")

        # An operator takes a free one out of service.
        suite.loop.call_soon_threadsafe(devices.queues.set_operational, "simulator_extended_stabilizer", False)
        wait_until(lambda: not service.backend("simulator_extended_stabilizer").status().operational)
        assert [b.name for b in service.backends(operational=False)] == ["simulator_extended_stabilizer"]
        assert service.backend("simulator_extended_stabilizer").status().status_msg == "maintenance"
        assert service.least_busy().name == "simulator_stabilizer"
        for job in placed:
            job.result(timeout=120)
        for job in waiting:
            job.cancel()


# Programs


def test_programs_listing(start_suite, monkeypatch) -> None:
    from qruntime import _service

    suite = start_suite("programs")  # its own: public programs of other tests would show
    key, crn = suite.make_user(instance_name="lister")
    with IBMRuntimeService(token=key, instance=crn, url=suite.address) as service, \
            other_service(suite) as other:
        assert [p.program_id for p in service.programs()] == BUILTIN_PROGRAMS
        hidden = other.upload_program(SOURCE, {"name": "hidden", "max_execution_time": 60})
        shared = other.upload_program(SOURCE, {"name": "shared", "max_execution_time": 60, "is_public": True})
        # More than one page (pages of 4 here, of the service's largest, 200, by default): the client follows them.
        monkeypatch.setattr(_service, "_MAX_PAGE_SIZE", 4)
        mine = [service.upload_program(SOURCE, {"name": f"p{i:03}", "max_execution_time": 60}) for i in range(10)]
        listed = [p.program_id for p in service.programs()]
        assert listed == sorted([*BUILTIN_PROGRAMS, *mine, shared]) and hidden not in listed
        assert [p.program_id for p in service.programs(limit=3)] == listed[:3]
        assert service.programs(limit=0) == []
        with pytest.raises(IBMInputValueError):
            service.programs(limit=-1)
        assert all(p.data == "" for p in service.programs(limit=5))  # listings leave the source out


def test_builtin_program(service) -> None:
    program = service.program("hello-world")
    assert (program.program_id, program.name, program.runtime, program.is_public) == (
        "hello-world", "hello-world", "BUILTIN", True)
    assert program.inputs[0] == ProgramParameter("iterations", "integer", True, "How many times to run the circuit.")
    assert program.max_execution_time == 300 and program.owner_instance == "" and program.version == 1
    assert "hello-world:" in str(program) and repr(program) == "<RuntimeProgram('hello-world')>"
    assert "  Version: 1" in str(program)
    with pytest.raises(NotFoundError):
        service.program("nope")


def test_upload_program_translates_metadata(service) -> None:
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
    program_id = service.upload_program(SOURCE, metadata)
    assert re.fullmatch(r"my-prog-[a-z0-9]{6}", program_id)
    program = service.program(program_id)
    assert (program.name, program.description, program.max_execution_time) == ("my-prog", "does things", 300)
    assert program.is_public and program.runtime == "PYTHON"
    assert program.inputs == [
        ProgramParameter("circuits", "circuits", True, "what to run"),
        ProgramParameter("shots", "integer", False, ""),
    ]
    assert program.data == SOURCE and program.owner_instance == service.instance
    assert program.creation_date is not None and program.update_date is not None
    program_id = service.upload_program(SOURCE, {"name": "private", "max_execution_time": 300.0})
    assert not service.program(program_id).is_public and service.program(program_id).max_execution_time == 300


@pytest.mark.parametrize(
    ("data", "metadata", "field"),
    [
        ("", {"name": "x"}, "data"),
        ("code", {"description": "no name"}, "metadata.name"),
        ("code", {"name": "x", "spec": {}}, "metadata.spec"),
        ("code", {"name": "x", "max_execution_time": -1}, "metadata.max_execution_time"),
        ("code", {"name": "x", "max_execution_time": 1.5}, "metadata.max_execution_time"),
        ("code", {"name": "x", "max_execution_time": 299.999}, "metadata.max_execution_time"),
        ("code", {"name": "x", "parameters": [{"name": "a", "type": "qubits"}]}, "metadata.parameters[0].type"),
    ],
)
def test_upload_program_refuses_bad_metadata_before_any_call(service, recorder, data, metadata, field) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.upload_program(data, metadata)
    assert [v.field for v in info.value.field_violations] == [field]
    assert recorder.calls("CreateProgram") == []


def test_upload_program_refused_by_the_service(service) -> None:
    with pytest.raises(IBMInputValueError) as info:
        service.upload_program("def main(:\n", {"name": "Not A Name", "max_execution_time": 9 * 3600})
    assert info.value.reason == "INVALID_PROGRAM"
    assert sorted(v.field for v in info.value.field_violations) == [
        "program.data", "program.max_execution_time", "program.name"]
    assert [p for p in service.programs() if p.owner_instance == service.instance] == []


def test_update_program(suite, service, recorder) -> None:
    program_id = service.upload_program(SOURCE, {"name": "my-prog", "max_execution_time": 60, "is_public": True})
    assert service.program(program_id).version == 1
    program = service.update_program(program_id, metadata={"description": "new"}, is_public=False)
    assert list(recorder.calls("UpdateProgram")[-1].request.update_mask.paths) == ["description", "visibility"]
    assert program.description == "new" and not program.is_public and program.version == 2
    assert service.program(program_id).description == "new"

    program = service.update_program(program_id, metadata={"name": "renamed", "max_execution_time": 120})
    assert (program.program_id, program.name, program.max_execution_time) == (program_id, "renamed", 120)
    assert service.program(program_id).name == "renamed"

    source = "def main(backend, user_messenger, x):\n    return x\n"
    program = service.update_program(program_id, source, {"parameters": [("x", "integer", True)]})
    assert program.data == source and program.inputs == [ProgramParameter("x", "integer", True, "")]

    calls = len(recorder.calls("UpdateProgram"))
    for metadata in ({"max_execution_time": 2.5}, {"name": ""}, {"colour": "blue"}):
        with pytest.raises(IBMInputValueError):
            service.update_program(program_id, metadata=metadata)
    with pytest.raises(IBMInputValueError):
        service.update_program(program_id)
    assert len(recorder.calls("UpdateProgram")) == calls  # none of those was sent

    with pytest.raises(IBMInputValueError) as info:  # refused by the service: a name is 1-63 of [a-z0-9-]
        service.update_program(program_id, metadata={"name": "Renamed"})
    assert [v.field for v in info.value.field_violations] == ["program.name"]
    with pytest.raises(IBMNotAuthorizedError) as info:
        service.update_program("hello-world", metadata={"description": "mine"})
    assert info.value.reason == "BUILTIN_PROGRAM_READ_ONLY"
    with other_service(suite) as other, pytest.raises(NotFoundError):
        other.update_program(program_id, metadata={"description": "theirs"})
    assert service.program(program_id).name == "renamed"


def test_delete_program(suite, service) -> None:
    program_id = service.upload_program(SOURCE, {"name": "doomed", "max_execution_time": 60})
    with other_service(suite) as other, pytest.raises(NotFoundError):
        other.delete_program(program_id)
    service.delete_program(program_id)
    with pytest.raises(NotFoundError) as info:
        service.program(program_id)
    assert info.value.reason == "PROGRAM_NOT_FOUND"
    with pytest.raises(NotFoundError):
        service.delete_program(program_id)
    with pytest.raises(IBMNotAuthorizedError):
        service.delete_program("sampler")
