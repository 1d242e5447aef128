"""Every bad primitive input is refused by CreateJob: INVALID_ARGUMENT, the reason, the PUB named (ErrorInfo
metadata "pub" and a field violation on its field), and nothing stored — never a job that ends in
ERROR later with interpreter text. The PUBs are checked in the devices service's workers."""

from __future__ import annotations

import io

import grpc
import pytest
from qiskit import QuantumCircuit, qpy
from qiskit.circuit import Parameter
from qruntime.exceptions import IBMInputValueError
from qruntime.jobs.v1 import job_pb2, jobs_service_pb2
from qruntime.primitives.v1 import primitives_pb2 as pb

pytestmark = pytest.mark.slow

BELL3 = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; h q[0]; cx q[0], q[1]; c = measure q;'
BELL2 = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;'
PARAM3 = ('OPENQASM 3.0; include "stdgates.inc"; input float[64] theta; qubit[1] q; bit[1] c; rx(theta) q[0]; '
          'c[0] = measure q[0];')


def qpy_bytes(circuit: QuantumCircuit) -> bytes:
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


def sampler(*pubs: pb.SamplerPub, **options) -> pb.PrimitiveInput:
    return pb.PrimitiveInput(sampler=pb.SamplerInput(pubs=pubs, options=pb.SamplerOptions(**options)))


def estimator(*pubs: pb.EstimatorPub, **options) -> pb.PrimitiveInput:
    return pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=pubs, options=pb.EstimatorOptions(**options)))


def pauli(*terms: tuple[str, float], shape=()) -> pb.ObservablesArray:
    return pb.ObservablesArray(shape=list(shape), observables=[
        pb.SparsePauliSum(paulis=[p for p, _ in terms], coeffs=[c for _, c in terms])])


def theta(values, shape) -> pb.BindingsArray:
    return pb.BindingsArray(parameter_names=["theta"], values=pb.Tensor(shape=shape, values=values))


BAD3 = "OPENQASM 3.0; qubit[2] q; hh q;"
BAD2 = "OPENQASM 2.0; qreg q[1]; creg c[1]; foo q[0];"
GOOD_SAMPLER = pb.SamplerPub(circuit=pb.Circuit(qasm3=BELL3))
GOOD_ESTIMATOR = pb.EstimatorPub(circuit=pb.Circuit(qasm3=BELL3), observables=pauli(("ZZ", 1.0)))
UNMEASURED = QuantumCircuit(1)
UNMEASURED.h(0)

