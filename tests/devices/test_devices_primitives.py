"""The primitives as a simulation worker runs them (qruntime_devices.primitives), on a real Aer adapter:
decoding, binding by name, broadcasting, the estimator's measured bases, and Qiskit's bit layout."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, qpy
from qiskit.circuit import Parameter
from qiskit.primitives.containers import BitArray
from qiskit.quantum_info import SparsePauliOp, Statevector
from qruntime.primitives.v1 import primitives_pb2 as pb

from qruntime_devices import primitives
from qruntime_devices.adapters import AerSimulatorAdapter
from qruntime_devices.emulated import EmulatedSystemAdapter
from qruntime_kit.errors import InvalidArgument


@pytest.fixture(scope="module")
def adapter() -> AerSimulatorAdapter:
    return AerSimulatorAdapter("simulator_statevector", method="statevector")


def run(prepared: primitives.Prepared, adapter, seed: int = 1) -> pb.PrimitiveResult:
    results = [adapter.execute(circuits, shots, seed, prepared.memory) for shots, circuits in prepared.batches]
    return prepared.assemble(results, adapter.name, 0.0)


def bit_array(bits: pb.BitArray) -> BitArray:
    shape = (*bits.shape, bits.num_shots, math.ceil(bits.num_bits / 8))
    return BitArray(np.frombuffer(bits.packed, dtype=np.uint8).reshape(shape), bits.num_bits)


def qpy_of(circuit: QuantumCircuit) -> bytes:
    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return buffer.getvalue()


def test_sampler_bits_follow_qiskits_layout_register_by_register(adapter) -> None:
    # 10 bits in "wide" (two bytes per shot) and 1 in "flag": clbit k of a register is bit k of its value
    wide, flag = ClassicalRegister(10, "wide"), ClassicalRegister(1, "flag")
    circuit = QuantumCircuit(QuantumRegister(10), wide, flag)
    circuit.x([0, 3, 9])
    circuit.measure(range(10), wide)
    circuit.measure(3, flag[0])
    sampler = pb.PrimitiveInput(sampler=pb.SamplerInput(pubs=[pb.SamplerPub(circuit=pb.Circuit(qpy=qpy_of(circuit)),
                                                                            shots=7)]))
    result = run(primitives.prepare(sampler, adapter), adapter).sampler.pub_results[0]
    assert [r.name for r in result.registers] == ["wide", "flag"]
    assert bit_array(result.registers[0].bits).get_counts() == {"1000001001": 7}
    assert result.registers[0].bits.packed == b"\x02\x09" * 7  # big-endian bytes: bits 9 | bits 3, 0
    assert bit_array(result.registers[1].bits).get_counts() == {"1": 7}


def test_a_simulators_shots_come_in_a_random_order_that_a_seed_repeats(adapter) -> None:
    # A simulator's bits are its counts' shots in a random order (no per-shot memory asked of it): as
    # many neighbours alike as independent shots give, where shots grouped by outcome would make nearly
    # all alike; the same seed, the same bits.
    circuit = QuantumCircuit(2, 2)
    circuit.h([0, 1])
    circuit.measure([0, 1], [0, 1])
    shots = 4000

    def sampled(seed: int) -> bytes:
        sampler = pb.PrimitiveInput(sampler=pb.SamplerInput(
            pubs=[pb.SamplerPub(circuit=pb.Circuit(qpy=qpy_of(circuit)), shots=shots)],
            options=pb.SamplerOptions(seed=seed)))
        prepared = primitives.prepare(sampler, adapter)
        assert not prepared.memory
        return run(prepared, adapter, seed=seed).sampler.pub_results[0].registers[0].bits.packed

    packed = sampled(3)
    assert packed == sampled(3) != sampled(4)
    alike = sum(a == b for a, b in zip(packed, packed[1:], strict=False))
    assert abs(alike - (shots - 1) / 4) < 5 * math.sqrt((shots - 1) * 3 / 16)  # 4 outcomes, each 1/4
    assert set(packed) == {0, 1, 2, 3}


def test_parameters_bind_by_name_and_results_keep_the_binding_shape(adapter) -> None:
    source = ('OPENQASM 3.0; include "stdgates.inc"; input float[64] a; input float[64] b; qubit[2] q; bit[2] c; '
              'rx(a) q[0]; rx(b) q[1]; c = measure q;')
    values = pb.BindingsArray(parameter_names=["b", "a"], values=pb.Tensor(
        shape=[2, 2, 2], values=[0, 0, math.pi, 0, 0, math.pi, math.pi, math.pi]))
    sampler = pb.PrimitiveInput(sampler=pb.SamplerInput(pubs=[pb.SamplerPub(
        circuit=pb.Circuit(qasm3=source), parameter_values=values, shots=5)]))
    bits = bit_array(run(primitives.prepare(sampler, adapter), adapter).sampler.pub_results[0].registers[0].bits)
    assert bits.shape == (2, 2)
    assert [[bits[i, j].get_counts() for j in range(2)] for i in range(2)] == [
        [{"00": 5}, {"10": 5}], [{"01": 5}, {"11": 5}]]  # b flips qubit 1 (the left bit), a qubit 0


def test_estimator_broadcasts_and_measures_each_basis_once(adapter) -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    observables = pb.ObservablesArray(shape=[3, 1], observables=[
        pb.SparsePauliSum(paulis=["ZZ", "ZI", "IZ"], coeffs=[1, 0.5, 0.25]),  # one basis for all three
        pb.SparsePauliSum(paulis=["XX", "YY"], coeffs=[1, -1]),
        pb.SparsePauliSum(paulis=["II"], coeffs=[2]),  # no measurement at all
    ])
    values = pb.BindingsArray(parameter_names=["theta"], values=pb.Tensor(shape=[4, 1], values=[0, 0.5, 1.5, 3]))
    estimator = pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=[pb.EstimatorPub(
        circuit=pb.Circuit(qpy=qpy_of(circuit)), observables=observables, parameter_values=values, precision=0.01)],
        options=pb.EstimatorOptions(seed=3)))
    prepared = primitives.prepare(estimator, adapter)
    assert [(shots, len(circuits)) for shots, circuits in prepared.batches] == [(10_000, 4 * (1 + 2))]
    result = run(prepared, adapter).estimator.pub_results[0]
    evs = np.array(result.evs.values).reshape(result.evs.shape)
    stds = np.array(result.stds.values).reshape(result.stds.shape)
    assert evs.shape == (3, 4) and result.metadata.circuits == 12
    for i, j in np.ndindex(3, 4):
        state = Statevector(circuit.assign_parameters([[0, 0.5, 1.5, 3][j]]))
        terms = observables.observables[i]
        pairs = zip(terms.paulis, terms.coeffs, strict=True)
        exact = sum(c * state.expectation_value(SparsePauliOp(p)).real for p, c in pairs)
        assert abs(evs[i, j] - exact) <= 5 * 0.01 * sum(abs(c) for c in terms.coeffs) + 1e-9
    assert np.all(evs[2] == 2) and np.all(stds[2] == 0)


def test_observables_of_one_binding_share_bases_and_a_repeated_term_counts_each_time(adapter) -> None:
    circuit = QuantumCircuit(2)
    circuit.x(0)
    observables = pb.ObservablesArray(shape=[3], observables=[
        pb.SparsePauliSum(paulis=["ZZ", "ZZ"], coeffs=[1, 2]),  # as written, not simplified: -1 - 2
        pb.SparsePauliSum(paulis=["IZ"], coeffs=[1]),  # read from ZZ's basis
        pb.SparsePauliSum(paulis=["XI"], coeffs=[1]),
    ])
    estimator = pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=[pb.EstimatorPub(
        circuit=pb.Circuit(qpy=qpy_of(circuit)), observables=observables)], options=pb.EstimatorOptions(seed=1)))
    prepared = primitives.prepare(estimator, adapter)
    assert len(prepared.circuits) == 2
    evs = run(prepared, adapter).estimator.pub_results[0].evs.values
    assert list(evs[:2]) == [-3, -1] and abs(evs[2]) < 0.1


def test_qasm2_circuits_and_default_shots(adapter) -> None:
    source = 'OPENQASM 2.0; include "qelib1.inc"; qreg q[1]; creg m[1]; x q[0]; measure q[0] -> m[0];'
    sampler = pb.PrimitiveInput(sampler=pb.SamplerInput(pubs=[pb.SamplerPub(circuit=pb.Circuit(qasm2=source))],
                                                        options=pb.SamplerOptions(default_shots=33)))
    [register] = run(primitives.prepare(sampler, adapter), adapter).sampler.pub_results[0].registers
    assert (register.name, register.bits.num_shots, bit_array(register.bits).get_counts()) == ("m", 33, {"1": 33})


def test_too_many_bindings_are_refused_before_binding(adapter) -> None:
    circuit = QuantumCircuit(1, 1)
    circuit.rx(Parameter("t"), 0)
    circuit.measure(0, 0)
    n = primitives.MAX_CIRCUITS + 1
    sampler = pb.PrimitiveInput(sampler=pb.SamplerInput(pubs=[pb.SamplerPub(
        circuit=pb.Circuit(qpy=qpy_of(circuit)),
        parameter_values=pb.BindingsArray(parameter_names=["t"], values=pb.Tensor(shape=[n, 1], values=[0.0] * n)))]))
    with pytest.raises(InvalidArgument) as info:
        primitives.prepare(sampler, adapter)
    assert info.value.reason == "TOO_MANY_CIRCUITS" and info.value.metadata["pub"] == "0"


def test_the_estimators_rotations_are_native_to_a_physical_system() -> None:
    from qiskit_ibm_runtime.fake_provider import FakeLimaV2

    system = EmulatedSystemAdapter(FakeLimaV2(), name="ibm_lima")
    circuit = QuantumCircuit(5)
    circuit.sx(0)
    estimator = pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=[pb.EstimatorPub(
        circuit=pb.Circuit(qpy=qpy_of(circuit)),
        observables=pb.ObservablesArray(observables=[pb.SparsePauliSum(paulis=["IIIIX", "IIIYY"], coeffs=[1, 1])]))]))
    prepared = primitives.prepare(estimator, system)  # the ISA check passes: rz, sx and measure only
    assert {i.operation.name for c in prepared.circuits for i in c.data} <= {"sx", "rz", "measure"}


def test_twirled_readout_mitigates_an_emulated_systems_readout_errors() -> None:
    from qiskit.transpiler import generate_preset_pass_manager
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    system = EmulatedSystemAdapter(FakeManilaV2(), name="ibm_manila")
    ghz = QuantumCircuit(4)
    ghz.h(0)
    for q in range(3):
        ghz.cx(q, q + 1)
    isa = generate_preset_pass_manager(optimization_level=1, target=system.target(), seed_transpiler=1).run(ghz)
    labels = [SparsePauliOp(label).apply_layout(isa.layout).paulis[0].to_label() for label in ("ZZZZ", "IIZZ")]

    def evs(level: int) -> tuple[list[float], pb.EstimatorPubResult]:
        estimator = pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=[pb.EstimatorPub(
            circuit=pb.Circuit(qpy=qpy_of(isa)), observables=pb.ObservablesArray(shape=[2], observables=[
                pb.SparsePauliSum(paulis=[label], coeffs=[1]) for label in labels]))],
            options=pb.EstimatorOptions(seed=5, resilience_level=level)))
        prepared = primitives.prepare(estimator, system)
        result = run(prepared, system, seed=5).estimator.pub_results[0]
        return list(result.evs.values), result

    raw, plain = evs(0)
    mitigated, result = evs(1)
    assert all(abs(m - 1) < abs(r - 1) - 0.05 for m, r in zip(mitigated, raw, strict=True)), (raw, mitigated)
    assert all(abs(m - 1) < 0.1 for m in mitigated)  # the gates' own errors remain
    assert result.metadata.shots == plain.metadata.shots == 4096  # the twirls share a basis' shots
    # IIZZ is read from ZZZZ's basis: one basis and its calibration for both observables.
    assert result.metadata.circuits == primitives.TWIRLS * 2
    assert all(m > r for m, r in zip(result.stds.values, plain.stds.values, strict=True))  # dividing widens them


def test_an_unknown_resilience_level_is_refused(adapter) -> None:
    estimator = pb.PrimitiveInput(estimator=pb.EstimatorInput(pubs=[pb.EstimatorPub(
        circuit=pb.Circuit(qpy=qpy_of(UNMEASURED_ONE)),
        observables=pb.ObservablesArray(observables=[pb.SparsePauliSum(paulis=["Z"], coeffs=[1])]))],
        options=pb.EstimatorOptions(resilience_level=2)))
    with pytest.raises(InvalidArgument) as info:
        primitives.prepare(estimator, adapter)
    assert info.value.reason == "INVALID_OPTIONS"
    assert [f for f, _ in info.value.field_violations] == ["estimator.options.resilience_level"]


UNMEASURED_ONE = QuantumCircuit(1)
