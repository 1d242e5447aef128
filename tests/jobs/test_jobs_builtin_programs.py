"""The built-in programs' main() on a local Aer stand-in of the backend (see LocalAerBackend)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp
from qruntime.encoding import dumps, loads

from qruntime_jobs.builtin_programs import (
    BUILTIN_PROGRAMS,
    InvalidInputError,
    estimator,
    hello_world,
    sampler,
)
from qruntime_jobs.builtin_programs.common import optional_seed, positive_int


def test_the_registry_names_the_three_programs():
    assert BUILTIN_PROGRAMS == {"hello-world": hello_world.main, "sampler": sampler.main, "estimator": estimator.main}


def test_hello_world_publishes_each_iteration_and_returns_all_done(backend, messenger, caplog):
    with caplog.at_level(logging.INFO, logger="qruntime.program"):
        assert hello_world.main(backend, messenger, iterations=3, seed=11) == "All done!"
    assert [m["iteration"] for m in messenger.published] == [0, 1, 2]
    for message in messenger.published:
        assert sum(message["counts"].values()) == 1024
        assert all(len(bits.replace(" ", "")) >= 1 for bits in message["counts"])
    assert backend.calls == [1, 1, 1]
    assert "Hello, World!" in caplog.messages
    assert loads(dumps(messenger.published)) == messenger.published


def test_hello_world_fits_a_small_backend(local_backend_class, messenger):
    small = local_backend_class(num_qubits=2)
    assert hello_world.main(small, messenger, iterations=1) == "All done!"
    assert all(len(bits.replace(" ", "")) <= 2 for bits in messenger.published[0]["counts"])


@pytest.mark.parametrize("iterations", [-1, 1.5, True, -(10**400)], ids=["negative", "fraction", "bool", "huge"])
def test_hello_world_refuses_iterations_that_are_not_a_count(backend, messenger, iterations):
    with pytest.raises(InvalidInputError, match="iterations must be a non-negative integer"):
        hello_world.main(backend, messenger, iterations=iterations)


def test_seeds_and_counts_of_any_size_are_whole_numbers():
    assert optional_seed(10**400) == 10**400 and optional_seed(3.0) == 3 and optional_seed(None) is None
    assert positive_int("shots", 10**400) == 10**400 and positive_int("shots", 2.0) == 2


def test_sampler_bell_gives_half_00_half_11(backend, messenger, bell):
    result = sampler.main(backend, messenger, circuits=bell, shots=2000, seed=5)
    assert set(result) == {"quasi_dists", "counts", "metadata"}
    [counts], [quasi] = result["counts"], result["quasi_dists"]
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 2000
    assert quasi["00"] == pytest.approx(0.5, abs=0.05) and sum(quasi.values()) == pytest.approx(1)
    assert result["metadata"] == [{"shots": 2000}]
    assert loads(dumps(result)) == result


def test_sampler_runs_every_circuit_in_one_call_with_indices_and_parameters(backend, messenger, bell):
    theta = Parameter("theta")
    rotation = QuantumCircuit(1, 1)
    rotation.rx(theta, 0)
    rotation.measure(0, 0)
    result = sampler.main(
        backend, messenger, circuits=[bell, rotation], circuit_indices=[1, 0, 1],
        parameter_values=[[np.pi], [], [0.0]], shots=100, seed=1,
    )
    assert backend.calls == [3]
    assert result["counts"][0] == {"1": 100} and result["counts"][2] == {"0": 100}
    assert set(result["counts"][1]) <= {"00", "11"}
    assert result["metadata"] == [{"shots": 100}] * 3


def test_sampler_keeps_qiskit_bitstrings_of_several_registers(backend, messenger):
    a, b = ClassicalRegister(1, "a"), ClassicalRegister(1, "b")
    circuit = QuantumCircuit(QuantumRegister(2), a, b)
    circuit.x(0)
    circuit.measure(0, a[0])
    circuit.measure(1, b[0])
    result = sampler.main(backend, messenger, circuits=[circuit], shots=10)
    assert result["counts"] == [{"0 1": 10}]


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        ({"circuits": []}, "empty"),
        ({"circuits": ["not a circuit"]}, "not a QuantumCircuit"),
        ({"circuit_indices": [2]}, "not an index"),
        ({"parameter_values": [[1.0]]}, "parameters"),
        ({"shots": 0}, "shots"),
        ({"shots": float("nan")}, "shots"),
        ({"circuit_indices": [10**400]}, "not an index"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_sampler_refuses_unusable_inputs(backend, messenger, bell, inputs, words):
    with pytest.raises(InvalidInputError, match=words):
        sampler.main(backend, messenger, **{"circuits": [bell], **inputs})


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_parameter_values_must_be_finite(backend, messenger, value):
    theta = Parameter("theta")
    rotation = QuantumCircuit(1, 1)
    rotation.rx(theta, 0)
    rotation.measure(0, 0)
    for values in (np.array([[value]]), np.array([value])):  # arrays decoded from inputs may hold them
        with pytest.raises(InvalidInputError, match="array of finite numbers"):
            sampler.main(backend, messenger, circuits=[rotation], parameter_values=values)
    assert backend.calls == []


def test_sampler_needs_measurements(backend, messenger, bell_state):
    with pytest.raises(InvalidInputError, match="no classical bits"):
        sampler.main(backend, messenger, circuits=bell_state)


def test_estimator_bell_zz_and_xx_are_one_in_one_backend_call(backend, messenger, bell_state):
    result = estimator.main(backend, messenger, circuits=[bell_state], observables=["ZZ", "XX", "YY", "ZI"],
                            shots=4000, seed=3)
    zz, xx, yy, zi = result["values"]
    assert zz == pytest.approx(1) and xx == pytest.approx(1)
    assert yy == pytest.approx(-1) and zi == pytest.approx(0, abs=0.06)
    assert backend.calls == [3]  # ZZ and ZI share a basis
    assert result["stds"][0] == pytest.approx(0) and 0 < result["stds"][3] <= 1 / np.sqrt(4000) + 1e-9
    assert result["metadata"] == [{"shots": 4000}] * 4


def test_estimator_strips_final_measurements_and_takes_weighted_sums(backend, messenger, bell):
    observable = [["ZZ", 0.5], ["XX", 2.0], ["II", -1.0]]
    result = estimator.main(backend, messenger, circuits=bell, observables=observable, seed=3)
    assert result["values"] == [pytest.approx(0.5 + 2.0 - 1.0)]
    as_op = estimator.main(backend, messenger, circuits=bell, observables=SparsePauliOp(["ZZ", "XX"], [0.5, 2.0]))
    assert as_op["values"] == [pytest.approx(2.5)]


def test_estimator_broadcasts_one_observable_over_circuits(backend, messenger, bell_state):
    flipped = QuantumCircuit(2)
    flipped.x(0)
    result = estimator.main(backend, messenger, circuits=[bell_state, flipped], observables="ZZ", seed=1)
    assert result["values"] == [pytest.approx(1), pytest.approx(-1)]


def test_estimator_uses_qiskit_qubit_order(backend, messenger):
    circuit = QuantumCircuit(2)
    circuit.x(0)  # qubit 0 is the rightmost letter
    result = estimator.main(backend, messenger, circuits=circuit, observables=["IZ", "ZI"], seed=1)
    assert result["values"] == [pytest.approx(-1), pytest.approx(1)]


@pytest.mark.parametrize(
    ("observables", "words"),
    [
        ("ZZZ", "acts on 3 qubits"),
        ("AB", "not a Pauli string"),
        ([["ZZ", 1j]], "not real"),
        ([["ZZ", 10**400]], "not a finite number"),
        ([], "empty"),
        (["ZZ", "XX", "YY"], "3 observables for 2 circuits"),
        ([3], "not a Pauli string or a list"),
    ],
)
def test_estimator_refuses_unusable_observables(backend, messenger, bell_state, observables, words):
    circuits = [bell_state, bell_state] if words.startswith("3 observables") else [bell_state]
    with pytest.raises(InvalidInputError, match=words):
        estimator.main(backend, messenger, circuits=circuits, observables=observables)