# (primitive input, reason, the PUB named or None, the field violation's field)
CASES = {
    "malformed OpenQASM 3": (sampler(GOOD_SAMPLER, pb.SamplerPub(circuit=pb.Circuit(qasm3=BAD3))),
                             "INVALID_QASM", 1, "sampler.pubs[1].circuit.qasm3"),
    "malformed OpenQASM 2": (sampler(pb.SamplerPub(circuit=pb.Circuit(qasm2=BAD2))),
                             "INVALID_QASM", 0, "sampler.pubs[0].circuit.qasm2"),
    "damaged QPY": (sampler(pb.SamplerPub(circuit=pb.Circuit(qpy=b"QISKIT\x0c\x00\x00garbage"))),
                    "INVALID_QPY", 0, "sampler.pubs[0].circuit.qpy"),
    "no circuit": (sampler(pb.SamplerPub()), "NO_CIRCUIT", 0, "sampler.pubs[0].circuit"),
    "no PUBs": (sampler(), "NO_PUBS", None, "sampler.pubs"),
    "unbound parameters": (sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=PARAM3))), "UNBOUND_PARAMETERS", 0,
                           "sampler.pubs[0].parameter_values"),
    "a parameter the circuit lacks": (
        sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=PARAM3), parameter_values=pb.BindingsArray(
            parameter_names=["theta", "phi"], values=pb.Tensor(shape=[2], values=[0.1, 0.2])))),
        "PARAMETERS_MISMATCH", 0, "sampler.pubs[0].parameter_values.parameter_names"),
    "values that do not fill their shape": (
        sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=PARAM3), parameter_values=theta([0.1, 0.2, 0.3], [2, 1]))),
        "INVALID_TENSOR", 0, "sampler.pubs[0].parameter_values.values"),
    "a value that is not finite": (
        sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=PARAM3), parameter_values=theta([float("nan")], [1]))),
        "INVALID_TENSOR", 0, "sampler.pubs[0].parameter_values.values"),
    "shapes that do not broadcast": (
        estimator(pb.EstimatorPub(circuit=pb.Circuit(qasm3=PARAM3.replace(" bit[1] c;", "").replace(
            " c[0] = measure q[0];", "")), observables=pb.ObservablesArray(shape=[2], observables=[
                pb.SparsePauliSum(paulis=["Z"], coeffs=[1]), pb.SparsePauliSum(paulis=["X"], coeffs=[1])]),
            parameter_values=theta([0.1, 0.2, 0.3], [3, 1]))),
        "SHAPES_DO_NOT_BROADCAST", 0, "estimator.pubs[0].observables"),
    "a Pauli label of other letters": (estimator(pb.EstimatorPub(circuit=pb.Circuit(qasm3=BELL3),
                                                                 observables=pauli(("ZQ", 1.0)))),
                                       "INVALID_OBSERVABLE", 0, "estimator.pubs[0].observables.observables[0]"),
    "a Pauli label of the wrong width": (estimator(GOOD_ESTIMATOR, pb.EstimatorPub(
        circuit=pb.Circuit(qasm3=BELL3), observables=pauli(("ZZZ", 1.0)))),
        "INVALID_OBSERVABLE", 1, "estimator.pubs[1].observables.observables[0]"),
    "observables without coefficients": (estimator(pb.EstimatorPub(circuit=pb.Circuit(qasm3=BELL3),
        observables=pb.ObservablesArray(observables=[pb.SparsePauliSum(paulis=["ZZ"])]))),
        "INVALID_OBSERVABLE", 0, "estimator.pubs[0].observables.observables[0]"),
    "a sampler circuit measuring nothing": (sampler(pb.SamplerPub(circuit=pb.Circuit(qpy=qpy_bytes(UNMEASURED)))),
                                            "NO_MEASUREMENTS", 0, "sampler.pubs[0].circuit"),
    "zero shots": (sampler(pb.SamplerPub(circuit=pb.Circuit(qasm2=BELL2), shots=0)), "INVALID_SHOTS", 0,
                   "sampler.pubs[0].shots"),
    "more shots than the backend takes": (sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=BELL3), shots=100_001)),
                                          "INVALID_SHOTS", 0, "sampler.pubs[0].shots"),
    "a negative precision": (estimator(pb.EstimatorPub(circuit=pb.Circuit(qasm3=BELL3), observables=pauli(("ZZ", 1)),
                                                       precision=-0.1)),
                             "INVALID_PRECISION", 0, "estimator.pubs[0].precision"),
    "a precision needing more shots than the backend takes": (
        estimator(pb.EstimatorPub(circuit=pb.Circuit(qasm3=BELL3), observables=pauli(("ZZ", 1)), precision=0.001)),
        "INVALID_PRECISION", 0, "estimator.pubs[0].precision"),
}


def job_count(service) -> int:
    return len(service.jobs(limit=None))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_at_creation_naming_the_pub(lite, case) -> None:
    primitive, reason, pub, field = CASES[case]
    program = primitive.WhichOneof("primitive")
    before = job_count(lite)
    with pytest.raises(IBMInputValueError) as info:
        lite.run(program, {}, {"backend_name": "ibmq_qasm_simulator"}, primitive_input=primitive)
    err = info.value
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == reason, str(err)
    assert err.metadata.get("pub") == (None if pub is None else str(pub))
    assert [v.field for v in err.field_violations] == [f"primitive_input.{field}"]
    assert "Traceback" not in err.message and err.metadata["backend"] == "ibmq_qasm_simulator"
    if pub is not None:
        assert f"PUB {pub}" in err.message
    assert job_count(lite) == before  # nothing stored


def test_a_circuit_outside_the_systems_isa_is_refused(standard) -> None:
    with pytest.raises(IBMInputValueError) as info:  # h is not native to ibm_lima; the PUB is named
        standard.run("sampler", {}, {"backend_name": "ibm_lima"},
                     primitive_input=sampler(GOOD_SAMPLER, pb.SamplerPub(circuit=pb.Circuit(qasm3=BELL3))))
    err = info.value
    assert err.reason == "CIRCUIT_NOT_IN_ISA" and err.metadata["pub"] == "0"
    assert err.metadata["instruction"] == "h" and "generate_preset_pass_manager" in err.message
    with pytest.raises(IBMInputValueError) as info:  # the estimator's circuit too, not its own rotations
        standard.run("estimator", {}, {"backend_name": "ibm_lima"}, primitive_input=estimator(GOOD_ESTIMATOR))
    assert info.value.reason == "CIRCUIT_NOT_IN_ISA"


def test_a_circuit_wider_than_the_backend_is_refused(standard) -> None:
    wide = QuantumCircuit(6, 6)
    wide.measure(range(6), range(6))
    with pytest.raises(IBMInputValueError) as info:
        standard.run("sampler", {}, {"backend_name": "ibm_lima"},
                     primitive_input=sampler(pb.SamplerPub(circuit=pb.Circuit(qpy=qpy_bytes(wide)))))
    assert info.value.reason == "CIRCUIT_TOO_WIDE" and info.value.metadata["pub"] == "0"


