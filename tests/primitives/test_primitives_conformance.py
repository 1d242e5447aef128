"""Conformance: qruntime's SamplerV2 and EstimatorV2 against Qiskit's reference primitives.

PUBs with broadcasting parameters, several classical registers, a mid-circuit measurement, arrays of
observables and several PUBs per job run through qruntime (real suite, real Aer workers) and through
Qiskit's StatevectorSampler / StatevectorEstimator, and must agree within sampling error:

- Sampler: for every (PUB, binding, register), a chi-square test of homogeneity between our counts and
  the reference's counts (both samples) at significance ALPHA. With at most 60 comparisons per test
  the chance that a correct implementation fails a test is below 60 * ALPHA = 6e-5 (Bonferroni).
- Estimator: the reference values are exact; each of our values must lie within Z standard
  deviations of it, the deviation bounded from the exact term expectations as
  sum_i |c_i| sqrt(1 - <P_i>^2) / sqrt(shots) (terms measured together may be correlated; this bound
  holds whatever their correlation). Under the normal approximation (4096 shots) a false failure per
  value is below 6e-7; with at most 100 values per test, below 6e-5.
- On an emulated physical system (ibm_manila), after transpiling with the backend's target, the noisy
  sampler is compared by the same two-sample test with qiskit-ibm-runtime's local testing mode on the
  same calibration snapshot (FakeManilaV2: the same noise model). The estimator there is compared with
  the exact ideal values allowing the system's gate noise, which biases any measurement, with its
  readout errors mitigated (resilience_level 1): NOISE_PER_QUBIT per qubit each term acts on, times
  |coefficient|. That is a check of the emulated path (layout, ISA rotations, noise, mitigation), not
  a test within sampling error; without the mitigation the same values miss it (tested too).
"""

from __future__ import annotations

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.primitives import StatevectorEstimator, StatevectorSampler
from qiskit.primitives.containers import ObservablesArray
from qiskit.quantum_info import SparsePauliOp, Statevector
from qiskit.transpiler import generate_preset_pass_manager
from qruntime import EstimatorV2, SamplerV2
from scipy.stats import chi2_contingency

pytestmark = pytest.mark.slow

ALPHA = 1e-6
Z = 5.0
SHOTS = 4096
NOISE_PER_QUBIT = 0.05  # bias allowed per qubit a Pauli term acts on, on the emulated system, readout mitigated


def parametrised() -> QuantumCircuit:
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(2)
    circuit.ry(a, 0)
    circuit.cx(0, 1)
    circuit.rx(b, 1)
    circuit.measure_all()
    return circuit


def two_registers() -> QuantumCircuit:
    q, left, right = QuantumRegister(3, "q"), ClassicalRegister(1, "left"), ClassicalRegister(2, "right")
    circuit = QuantumCircuit(q, left, right)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.ry(0.7, 2)
    circuit.measure(0, left[0])
    circuit.measure([1, 2], right)
    return circuit


def mid_circuit() -> tuple[QuantumCircuit, QuantumCircuit]:
    """A circuit measuring qubit 0 mid-way, and its deferred-measurement twin (each mid-circuit
    measurement a CNOT onto a fresh qubit measured at the end: the same distribution), which
    StatevectorSampler can run."""
    m = ClassicalRegister(3, "m")
    circuit = QuantumCircuit(QuantumRegister(2, "q"), m)
    circuit.ry(1.1, 0)
    circuit.measure(0, m[0])
    circuit.cx(0, 1)
    circuit.h(0)
    circuit.measure(0, m[1])
    circuit.measure(1, m[2])
    deferred = QuantumCircuit(QuantumRegister(3, "q"), ClassicalRegister(3, "m"))
    deferred.ry(1.1, 0)
    deferred.cx(0, 2)
    deferred.cx(0, 1)
    deferred.h(0)
    deferred.measure([2, 0, 1], [0, 1, 2])
    return circuit, deferred