@pytest.mark.parametrize(("program", "primitive", "inputs", "reason", "field"), [
    ("estimator", sampler(GOOD_SAMPLER), {}, "PRIMITIVE_PROGRAM_MISMATCH", "primitive_input"),
    ("hello-world", sampler(GOOD_SAMPLER), {}, "PRIMITIVE_PROGRAM_MISMATCH", "primitive_input"),
    ("sampler", pb.PrimitiveInput(), {}, "PRIMITIVE_PROGRAM_MISMATCH", "primitive_input"),
    ("sampler", sampler(GOOD_SAMPLER), {"shots": 10}, "INPUTS_AND_PRIMITIVE_INPUT", "inputs"),
])
def test_typed_inputs_must_suit_the_program(lite, program, primitive, inputs, reason, field) -> None:
    with pytest.raises(IBMInputValueError) as info:
        lite.run(program, inputs, {"backend_name": "ibmq_qasm_simulator"}, primitive_input=primitive)
    assert info.value.reason == reason and [v.field for v in info.value.field_violations] == [field]


def test_a_typed_job_keeps_its_typed_inputs_and_returns_a_typed_result(lite) -> None:
    primitive = sampler(pb.SamplerPub(circuit=pb.Circuit(qasm3=PARAM3), parameter_values=theta([0.0, 3.14159], [2, 1]),
                                      shots=100), seed=3)
    job = lite.run("sampler", {}, {"backend_name": "ibmq_qasm_simulator"}, primitive_input=primitive)
    job.wait_for_final_state(timeout=60)
    transport = lite._transport
    full = transport.call(transport.jobs.GetJob, jobs_service_pb2.GetJobRequest(job_id=job.job_id,
                                                                               view=job_pb2.JOB_VIEW_FULL)).job
    assert full.primitive_input == primitive and full.inputs == ""
    basic = transport.call(transport.jobs.GetJob, jobs_service_pb2.GetJobRequest(job_id=job.job_id)).job
    assert not basic.HasField("primitive_input")
    response = transport.call(transport.jobs.GetJobResult, jobs_service_pb2.GetJobResultRequest(job_id=job.job_id))
    result = response.primitive_result.sampler
    assert response.result == "" and len(result.pub_results) == 1 and result.metadata.backend == "ibmq_qasm_simulator"
    [register] = result.pub_results[0].registers
    bits = register.bits
    assert (register.name, list(bits.shape), bits.num_shots, bits.num_bits) == ("c", [2], 100, 1)
    as_json = lite.job(job.job_id).result()  # RuntimeJob reads it as its proto3 JSON mapping
    assert as_json["sampler"]["pubResults"][0]["registers"][0]["bits"]["numShots"] == 100
    assert register.bits.packed == bytes(100) + b"\x01" * 100  # theta 0: all 0; theta pi: all 1


def test_parameters_bind_by_name_in_any_order(lite) -> None:
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(2, 2)
    circuit.rx(a, 0)
    circuit.rx(b, 1)
    circuit.measure([0, 1], [0, 1])
    values = pb.BindingsArray(parameter_names=["b", "a"], values=pb.Tensor(shape=[2], values=[3.14159265, 0.0]))
    primitive = sampler(pb.SamplerPub(circuit=pb.Circuit(qpy=qpy_bytes(circuit)), shots=50, parameter_values=values))
    job = lite.run("sampler", {}, {"backend_name": "ibmq_qasm_simulator"}, primitive_input=primitive)
    job.wait_for_final_state(timeout=60)
    transport = lite._transport
    response = transport.call(transport.jobs.GetJobResult, jobs_service_pb2.GetJobResultRequest(job_id=job.job_id))
    bits = response.primitive_result.sampler.pub_results[0].registers[0].bits
    assert bits.packed == b"\x02" * 50  # qubit 1 (b = pi) flipped: clbit 1 set in every shot


def test_a_typed_result_larger_than_one_message_comes_as_json_chunks(lite, monkeypatch) -> None:
    from qiskit import QuantumCircuit as Circuit
    from qruntime import SamplerV2

    from qruntime_jobs import servicer

    monkeypatch.setattr(servicer, "RESULT_CHUNK_BYTES", 1000)  # the suite runs in this process
    circuit = Circuit(3)
    circuit.h(range(3))
    circuit.measure_all()
    job = SamplerV2(mode=lite.backend("ibmq_qasm_simulator")).run([circuit], shots=2000)
    transport = lite._transport
    job.wait_for_final_state(timeout=60)
    first = transport.call(transport.jobs.GetJobResult, jobs_service_pb2.GetJobResultRequest(job_id=job.job_id))
    assert not first.HasField("primitive_result") and first.next_offset == 1000 and first.total_bytes > 2000
    bits = job.result()[0].data.meas
    assert bits.num_shots == 2000 and sum(bits.get_counts().values()) == 2000 and len(bits.get_counts()) == 8