def sampler_pubs():
    bell = QuantumCircuit(2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure_all()
    values = np.array([[[0.0, 0.0], [1.2, 0.4], [np.pi, 2.0]], [[0.3, 3.0], [2.5, 1.0], [0.9, 0.0]]])  # (2, 3, 2)
    circuit, deferred = mid_circuit()
    ours = [(bell,), (parametrised(), values), (two_registers(), None, 3000), (circuit,)]
    reference = [(bell,), (parametrised(), values), (two_registers(), None, 3000), (deferred,)]
    return ours, reference


def assert_same_distribution(ours, reference, where: str) -> None:
    """Chi-square test of homogeneity of two samples of bitstrings, at ALPHA."""
    keys = sorted(set(ours) | set(reference))
    table = np.array([[ours.get(k, 0) for k in keys], [reference.get(k, 0) for k in keys]])
    if len(keys) == 1:
        return  # one outcome in both: identical
    p_value = chi2_contingency(table)[1]
    assert p_value > ALPHA, f"{where}: ours {ours} vs reference {reference} (p = {p_value:.2g})"


def compare_sampler_results(ours, reference, pubs) -> int:
    compared = 0
    assert len(ours) == len(reference)
    for i, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        names = [reg.name for reg in pubs[i][0].cregs]
        assert sorted(mine.data.keys()) == sorted(names)
        for name in names:
            a, b = mine.data[name], theirs.data[name]
            assert a.shape == b.shape and a.num_bits == b.num_bits
            assert a.num_shots == b.num_shots
            for index in np.ndindex(*a.shape):
                assert_same_distribution(a[index].get_counts(), b[index].get_counts(), f"pub {i} {name} {index}")
                compared += 1
    return compared


def test_sampler_agrees_with_statevector_sampler_on_a_simulator(lite) -> None:
    ours_pubs, reference_pubs = sampler_pubs()
    sampler = SamplerV2(mode=lite.backend("ibmq_qasm_simulator"))
    sampler.options.seed_simulator = 11
    ours = sampler.run(ours_pubs, shots=SHOTS).result(timeout=120)
    reference = StatevectorSampler(seed=7).run(reference_pubs, shots=SHOTS).result()
    assert ours[1].data.meas.shape == (2, 3) and ours[2].data.right.num_shots == 3000
    assert ours[0].metadata["shots"] == SHOTS
    # the mid-circuit register is compared bit for bit with its deferred twin's
    assert compare_sampler_results(ours, reference, ours_pubs) == 1 + 6 + 2 + 1


def estimator_pubs():
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(3)
    circuit.ry(a, 0)
    circuit.cx(0, 1)
    circuit.rx(b, 2)
    circuit.cz(1, 2)
    observables = [
        [SparsePauliOp.from_list([("ZZI", 1.0), ("IXX", 0.5), ("III", 0.25)])],
        [SparsePauliOp.from_list([("XYZ", -0.7), ("ZIZ", 0.3), ("YYI", 1.2)])],
    ]  # shape (2, 1)
    values = np.array([[0.1, 0.2], [1.3, 2.1], [2.9, 0.5]])  # bindings shape (3,): results (2, 3)
    ghz = QuantumCircuit(4)
    ghz.h(0)
    for q in range(3):
        ghz.cx(q, q + 1)
    ghz.measure_all()  # ours ignores final measurements (the reference refuses them: see bare())
    return [(circuit, observables, values), (ghz, ["ZZZZ", "XXXX", "IIZZ", "YYXX"])]


def raw_result(evs):
    """A stand-in pub result holding evs (and zero stds), for compare_estimator_results."""
    from qiskit.primitives.containers import DataBin, PubResult

    return PubResult(DataBin(evs=evs, stds=np.zeros_like(evs), shape=evs.shape))


def bare(pubs):
    """The PUBs without their circuits' final measurements, for StatevectorEstimator."""
    return [(pub[0].remove_final_measurements(inplace=False), *pub[1:]) for pub in pubs]


def term_bound(circuit, observable, shots: int) -> float:
    """Z-free bound of the standard deviation of a sampled estimate of <observable> (see the module)."""
    state = Statevector(circuit.remove_final_measurements(inplace=False))
    total = 0.0
    for label, coeff in observable.to_list():
        if set(label) == {"I"}:
            continue
        expectation = float(np.real(state.expectation_value(SparsePauliOp(label))))
        total += abs(coeff) * np.sqrt(max(0.0, 1 - expectation**2))
    return total / np.sqrt(shots)


def broadcast_index(index: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The index into an array of shape that numpy's broadcasting maps index (of the result) to."""
    tail = index[len(index) - len(shape):] if shape else ()
    return tuple(0 if n == 1 else i for i, n in zip(tail, shape, strict=True))


def noise_allowance(observable: SparsePauliOp) -> float:
    return sum(abs(c) * NOISE_PER_QUBIT * sum(p != "I" for p in label) for label, c in observable.to_list())


def compare_estimator_results(ours, reference, pubs, shots: int, noisy: bool = False) -> int:
    compared = 0
    for i, (mine, theirs) in enumerate(zip(ours, reference, strict=True)):
        circuit, observables = pubs[i][0], pubs[i][1]
        values = pubs[i][2] if len(pubs[i]) > 2 else None
        evs, exact = mine.data.evs, theirs.data.evs
        assert evs.shape == exact.shape and mine.data.stds.shape == exact.shape
        array = ObservablesArray.coerce(observables)
        for index in np.ndindex(*exact.shape):
            observable = SparsePauliOp.from_list(list(array[broadcast_index(index, array.shape)].items()))
            bound_circuit = circuit
            if values is not None:
                bindings = np.broadcast_to(values, (*exact.shape, values.shape[-1]))
                bound_circuit = circuit.assign_parameters(bindings[index])
            sigma = term_bound(bound_circuit, observable, shots)
            allowance = noise_allowance(observable) if noisy else 0.0
            assert abs(evs[index] - exact[index]) <= Z * sigma + allowance + 1e-12, (
                f"pub {i} {index}: {evs[index]} vs exact {exact[index]} (sigma <= {sigma:.3g})")
            compared += 1
    return compared


def test_estimator_agrees_with_statevector_estimator_on_a_simulator(lite) -> None:
    pubs = estimator_pubs()
    estimator = EstimatorV2(mode=lite.backend("simulator_statevector"), options={"seed_estimator": 5})
    ours = estimator.run(pubs).result(timeout=120)
    reference = StatevectorEstimator().run(bare(pubs)).result()
    assert ours[0].data.evs.shape == (2, 3) and ours[1].data.evs.shape == (4,)
    assert ours[0].metadata["shots"] == SHOTS and ours[0].metadata["target_precision"] == 1 / 64
    assert compare_estimator_results(ours, reference, pubs, SHOTS) == 6 + 4
    # the identity term is exact; a pure-identity observable has no error at all
    pure = estimator.run([(pubs[1][0], "IIII")]).result(timeout=60)
    assert pure[0].data.evs == 1.0 and pure[0].data.stds == 0.0


def test_precision_sets_the_shots(lite) -> None:
    estimator = EstimatorV2(mode=lite.backend("ibmq_qasm_simulator"))
    circuit = QuantumCircuit(1)
    circuit.h(0)
    result = estimator.run([(circuit, "X"), (circuit, "Z", None, 0.05)], precision=0.02).result(timeout=60)
    assert [r.metadata["shots"] for r in result] == [2500, 400]
    assert abs(result[1].data.evs) <= Z * 0.05


def test_sampler_agrees_with_local_mode_on_an_emulated_system_after_transpiling(standard) -> None:
    from qiskit_ibm_runtime import SamplerV2 as LocalSampler
    from qiskit_ibm_runtime.fake_provider import FakeManilaV2

    backend = standard.backend("ibm_manila")
    manager = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=3)
    ours_pubs, _ = sampler_pubs()
    isa = [(manager.run(pub[0]), *pub[1:]) for pub in ours_pubs[:3]]
    ours = SamplerV2(mode=backend, options={"seed_simulator": 21}).run(isa, shots=SHOTS).result(timeout=180)
    local = LocalSampler(mode=FakeManilaV2())
    local.options.simulator.seed_simulator = 22
    reference = local.run(isa, shots=SHOTS).result()
    assert compare_sampler_results(ours, reference, isa) == 1 + 6 + 2


def test_estimator_on_an_emulated_system_after_transpiling_with_the_layout_applied(standard) -> None:
    backend = standard.backend("ibm_manila")
    manager = generate_preset_pass_manager(optimization_level=1, backend=backend, seed_transpiler=3)
    pubs = estimator_pubs()
    isa = []
    for circuit, observables, *rest in pubs:
        compiled = manager.run(circuit)
        mapped = [[SparsePauliOp(o).apply_layout(compiled.layout) for o in row] if isinstance(row, list)
                  else SparsePauliOp(row).apply_layout(compiled.layout) for row in observables]
        isa.append((compiled, mapped, *rest))
    estimator = EstimatorV2(mode=backend, options={"seed_estimator": 4, "resilience_level": 1})
    ours = estimator.run(isa).result(timeout=180)
    reference = StatevectorEstimator().run(bare(pubs)).result()  # the ideal values, logical circuits
    assert ours[1].metadata["shots"] == SHOTS
    assert compare_estimator_results(ours, reference, pubs, SHOTS, noisy=True) == 6 + 4
    estimator.options.resilience_level = 0  # the readout errors, unmitigated, bias the 4-qubit terms more
    raw = estimator.run(isa[1:]).result(timeout=180)[0].data.evs
    assert abs(raw[0] - 1) > abs(ours[1].data.evs[0] - 1) + 0.1  # <ZZZZ> of the GHZ state: ideally 1
    with pytest.raises(AssertionError):
        compare_estimator_results([raw_result(raw)], reference[1:], pubs[1:], SHOTS, noisy=True)
